; long.asm — real mode -> protected mode -> 64-bit long mode guest for swhv's backend integration tests.
;
; Load:   flat binary at guest-physical 0x1000 (needs >= 2 MiB of RAM from address 0).
; Entry:  real mode, CS=0 IP=0x1000, SS=DS=ES=0, SP=0x8000, RFLAGS=0x2, CR0=0x10.
; Memory: page tables at 0x10000-0x12FFF (PML4, PDPT, PD: the first 1 GiB identity-mapped with 2 MiB
;         pages); work buffers at 0x20000 and 0x30000 (64 KiB each); stack below 0x8000.
; Output: plain `out` to 0x3F8, the last line with `rep outsb`. Expected: long.expected:
;           "long mode ok\n"
;           "fnv1a 0x<16 hex digits>\n"  FNV-1a-64 of the 64 KiB at 0x20000 after filling it with 8192
;                                        xorshift64 (13, 7, 17) outputs from seed 0x9E3779B97F4A7C15,
;                                        stored little-endian; Tests/Guests/README.md has a Python oracle
;           "rep movsb ok\n"             64 KiB forward copy, then a 4 KiB overlapping backward (DF=1) move
;           "rep outsb ok\n"             written with one `rep outsb` (KVM: a string I/O exit, count > 1)
;         A failed check prints "long mode FAIL <letter>\n" and halts (cli; hlt) instead.
; Stop:   deliberate triple fault: lidt with limit 0, then ud2. #UD cannot be delivered -> #GP -> #DF
;         -> shutdown. KVM reports KVM_EXIT_SHUTDOWN; the run ends as "shutdown".
;         (ud2 rather than int3: kvm-pvm cannot emulate INT3/INT n at CPL0 outside real mode.)

bits 16
org 0x1000

COM1  equ 0x3F8
PML4  equ 0x10000
PDPT  equ 0x11000
PD    equ 0x12000
BUF_A equ 0x20000
BUF_B equ 0x30000
BUF_LEN equ 0x10000

%include "include/modeswitch.inc"

start:
    REAL_TO_PROTECTED gdt_desc, 0x08, 0x10
    ; Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB (P | RW | PS).
    IDENTITY_MAP_2M PML4, 1, 512, 3, 0x83
    PROTECTED_TO_LONG PML4, 0x100, 0x18, 0x10, 0x8000   ; EFER.LME

    ; EFER.LMA must now be set.
    mov ecx, 0xC0000080
    rdmsr
    test eax, 0x400
    mov al, 'A'
    jz fail
    lea rsi, [rel msg_ok]
    call puts

    ; Fill BUF_A with xorshift64 outputs.
    mov rax, 0x9E3779B97F4A7C15
    mov rdi, BUF_A
    mov ecx, BUF_LEN / 8
.fill:
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx
    stosq
    dec ecx
    jnz .fill

    ; FNV-1a 64 over BUF_A.
    mov rax, 0xCBF29CE484222325
    mov r8, 0x100000001B3
    mov rsi, BUF_A
    mov ecx, BUF_LEN
.fnv:
    movzx edx, byte [rsi]
    xor rax, rdx
    imul rax, r8
    inc rsi
    dec ecx
    jnz .fnv
    mov rbx, rax
    lea rsi, [rel msg_fnv]
    call puts
    mov rax, rbx
    call puthex64
    mov al, 10
    call putc

    ; rep movsb: forward 64 KiB copy, compared with repe cmpsq.
    mov rsi, BUF_A
    mov rdi, BUF_B
    mov ecx, BUF_LEN
    rep movsb
    test rcx, rcx
    mov al, 'B'
    jnz fail
    mov rsi, BUF_A
    mov rdi, BUF_B
    mov ecx, BUF_LEN / 8
    repe cmpsq
    mov al, 'B'
    jne fail
    ; Overlapping move one byte up (memmove direction): DF=1, from the last byte down.
    mov rsi, BUF_B + 4095
    mov rdi, BUF_B + 4096
    mov ecx, 4096
    std
    rep movsb
    cld
    cmp rsi, BUF_B - 1              ; both pointers decremented 4096 times
    mov al, 'C'
    jne fail
    mov rsi, BUF_A
    mov rdi, BUF_B + 1
    mov ecx, 4096
    repe cmpsb
    mov al, 'C'
    jne fail
    lea rsi, [rel msg_movsb]
    call puts

    ; rep outsb: one instruction for the whole line.
    lea rsi, [rel msg_outsb]
    mov ecx, msg_outsb_len
    mov dx, COM1
    rep outsb
    test rcx, rcx
    mov al, 'D'
    jnz fail

    ; Triple fault.
    lidt [rel null_idt]
    ud2
    mov al, 'E'                     ; not reached

fail:                               ; AL = failing check letter
    mov [rel fail_letter], al
    lea rsi, [rel msg_fail]
    call puts
.halt:
    cli
    hlt
    jmp .halt

putc:                               ; AL
    push rdx
    mov dx, COM1
    out dx, al
    pop rdx
    ret

puts:                               ; RSI: NUL-terminated
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    ret

puthex64:                           ; RAX, 16 lowercase hex digits
    push rcx
    push rdx
    push r9
    lea r9, [rel hexdigits]
    mov rdx, rax
    mov ecx, 16
.digit:
    rol rdx, 4
    mov eax, edx
    and eax, 0xF
    mov al, [r9 + rax]
    call putc
    dec ecx
    jnz .digit
    pop r9
    pop rdx
    pop rcx
    ret

align 8
gdt:
    dq 0
    dq 0x00CF9B000000FFFF           ; 0x08: 32-bit code
    dq 0x00CF93000000FFFF           ; 0x10: data
    dq 0x00AF9B000000FFFF           ; 0x18: 64-bit code
gdt_desc:
    dw gdt_desc - gdt - 1
    dd gdt
null_idt:
    dw 0
    dq 0

hexdigits:   db "0123456789abcdef"
msg_ok:      db "long mode ok", 10, 0
msg_fnv:     db "fnv1a 0x", 0
msg_movsb:   db "rep movsb ok", 10, 0
msg_outsb:   db "rep outsb ok", 10
msg_outsb_len equ $ - msg_outsb
msg_fail:    db "long mode FAIL "
fail_letter: db "?", 10, 0
