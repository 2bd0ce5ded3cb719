; attack-cpu.asm — self-modifying code, page tables pointing outside RAM, an interrupt storm, and a
; triple fault from a page-table root outside RAM.
;
; Run:    swhv run-image --image attack-cpu.bin (AttackGuestTests), 16 MiB of RAM.
; Checks: 1. self-modifying code: a loop that patches the immediate of the very next instruction
;            (same block), an instruction straddling two pages patched on either page, code written
;            through a second virtual alias of the same physical page, and a fresh page written and
;            run. Each must run the new bytes, as x86 does without any serialising instruction.
;         2. page tables pointing outside RAM: a 4 KiB page table whose entries map physical
;            addresses past RAM (0x30000000, 0xfffff000, 64 GiB): reads all-ones, writes vanish, no
;            fault; a page directory entry, a PDPT entry and a PML4 entry whose next table is past
;            RAM: the access raises #PF with CR2 = the address (the line prints vector and error
;            code: see docs/security.md for what each backend reports); a non-canonical address: #GP(0).
;         3. interrupt storm through the local APIC (when there is one: the interpreter always; KVM
;            only with an in-kernel irqchip, which run-image does not create): 5000 self-IPIs with IF=1
;            are 5000 interrupts; 5000 with IF=0 leave one pending (IRR coalesces); a periodic
;            APIC timer with initial count 1 still lets the guest make progress.
; Output: attack-cpu.expected (interpreter), attack-cpu.kvm.expected (KVM: no local APIC).
; Stop:   CR3 pointing outside RAM: the next fetch cannot be translated, nor can the #PF and #DF
;         handlers -> triple fault -> "shutdown" (run-image exit status 2).

%define GUEST_NAME "attack-cpu"
%include "include/longmode.inc"

PT_A     equ 0x30000                ; 4 KiB page table for VA 6 MiB (PD0[3])
CODE     equ 0x80000                ; SMC area: 0x80000-0x81FFF
FAR_PA      equ 0x30000000             ; physical, past RAM, below the PCI window
LAPIC    equ 0xFEE00000

main:
    ; ---- 1. self-modifying code ----
    ; a) patch the next instruction inside the same decoded block, five times
    xor ecx, ecx
.smc1:
    mov [rel .imm + 1], cl
.imm:
    mov al, 0xEE
    cmp al, cl
    mov al, 'A'
    jne fail
    inc ecx
    cmp ecx, 5
    jb .smc1
    lea rsi, [rel s_smc1]
    call puts

    ; b) `mov eax, imm32; ret` straddling CODE+0x1000: opcode and first byte on the first page
    mov rdi, CODE + 0xFFE
    mov byte [rdi], 0xB8
    mov dword [rdi + 1], 0x11111111
    mov byte [rdi + 5], 0xC3
    call rdi
    cmp eax, 0x11111111
    mov al, 'B'
    jne fail
    mov byte [CODE + 0x1001], 0x22  ; second page
    call rdi
    cmp eax, 0x11221111
    mov al, 'C'
    jne fail
    mov byte [CODE + 0xFFF], 0x33   ; first page
    call rdi
    cmp eax, 0x11221133
    mov al, 'D'
    jne fail
    mov byte [CODE + 0xFFE], 0xB9   ; opcode: now mov ecx, imm32; eax keeps its value
    mov eax, 0x44
    call rdi
    cmp eax, 0x44
    mov al, 'E'
    jne fail
    cmp ecx, 0x11221133
    mov al, 'F'
    jne fail
    lea rsi, [rel s_smc2]
    call puts

    ; c) the same physical page through an alias: PD0[5] maps VA 10 MiB to PA 0
    mov qword [PD0 + 5 * 8], 0x83
    invlpg [0xA00000 + CODE]
    mov byte [CODE + 0x10], 0xB8
    mov dword [CODE + 0x11], 0x55
    mov byte [CODE + 0x15], 0xC3
    mov rdi, CODE + 0x10
    call rdi                        ; decoded now
    mov dword [0xA00000 + CODE + 0x11], 0x66   ; written through the alias
    call rdi
    cmp eax, 0x66
    mov al, 'G'
    jne fail
    lea rsi, [rel s_smc3]
    call puts

    ; d) a fresh page, written with a string instruction and run
    lea rsi, [rel fresh_code]
    mov rdi, CODE + 0x1800
    mov ecx, fresh_code_len
    rep movsb
    mov rdi, CODE + 0x1800
    call rdi
    cmp eax, 0x600D
    mov al, 'H'
    jne fail
    lea rsi, [rel s_smc4]
    call puts

    ; ---- 2. page tables pointing outside RAM ----
    ; PD0[3] (VA 6 MiB) -> PT_A; PT_A[0..2] -> far physical pages.
    mov rdi, PT_A
    xor eax, eax
    mov ecx, 512
    rep stosq
    mov qword [PT_A + 0], FAR_PA | 3
    mov eax, 0xFFFFF003
    mov [PT_A + 8], rax
    mov rax, 0x1000000000 | 3
    mov [PT_A + 16], rax
    mov qword [PD0 + 3 * 8], PT_A | 3
    mov rax, cr3
    mov cr3, rax
    xor r13d, r13d                  ; not all-ones
    mov rbx, 0x600000
.leaf:
    TRY .leaf_fault
    mov rax, [rbx + 0x100]
    cmp rax, -1
    je .l1
    inc r13d
.l1:
    mov qword [rbx + 0x100], 0
    mov eax, [rbx + 0x100]
    cmp eax, -1
    je .l2
    inc r13d
.l2:
    ENDTRY
    add rbx, 0x1000
    cmp rbx, 0x603000
    jb .leaf
    lea rsi, [rel s_leaf]
    call puts
    mov eax, r13d
    call puthex8
    call newline
    jmp .tables
.leaf_fault:
    lea rsi, [rel s_leaf_fault]
    call puts
    call print_exc
    jmp .tables

.tables:
    ; PD0[4] (VA 8 MiB): a page table past RAM.
    mov qword [PD0 + 4 * 8], FAR_PA | 3
    ; PDPT[5] (VA 5 GiB): a page directory past RAM.
    mov qword [PDPT + 5 * 8], FAR_PA | 3
    ; PML4[1] (VA 512 GiB): a PDPT past RAM.
    mov qword [PML4 + 8], FAR_PA | 3
    mov rax, cr3
    mov cr3, rax
    lea rsi, [rel s_pt]
    mov rbx, 0x800123
    call probe_fault
    lea rsi, [rel s_pd]
    mov rbx, 0x140000123
    call probe_fault
    lea rsi, [rel s_pdpt]
    mov rbx, 0x8000000123
    call probe_fault
    lea rsi, [rel s_noncanon]
    mov rbx, 0x8000000000000000
    call probe_fault

    ; ---- 3. interrupt storm ----
    mov r15, LAPIC                  ; (above 2 GiB: no absolute disp32) kept for the handler
    mov eax, [r15 + 0x30]         ; version register
    cmp eax, -1
    jne .apic
    lea rsi, [rel s_noapic]
    call puts
    jmp .final
.apic:
    ; IDT vector 0x40 -> irq_handler; the IDT grows to 0x41 entries.
    lea rax, [rel irq_handler]
    mov rdi, IDT + 0x40 * 16
    mov [rdi], ax
    mov word [rdi + 2], 0x18
    mov word [rdi + 4], 0x8E00
    shr rax, 16
    mov [rdi + 6], ax
    shr rax, 16
    mov [rdi + 8], eax
    mov dword [rdi + 12], 0
    mov word [rel idt_desc2], 0x41 * 16 - 1
    mov qword [rel idt_desc2 + 2], IDT
    lidt [rel idt_desc2]
    mov dword [r15 + 0xF0], 0x1FF ; SVR: enabled, spurious vector 0xFF
    mov dword [r15 + 0x80], 0     ; TPR

    mov qword [rel irq_count], 0
    sti
    mov ecx, 5000
.ipi:
    mov dword [r15 + 0x300], 0x40040   ; ICR: self, fixed, vector 0x40
    dec ecx
    jnz .ipi
    cli
    lea rsi, [rel s_ipi_on]
    call puts
    mov eax, [rel irq_count]
    call puthex32
    call newline

    mov qword [rel irq_count], 0
    mov ecx, 5000
.ipi_off:
    mov dword [r15 + 0x300], 0x40040
    dec ecx
    jnz .ipi_off
    sti
    nop
    nop
    cli
    lea rsi, [rel s_ipi_off]
    call puts
    mov eax, [rel irq_count]
    call puthex32
    call newline

    ; Timer storm: periodic, divide by 1, initial count 1.
    mov qword [rel irq_count], 0
    mov dword [r15 + 0x3E0], 0xB  ; divide by 1
    mov dword [r15 + 0x320], 0x20040   ; periodic, vector 0x40
    mov dword [r15 + 0x380], 1
    sti
    mov ecx, 200000
.spin:
    dec ecx
    jnz .spin
    cli
    mov dword [r15 + 0x320], 0x10040   ; masked
    mov dword [r15 + 0x380], 0
    cmp qword [rel irq_count], 0
    mov al, 'T'
    je fail
    lea rsi, [rel s_timer]
    call puts

.final:
    lea rsi, [rel s_done]
    call puts
    ; CR3 outside RAM: nothing can be translated any more, the #PF and #DF handlers included.
    mov rax, FAR_PA
    mov cr3, rax
    nop
    mov al, 'Z'                     ; not reached
    jmp fail

; RSI = label, RBX = address: a read that must fault; prints "<label> vector <v> code <c> cr2 ok|<cr2>".
probe_fault:
    call puts
    TRY .caught
    mov rax, [rbx]
    ENDTRY
    lea rsi, [rel s_nofault]
    call puts
    jmp newline
.caught:
    call print_exc
    movzx eax, byte [rel exc_vector]
    cmp eax, 14
    jne .nl
    cmp [rel exc_cr2], rbx
    jne .badcr2
    lea rsi, [rel s_cr2ok]
    call puts
    jmp .nl
.badcr2:
    lea rsi, [rel s_cr2]
    call puts
    mov rax, [rel exc_cr2]
    call puthex64
.nl:
    jmp newline

print_exc:
    lea rsi, [rel s_vec]
    call puts
    movzx eax, byte [rel exc_vector]
    call puthex8
    lea rsi, [rel s_code]
    call puts
    mov rax, [rel exc_code]
    call puthex16
    ret

irq_handler:
    inc qword [rel irq_count]
    mov dword [r15 + 0xB0], 0     ; EOI
    iretq

fresh_code:
    mov eax, 0x600D
    ret
fresh_code_len equ $ - fresh_code

align 8
irq_count: dq 0
idt_desc2: dw 0
           dq 0

s_smc1:       db "smc: next instruction patched in its own block ok", 10, 0
s_smc2:       db "smc: page-straddling instruction patched on both pages ok", 10, 0
s_smc3:       db "smc: code written through an alias mapping ok", 10, 0
s_smc4:       db "smc: fresh page written and run ok", 10, 0
s_leaf:       db "pte -> past ram: reads all-ones, writes dropped, mismatches ", 0
s_leaf_fault: db "pte -> past ram: unexpected fault", 0
s_pt:         db "page table past ram:", 0
s_pd:         db "page directory past ram:", 0
s_pdpt:       db "pdpt past ram:", 0
s_noncanon:   db "non-canonical address:", 0
s_nofault:    db " no fault", 0
s_vec:        db " vector ", 0
s_code:       db " code ", 0
s_cr2ok:      db " cr2 ok", 0
s_cr2:        db " cr2 ", 0
s_noapic:     db "no local apic: interrupt storm skipped", 10, 0
s_ipi_on:     db "self-ipi x5000 with IF=1: interrupts ", 0
s_ipi_off:    db "self-ipi x5000 with IF=0, then sti: interrupts ", 0
s_timer:      db "apic timer storm: guest made progress", 10, 0
s_done:       db "cpu attack done, now cr3 past ram", 10, 0
