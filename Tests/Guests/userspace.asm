; userspace.asm — a long-mode guest that drops to CPL3. It is swhv's VM-exit round-trip benchmark
; (N port writes from CPL0, then N from CPL3) and a test of the privilege-change paths: iretq to CPL3,
; the TSS I/O permission bitmap, and an exception from CPL3 taken on the TSS.RSP0 stack.
;
; Load:   flat binary at guest-physical 0x1000 (needs >= 2 MiB of RAM from address 0).
; Entry:  real mode, CS=0 IP=0x1000, SS=DS=ES=0, SP=0x8000, RFLAGS=0x2, CR0=0x10.
; Input:  N = little-endian u32 at guest-physical 0x500, written by the harness before the run;
;         0 (untouched RAM) means the default, 100000.
; Memory: TSS + I/O bitmap at 0x9000-0xB068, IDT at 0xC000, page tables at 0x10000-0x12FFF (first 1 GiB
;         identity-mapped with 2 MiB pages, all user-accessible), kernel stack below 0x8000, TSS.RSP0
;         stack below 0x70000, user stack below 0x80000.
; GDT:    Linux's layout (kernel CS 0x10, DS 0x18, user CS 0x33, DS 0x2B, TSS 0x40).
; Phases: 1. CPL0: "cpl0 loop\n", N x `out 0x80, al` with AL=0, "cpl0 done\n".
;         2. iretq to CPL3 with IOPL=0; the TSS I/O bitmap allows every port except 0x81:
;            "cpl3 loop\n", N x `out 0x80, al` with AL=3, "cpl3 done\n".
;         3. (only when assembled with -DPRIV_GATES, see below) CPL3 `syscall` -> CPL0 handler prints
;            "syscall ok\n" -> sysretq; CPL3 `int 0x40` (DPL3 gate) -> CPL0 handler prints
;            "int 0x40 ok\n" -> iretq.
;         3b. (-DPRIV_GATES -DSELFMOD) code written at CPL3, run at CPL0: SELFMOD_ROUNDS times, CPL3
;            writes `mov eax, ROUND; ret` to SM_CODE and makes a syscall whose handler calls it
;            SM_CALLS times (enough for the software CPU to translate it) and checks the sum; then
;            "selfmod ok\n". For the hybrid backend, whose user code writes RAM natively: a stale
;            decoded or translated copy of SM_CODE gives the wrong sum ("userspace FAIL S").
;         4. CPL3 `out 0x81, al`: denied by the bitmap -> #GP(0) -> CPL0 handler on the TSS.RSP0 stack
;            checks the frame (error code 0, RIP of the out, CS 0x33, user RSP, SS 0x2B) and prints
;            "back in cpl0 via #gp\n".
;         The exit benchmark times phases 1 and 2: one port-0x80 write per exit, told apart by the value
;         written (0 = CPL0, 3 = CPL3); the serial lines mark the phase boundaries.
; Output: plain `out` to 0x3F8 (from CPL3 too, through the bitmap). Expected: userspace.expected,
;         or userspace-gates.expected for the -DPRIV_GATES build (userspace-selfmod.expected with SELFMOD). A failed check prints
;         "userspace FAIL <letter>\n" (or an unexpected-exception line with its frame) and halts.
; Stop:   writes 0xFE to port 0x64 (i8042 reset) from CPL0 -> the run ends as "reset".
;
; Why syscall and int n are optional: on kvm-pvm (this project's development host) a CPL3 `syscall`
; jumps to LSTAR but stays at CPL3, and a CPL3 `int n` through a DPL3 gate raises #UD. Exceptions from
; CPL3 are delivered correctly. userspace.bin therefore avoids both; userspace-gates.bin has them for
; backends that implement them (the interpreter, KVM on VMX/SVM hosts).

bits 16
org 0x1000

COM1       equ 0x3F8
BENCH_PORT equ 0x80
DENIED     equ 0x81                 ; the one port the I/O bitmap denies
PARAM_N    equ 0x500
DEFAULT_N  equ 100000
TSS        equ 0x9000
IOMAP      equ TSS + 104
IDT        equ 0xC000
PML4       equ 0x10000
PDPT       equ 0x11000
PD         equ 0x12000
RSP0_TOP   equ 0x70000
USER_STACK equ 0x80000
SM_CODE    equ 0x50000              ; the code page phase 3b rewrites (its own 4 KiB page)
SELFMOD_ROUNDS equ 40
SM_CALLS   equ 64

; syscall loads CS=STAR[47:32], SS=CS+8; sysretq loads CS=STAR[63:48]+16, SS=STAR[63:48]+8 (RPL 3).
KCODE32 equ 0x08
KCODE   equ 0x10
KDATA   equ 0x18
UCODE32 equ 0x23                    ; the sysret base; otherwise unused
UDATA   equ 0x2B
UCODE   equ 0x33
TSS_SEL equ 0x40

%include "include/modeswitch.inc"

start:
    REAL_TO_PROTECTED gdt_desc, KCODE32, KDATA
    IDENTITY_MAP_2M PML4, 1, 512, 7, 0x87          ; P | RW | US (| PS)
    PROTECTED_TO_LONG PML4, 0x101, KCODE, KDATA, 0x8000   ; EFER.LME | SCE

    ; TSS: RSP0 and an I/O bitmap right after the 104-byte TSS: all ports allowed except DENIED,
    ; closed by the architectural all-ones byte.
    mov rdi, TSS
    xor eax, eax
    mov ecx, (104 + 8192) / 8
    rep stosq
    mov byte [rdi], 0xFF
    mov qword [TSS + 4], RSP0_TOP
    mov word [TSS + 102], 104       ; I/O map base
    or byte [IOMAP + DENIED / 8], 1 << (DENIED % 8)
    mov ax, TSS_SEL
    ltr ax

    ; IDT: every vector -> unexpected (DPL0); #GP -> gp_handler; 0x40 -> int40 (DPL3).
    mov rdi, IDT
    mov ecx, 256
.gate:
    lea rax, [rel unexpected]
    mov edx, 0x8E00                 ; present, DPL0, 64-bit interrupt gate
    call write_gate
    add rdi, 16
    dec ecx
    jnz .gate
    mov rdi, IDT + 13 * 16
    lea rax, [rel gp_handler]
    mov edx, 0x8E00
    call write_gate
    mov rdi, IDT + 0x40 * 16
    lea rax, [rel int40]
    mov edx, 0xEE00                 ; present, DPL3
    call write_gate
    lidt [rel idt_desc]

    ; syscall MSRs.
    mov ecx, 0xC0000081             ; STAR
    xor eax, eax
    mov edx, ((UCODE32 & ~3) << 16) | KCODE
    wrmsr
    mov ecx, 0xC0000082             ; LSTAR
    lea rax, [rel syscall_entry]
    mov rdx, rax
    shr rdx, 32
    wrmsr
    mov ecx, 0xC0000084             ; FMASK: clear IF, DF, TF on entry
    mov eax, 0x700
    xor edx, edx
    wrmsr

    ; Phase 1: N exits from CPL0.
    call load_n
    mov r12d, eax
    lea rsi, [rel msg_cpl0_loop]
    call puts
    mov ecx, r12d
    mov dx, BENCH_PORT
    xor eax, eax
.k_loop:
    out dx, al
    dec ecx
    jnz .k_loop
    lea rsi, [rel msg_cpl0_done]
    call puts

    ; Phase 2: iretq to CPL3.
    push UDATA                      ; SS
    push USER_STACK                 ; RSP
    push 0x0002                     ; RFLAGS: IOPL=0, IF=0
    push UCODE                      ; CS
    lea rax, [rel user_main]
    push rax                        ; RIP
    iretq

; ---- CPL3 ----
user_main:
    mov ax, cs
    cmp ax, UCODE
    mov al, 'A'
    jne fail                        ; fail is CPL-neutral: it only uses allowed ports and memory
    mov ax, ss
    cmp ax, UDATA
    mov al, 'A'
    jne fail
    call load_n
    mov r12d, eax
    lea rsi, [rel msg_cpl3_loop]
    call puts
    mov ecx, r12d
    mov dx, BENCH_PORT
    mov eax, 3
.u_loop:
    out dx, al
    dec ecx
    jnz .u_loop
    lea rsi, [rel msg_cpl3_done]
    call puts

%ifdef PRIV_GATES
    ; Phase 3: syscall and int 0x40 round trips.
    mov r13, 0x5A5A
    syscall
    cmp r13, 0xA5A5                 ; the handler's answer
    mov al, 'B'
    jne fail
    mov ax, cs
    cmp ax, UCODE
    mov al, 'B'
    jne fail
    mov r13, 0x4040
    mov rbp, rsp
    int 0x40
    cmp r13, 0x0404
    mov al, 'C'
    jne fail
    mov ax, cs
    cmp ax, UCODE
    mov al, 'C'
    jne fail
%ifdef SELFMOD
    ; Phase 3b: new code each round, written here and run by the syscall handler.
    mov r14d, 1
.sm_round:
    mov byte [SM_CODE], 0xB8        ; mov eax, imm32
    mov [SM_CODE + 1], r14d
    mov byte [SM_CODE + 5], 0xC3    ; ret
    mov r13, 0x5E1F
    syscall
    cmp r13, 0x600D
    mov al, 'S'
    jne fail
    inc r14d
    cmp r14d, SELFMOD_ROUNDS
    jbe .sm_round
    lea rsi, [rel msg_selfmod]
    call puts
%endif
%endif

    ; Phase 4: a denied port -> #GP at CPL3 -> gp_handler at CPL0.
    mov rbp, rsp
    mov al, 0x55
denied_out:
    out DENIED, al
    mov al, 'D'                     ; not reached
    jmp fail

; ---- CPL0 handlers ----
gp_handler:                         ; frame on the RSP0 stack: error code, RIP, CS, RFLAGS, RSP, SS
    cmp rsp, RSP0_TOP - 48
    mov al, 'E'
    jne fail
    cmp qword [rsp], 0              ; error code
    jne fail
    lea rax, [rel denied_out]
    cmp [rsp + 8], rax
    mov al, 'E'
    jne fail
    cmp qword [rsp + 16], UCODE
    jne fail
    cmp [rsp + 32], rbp
    jne fail
    cmp qword [rsp + 40], UDATA
    jne fail
    mov ax, cs
    cmp ax, KCODE
    mov al, 'E'
    jne fail
    lea rsi, [rel msg_gp]
    call puts
    mov al, 0xFE
    out 0x64, al                    ; i8042 reset
    jmp halt

%ifdef PRIV_GATES
syscall_entry:                      ; RCX = user RIP, R11 = user RFLAGS, still on the user stack
    mov ax, cs
    cmp ax, KCODE
    mov al, 'F'
    jne fail
    mov ax, ss
    cmp ax, KDATA
    mov al, 'F'
    jne fail
%ifdef SELFMOD
    cmp r13, 0x5E1F
    jne .plain
    push rcx                        ; R14 = the round: SM_CODE must return it, SM_CALLS times
    xor ebx, ebx
    mov ecx, SM_CALLS
.sm_call:
    mov eax, SM_CODE
    call rax
    add ebx, eax
    dec ecx
    jnz .sm_call
    pop rcx
    mov eax, r14d
    imul eax, eax, SM_CALLS
    cmp eax, ebx
    mov al, 'S'
    jne fail
    mov r13, 0x600D
    o64 sysret
.plain:
%endif
    cmp r13, 0x5A5A
    jne fail
    lea rsi, [rel msg_syscall]
    call puts
    mov r13, 0xA5A5
    o64 sysret

int40:                              ; frame on the RSP0 stack: RIP, CS, RFLAGS, RSP, SS
    cmp rsp, RSP0_TOP - 40
    mov al, 'G'
    jne fail
    cmp qword [rsp + 8], UCODE
    jne fail
    cmp [rsp + 24], rbp
    jne fail
    cmp qword [rsp + 32], UDATA
    jne fail
    cmp r13, 0x4040
    jne fail
    lea rsi, [rel msg_int40]
    call puts
    mov r13, 0x0404
    iretq
%else
syscall_entry:
int40:
    mov al, 'H'                     ; never used without PRIV_GATES
    jmp fail
%endif

unexpected:                         ; prints the top 3 frame qwords (error code/RIP/CS or RIP/CS/RFLAGS)
    lea rsi, [rel msg_unexpected]
    call puts
    mov rax, [rsp]
    call puthex64
    mov rax, [rsp + 8]
    call puthex64
    mov rax, [rsp + 16]
    call puthex64
    lea rsi, [rel msg_nl]
    call puts
    jmp halt

; ---- shared by both privilege levels ----
fail:                               ; AL = failing check letter
    mov [rel fail_letter], al
    lea rsi, [rel msg_fail]
    call puts
halt:
    cli                             ; at CPL3 this #GPs -> unexpected, which prints and halts at CPL0
    hlt
    jmp halt

load_n:                             ; EAX = N
    mov eax, [PARAM_N]
    test eax, eax
    jnz .ok
    mov eax, DEFAULT_N
.ok:
    ret

write_gate:                         ; RDI = gate, RAX = handler, DX = type/attributes word
    mov [rdi], ax
    mov word [rdi + 2], KCODE
    mov [rdi + 4], dx
    shr rax, 16
    mov [rdi + 6], ax
    shr rax, 16
    mov [rdi + 8], eax
    mov dword [rdi + 12], 0
    ret

puts:                               ; RSI: NUL-terminated
    push rax
    push rdx
    mov dx, COM1
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    pop rdx
    pop rax
    ret

puthex64:                           ; RAX as " 0x" + 16 lowercase hex digits
    push rcx
    push rdx
    push rbx
    push r9
    lea r9, [rel hexdigits]
    mov rbx, rax
    lea rsi, [rel msg_hexprefix]
    call puts
    mov dx, COM1
    mov ecx, 16
.digit:
    rol rbx, 4
    mov eax, ebx
    and eax, 0xF
    mov al, [r9 + rax]
    out dx, al
    dec ecx
    jnz .digit
    pop r9
    pop rbx
    pop rdx
    pop rcx
    ret

align 8
gdt:
    dq 0
    dq 0x00CF9B000000FFFF           ; 0x08 kernel code32 (only for the switch to long mode)
    dq 0x00AF9B000000FFFF           ; 0x10 kernel code64
    dq 0x00CF93000000FFFF           ; 0x18 kernel data
    dq 0x00CFFB000000FFFF           ; 0x20 user code32 (sysret base)
    dq 0x00CFF3000000FFFF           ; 0x28 user data
    dq 0x00AFFB000000FFFF           ; 0x30 user code64
    dq 0                            ; 0x38 unused
    ; 0x40: 64-bit TSS descriptor: base TSS, limit 104 + 8192 (the bitmap and its closing byte),
    ; present, type 9 (available 64-bit TSS)
    dw 104 + 8192
    dw TSS & 0xFFFF
    db (TSS >> 16) & 0xFF
    db 0x89
    db 0
    db (TSS >> 24) & 0xFF
    dd 0
    dd 0
gdt_desc:
    dw gdt_desc - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 16 - 1
    dq IDT

msg_cpl0_loop:  db "cpl0 loop", 10, 0
msg_cpl0_done:  db "cpl0 done", 10, 0
msg_cpl3_loop:  db "cpl3 loop", 10, 0
msg_cpl3_done:  db "cpl3 done", 10, 0
msg_syscall:    db "syscall ok", 10, 0
msg_int40:      db "int 0x40 ok", 10, 0
msg_gp:         db "back in cpl0 via #gp", 10, 0
msg_selfmod:    db "selfmod ok", 10, 0
msg_unexpected: db "userspace FAIL unexpected exception, frame:", 0
msg_hexprefix:  db " 0x", 0
msg_nl:         db 10, 0
hexdigits:      db "0123456789abcdef"
msg_fail:       db "userspace FAIL "
fail_letter:    db "?", 10, 0
