; attack-smp.asm — a guest that abuses the multiprocessor machinery: INIT/SIPI storms against running
; CPUs, IPIs of every delivery mode to APIC IDs that do not exist, illegal vectors, and every I/O APIC
; register written with every kind of value. The guest must keep running and the host must neither
; crash nor hang.
;
; Load:   flat binary at guest-physical 0x1000 (AP entry at 0x3000: start-up vector 0x03).
; Entry:  real mode, CS=0 IP=0x1000; run with --cpus 4 (the other CPUs wait for a start-up IPI).
; Output: plain `out` to 0x3F8: "storm survived: aps 03, ioapic version 00170011\n" — the APs that
;         came back after the last INIT/SIPI round, and the I/O APIC's version register read after
;         the wild writes (24 pins, version 0x11: read-only, it must not change).
; Stop:   reset through the i8042 (0xFE to port 0x64).
;
; Phases (the BSP in 32-bit protected mode):
;   A  start the APs; each one counts its starts (LOCK INC) and then spins incrementing its own word
;   B  100 rounds of: INIT + SIPI + SIPI to all excluding self (restarting running APs mid-loop),
;      a fixed IPI to each absent APIC ID 4..254, an NMI, INIT and SIPI to absent ID 0x77, an SMI and
;      an ExtINT IPI to absent ID 0x66, a logical broadcast of a fixed IPI to a vector nobody
;      handles while interrupts are off, and a self-IPI with illegal vector 3 (never delivered)
;   C  every I/O APIC register index 0..255 written with 0, all ones, 0x5A5A5A5A and 0x0001FFFF
;      (unmasked, every delivery mode) — no device line is asserted, so nothing is sent — then all
;      redirection entries masked again
;   D  a last INIT/SIPI round; wait until the three APs have started again, print, reset
; No `int n`, no `iretd` (kvm-pvm's emulator cannot run them); interrupts stay disabled throughout.

bits 16
org 0x1000

%include "include/modeswitch.inc"
%include "include/smp32.inc"

COM1      equ 0x3F8
STARTS    equ 0x600
LAPIC_SVR equ 0xFEE000F0
ICR_LO    equ 0xFEE00300
ICR_HI    equ 0xFEE00310
IOREGSEL  equ 0xFEC00000
IOWIN     equ 0xFEC00010
AP_VECTOR equ 0x03

start:
    REAL_TO_PROTECTED gdt_desc, 0x08, 0x10
bsp32:
    mov dword [STARTS], 0
    mov dword [LAPIC_SVR], 0x1FF

    ; A: start the APs.
    call init_sipi_all

    ; B: the storm.
    mov edi, 100
.round:
    call init_sipi_all
    mov ecx, 4
.absent:
    mov eax, ecx
    shl eax, 24
    mov [ICR_HI], eax
    mov dword [ICR_LO], 0x000040E0          ; fixed, vector 0xE0
    call icr_wait
    inc ecx
    cmp ecx, 255
    jb .absent
    mov esi, absent_modes
.mode:
    lodsd
    test eax, eax
    jz .modes_done
    mov edx, [esi]
    add esi, 4
    mov [ICR_HI], edx
    mov [ICR_LO], eax
    call icr_wait
    jmp .mode
.modes_done:
    dec edi
    jnz .round

    ; C: wild I/O APIC programming.
    mov esi, wild_values
.value:
    lodsd
    cmp eax, 0x12345678                     ; end marker
    je .wild_done
    mov edx, eax
    xor ecx, ecx
.reg:
    mov [IOREGSEL], ecx
    mov [IOWIN], edx
    inc ecx
    cmp ecx, 256
    jb .reg
    jmp .value
.wild_done:
    mov ecx, 0x10                           ; mask every redirection entry again
.mask:
    mov [IOREGSEL], ecx
    mov dword [IOWIN], 0x00010000
    add ecx, 2
    cmp ecx, 0x40
    jb .mask

    ; D: one more round, and wait for the three APs to come back.
    mov dword [STARTS], 0
    call init_sipi_all
    mov ecx, 40000000
.wait:
    cmp dword [STARTS], 3
    jae .report
    dec ecx
    jnz .wait
.report:
    mov esi, msg1
    call puts
    mov eax, [STARTS]
    call put_hex8
    mov esi, msg2
    call puts
    mov dword [IOREGSEL], 1
    mov eax, [IOWIN]
    call put_hex32
    mov dx, COM1
    mov al, 10
    out dx, al
    jmp reset

; INIT, SIPI, SIPI to all excluding self.
init_sipi_all:
    mov dword [ICR_HI], 0
    mov dword [ICR_LO], 0x000C4500
    call icr_wait
    mov dword [ICR_LO], 0x000C4600 | AP_VECTOR
    call icr_wait
    mov dword [ICR_LO], 0x000C4600 | AP_VECTOR
    call icr_wait
    ret

SMP32_HELPERS

; (ICR low, ICR high) pairs sent each round, 0-terminated.
absent_modes:
    dd 0x00004402, 0x77 << 24               ; NMI to absent 0x77
    dd 0x00004500, 0x77 << 24               ; INIT to absent 0x77
    dd 0x00004600 | AP_VECTOR, 0x77 << 24   ; SIPI to absent 0x77
    dd 0x00004200, 0x66 << 24               ; SMI to absent 0x66
    dd 0x00004700, 0x66 << 24               ; ExtINT to absent 0x66
    dd 0x00004120, 0xFF << 24               ; lowest priority, physical broadcast, vector 0x20 (IF=0 everywhere)
    dd 0x00004821, 0x0F << 24               ; fixed, logical (flat), vector 0x21
    dd 0x00044003, 0                        ; self, illegal vector 3: rejected, never delivered
    dd 0

wild_values:
    dd 0, 0xFFFFFFFF, 0x5A5A5A5A, 0x0001FFFF, 0x12345678

msg1: db "storm survived: aps ", 0
msg2: db ", ioapic version ", 0

SMP32_GDT

SMP32_AP_ENTRY
    lock inc dword [STARTS]
    mov ebx, 0x700                          ; a word of its own to count in
.spin:
    inc dword [ebx]
    jmp .spin
