// CKVM: linux/kvm.h for Swift, plus the ioctl request numbers.
// The KVM_* request numbers are built by function-like _IO*/_IOR/_IOW macros, which Swift cannot
// import; each one swhv uses is re-exported here as a constant-returning inline function. Nothing else.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
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

#undef CKVM_REQ
#endif
