; attack-io.asm — port-I/O and MMIO storms over unmapped ranges, and 16550 UART register abuse.
;
; Run:    swhv run-image --image attack-io.bin (AttackGuestTests), 16 MiB of RAM, no disks.
; Checks: 1. every port swhv does not claim on either backend reads all-ones as a byte (and as a word
;            and a dword at every 16th port);
;         2. a write storm (xorshift values, byte and dword) over every port except the i8042
;            (0x60-0x64: its commands can reset), PCI config (0xCF8-0xCFF: 0xCF9 resets) and COM1
;            (the console) — this hits the PIC, PIT, RTC, ELCR, port 0x80 and the boot-timer port with
;            garbage (dwords at every 16th port) — and then the read sweep again: still all-ones;
;         2b. byte/word/dword reads and word/dword writes at every offset of the claimed ports (and
;            the port below each device), straddling registers and device ends (i8042 and PCI
;            config: reads only);
;         3. MMIO: byte/word/dword/qword reads every MiB from the end of RAM to 0xFEC00000 (the
;            PCI window at 0xC0000000 included, 0xD1000000 - the boot-timer register - skipped) and at
;            4, 8 and 64 GiB (mapped through an extra page directory): all-ones; a write then a read
;            at each: still all-ones; string, locked and exchanging accesses to unmapped MMIO; accesses
;            straddling the end of RAM (the RAM half is kept, the other half reads all-ones);
;         4. UART abuse in loopback mode: 4000 xorshift writes over all eight registers (DLAB on and
;            off, FIFO control, scratch) interleaved with reads, then a clean setup; loopback echo, RX
;            FIFO overrun, scratch and IIR checks; loopback off and a normal line.
; Output: attack-io.expected (the same on both backends). A failed check prints "attack-io FAIL <x>".
; Stop:   reset through the i8042.

%define GUEST_NAME "attack-io"
%include "include/longmode.inc"

PD4      equ 0x17000                ; maps VA 4 GiB + n * 2 MiB to the far physical addresses below
HIGH_VA  equ 0x100000000
BUF      equ 0x60000
PORTMAP  equ 0x70000                ; 64 KiB, one byte per port

; PORTS_MARKED size, bit: ZF clear if any of ports EBX..EBX+size-1 has `bit` set in PORTMAP.
%macro PORTS_MARKED 2                ; size, mask byte
  %if %1 == 1
    test byte [PORTMAP + rbx], %2
  %elif %1 == 2
    test word [PORTMAP + rbx], %2 * 0x0101
  %else
    test dword [PORTMAP + rbx], %2 * 0x01010101
  %endif
%endmacro

main:
    ; ---- 1. port read sweep ----
    call build_portmap
    call port_sweep
    lea rsi, [rel s_reads]
    call puts
    call report_sweep

    ; ---- 2. port write storm ----
    mov r15d, 0x2545F491            ; xorshift32 state
    xor ebx, ebx                    ; port
.wport:
    mov edx, ebx
    PORTS_MARKED 1, 2
    jnz .wnext
    call xorshift
    out dx, al
    test ebx, 15
    jnz .wnext
    PORTS_MARKED 4, 2
    jnz .wnext
    call xorshift
    out dx, eax
.wnext:
    inc ebx
    cmp ebx, 0x10000
    jb .wport
    call port_sweep
    lea rsi, [rel s_storm]
    call puts
    call report_sweep

    ; Odd-size accesses at every offset of the claimed ports (PIC, PIT, port 0x61, RTC, 0x80, the
    ; boot-timer port, ELCR, i8042 and PCI config reads): word and dword reads and writes that
    ; straddle registers and device ends. Nothing is printed: the guest must simply carry on.
    lea rsi, [rel odd_ports]
.odd:
    movzx edx, word [rsi]
    test edx, edx
    jz .odd_done
    add rsi, 2
    in al, dx
    in ax, dx
    in eax, dx
    mov ebx, edx
    PORTS_MARKED 4, 2               ; i8042, COM1 and PCI config: reads only
    jnz .odd
    call xorshift
    out dx, ax
    call xorshift
    out dx, eax
    jmp .odd
.odd_done:
    lea rsi, [rel s_odd]
    call puts

    ; ---- 3. MMIO ----
    ; PDPT[4] -> PD4: VA 4 GiB + 0/2/4 MiB -> PA 4 GiB, 8 GiB, 64 GiB (no RAM there).
    mov rdi, PD4
    xor eax, eax
    mov ecx, 512
    rep stosq
    mov rax, 0x100000000 | 0x83
    mov [PD4], rax
    mov rax, 0x200000000 | 0x83
    mov [PD4 + 8], rax
    mov rax, 0x1000000000 | 0x83
    mov [PD4 + 16], rax
    mov qword [PDPT + 32], PD4 | 3
    mov rax, cr3
    mov cr3, rax

    xor r12d, r12d                  ; accesses checked
    xor r13d, r13d                  ; not all-ones
    mov rbx, 0x1000000              ; end of RAM
.mmio:
    mov rax, 0xD1000000             ; boot-timer register (reads 0)
    cmp rbx, rax
    je .mnext
    call mmio_probe
.mnext:
    add rbx, 0x100000
    mov rax, 0xFEC00000
    cmp rbx, rax
    jb .mmio
    mov rbx, HIGH_VA
    call mmio_probe
    mov rbx, HIGH_VA + 0x200000 + 0x1234
    call mmio_probe
    mov rbx, HIGH_VA + 0x400000 + 0xFF8
    call mmio_probe
    lea rsi, [rel s_mmio]
    call puts
    mov eax, r12d
    call puthex32
    lea rsi, [rel s_bad]
    call puts
    mov eax, r13d
    call puthex32
    call newline

    ; String, locked and exchanging accesses to unmapped MMIO.
    mov rsi, 0x20000000
    mov rdi, BUF
    mov ecx, 64
    rep movsd                       ; MMIO -> RAM
    mov rdi, BUF
    mov eax, -1
    mov ecx, 64
    repe scasd
    mov al, 'M'
    jne fail
    mov rdi, 0x20000000
    mov rax, 0x0123456789ABCDEF
    mov ecx, 64
    rep stosq                       ; RAM -> MMIO: ignored
    mov rsi, BUF
    mov rdi, 0x20001000
    mov ecx, 16
    rep movsq
    mov eax, 0x55
    lock xadd [0x20000000], eax
    cmp eax, -1
    mov al, 'N'
    jne fail
    mov eax, 0x66
    xchg [0x20000010], eax
    cmp eax, -1
    mov al, 'O'
    jne fail
    lock or dword [0x20000020], 1
    cmp dword [0x20000020], -1
    mov al, 'P'
    jne fail
    ; Page-crossing access inside MMIO.
    mov rax, [0x20000FFC]
    cmp rax, -1
    mov al, 'Q'
    jne fail
    lea rsi, [rel s_string]
    call puts

    ; Accesses straddling the end of RAM (16 MiB): the RAM half behaves as RAM.
    mov dword [0xFFFFFC], 0x11223344
    mov rax, [0xFFFFFC]
    call puthex64_line_straddle
    mov rax, 0xAABBCCDD55667788
    mov [0xFFFFFC], rax
    mov eax, [0xFFFFFC]
    call puthex64_line_straddle

    ; ---- 4. UART abuse ----
    mov dx, COM1 + 4
    mov al, 0x10                    ; MCR: loopback, so nothing reaches the console meanwhile
    out dx, al
    mov r15d, 0x9E3779B9
    mov ebx, 4000
.abuse:
    call xorshift
    mov ecx, eax
    and ecx, 7
    lea edx, [ecx + COM1]
    shr eax, 8
    cmp ecx, 4
    jne .w
    or al, 0x10                     ; MCR writes keep loopback on
.w:
    out dx, al
    call xorshift
    and eax, 7
    lea edx, [eax + COM1]
    in al, dx
    dec ebx
    jnz .abuse
    ; A clean setup: 115200 8N1, FIFOs on and cleared, no interrupts, still in loopback.
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al
    mov dx, COM1
    mov al, 1
    out dx, al
    inc dx
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    in al, dx
    cmp al, 0x80                    ; LCR reads back
    mov al, 'U'
    jne fail
    mov dx, COM1
    in al, dx
    cmp al, 1                       ; DLL reads back with DLAB set
    mov al, 'V'
    jne fail
    mov dx, COM1 + 3
    mov al, 0x03
    out dx, al
    mov dx, COM1 + 1
    xor al, al
    out dx, al                      ; IER
    mov dx, COM1 + 2
    mov al, 0x07
    out dx, al                      ; FCR: enable, clear both FIFOs
    mov dx, COM1 + 5
    in al, dx                       ; LSR (clears error bits)
    ; Loopback echo.
    mov dx, COM1
    mov al, 'Q'
    out dx, al
    mov dx, COM1 + 5
    in al, dx
    test al, 1
    mov al, 'W'
    jz fail
    mov dx, COM1
    in al, dx
    cmp al, 'Q'
    mov al, 'X'
    jne fail
    ; Overrun the receive FIFO: 100 bytes in, count what comes out.
    mov ebx, 100
    mov dx, COM1
.tx:
    mov al, bl
    out dx, al
    dec ebx
    jnz .tx
    mov dx, COM1 + 5
    in al, dx
    mov r12d, eax                   ; LSR after the overrun
    xor ebx, ebx
.rx:
    mov dx, COM1 + 5
    in al, dx
    test al, 1
    jz .rx_done
    mov dx, COM1
    in al, dx
    inc ebx
    cmp ebx, 1000
    jb .rx
.rx_done:
    ; Scratch register.
    mov dx, COM1 + 7
    mov al, 0xA5
    out dx, al
    in al, dx
    mov r13d, eax
    mov dx, COM1 + 2
    in al, dx                       ; IIR: FIFOs on, nothing pending
    mov r14d, eax
    mov dx, COM1 + 4
    xor al, al
    out dx, al                      ; loopback off: output reaches the console again
    lea rsi, [rel s_uart]
    call puts
    mov eax, r12d
    call puthex8
    lea rsi, [rel s_rxcount]
    call puts
    mov eax, ebx
    call puthex16
    lea rsi, [rel s_scratch]
    call puts
    mov eax, r13d
    call puthex8
    lea rsi, [rel s_iir]
    call puts
    mov eax, r14d
    call puthex8
    call newline

    lea rsi, [rel s_done]
    call puts
    mov al, 0xFE
    out 0x64, al
    jmp halt

; ---- helpers ----
%include "include/xorshift.inc"

; PORTMAP[port]: bit 0 = claimed by a device on either backend, bit 1 = left alone by the storm.
build_portmap:
    mov rdi, PORTMAP
    xor eax, eax
    mov ecx, 0x10000 / 8
    rep stosq
    lea rsi, [rel claimed]
    mov bl, 1
    call .mark
    lea rsi, [rel dangerous]
    mov bl, 2
.mark:                              ; RSI: inclusive word pairs, 0-terminated; BL: bit to set
    movzx eax, word [rsi]
    movzx ecx, word [rsi + 2]
    test ecx, ecx
    jz .done
.one:
    or [PORTMAP + rax], bl
    inc eax
    cmp eax, ecx
    jbe .one
    add rsi, 4
    jmp .mark
.done:
    ret


; Reads every unclaimed port as byte, word and dword; R12D = accesses, R13D = not all-ones,
; R14D = the first such port (0xFFFFFFFF if none).
port_sweep:
    xor r12d, r12d
    xor r13d, r13d
    mov r14d, -1
    xor ebx, ebx
.port:
    mov edx, ebx
    PORTS_MARKED 1, 1
    jnz .word
    inc r12d
    in al, dx
    cmp al, 0xFF
    je .word
    call .bad
.word:
    test ebx, 15                    ; wider reads every 16th port (each access is a VM exit on KVM)
    jnz .next
    PORTS_MARKED 2, 1
    jnz .dword
    inc r12d
    in ax, dx
    cmp ax, 0xFFFF
    je .dword
    call .bad
.dword:
    PORTS_MARKED 4, 1
    jnz .next
    inc r12d
    in eax, dx
    cmp eax, -1
    je .next
    call .bad
.next:
    inc ebx
    cmp ebx, 0x10000
    jb .port
    ret
.bad:
    inc r13d
    cmp r14d, -1
    jne .r
    mov r14d, ebx
.r:
    ret

report_sweep:                       ; "<accesses> checked, <n> not all-ones[, first at <port>]"
    mov eax, r12d
    call puthex32
    lea rsi, [rel s_bad]
    call puts
    mov eax, r13d
    call puthex32
    cmp r14d, -1
    je .nl
    lea rsi, [rel s_first]
    call puts
    mov eax, r14d
    call puthex16
.nl:
    jmp newline

mmio_probe:                         ; RBX: reads of every size, a write, reads again
    mov al, [rbx]
    cmp al, 0xFF
    je .w
    inc r13d
.w: mov ax, [rbx + 2]
    cmp ax, 0xFFFF
    je .d
    inc r13d
.d: mov eax, [rbx + 4]
    cmp eax, -1
    je .q
    inc r13d
.q: mov rax, [rbx + 8]
    cmp rax, -1
    je .wr
    inc r13d
.wr:
    mov qword [rbx + 8], 0x5A5A5A5A
    mov dword [rbx + 4], 0x1234
    mov byte [rbx], 0
    mov rax, [rbx + 8]
    cmp rax, -1
    je .d2
    inc r13d
.d2:
    mov eax, [rbx + 4]
    cmp eax, -1
    je .b2
    inc r13d
.b2:
    mov al, [rbx]
    cmp al, 0xFF
    je .done
    inc r13d
.done:
    add r12d, 7
    ret

puthex64_line_straddle:
    lea rsi, [rel s_straddle]
    call puts
    call puthex64
    jmp newline

align 2
claimed:                            ; inclusive ranges; interpreter-only devices included
    dw 0x20, 0x21,  0x40, 0x43,  0x60, 0x64,  0x70, 0x71,  0x80, 0x80,  0xA0, 0xA1
    dw 0x3F8, 0x3FF,  0x440, 0x440,  0x4D0, 0x4D1,  0xCF8, 0xCFF,  0, 0
odd_ports:                          ; every claimed port but COM1, and the ports just below each device
    dw 0x1F, 0x20, 0x21, 0x3F, 0x40, 0x41, 0x42, 0x43, 0x5F, 0x60, 0x61, 0x62, 0x63, 0x64, 0x6F, 0x70, 0x71
    dw 0x7F, 0x80, 0x9F, 0xA0, 0xA1, 0x43F, 0x440, 0x4CF, 0x4D0, 0x4D1, 0xCF7, 0xCF8, 0xCF9, 0xCFA, 0xCFB
    dw 0xCFC, 0xCFD, 0xCFE, 0xCFF, 0
dangerous:
    dw 0x60, 0x64,  0x3F8, 0x3FF,  0xCF8, 0xCFF,  0, 0

s_reads:    db "port reads: ", 0
s_storm:    db "after write storm: ", 0
s_bad:      db " checked, not all-ones ", 0
s_first:    db ", first at ", 0
s_odd:      db "odd-size accesses to claimed ports ok", 10, 0
s_mmio:     db "mmio: ", 0
s_string:   db "mmio string/locked/xchg/page-crossing ok", 10, 0
s_straddle: db "across end of ram: ", 0
s_uart:     db "uart after abuse: lsr ", 0
s_rxcount:  db " rx fifo gave ", 0
s_scratch:  db " scratch ", 0
s_iir:      db " iir ", 0
s_done:     db "io attack done", 10, 0
