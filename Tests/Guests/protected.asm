; protected.asm — real mode -> 32-bit protected mode guest for swhv's backend integration tests.
;
; Load:   flat binary at guest-physical 0x1000 (needs >= 256 KiB of RAM from address 0).
; Entry:  real mode, CS=0 IP=0x1000, SS=DS=ES=0, SP=0x8000, RFLAGS=0x2, CR0=0x10.
; Output: plain `out` to 0x3F8 (the UART is not programmed). Expected: protected.expected:
;           "protected mode ok\n"                        (or "protected mode FAIL <letter>\n")
;           "mmio read 0x12345678\n"                     (the value read back from 0xD0000004)
; MMIO:   one 32-bit write of 0xCAFEF00D to 0xD0000000, then one 32-bit read from 0xD0000004.
;         The harness's test device must record the write and answer the read with 0x12345678;
;         the guest prints whatever it reads, so a wrong answer shows in the output.
; Stop:   cli; hlt -> the run ends as "halted forever" (HLT with interrupts disabled).
;
; Self-checks, no paging:
;   A  #DE from `div` by zero is delivered through the IDT (32-bit interrupt gate) with the right
;      frame (EIP of the div, CS, EFLAGS). The handler checks the frame, drops it and jumps on: it
;      does not `iretd`, and the guest uses no `int n`, because kvm-pvm (which emulates guest CPL0 with
;      KVM's instruction emulator) fails on both in protected mode: KVM_EXIT_INTERNAL_ERROR.
;   B  a data segment with a non-zero base (FS base 0x20000): [fs:0x10] aliases [0x20010]
;   C  imul / bswap / bsf / shld / bt / setcc / movzx / movsx
;   D  pushad / popad, push/pop of a segment register

bits 16
org 0x1000

COM1     equ 0x3F8
MMIO_W   equ 0xD0000000
MMIO_R   equ 0xD0000004
IDT_ADDR equ 0x9000                 ; 32 gates x 8 bytes, built at run time

%include "include/modeswitch.inc"

start:
    REAL_TO_PROTECTED gdt_desc, 0x08, 0x10
    mov gs, ax
    mov ax, 0x18                    ; data segment with base 0x20000
    mov fs, ax
    mov esp, 0x8000
    cld

    ; IDT: every exception vector -> unexpected; vector 0 -> de_handler.
    mov edi, IDT_ADDR
    mov ecx, 32
.gate:
    mov eax, unexpected
    mov [edi], ax
    mov word [edi+2], 0x08
    mov word [edi+4], 0x8E00        ; present, DPL0, 32-bit interrupt gate
    shr eax, 16
    mov [edi+6], ax
    add edi, 8
    loop .gate
    mov eax, de_handler
    mov [IDT_ADDR], ax
    shr eax, 16
    mov [IDT_ADDR+6], ax
    lidt [idt_desc]

    ; A: divide by zero
    mov dword [de_count], 0
    mov eax, 1
    xor edx, edx
    xor ecx, ecx
de_insn:
    div ecx                         ; -> de_handler -> de_resume
    mov al, 'A'                     ; not reached: #DE is a fault
    jmp fail
de_resume:
    cmp dword [de_count], 1
    mov al, 'A'
    jne fail

    ; B: segment base
    mov dword [0x20010], 0
    mov dword [fs:0x10], 0xA5A55A5A
    cmp dword [0x20010], 0xA5A55A5A
    mov al, 'B'
    jne fail

    ; C: assorted 32-bit ALU
    mov eax, -7
    imul eax, eax, 300              ; -2100
    cmp eax, -2100
    jne .failC
    mov eax, 0x11223344
    bswap eax
    cmp eax, 0x44332211
    jne .failC
    mov eax, 0x00A00000
    bsf ecx, eax                    ; lowest set bit: 21
    cmp ecx, 21
    jne .failC
    mov eax, 0x12345678
    mov edx, 0x9ABCDEF0
    shld eax, edx, 8                ; 0x3456789A
    cmp eax, 0x3456789A
    jne .failC
    bt eax, 1                       ; bit 1 of ...9A (1001 1010) is 1
    setc bl
    cmp bl, 1
    jne .failC
    mov al, 0x80
    movsx ecx, al
    movzx edx, al
    cmp ecx, 0xFFFFFF80
    jne .failC
    cmp edx, 0x80
    je .c_ok
.failC:
    mov al, 'C'
    jmp fail
.c_ok:

    ; D: pushad/popad
    mov eax, 1
    mov ebx, 2
    mov ecx, 3
    mov edx, 4
    mov esi, 5
    mov edi, 6
    mov ebp, 7
    pushad
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    push fs
    mov ax, 0x10
    mov fs, ax
    pop fs
    popad
    lea eax, [eax+ebx*2]            ; 1 + 4
    add eax, ecx                    ; 8
    add eax, edx                    ; 12
    add eax, esi                    ; 17
    add eax, edi                    ; 23
    add eax, ebp                    ; 30
    cmp eax, 30
    mov al, 'D'
    jne fail
    mov eax, [fs:0x10]              ; FS was restored with its base
    cmp eax, 0xA5A55A5A
    mov al, 'D'
    jne fail

    mov esi, msg_ok
    call puts

    ; MMIO round trip with the harness's test device.
    mov dword [MMIO_W], 0xCAFEF00D
    mov ebx, [MMIO_R]
    mov esi, msg_mmio
    call puts
    mov eax, ebx
    call puthex32
    mov al, 10
    call putc
    jmp halt

fail:                               ; AL = failing check letter
    mov [fail_letter], al
    mov esi, msg_fail
    call puts
halt:
    cli
    hlt
    jmp halt

de_handler:                         ; frame: EIP, CS, EFLAGS (no error code, no stack switch)
    cmp dword [esp], de_insn
    jne .bad
    cmp dword [esp+4], 0x08
    jne .bad
    test dword [esp+8], 0x2         ; EFLAGS bit 1 always reads 1
    jz .bad
    inc dword [de_count]
.bad:
    add esp, 12
    jmp de_resume

unexpected:
    mov esi, msg_unexpected
    call puts
    jmp halt

putc:                               ; AL
    push edx
    mov dx, COM1
    out dx, al
    pop edx
    ret

puts:                               ; ESI: NUL-terminated
    push eax
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop eax
    ret

puthex32:                           ; EAX, 8 lowercase hex digits
    push ecx
    push edx
    mov edx, eax
    mov ecx, 8
.digit:
    rol edx, 4
    mov eax, edx
    and eax, 0xF
    mov al, [hexdigits+eax]
    call putc
    loop .digit
    pop edx
    pop ecx
    ret

align 8
gdt:
    dq 0
    dq 0x00CF9B000000FFFF           ; 0x08: code, base 0, 4 GiB, 32-bit
    dq 0x00CF93000000FFFF           ; 0x10: data, base 0, 4 GiB
    dq 0x00CF93020000FFFF           ; 0x18: data, base 0x20000, 4 GiB
gdt_desc:
    dw gdt_desc - gdt - 1
    dd gdt
idt_desc:
    dw 32*8 - 1
    dd IDT_ADDR

de_count:       dd 0
hexdigits:      db "0123456789abcdef"
msg_ok:         db "protected mode ok", 10, 0
msg_mmio:       db "mmio read 0x", 0
msg_unexpected: db "protected mode FAIL unexpected exception", 10, 0
msg_fail:       db "protected mode FAIL "
fail_letter:    db "?", 10, 0
