; cpuloop.asm — a CPU-bound 64-bit guest for the interpreter speed benchmark (scripts/bench).
;
; Load:   flat binary at guest-physical 0x1000 (needs >= 2 MiB of RAM from address 0).
; Entry:  real mode, CS=0 IP=0x1000, SP=0x8000 (as every guest in Tests/Guests).
; Input:  N = little-endian u32 at guest-physical 0x500 (outer iterations; 0 means 1000).
; Work:   N x 4096 iterations of a mixed integer/memory loop (xorshift, mul, load/store, branch):
;         exactly 14 instructions per inner iteration, so instructions ~= N * 4096 * 14.
; Output: "cpuloop " + the final checksum in hex + "\n" on COM1 (the same on every backend and on
;         QEMU: a wrong result shows), then i8042 reset (0xFE to port 0x64): the run ends as "reset".
bits 16
org 0x1000

COM1  equ 0x3F8
PML4  equ 0x10000
PDPT  equ 0x11000
PD    equ 0x12000

%include "include/modeswitch.inc"
TABLE equ 0x20000

start:
    REAL_TO_PROTECTED gdt_desc, 0x08, 0x10
    IDENTITY_MAP_2M PML4, 1, 1, 3, 0x83            ; the first 2 MiB, one large page
    PROTECTED_TO_LONG PML4, 0x100, 0x18, 0x10, 0x8000   ; EFER.LME
    mov r8d, [0x500]
    test r8d, r8d
    jnz .go
    mov r8d, 1000
.go:
    mov rax, 0x9E3779B97F4A7C15     ; xorshift state
    xor rbx, rbx                    ; checksum
.outer:
    mov ecx, 4096
.inner:                             ; 14 instructions per iteration
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov edx, eax
    and edx, 0xFF8
    add [TABLE + rdx], rax          ; read-modify-write in a 4 KiB table
    imul rbx, rbx, 31
    add rbx, [TABLE + rdx]
    rol rbx, 5
    dec ecx
    jnz .inner
    dec r8d
    jnz .outer

    lea rsi, [rel msg]
    call puts
    mov rdx, rbx
    mov ecx, 16
.hex:
    rol rdx, 4
    mov eax, edx
    and eax, 15
    mov al, [hexdigits + rax]
    call putc
    loop .hex
    mov al, 10
    call putc
    mov al, 0xFE
    out 0x64, al
.halt:
    hlt
    jmp .halt

putc:                               ; AL -> COM1
    push rdx
    mov dx, COM1
    out dx, al
    pop rdx
    ret

puts:                               ; RSI -> NUL-terminated string
    lodsb
    test al, al
    jz .done
    call putc
    jmp puts
.done:
    ret

msg:        db "cpuloop ", 0
hexdigits:  db "0123456789abcdef"

align 8
gdt:
    dq 0
    dq 0x00CF9B000000FFFF           ; 0x08: 32-bit code
    dq 0x00CF93000000FFFF           ; 0x10: data
    dq 0x00AF9B000000FFFF           ; 0x18: 64-bit code
gdt_desc:
    dw gdt_desc - gdt - 1
    dd gdt
