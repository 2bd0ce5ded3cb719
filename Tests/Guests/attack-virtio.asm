; attack-virtio.asm — a hostile virtio-blk driver: swhv's virtio-pci transport and split virtqueue
; against malformed descriptor chains, bad queue setups and forbidden requests.
;
; Run:    swhv run-image --image attack-virtio.bin --disk RO,readonly --disk RW  (AttackGuestTests)
;         RO: 128 sectors, sector n starts with "ROSEC" + 3 decimal digits; sector 2 holds code
;             (mov eax, 0x600dc0de; ret) at byte 16.
;         RW: 16 sectors, sector n starts with "RWSEC" + 3 digits.
; Needs:  00:01.0 = virtio-blk (RO), BAR0 0xC0000000; 00:02.0 = virtio-blk (RW), BAR0 0xC0008000:
;         what swhv's PciRoot assigns (the guest finds the virtio capabilities by walking config space
;         and checks them against these fixed layouts, then uses the fixed addresses).
; Memory: queue of the device in use at 0x40000 (descriptors), 0x40100 (avail), 0x40200 (used), size 8;
;         request header 0x50000, status byte 0x50100, data 0x51000, indirect table 0x52000,
;         executable buffer 0x53000.
; PCI:    first the VIRTIO_PCI_CAP_PCI_CFG window into BAR0 (good read, length 3, offset 2^32-4, BAR 5,
;         a write past the BAR), then BAR0 moves: to a free spot, on top of 00:02.0, left in sizing
;         state (all-ones), over RAM, back; and memory decoding off and on. One line each.
; Output: one line per case: "<case>: used=<new used entries> [id=<head> len=<used len>] st=<status
;         byte, ee = untouched> dev=<device status>"; when the device set DEVICE_NEEDS_RESET (0x40) the
;         driver resets it, sets it up again and does a good read: " -> reset, good read st=00".
;         Then an MSI-X storm: 200 rounds of garbage MSI-X table writes (any address, any data, masks
;         flipping), MSI-X enable/function-mask toggled in config space, PBA reads and writes, while
;         good and bad requests make the device signal queue and configuration-change interrupts.
;         Expected: attack-virtio.expected (identical on both backends).
; Host checks (the test): RO bit-identical; RW changed only in sectors 1 and 3 (the two good writes);
;         a sentinel file that is not given to the guest is untouched.
; Stop:   reset through the i8042 (0xFE to port 0x64).

%define GUEST_NAME "attack-virtio"
%include "include/longmode.inc"

DEV1     equ 1 << 11                ; PCI 00:01.0
DEV2     equ 2 << 11
BAR_RO   equ 0xC0000000
BAR_RW   equ 0xC0008000
QUEUE    equ 0x40000
HDR_A    equ 0x50000
STATUS_A equ 0x50100
DATA_A   equ 0x51000
IND_A    equ 0x52000
CODE_A   equ 0x53000

F_NEXT   equ 1
F_WRITE  equ 2
F_IND    equ 4
NEEDS_RESET equ 0x40

; DESC index, address, length, flags, next — into the table at RDI.
%macro DESC 5
    mov rax, %2
    mov [rdi + (%1) * 16], rax
    mov dword [rdi + (%1) * 16 + 8], %3
    mov word [rdi + (%1) * 16 + 12], %4
    mov word [rdi + (%1) * 16 + 14], %5
%endmacro

; HDR type, sector
%macro HDR 2
    mov dword [HDR_A], %1
    mov dword [HDR_A + 4], 0
    mov rax, %2
    mov [HDR_A + 8], rax
%endmacro

; CASE "name": prints "name:", clears the descriptor table, status := 0xEE, remembers used.idx,
; RDI := descriptor table.
%macro CASE 1
    jmp %%go
%%s: db %1, ":", 0
%%go:
    lea rsi, [rel %%s]
    call begin_case
%endmacro

; SUBMIT head: publish one chain and notify, then print what the device did.
%macro SUBMIT 1
    mov eax, %1
    call submit
    call report
%endmacro

; The standard good read of sector 0 into DATA_A (head 0).
%macro GOOD_READ_CHAIN 0
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
%endmacro

main:
    ; ---- PCI: find both functions, walk the virtio capabilities of 00:01.0 ----
    mov edi, DEV1
    call cfg_read32
    mov ebx, eax
    lea rsi, [rel s_pci1]
    call puts
    mov eax, ebx
    call puthex32
    mov edi, DEV1 | 0x10
    call cfg_read32
    mov ebx, eax
    lea rsi, [rel s_bar]
    call puts
    mov eax, ebx
    call puthex32
    call newline
    cmp ebx, BAR_RO
    mov al, 'A'
    jne fail
    mov edi, DEV2 | 0x10
    call cfg_read32
    cmp eax, BAR_RW
    mov al, 'B'
    jne fail

    mov edi, DEV1 | 0x34
    call cfg_read8
    mov r15d, eax                   ; capability pointer
    mov r14d, 48                    ; walk budget: a looping list must not hang the guest either
.cap:
    test r15d, r15d
    jz .caps_done
    dec r14d
    mov al, 'C'
    jz fail
    lea edi, [r15d + DEV1]
    call cfg_read8
    cmp al, 0x11                    ; MSI-X
    jne .not_msix
    mov [rel msix_cap], r15d
.not_msix:
    cmp al, 0x09                    ; vendor-specific
    jne .cap_next
    lea edi, [r15d + DEV1 + 3]
    call cfg_read8
    mov r13d, eax                   ; cfg_type
    cmp eax, 5                      ; VIRTIO_PCI_CAP_PCI_CFG
    jne .not_pcicfg
    mov [rel pcicfg_cap], r15d
.not_pcicfg:
    lea edi, [r15d + DEV1 + 8]
    call cfg_read32
    mov r12d, eax                   ; offset in BAR
    lea rsi, [rel s_cap]
    call puts
    mov eax, r13d
    call puthex8
    mov al, '@'
    call putc
    mov eax, r12d
    call puthex32
    cmp r13d, 2
    jne .cap_next
    lea edi, [r15d + DEV1 + 16]
    call cfg_read32
    mov r12d, eax
    mov al, '*'
    call putc
    mov eax, r12d
    call puthex8
.cap_next:
    lea edi, [r15d + DEV1 + 1]
    call cfg_read8
    mov r15d, eax
    jmp .cap
.caps_done:
    call newline

    ; ---- the read-only disk ----
    mov rbx, BAR_RO
    mov r12, QUEUE
    call virtio_init
    lea rsi, [rel s_init]
    call puts
    call puthex8
    lea rsi, [rel s_feat]
    call puts
    mov dword [rbx + 0x00], 0
    mov eax, [rbx + 0x04]
    call puthex32
    lea rsi, [rel s_cap_sz]
    call puts
    mov rax, [rbx + 0x2000]
    call puthex64
    call newline
    ; Config space is read-only: a write to capacity changes nothing.
    mov qword [rbx + 0x2000], 0x7FFFFFFF
    cmp qword [rbx + 0x2000], 128
    mov al, 'D'
    jne fail

    ; ---- the PCI side: the config-space window into BAR0, BAR moves, memory decoding off ----
    lea rsi, [rel s_win]
    call puts
    mov ebx, [rel pcicfg_cap]
    or ebx, DEV1
    mov r8d, 0                      ; bar 0, offset 0x14 (device_status), length 1
    mov r9d, 0x14
    mov r10d, 1
    call window_read
    mov r8d, 0                      ; length 3: not an access size
    mov r9d, 0x14
    mov r10d, 3
    call window_read
    mov r8d, 0                      ; offset past the BAR, and wrapping 2^32
    mov r9d, 0xFFFFFFFC
    mov r10d, 4
    call window_read
    mov r8d, 5                      ; a BAR the device does not have
    mov r9d, 0x14
    mov r10d, 1
    call window_read
    mov r8d, 0                      ; a write through the window to the end of the BAR: ignored
    mov r9d, 0x7FFC
    mov r10d, 4
    call window_setup
    lea edi, [ebx + 16]
    mov eax, -1
    call cfg_write32
    call newline
    mov rbx, BAR_RO

    lea rsi, [rel s_bar_moves]
    call puts
    mov eax, 0xC0010000             ; a free spot in the window
    call move_bar
    mov rax, 0xC0010000
    call status_at
    mov rax, BAR_RO
    call status_at
    mov eax, BAR_RW                 ; on top of the other disk: 00:01.0 answers there
    call move_bar
    mov rax, BAR_RW
    call status_at
    mov eax, -1                     ; BAR sizing, left in place: the BAR reads its size mask
    call move_bar
    mov edi, DEV1 | 0x10
    call cfg_read32
    call space_hex32
    mov dword [0x100014], 0x5AFE    ; BAR moved outside the window, over RAM: RAM stays RAM
    mov eax, 0x00100000
    call move_bar
    mov eax, [0x100014]
    call space_hex32
    mov eax, BAR_RO
    call move_bar
    mov rax, BAR_RO
    call status_at
    mov edi, DEV1 | 0x04            ; command: memory decoding off, then on again
    call cfg_read32
    and eax, 0xFFFF
    mov r14d, eax
    and eax, ~2
    call cfg_write32
    mov rax, BAR_RO
    call status_at
    mov eax, r14d
    call cfg_write32
    mov rax, BAR_RO
    call status_at
    call newline

    CASE "good read s0"
    GOOD_READ_CHAIN
    SUBMIT 0
    call print_data8

    CASE "read s127 x2 (past end)"
    HDR 0, 127
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 1024, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "read s128"
    HDR 0, 128
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "read s2^64-1"
    HDR 0, -1
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "write to read-only disk"
    mov rdi, DATA_A
    mov rax, "ATTACKED"
    mov ecx, 64
    rep stosq
    mov rdi, r12
    HDR 1, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "flush"
    HDR 4, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "get id"
    HDR 8, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 20, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0
    call print_data8

    CASE "type 0x55"
    HDR 0x55, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "no status byte"
    HDR 0, 0
    DESC 0, HDR_A, 16, 0, 0
    SUBMIT 0

    CASE "zero-length data"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 0, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "header in writable buffer"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT | F_WRITE, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "short header"
    HDR 0, 0
    DESC 0, HDR_A, 8, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "length 0xffffffff"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 0xFFFFFFFF, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "loop 0->1->0"
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 0
    SUBMIT 0

    CASE "self loop"
    DESC 0, HDR_A, 16, F_NEXT, 0
    SUBMIT 0

    CASE "next out of range"
    DESC 0, HDR_A, 16, F_NEXT, 8
    SUBMIT 0

    CASE "head out of range"
    GOOD_READ_CHAIN
    SUBMIT 200

    CASE "buffer in the pci hole"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, BAR_RO, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "buffer past ram"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, 0x1000000, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "buffer across end of ram"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, 0xFFFF00, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "buffer near 2^64"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, 0xFFFFFFFFFFFFFE00, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "buffer wrapping 2^64"
    HDR 0, 0
    DESC 0, 0xFFFFFFFFFFFFFFF8, 16, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "writable over used ring"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, QUEUE + 0x200, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "status over descriptor table"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, QUEUE + 0x10, 1, F_WRITE, 0
    SUBMIT 0

    CASE "header over avail ring"
    DESC 0, QUEUE + 0x100, 16, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "readable after writable"
    HDR 0, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_NEXT | F_WRITE, 2
    DESC 2, DATA_A, 512, 0, 0
    SUBMIT 0

    CASE "indirect good read"
    HDR 0, 0
    DESC 0, IND_A, 48, F_IND, 0
    mov rdi, IND_A
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "indirect length 17"
    DESC 0, IND_A, 17, F_IND, 0
    SUBMIT 0

    CASE "indirect length 0"
    DESC 0, IND_A, 0, F_IND, 0
    SUBMIT 0

    CASE "indirect 4096 entries"
    DESC 0, IND_A, 0x10000, F_IND, 0
    SUBMIT 0

    CASE "indirect table past ram"
    DESC 0, 0xFFFFFFFFFFFFFFF0, 16, F_IND, 0
    SUBMIT 0

    CASE "indirect nested"
    DESC 0, IND_A, 16, F_IND, 0
    mov rdi, IND_A
    DESC 0, IND_A, 16, F_IND, 0
    SUBMIT 0

    CASE "indirect with next"
    DESC 0, IND_A, 48, F_IND | F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "indirect loop"
    DESC 0, IND_A, 32, F_IND, 0
    mov rdi, IND_A
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 0
    SUBMIT 0

    CASE "avail idx +60000"
    GOOD_READ_CHAIN
    xor eax, eax
    call publish
    add word [r12 + 0x102], 59999
    call notify
    call report

    CASE "notify bogus queues"
    GOOD_READ_CHAIN
    xor eax, eax
    call publish                    ; made available, but only queue 0's notify processes it
    mov word [rbx + 0x3004], 0      ; queue 1 (does not exist)
    mov word [rbx + 0x3002], 0      ; not a multiple of the notify multiplier
    mov qword [rbx + 0x3FF8], -1
    mov byte [rbx + 0x3FFF], 0
    mov eax, [rbx + 0x3000]         ; reading the notify area
    mov word [rbx + 0x7FFE], 0      ; last word of the BAR
    call report
    lea rsi, [rel s_then]
    call puts
    mov r13w, [r12 + 0x202]
    call notify                     ; the chain above is processed now
    call report

    ; ---- broken queue setups ----
    CASE "queue size 3"
    mov r8w, 3
    mov r9, QUEUE
    call virtio_setup
    call report_setup

    CASE "descriptor table past ram"
    mov r8w, 8
    mov r9, 0xFFFFFFFFFFFFF000
    call virtio_setup
    call report_setup

    CASE "misaligned descriptor table"
    mov r8w, 8
    mov r9, QUEUE + 8
    call virtio_setup
    call report_setup

    CASE "unoffered feature"
    mov byte [rbx + 0x14], 0
    mov byte [rbx + 0x14], 3
    mov dword [rbx + 0x08], 1
    mov dword [rbx + 0x0C], 0x80000001  ; VERSION_1 and bit 63, which the device never offered
    mov byte [rbx + 0x14], 0x0B
    mov byte [rbx + 0x14], 0x0F
    call report_setup

    CASE "legacy driver (no VERSION_1)"
    mov byte [rbx + 0x14], 0
    mov byte [rbx + 0x14], 3
    mov byte [rbx + 0x14], 0x0B
    mov byte [rbx + 0x14], 0x0F
    call report_setup

    ; MSI-X storm: garbage in the MSI-X table (addresses anywhere, any data, masks flipping), enable
    ; and function-mask toggled from config space, while good and bad requests make the device
    ; signal queue and configuration-change interrupts (IF stays 0: they only pile up in the IRR).
    lea rsi, [rel s_msix]
    call puts
    mov eax, [rel msix_cap]
    call puthex8
    mov r15d, 0x1B873593            ; xorshift32 state
    mov r14d, 200
.storm:
    call xorshift
    mov ecx, eax
    and ecx, 0x3C                   ; a dword in the two entries (and the words after them)
    call xorshift
    mov [rbx + 0x4000 + rcx], eax
    call xorshift
    mov ecx, eax
    and ecx, 0xFF8                  ; a qword anywhere in the table page
    call xorshift
    mov [rbx + 0x4000 + rcx], rax
    mov word [rbx + 0x10], 0        ; config_msix_vector
    mov word [rbx + 0x16], 0
    mov word [rbx + 0x1A], 1        ; queue 0 -> vector 1
    call xorshift
    and eax, 0xC000                 ; MSI-X enable and function mask
    or eax, 0x0001                  ; (the table size field is read-only anyway)
    shl eax, 16
    mov edi, [rel msix_cap]
    or edi, DEV1
    call cfg_write32
    mov eax, [rbx + 0x5000]         ; PBA
    mov dword [rbx + 0x5000], -1    ; read-only
    test r14d, 3
    jnz .good
    ; a bad chain: DEVICE_NEEDS_RESET and a configuration-change interrupt, then set up again
    mov rdi, r12
    xor eax, eax
    mov ecx, 16
    rep stosq
    mov rdi, r12
    DESC 0, HDR_A, 16, F_NEXT, 0
    xor eax, eax
    call submit
    call virtio_init
    jmp .storm_next
.good:
    mov rdi, r12
    GOOD_READ_CHAIN
    xor eax, eax
    call submit
.storm_next:
    dec r14d
    jnz .storm
    ; MSI-X off again, then one more good request.
    xor eax, eax
    mov edi, [rel msix_cap]
    or edi, DEV1
    call cfg_write32
    call virtio_init
    mov rdi, r12
    GOOD_READ_CHAIN
    mov byte [STATUS_A], 0xEE
    xor eax, eax
    call submit
    lea rsi, [rel s_msix2]
    call puts
    movzx eax, byte [STATUS_A]
    call puthex8
    lea rsi, [rel s_dev]
    call puts
    movzx eax, byte [rbx + 0x14]
    call puthex8
    call newline

    ; A disk read replaces code the CPU has already run: the next call must run the new bytes.
    CASE "dma over executed code"
    mov rdi, CODE_A
    mov byte [rdi], 0xB8            ; mov eax, 0xbad
    mov dword [rdi + 1], 0xBAD
    mov byte [rdi + 5], 0xC3
    call rdi
    mov rdi, r12
    HDR 0, 2
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, CODE_A - 16, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0
    lea rsi, [rel s_code]
    call puts
    mov rax, CODE_A
    call rax
    call puthex32
    call newline

    ; The status byte and the GET_ID serial are device writes too: over code that already ran.
    CASE "status byte over executed code"
    mov rdi, CODE_A
    mov dword [rdi], 0x90C3EEB0     ; mov al, 0xee; ret
    call rdi
    mov rdi, r12
    HDR 4, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, CODE_A + 1, 1, F_WRITE, 0   ; the status lands on the immediate
    SUBMIT 0
    lea rsi, [rel s_code8]
    call puts
    mov rax, CODE_A
    call rax
    call puthex8
    call newline

    CASE "serial over executed code"
    mov rdi, CODE_A
    mov dword [rdi], 0x90C3EEB0
    call rdi
    mov rdi, r12
    HDR 8, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, CODE_A + 1, 1, F_NEXT | F_WRITE, 2     ; one byte of "swhv-disk0": 's' is the immediate
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0
    lea rsi, [rel s_code8]
    call puts
    mov rax, CODE_A
    call rax
    call puthex8
    call newline

    ; ---- the writable disk (same queue memory: the read-only one is reset first) ----
    mov byte [rbx + 0x14], 0
    mov rbx, BAR_RW
    call virtio_init
    lea rsi, [rel s_rw]
    call puts
    call puthex8
    call newline

    CASE "rw write s1"
    mov rdi, DATA_A
    mov rax, "ATTACKED"
    mov ecx, 64
    rep stosq
    mov rdi, r12
    HDR 1, 1
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw read s1"
    mov rdi, DATA_A
    xor eax, eax
    mov ecx, 64
    rep stosq
    mov rdi, r12
    HDR 0, 1
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0
    call print_data8

    CASE "rw write s3 in two pieces"
    mov rdi, DATA_A
    mov rax, "SPLIT-A."
    mov ecx, 32
    rep stosq
    mov rax, "SPLIT-B."
    mov ecx, 32
    rep stosq
    mov rdi, r12
    HDR 1, 3
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 256, F_NEXT, 2
    DESC 2, DATA_A + 256, 256, F_NEXT, 3
    DESC 3, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw write s16 (past end)"
    HDR 1, 16
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw write s15 x2 (across end)"
    HDR 1, 15
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 1024, F_NEXT, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw write 100 bytes"
    HDR 1, 5
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 100, F_NEXT, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw write from past ram"
    HDR 1, 6
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, 0x1000000, 512, F_NEXT, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw write with data in writable part"
    HDR 1, 7
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, DATA_A, 512, F_NEXT | F_WRITE, 2
    DESC 2, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    CASE "rw flush"
    HDR 4, 0
    DESC 0, HDR_A, 16, F_NEXT, 1
    DESC 1, STATUS_A, 1, F_WRITE, 0
    SUBMIT 0

    lea rsi, [rel s_done]
    call puts
    mov al, 0xFE
    out 0x64, al
    jmp halt

; ---- PCI configuration mechanism #1 ----
cfg_read32:                         ; EDI = device << 11 | register -> EAX
    push rdx
    mov eax, edi
    and eax, ~3
    or eax, 0x80000000
    mov dx, 0xCF8
    out dx, eax
    mov dx, 0xCFC
    in eax, dx
    pop rdx
    ret

; The VIRTIO_PCI_CAP_PCI_CFG window at config offset EBX (device | capability): R8D = bar,
; R9D = offset, R10D = length.
window_setup:
    push rax
    lea edi, [ebx + 4]
    call cfg_read32
    and eax, ~0xFF
    or eax, r8d
    call cfg_write32
    lea edi, [ebx + 8]
    mov eax, r9d
    call cfg_write32
    lea edi, [ebx + 12]
    mov eax, r10d
    call cfg_write32
    pop rax
    ret
window_read:                        ; prints " <data>", read with the access size the window names
    call window_setup
    push rdx
    lea eax, [ebx + 16]
    or eax, 0x80000000
    mov dx, 0xCF8
    out dx, eax
    mov dx, 0xCFC
    xor eax, eax
    cmp r10d, 1
    je .byte
    cmp r10d, 2
    je .word
    in eax, dx
    jmp .got
.byte:
    in al, dx
    jmp .got
.word:
    in ax, dx
.got:
    pop rdx
space_hex32:                        ; " <EAX as 8 hex digits>"
    push rax
    mov al, ' '
    call putc
    pop rax
    jmp puthex32

move_bar:                           ; EAX = new BAR0 of 00:01.0
    mov edi, DEV1 | 0x10
    jmp cfg_write32

status_at:                          ; RAX = BAR base: prints " <device_status>"
    push rax
    mov al, ' '
    call putc
    pop rax
    movzx eax, byte [rax + 0x14]
    jmp puthex8

cfg_write32:                        ; EDI = device << 11 | register, EAX = value
    push rdx
    push rax
    mov eax, edi
    and eax, ~3
    or eax, 0x80000000
    mov dx, 0xCF8
    out dx, eax
    pop rax
    mov dx, 0xCFC
    out dx, eax
    pop rdx
    ret

%include "include/xorshift.inc"

cfg_read8:                          ; EDI = device << 11 | register -> EAX (zero-extended byte)
    push rcx
    call cfg_read32
    mov ecx, edi
    and ecx, 3
    shl ecx, 3
    shr eax, cl
    movzx eax, al
    pop rcx
    ret

; ---- virtio ----
; Resets the device at RBX and sets it up with queue 0 (size 8) at R12. Returns the status in AL.
virtio_init:
    mov r8w, 8
    mov r9, r12
; R8W = queue size, R9 = descriptor table address (avail and used follow at +0x100, +0x200).
virtio_setup:
    push rdi
    push rcx
    mov rdi, r12                    ; fresh rings: the device's indices start at 0 after reset
    xor eax, eax
    mov ecx, 0x300 / 8
    rep stosq
    pop rcx
    pop rdi
    mov byte [rbx + 0x14], 0        ; reset
    mov byte [rbx + 0x14], 1        ; ACKNOWLEDGE
    mov byte [rbx + 0x14], 3        ; DRIVER
    mov dword [rbx + 0x08], 0
    mov dword [rbx + 0x0C], 1 << 28 ; VIRTIO_F_INDIRECT_DESC
    mov dword [rbx + 0x08], 1
    mov dword [rbx + 0x0C], 1       ; VIRTIO_F_VERSION_1
    mov byte [rbx + 0x14], 0x0B     ; FEATURES_OK
    mov word [rbx + 0x16], 0        ; queue_select
    mov [rbx + 0x18], r8w           ; queue_size
    mov [rbx + 0x20], r9            ; queue_desc (one qword write)
    lea rax, [r12 + 0x100]
    mov [rbx + 0x28], eax           ; queue_driver (two dword writes, as Linux does)
    shr rax, 32
    mov [rbx + 0x2C], eax
    lea rax, [r12 + 0x200]
    mov [rbx + 0x30], rax
    mov word [rbx + 0x1C], 1        ; queue_enable
    mov byte [rbx + 0x14], 0x0F     ; DRIVER_OK
    movzx eax, byte [rbx + 0x14]
    ret

begin_case:                         ; RSI = name
    call puts
    mov rdi, r12
    xor eax, eax
    mov ecx, 16
    rep stosq                       ; descriptor table (8 x 16 bytes)
    mov byte [STATUS_A], 0xEE
    mov qword [DATA_A], 0
    mov qword [DATA_A + 8], 0
    mov r13w, [r12 + 0x202]         ; used.idx before the request
    mov rdi, r12
    ret

submit:                             ; AX = head: publish it, then notify
    call publish
    jmp notify
publish:                            ; AX = head: avail.ring[idx % 8] = head, idx++
    push rcx
    push rdx
    movzx ecx, word [r12 + 0x102]
    mov edx, ecx
    and edx, 7
    mov [r12 + 0x104 + rdx * 2], ax
    inc ecx
    mov [r12 + 0x102], cx
    pop rdx
    pop rcx
    ret
notify:
    mov word [rbx + 0x3000], 0      ; queue 0: notify_off 0
    ret

report:
    lea rsi, [rel s_used]
    call puts
    movzx ecx, word [r12 + 0x202]
    sub cx, r13w
    movzx ecx, cx
    mov eax, ecx
    call puthex8
    test ecx, ecx
    jz .status
    movzx edx, r13w
    and edx, 7
    lea rsi, [rel s_id]
    call puts
    mov eax, [r12 + 0x204 + rdx * 8]
    call puthex16
    lea rsi, [rel s_len]
    call puts
    mov eax, [r12 + 0x208 + rdx * 8]
    call puthex32
.status:
    lea rsi, [rel s_st]
    call puts
    movzx eax, byte [STATUS_A]
    call puthex8
report_dev:
    lea rsi, [rel s_dev]
    call puts
    movzx eax, byte [rbx + 0x14]
    call puthex8
    test al, NEEDS_RESET
    jz .done
    ; Recover as a driver would: reset, set up again, and show that a good request works.
    lea rsi, [rel s_reset]
    call puts
    call virtio_init
    mov rdi, r12
    xor eax, eax
    mov ecx, 16
    rep stosq
    mov byte [STATUS_A], 0xEE
    mov rdi, r12
    GOOD_READ_CHAIN
    mov eax, 0
    call submit
    movzx eax, byte [STATUS_A]
    call puthex8
.done:
    jmp newline

report_setup:                       ; after a queue setup: device status (and recovery)
    jmp report_dev

print_data8:                        ; "  data '<first 8 bytes of DATA_A>'"
    lea rsi, [rel s_data]
    call puts
    mov rsi, DATA_A
    mov ecx, 8
.c:
    lodsb
    cmp al, 0x20
    jb .dot
    cmp al, 0x7E
    jbe .put
.dot:
    mov al, '.'
.put:
    call putc
    dec ecx
    jnz .c
    mov al, "'"
    call putc
    jmp newline

s_pci1:   db "pci 00:01.0 id ", 0
s_bar:    db " bar0 ", 0
s_cap:    db " cap", 0
s_init:   db "ro disk status ", 0
s_feat:   db " features ", 0
s_cap_sz: db " capacity ", 0
s_rw:     db "rw disk status ", 0
s_used:   db " used=", 0
s_id:     db " id=", 0
s_len:    db " len=", 0
s_st:     db " st=", 0
s_dev:    db " dev=", 0
s_reset:  db " -> reset, good read st=", 0
s_data:   db "  data '", 0
align 4
msix_cap: dd 0
pcicfg_cap: dd 0
s_code:   db "  code returns ", 0
s_code8:  db "  code returns al=", 0
s_msix:   db "msi-x storm (cap at ", 0
s_msix2:  db "): 200 rounds, then good read st=", 0
s_win:    db "pci cfg window: status, length 3, offset 2^32-4, bar 5:", 0
s_bar_moves: db "bar0 moves: new, old, over 00:02.0, sizing, over ram, restored, decode off, on:", 0
s_then:   db "  then queue 0 notify:", 0
s_done:   db "virtio attack done", 10, 0
