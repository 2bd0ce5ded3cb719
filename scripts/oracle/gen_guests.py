#!/usr/bin/env python3
"""Assembles the small hand-written guests of GuestTests into Swift byte arrays.

    pip install keystone-engine
    python3 scripts/oracle/gen_guests.py > Tests/X86InterpreterTests/GuestPrograms.swift

Each program is (name, bits, load address, assembly). Far jumps are spelled as bytes because the
assembler's syntax for them is unreliable.
"""
from keystone import Ks, KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64

MODES = {16: KS_MODE_16, 32: KS_MODE_32, 64: KS_MODE_64}
APIC = 0xFEE00000

PROGRAMS = [
    # Real mode -> protected mode -> long mode (GDT at 0x8000, GDTR image at 0x7E00).
    ("realToProtected", 16, 0x7C00, """
        cli
        lgdt [0x7E00]
        mov eax, cr0
        or eax, 1
        mov cr0, eax
        .byte 0xEA, 0x40, 0x7C, 0x08, 0x00
    """),
    ("protectedToLong", 32, 0x7C40, """
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, 0x9000
        push 0x12345678
        pop edi
        mov eax, cr4
        or eax, 0x20
        mov cr4, eax
        mov eax, 0x1000
        mov cr3, eax
        mov ecx, 0xC0000080
        rdmsr
        or eax, 0x100
        wrmsr
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        .byte 0xEA, 0x00, 0x7D, 0x00, 0x00, 0x18, 0x00
    """),
    ("longModeEntry", 64, 0x7D00, """
        mov rax, 0x1122334455667788
        push rax
        pop rbx
        mov dx, 0xE9
        mov al, 0x42
        out dx, al
        hlt
    """),

    # Long-mode kernel tests, entered at CPL 0 with the IDT at 0x4000 and a TSS selector 0x38.
    ("pageFault", 64, 0x10000, """
        mov ax, 0x38
        ltr ax
        mov qword ptr [0x40000008], 1
        hlt
    """),
    # #PF handler (IST 1): error code -> rax, CR2 -> rbx, RSP after popping the code -> rcx.
    ("pageFaultHandler", 64, 0x11000, """
        pop rax
        mov rbx, cr2
        mov rcx, rsp
        hlt
    """),
    ("divideError", 64, 0x10100, """
        xor ecx, ecx
        mov eax, 10
        div ecx
        hlt
    """),
    # Generic handler: records the return RIP and CS from the frame in rbx/rcx, vector marker in r14.
    ("recordFrame", 64, 0x11100, """
        mov rbx, [rsp]
        mov rcx, [rsp+8]
        mov r14, 1
        hlt
    """),
    # Same, for vectors with an error code: code -> rax.
    ("recordFrameWithCode", 64, 0x11200, """
        pop rax
        mov rbx, [rsp]
        mov rcx, [rsp+8]
        mov r14, 2
        hlt
    """),
    ("breakpoint", 64, 0x10200, """
        nop
        int3
        hlt
    """),
    ("undefinedOpcode", 64, 0x10300, """
        nop
        ud2
        hlt
    """),
    # Drop to CPL 3 with IRETQ; user code calls INT 0x80 (RSP0 switch) then executes HLT (#GP).
    ("toUser", 64, 0x10400, """
        mov ax, 0x38
        ltr ax
        push 0x23
        push 0x70000
        push 0x202
        push 0x2B
        push 0x10500
        iretq
    """),
    ("userCode", 64, 0x10500, """
        mov rax, 7
        int 0x80
        mov rdx, rax
        mov r12, rsp
        hlt
    """),
    # INT 0x80 handler (DPL 3 gate): rax += 1, remembers its RSP and the user SS:RSP from the frame.
    ("syscallHandler", 64, 0x11300, """
        add rax, 1
        mov r8, rsp
        mov r9, [rsp+24]
        mov r10, [rsp+32]
        iretq
    """),
    # Self-modifying code: the store patches the immediate of the very next instruction.
    ("selfModifying", 64, 0x10600, """
        mov byte ptr [rip+1], 0x55
        mov al, 0x11
        mov rbx, 0x10700
        mov byte ptr [rbx+1], 0x66
        call rbx
        hlt
    """),
    ("patchedFunction", 64, 0x10700, """
        mov cl, 0x22
        ret
    """),
    # LAPIC timer: enable the APIC, arm a one-shot timer, wait in HLT for vector 0x40.
    ("apicTimer", 64, 0x10800, f"""
        mov rdi, {APIC:#x}
        mov dword ptr [rdi+0xF0], 0x1FF
        mov dword ptr [rdi+0x3E0], 0xB
        mov dword ptr [rdi+0x320], 0x40
        mov dword ptr [rdi+0x380], 200000
        sti
        hlt
        mov r13, 0x77
        cli
        hlt
    """),
    ("apicTimerHandler", 64, 0x11400, f"""
        inc r15
        mov rdi, {APIC:#x}
        mov eax, dword ptr [rdi+0x390]
        mov dword ptr [rdi+0xB0], 0
        iretq
    """),
    # x87: load/add/multiply/store/convert, FCOMIP into EFLAGS, control and status words.
    ("x87Arithmetic", 64, 0x10C00, """
        fninit
        fld1
        fld qword ptr [0x12000]
        faddp st(1), st
        fld st(0)
        fmulp st(1), st
        fistp dword ptr [0x12010]
        fild dword ptr [0x12010]
        fsqrt
        fstp qword ptr [0x12018]
        fldpi
        fld1
        fcomip st(0), st(1)
        setb r8b
        fstp st(0)
        fnstsw ax
        fnstcw word ptr [0x12020]
        hlt
    """),
    # FXSAVE image after pushing 1.0 and 0.0.
    ("fxsaveImage", 64, 0x10D00, """
        fninit
        fld1
        fldz
        fxsave [0x12100]
        hlt
    """),
    # MOVAPS from a misaligned address raises #GP(0).
    ("misalignedMovaps", 64, 0x10E00, """
        nop
        movaps xmm0, xmmword ptr [0x12001]
        hlt
    """),
    # Real mode: INT 0x21 through the IVT (handler at 0000:0900), IRET back.
    ("realModeInt", 16, 0x0800, """
        mov ax, 0x1234
        mov sp, 0x7000
        int 0x21
        mov bx, ax
        hlt
    """),
    ("realModeHandler", 16, 0x0900, """
        add ax, 1
        mov cx, sp
        iret
    """),
    # External interrupts: enable and wait; the handler (vector 0x30 or 0x41) counts in r15.
    ("waitForInterrupt", 64, 0x10F00, """
        sti
        hlt
        cli
        hlt
    """),
    ("countingHandler", 64, 0x11500, """
        inc r15
        mov r11, [rsp]
        iretq
    """),
    # 32-bit protected mode: INT 0x20 through a 32-bit interrupt gate, IRETD back.
    ("protectedInt", 32, 0x20000, """
        mov esp, 0x30000
        int 0x20
        mov ebx, eax
        hlt
    """),
    ("protectedHandler", 32, 0x21000, """
        mov eax, 0xABCD
        mov ecx, [esp]
        mov edx, [esp+4]
        mov esi, [esp+8]
        iretd
    """),
    # A REP STOSB longer than the interpreter's REP slice (it yields and resumes).
    ("longRepStos", 64, 0x11600, """
        mov rdi, 0x200000
        mov rcx, 100000
        mov al, 0xAB
        rep stosb
        hlt
    """),
    # A tight infinite loop, for stop requests.
    ("spin", 64, 0x11700, """
    top:
        jmp top
    """),
    # SYSCALL/SYSRET round trip with SWAPGS; the user program then faults on HLT.
    ("syscallSetup", 64, 0x12000, """
        mov ax, 0x38
        ltr ax
        mov ecx, 0xC0000081
        xor eax, eax
        mov edx, 0x00180010
        wrmsr
        mov ecx, 0xC0000082
        mov eax, 0x12100
        xor edx, edx
        wrmsr
        mov ecx, 0xC0000084
        mov eax, 0x200
        wrmsr
        mov ecx, 0xC0000102
        mov eax, 0x13000
        wrmsr
        mov rcx, 0x12200
        mov r11, 0x202
        mov rsp, 0x70000
        .byte 0x48, 0x0F, 0x07
    """),
    ("syscallEntry", 64, 0x12100, """
        swapgs
        xor r9d, r9d
        mov r9, qword ptr gs:[r9]
        pushfq
        pop r8
        add rax, 100
        mov r12, rcx
        swapgs
        .byte 0x48, 0x0F, 0x07
    """),
    ("syscallUser", 64, 0x12200, """
        mov rax, 60
        syscall
        mov r13, rax
        hlt
    """),
    # MMIO: a device page at 0xD0000000 and the local APIC's version register.
    ("mmioAccess", 64, 0x12300, """
        mov rsi, 0xD0000000
        mov eax, dword ptr [rsi]
        mov dword ptr [rsi+0x10], 0x55
        mov rdi, 0xFEE00000
        mov ebx, dword ptr [rdi+0x30]
        mov rcx, qword ptr [rsi+0xFFC]
        hlt
    """),
    # A non-canonical access raises #GP; the #GP gate is not present, so delivery escalates to #DF.
    ("doubleFault", 64, 0x12400, """
        mov rax, 0x8000000000000000
        mov rbx, qword ptr [rax]
        hlt
    """),
    # POPF sets TF: the trap comes after the next instruction.
    ("singleStep", 64, 0x12500, """
        pushfq
        or qword ptr [rsp], 0x100
        popfq
        nop
        nop
        hlt
    """),
    # A CPU-bound loop for MIPS figures: ALU, loads/stores, a call, a conditional branch.
    ("benchmarkLoop", 64, 0x10A00, """
        mov rcx, 20000000
        mov rsi, 0x200000
    loop:
        add rax, rcx
        xor rdx, rax
        mov [rsi+rcx*8 & 0], rdx
        mov rbx, [rsi]
        lea rdi, [rbx+rax*2]
        shr rdi, 3
        cmp rdi, rbx
        jb skip
        inc r8
    skip:
        call leaf
        dec rcx
        jnz loop
        hlt
    leaf:
        add r9, rdi
        ret
    """),
]


def main():
    print("// Generated by scripts/oracle/gen_guests.py: do not edit; change the assembly there.")
    print()
    print("enum GuestPrograms {")
    for name, bits, addr, text in PROGRAMS:
        text = text.replace("rcx*8 & 0", "0")
        ks = Ks(KS_ARCH_X86, MODES[bits])
        enc, _ = ks.asm(text, addr)
        body = ", ".join("0x%02X" % b for b in enc)
        print(f"    /// {bits}-bit code at 0x{addr:X}.")
        print(f"    static let {name}: (address: UInt64, code: [UInt8]) = (0x{addr:X}, [{body}])")
    print("}")


if __name__ == "__main__":
    main()
