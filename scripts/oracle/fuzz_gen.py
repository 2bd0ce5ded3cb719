"""Random instruction streams for the differential fuzzer (see fuzz.py), with unicorn as the oracle.

A case is built one instruction at a time against the live oracle state: each candidate encoding
is generated knowing the current registers and memory (so memory operands land in mapped memory,
divisions do not fault, string counts stay small), validated by iced-x86, executed in unicorn with
`until` = the address it must reach, and recorded as a step: changed registers, RFLAGS, which
RFLAGS bits are defined, and the memory writes it made.

Undefined flags: iced-x86 says which flags an instruction leaves undefined; they stay undefined
(not compared) until an instruction defines them again. An instruction that would read an
undefined flag is never emitted as is: a flag-defining CMP/ADD/SUB goes first. Counts known only
at run time refine iced's static answer (a masked shift count of 0 changes no flag; OF is defined
for 1-bit shifts; SHL/SHR CF is undefined for counts >= the operand width).

Memory layout (identical in the Swift runner, FuzzCase.swift): code at CODE, data at DATA and stack
at STACK_LO..STACK_TOP, both filled from a per-case seed with splitmix64 (fill_region).
"""
import collections
import ctypes
import random

import numpy as np
import iced_x86
from unicorn import Uc, UC_ERR_INSN_INVALID, UC_ARCH_X86, UC_MODE_64, UC_HOOK_MEM_WRITE, UC_HOOK_INTR, UC_PROT_ALL
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

CODE, CODE_SIZE = 0x10000, 0x10000
DATA, DATA_SIZE = 0x100000, 0x2000
STACK_LO, STACK_TOP = 0x1FE000, 0x200000
M64 = (1 << 64) - 1

CF, PF, AF, ZF, SF, DF, OF = 1, 4, 0x10, 0x40, 0x80, 0x400, 0x800
# x87 readout (same addresses in FuzzCase.swift): FXSAVE [X87_SCRATCH] at X87_STUB, UD2, then
# FNINIT, UD2 at X87_STUB + 10.
X87_SCRATCH, X87_STUB = 0x180000, 0x1F0000
X87_STUB_CODE = bytes.fromhex("0fae042500001800" "0f0b" "dbe3" "0f0b")
# Unicorn only: FXRSTOR [X87_SCRATCH], UD2 at X87_RESTORE (hardware corrections after MMX steps
# and the zeroed registers each case starts with).
X87_RESTORE = X87_STUB + 0x100
X87_RESTORE_CODE = bytes.fromhex("0fae0c2500001800" "0f0b")
ARITH = CF | PF | AF | ZF | SF | OF
# RFLAGS bits the runner compares (minus undefined ones): arithmetic flags, bit 1, TF IF DF IOPL NT AC ID.
COMPARED = 0x247FD7
# The flags the host-CPU cross-check compares (fuzz_native.c): OF DF SF ZF AF PF CF.
NATIVE_FLAGS = 0xCD5

REG_NAMES = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
             "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"]
REG_NAMES_LOWER = {r.lower() for r in REG_NAMES}
RSP, RBP, RSI, RDI, RCX, RAX, RBX, RDX = 4, 5, 6, 7, 1, 0, 3, 2

# iced RflagsBits -> RFLAGS positions, for all 7-bit combinations.
_ICED_BITS = {1: OF, 2: SF, 4: ZF, 8: AF, 0x10: CF, 0x20: PF, 0x40: DF}
ICED_TO_RFLAGS = [sum(v for k, v in _ICED_BITS.items() if i & k) for i in range(128)]


def iced_flags(x):
    return ICED_TO_RFLAGS[x & 0x7F]


def fill_region(seed, base, size):
    """splitmix64 of (seed + address * golden) per 8-byte word; FuzzCase.swift does the same."""
    idx = np.arange(size // 8, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.uint64(base) + idx * np.uint64(8)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z.astype("<u8").tobytes()


class Retry(Exception):
    """The family cannot produce a valid instruction for the current state; pick another."""


def s32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def s64(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def sx(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def cond(cc, f):
    c, p, z, s, o = f & 1, (f >> 2) & 1, (f >> 6) & 1, (f >> 7) & 1, (f >> 11) & 1
    r = (o, c, z, c | z, s, p, s ^ o, z | (s ^ o))[cc >> 1]
    return bool(r) ^ bool(cc & 1)


# Flags each condition code reads.
CC_READS = [OF, OF, CF, CF, ZF, ZF, CF | ZF, CF | ZF, SF, SF, PF, PF, SF | OF, SF | OF, ZF | SF | OF, ZF | SF | OF]


class Emu:
    """One unicorn instance reused across cases: stepping through ctypes (no per-call Python wrapping)."""

    def __init__(self):
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.h = self.uc._uch
        self.uc.mem_map(CODE, CODE_SIZE)
        self.data = ctypes.create_string_buffer(DATA_SIZE)
        self.stack = ctypes.create_string_buffer(STACK_TOP - STACK_LO)
        self.uc.mem_map_ptr(DATA, DATA_SIZE, UC_PROT_ALL, ctypes.addressof(self.data))
        self.uc.mem_map_ptr(STACK_LO, STACK_TOP - STACK_LO, UC_PROT_ALL, ctypes.addressof(self.stack))
        names = REG_NAMES + ["RIP", "EFLAGS"]
        self.n = len(names)
        self.ids = (ctypes.c_int * self.n)(*[getattr(X, "UC_X86_REG_" + r) for r in names])
        self.vals = (ctypes.c_uint64 * self.n)()
        self.ptrs = (ctypes.c_void_p * self.n)(*[ctypes.addressof(self.vals) + 8 * i for i in range(self.n)])
        # XMM0-15 and MXCSR, read only after SSE instructions.
        self.vids = (ctypes.c_int * 17)(*[getattr(X, f"UC_X86_REG_XMM{i}") for i in range(16)] + [X.UC_X86_REG_MXCSR])
        self.vbuf = (ctypes.c_uint8 * (17 * 16))()
        self.vptrs = (ctypes.c_void_p * 17)(*[ctypes.addressof(self.vbuf) + 16 * i for i in range(17)])
        self.writes = []
        self.interrupt = None
        self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write)
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self.code_used = 0
        # x87 state is read through FXSAVE to a scratch page; FNINIT starts each case.
        self.uc.mem_map(X87_SCRATCH, 0x1000)
        self.uc.mem_map(X87_STUB, 0x1000)
        self.uc.mem_write(X87_STUB, X87_STUB_CODE)
        self.uc.mem_write(X87_RESTORE, X87_RESTORE_CODE)

    def _on_write(self, uc, access, address, size, value, user):
        self.writes.append((address, size, value & ((1 << (8 * size)) - 1)))

    def _on_intr(self, uc, intno, user):
        self.interrupt = intno
        uc.emu_stop()

    def reset(self, regs, rflags, mem_seed, fs_base=0, gs_base=0, xmm=None, mxcsr=0x1F80):
        if self.code_used:
            self.uc.mem_write(CODE, b"\0" * self.code_used)
            # Writes alone leave stale translations reachable from the previous case.
            self.uc.ctl_flush_tb()
        self.code_used = 0
        ctypes.memmove(self.data, fill_region(mem_seed, DATA, DATA_SIZE), DATA_SIZE)
        ctypes.memmove(self.stack, fill_region(mem_seed, STACK_LO, STACK_TOP - STACK_LO), STACK_TOP - STACK_LO)
        for i, v in enumerate(regs):
            self.vals[i] = v
        self.vals[17] = rflags
        uclib.uc_reg_write_batch(self.h, self.ids, self.ptrs, 16)
        self.uc.reg_write(X.UC_X86_REG_EFLAGS, rflags)
        self.uc.reg_write(X.UC_X86_REG_FS_BASE, fs_base)
        self.uc.reg_write(X.UC_X86_REG_GS_BASE, gs_base)
        # FNINIT state with R0-R7 zero: FNINIT keeps register contents, which MMX instructions read.
        self.restore_image(FNINIT_IMAGE)
        for i, v in enumerate(xmm or [0] * 16):
            self.uc.reg_write(getattr(X, f"UC_X86_REG_XMM{i}"), v)
        self.uc.reg_write(X.UC_X86_REG_MXCSR, mxcsr)

    def write_code(self, addr, b):
        self.uc.mem_write(addr, b)
        self.code_used = max(self.code_used, addr + len(b) - CODE)

    def step(self, ip, until):
        """Runs from ip until `until`; returns the unicorn error code (0 = ok)."""
        self.writes = []
        self.interrupt = None
        return uclib.uc_emu_start(self.h, ip, until, 0, 0)

    def read_state(self):
        uclib.uc_reg_read_batch(self.h, self.ids, self.ptrs, self.n)
        v = list(self.vals)
        return v[:16], v[16], v[17]

    def run_stub(self, addr, length):
        saved, self.writes = self.writes, []
        uclib.uc_emu_start(self.h, addr, addr + length, 0, 0)
        self.writes = saved

    def read_x87(self):
        """(FCW, FSW, abridged FTW, [ST0..ST7 as 80-bit ints]) from an FXSAVE image."""
        self.run_stub(X87_STUB, 8)
        img = bytes(self.uc.mem_read(X87_SCRATCH, 160))
        sts = [int.from_bytes(img[32 + 16 * i:42 + 16 * i], "little") for i in range(8)]
        return (int.from_bytes(img[0:2], "little"), int.from_bytes(img[2:4], "little"), img[4], sts)

    def save_image(self):
        """The FXSAVE image of the current state."""
        self.run_stub(X87_STUB, 8)
        return bytes(self.uc.mem_read(X87_SCRATCH, 512))

    def restore_image(self, img):
        saved, self.writes = self.writes, []
        self.uc.mem_write(X87_SCRATCH, bytes(img))
        uclib.uc_emu_start(self.h, X87_RESTORE, X87_RESTORE + 8, 0, 0)
        self.writes = saved

    def hardware_mmx(self, code, before):
        """After an MMX instruction, corrects the x87 state where QEMU differs from hardware (the
        host CPU shows the corrected state; Bochs and SDM vol. 1 table 9-1 agree): a written MMX
        register gets bits 79:64 all ones; EMMS sets TOP to 0; CVTPI2PS/PD from memory touch no MMX
        register, so the x87 state stays as it was (`before`, an FXSAVE image)."""
        kind = mmx_kind(code)
        img = bytearray(self.save_image())
        if kind == "cvtpi2p-mem":
            img[0:24] = before[0:24]       # up to MXCSR, which the conversion may have changed
            img[32:160] = before[32:160]
        elif kind == "emms":
            fsw = int.from_bytes(img[2:4], "little")
            top = (fsw >> 11) & 7
            regs = [img[32 + 16 * i:48 + 16 * i] for i in range(8)]   # ST(i) = R(top+i)
            for i in range(8):
                img[32 + 16 * ((top + i) & 7):48 + 16 * ((top + i) & 7)] = regs[i]
            img[2:4] = (fsw & ~0x3800).to_bytes(2, "little")
        else:
            for i in mmx_written(code):    # TOP is 0: ST(i) = Ri
                img[32 + 16 * i + 8:32 + 16 * i + 10] = b"\xff\xff"
        self.restore_image(img)

    def read_vector_state(self):
        """([XMM0..15 as 128-bit ints], MXCSR)."""
        ctypes.memset(self.vbuf, 0, 17 * 16)
        uclib.uc_reg_read_batch(self.h, self.vids, self.vptrs, 17)
        raw = bytes(self.vbuf)
        return ([int.from_bytes(raw[16 * i:16 * i + 16], "little") for i in range(16)],
                int.from_bytes(raw[256:260], "little"))

    def mem(self, addr, n):
        if DATA <= addr and addr + n <= DATA + DATA_SIZE:
            return self.data.raw[addr - DATA:addr - DATA + n]
        if STACK_LO <= addr and addr + n <= STACK_TOP:
            return self.stack.raw[addr - STACK_LO:addr - STACK_LO + n]
        return None

    def read64(self, addr):
        b = self.mem(addr, 8)
        return None if b is None else int.from_bytes(b, "little")


FNINIT_IMAGE = bytes([0x7F, 0x03]) + bytes(22) + (0x1F80).to_bytes(4, "little") + (0xFFFF).to_bytes(4, "little") \
    + bytes(480)

MM_WRITES = (iced_x86.OpAccess.WRITE, iced_x86.OpAccess.READ_WRITE, iced_x86.OpAccess.COND_WRITE,
             iced_x86.OpAccess.READ_COND_WRITE)


def mmx_kind(code):
    """None for a non-MMX instruction, else "emms", "cvtpi2p-mem" or "mmx" (iced-x86 decides)."""
    ins = iced_x86.Decoder(64, code, ip=CODE).decode()
    if ins.code == iced_x86.Code.EMMS:
        return "emms"
    if ins.code in (iced_x86.Code.CVTPI2PS_XMM_MMM64, iced_x86.Code.CVTPI2PD_XMM_MMM64) and \
            ins.op1_kind == iced_x86.OpKind.MEMORY:
        return "cvtpi2p-mem"
    for k in range(ins.op_count):
        if ins.op_kind(k) == iced_x86.OpKind.REGISTER and iced_x86.Register.MM0 <= ins.op_register(k) <= iced_x86.Register.MM7:
            return "mmx"
    return None


def mmx_written(code):
    """MMX registers the instruction writes (iced-x86)."""
    ins = iced_x86.Decoder(64, code, ip=CODE).decode()
    info = iced_x86.InstructionInfoFactory().info(ins)
    return {u.register - iced_x86.Register.MM0 for u in info.used_registers()
            if iced_x86.Register.MM0 <= u.register <= iced_x86.Register.MM7 and u.access in MM_WRITES}


def in_mapped(addr, n):
    return (DATA <= addr and addr + n <= DATA + DATA_SIZE) or (STACK_LO <= addr and addr + n <= STACK_TOP)


class Mem:
    """A memory operand: ModRM mod/rm, optional SIB, displacement, REX.X/B and address size."""
    __slots__ = ("mod", "rm", "sib", "disp", "dsize", "x", "b", "a32", "riprel", "ea", "seg")

    def __init__(self, mod, rm, sib, disp, dsize, x, b, a32, riprel, ea, seg=None):
        self.mod, self.rm, self.sib, self.disp, self.dsize = mod, rm, sib, disp, dsize
        self.x, self.b, self.a32, self.riprel, self.ea = x, b, a32, riprel, ea
        self.seg = seg    # 0x64 (FS) / 0x65 (GS) override, or None


class Insn:
    __slots__ = ("code", "until", "adjust", "filler", "kind", "sse", "fault", "x87", "mmx")

    def __init__(self, code, kind, until=None, adjust=None, sse=False, fault=None, x87=False, mmx=False):
        self.code, self.kind, self.until, self.adjust, self.sse = code, kind, until, adjust, sse
        self.x87 = x87
        # An MMX instruction: unicorn's x87 state is corrected to hardware's after it.
        self.mmx = mmx
        # (vector, error code or None, CR2 or None) for a final instruction that must fault.
        self.fault = fault


HIGH8 = (16, 17, 18, 19)   # AH CH DH BH as byte-register ids


class Gen:
    """Per-case generator state."""

    def __init__(self, rng, emu, families):
        self.rng = rng
        self.emu = emu
        self.families = families
        self.regs = [0] * 16
        self.rip = CODE
        self.flags = 0x2
        self.pending = None
        self.rex_mode = False     # byte registers 4-7 mean SPL..DIL (REX present) instead of AH..BH

    # ---- register values
    def val(self, r, bits):
        if bits == 8 and r >= 16:
            return (self.regs[r - 16] >> 8) & 0xFF
        return self.regs[r] & ((1 << bits) - 1)

    def pick_reg(self, bits, dst=False, exclude=()):
        rng = self.rng
        if bits == 8:
            pool = list(range(16)) if self.rex_mode else [0, 1, 2, 3] + list(HIGH8)
            if dst and self.rex_mode:
                pool.remove(RSP)
        else:
            pool = [r for r in range(16) if not (dst and r == RSP)]
        pool = [r for r in pool if r not in exclude]
        return rng.choice(pool)

    # ---- memory operands
    def pick_target(self, span, align=1, aligned=False):
        rng = self.rng
        if aligned:
            lo = rng.choice((DATA, STACK_LO))
            return lo + rng.randrange(0x2000 // align - span // align) * align
        if rng.random() < 0.72:
            lo, hi = DATA, DATA + DATA_SIZE
        else:
            lo, hi = STACK_LO, STACK_TOP
        if lo == DATA and rng.random() < 0.12 and span > 1:
            t = DATA + 0x1000 - rng.randrange(1, span)          # crosses the page boundary
        else:
            t = rng.randrange(lo, hi - span + 1)
            if align > 1 and rng.random() < 0.8:
                t = max(lo, t & ~(align - 1))
        return t

    def pick_seg(self, target, a32=False):
        """Sometimes an FS/GS override: (prefix or None, the offset the address must produce)."""
        if self.rng.random() < 0.15:
            p = self.rng.choice((0x64, 0x65))
            off = (target - self.seg_base[p]) & M64
            if not a32 or off < (1 << 32):
                self.used_fsgs = True
                return p, off
        return None, target

    def gen_mem(self, span=8, target=None, rex_ok=True, free=False, rsp_bias=0, a32=None, align=1,
                no_riprel=False, aligned=False):
        """A memory operand addressing `target` (or any address if free); `aligned` forces
        `align`-byte alignment of the linear address (SSE m128 operands)."""
        rng = self.rng
        if target is None and not free:
            target = self.pick_target(span, align, aligned)
        if a32 is None:
            a32 = rng.random() < 0.08
        m = self._gen_mem(span, target, rex_ok, free, rsp_bias, a32, no_riprel)
        return m

    def _gen_mem(self, span, target, rex_ok, free, rsp_bias, a32, no_riprel):
        rng = self.rng
        seg = None
        if not free:
            ea = target
            seg, target = self.pick_seg(target, a32)
        nreg = 16 if rex_ok else 8
        for _ in range(24):
            form = rng.random()
            if free:
                mod = rng.randrange(3)
                if rng.random() < 0.5:
                    rm = rng.randrange(8)
                    if rm == 4:
                        continue
                    base = rm | (8 if rex_ok and rng.random() < 0.3 else 0)
                    dsize = (0, 1, 4)[mod]
                    if mod == 0 and rm == 5:
                        dsize = 4
                    disp = rng.randrange(-(1 << (8 * dsize - 1)), 1 << (8 * dsize - 1)) if dsize else 0
                    return Mem(mod, rm, None, disp, dsize, 0, base >> 3, a32, None, None)
                b = rng.randrange(nreg)
                i = rng.randrange(nreg)
                sc = rng.randrange(4)
                sib = (sc << 6) | ((i & 7) << 3) | (b & 7)
                dsize = (0, 1, 4)[mod]
                if mod == 0 and b & 7 == 5:
                    dsize = 4
                disp = rng.randrange(-(1 << (8 * dsize - 1)), 1 << (8 * dsize - 1)) if dsize else 0
                return Mem(mod, 4, sib, disp, dsize, i >> 3, b >> 3, a32, None, None)
            amask = 0xFFFFFFFF if a32 else M64
            if form < 0.12 and not no_riprel and (a32 or abs(s64(target - self.rip)) < (1 << 31) - 64):
                # RIP-relative (EIP-relative with 67): patched once the length is known.
                return Mem(0, 5, None, 0, 4, 0, 0, a32, target, ea, seg)
            if form < 0.2 and (target < (1 << 31) or (a32 and target < (1 << 32))):
                # [disp32] through a SIB with neither base nor index.
                sib = (rng.randrange(4) << 6) | (4 << 3) | 5
                return Mem(0, 4, sib, target, 4, 0, 0, a32, None, ea, seg)
            regval = lambda r: ((self.regs[r] + (rsp_bias if r == RSP else 0)) & amask)
            if form < 0.55:
                b = rng.randrange(nreg)
                disp = s32(target - regval(b)) if a32 else s64(target - regval(b))
                if not -(1 << 31) <= disp < (1 << 31):
                    continue
                sib = None
                rm = b & 7
                if rm == 4:
                    sib = (rng.randrange(4) << 6) | (4 << 3) | 4
                if disp == 0 and rm != 5 and rng.random() < 0.6:
                    mod, dsize = 0, 0
                elif -128 <= disp < 128 and rng.random() < 0.8:
                    mod, dsize = 1, 1
                else:
                    mod, dsize = 2, 4
                return Mem(mod, rm, sib, disp, dsize, 0, b >> 3, a32, None, ea, seg)
            # Base + index*scale (or index*scale + disp32 without base).
            i = rng.randrange(nreg)
            if i == RSP:
                continue
            sc = rng.randrange(4)
            if rng.random() < 0.15:
                disp = s64(target - (regval(i) << sc)) if not a32 else s32(target - (regval(i) << sc))
                if not -(1 << 31) <= disp < (1 << 31):
                    continue
                sib = (sc << 6) | ((i & 7) << 3) | 5
                return Mem(0, 4, sib, disp, 4, i >> 3, 0, a32, None, ea, seg)
            b = rng.randrange(nreg)
            disp = target - regval(b) - (regval(i) << sc)
            disp = s32(disp) if a32 else s64(disp)
            if not -(1 << 31) <= disp < (1 << 31):
                continue
            sib = (sc << 6) | ((i & 7) << 3) | (b & 7)
            if disp == 0 and b & 7 != 5 and rng.random() < 0.6:
                mod, dsize = 0, 0
            elif -128 <= disp < 128 and rng.random() < 0.8:
                mod, dsize = 1, 1
            else:
                mod, dsize = 2, 4
            return Mem(mod, 4, sib, disp, dsize, i >> 3, b >> 3, a32, None, ea, seg)
        # Always possible without an override: RIP-relative, or [disp32] through a SIB.
        if seg is not None or (a32 and target >= 1 << 32):
            return self._gen_mem(span, ea, rex_ok, free, rsp_bias, a32, no_riprel)
        if no_riprel:
            return Mem(0, 4, (4 << 3) | 5, target, 4, 0, 0, a32, None, ea, seg)
        return Mem(0, 5, None, 0, 4, 0, 0, a32, target, ea, seg)

    # ---- encoding
    def encode(self, op, reg=0, rm=None, size=None, imm=b"", r8=(), pfx=(), lock=False, noise=True,
               rexw=None, sse=False):
        """Assembles prefixes, REX, opcode, ModRM/SIB/displacement and immediate.

        reg: ModRM.reg as a register id (byte ids 16-19 are AH..BH) or an opcode extension.
        rm: ("r", id) or a Mem. size: 16 adds 66, 64 adds REX.W. r8: byte-register ids used."""
        rng = self.rng
        W = (size == 64) if rexw is None else rexw
        regf = reg - 12 if reg >= 16 else reg
        R = 1 if 8 <= reg < 16 else 0
        Xb = B = 0
        modrm = sib = None
        disp = b""
        if isinstance(rm, Mem):
            Xb, B = rm.x, rm.b
            modrm = (rm.mod << 6) | ((regf & 7) << 3) | rm.rm
            sib = rm.sib
            if rm.dsize:
                disp = (rm.disp & ((1 << (8 * rm.dsize)) - 1)).to_bytes(rm.dsize, "little")
        elif rm is not None:
            r = rm[1]
            rmf = r - 12 if r >= 16 else r
            B = 1 if 8 <= r < 16 else 0
            modrm = 0xC0 | ((regf & 7) << 3) | (rmf & 7)
        need = W or R or Xb or B or any(4 <= r < 8 for r in r8)
        forbid = any(r >= 16 for r in r8)
        if need and forbid:
            raise Retry()
        rex = None
        if need or (not forbid and (self.rex_mode and r8 or rng.random() < 0.06)):
            rex = 0x40 | (W << 3) | (R << 2) | (Xb << 1) | B
        legacy = list(pfx)
        if size == 16:
            legacy.append(0x66)
        if lock:
            legacy.append(0xF0)
        if isinstance(rm, Mem) and rm.a32:
            legacy.append(0x67)
        if isinstance(rm, Mem) and rm.seg is not None:
            legacy.append(rm.seg)
        if noise and rng.random() < 0.1:
            # Null segment prefixes (ignored in 64-bit mode); FS/GS too where nothing is addressed.
            legacy.append(rng.choice((0x2E, 0x3E, 0x26, 0x36) if isinstance(rm, Mem) else
                                     (0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65)))
        if noise and W and not sse and rng.random() < 0.05:
            legacy.append(0x66)     # REX.W wins over 66 (in SSE encodings 66 selects the form)
        rng.shuffle(legacy)
        if isinstance(rm, Mem) and rm.seg is not None:
            # Unicorn quirk: a null segment prefix (26 2E 36 3E) after FS/GS cancels the override in
            # QEMU; the host CPU and the interpreter keep FS/GS. Keep FS/GS last among them.
            legacy = [p for p in legacy if p != rm.seg]
            at = max([i + 1 for i, p in enumerate(legacy) if p in (0x26, 0x2E, 0x36, 0x3E)], default=0)
            legacy.insert(rng.randrange(at, len(legacy) + 1), rm.seg)
        if noise and legacy and rng.random() < 0.05:
            # A REX followed by a legacy prefix is ignored.
            legacy.insert(rng.randrange(len(legacy)), 0x40 | rng.randrange(16))
        out = bytearray(legacy)
        if rex is not None:
            out.append(rex)
        out += op
        if modrm is not None:
            out.append(modrm)
        if sib is not None:
            out.append(sib)
        doff = len(out)
        out += disp
        out += imm
        if isinstance(rm, Mem) and rm.riprel is not None:
            nxt = self.rip + len(out)
            d = rm.riprel - nxt
            out[doff:doff + 4] = (d & 0xFFFFFFFF).to_bytes(4, "little")
        if len(out) > 15:
            raise Retry()
        return bytes(out)

    def rm_operand(self, bits, dst, span=None, mem_p=0.4, **kw):
        """A register or memory ModRM operand of `bits` width."""
        if self.rng.random() < mem_p:
            return self.gen_mem(span or bits // 8, rex_ok=not (bits == 8 and not self.rex_mode), **kw)
        return ("r", self.pick_reg(bits, dst=dst))


def imm_bytes(v, n):
    return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")


EDGE = [0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
        0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF]


def rand_value(rng):
    c = rng.random()
    if c < 0.2:
        v = rng.choice(EDGE)
        if rng.random() < 0.3:
            v += rng.randrange(-2, 3)
        return v & M64
    if c < 0.35:
        return rng.getrandbits(rng.choice((4, 8, 16)))
    if c < 0.55:
        return rng.choice((DATA, STACK_LO)) + rng.randrange(0x2000)
    if c < 0.6:
        return (-rng.randrange(1, 0x1000)) & M64
    return rng.getrandbits(64)


def rand_imm(rng, n):
    c = rng.random()
    if c < 0.3:
        v = rng.choice(EDGE)
    elif c < 0.5:
        v = rng.randrange(-16, 16)
    else:
        v = rng.getrandbits(8 * n)
    return v & ((1 << (8 * n)) - 1)


def size_pick(rng, sizes=(8, 16, 32, 64)):
    return rng.choice(sizes)


def iz(size):
    return 2 if size == 16 else 4


# ---------------------------------------------------------------------------------------------
# Instruction families. Each returns an Insn for the current state or raises Retry; a family may
# set g.pending to itself after returning a preparatory instruction (e.g. loading a count).

def byte_mode(g, size):
    g.rex_mode = size == 8 and g.rng.random() < 0.6


def f_alu(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    k = rng.randrange(8)
    wide = size != 8
    form = rng.random()
    if form < 0.35:
        # Ev, Gv (memory destination may be locked).
        rm = g.rm_operand(size, dst=k != 7)
        reg = g.pick_reg(size)
        lock = isinstance(rm, Mem) and k != 7 and rng.random() < 0.2
        r8 = [reg] + ([rm[1]] if not isinstance(rm, Mem) else []) if size == 8 else ()
        return Insn(g.encode(bytes([k * 8 + wide]), reg, rm, size, r8=r8, lock=lock), "alu")
    if form < 0.65:
        reg = g.pick_reg(size, dst=k != 7)
        rm = g.rm_operand(size, dst=False)
        r8 = [reg] + ([rm[1]] if not isinstance(rm, Mem) else []) if size == 8 else ()
        return Insn(g.encode(bytes([k * 8 + 2 + wide]), reg, rm, size, r8=r8), "alu")
    if form < 0.75:
        n = 1 if size == 8 else iz(size)
        return Insn(g.encode(bytes([k * 8 + 4 + wide]), size=size, imm=imm_bytes(rand_imm(rng, n), n)), "alu")
    rm = g.rm_operand(size, dst=k != 7)
    lock = isinstance(rm, Mem) and k != 7 and rng.random() < 0.2
    r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
    if size == 8:
        op, n = 0x80, 1
    elif rng.random() < 0.5:
        op, n = 0x83, 1
    else:
        op, n = 0x81, iz(size)
    return Insn(g.encode(bytes([op]), k, rm, size, imm=imm_bytes(rand_imm(rng, n), n), r8=r8, lock=lock), "alu")


def f_test(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    wide = size != 8
    c = rng.random()
    if c < 0.4:
        rm = g.rm_operand(size, dst=False)
        reg = g.pick_reg(size)
        r8 = [reg] + ([rm[1]] if not isinstance(rm, Mem) else []) if size == 8 else ()
        return Insn(g.encode(bytes([0x84 + wide]), reg, rm, size, r8=r8), "test")
    n = 1 if size == 8 else iz(size)
    if c < 0.6:
        return Insn(g.encode(bytes([0xA8 + wide]), size=size, imm=imm_bytes(rand_imm(rng, n), n)), "test")
    rm = g.rm_operand(size, dst=False)
    r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
    return Insn(g.encode(bytes([0xF6 + wide]), 0, rm, size, imm=imm_bytes(rand_imm(rng, n), n), r8=r8), "test")


def f_unary(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    wide = size != 8
    rm = g.rm_operand(size, dst=True)
    r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
    lock = isinstance(rm, Mem) and rng.random() < 0.2
    if rng.random() < 0.5:
        digit = rng.choice((2, 3))
        # Unicorn quirk: LOCK NEG computes SF/ZF/PF from the wrong value; the host CPU and the
        # interpreter agree with plain NEG.
        return Insn(g.encode(bytes([0xF6 + wide]), digit, rm, size, r8=r8, lock=lock and digit == 2), "notneg")
    return Insn(g.encode(bytes([0xFE + wide]), rng.choice((0, 1)), rm, size, r8=r8, lock=lock), "incdec")


def f_mul(g):
    rng = g.rng
    c = rng.random()
    if c < 0.4:
        size = size_pick(rng)
        byte_mode(g, size)
        rm = g.rm_operand(size, dst=False)
        r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
        return Insn(g.encode(bytes([0xF6 + (size != 8)]), rng.choice((4, 5)), rm, size, r8=r8), "mul")
    size = size_pick(rng, (16, 32, 64))
    g.rex_mode = False
    reg = g.pick_reg(size, dst=True)
    rm = g.rm_operand(size, dst=False)
    if c < 0.7:
        return Insn(g.encode(b"\x0f\xaf", reg, rm, size), "imul")
    if rng.random() < 0.5:
        return Insn(g.encode(b"\x6b", reg, rm, size, imm=imm_bytes(rand_imm(rng, 1), 1)), "imul")
    n = iz(size)
    return Insn(g.encode(b"\x69", reg, rm, size, imm=imm_bytes(rand_imm(rng, n), n)), "imul")


def f_div(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    signed = rng.random() < 0.5
    rm = g.rm_operand(size, dst=False)
    if isinstance(rm, Mem):
        b = g.emu.mem(rm.ea, size // 8)
        divisor = int.from_bytes(b, "little")
    else:
        divisor = g.val(rm[1], size)
    if size == 8:
        dividend = g.regs[RAX] & 0xFFFF
    else:
        dividend = (g.val(RDX, size) << size) | g.val(RAX, size)
    ok = divisor != 0
    if ok:
        if signed:
            q = abs(sx(dividend, 2 * size)) // abs(sx(divisor, size))
            if (sx(dividend, 2 * size) < 0) != (sx(divisor, size) < 0):
                q = -q
            ok = -(1 << (size - 1)) <= q < (1 << (size - 1))
        else:
            ok = dividend // divisor < (1 << size)
    if not ok:
        if g.pending_tries > 3:
            raise Retry()
        g.pending = f_div
        g.pending_tries += 1
        # Make the high half of the dividend harmless, or the divisor non-zero.
        if divisor == 0 or rng.random() < 0.3:
            r = rng.choice([r for r in range(16) if r not in (RSP, RAX, RDX)])
            return Insn(mov_r32_imm(r, rng.randrange(1, 1 << 16)), "prep")
        if size == 8:
            return Insn(b"\x66\x98" if signed else b"\x0f\xb6\xc0", "prep")      # cbw / movzx eax, al
        if signed:
            return Insn({16: b"\x66\x99", 32: b"\x99", 64: b"\x48\x99"}[size], "prep")   # cwd/cdq/cqo
        return Insn(b"\x31\xd2", "prep")                                         # xor edx, edx
    r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
    return Insn(g.encode(bytes([0xF6 + (size != 8)]), 7 if signed else 6, rm, size, r8=r8), "div")


SHIFT_COUNTS = [0, 1, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 127, 128, 255]


def shift_adjust(digit, size, count):
    cnt = count & (0x3F if size == 64 else 0x1F)

    def adj(modified, undef):
        if cnt == 0:
            return 0, 0
        if digit < 4:       # rotates: CF, and OF only for 1-bit rotates
            return CF | OF, (OF if cnt != 1 else 0)
        u = AF | (OF if cnt != 1 else 0)
        if digit in (4, 5, 6) and cnt >= size:
            u |= CF
        return ARITH, u
    return adj


def f_shift(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    digit = rng.randrange(8)
    wide = size != 8
    rm = g.rm_operand(size, dst=True)
    r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
    c = rng.random()
    if c < 0.4:
        count = rng.choice(SHIFT_COUNTS) if rng.random() < 0.7 else rng.randrange(256)
        code = g.encode(bytes([0xC0 + wide]), digit, rm, size, imm=bytes([count]), r8=r8)
    elif c < 0.6:
        count = 1
        code = g.encode(bytes([0xD0 + wide]), digit, rm, size, r8=r8)
    else:
        count = g.regs[RCX] & 0xFF
        if g.pending is None and rng.random() < 0.5 and g.pending_tries == 0:
            g.pending = f_shift
            g.pending_tries = 1
            return Insn(bytes([0xB1, rng.choice(SHIFT_COUNTS)]), "prep")      # mov cl, imm8
        code = g.encode(bytes([0xD2 + wide]), digit, rm, size, r8=r8)
    return Insn(code, "shift", adjust=shift_adjust(digit, size, count))


def f_shxd(g):
    rng = g.rng
    size = size_pick(rng, (16, 32, 64))
    g.rex_mode = False
    right = rng.random() < 0.5
    imm_form = rng.random() < 0.5
    # Unicorn quirk: SHLD/SHRD imm8 with a RIP-relative operand leave the immediate out of the
    # address (QEMU sets no rip_offset there); the host CPU and the interpreter include it.
    rm = g.rm_operand(size, dst=True, no_riprel=imm_form)
    reg = g.pick_reg(size)
    if imm_form:
        count = rng.choice(SHIFT_COUNTS) if rng.random() < 0.7 else rng.randrange(256)
        op = b"\x0f\xac" if right else b"\x0f\xa4"
        imm = bytes([count])
    else:
        count = g.regs[RCX] & 0xFF
        op = b"\x0f\xad" if right else b"\x0f\xa5"
        imm = b""
    cnt = count & (0x3F if size == 64 else 0x1F)
    if size == 16 and cnt > 16:
        raise Retry()       # result undefined
    code = g.encode(op, reg, rm, size, imm=imm)

    def adj(modified, undef):
        if cnt == 0:
            return 0, 0
        return ARITH, AF | (OF if cnt != 1 else 0)
    return Insn(code, "shxd", adjust=adj)


def f_bt(g):
    rng = g.rng
    size = size_pick(rng, (16, 32, 64))
    g.rex_mode = False
    digit = rng.randrange(4)     # BT BTS BTR BTC
    lock = False
    if rng.random() < 0.5:
        rm = g.rm_operand(size, dst=digit != 0)
        lock = isinstance(rm, Mem) and digit != 0 and rng.random() < 0.2
        return Insn(g.encode(b"\x0f\xba", 4 + digit, rm, size, imm=bytes([rng.randrange(256)]), lock=lock), "bt")
    op = (b"\x0f\xa3", b"\x0f\xab", b"\x0f\xb3", b"\x0f\xbb")[digit]
    if rng.random() < 0.5:
        dst = g.pick_reg(size, dst=digit != 0)
        src = g.pick_reg(size)
        return Insn(g.encode(op, src, ("r", dst), size), "bt")
    # Memory with a register bit offset: the access lands at ea + (offset >> log2(size)) * size/8.
    src = g.pick_reg(size)
    off = sx(g.val(src, size), size)
    delta = (off >> {16: 4, 32: 5, 64: 6}[size]) * (size // 8)
    if abs(delta) > 0x10000:
        raise Retry()
    t = g.pick_target(size // 8)
    ea = t - delta
    m = g.gen_mem(size // 8, target=ea, a32=False)
    lock = digit != 0 and rng.random() < 0.2
    return Insn(g.encode(op, src, m, size, lock=lock), "bt")


def f_bsf(g):
    rng = g.rng
    size = size_pick(rng, (16, 32, 64))
    g.rex_mode = False
    reg = g.pick_reg(size, dst=True)
    rm = g.rm_operand(size, dst=False)
    return Insn(g.encode(rng.choice((b"\x0f\xbc", b"\x0f\xbd")), reg, rm, size), "bsf")


def f_setcc(g):
    rng = g.rng
    g.rex_mode = rng.random() < 0.5
    rm = g.rm_operand(8, dst=True)
    r8 = [rm[1]] if not isinstance(rm, Mem) else ()
    # ModRM.reg is ignored by SETcc.
    return Insn(g.encode(bytes([0x0F, 0x90 + rng.randrange(16)]), rng.randrange(8), rm, None, r8=r8), "setcc")


def f_cmov(g):
    rng = g.rng
    size = size_pick(rng, (16, 32, 64))
    g.rex_mode = False
    reg = g.pick_reg(size, dst=True)
    rm = g.rm_operand(size, dst=False)
    return Insn(g.encode(bytes([0x0F, 0x40 + rng.randrange(16)]), reg, rm, size), "cmov")


def f_movx(g):
    rng = g.rng
    c = rng.random()
    if c < 0.8:
        src8 = rng.random() < 0.5
        size = size_pick(rng, (16, 32, 64))
        g.rex_mode = src8 and rng.random() < 0.5
        reg = g.pick_reg(size, dst=True)
        if g.rex_mode is False and src8 and reg >= 8:
            raise Retry()
        rm = g.rm_operand(8 if src8 else 16, dst=False)
        op = bytes([0x0F, (0xB6 if src8 else 0xB7) + (8 if rng.random() < 0.5 else 0)])
        r8 = ([rm[1]] if not isinstance(rm, Mem) else []) if src8 else ()
        return Insn(g.encode(op, reg, rm, size, r8=r8), "movx")
    size = size_pick(rng, (16, 32, 64, 64))
    g.rex_mode = False
    reg = g.pick_reg(size, dst=True)
    rm = g.rm_operand(32 if size != 16 else 16, dst=False)
    return Insn(g.encode(b"\x63", reg, rm, size), "movsxd")


def f_mov(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    wide = size != 8
    c = rng.random()
    if c < 0.5:
        store = rng.random() < 0.5
        rm = g.rm_operand(size, dst=store, mem_p=0.6)
        reg = g.pick_reg(size, dst=not store)
        r8 = [reg] + ([rm[1]] if not isinstance(rm, Mem) else []) if size == 8 else ()
        return Insn(g.encode(bytes([0x88 + wide + (0 if store else 2)]), reg, rm, size, r8=r8), "mov")
    if c < 0.7:
        rm = g.rm_operand(size, dst=True)
        n = 1 if size == 8 else iz(size)
        r8 = [rm[1]] if size == 8 and not isinstance(rm, Mem) else ()
        return Insn(g.encode(bytes([0xC6 + wide]), 0, rm, size, imm=imm_bytes(rand_imm(rng, n), n), r8=r8), "mov")
    if c < 0.9:
        r = g.pick_reg(size, dst=True)
        r8 = [r] if size == 8 else ()
        n = 1 if size == 8 else (8 if size == 64 and rng.random() < 0.7 else iz(size))
        if size == 64 and n == 4:
            # C7 /0 with REX.W: imm32 sign-extended.
            return Insn(g.encode(b"\xc7", 0, ("r", r), 64, imm=imm_bytes(rand_imm(rng, 4), 4)), "mov")
        rf = r - 12 if r >= 16 else r
        op = bytes([(0xB0 if size == 8 else 0xB8) + (rf & 7)])
        # B0+r / B8+r: the register is in the opcode, extended by REX.B.
        code = g.encode(op, size=size, imm=imm_bytes(rand_value(rng) if n == 8 else rand_imm(rng, n), n),
                        r8=r8 if size == 8 else (), noise=False, rexw=size == 64)
        if 8 <= r < 16:
            code = fix_rex_b(code, op)
        return Insn(code, "mov")
    # MOV AL/AX/EAX/RAX <-> moffs (64-bit absolute offset, FS/GS base added with an override).
    seg, off = g.pick_seg(g.pick_target(size // 8))
    op = bytes([0xA0 + wide + (2 if rng.random() < 0.5 else 0)])
    return Insn(g.encode(op, size=size, imm=imm_bytes(off, 8), noise=False, pfx=(seg,) if seg else ()), "moffs")


def mov_r32_imm(r, v):
    """MOV r32, imm32 (zero-extends into the 64-bit register)."""
    return (b"\x41" if r >= 8 else b"") + bytes([0xB8 + (r & 7)]) + imm_bytes(v, 4)


def fix_rex_b(code, op):
    """Sets REX.B for an opcode-embedded register (adding a REX if there is none)."""
    # The opcode follows the legacy prefixes and the REX.
    p = 0
    while code[p] in (0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65):
        p += 1
    if 0x40 <= code[p] <= 0x4F:
        return code[:p] + bytes([code[p] | 1]) + code[p + 1:]
    return code[:p] + b"\x41" + code[p:]


def f_lea(g):
    rng = g.rng
    size = size_pick(rng, (16, 32, 64, 64))
    g.rex_mode = False
    reg = g.pick_reg(size, dst=True)
    m = g.gen_mem(free=rng.random() < 0.5, span=1)
    return Insn(g.encode(b"\x8d", reg, m, size), "lea")


def f_xchg(g):
    rng = g.rng
    size = size_pick(rng)
    byte_mode(g, size)
    wide = size != 8
    c = rng.random()
    if c < 0.25 and size != 8:
        r = g.pick_reg(size, dst=True)
        if r == 0:
            raise Retry()
        op = bytes([0x90 + (r & 7)])
        code = g.encode(op, size=size, noise=False, rexw=size == 64)
        if r >= 8:
            code = fix_rex_b(code, op)
        return Insn(code, "xchg")
    rm = g.rm_operand(size, dst=True)
    reg = g.pick_reg(size, dst=True)
    r8 = [reg] + ([rm[1]] if not isinstance(rm, Mem) else []) if size == 8 else ()
    kind = rng.random()
    lock = isinstance(rm, Mem) and rng.random() < 0.3
    if kind < 0.4:
        return Insn(g.encode(bytes([0x86 + wide]), reg, rm, size, r8=r8, lock=lock), "xchg")
    if kind < 0.7:
        return Insn(g.encode(bytes([0x0F, 0xC0 + wide]), reg, rm, size, r8=r8, lock=lock), "xadd")
    if isinstance(rm, Mem) or rng.random() < 0.5:
        pass
    return Insn(g.encode(bytes([0x0F, 0xB0 + wide]), reg, rm, size, r8=r8, lock=lock), "cmpxchg")


def f_cmpxchg8b(g):
    rng = g.rng
    g.rex_mode = False
    m = g.gen_mem(8, align=8)
    cur = g.emu.mem(m.ea, 8)
    if cur is not None and rng.random() < 0.5 and g.pending_tries == 0:
        # Make EDX:EAX match memory so the exchange happens: mov eax, imm32 then mov edx, imm32.
        lo, hi = int.from_bytes(cur[:4], "little"), int.from_bytes(cur[4:], "little")
        g.pending = f_cmpxchg8b_go
        g.pending_tries = 1
        g.saved_mem = m
        return Insn(b"\xb8" + imm_bytes(lo, 4), "prep"), Insn(b"\xba" + imm_bytes(hi, 4), "prep")
    return Insn(g.encode(b"\x0f\xc7", 1, m, None, lock=rng.random() < 0.3), "cmpxchg8b")


def f_cmpxchg8b_go(g):
    # EAX/EDX changed since the operand was chosen: address the same bytes afresh.
    m = g.gen_mem(8, target=g.saved_mem.ea)
    return Insn(g.encode(b"\x0f\xc7", 1, m, None, lock=g.rng.random() < 0.3), "cmpxchg8b")


def f_bswap(g):
    rng = g.rng
    size = rng.choice((32, 64))
    r = g.pick_reg(size, dst=True)
    g.rex_mode = False
    op = bytes([0x0F, 0xC8 + (r & 7)])
    code = g.encode(op, size=size, noise=False, rexw=size == 64)
    if r >= 8:
        code = fix_rex_b(code, op)
    return Insn(code, "bswap")


def stack_room(g, push_bytes=0, pop_bytes=0):
    rsp = g.regs[RSP]
    return STACK_LO + 0x200 <= rsp - push_bytes and rsp + pop_bytes <= STACK_TOP


def f_push(g):
    rng = g.rng
    if not stack_room(g, 16):
        raise Retry()
    size = 16 if rng.random() < 0.15 else 64
    c = rng.random()
    if c < 0.4:
        r = rng.randrange(16)
        op = bytes([0x50 + (r & 7)])
        code = g.encode(op, size=16 if size == 16 else None, noise=False)
        if r >= 8:
            code = fix_rex_b(code, op)
        return Insn(code, "push")
    if c < 0.7:
        if rng.random() < 0.5:
            return Insn(g.encode(b"\x6a", size=16 if size == 16 else None, imm=imm_bytes(rand_imm(rng, 1), 1)), "push")
        n = 2 if size == 16 else 4
        return Insn(g.encode(b"\x68", size=16 if size == 16 else None, imm=imm_bytes(rand_imm(rng, n), n)), "push")
    g.rex_mode = False
    rm = g.rm_operand(size, dst=False, mem_p=0.7)
    return Insn(g.encode(b"\xff", 6, rm, 16 if size == 16 else None), "push")


def f_pop(g):
    rng = g.rng
    size = 16 if rng.random() < 0.15 else 64
    if not stack_room(g, 0, size // 8) or g.regs[RSP] + 0x100 > STACK_TOP:
        raise Retry()
    if rng.random() < 0.6:
        r = g.pick_reg(64, dst=True)
        op = bytes([0x58 + (r & 7)])
        code = g.encode(op, size=16 if size == 16 else None, noise=False)
        if r >= 8:
            code = fix_rex_b(code, op)
        return Insn(code, "pop")
    g.rex_mode = False
    # POP r/m computes an RSP-based address with RSP already incremented.
    if rng.random() < 0.5:
        rm = ("r", g.pick_reg(64, dst=True))
    else:
        rm = g.gen_mem(size // 8, rsp_bias=size // 8)
    return Insn(g.encode(b"\x8f", 0, rm, 16 if size == 16 else None), "pop")


SAFE_FLAGS = CF | PF | AF | ZF | SF | OF | DF


def f_popf(g):
    rng = g.rng
    if g.pending_tries == 0:
        if not stack_room(g, 16):
            raise Retry()
        g.pending = f_popf
        g.pending_tries = 1
        v = (rng.getrandbits(16) & SAFE_FLAGS) | 2
        if rng.random() < 0.2:
            g.popf16 = True
            return Insn(b"\x66\x68" + imm_bytes(v, 2), "prep")
        g.popf16 = False
        return Insn(b"\x68" + imm_bytes(v, 4), "prep")
    return Insn(b"\x66\x9d" if g.popf16 else (b"\x9d" if rng.random() < 0.8 else b"\x48\x9d"), "popf")


def f_pushf(g):
    if not stack_room(g, 16):
        raise Retry()
    return Insn(b"\x66\x9c" if g.rng.random() < 0.2 else b"\x9c", "pushf")


def f_flagops(g):
    return Insn(bytes([g.rng.choice((0x9E, 0x9F, 0xF8, 0xF9, 0xF5, 0xFC, 0xFD, 0xFC))]), "flagop")


def f_convert(g):
    rng = g.rng
    op = rng.choice((0x98, 0x99))
    size = size_pick(rng, (16, 32, 64))
    return Insn(g.encode(bytes([op]), size=size, noise=False), "cbw")


STRING_OPS = {"movs": 0xA4, "cmps": 0xA6, "stos": 0xAA, "lods": 0xAC, "scas": 0xAE}


def mov_r64_imm(r, v):
    return bytes([0x48 | (r >> 3), 0xB8 + (r & 7)]) + imm_bytes(v, 8)


def f_string(g):
    rng = g.rng
    if g.pending_tries == 0:
        # Chosen once; preparatory loads (count, pointers) keep the same choice.
        src_seg = rng.choice((None, None, None, None, None, 0x64, 0x65, 0x3E, 0x2E))
        g.str_choice = (rng.choice(list(STRING_OPS)), size_pick(rng), rng.random() < 0.6, rng.random() < 0.2, src_seg)
    name, size, rep, a32, src_seg = g.str_choice
    n = size // 8
    amask = 0xFFFFFFFF if a32 else M64
    count = (g.regs[RCX] & amask) if rep else 1
    down = bool(g.flags & DF)
    uses_si = name in ("movs", "cmps", "lods")
    uses_di = name in ("movs", "cmps", "stos", "scas")

    if not uses_si:
        src_seg = None
    si_base = g.seg_base.get(src_seg, 0)

    def fits(reg):
        p = ((si_base if reg == RSI else 0) + (g.regs[reg] & amask)) & M64
        span = count * n
        lo = p - span + n if down else p
        return count == 0 or in_mapped(lo, span)

    bad = []
    if rep and count > 96:
        bad.append(RCX)
    if uses_si and not fits(RSI):
        bad.append(RSI)
    if uses_di and not fits(RDI):
        bad.append(RDI)
    if bad:
        if g.pending_tries > 4:
            raise Retry()
        g.pending = f_string
        g.pending_tries += 1
        r = bad[0]
        # With a 32-bit address size only the low halves count: give the upper ones garbage.
        upper = rng.getrandbits(32) << 32 if a32 and rng.random() < 0.7 else 0
        if r == RCX:
            v = rng.choice((0, 1, 2, 3, 5, 8, 13, 17, 31, 64))
            return Insn(b"\x48\xb9" + imm_bytes(upper | v, 8) if upper else b"\xb9" + imm_bytes(v, 4), "prep")
        # Point RSI/RDI into data or stack with room for 96 elements of 8 bytes either way.
        lo = rng.choice((DATA, STACK_LO))
        t = lo + 0x300 + rng.randrange(0x2000 - 0x600)
        if r == RSI:
            t = (t - si_base) & M64
            if a32 and t >= 1 << 32:
                raise Retry()
        if upper or t >= 1 << 32:
            return Insn(mov_r64_imm(r, (upper | t) if a32 else t), "prep")
        return Insn(bytes([0xBE if r == RSI else 0xBF]) + imm_bytes(t, 4), "prep")
    op = STRING_OPS[name] + (n != 1)
    pfx = []
    if rep:
        pfx.append(0xF3 if name not in ("cmps", "scas") or rng.random() < 0.5 else 0xF2)
    if a32:
        pfx.append(0x67)
    if size == 16:
        pfx.append(0x66)
    if src_seg is not None:
        pfx.append(src_seg)
        g.used_fsgs = True
    rng.shuffle(pfx)
    code = bytes(pfx) + (b"\x48" if size == 64 else b"") + bytes([op])
    adj = None
    if rep and count == 0:
        adj = lambda m, u: (0, 0)
    return Insn(code, "string", adjust=adj)


def f_xlat(g):
    rng = g.rng
    if g.pending_tries == 0:
        g.xlat_seg = rng.choice((None, None, None, 0x64, 0x65))
    base = g.seg_base.get(g.xlat_seg, 0)
    p = (base + g.regs[RBX] + (g.regs[RAX] & 0xFF)) & M64
    if not in_mapped(p, 1):
        if g.pending_tries > 0:
            raise Retry()
        g.pending = f_xlat
        g.pending_tries = 1
        return Insn(mov_r64_imm(RBX, (rng.choice((DATA, STACK_LO)) + rng.randrange(0x1F00) - base) & M64), "prep")
    pfx = bytes([g.xlat_seg]) if g.xlat_seg else b""
    g.used_fsgs = g.used_fsgs or g.xlat_seg is not None
    return Insn(pfx + (b"\x48\xd7" if rng.random() < 0.3 else b"\xd7"), "xlat")


def f_enter_leave(g):
    rng = g.rng
    rbp, rsp = g.regs[RBP], g.regs[RSP]
    if rng.random() < 0.5:
        if not (STACK_LO + 0x200 <= rbp <= STACK_TOP - 0x100):
            if g.pending_tries > 0:
                raise Retry()
            g.pending = f_enter_leave
            g.pending_tries = 1
            return Insn(b"\x48\x89\xe5", "prep")         # mov rbp, rsp
        return Insn(b"\xc9", "leave")
    level = rng.choice((0, 0, 1, 2, 3))
    alloc = rng.choice((0, 8, 16, 0x28, rng.randrange(0x100)))
    if rsp - 8 * (level + 1) - alloc < STACK_LO + 0x200:
        raise Retry()
    if level > 1 and not in_mapped(rbp - 8 * (level - 1), 8 * (level - 1)):
        raise Retry()
    return Insn(b"\xc8" + imm_bytes(alloc, 2) + bytes([level]), "enter")


def f_nop(g):
    rng = g.rng
    c = rng.random()
    if c < 0.3:
        return Insn(rng.choice((b"\x90", b"\x66\x90", b"\xf3\x90")), "nop")
    g.rex_mode = False
    m = g.gen_mem(free=True)
    return Insn(g.encode(b"\x0f\x1f", 0, m, rng.choice((None, 16))), "nop")


def branch_target(g, length, skip_max=40):
    return g.rip + length + g.rng.randrange(skip_max)


def f_jcc(g):
    rng = g.rng
    cc = rng.randrange(16)
    skip = rng.choice((0, 1, 2, rng.randrange(40)))
    if rng.random() < 0.6:
        code = bytes([0x70 + cc, skip])
    else:
        code = bytes([0x0F, 0x80 + cc]) + imm_bytes(skip, 4)
    if rng.random() < 0.05:
        code = bytes([rng.choice((0x2E, 0x3E))]) + code    # branch hints
    return Insn(code, "jcc", until=("cc", cc, skip))


def f_jmp(g):
    rng = g.rng
    skip = rng.randrange(40)
    c = rng.random()
    if c < 0.35:
        return Insn(bytes([0xEB, skip]), "jmp", until=("always", skip))
    if c < 0.55:
        return Insn(b"\xe9" + imm_bytes(skip, 4), "jmp", until=("always", skip))
    if c < 0.75:
        if not stack_room(g, 16):
            raise Retry()
        return Insn(b"\xe8" + imm_bytes(skip, 4), "call", until=("always", skip))
    if c < 0.85:
        a32 = rng.random() < 0.3
        return Insn((b"\x67" if a32 else b"") + bytes([0xE3, skip]), "jrcxz",
                    until=("rcxz", a32, skip))
    a32 = rng.random() < 0.2
    kind = rng.randrange(3)     # LOOPNE LOOPE LOOP
    return Insn((b"\x67" if a32 else b"") + bytes([0xE0 + kind, skip]), "loop", until=("loop", a32, kind, skip))


def f_indirect(g):
    """JMP/CALL through a register holding a forward code address (loaded by a LEA first)."""
    rng = g.rng
    for r in range(16):
        v = g.regs[r]
        if r != RSP and g.rip + 3 <= v < g.rip + 48:
            call = rng.random() < 0.4
            if call and not stack_room(g, 16):
                raise Retry()
            code = bytes([0xFF, 0xC0 | ((2 if call else 4) << 3) | (r & 7)])
            if r >= 8:
                code = b"\x41" + code
            if v < g.rip + len(code):
                continue
            return Insn(code, "callr" if call else "jmpr", until=("abs", v))
    if g.pending_tries > 0:
        raise Retry()
    g.pending = f_indirect
    g.pending_tries = 1
    r = rng.choice([x for x in range(16) if x != RSP])
    target = g.rip + 7 + 3 + rng.randrange(32)
    d = target - (g.rip + 7)
    return Insn(bytes([0x48 | (r >> 3 << 2), 0x8D, 0x05 | ((r & 7) << 3)]) + imm_bytes(d, 4), "prep")


def f_ret(g):
    rng = g.rng
    top = g.emu.read64(g.regs[RSP])
    if top is not None and g.rip + 3 <= top < g.rip + 48:
        imm = rng.choice((0, 0, 8, 16))
        if g.regs[RSP] + 8 + imm > STACK_TOP - 0x40:
            imm = 0
        if imm == 0 and rng.random() < 0.7:
            return Insn(b"\xc3", "ret", until=("abs", top))
        return Insn(b"\xc2" + imm_bytes(imm, 2), "ret", until=("abs", top))
    if g.pending_tries > 0 or not stack_room(g, 16):
        raise Retry()
    g.pending = f_ret
    g.pending_tries = 1
    target = g.rip + 5 + 3 + rng.randrange(32)
    return Insn(b"\x68" + imm_bytes(target, 4), "prep")


def f_pointer(g):
    """Reloads a register with a data/stack address: keeps base registers useful for addressing."""
    rng = g.rng
    r = g.pick_reg(64, dst=True)
    t = g.pick_target(8)
    if rng.random() < 0.5:
        d = t - (g.rip + 7)
        return Insn(bytes([0x48 | (r >> 3 << 2), 0x8D, 0x05 | ((r & 7) << 3)]) + imm_bytes(d, 4), "ptr")
    code = bytes([0xB8 + (r & 7)]) + imm_bytes(t, 4)
    if r >= 8:
        code = b"\x41" + code
    return Insn(code, "ptr")


def definer(g):
    """An instruction that defines all six arithmetic flags (CMP/ADD/SUB)."""
    rng = g.rng
    size = rng.choice((32, 64))
    g.rex_mode = False
    k = rng.choice((0, 5, 7))
    a = g.pick_reg(size, dst=k != 7)
    b = g.pick_reg(size)
    return Insn(g.encode(bytes([k * 8 + 1]), b, ("r", a), size), "definer")


# ---------------------------------------------------------------------------------------------
# SSE/SSE2. Operand kinds: "x" XMM register, "xm" XMM or memory, "m" memory only, "g" general
# register (32 or 64 bits by REX.W), "gm" general register or memory, "g32" 32-bit register.
# Legacy-encoded m128 operands must be 16-byte aligned unless the instruction says otherwise.

SSE_INT_OPS = [0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D,
               0x74, 0x75, 0x76, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD,
               0xDE, 0xDF, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE8, 0xE9, 0xEA, 0xEB, 0xEC, 0xED,
               0xEE, 0xEF, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE]

# (prefix, opcode, destination kind, source kind, memory bytes, aligned, immediate)
SSE_MOVES = [
    (0x66, 0x6F, "x", "xm", 16, True, False), (0x66, 0x7F, "xm", "x", 16, True, False),       # movdqa
    (0xF3, 0x6F, "x", "xm", 16, False, False), (0xF3, 0x7F, "xm", "x", 16, False, False),    # movdqu
    (None, 0x10, "x", "xm", 16, False, False), (None, 0x11, "xm", "x", 16, False, False),    # movups
    (0x66, 0x10, "x", "xm", 16, False, False), (0x66, 0x11, "xm", "x", 16, False, False),    # movupd
    (0xF3, 0x10, "x", "xm", 4, False, False), (0xF3, 0x11, "xm", "x", 4, False, False),      # movss
    (0xF2, 0x10, "x", "xm", 8, False, False), (0xF2, 0x11, "xm", "x", 8, False, False),      # movsd
    (None, 0x28, "x", "xm", 16, True, False), (None, 0x29, "xm", "x", 16, True, False),      # movaps
    (0x66, 0x28, "x", "xm", 16, True, False), (0x66, 0x29, "xm", "x", 16, True, False),      # movapd
    (None, 0x2B, "m", "x", 16, True, False), (0x66, 0x2B, "m", "x", 16, True, False),        # movntps/pd
    (0x66, 0xE7, "m", "x", 16, True, False),                                                 # movntdq
    (0x66, 0x6E, "x", "gm", None, False, False), (0x66, 0x7E, "gm", "x", None, False, False),  # movd/movq
    (0xF3, 0x7E, "x", "xm", 8, False, False), (0x66, 0xD6, "xm", "x", 8, False, False),      # movq
    (None, 0x12, "x", "xm", 8, False, False), (None, 0x13, "m", "x", 8, False, False),       # movlps/movhlps
    (0x66, 0x12, "x", "m", 8, False, False), (0x66, 0x13, "m", "x", 8, False, False),        # movlpd
    (None, 0x16, "x", "xm", 8, False, False), (None, 0x17, "m", "x", 8, False, False),       # movhps/movlhps
    (0x66, 0x16, "x", "m", 8, False, False), (0x66, 0x17, "m", "x", 8, False, False),        # movhpd
    (None, 0x14, "x", "xm", 16, True, False), (None, 0x15, "x", "xm", 16, True, False),      # unpcklps/hps
    (0x66, 0x14, "x", "xm", 16, True, False), (0x66, 0x15, "x", "xm", 16, True, False),      # unpcklpd/hpd
    (None, 0x54, "x", "xm", 16, True, False), (None, 0x55, "x", "xm", 16, True, False),      # andps andnps
    (None, 0x56, "x", "xm", 16, True, False), (None, 0x57, "x", "xm", 16, True, False),      # orps xorps
    (0x66, 0x54, "x", "xm", 16, True, False), (0x66, 0x57, "x", "xm", 16, True, False),      # andpd xorpd
    (None, 0x50, "g32", "x", None, False, False), (0x66, 0x50, "g32", "x", None, False, False),  # movmskps/pd
    (0x66, 0xD7, "g32", "x", None, False, False),                                            # pmovmskb
    (0x66, 0xC5, "g32", "x", None, False, True),                                             # pextrw
    (0x66, 0xC4, "x", "gm16", 2, False, True),                                               # pinsrw
    (0x66, 0x70, "x", "xm", 16, True, True), (0xF3, 0x70, "x", "xm", 16, True, True),        # pshufd/hw
    (0xF2, 0x70, "x", "xm", 16, True, True),                                                 # pshuflw
    (None, 0xC6, "x", "xm", 16, True, True), (0x66, 0xC6, "x", "xm", 16, True, True),        # shufps/pd
    (None, 0xC3, "m", "g", None, False, False),                                              # movnti
]

SSE_FP_ARITH = [0x51, 0x58, 0x59, 0x5C, 0x5D, 0x5E, 0x5F]
SSE_CONVERTS = [
    (0xF3, 0x2A, "x", "gm", None, False), (0xF2, 0x2A, "x", "gm", None, False),              # cvtsi2ss/sd
    (0xF3, 0x2C, "g", "xm", 4, False), (0xF2, 0x2C, "g", "xm", 8, False),                    # cvttss2si/sd
    (0xF3, 0x2D, "g", "xm", 4, False), (0xF2, 0x2D, "g", "xm", 8, False),                    # cvtss2si/sd
    (None, 0x2E, "x", "xm", 4, False), (0x66, 0x2E, "x", "xm", 8, False),                    # ucomiss/sd
    (None, 0x2F, "x", "xm", 4, False), (0x66, 0x2F, "x", "xm", 8, False),                    # comiss/sd
    (None, 0x5A, "x", "xm", 8, False), (0x66, 0x5A, "x", "xm", 16, True),                    # cvtps2pd/pd2ps
    (0xF3, 0x5A, "x", "xm", 4, False), (0xF2, 0x5A, "x", "xm", 8, False),                    # cvtss2sd/sd2ss
    (None, 0x5B, "x", "xm", 16, True), (0x66, 0x5B, "x", "xm", 16, True),                    # cvtdq2ps/ps2dq
    (0xF3, 0x5B, "x", "xm", 16, True),                                                       # cvttps2dq
    (0x66, 0xE6, "x", "xm", 16, True), (0xF3, 0xE6, "x", "xm", 8, False),                    # cvttpd2dq/dq2pd
    (0xF2, 0xE6, "x", "xm", 16, True),                                                       # cvtpd2dq
]

F32_SPECIAL = [0, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
               0x7F800001, 0x7FA00000, 0x00000001, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0x4B000000,
               0x4F000000, 0xCF000000, 0x5F000000, 0xDF000000, 0x3F000000, 0x40490FDB]
F64_SPECIAL = [0, 0x8000000000000000, 0x3FF0000000000000, 0xBFF0000000000000, 0x7FF0000000000000,
               0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001,
               0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF,
               0x41E0000000000000, 0xC1E0000000000000, 0x43E0000000000000, 0xC3E0000000000000,
               0x3FE0000000000000, 0x400921FB54442D18, 0x41DFFFFFFFC00000]


def rand_vector(rng):
    """128 bits: random, float-like lanes (with special values), doubles, or small integers."""
    c = rng.random()
    if c < 0.3:
        return rng.getrandbits(128)
    if c < 0.6:
        lanes = [rng.choice(F32_SPECIAL) if rng.random() < 0.5 else
                 (rng.getrandbits(1) << 31) | (rng.randrange(100, 156) << 23) | rng.getrandbits(23) for _ in range(4)]
        return sum(v << (32 * i) for i, v in enumerate(lanes))
    if c < 0.85:
        lanes = [rng.choice(F64_SPECIAL) if rng.random() < 0.5 else
                 (rng.getrandbits(1) << 63) | (rng.randrange(990, 1060) << 52) | rng.getrandbits(52) for _ in range(2)]
        return lanes[0] | lanes[1] << 64
    return sum((rng.randrange(-300, 300) & 0xFFFF) << (16 * i) for i in range(8))


# Non-default MXCSR modes (rounding other than to nearest, FTZ, DAZ) are generated only when asked
# for (fuzz.py --fp-modes): the interpreter computes with the host's FPU under fesetround, which
# the compiler does not order its float operations against, and models neither FTZ nor DAZ.
# FP_MODES: "" (nearest, no FTZ/DAZ), "rc" (rounding modes), "ftz-daz", or "all".
FP_MODES = ""


def rand_mxcsr(rng):
    """All exceptions masked (no #XM), random sticky flags; with FP_MODES other rounding modes
    and/or FTZ and DAZ."""
    v = 0x1F80
    if FP_MODES in ("rc", "all"):
        v |= rng.randrange(4) << 13
    if FP_MODES in ("ftz-daz", "all"):
        if rng.random() < 0.4:
            v |= 0x8000
        if rng.random() < 0.4:
            v |= 0x40
    if rng.random() < 0.3:
        v |= rng.getrandbits(6)
    return v


def sse_operand(g, kind, msize, aligned, wide, is_dst=False):
    """ModRM operand of an SSE instruction: ("r", n) for XMM/general registers, or a Mem."""
    rng = g.rng
    if kind == "x":
        return ("r", rng.randrange(16))
    if kind in ("g", "g32"):
        return ("r", g.pick_reg(64, dst=True))
    if kind == "m" or (kind in ("xm", "gm", "gm16") and rng.random() < 0.4):
        size = msize or (8 if wide else 4)
        return g.gen_mem(size, align=16 if aligned else 1, aligned=aligned)
    if kind == "xm":
        return ("r", rng.randrange(16))
    return ("r", g.pick_reg(64, dst=is_dst))


def sse_insn(g, prefix, opcode, dst, src, msize, aligned, imm=False, wide=None, digit=None, kind="sse"):
    rng = g.rng
    g.rex_mode = False
    if wide is None:
        wide = rng.random() < 0.5
    reg_kind, rm_kind = (dst, src) if dst in ("x", "g", "g32") else (src, dst)
    if digit is not None:
        reg = digit
    elif reg_kind == "x":
        reg = rng.randrange(16)
    else:
        reg = g.pick_reg(64, dst=reg_kind in ("g", "g32") and reg_kind == dst)
    rm = sse_operand(g, rm_kind, msize, aligned, wide, is_dst=rm_kind == dst)
    uses_w = "g" in (dst + src) and "g32" not in (dst, src)
    code = g.encode(bytes([0x0F, opcode]), reg, rm, None, imm=bytes([rng.getrandbits(8)]) if imm else b"",
                    pfx=(prefix,) if prefix else (), rexw=wide and uses_w, sse=True)
    return Insn(code, kind, sse=True)


def f_sse_int(g):
    return sse_insn(g, 0x66, g.rng.choice(SSE_INT_OPS), "x", "xm", 16, True, kind="sse-int")


def f_sse_move(g):
    rng = g.rng
    if rng.random() < 0.15:
        # Shifts by immediate: 66 0F 71/72/73 with an XMM register operand.
        op, digit = rng.choice([(0x71, 2), (0x71, 4), (0x71, 6), (0x72, 2), (0x72, 4), (0x72, 6),
                                (0x73, 2), (0x73, 3), (0x73, 6), (0x73, 7)])
        count = rng.choice((0, 1, 3, 7, 8, 15, 16, 31, 32, 63, 64, 200))
        code = g.encode(bytes([0x0F, op]), digit, ("r", rng.randrange(16)), None, imm=bytes([count]),
                        pfx=(0x66,), sse=True)
        return Insn(code, "sse-shift", sse=True)
    prefix, op, dst, src, msize, aligned, imm = rng.choice(SSE_MOVES)
    # MOVHLPS/MOVLHPS are the register forms of 0F 12/16; movlps/movhps stores need memory.
    return sse_insn(g, prefix, op, dst, src, msize, aligned, imm, kind="sse-move")


def f_sse_fp(g):
    rng = g.rng
    c = rng.random()
    if c < 0.55:
        prefix = rng.choice((None, 0x66, 0xF3, 0xF2))
        msize, aligned = {None: (16, True), 0x66: (16, True), 0xF3: (4, False), 0xF2: (8, False)}[prefix]
        return sse_insn(g, prefix, rng.choice(SSE_FP_ARITH), "x", "xm", msize, aligned, kind="sse-fp")
    if c < 0.7:
        prefix = rng.choice((None, 0x66, 0xF3, 0xF2))
        msize, aligned = {None: (16, True), 0x66: (16, True), 0xF3: (4, False), 0xF2: (8, False)}[prefix]
        ins = sse_insn(g, prefix, 0xC2, "x", "xm", msize, aligned, imm=True, kind="sse-cmp")
        ins.code = ins.code[:-1] + bytes([rng.randrange(8)])
        return ins
    prefix, op, dst, src, msize, aligned = rng.choice(SSE_CONVERTS)
    return sse_insn(g, prefix, op, dst, src, msize, aligned, kind="sse-cvt")


def f_mxcsr(g):
    """LDMXCSR of a value stored just before (masks set: no #XM). STMXCSR only when MXCSR flags
    are compared (unicorn keeps none, so the stored image differs by design)."""
    rng = g.rng
    g.rex_mode = False
    if MXCSR_COMPARED & 0x3F and g.pending_tries == 0 and rng.random() < 0.4:
        return Insn(g.encode(b"\x0f\xae", 3, g.gen_mem(4), None, sse=True), "stmxcsr", sse=True)
    if g.pending_tries > 0:
        m = g.gen_mem(4, target=g.saved_target)
        return Insn(g.encode(b"\x0f\xae", 2, m, None, sse=True), "ldmxcsr", sse=True)
    g.pending = f_mxcsr
    g.pending_tries = 1
    t = g.pick_target(4)
    g.saved_target = t
    m = g.gen_mem(4, target=t)
    return Insn(g.encode(b"\xc7", 0, m, None, imm=imm_bytes(rand_mxcsr(rng), 4)), "prep")


# ---------------------------------------------------------------------------------------------
# MMX (0F map without a prefix) and the SSE/SSE2 instructions with MMX operands. ModRM register
# numbers go up to 15: REX.R/REX.B must be ignored for MMX registers. Lanes are loaded from the
# saturation and sign edges now and then (MOV r64, imm64; MOVQ mm, r64).

MMX_INT_OPS = [0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x74, 0x75, 0x76,
               0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xE1,
               0xE2, 0xE3, 0xE4, 0xE5, 0xE8, 0xE9, 0xEA, 0xEB, 0xEC, 0xED, 0xEE, 0xEF, 0xF1, 0xF2, 0xF3,
               0xF4, 0xF5, 0xF6, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE]
MMX_LANES = {8: [0, 1, 0x7F, 0x80, 0x81, 0xFE, 0xFF],
             16: [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF],
             32: [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFF]}
MMX_SHIFT_COUNTS = [0, 1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 1 << 32, 1 << 63]


def mmx_lanes(rng):
    bits = rng.choice((8, 16, 32, 64))
    if bits == 64:
        return rng.choice(MMX_SHIFT_COUNTS)
    v = 0
    for i in range(64 // bits):
        v |= (rng.choice(MMX_LANES[bits]) if rng.random() < 0.8 else rng.getrandbits(bits)) << (bits * i)
    return v


def f_mmx(g):
    rng = g.rng
    g.rex_mode = False
    c = rng.random()
    reg = lambda: rng.randrange(16)     # an MMX (or XMM) register number, REX bit included

    def ins(op, r, rm, imm=b"", pfx=(), rexw=False, kind="mmx", noise=True):
        code = g.encode(bytes([0x0F, op]), r, rm, None, imm=imm, pfx=pfx, rexw=rexw, sse=True, noise=noise)
        return Insn(code, kind, sse=True, x87=True, mmx=True)

    def rm_mmx(span=8, mem_p=0.35, aligned=False):
        if rng.random() < mem_p:
            return g.gen_mem(span, align=16 if aligned else 1, aligned=aligned)
        return ("r", reg())

    if c < 0.08:
        # Edge lanes through a general register.
        r = g.pick_reg(64, dst=True)
        return Insn(mov_r64_imm(r, mmx_lanes(rng)), "prep"), ins(0x6E, reg(), ("r", r), rexw=True, kind="mmx-move")
    if c < 0.5:
        return ins(rng.choice(MMX_INT_OPS), reg(), rm_mmx(), kind="mmx-int")
    if c < 0.6:
        op, digit = rng.choice([(0x71, 2), (0x71, 4), (0x71, 6), (0x72, 2), (0x72, 4), (0x72, 6), (0x73, 2), (0x73, 6)])
        count = rng.choice((0, 1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 255))
        return ins(op, digit, ("r", reg()), imm=bytes([count]), kind="mmx-shift")
    if c < 0.82:
        m = rng.randrange(11)
        if m == 0:   # MOVD/MOVQ mm, r/m32/64
            w = rng.random() < 0.5
            rm = g.gen_mem(8 if w else 4) if rng.random() < 0.35 else ("r", g.pick_reg(64))
            return ins(0x6E, reg(), rm, rexw=w, kind="mmx-move")
        if m == 1:   # MOVD/MOVQ r/m32/64, mm
            w = rng.random() < 0.5
            rm = g.gen_mem(8 if w else 4) if rng.random() < 0.35 else ("r", g.pick_reg(64, dst=True))
            return ins(0x7E, reg(), rm, rexw=w, kind="mmx-move")
        if m == 2:
            return ins(0x6F, reg(), rm_mmx(), kind="mmx-move")
        if m == 3:
            return ins(0x7F, reg(), rm_mmx(), kind="mmx-move")
        if m == 4:   # MOVNTQ
            return ins(0xE7, reg(), g.gen_mem(8), kind="mmx-move")
        if m == 5:   # PSHUFW
            return ins(0x70, reg(), rm_mmx(), imm=bytes([rng.getrandbits(8)]), kind="mmx-shuffle")
        if m == 6:   # PINSRW mm, r32/m16
            rm = g.gen_mem(2) if rng.random() < 0.35 else ("r", g.pick_reg(64))
            return ins(0xC4, reg(), rm, imm=bytes([rng.getrandbits(8)]), kind="mmx-shuffle")
        if m == 7:   # PEXTRW r32, mm
            return ins(0xC5, g.pick_reg(64, dst=True), ("r", reg()), imm=bytes([rng.getrandbits(8)]),
                       rexw=rng.random() < 0.3, kind="mmx-shuffle")
        if m == 8:   # PMOVMSKB r32, mm
            return ins(0xD7, g.pick_reg(64, dst=True), ("r", reg()), kind="mmx-shuffle")
        if m == 9:   # MASKMOVQ: stores to DS:RDI, so RDI is pointed at data or stack first
            t = g.pick_target(8)
            return (Insn(mov_r64_imm(RDI, t), "prep"),
                    ins(0xF7, reg(), ("r", reg()), kind="mmx-maskmov", noise=False))
        return ins(0x77, 0, None, kind="mmx-emms") if rng.random() < 0.5 else \
            Insn(b"\x0f\x77", "mmx-emms", sse=True, x87=True, mmx=True)
    # SSE/SSE2 with MMX operands.
    m = rng.randrange(7)
    if m == 0:   # CVTPI2PS / CVTPI2PD xmm, mm/m64
        return ins(0x2A, reg(), rm_mmx(), pfx=(0x66,) if rng.random() < 0.5 else (), kind="mmx-cvt")
    if m in (1, 2):   # CVT(T)PS2PI mm, xmm/m64
        return ins(rng.choice((0x2C, 0x2D)), reg(), rm_mmx(), kind="mmx-cvt")
    if m in (3, 4):   # CVT(T)PD2PI mm, xmm/m128
        return ins(rng.choice((0x2C, 0x2D)), reg(), rm_mmx(16, aligned=True), pfx=(0x66,), kind="mmx-cvt")
    if m == 5:   # MOVQ2DQ xmm, mm
        return ins(0xD6, reg(), ("r", reg()), pfx=(0xF3,), kind="mmx-move")
    return ins(0xD6, reg(), ("r", reg()), pfx=(0xF2,), kind="mmx-move")   # MOVDQ2Q mm, xmm


# ---------------------------------------------------------------------------------------------
# Faults: a case may end with an instruction that must raise an exception, leaving every register
# and all memory as they were (precise exceptions). The expected vector comes from the
# architecture, not from unicorn (QEMU 5 checks neither canonical addresses nor SSE alignment);
# the host-CPU check confirms it.

FAULT_UD = [b"\x0f\x0b", b"\x06", b"\x07", b"\x0e", b"\x16", b"\x17", b"\x1e", b"\x1f", b"\x27", b"\x2f",
            b"\x37", b"\x3f", b"\x60", b"\x61", b"\xd4\x0a", b"\xd5\x0a", b"\xd6", b"\xce", b"\x82\xc0\x01",
            b"\x8d\xc0", b"\xfe\xd0", b"\xff\xf8", b"\xc6\xc8\x00", b"\x0f\x04", b"\x0f\x0a", b"\x0f\xb9\xc0",
            b"\x0f\xff\xc0", b"\xf0\x01\xc0", b"\xf0\x89\x03", b"\xf0\x90", b"\xf0\x0f\x58\xc0", b"\x8c\xf0",
            b"\x8e\xc8", b"\x9a\x00\x00\x00\x00\x00\x00", b"\xea\x00\x00\x00\x00\x00\x00",
            # MMX encodings that do not exist: PSRLDQ on mm, F3/66-prefixed MMX ops, 0F D6 without a
            # prefix, memory-form shifts by immediate and PMOVMSKB, register-form MOVNTQ, MOVQ2DQ m64.
            b"\x0f\x73\xd9\x01", b"\xf3\x0f\xfc\xc1", b"\x66\x0f\x77", b"\x0f\xd6\xc1", b"\x0f\x6c\xc1",
            b"\x0f\x71\x01\x01", b"\x0f\xd7\x01", b"\x0f\xe7\xc1", b"\xf3\x0f\xd6\x01"]

# Addresses in [2 MiB, 1 GiB): outside the runner's page tables and unmapped in the host-CPU check.
PF_LO, PF_HI = 0x10000000, 0x3FFFF000


def noncanonical(rng):
    v = rng.getrandbits(64)
    top = v >> 47
    if top == 0 or top == 0x1FFFF:
        v ^= 1 << 60
    return v


def fault_access(g, reg, rng):
    """A load, store or read-modify-write through [reg]: (encoding, error-code W bit)."""
    size = rng.choice((8, 16, 32, 64))
    g.rex_mode = False
    m = Mem(1, reg & 7, (rng.randrange(4) << 6) | (4 << 3) | 4 if reg & 7 == 4 else None, 0, 1, 0, reg >> 3, False, None, None)
    other = g.pick_reg(64 if size != 8 else 8, dst=True, exclude=(reg,))
    r8 = [other] if size == 8 else ()
    c = rng.random()
    if c < 0.4:
        return g.encode(bytes([0x8A + (size != 8)]), other, m, size, r8=r8, noise=False), 0
    if c < 0.7:
        return g.encode(bytes([0x88 + (size != 8)]), other, m, size, r8=r8, noise=False), 2
    return g.encode(bytes([0x00 + (size != 8)]), other, m, size, r8=r8, noise=False), 2


def f_fault(g):
    rng = g.rng
    if g.pending_tries == 0:
        g.fault_kind = rng.choice(("ud", "ud", "de", "gp", "gp-sse", "pf", "ss", "ss-mem"))
        g.fault_reg = rng.choice([r for r in range(16) if r not in (RSP, RBP, RAX, RDX)])
        g.fault_addr = PF_LO + rng.randrange(PF_HI - PF_LO)
    kind, r = g.fault_kind, g.fault_reg
    first = g.pending_tries == 0
    g.pending = f_fault
    g.pending_tries += 1
    if kind == "ud":
        g.pending = None
        return Insn(rng.choice(FAULT_UD), "fault-ud", fault=(6, None, None))
    if kind == "de":
        if first:
            return Insn(bytes([0x48 | (r >> 3) << 2 | (r >> 3), 0x31, 0xC0 | (r & 7) << 3 | (r & 7)]), "prep")  # xor r, r
        g.pending = None
        size = rng.choice((8, 16, 32, 64))
        g.rex_mode = True
        rr = r if size != 8 or r < 8 else r
        return Insn(g.encode(bytes([0xF6 + (size != 8)]), rng.choice((6, 7)), ("r", rr), size, r8=[rr] if size == 8 else (),
                             noise=False), "fault-de", fault=(0, None, None))
    if kind == "gp":
        if first:
            return Insn(mov_r64_imm(r, noncanonical(rng)), "prep")
        g.pending = None
        code, _ = fault_access(g, r, rng)
        return Insn(code, "fault-gp", fault=(13, 0, None))
    if kind == "gp-sse":
        g.pending = None
        t = g.pick_target(16, 16, aligned=True) + rng.randrange(1, 16)
        m = g.gen_mem(16, target=t)
        prefix, op = rng.choice([(None, 0x28), (0x66, 0x6F), (0x66, 0xFE), (None, 0x58), (0x66, 0x7F), (None, 0x29)])
        code = g.encode(bytes([0x0F, op]), rng.randrange(16), m, None, pfx=(prefix,) if prefix else (), sse=True)
        return Insn(code, "fault-gp", fault=(13, 0, None))
    if kind == "pf":
        if first:
            return Insn(mov_r32_imm(r, g.fault_addr), "prep")
        g.pending = None
        code, w = fault_access(g, r, rng)
        return Insn(code, "fault-pf", fault=(14, w, g.fault_addr))
    if kind == "ss-mem":
        # A non-canonical RBP-based operand addresses through SS: #SS(0), not #GP(0).
        if first:
            return Insn(mov_r64_imm(RBP, noncanonical(rng)), "prep")
        g.pending = None
        code, _ = fault_access(g, RBP, rng)
        return Insn(code, "fault-ss", fault=(12, 0, None))
    # ss: a push with a non-canonical RSP.
    if first:
        return Insn(mov_r64_imm(RSP, noncanonical(rng)), "prep")
    g.pending = None
    return Insn(rng.choice((b"\x50", b"\x41\x57", b"\x6a\x01", b"\x9c", b"\xe8\x00\x00\x00\x00")), "fault-ss",
                fault=(12, 0, None))


# ---------------------------------------------------------------------------------------------
# x87. The stack depth comes from the oracle's state (g.x87), so pushes never overflow and pops
# never underflow. FCW stays at its FNINIT value: the interpreter applies neither rounding nor
# precision control (documented in X87.swift). Transcendental instructions (FSIN, FPATAN, F2XM1,
# ...) are left out: the interpreter computes them in double precision.
# FSW compared: TOP and C0/C2/C3 where iced-x86 does not call them undefined; not the exception
# flags, SF, ES or B (unicorn raises no x87 exception flags, so FNSTSW is not generated either), and
# not C1, which the host CPU sets after rounding up and neither unicorn nor the interpreter does.
# FLD m80 loads only valid encodings (J bit set, exponent non-zero): the host CPU rejects unnormals
# and pseudo-NaNs as invalid operands, which unicorn and the interpreter compute with.

X87_FSW_COMPARED = 0x4500 | 0x3800
ICED_C = {0x400: 0x100, 0x800: 0x200, 0x1000: 0x400, 0x2000: 0x4000}


def iced_c_flags(x):
    return sum(v for k, v in ICED_C.items() if x & k)


def x87_depth(g):
    """(ST registers valid from ST0 on, whether ST7 is free for a push)."""
    fcw, fsw, ftw, sts = g.x87
    top = (fsw >> 11) & 7
    valid = [(ftw >> ((top + i) & 7)) & 1 for i in range(8)]
    depth = 0
    while depth < 8 and valid[depth]:
        depth += 1
    return depth, not valid[7]


def x87_mem(g, size):
    g.rex_mode = False
    return g.gen_mem(size)


def f_x87_fld80(g):
    g.rex_mode = False
    return Insn(g.encode(b"\xdb", 5, g.gen_mem(10, target=g.x87_m80), None), "x87-load", x87=True)


def f_x87(g):
    rng = g.rng
    depth, can_push = x87_depth(g)
    ops = []
    if can_push:
        ops += ["const", "fld_mem", "fild", "fld_st"] if depth else ["const", "fld_mem", "fild"]
    if depth >= 1:
        ops += ["fst_mem", "fist", "arith_mem", "arith_st", "unary", "compare", "fxch", "fcmov", "fst_st", "status"]
    if depth >= 2:
        ops += ["arith_pop", "compare_pop2", "fcomi"]
    ops += ["control"]
    op = rng.choice(ops)
    # Now and then an empty operand (stack underflow: masked invalid, the indefinite NaN).
    i = rng.randrange(8) if rng.random() < 0.03 else rng.randrange(max(depth, 1))

    def ins(code, kind):
        return Insn(code, kind, x87=True)

    def mem_insn(opcode, digit, size, kind):
        return ins(g.encode(bytes([opcode]), digit, x87_mem(g, size), None), kind)

    if op == "const":
        return ins(bytes([0xD9, rng.choice((0xE8, 0xE9, 0xEA, 0xEB, 0xEC, 0xED, 0xEE))]), "x87-const")
    if op == "fld_mem":
        opcode, digit, size = rng.choice(((0xD9, 0, 4), (0xDD, 0, 8), (0xDB, 5, 10)))
        if size == 10:
            # Make the 80-bit value a valid encoding first: OR the J bit and the exponent's low bit.
            t = g.pick_target(10)
            g.rex_mode = False
            fix_j = Insn(g.encode(b"\x80", 1, g.gen_mem(1, target=t + 7), None, imm=b"\x80"), "prep")
            fix_e = Insn(g.encode(b"\x80", 1, g.gen_mem(1, target=t + 8), None, imm=b"\x01"), "prep")
            g.x87_m80 = t
            g.pending, g.pending_tries = f_x87_fld80, 1
            return fix_j, fix_e
        return mem_insn(opcode, digit, size, "x87-load")
    if op == "fild":
        opcode, digit, size = rng.choice(((0xDF, 0, 2), (0xDB, 0, 4), (0xDF, 5, 8)))
        return mem_insn(opcode, digit, size, "x87-load")
    if op == "fld_st":
        return ins(bytes([0xD9, 0xC0 + i]), "x87-load")
    if op == "fst_mem":
        opcode, digit, size = rng.choice(((0xD9, 2, 4), (0xDD, 2, 8), (0xD9, 3, 4), (0xDD, 3, 8), (0xDB, 7, 10)))
        return mem_insn(opcode, digit, size, "x87-store")
    if op == "fist":
        opcode, digit, size = rng.choice(((0xDF, 2, 2), (0xDB, 2, 4), (0xDF, 3, 2), (0xDB, 3, 4), (0xDF, 7, 8)))
        return mem_insn(opcode, digit, size, "x87-store")
    if op == "fst_st":
        return ins(bytes([0xDD, rng.choice((0xD0, 0xD8)) + i]), "x87-store")
    if op == "arith_mem":
        opcode, size = rng.choice(((0xD8, 4), (0xDC, 8), (0xDA, 4), (0xDE, 2)))
        return mem_insn(opcode, rng.randrange(8), size, "x87-arith")
    if op == "arith_st":
        digit = rng.choice((0, 1, 4, 5, 6, 7))
        return ins(bytes([rng.choice((0xD8, 0xDC)), 0xC0 + digit * 8 + i]), "x87-arith")
    if op == "arith_pop":
        digit = rng.choice((0, 1, 4, 5, 6, 7))
        return ins(bytes([0xDE, 0xC0 + digit * 8 + max(i, 1)]), "x87-arith")
    if op == "unary":
        # FXTRACT pushes: only with room, apart from the occasional overflow.
        choices = (0xE0, 0xE1, 0xE4, 0xE5, 0xFA, 0xFC, 0xFD, 0xF8, 0xF5) + ((0xF4,) if can_push or rng.random() < 0.05 else ())
        return ins(bytes([0xD9, rng.choice(choices)]), "x87-unary")
    if op == "compare":
        return ins(rng.choice((bytes([0xD8, 0xD0 + i]), bytes([0xD8, 0xD8 + i]), bytes([0xDD, 0xE0 + i]),
                               bytes([0xDD, 0xE8 + i]))), "x87-compare")
    if op == "compare_pop2":
        return ins(rng.choice((b"\xde\xd9", b"\xda\xe9")), "x87-compare")
    if op == "fcomi":
        return ins(bytes([rng.choice((0xDB, 0xDF)), rng.choice((0xE8, 0xF0)) + i]), "x87-fcomi")
    if op == "fxch":
        return ins(bytes([0xD9, 0xC8 + i]), "x87-fxch")
    if op == "fcmov":
        return ins(bytes([rng.choice((0xDA, 0xDB)), 0xC0 + rng.randrange(4) * 8 + i]), "x87-fcmov")
    if op == "status":
        return mem_insn(0xD9, 7, 2, "x87-status")              # FNSTCW m16
    # control
    return ins(rng.choice((b"\xd9\xd0", b"\x9b", b"\xdb\xe2", b"\xd9\xf7", b"\xd9\xf6", bytes([0xDD, 0xC0 + i]),
                           b"\xdb\xe3")), "x87-control")


FAMILIES = {
    "alu": (f_alu, 14), "test": (f_test, 3), "unary": (f_unary, 4), "mul": (f_mul, 4), "div": (f_div, 3),
    "shift": (f_shift, 8), "shxd": (f_shxd, 3), "bt": (f_bt, 4), "bsf": (f_bsf, 2), "setcc": (f_setcc, 3),
    "cmov": (f_cmov, 3), "movx": (f_movx, 4), "mov": (f_mov, 10), "lea": (f_lea, 3), "xchg": (f_xchg, 4),
    "cmpxchg8b": (f_cmpxchg8b, 1), "bswap": (f_bswap, 1), "push": (f_push, 4), "pop": (f_pop, 4),
    "popf": (f_popf, 1), "pushf": (f_pushf, 1), "flagops": (f_flagops, 2), "convert": (f_convert, 2),
    "string": (f_string, 5), "xlat": (f_xlat, 1), "enter_leave": (f_enter_leave, 1), "nop": (f_nop, 1),
    "jcc": (f_jcc, 4), "jmp": (f_jmp, 2), "indirect": (f_indirect, 1), "ret": (f_ret, 1),
    "pointer": (f_pointer, 3),
    "sse_int": (f_sse_int, 5), "sse_move": (f_sse_move, 5), "sse_fp": (f_sse_fp, 5), "mxcsr": (f_mxcsr, 1),
    "x87": (f_x87, 6), "mmx": (f_mmx, 6),
}


# ---------------------------------------------------------------------------------------------
# Case generation

_decoder_cache = {}


def decode(code, ip):
    d = iced_x86.Decoder(64, code, ip=ip)
    return d.decode()


def branch_next(g, spec, length):
    kind = spec[0]
    nxt = g.rip + length
    if kind == "cc":
        return nxt + spec[2] if cond(spec[1], g.flags) else nxt
    if kind == "always":
        return nxt + spec[1]
    if kind == "abs":
        return spec[1]
    if kind == "rcxz":
        mask = 0xFFFFFFFF if spec[1] else M64
        return nxt + spec[2] if g.regs[RCX] & mask == 0 else nxt
    if kind == "loop":
        mask = 0xFFFFFFFF if spec[1] else M64
        c = (g.regs[RCX] - 1) & mask
        z = bool(g.flags & ZF)
        taken = c != 0 and (spec[2] == 2 or (spec[2] == 1 and z) or (spec[2] == 0 and not z))
        return nxt + spec[3] if taken else nxt
    raise ValueError(kind)


def loop_reads(spec):
    return ZF if spec and spec[0] == "loop" and spec[2] != 2 else 0


class Case:
    __slots__ = ("seed", "regs", "rflags", "mem_seed", "code", "steps", "fs_base", "gs_base", "xmm", "mxcsr",
                 "fault", "stop", "kinds")


# MXCSR bits compared against unicorn: QEMU 5 (unicorn 2) does not raise the exception flags
# (bits 0-5), so only the control bits are; the host-CPU check compares all of them.
MXCSR_COMPARED = 0xFFC0


def rand_seg_base(rng):
    """0 half the time, else a canonical base: small, below 4 GiB, anywhere in the user half, or
    (rarely, as the host-CPU check cannot set those) in the kernel half."""
    c = rng.random()
    if c < 0.5:
        return 0
    if c < 0.65:
        return rng.randrange(0x200000)
    if c < 0.8:
        return rng.randrange(1 << 32)
    if c < 0.98:
        return rng.getrandbits(47)
    return (-rng.randrange(1, 0x200000)) & M64


FAULT_P = 0.2


def generate_case(emu, seed, n_insns, weights):
    """Builds one case; returns a Case with steps = [(rip_before, length, regs, rip, rflags, defined_mask, writes)]."""
    rng = random.Random(seed)
    g = Gen(rng, emu, None)
    regs = [rand_value(rng) for _ in range(16)]
    regs[RSP] = STACK_TOP - 0x1000 + (rng.randrange(-0x40, 0x40) * 8)
    if rng.random() < 0.1:
        regs[RSP] += rng.randrange(1, 8)
    for r in (RSI, RDI, RBX):
        if rng.random() < 0.7:
            regs[r] = rng.choice((DATA, STACK_LO)) + 0x100 + rng.randrange(0x1E00)
    rflags = 0x2 | (rng.getrandbits(12) & (ARITH | DF))
    mem_seed = rng.getrandbits(64)
    fs_base, gs_base = rand_seg_base(rng), rand_seg_base(rng)
    g.seg_base = {0x64: fs_base, 0x65: gs_base}
    g.used_fsgs = False
    xmm = [rand_vector(rng) for _ in range(16)]
    mxcsr = rand_mxcsr(rng)
    emu.reset(regs, rflags, mem_seed, fs_base, gs_base, xmm, mxcsr)
    cur_xmm, cur_mxcsr = list(xmm), mxcsr
    g.x87 = emu.read_x87()
    x87_undef = 0
    g.regs = list(regs)
    g.flags = rflags
    g.rip = CODE
    g.pending_tries = 0
    names = list(weights)
    cum = []
    acc = 0
    for n in names:
        acc += weights[n]
        cum.append(acc)
    code = bytearray()
    steps = []
    undef = 0
    queue = []
    failures = 0
    fault = None
    want_fault = rng.random() < FAULT_P
    stop = "too many retries"
    kinds = collections.Counter()
    while failures < 200:
        if g.rip - CODE > CODE_SIZE - 256:
            stop = "code area full"
            break
        if len(steps) >= n_insns and not queue and g.pending is None:
            stop = "length reached"
            if not want_fault:
                break
            want_fault = False
            g.pending, g.pending_tries = f_fault, 0
        if queue:
            ins = queue.pop(0)
        else:
            fam = g.pending
            g.pending = None
            if fam is None:
                g.pending_tries = 0
                x = rng.random() * acc
                lo = 0
                for i, c in enumerate(cum):
                    if x < c:
                        lo = i
                        break
                fam = FAMILIES[names[lo]][0]
            try:
                res = fam(g)
            except Retry:
                failures += 1
                g.pending = None
                continue
            if isinstance(res, tuple):
                ins, queue = res[0], list(res[1:])
            else:
                ins = res
        if ins.fault is not None:
            # Not executed here: the case ends with it.
            off = g.rip - CODE
            if len(code) < off:
                code += bytes(off - len(code))
            code[off:off + len(ins.code)] = ins.code
            fault = ins.fault
            stop = "fault"
            kinds[ins.kind] += 1
            break
        di = decode(ins.code, g.rip)
        if di.code == iced_x86.Code.INVALID or di.len != len(ins.code):
            failures += 1
            queue = []
            g.pending = None
            continue
        reads = iced_flags(di.rflags_read) | loop_reads(ins.until)
        if reads & undef:
            # Define the flags first; the candidate is dropped (its encoding may depend on RIP).
            queue = []
            g.pending = None
            ins = definer(g)
            di = decode(ins.code, g.rip)
        length = len(ins.code)
        nxt = branch_next(g, ins.until, length) if ins.until is not None else g.rip + length
        emu.write_code(g.rip, ins.code)
        off = g.rip - CODE
        if len(code) < off:
            code += bytes(off - len(code))
        code[off:off + length] = ins.code
        if nxt > g.rip + length:
            # Bytes jumped over: never executed, random.
            filler = bytes(rng.getrandbits(8) for _ in range(nxt - g.rip - length))
            emu.write_code(g.rip + length, filler)
            code[off + length:off + length] = filler
        # Unicorn's `until` is only checked in freshly translated code, so a chained translation
        # block can run past it: a UD2 at the stop address halts such an overrun right there.
        emu.write_code(nxt, b"\x0f\x0b")
        before = emu.save_image() if ins.mmx else None
        err = emu.step(g.rip, nxt)
        nregs, nrip, nflags = emu.read_state()
        if err not in (0, UC_ERR_INSN_INVALID) or emu.interrupt not in (None, 6) or nrip != nxt:
            # Unicorn could not run it (or stopped elsewhere): the case ends before it.
            stop = f"unicorn stopped ({ins.kind}: error {err}, interrupt {emu.interrupt})"
            break
        if ins.mmx:
            emu.hardware_mmx(ins.code, before)
        kinds[ins.kind] += 1
        modified = iced_flags(di.rflags_modified)
        undefined = iced_flags(di.rflags_undefined)
        if ins.adjust is not None:
            modified, undefined = ins.adjust(modified, undefined)
        undef = (undef & ~modified) | undefined
        vchanges = []
        if ins.sse:
            nxmm, nmx = emu.read_vector_state()
            vchanges = [(i, v) for i, v in enumerate(nxmm) if v != cur_xmm[i]]
            if nmx != cur_mxcsr:
                vchanges.append(("mx", nmx))
            cur_xmm, cur_mxcsr = nxmm, nmx
        if ins.x87:
            nx = emu.read_x87()
            x87_undef = (x87_undef & ~iced_c_flags(di.rflags_modified)) | iced_c_flags(di.rflags_undefined)
            vchanges.append(("fx", nx, X87_FSW_COMPARED & ~x87_undef))
            g.x87 = nx
        steps.append((g.rip, length, nregs, nrip, nflags, COMPARED & ~undef, emu.writes, vchanges))
        g.regs = nregs
        g.rip = nrip
        g.flags = nflags
    c = Case()
    c.seed, c.regs, c.rflags, c.mem_seed = seed, regs, rflags, mem_seed
    # Bases no instruction used are left out (the host-CPU check cannot set kernel-half ones).
    c.fs_base, c.gs_base = (fs_base, gs_base) if g.used_fsgs else (0, 0)
    c.xmm, c.mxcsr = xmm, mxcsr
    c.code = bytes(code)
    c.steps = steps
    c.fault = fault
    c.stop = stop
    c.kinds = kinds
    return c


def case_from_code(emu, instructions, case_id_seed="code"):
    """A case running the given instruction encodings in order (FNINIT state, zero registers but
    RSP, memory from seed 1), with unicorn's state after each: for hand-made regression cases."""
    c = Case()
    c.seed = case_id_seed
    c.regs = [0] * 16
    c.regs[RSP] = STACK_TOP - 0x1000
    c.rflags, c.mem_seed, c.fs_base, c.gs_base = 2, 1, 0, 0
    c.xmm, c.mxcsr, c.fault, c.stop, c.kinds = [0] * 16, 0x1F80, None, "code", collections.Counter()
    emu.reset(c.regs, c.rflags, c.mem_seed, 0, 0, c.xmm, c.mxcsr)
    ip, code, steps, undef, x87_undef = CODE, b"", [], 0, 0
    x87 = emu.read_x87()
    cur_xmm, cur_mx = emu.read_vector_state()
    for b in instructions:
        di = decode(b, ip)
        emu.write_code(ip, b)
        emu.write_code(ip + len(b), b"\x0f\x0b")
        code += b
        before = emu.save_image() if mmx_kind(b) else None
        emu.step(ip, ip + len(b))
        if before is not None:
            emu.hardware_mmx(b, before)
        regs, rip, fl = emu.read_state()
        writes = emu.writes
        undef = (undef & ~iced_flags(di.rflags_modified)) | iced_flags(di.rflags_undefined)
        vchanges = []
        nxmm, nmx = emu.read_vector_state()
        vchanges += [(i, v) for i, v in enumerate(nxmm) if v != cur_xmm[i]]
        if nmx != cur_mx:
            vchanges.append(("mx", nmx))
        cur_xmm, cur_mx = nxmm, nmx
        nx = emu.read_x87()
        if nx != x87:
            x87_undef = (x87_undef & ~iced_c_flags(di.rflags_modified)) | iced_c_flags(di.rflags_undefined)
            vchanges.append(("fx", nx, X87_FSW_COMPARED & ~x87_undef))
            x87 = nx
        steps.append((ip, len(b), regs, rip, fl, COMPARED & ~undef, writes, vchanges))
        ip = rip
    c.code, c.steps = code, steps
    return c


def serialize(c, case_id, disasm=False):
    """The text form the Swift runner reads (see FuzzCase.swift)."""
    out = [f"C {case_id} {c.rflags:x} {c.mem_seed:x} " + " ".join(f"{v:x}" for v in c.regs),
           "X " + c.code.hex()]
    if c.fs_base or c.gs_base:
        out.insert(1, f"B {c.fs_base:x} {c.gs_base:x}")
    out.insert(1, f"V {c.mxcsr:x} {MXCSR_COMPARED:x} " + " ".join(f"{v:x}" for v in c.xmm))
    prev = list(c.regs)
    fmt = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL) if disasm else None
    for (ip, length, regs, rip, rflags, mask, writes, vchanges) in c.steps:
        parts = [f"S {rip:x} {rflags:x} {mask:x}"]
        for i in range(16):
            if regs[i] != prev[i]:
                parts.append(f"r{i}={regs[i]:x}")
        for (a, n, v) in writes:
            parts.append(f"m{a:x}:{n}={v:x}")
        for item in vchanges:
            if item[0] == "fx":
                (fcw, fsw, ftw, sts), fmask = item[1], item[2]
                parts.append(f"fx={fcw:x}:{fsw:x}:{ftw:x}:{fmask:x}:" + ":".join(f"{v:x}" for v in sts))
            elif item[0] == "mx":
                parts.append(f"mx={item[1]:x}")
            else:
                parts.append(f"x{item[0]}={item[1]:x}")
        if fmt is not None:
            ins = decode(c.code[ip - CODE:ip - CODE + length], ip)
            parts.append(f"; {ip:x}: {fmt.format(ins)}")
        out.append(" ".join(parts))
        prev = regs
    if c.fault is not None:
        v, err, cr2 = c.fault
        ip = c.steps[-1][3] if c.steps else CODE
        line = f"F {v:x} " + ("-" if err is None else f"{err:x}") + " " + ("-" if cr2 is None else f"{cr2:x}")
        if fmt is not None:
            b = c.code[ip - CODE:ip - CODE + 15]
            ins = decode(b, ip)
            line += f" ; {ip:x}: " + (fmt.format(ins) if ins.code != iced_x86.Code.INVALID else b[:4].hex() + " (invalid)")
        out.append(line)
    out.append("E")
    return "\n".join(out) + "\n"


def disassemble_step(c_code, ip, length=15):
    b = c_code[ip - CODE:ip - CODE + length]
    ins = decode(b, ip)
    fmt = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL)
    return b[:ins.len].hex(), fmt.format(ins)
