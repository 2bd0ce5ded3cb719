; clock.asm — watches its own time: the pause/resume tests (PauseTests) check that a paused guest's
; clock stands still.
;
; Load:   flat binary at guest-physical 0x1000; real mode, CS=0 IP=0x1000, SP=0x8000 (as every guest
;         in Tests/Guests). No interrupts, no irqchip needed: runs the same on KVM and the interpreter.
; Work:   reads the TSC in a tight loop and keeps the largest step between two consecutive reads.
;         A host pause that the guest can see shows up as one step as long as the pause.
; Input:  a byte on COM1 prints "clock MAX TOTAL\n" (hex TSC ticks: the largest step, and the time
;         since the previous report), then starts a new window; 'q' ends the run (i8042 reset).
bits 16
org 0x1000

COM1 equ 0x3F8
; Variables live on their own page: stores to the page holding code would make the interpreter
; drop and re-decode that code on every iteration (as self-modifying code costs on hardware).
prev   equ 0x3000
max    equ 0x3008
window equ 0x3010
total  equ 0x3018

start:
    cli
    cld
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x8000
    mov dx, COM1 + 4
    mov al, 0x03                    ; MCR: DTR and RTS, so the host sends us input
    out dx, al
    call new_window

watch:
    rdtsc                           ; edx:eax = now
    mov ebx, eax
    mov ecx, edx
    sub eax, [prev]
    sbb edx, [prev + 4]             ; edx:eax = step since the previous read
    mov [prev], ebx
    mov [prev + 4], ecx
    cmp edx, [max + 4]
    ja .larger
    jb .input
    cmp eax, [max]
    jbe .input
.larger:
    mov [max], eax
    mov [max + 4], edx
.input:
    mov dx, COM1 + 5
    in al, dx
    test al, 1                      ; LSR.DR: a byte is waiting
    jz watch
    mov dx, COM1
    in al, dx
    cmp al, 'q'
    je quit
    rdtsc
    sub eax, [window]
    sbb edx, [window + 4]
    mov [total], eax
    mov [total + 4], edx
    mov si, label
    call puts
    mov eax, [max + 4]
    call hex32
    mov eax, [max]
    call hex32
    mov al, ' '
    call putc
    mov eax, [total + 4]
    call hex32
    mov eax, [total]
    call hex32
    mov al, 10
    call putc
    call new_window
    jmp watch

quit:
    mov al, 0xFE
    out 0x64, al
    hlt
    jmp quit

; A new window: the step maximum starts over, and time is measured from now (printing excluded).
new_window:
    rdtsc
    mov [prev], eax
    mov [prev + 4], edx
    mov [window], eax
    mov [window + 4], edx
    xor eax, eax
    mov [max], eax
    mov [max + 4], eax
    ret

putc:                               ; al -> COM1 (waits for THRE)
    push dx
    push ax
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

puts:                               ; ds:si, NUL-terminated
    lodsb
    test al, al
    jz .done
    call putc
    jmp puts
.done:
    ret

hex32:                              ; eax as 8 hex digits
    mov cx, 8
.digit:
    rol eax, 4
    push eax
    and al, 0xF
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    call putc
    pop eax
    loop .digit
    ret

label: db "clock ", 0
