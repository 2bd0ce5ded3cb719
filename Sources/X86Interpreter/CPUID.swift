// CPUID and MSRs: a deliberately small feature set, and only what the interpreter implements.

enum MSR {
    static let tsc: UInt32 = 0x10
    static let platformID: UInt32 = 0x17
    static let apicBase: UInt32 = 0x1B
    static let featureControl: UInt32 = 0x3A
    static let biosSignID: UInt32 = 0x8B
    static let mtrrCap: UInt32 = 0xFE
    static let sysenterCS: UInt32 = 0x174, sysenterESP: UInt32 = 0x175, sysenterEIP: UInt32 = 0x176
    static let mcgCap: UInt32 = 0x179, mcgStatus: UInt32 = 0x17A
    static let miscEnable: UInt32 = 0x1A0
    static let pat: UInt32 = 0x277
    static let mtrrDefType: UInt32 = 0x2FF
    static let archCapabilities: UInt32 = 0x10A
    static let efer: UInt32 = 0xC000_0080
    static let star: UInt32 = 0xC000_0081, lstar: UInt32 = 0xC000_0082, cstar: UInt32 = 0xC000_0083
    static let sfmask: UInt32 = 0xC000_0084
    static let fsBase: UInt32 = 0xC000_0100, gsBase: UInt32 = 0xC000_0101, kernelGSBase: UInt32 = 0xC000_0102
}

extension X86Interpreter {
    /// CPUID.1:EDX — fpu de pse tsc msr pae cx8 apic mtrr pge cmov pat clflush mmx fxsr sse sse2.
    static let cpuid1EDX: UInt32 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 9
        | 1 << 12 | 1 << 13 | 1 << 15 | 1 << 16 | 1 << 19 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26
    /// CPUID.80000001:EDX — syscall nx lm; ECX — lahf_lm.
    static let cpuidExt1EDX: UInt32 = 1 << 11 | 1 << 20 | 1 << 29
    static let cpuidExt1ECX: UInt32 = 1 << 0
    /// Leaves 2-0x14 read as zero (no cache/power/perfmon enumeration) except 0xB, the topology:
    /// every vCPU is a core of one package, one thread each (so Linux finds siblings and takes the
    /// delay-loop calibration from the boot CPU); 0x15 gives the TSC and crystal frequency so Linux
    /// needs no PIT calibration.
    static let maxBasicLeaf: UInt32 = 0x15
    /// The TSC and the local APIC timer input both count VM-clock nanoseconds: 1 GHz.
    static let tscHz: UInt32 = 1_000_000_000
    static let brand = "swhv x86-64 interpreter"
    /// IA32_ARCH_CAPABILITIES: RDCL_NO (no Meltdown/L1TF), SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO,
    /// SBDR_SSDP_NO, FBSDP_NO, PSDP_NO (no MMIO stale data), GDS_NO, RFDS_NO: not affected, because
    /// nothing here executes speculatively.
    static let archCapabilities: UInt64 = 1 << 0 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 13 | 1 << 14 | 1 << 15
        | 1 << 26 | 1 << 27

    /// APIC-ID bits the cores of the package take (ceil(log2(vCPUs))).
    var coreIDBits: UInt32 {
        let n = system.cpuCount
        return n <= 1 ? 0 : UInt32(truncatingIfNeeded: Int.bitWidth - (n - 1).leadingZeroBitCount)
    }

    func cpuid() {
        let leaf = UInt32(truncatingIfNeeded: gpr(0))
        var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0, d: UInt32 = 0
        func str(_ s: String) -> UInt32 {
            var v: UInt32 = 0
            for (i, ch) in s.utf8.prefix(4).enumerated() { v |= UInt32(ch) << UInt32(8 * i) }
            return v
        }
        switch leaf {
        case 0:
            a = X86Interpreter.maxBasicLeaf
            b = str("Genu"); d = str("ineI"); c = str("ntel")
        case 1:
            a = 0x0000_0F61   // family 15, model 6, stepping 1
            // CLFLUSH line 64 bytes; initial APIC ID; with several vCPUs, the APIC IDs a package
            // spans (HTT says the field is valid).
            let ids = UInt32(1) << coreIDBits
            b = 0x0800 | (apic.id << 24) | (system.cpuCount > 1 ? ids << 16 : 1 << 16)
            d = X86Interpreter.cpuid1EDX | (system.cpuCount > 1 ? 1 << 28 : 0)
        case 0xB:
            // Extended topology: level 0 SMT (one thread per core), level 1 cores (all vCPUs).
            let sub = UInt32(truncatingIfNeeded: gpr(Reg.rcx))
            d = apic.id   // x2APIC ID
            switch sub {
            case 0: a = 0; b = 1; c = 1 << 8
            case 1: a = coreIDBits; b = UInt32(truncatingIfNeeded: system.cpuCount); c = 2 << 8 | 1
            default: c = sub & 0xFF   // invalid level
            }
        case 7:
            // Subleaf 0, EBX bit 0: FSGSBASE. Linux then saves and restores FS/GS bases exactly on
            // context switches; without it, a null selector load (which clears the base, as on the
            // Intel CPU advertised) leaves the kernel's saved base and the CPU's apart until the
            // next switch (the fsgsbase selftest's "mov 0 to %gs" case failed by timing).
            // EDX bit 29: IA32_ARCH_CAPABILITIES, which says this CPU (it does not speculate) has none
            // of the speculation bugs the kernel otherwise pays for on an old Intel model: page
            // table isolation (a CR3 switch, so a TLB flush, on every kernel entry from user
            // mode), MDS buffer clearing on every return to user mode, PTE inversion.
            if UInt32(truncatingIfNeeded: gpr(Reg.rcx)) == 0 { b = 1 << 0; d = 1 << 29 }
        case 0x15:
            // TSC/crystal ratio 1/1 with a 1 GHz crystal: Linux derives both the TSC frequency and
            // the APIC timer period from this (both run at 1 GHz here).
            a = 1; b = 1; c = X86Interpreter.tscHz
            if let hz = tscHzOverride { (b, a) = X86Interpreter.tscCrystalRatio(hz: hz) }
        case 0x8000_0000:
            a = 0x8000_0008
        case 0x8000_0001:
            c = X86Interpreter.cpuidExt1ECX
            d = X86Interpreter.cpuidExt1EDX
        case 0x8000_0002...0x8000_0004:
            var bytes = Array(X86Interpreter.brand.utf8)
            bytes += [UInt8](repeating: 0, count: 48 - bytes.count)
            let base = Int(leaf - 0x8000_0002) * 16
            func word(_ i: Int) -> UInt32 {
                (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[base + i * 4 + $1]) << UInt32(8 * $1) }
            }
            a = word(0); b = word(1); c = word(2); d = word(3)
        case 0x8000_0007:
            d = 1 << 8   // invariant TSC: it counts the VM clock at a fixed rate
        case 0x8000_0008:
            a = UInt32(X86Interpreter.physAddrBits) | 48 << 8
        default:
            break
        }
        setGPR(0, UInt64(a)); setGPR(Reg.rbx, UInt64(b)); setGPR(Reg.rcx, UInt64(c)); setGPR(Reg.rdx, UInt64(d))
    }

    func readMSR(_ index: UInt32) throws(Fault) -> UInt64 {
        switch index {
        case MSR.tsc: return tsc
        case MSR.platformID: return 0   // read-only; Linux's Intel microcode driver reads it
        case MSR.archCapabilities: return X86Interpreter.archCapabilities
        case MSR.apicBase: return apic.baseMSR
        case MSR.featureControl: return 1   // locked, VMX off
        case MSR.biosSignID: return 0
        case MSR.mtrrCap: return 0x508      // 8 variable ranges, fixed ranges, WC
        case MSR.sysenterCS: return st.pointee.sysenterCS
        case MSR.sysenterESP: return st.pointee.sysenterESP
        case MSR.sysenterEIP: return st.pointee.sysenterEIP
        case MSR.mcgCap, MSR.mcgStatus: return 0
        case MSR.miscEnable: return st.pointee.miscEnable
        case MSR.pat: return st.pointee.pat
        case MSR.mtrrDefType: return st.pointee.mtrrDefType
        case 0x200...0x20F, 0x250, 0x258, 0x259, 0x268...0x26F: return mtrrs[index] ?? 0
        case MSR.efer: return st.pointee.efer
        case MSR.star: return st.pointee.star
        case MSR.lstar: return st.pointee.lstar
        case MSR.cstar: return st.pointee.cstar
        case MSR.sfmask: return st.pointee.sfmask
        case MSR.fsBase: return segs[Seg.fs].base
        case MSR.gsBase: return segs[Seg.gs].base
        case MSR.kernelGSBase: return st.pointee.kernelGSBase
        default: throw Fault.gp(0)
        }
    }

    func writeMSR(_ index: UInt32, _ v: UInt64) throws(Fault) {
        let canonical = { (a: UInt64) -> Bool in let t = Int64(bitPattern: a) >> 47; return t == 0 || t == -1 }
        switch index {
        case MSR.tsc: st.pointee.tscOffset = v &- tscBase
        case MSR.apicBase:
            if v & ~(0xF_FFFF_F000 | 0x900) != 0 { throw Fault.gp(0) }
            apic.baseMSR = v
            flushTLB(keepGlobal: false)
        case MSR.biosSignID: break
        case MSR.sysenterCS: st.pointee.sysenterCS = v & 0xFFFF
        case MSR.sysenterESP: guard canonical(v) else { throw Fault.gp(0) }; st.pointee.sysenterESP = v
        case MSR.sysenterEIP: guard canonical(v) else { throw Fault.gp(0) }; st.pointee.sysenterEIP = v
        case MSR.mcgStatus: if v != 0 { throw Fault.gp(0) }
        case MSR.miscEnable: st.pointee.miscEnable = v
        case MSR.pat:
            for i in 0..<8 {
                let t = (v >> UInt64(i * 8)) & 0xFF
                if t == 2 || t == 3 || t > 7 { throw Fault.gp(0) }
            }
            st.pointee.pat = v
        case MSR.mtrrDefType: st.pointee.mtrrDefType = v & 0xCFF
        case 0x200...0x20F, 0x250, 0x258, 0x259, 0x268...0x26F: mtrrs[index] = v
        case MSR.efer:
            if v & ~(EFER.sce | EFER.lme | EFER.lma | EFER.nxe) != 0 { throw Fault.gp(0) }
            var nv = (v & ~EFER.lma) | (st.pointee.efer & EFER.lma)
            if st.pointee.cr0 & CR0.pg != 0 && (nv ^ st.pointee.efer) & EFER.lme != 0 { throw Fault.gp(0) }
            nv &= EFER.allowed
            if (nv ^ st.pointee.efer) & EFER.nxe != 0 { flushTLB(keepGlobal: false) }
            st.pointee.efer = nv
        case MSR.star: st.pointee.star = v
        case MSR.lstar: guard canonical(v) else { throw Fault.gp(0) }; st.pointee.lstar = v
        case MSR.cstar: guard canonical(v) else { throw Fault.gp(0) }; st.pointee.cstar = v
        case MSR.sfmask: st.pointee.sfmask = v & 0xFFFF_FFFF
        case MSR.fsBase: guard canonical(v) else { throw Fault.gp(0) }; segs[Seg.fs].base = v; refreshSegBases()
        case MSR.gsBase: guard canonical(v) else { throw Fault.gp(0) }; segs[Seg.gs].base = v; refreshSegBases()
        case MSR.kernelGSBase: guard canonical(v) else { throw Fault.gp(0) }; st.pointee.kernelGSBase = v
        default: throw Fault.gp(0)
        }
    }
}
