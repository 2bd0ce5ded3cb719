// CKVM: linux/kvm.h for Swift, plus what its macros and anonymous unions hide from Swift.
// The KVM_* request numbers are built by function-like _IO*/_IOR/_IOW macros, which Swift cannot
// import; each one swhv uses is re-exported here as a constant-returning inline function. The exit
// data of struct kvm_run sits in an anonymous union that Swift reaches only through copies, so the
// offsets of the fields swhv decodes are exported the same way (offsetof). Nothing else.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <stddef.h>
#include <sys/ioctl.h>

#define CKVM_REQ(name) static inline unsigned long CKVM_##name(void) { return (unsigned long)(name); }

// System ioctls (on the /dev/kvm fd)
CKVM_REQ(KVM_GET_API_VERSION)
CKVM_REQ(KVM_CREATE_VM)
CKVM_REQ(KVM_CHECK_EXTENSION)
CKVM_REQ(KVM_GET_VCPU_MMAP_SIZE)
CKVM_REQ(KVM_GET_SUPPORTED_CPUID)
CKVM_REQ(KVM_GET_MSR_INDEX_LIST)

// VM ioctls
CKVM_REQ(KVM_CREATE_VCPU)
CKVM_REQ(KVM_SET_USER_MEMORY_REGION)
CKVM_REQ(KVM_SET_TSS_ADDR)
CKVM_REQ(KVM_SET_IDENTITY_MAP_ADDR)
CKVM_REQ(KVM_CREATE_IRQCHIP)
CKVM_REQ(KVM_CREATE_PIT2)
CKVM_REQ(KVM_IRQ_LINE)
CKVM_REQ(KVM_SIGNAL_MSI)
CKVM_REQ(KVM_SET_GSI_ROUTING)
CKVM_REQ(KVM_IRQFD)
CKVM_REQ(KVM_IOEVENTFD)
CKVM_REQ(KVM_ENABLE_CAP)
CKVM_REQ(KVM_GET_DIRTY_LOG)
CKVM_REQ(KVM_CLEAR_DIRTY_LOG)

// vCPU ioctls
CKVM_REQ(KVM_RUN)
CKVM_REQ(KVM_GET_REGS)
CKVM_REQ(KVM_SET_REGS)
CKVM_REQ(KVM_GET_SREGS)
CKVM_REQ(KVM_SET_SREGS)
CKVM_REQ(KVM_GET_FPU)
CKVM_REQ(KVM_SET_FPU)
CKVM_REQ(KVM_SET_CPUID2)
CKVM_REQ(KVM_GET_MSRS)
CKVM_REQ(KVM_SET_MSRS)
CKVM_REQ(KVM_GET_LAPIC)
CKVM_REQ(KVM_SET_LAPIC)
CKVM_REQ(KVM_GET_TSC_KHZ)
CKVM_REQ(KVM_GET_VCPU_EVENTS)
CKVM_REQ(KVM_SET_VCPU_EVENTS)
CKVM_REQ(KVM_GET_XSAVE)
CKVM_REQ(KVM_SET_XSAVE)
CKVM_REQ(KVM_GET_DEBUGREGS)
CKVM_REQ(KVM_SET_DEBUGREGS)
CKVM_REQ(KVM_GET_MP_STATE)
CKVM_REQ(KVM_SET_MP_STATE)
CKVM_REQ(KVM_SET_SIGNAL_MASK)

// Pause/resume and snapshot: guest clocks (kvmclock, the TSC offset)
CKVM_REQ(KVM_GET_CLOCK)
CKVM_REQ(KVM_SET_CLOCK)
CKVM_REQ(KVM_HAS_DEVICE_ATTR)
CKVM_REQ(KVM_GET_DEVICE_ATTR)
CKVM_REQ(KVM_SET_DEVICE_ATTR)

#undef CKVM_REQ

#define CKVM_RUN_OFFSET(name, member) \
    static inline size_t CKVM_RUN_##name(void) { return offsetof(struct kvm_run, member); }

CKVM_RUN_OFFSET(EXIT_REASON, exit_reason)
CKVM_RUN_OFFSET(IO_DIRECTION, io.direction)
CKVM_RUN_OFFSET(IO_SIZE, io.size)
CKVM_RUN_OFFSET(IO_PORT, io.port)
CKVM_RUN_OFFSET(IO_COUNT, io.count)
CKVM_RUN_OFFSET(IO_DATA_OFFSET, io.data_offset)
CKVM_RUN_OFFSET(MMIO_PHYS_ADDR, mmio.phys_addr)
CKVM_RUN_OFFSET(MMIO_DATA, mmio.data)
CKVM_RUN_OFFSET(MMIO_LEN, mmio.len)
CKVM_RUN_OFFSET(MMIO_IS_WRITE, mmio.is_write)
CKVM_RUN_OFFSET(FAIL_ENTRY_REASON, fail_entry.hardware_entry_failure_reason)
CKVM_RUN_OFFSET(FAIL_ENTRY_CPU, fail_entry.cpu)
CKVM_RUN_OFFSET(INTERNAL_SUBERROR, internal.suberror)
CKVM_RUN_OFFSET(INTERNAL_NDATA, internal.ndata)
CKVM_RUN_OFFSET(INTERNAL_DATA, internal.data)
CKVM_RUN_OFFSET(EMULATION_FLAGS, emulation_failure.flags)
CKVM_RUN_OFFSET(EMULATION_INSN_SIZE, emulation_failure.insn_size)
CKVM_RUN_OFFSET(EMULATION_INSN_BYTES, emulation_failure.insn_bytes)
CKVM_RUN_OFFSET(SYSTEM_EVENT_TYPE, system_event.type)

#undef CKVM_RUN_OFFSET
#endif
