; smp.asm — the bootstrap processor starts the application processors with INIT/SIPI, as Linux
; does, and each one reports the APIC ID its local APIC holds.
;
; Load:   flat binary at guest-physical 0x1000 (the AP entry sits at 0x3000: start-up vector 0x03).
; Entry:  real mode, CS=0 IP=0x1000, SS=DS=ES=0, SP=0x8000, RFLAGS=0x2, CR0=0x10; every other CPU
;         waits for a start-up IPI (KVM's in-kernel local APICs, or the interpreter's).
; Param:  N, the number of CPUs (u32 at guest-physical 0x500; 0 or more than 32 is taken as 1).
; Output: plain `out` to 0x3F8. For N = 4: "smp 04 cpus: 00 01 02 03\n" — the CPU count, then the
;         APIC IDs seen (the BSP's and every AP's, read from the local APIC ID register at 0xFEE00020),
;         in ascending order. If fewer than N-1 APs report in time: "smp FAIL mask XXXXXXXX\n".
;         Then every CPU at once adds to two shared counters ITERS times, with LOCK INC and with
;         LOCK XADD: "atomic 00061A80 00061A80\n" for N = 4 (N * 100000 each; a lost update shows).
; Stop:   reset through the i8042 (0xFE to port 0x64); the APs are parked in `cli; hlt`.
;
; On the way it sends a fixed IPI and an INIT/SIPI pair to APIC ID 0x55, which no CPU has: both are
; dropped, and nothing else changes. The APs record themselves with LOCK BTS and LOCK INC on shared
; words. No `int n` and no `iretd`: kvm-pvm's instruction emulator (guest CPL0 there) fails on both.

bits 16
org 0x1000

%include "include/modeswitch.inc"
%include "include/smp32.inc"

COM1      equ 0x3F8
PARAM     equ 0x500
AP_COUNT  equ 0x600
AP_MASK   equ 0x604
LAPIC_ID  equ 0xFEE00020
LAPIC_SVR equ 0xFEE000F0
ICR_LO    equ 0xFEE00300
ICR_HI    equ 0xFEE00310
AP_VECTOR equ 0x03                  ; AP entry = AP_VECTOR * 0x1000
GO        equ 0x608                 ; set by the BSP: start the atomic phase
DONE      equ 0x60C                 ; CPUs finished with it
CTR_INC   equ 0x610
CTR_XADD  equ 0x614
ITERS     equ 100000

start:
    REAL_TO_PROTECTED gdt_desc, 0x08, 0x10
bsp32:
    mov dword [AP_COUNT], 0
    mov dword [AP_MASK], 0
    mov dword [GO], 0
    mov dword [DONE], 0
    mov dword [CTR_INC], 0
    mov dword [CTR_XADD], 0

    mov ebx, [PARAM]                ; N
    cmp ebx, 1
    jb .one
    cmp ebx, 32
    jbe .n_ok
.one:
    mov ebx, 1
.n_ok:
    mov dword [LAPIC_SVR], 0x1FF     ; software-enable the local APIC, spurious vector 0xFF
    mov eax, [LAPIC_ID]
    shr eax, 24
    lock bts dword [AP_MASK], eax

    ; IPIs to an APIC ID nobody has: a fixed IPI, INIT, SIPI. All must vanish.
    mov dword [ICR_HI], 0x55 << 24
    mov dword [ICR_LO], 0x000040F0   ; fixed, vector 0xF0, assert
    call icr_wait
    mov dword [ICR_HI], 0x55 << 24
    mov dword [ICR_LO], 0x00004500   ; INIT, assert
    call icr_wait
    mov dword [ICR_HI], 0x55 << 24
    mov dword [ICR_LO], 0x00004600 | AP_VECTOR
    call icr_wait

    ; INIT, then two SIPIs, to each AP by physical APIC ID (1 .. N-1).
    mov ecx, 1
.start_ap:
    cmp ecx, ebx
    jae .wait
    mov eax, ecx
    shl eax, 24
    mov [ICR_HI], eax
    mov dword [ICR_LO], 0x00004500   ; INIT, level assert
    call icr_wait
    mov [ICR_HI], eax
    mov dword [ICR_LO], 0x00004600 | AP_VECTOR
    call icr_wait
    mov [ICR_HI], eax
    mov dword [ICR_LO], 0x00004600 | AP_VECTOR   ; the second SIPI is ignored by a running AP
    call icr_wait
    inc ecx
    jmp .start_ap

.wait:
    lea edx, [ebx - 1]              ; APs expected
    mov ecx, 20000000               ; bounded wait
.spin:
    cmp [AP_COUNT], edx
    jae .report
    dec ecx
    jnz .spin
    mov esi, msg_fail
    call puts
    mov eax, [AP_MASK]
    call put_hex32
    mov al, 10
    out dx, al
    jmp reset

.report:
    mov esi, msg_smp
    call puts
    mov eax, ebx
    call put_hex8
    mov esi, msg_cpus
    call puts
    xor ecx, ecx                    ; print the set bits of AP_MASK, lowest first
    mov edi, 0                      ; separator flag
.bits:
    bt dword [AP_MASK], ecx
    jnc .next
    test edi, edi
    jz .first
    mov dx, COM1
    mov al, ' '
    out dx, al
.first:
    mov edi, 1
    mov eax, ecx
    call put_hex8
.next:
    inc ecx
    cmp ecx, 32
    jb .bits
    mov dx, COM1
    mov al, 10
    out dx, al

    ; Everyone hammers the counters at once.
    mov dword [GO], 1
    call hammer
    mov ecx, 40000000
.done_wait:
    cmp [DONE], ebx
    jae .done_ok
    dec ecx
    jnz .done_wait
.done_ok:
    mov esi, msg_atomic
    call puts
    mov eax, [CTR_INC]
    call put_hex32
    mov al, ' '
    out dx, al
    mov eax, [CTR_XADD]
    call put_hex32
    mov al, 10
    out dx, al
    jmp reset

; ITERS locked increments of each counter, then one of DONE.
hammer:
    mov ecx, ITERS
.loop:
    lock inc dword [CTR_INC]
    mov eax, 1
    lock xadd [CTR_XADD], eax
    dec ecx
    jnz .loop
    lock inc dword [DONE]
    ret

SMP32_HELPERS

msg_smp:  db "smp ", 0
msg_cpus: db " cpus: ", 0
msg_fail: db "smp FAIL mask ", 0
msg_atomic: db "atomic ", 0

SMP32_GDT

; The application processors' entry: real mode at AP_VECTOR:0000 (linear 0x3000).
SMP32_AP_ENTRY
    mov eax, [LAPIC_ID]
    shr eax, 24
    lock bts dword [AP_MASK], eax
    lock inc dword [AP_COUNT]
    mov esp, 0x7000
    shl eax, 8                      ; a stack of its own: 256 bytes per APIC ID below 0x7000
    sub esp, eax
.go:
    cmp dword [GO], 0
    je .go
    call hammer
.park:
    cli
    hlt
    jmp .park
