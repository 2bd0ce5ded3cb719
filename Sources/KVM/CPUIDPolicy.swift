import CKVM

/// What the guest is told about the CPU. KVM offers the host's features; some of them hurt on kvm-pvm.
public struct CPUIDPolicy: Sendable {
    /// Hide XSAVE/AVX/AVX-512 so the guest uses FXSAVE: kvm-pvm's emulator cannot run XRSTOR in guest
    /// kernel code. Off where guest kernels run on hardware, so guests keep AVX.
    public var hideXSAVE = false
    /// Offer only the baseline x86-64 features Linux needs (fpu pse tsc msr pae cx8 apic pge cmov
    /// pat mmx fxsr sse sse2; syscall nx lm). kvm-pvm emulates guest kernel code with KVM's
    /// instruction emulator, which cannot run e.g. `lock cmpxchg16b` or `xrstor`: a kernel that sees
    /// CX16 or XSAVE dies with KVM_EXIT_INTERNAL_ERROR there.
    public var minimal = false
    public init(hideXSAVE: Bool = false, minimal: Bool = false) {
        self.hideXSAVE = hideXSAVE
        self.minimal = minimal
    }

    /// The policy for this host: minimal (no XSAVE) where guest kernel code is emulated, the host's
    /// features (with XSAVE and AVX) where it runs on hardware.
    public static var forThisHost: CPUIDPolicy {
        let emulated = KVMSystem.emulatesSupervisorCode
        return CPUIDPolicy(hideXSAVE: emulated, minimal: emulated)
    }

    static let minimalLeaf1EDX: UInt32 = [0, 3, 4, 5, 6, 8, 9, 13, 15, 16, 23, 24, 25, 26].reduce(0) { $0 | (1 << $1) }
    static let minimalExtEDX: UInt32 = (1 << 11) | (1 << 20) | (1 << 29)  // syscall, nx, lm

    /// Applies the policy to KVM's supported CPUID for vCPU `vcpuID` of `cpuCount`, and states the
    /// topology as Firecracker does: one package whose cores are the vCPUs, one thread each, the
    /// vCPU's APIC ID in leaves 1, 0xB and 0x1F.
    public func filter(_ entries: [kvm_cpuid_entry2], vcpuID: UInt32, cpuCount: Int = 1) -> [kvm_cpuid_entry2] {
        CPUIDPolicy.normaliseTopology(features(entries, vcpuID: vcpuID), vcpuID: vcpuID, cpuCount: cpuCount)
    }

    /// APIC-ID bits the cores of the package take (ceil(log2(cpuCount))).
    static func coreIDBits(_ cpuCount: Int) -> UInt32 {
        cpuCount <= 1 ? 0 : UInt32(truncatingIfNeeded: Int.bitWidth - (cpuCount - 1).leadingZeroBitCount)
    }

    /// The topology leaves (Firecracker's normalisation): 1 (APIC ID, logical processor count, HTT),
    /// 4 (cores per package, threads sharing each cache), 0xB and 0x1F (SMT level of one thread,
    /// core level of all vCPUs, x2APIC ID) and AMD's 0x80000008 (core count).
    static func normaliseTopology(_ entries: [kvm_cpuid_entry2], vcpuID: UInt32, cpuCount: Int) -> [kvm_cpuid_entry2] {
        let n = UInt32(truncatingIfNeeded: max(cpuCount, 1))
        let bits = coreIDBits(cpuCount)
        var out: [kvm_cpuid_entry2] = []
        var extended: Set<UInt32> = []
        for var e in entries {
            switch e.function {
            case 1:
                e.ebx = (e.ebx & 0x0000_FFFF) | (vcpuID << 24) | ((n > 1 ? UInt32(1) << bits : 1) << 16)
                if n > 1 { e.edx |= 1 << 28 } else { e.edx &= ~(1 << 28) }
            case 4:
                let level = (e.eax >> 5) & 7
                let sharing: UInt32 = level >= 3 ? n - 1 : 0
                e.eax = (e.eax & 0x3FFF) | (sharing & 0xFFF) << 14 | ((n - 1) & 0x3F) << 26
            case 0xB, 0x1F:
                // Rebuilt below, once per leaf.
                extended.insert(e.function)
                continue
            case 0x8000_0008:
                e.ecx = (e.ecx & ~0xFF) | ((n - 1) & 0xFF)
            default:
                break
            }
            out.append(e)
        }
        for leaf in extended.sorted() {
            for sub: UInt32 in 0...2 {
                var e = kvm_cpuid_entry2()
                e.function = leaf
                e.index = sub
                e.flags = UInt32(truncatingIfNeeded: KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
                e.edx = vcpuID
                switch sub {
                case 0: e.eax = 0; e.ebx = 1; e.ecx = 1 << 8          // SMT: one thread per core
                case 1: e.eax = bits; e.ebx = n; e.ecx = 2 << 8 | 1  // core: every vCPU
                default: e.ecx = sub                                 // no more levels
                }
                out.append(e)
            }
        }
        return out
    }

    /// The feature policy (what the guest may use).
    func features(_ entries: [kvm_cpuid_entry2], vcpuID: UInt32) -> [kvm_cpuid_entry2] {
        var out: [kvm_cpuid_entry2] = []
        for var e in entries {
            if minimal {
                switch e.function {
                case 1:
                    e.edx &= CPUIDPolicy.minimalLeaf1EDX
                    e.ecx = 1 << 31  // only "running under a hypervisor"
                    e.ebx = (e.ebx & 0x00FF_FFFF) | (vcpuID << 24)
                case 7:
                    e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0
                case 0xD:
                    continue
                case 0x8000_0001:
                    e.edx &= CPUIDPolicy.minimalExtEDX
                    e.ecx &= 1  // LAHF/SAHF in long mode
                default:
                    break
                }
                out.append(e)
                continue
            }
            switch e.function {
            case 1:
                // Initial APIC ID in EBX[31:24]; the hypervisor-present bit in ECX[31].
                e.ebx = (e.ebx & 0x00FF_FFFF) | (vcpuID << 24)
                e.ecx |= 1 << 31
                if hideXSAVE {
                    // FMA(12), XSAVE(26), OSXSAVE(27), AVX(28), F16C(29) all depend on XSAVE.
                    e.ecx &= ~((1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29))
                }
            case 7 where hideXSAVE:
                if e.index == 0 {
                    // AVX2, AVX-512 family, and AVX-only extensions (VAES, VPCLMULQDQ) need XSAVE state.
                    let ebxMask: UInt32 = (1 << 5) | (1 << 16) | (1 << 17) | (1 << 21) | (1 << 26)
                        | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31)
                    let ecxMask: UInt32 = (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11)
                        | (1 << 12) | (1 << 14)
                    let edxMask: UInt32 = (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23)
                        | (1 << 24) | (1 << 25)
                    e.ebx &= ~ebxMask
                    e.ecx &= ~ecxMask
                    e.edx &= ~edxMask
                } else if e.index == 1 {
                    e.eax &= ~((1 << 4) | (1 << 5))  // AVX-VNNI, AVX512_BF16
                }
            case 0xD where hideXSAVE:
                continue  // XSAVE state enumeration: gone with XSAVE.
            default:
                break
            }
            out.append(e)
        }
        return out
    }
}
