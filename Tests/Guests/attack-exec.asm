; attack-exec.asm — string I/O across the end of RAM, code that runs off the end of RAM or out of
; unmapped physical memory, and an IDT past the end of RAM.
;
; Run:    swhv run-image --image attack-exec.bin (AttackGuestTests), 16 MiB of RAM.
; Checks: 1. `rep insb` from an unclaimed port into the last 6 bytes of RAM and 10 bytes past it: the
;            RAM part reads 0xff, nothing else changes; `rep outsb` from there to port 0x80;
;         1b. 16-byte SSE loads and stores on unmapped MMIO: all-ones, stores dropped;
;         2. an instruction that starts in the last bytes of RAM and ends past it (`mov eax, imm32`
;            whose immediate lies in unmapped memory): the interpreter fetches all-ones as bus
;            hardware would (imm = 0xffffff11), falls through to ff ff and raises #UD;
;            KVM cannot emulate a fetch from outside its memory slots and swhv stops with a one-line
;            "KVM internal error" (exit status 1) - the brief's "stops with a clear message";
;         2b. (interpreter) x87 `fld tword` from MMIO (a NaN), FXSAVE to MMIO, FXRSTOR from it (#GP: the
;            all-ones MXCSR has reserved bits), FXSAVE across the end of RAM;
;         3. (interpreter) a call to unmapped physical memory: ff ff ... -> #UD at that address;
;         4. (interpreter) #UD with RSP in unmapped memory: the exception frame is dropped as bus
;            writes are, so the handler reads all-ones for vector and error code (on kvm-pvm the
;            delivery itself fails and the guest triple-faults; the KVM leg stops before this);
;         5. (interpreter) an IDT whose base is past RAM: the next exception cannot be delivered ->
;            triple fault.
; Output: attack-exec.expected (interpreter), attack-exec.kvm.expected.
; Stop:   interpreter: shutdown (exit status 2); KVM: error (exit status 1), see attack-exec.kvm.stop.

%define GUEST_NAME "attack-exec"
%include "include/longmode.inc"

RAM_END equ 0x1000000

; TB "name" ... TE: run the instructions between under TRY, then print "name: <16 bytes at out>",
; or "name: exception <vector>".
%macro TB 1
    %push t
    jmp %$go
%$s: db %1, ": ", 0
%$go:
    TRY %$c
%endmacro
%macro TE 0
    ENDTRY
    lea rsi, [rel %$s]
    call puts
    mov rax, [rel out + 8]
    call puthex64
    mov rax, [rel out]
    call puthex64
    call newline
    jmp %$e
%$c:
    lea rsi, [rel %$s]
    call puts
    lea rsi, [rel s_exc]
    call puts
    movzx eax, byte [rel exc_vector]
    call puthex8
    call newline
%$e:
    %pop
%endmacro

main:
    ; ---- 1. string I/O across the end of RAM ----
    mov dword [RAM_END - 8], 0x11111111
    mov dword [RAM_END - 4], 0x22222222
    mov rdi, RAM_END - 6
    mov ecx, 16
    mov dx, 0x200                   ; unclaimed: reads 0xff
    rep insb
    cmp ecx, 0
    mov al, 'A'
    jne fail
    lea rsi, [rel s_ins]
    call puts
    mov rax, [RAM_END - 8]
    call puthex64
    call newline
    mov rsi, RAM_END - 8
    mov ecx, 16
    mov dx, 0x80
    rep outsb
    cmp ecx, 0
    mov al, 'B'
    jne fail
    lea rsi, [rel s_outs]
    call puts

    ; ---- 1b. 16-byte SSE accesses to unmapped MMIO ----
    mov rax, cr4
    or eax, 0x600                   ; OSFXSR, OSXMMEXCPT
    mov cr4, rax
    mov rax, cr0
    and eax, ~4                     ; EM off, MP on
    or eax, 2
    mov cr0, rax
    mov rbx, 0x20000000
    call clear_out
    TB "movdqu from mmio"
    movdqu xmm0, [rbx + 8]
    movdqu [rel out], xmm0
    TE
    call clear_out
    TB "movaps to and from mmio"
    movaps [rbx + 0xFF0], xmm0      ; (no pxor: kvm-pvm's emulator lacks it at CPL0)
    movaps xmm2, [rbx + 0xFF0]
    movdqu [rel out], xmm2
    TE

    ; ---- 2. an instruction running off the end of RAM ----
    lea rsi, [rel s_straddle]
    call puts
    mov byte [RAM_END - 3], 0x90    ; nop
    mov byte [RAM_END - 2], 0xB8    ; mov eax, imm32: one immediate byte in RAM, three past it
    mov byte [RAM_END - 1], 0x11
    xor eax, eax
    TRY .straddle_caught
    mov rcx, RAM_END - 3
    call rcx
    ENDTRY
    lea rsi, [rel s_nofault]
    call puts
    jmp .exec_mmio
.straddle_caught:
    call print_exc

    ; ---- 2b. (interpreter) x87 and FXSAVE/FXRSTOR on unmapped MMIO and across the end of RAM ----
.exec_mmio:
    call clear_out
    TB "fld tword from mmio"
    fld tword [rbx]                 ; all-ones: a NaN
    fstp tword [rel out]
    TE
    call clear_out
    TB "fxsave to mmio"
    fxsave [rbx]
    TE
    TB "fxrstor from mmio"
    fxrstor [rbx]                   ; MXCSR all-ones has reserved bits: #GP
    TE
    call clear_out
    TB "fxsave across end of ram"
    mov rcx, RAM_END - 0x100
    fxsave [rcx]
    mov rax, [RAM_END - 0x100]      ; FCW, FSW, FTW...
    mov [rel out], rax
    TE

    ; ---- 3. executing unmapped physical memory ----
    lea rsi, [rel s_mmio]
    call puts
    TRY .mmio_caught
    xor eax, eax
    mov rcx, 0x20000000
    call rcx
    ENDTRY
    lea rsi, [rel s_nofault]
    call puts
    jmp .idt
.mmio_caught:
    call print_exc

    ; ---- 4. an exception with the stack in unmapped memory ----
.idt:
    lea rsi, [rel s_stack]
    call puts
    TRY .stack_caught
    mov rsp, 0x20000000
    ud2
.stack_caught:                      ; the frame went nowhere: the handler read all-ones
    mov rsp, STACK
    movzx eax, byte [rel exc_vector]
    call puthex8
    lea rsi, [rel s_code]
    call puts
    mov rax, [rel exc_code]
    call puthex64
    call newline

    ; ---- 5. IDT past RAM ----
    lea rsi, [rel s_idt]
    call puts
    lidt [rel far_idt]
    ud2
    mov al, 'Z'
    jmp fail

clear_out:
    mov qword [rel out], 0
    mov qword [rel out + 8], 0
    ret

print_exc:                          ; " vector <v> at <rip> eax <eax at the fault>"
    lea rsi, [rel s_vec]
    call puts
    movzx eax, byte [rel exc_vector]
    call puthex8
    lea rsi, [rel s_at]
    call puts
    mov rax, [rel exc_rip]
    call puthex64
    lea rsi, [rel s_eax]
    call puts
    mov rax, [rel exc_rax]
    call puthex32
    jmp newline

align 16
out:     times 16 db 0
align 8
far_idt: dw 0xFFF
         dq 0x30000000

s_ins:      db "rep insb across end of ram: ", 0
s_outs:     db "rep outsb across end of ram ok", 10, 0
s_straddle: db "instruction across end of ram:", 0
s_mmio:     db "call into unmapped memory:", 0
s_nofault:  db " no fault", 10, 0
s_vec:      db " vector ", 0
s_at:       db " at ", 0
s_eax:      db " eax ", 0
s_stack:    db "exception with rsp in unmapped memory: handler read vector ", 0
s_code:     db " error code ", 0
s_exc:      db "exception ", 0
s_idt:      db "idt past ram, then ud2", 10, 0
