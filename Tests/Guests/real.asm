; real.asm — a 16-bit real-mode guest for swhv's backend integration tests.
;
; Load:   flat binary at guest-physical 0x1000 (needs >= 64 KiB of RAM from address 0).
; Entry:  real mode, CS=0 IP=0x1000, SS=DS=ES=0, SP=0x8000, RFLAGS=0x2, CR0=0x10.
; Output: programs the 16550 at 0x3F8 (115200 8N1, FIFO on, no interrupts) and writes each byte to
;         THR only after polling LSR (0x3FD) until bit 5 (THR empty) is set. Expected: real.expected,
;         "real mode ok\n". A failed self-check prints "real mode FAIL <letter>\n" instead.
; Stop:   writes 0xFE to port 0x64 (i8042 pulse reset line) -> the run ends as "reset".
;         Falls back to cli;hlt if the reset is ignored.
;
; Self-checks (each must work identically on KVM and the interpreter):
;   A  software interrupt through the real-mode IVT (int 0x21 handler at 0:handler, iret;
;      kvm-pvm never completes a real-mode int with a vector >= 0x80, so keep it below)
;   B  segment arithmetic: ES=0x0200,[0x10] aliases DS=0,[0x2010]
;   C  loop/add, 16-bit mul and div
;   D  rep stosw / repe cmpsb
;   E  operand-size prefix: 32-bit registers in real mode
;   F  pushf/popf flag round trip, sahf/lahf

bits 16
org 0x1000

COM1    equ 0x3F8
SCRATCH equ 0x2000                  ; scratch RAM used by the checks

start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x8000
    cld

    call uart_init

    ; A: IVT vector 0x21 -> int_handler
    mov word [0x21*4], int_handler
    mov word [0x21*4+2], 0
    mov bx, 0
    int 0x21
    cmp bx, 0xBEEF
    mov al, 'A'
    jne fail

    ; B: segmented write, flat read
    mov word [SCRATCH+0x10], 0
    mov ax, 0x0200
    mov es, ax
    mov word [es:0x0010], 0x5AA5
    xor ax, ax
    mov es, ax
    cmp word [SCRATCH+0x10], 0x5AA5
    mov al, 'B'
    jne fail

    ; C: sum 1..100 = 5050; 1234*56 = 69104 = 0x10DF0; 69104 / 7 = 9872 r 0
    xor ax, ax
    mov cx, 100
.sum:
    add ax, cx
    loop .sum
    cmp ax, 5050
    mov al, 'C'
    jne fail
    mov ax, 1234
    mov bx, 56
    mul bx
    cmp dx, 1
    jne .failC
    cmp ax, 0x0DF0
    jne .failC
    mov bx, 7
    div bx
    cmp ax, 9872
    jne .failC
    test dx, dx
    jz .c_ok
.failC:
    mov al, 'C'
    jmp fail
.c_ok:

    ; D: fill 64 words, compare against a second fill
    mov di, SCRATCH
    mov ax, 0x1234
    mov cx, 64
    rep stosw
    mov di, SCRATCH+0x100
    mov cx, 64
    rep stosw
    mov si, SCRATCH
    mov di, SCRATCH+0x100
    mov cx, 128
    repe cmpsb
    mov al, 'D'
    jne fail
    test cx, cx
    jnz fail

    ; E: 32-bit operand size in real mode
    mov eax, 0x12345678
    ror eax, 16
    cmp ax, 0x1234
    mov al, 'E'
    jne fail
    shr eax, 16
    cmp ax, 0x5678
    mov al, 'E'
    jne fail

    ; F: carry survives pushf/popf, lahf sees it
    stc
    pushf
    clc
    popf
    mov al, 'F'
    jnc fail
    lahf
    test ah, 1
    jz fail

    mov si, msg_ok
    call puts
    jmp reset

fail:                               ; AL = failing check letter
    mov [fail_letter], al
    mov si, msg_fail
    call puts
reset:
    mov al, 0xFE
    out 0x64, al
.dead:
    cli
    hlt
    jmp .dead

int_handler:
    mov bx, 0xBEEF
    iret

; 115200 8N1, FIFOs enabled and cleared, DTR|RTS, no interrupts.
uart_init:
    mov dx, COM1+1                  ; IER
    xor al, al
    out dx, al
    mov dx, COM1+3                  ; LCR: DLAB
    mov al, 0x80
    out dx, al
    mov dx, COM1+0                  ; DLL
    mov al, 1
    out dx, al
    mov dx, COM1+1                  ; DLM
    xor al, al
    out dx, al
    mov dx, COM1+3                  ; LCR: 8N1
    mov al, 0x03
    out dx, al
    mov dx, COM1+2                  ; FCR
    mov al, 0xC7
    out dx, al
    mov dx, COM1+4                  ; MCR
    mov al, 0x03
    out dx, al
    ret

; Writes the NUL-terminated string at DS:SI, waiting for THR empty before each byte.
puts:
    lodsb
    test al, al
    jz .done
    mov ah, al
    mov dx, COM1+5                  ; LSR
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov dx, COM1
    mov al, ah
    out dx, al
    jmp puts
.done:
    ret

msg_ok:     db "real mode ok", 10, 0
msg_fail:   db "real mode FAIL "
fail_letter: db "?", 10, 0
