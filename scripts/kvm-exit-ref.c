// kvm-exit-ref: runs one of swhv's flat test guests (Tests/Guests/*.asm) on raw KVM ioctls.
//
// Two jobs:
//  * the reference for swhv's VM-exit benchmark: the same guest, the same exits, no Swift in the way;
//  * a probe of what this host's /dev/kvm supports (--probe), e.g. kvm-pvm's limits.
//
// Build:  gcc -O2 -Wall -o .build-guests/kvm-exit-ref scripts/kvm-exit-ref.c   (scripts/build-guests does it)
// Usage:  kvm-exit-ref [options] guest.bin
//           -l ADDR   load address (default 0x1000); entry is real mode CS=0 IP=ADDR SP=0x8000
//           -m MIB    guest RAM size in MiB at guest-physical 0 (default 4)
//           -n N      writes N as a little-endian u32 at guest-physical 0x500 (userspace.bin's count)
//           -t SECS   wall-clock limit; the run is interrupted through immediate_exit (default 60)
//           -q        do not echo serial output to stdout
//           -i        create the in-kernel irqchip + PIT first (HLT then blocks in the kernel)
//           -c        give the guest a minimal CPUID table (see minimize_cpuid)
//           -e        work around kvm-pvm's CPL0 INT3/INT n emulation failure: step over the instruction
//                     and inject the vector with KVM_SET_VCPU_EVENTS (see try_inject_soft_int)
//         kvm-exit-ref --probe
//
// The guest sees: a 16550 at 0x3F8 (THR output, LSR always 0x60), an i8042 whose reset command
// (0xFE to port 0x64) ends the run as "reset", port 0x80 as the benchmark port (each write is counted
// in a bucket per written value: the guests write 0 from CPL0 and 3 from CPL3), and a test MMIO device
// at 0xD0000000-0xD0000FFF: writes are logged, offset 4 reads 0x12345678, other offsets read 0.
//
// Output: serial bytes on stdout; a summary on stderr, last line "stop: <reason>".
// Exit status: 0 reset/halted/shutdown, 2 usage, 3 KVM setup error, 4 failure/internal error, 5 timeout.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define COM1 0x3F8
#define BENCH_PORT 0x80
#define MMIO_BASE 0xD0000000ull
#define MMIO_SIZE 0x1000ull
#define MMIO_MAGIC 0x12345678u
#define PARAM_ADDR 0x500

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "kvm-exit-ref: %s: %s\n", what, strerror(errno));
    exit(3);
}

// ---------------------------------------------------------------------------------------------
// A VM with one vCPU and RAM at 0.

struct vm {
    int kvm, vm, vcpu;
    uint8_t *mem;
    size_t mem_size;
    struct kvm_run *run;
    size_t run_size;
};

static struct kvm_run *volatile g_run;   // for the SIGALRM handler only
static volatile sig_atomic_t g_timed_out;

static void on_alarm(int sig) {
    (void)sig;
    g_timed_out = 1;
    if (g_run) g_run->immediate_exit = 1;
}

static int g_minimal_cpuid;   // -c

// fpu tsc msr pae cx8 apic sep pge cmov pat fxsr sse sse2 / hypervisor; syscall nx lm; lahf. Leaf 7 and
// XSAVE leaves are cleared.
static void minimize_cpuid(struct kvm_cpuid2 *c) {
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            e->edx &= (1u << 0) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) | (1u << 11) |
                      (1u << 13) | (1u << 15) | (1u << 16) | (1u << 24) | (1u << 25) | (1u << 26);
            e->ecx &= (1u << 31);
            break;
        case 7: case 0xd: e->eax = e->ebx = e->ecx = e->edx = 0; break;
        case 0x80000001:
            e->edx &= (1u << 11) | (1u << 20) | (1u << 29);
            e->ecx &= 1u;
            break;
        default: break;
        }
    }
}

static int vm_create(struct vm *v, size_t mem_size, int irqchip) {
    memset(v, 0, sizeof *v);
    v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (v->kvm < 0) die("open /dev/kvm");
    v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
    if (v->vm < 0) die("KVM_CREATE_VM");
    // The TSS/identity-map areas only matter for VMX real-mode emulation; harmless elsewhere.
    if (ioctl(v->vm, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0)
        fprintf(stderr, "note: KVM_SET_TSS_ADDR failed: %s\n", strerror(errno));
    if (irqchip) {
        if (ioctl(v->vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
        struct kvm_pit_config pit = {.flags = 0};
        if (ioctl(v->vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
    }
    v->mem_size = mem_size;
    v->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v->mem == MAP_FAILED) die("mmap guest RAM");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size, .userspace_addr = (uintptr_t)v->mem};
    if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
    if (v->vcpu < 0) die("KVM_CREATE_VCPU");
    int sz = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz < 0) die("KVM_GET_VCPU_MMAP_SIZE");
    v->run_size = (size_t)sz;
    v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
    if (v->run == MAP_FAILED) die("mmap kvm_run");

    // Give the guest what KVM supports, or (-c) a minimal table: what a Linux guest needs and nothing
    // that KVM's instruction emulator cannot run (kvm-pvm emulates guest CPL0 with it).
    struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[256]; } cpuid = {.h.nent = 256};
    if (ioctl(v->kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
    if (g_minimal_cpuid) minimize_cpuid(&cpuid.h);
    if (ioctl(v->vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
    return 0;
}

static void vm_destroy(struct vm *v) {
    munmap(v->run, v->run_size);
    munmap(v->mem, v->mem_size);
    close(v->vcpu);
    close(v->vm);
    close(v->kvm);
}

static void set_real_mode(struct vm *v, uint64_t ip, uint64_t sp) {
    struct kvm_sregs s;
    if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    struct kvm_segment *segs[] = {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss};
    for (int i = 0; i < 6; i++) {
        segs[i]->base = 0;
        segs[i]->selector = 0;
        segs[i]->limit = 0xffff;
        segs[i]->present = 1;
        segs[i]->s = 1;
        segs[i]->type = i == 0 ? 0xb : 0x3;
        segs[i]->dpl = 0;
        segs[i]->db = 0;
        segs[i]->l = 0;
        segs[i]->g = 0;
    }
    s.cr0 = 0x10;
    s.cr3 = 0;
    s.cr4 = 0;
    s.efer = 0;
    if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS (real mode)");
    struct kvm_regs r = {.rip = ip, .rsp = sp, .rflags = 2};
    if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
}

static void flat_seg(struct kvm_segment *g, uint16_t sel, uint8_t type, int code64) {
    memset(g, 0, sizeof *g);
    g->base = 0;
    g->limit = 0xffffffff;
    g->selector = sel;
    g->type = type;
    g->present = 1;
    g->s = 1;
    g->g = 1;
    g->l = code64;
    g->db = !code64;
}

// Direct 32-bit protected-mode entry (flat segments, no paging), as a loader would set it up.
static void set_protected_mode(struct vm *v, uint64_t ip, uint64_t sp) {
    struct kvm_sregs s;
    if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    uint64_t gdt[3] = {0, 0x00CF9B000000FFFFull, 0x00CF93000000FFFFull};
    memcpy(v->mem + 0x9000, gdt, sizeof gdt);
    s.gdt.base = 0x9000;
    s.gdt.limit = sizeof gdt - 1;
    flat_seg(&s.cs, 0x08, 0xb, 0);
    flat_seg(&s.ds, 0x10, 0x3, 0);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.cr0 = 0x11;   // PE | ET
    s.cr4 = 0;
    s.efer = 0;
    if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS (protected mode)");
    struct kvm_regs r = {.rip = ip, .rsp = sp, .rflags = 2};
    if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
}

// Direct 64-bit entry: identity-mapped first 1 GiB with 2 MiB pages at 0xA000 (the Linux 64-bit boot
// protocol's shape: paging, PAE, LME/LMA, flat 64-bit CS).
static void set_long_mode(struct vm *v, uint64_t ip, uint64_t sp) {
    uint64_t *pml4 = (uint64_t *)(v->mem + 0xA000), *pdpt = (uint64_t *)(v->mem + 0xB000),
             *pd = (uint64_t *)(v->mem + 0xC000);
    memset(pml4, 0, 0x3000);
    pml4[0] = 0xB000 | 3;
    pdpt[0] = 0xC000 | 3;
    for (uint64_t i = 0; i < 512; i++) pd[i] = (i << 21) | 0x83;
    // 0xD0000000 (the test MMIO device) lives in the 4th GiB: map it too.
    pdpt[3] = 0xD000 | 3;
    uint64_t *pd3 = (uint64_t *)(v->mem + 0xD000);
    for (uint64_t i = 0; i < 512; i++) pd3[i] = ((3ull << 30) + (i << 21)) | 0x83;

    struct kvm_sregs s;
    if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    uint64_t gdt[3] = {0, 0x00AF9B000000FFFFull, 0x00CF93000000FFFFull};
    memcpy(v->mem + 0x9000, gdt, sizeof gdt);
    s.gdt.base = 0x9000;
    s.gdt.limit = sizeof gdt - 1;
    flat_seg(&s.cs, 0x08, 0xb, 1);
    flat_seg(&s.ds, 0x10, 0x3, 0);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.cr3 = 0xA000;
    s.cr4 = 0x20;                   // PAE
    s.cr0 = 0x80000011;             // PG | ET | PE
    s.efer = 0x500;                 // LME | LMA
    if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS (long mode)");
    struct kvm_regs r = {.rip = ip, .rsp = sp, .rflags = 2};
    if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
}

// ---------------------------------------------------------------------------------------------
// The run loop and the few devices the guests use.

enum stop { STOP_NONE, STOP_RESET, STOP_HALTED, STOP_HALTED_IF, STOP_SHUTDOWN, STOP_FAIL, STOP_TIMEOUT,
            STOP_MAX_EXITS };
static const char *stop_names[] = {"none", "reset", "halted forever (hlt with IF=0)",
                                   "halted with IF=1 (no interrupt source)", "shutdown (triple fault)",
                                   "failure", "timeout", "exit limit reached"};

struct bucket {
    uint64_t count;
    double first, last;
};

struct stats {
    uint64_t exits, by_reason[64], io_exits, io_string_exits, mmio_exits;
    struct bucket bench[256];
    uint8_t lcr;
    int quiet;
    double start, end;
    uint8_t serial[65536];
    size_t serial_len;
};

static void serial_byte(struct stats *st, uint8_t b) {
    if (st->serial_len < sizeof st->serial) st->serial[st->serial_len++] = b;
    if (!st->quiet) {
        fputc(b, stdout);
        if (b == '\n') fflush(stdout);
    }
}

static uint32_t port_in(struct stats *st, uint16_t port) {
    switch (port) {
    case COM1 + 2: return 0xC1;          // IIR: no interrupt pending, FIFOs enabled
    case COM1 + 3: return st->lcr;
    case COM1 + 5: return 0x60;          // LSR: THR empty, transmitter empty
    case COM1 + 0: case COM1 + 1: case COM1 + 4: case COM1 + 6: case COM1 + 7: return 0;
    default: return 0xffffffff;
    }
}

// Returns a stop reason or STOP_NONE.
static enum stop port_out(struct stats *st, uint16_t port, uint32_t val, double t) {
    switch (port) {
    case COM1:
        if (!(st->lcr & 0x80)) serial_byte(st, (uint8_t)val);
        break;
    case COM1 + 3:
        st->lcr = (uint8_t)val;
        break;
    case 0x64:
        if ((val & 0xff) == 0xfe) return STOP_RESET;
        break;
    case BENCH_PORT: {
        struct bucket *b = &st->bench[val & 0xff];
        if (b->count++ == 0) b->first = t;
        b->last = t;
        break;
    }
    default: break;
    }
    return STOP_NONE;
}

static void dump_state(struct vm *v) {
    struct kvm_regs r;
    struct kvm_sregs s;
    if (ioctl(v->vcpu, KVM_GET_REGS, &r) == 0)
        fprintf(stderr, "  rip=%llx rsp=%llx rflags=%llx rax=%llx rcx=%llx\n", r.rip, r.rsp, r.rflags, r.rax,
                r.rcx);
    if (ioctl(v->vcpu, KVM_GET_SREGS, &s) == 0)
        fprintf(stderr, "  cs=%x(base %llx l%d db%d dpl%d) cr0=%llx cr3=%llx cr4=%llx efer=%llx\n", s.cs.selector,
                s.cs.base, s.cs.l, s.cs.db, s.cs.dpl, s.cr0, s.cr3, s.cr4, s.efer);
}

static int g_inject_soft_int;   // -e
static uint64_t g_soft_int_injections;

// kvm-pvm emulates guest CPL0, and KVM's instruction emulator does not implement INT3/INT n/INTO outside
// real mode (KVM_EXIT_INTERNAL_ERROR, suberror 1 = emulation failure, with the instruction bytes).
// Workaround: advance RIP past the instruction and inject the vector as an exception (#BP/#OF) or as an
// interrupt, so the guest's handler sees the return address after the instruction, as on hardware.
// (Gate-DPL checks for CPL3 callers are not needed here: CPL3 runs natively and never gets here.)
static int try_inject_soft_int(struct vm *v) {
    struct kvm_run *run = v->run;
    if (run->internal.suberror != KVM_INTERNAL_ERROR_EMULATION || run->internal.ndata < 3 ||
        !(run->internal.data[0] & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
        return 0;
    uint8_t insn[16];
    memcpy(insn, &run->internal.data[1], 16);   // insn[0] = length, insn[1..] = bytes
    int len, vector, is_exception;
    switch (insn[1]) {
    case 0xCC: len = 1; vector = 3; is_exception = 1; break;
    case 0xCE: len = 1; vector = 4; is_exception = 1; break;
    case 0xCD: len = 2; vector = insn[2]; is_exception = vector < 32; break;
    default: return 0;
    }
    struct kvm_regs r;
    struct kvm_vcpu_events ev;
    if (ioctl(v->vcpu, KVM_GET_REGS, &r) < 0 || ioctl(v->vcpu, KVM_GET_VCPU_EVENTS, &ev) < 0) return 0;
    r.rip += len;
    if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0) return 0;
    ev.flags = 0;
    if (is_exception) {
        ev.exception.injected = 1;
        ev.exception.nr = (uint8_t)vector;
        ev.exception.has_error_code = 0;
    } else {
        ev.interrupt.injected = 1;
        ev.interrupt.nr = (uint8_t)vector;
        ev.interrupt.soft = 0;
    }
    if (ioctl(v->vcpu, KVM_SET_VCPU_EVENTS, &ev) < 0) {
        fprintf(stderr, "KVM_SET_VCPU_EVENTS: %s\n", strerror(errno));
        return 0;
    }
    g_soft_int_injections++;
    return 1;
}

static enum stop run_vcpu(struct vm *v, struct stats *st, uint64_t max_exits) {
    struct kvm_run *run = v->run;
    g_run = run;
    st->start = now_s();
    enum stop stop = STOP_NONE;
    while (stop == STOP_NONE) {
        int rc = ioctl(v->vcpu, KVM_RUN, 0);
        double t = now_s();
        if (rc < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                if (g_timed_out) { dump_state(v); stop = STOP_TIMEOUT; break; }
                continue;
            }
            fprintf(stderr, "KVM_RUN: %s\n", strerror(errno));
            dump_state(v);
            stop = STOP_FAIL;
            break;
        }
        st->exits++;
        st->by_reason[run->exit_reason & 63]++;
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            st->io_exits++;
            if (run->io.count > 1) st->io_string_exits++;
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            for (uint32_t i = 0; i < run->io.count && stop == STOP_NONE; i++, data += run->io.size) {
                if (run->io.direction == KVM_EXIT_IO_OUT) {
                    uint32_t val = 0;
                    memcpy(&val, data, run->io.size);
                    stop = port_out(st, run->io.port, val, t);
                } else {
                    uint32_t val = port_in(st, run->io.port);
                    memcpy(data, &val, run->io.size);
                }
            }
            break;
        }
        case KVM_EXIT_MMIO: {
            st->mmio_exits++;
            uint64_t a = run->mmio.phys_addr;
            if (run->mmio.is_write) {
                uint64_t val = 0;
                memcpy(&val, run->mmio.data, run->mmio.len);
                if (a - MMIO_BASE < MMIO_SIZE) {
                    struct bucket *b = &st->bench[0xfe];   // MMIO writes share one bucket (0xfe)
                    if (b->count++ == 0) {
                        b->first = t;
                        fprintf(stderr, "mmio write 0x%llx size %u value 0x%llx\n", (unsigned long long)a,
                                run->mmio.len, (unsigned long long)val);
                    }
                    b->last = t;
                } else {
                    fprintf(stderr, "mmio write to unclaimed 0x%llx ignored\n", (unsigned long long)a);
                }
            } else {
                uint64_t val = ~0ull;
                if (a - MMIO_BASE < MMIO_SIZE) val = (a - MMIO_BASE == 4) ? MMIO_MAGIC : 0;
                memcpy(run->mmio.data, &val, run->mmio.len);
                fprintf(stderr, "mmio read 0x%llx size %u -> 0x%llx\n", (unsigned long long)a, run->mmio.len,
                        (unsigned long long)val & (run->mmio.len == 8 ? ~0ull : ((1ull << (8 * run->mmio.len)) - 1)));
            }
            break;
        }
        case KVM_EXIT_HLT: {
            struct kvm_regs r;
            if (ioctl(v->vcpu, KVM_GET_REGS, &r) < 0) die("KVM_GET_REGS");
            stop = (r.rflags & 0x200) ? STOP_HALTED_IF : STOP_HALTED;
            break;
        }
        case KVM_EXIT_SHUTDOWN: stop = STOP_SHUTDOWN; break;
        case KVM_EXIT_INTR:
            if (g_timed_out) stop = STOP_TIMEOUT;
            break;
        case KVM_EXIT_FAIL_ENTRY:
            fprintf(stderr, "KVM_EXIT_FAIL_ENTRY: hardware reason 0x%llx\n",
                    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
            dump_state(v);
            stop = STOP_FAIL;
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            if (g_inject_soft_int && try_inject_soft_int(v)) break;
            fprintf(stderr, "KVM_EXIT_INTERNAL_ERROR: suberror %u, ndata %u:", run->internal.suberror,
                    run->internal.ndata);
            for (uint32_t i = 0; i < run->internal.ndata && i < 16; i++)
                fprintf(stderr, " %llx", (unsigned long long)run->internal.data[i]);
            fprintf(stderr, "\n");
            dump_state(v);
            stop = STOP_FAIL;
            break;
        case KVM_EXIT_SYSTEM_EVENT:
            fprintf(stderr, "KVM_EXIT_SYSTEM_EVENT type %u\n", run->system_event.type);
            stop = run->system_event.type == KVM_SYSTEM_EVENT_RESET ? STOP_RESET : STOP_SHUTDOWN;
            break;
        default:
            fprintf(stderr, "unhandled exit reason %u\n", run->exit_reason);
            dump_state(v);
            stop = STOP_FAIL;
        }
        if (stop == STOP_NONE && max_exits && st->exits >= max_exits) stop = STOP_MAX_EXITS;
    }
    st->end = now_s();
    g_run = NULL;
    return stop;
}

static void print_stats(struct stats *st, enum stop stop) {
    double dt = st->end - st->start;
    fflush(stdout);
    fprintf(stderr, "exits: %llu in %.3f s (%.0f exits/s); io %llu (string %llu), mmio %llu, hlt %llu\n",
            (unsigned long long)st->exits, dt, dt > 0 ? st->exits / dt : 0.0, (unsigned long long)st->io_exits,
            (unsigned long long)st->io_string_exits, (unsigned long long)st->mmio_exits,
            (unsigned long long)st->by_reason[KVM_EXIT_HLT]);
    for (int i = 0; i < 256; i++) {
        struct bucket *b = &st->bench[i];
        if (b->count < 2) continue;
        double span = b->last - b->first;
        const char *what = i == 0xfe ? "mmio 0xD0000000 writes" : i == 3 ? "port 0x80 value 3 (CPL3)"
                         : i == 0 ? "port 0x80 value 0 (CPL0)" : i == 5 ? "port 0x80 value 5" : i == 7 ? "port 0x80 value 7" : "port 0x80 writes";
        fprintf(stderr, "bench %s: %llu exits in %.3f s = %.0f exits/s, %.2f us/exit\n", what,
                (unsigned long long)b->count, span, span > 0 ? (b->count - 1) / span : 0.0,
                b->count > 1 ? span / (b->count - 1) * 1e6 : 0.0);
    }
    if (g_soft_int_injections)
        fprintf(stderr, "software interrupts injected after emulation failures: %llu\n",
                (unsigned long long)g_soft_int_injections);
    fprintf(stderr, "stop: %s\n", stop_names[stop]);
}

// ---------------------------------------------------------------------------------------------
// --probe: what this /dev/kvm supports.

#define CAP(x) {#x, KVM_CAP_##x}
static const struct { const char *name; int cap; } caps[] = {
    CAP(IRQCHIP), CAP(HLT), CAP(USER_MEMORY), CAP(SET_TSS_ADDR), CAP(EXT_CPUID), CAP(CLOCKSOURCE),
    CAP(NR_VCPUS), CAP(MAX_VCPUS), CAP(MAX_VCPU_ID), CAP(NR_MEMSLOTS), CAP(PIT), CAP(PIT2), CAP(PIT_STATE2),
    CAP(IOEVENTFD), CAP(IRQFD), CAP(IRQ_ROUTING), CAP(IRQ_INJECT_STATUS), CAP(SET_IDENTITY_MAP_ADDR),
    CAP(ADJUST_CLOCK), CAP(XSAVE), CAP(XCRS), CAP(TSC_CONTROL), CAP(GET_TSC_KHZ), CAP(TSC_DEADLINE_TIMER),
    CAP(IMMEDIATE_EXIT), CAP(SPLIT_IRQCHIP), CAP(X2APIC_API), CAP(SIGNAL_MSI), CAP(READONLY_MEM),
    CAP(COALESCED_MMIO), CAP(COALESCED_PIO), CAP(SYNC_REGS), CAP(VCPU_EVENTS), CAP(DEBUGREGS),
    CAP(KVMCLOCK_CTRL), CAP(MP_STATE), CAP(SET_GUEST_DEBUG), CAP(X86_ROBUST_SINGLESTEP), CAP(MSI_DEVID),
    CAP(X86_USER_SPACE_MSR), CAP(EXIT_HYPERCALL), CAP(X86_DISABLE_EXITS), CAP(IOAPIC_POLARITY_IGNORED),
    CAP(ENABLE_CAP), CAP(ENABLE_CAP_VM), CAP(CHECK_EXTENSION_VM), CAP(DIRTY_LOG_RING),
    CAP(MANUAL_DIRTY_LOG_PROTECT2), CAP(X86_TRIPLE_FAULT_EVENT), CAP(XSAVE2), CAP(SYS_ATTRIBUTES),
    CAP(PMU_CAPABILITY), CAP(X86_NOTIFY_VMEXIT), CAP(HYPERV),
    CAP(MCE), CAP(PCI_SEGMENT), CAP(INTERNAL_ERROR_DATA), CAP(EXIT_ON_EMULATION_FAILURE),
    CAP(X86_BUS_LOCK_EXIT), CAP(SGX_ATTRIBUTE), CAP(VM_COPY_ENC_CONTEXT_FROM), CAP(NESTED_STATE),
    CAP(HALT_POLL), CAP(USER_NMI), CAP(SET_BOOT_CPU_ID), CAP(GET_MSR_FEATURES), CAP(VAPIC),
};

static void cpuid_reg_name(char *out, uint32_t r) { memcpy(out, &r, 4); out[4] = 0; }

static void probe_cpuid(int kvm) {
    struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[256]; } c = {.h.nent = 256};
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &c) < 0) { printf("KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno)); return; }
    printf("KVM_GET_SUPPORTED_CPUID: %u entries\n", c.h.nent);
    for (uint32_t i = 0; i < c.h.nent; i++) {
        struct kvm_cpuid_entry2 *e = &c.e[i];
        printf("  leaf %08x.%u flags %x: eax=%08x ebx=%08x ecx=%08x edx=%08x", e->function, e->index, e->flags,
               e->eax, e->ebx, e->ecx, e->edx);
        if (e->function == 0) {
            char a[5], b[5], d[5];
            cpuid_reg_name(a, e->ebx); cpuid_reg_name(d, e->edx); cpuid_reg_name(b, e->ecx);
            printf("  \"%s%s%s\"", a, d, b);
        } else if (e->function == 0x40000000) {
            char a[5], b[5], d[5];
            cpuid_reg_name(a, e->ebx); cpuid_reg_name(b, e->ecx); cpuid_reg_name(d, e->edx);
            printf("  \"%s%s%s\"", a, b, d);
        } else if (e->function == 1) {
            printf("  [xsave %d osxsave %d avx %d x2apic %d tsc-deadline %d hypervisor %d apic %d]",
                   !!(e->ecx & (1u << 26)), !!(e->ecx & (1u << 27)), !!(e->ecx & (1u << 28)),
                   !!(e->ecx & (1u << 21)), !!(e->ecx & (1u << 24)), !!(e->ecx & (1u << 31)), !!(e->edx & (1u << 9)));
        }
        printf("\n");
    }
    struct { struct kvm_msr_list h; uint32_t idx[1024]; } ml = {.h.nmsrs = 1024};
    if (ioctl(kvm, KVM_GET_MSR_INDEX_LIST, &ml) < 0) printf("KVM_GET_MSR_INDEX_LIST: %s\n", strerror(errno));
    else printf("KVM_GET_MSR_INDEX_LIST: %u MSRs\n", ml.h.nmsrs);
}

// Creates a throw-away VM and reports whether an ioctl succeeds.
static void probe_vm_ioctls(int kvm) {
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) { printf("KVM_CREATE_VM: %s\n", strerror(errno)); return; }
    printf("KVM_SET_TSS_ADDR(0xfffbd000): %s\n", ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0 ? strerror(errno) : "ok");
    uint64_t idmap = 0xfffbc000;
    printf("KVM_SET_IDENTITY_MAP_ADDR(0xfffbc000): %s\n",
           ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 ? strerror(errno) : "ok");
    int irq = ioctl(vm, KVM_CREATE_IRQCHIP, 0);
    printf("KVM_CREATE_IRQCHIP: %s\n", irq < 0 ? strerror(errno) : "ok");
    struct kvm_pit_config pit = {.flags = 0};
    printf("KVM_CREATE_PIT2: %s\n", ioctl(vm, KVM_CREATE_PIT2, &pit) < 0 ? strerror(errno) : "ok");
    if (irq == 0) {
        struct kvm_irq_level l = {.irq = 4, .level = 1};
        printf("KVM_IRQ_LINE(4,1): %s\n", ioctl(vm, KVM_IRQ_LINE, &l) < 0 ? strerror(errno) : "ok");
        l.level = 0;
        ioctl(vm, KVM_IRQ_LINE, &l);
        int efd = eventfd(0, EFD_CLOEXEC);
        struct kvm_irqfd irqfd = {.fd = (uint32_t)efd, .gsi = 5};
        printf("KVM_IRQFD(gsi 5): %s\n", ioctl(vm, KVM_IRQFD, &irqfd) < 0 ? strerror(errno) : "ok");
        int efd2 = eventfd(0, EFD_CLOEXEC);
        struct kvm_ioeventfd io = {.addr = 0xD0000100, .len = 4, .fd = efd2};
        printf("KVM_IOEVENTFD(mmio 0xD0000100): %s\n", ioctl(vm, KVM_IOEVENTFD, &io) < 0 ? strerror(errno) : "ok");
        struct kvm_ioeventfd iop = {.addr = 0x510, .len = 2, .fd = efd2, .flags = KVM_IOEVENTFD_FLAG_PIO};
        printf("KVM_IOEVENTFD(pio 0x510): %s\n", ioctl(vm, KVM_IOEVENTFD, &iop) < 0 ? strerror(errno) : "ok");
    }
    struct kvm_clock_data cd = {0};
    printf("KVM_GET_CLOCK: %s\n", ioctl(vm, KVM_GET_CLOCK, &cd) < 0 ? strerror(errno) : "ok");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    printf("KVM_CREATE_VCPU: %s\n", vcpu < 0 ? strerror(errno) : "ok");
    if (irq == 0 && vcpu >= 0) {
        // Needs a vCPU to deliver to: returns the number of CPUs that got it (0 = none, < 0 = error).
        struct kvm_msi msi = {.address_lo = 0xfee00000, .data = 0x30};
        int r = ioctl(vm, KVM_SIGNAL_MSI, &msi);
        printf("KVM_SIGNAL_MSI(dest APIC 0, vector 0x30): %s (rc %d)\n", r < 0 ? strerror(errno) : "ok", r);
    }
    if (vcpu >= 0) {
        int khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0);
        printf("KVM_GET_TSC_KHZ: %d%s\n", khz, khz < 0 ? " (error)" : "");
        struct kvm_fpu fpu;
        printf("KVM_GET_FPU: %s\n", ioctl(vcpu, KVM_GET_FPU, &fpu) < 0 ? strerror(errno) : "ok");
        struct kvm_xsave xs;
        printf("KVM_GET_XSAVE: %s\n", ioctl(vcpu, KVM_GET_XSAVE, &xs) < 0 ? strerror(errno) : "ok");
        struct kvm_lapic_state la;
        printf("KVM_GET_LAPIC: %s\n", ioctl(vcpu, KVM_GET_LAPIC, &la) < 0 ? strerror(errno) : "ok");
        struct kvm_mp_state mp;
        int r = ioctl(vcpu, KVM_GET_MP_STATE, &mp);
        printf("KVM_GET_MP_STATE: %s (state %u)\n", r < 0 ? strerror(errno) : "ok", r < 0 ? 0 : mp.mp_state);
        struct kvm_vcpu_events ev;
        printf("KVM_GET_VCPU_EVENTS: %s\n", ioctl(vcpu, KVM_GET_VCPU_EVENTS, &ev) < 0 ? strerror(errno) : "ok");
        struct kvm_sregs s;
        if (ioctl(vcpu, KVM_GET_SREGS, &s) == 0)
            printf("reset sregs: cs=%x base %llx, cr0=%llx, apic_base=%llx\n", s.cs.selector, s.cs.base, s.cr0,
                   s.apic_base);
        close(vcpu);
    }
    close(vm);
}

// Tiny code snippets, entered directly in each CPU mode. Each prints two bytes and halts with IF=0.
static const uint8_t snip_real[] = {0xBA, 0xF8, 0x03, 0xB0, 'R', 0xEE, 0xB0, 10, 0xEE, 0xFA, 0xF4};
static const uint8_t snip_32[] = {0x66, 0xBA, 0xF8, 0x03, 0xB0, 'P', 0xEE, 0xB0, 10, 0xEE, 0xFA, 0xF4};
static const uint8_t snip_64[] = {0x66, 0xBA, 0xF8, 0x03, 0xB0, 'L', 0xEE, 0xB0, 10, 0xEE, 0xFA, 0xF4};

static void probe_entry(const char *name, void (*set)(struct vm *, uint64_t, uint64_t), const uint8_t *code,
                        size_t len, int irqchip) {
    struct vm v;
    struct stats *st = calloc(1, sizeof *st);
    vm_create(&v, 4 << 20, irqchip);
    memcpy(v.mem + 0x1000, code, len);
    set(&v, 0x1000, 0x8000);
    st->quiet = 1;
    alarm(5);
    enum stop stop = run_vcpu(&v, st, 100);
    alarm(0);
    g_timed_out = 0;
    printf("entry %-10s%s: serial \"%.*s\" exits %llu, stop: %s\n", name, irqchip ? " +irqchip" : "",
           (int)(st->serial_len && st->serial[st->serial_len - 1] == '\n' ? st->serial_len - 1 : st->serial_len),
           st->serial, (unsigned long long)st->exits, stop_names[stop]);
    free(st);
    vm_destroy(&v);
}

// Long-mode micro benchmarks: N port writes, N MMIO writes, and a 2-instruction loop of N iterations.
static void probe_bench(const char *name, const uint8_t *code, size_t len, uint32_t n) {
    struct vm v;
    struct stats *st = calloc(1, sizeof *st);
    vm_create(&v, 4 << 20, 0);
    memcpy(v.mem + 0x1000, code, len);
    memcpy(v.mem + 0x1001, &n, 4);  // every snippet starts with mov ecx, imm32
    set_long_mode(&v, 0x1000, 0x8000);
    st->quiet = 1;
    alarm(30);
    double t0 = now_s();
    enum stop stop = run_vcpu(&v, st, 0);
    double dt = now_s() - t0;
    alarm(0);
    g_timed_out = 0;
    printf("bench %-28s N=%u: %.3f s, %llu exits, %.0f exits/s, %.2f us per iteration; stop: %s\n", name, n, dt,
           (unsigned long long)st->exits, st->exits / dt, dt / n * 1e6, stop_names[stop]);
    free(st);
    vm_destroy(&v);
}

static const uint8_t bench_port[] = {0xB9, 0, 0, 0, 0, 0x66, 0xBA, 0x80, 0x00, 0x31, 0xC0,
                                     0xEE, 0xFF, 0xC9, 0x75, 0xFB, 0xFA, 0xF4};
static const uint8_t bench_mmio[] = {0xB9, 0, 0, 0, 0, 0xBF, 0x00, 0x00, 0x00, 0xD0,
                                     0x89, 0x07, 0xFF, 0xC9, 0x75, 0xFA, 0xFA, 0xF4};
static const uint8_t bench_loop[] = {0xB9, 0, 0, 0, 0, 0xFF, 0xC9, 0x75, 0xFC, 0xFA, 0xF4};

// cli; hlt with the in-kernel irqchip: KVM_RUN blocks in the kernel. Check that SIGALRM + immediate_exit
// get us out (the mechanism a VMM uses to stop a vCPU).
static void probe_kick(void) {
    struct vm v;
    struct stats *st = calloc(1, sizeof *st);
    vm_create(&v, 4 << 20, 1);
    static const uint8_t code[] = {0xFA, 0xF4, 0xEB, 0xFC};
    memcpy(v.mem + 0x1000, code, sizeof code);
    set_real_mode(&v, 0x1000, 0x8000);
    st->quiet = 1;
    timer_t tm;
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGALRM};
    timer_create(CLOCK_MONOTONIC, &sev, &tm);
    struct itimerspec its = {.it_value = {.tv_nsec = 300 * 1000 * 1000}};
    timer_settime(tm, 0, &its, NULL);
    double t0 = now_s();
    enum stop stop = run_vcpu(&v, st, 0);
    printf("kick: cli;hlt with irqchip blocked in KVM_RUN; SIGALRM after 0.3 s -> returned after %.3f s, "
           "exits %llu, stop: %s\n", now_s() - t0, (unsigned long long)st->exits, stop_names[stop]);
    timer_delete(tm);
    g_timed_out = 0;
    free(st);
    vm_destroy(&v);
}

static int probe(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    printf("KVM_GET_API_VERSION: %d\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
    printf("KVM_GET_VCPU_MMAP_SIZE: %d\n", ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0));
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        printf("KVM_CAP_%-26s = %d\n", caps[i].name, ioctl(kvm, KVM_CHECK_EXTENSION, caps[i].cap));
    probe_cpuid(kvm);
    probe_vm_ioctls(kvm);
    close(kvm);
    fflush(stdout);
    probe_entry("real", set_real_mode, snip_real, sizeof snip_real, 0);
    probe_entry("protected", set_protected_mode, snip_32, sizeof snip_32, 0);
    probe_entry("long", set_long_mode, snip_64, sizeof snip_64, 0);
    probe_entry("real", set_real_mode, snip_real, sizeof snip_real, 1);
    probe_entry("long", set_long_mode, snip_64, sizeof snip_64, 1);
    fflush(stdout);
    probe_kick();
    fflush(stdout);
    probe_bench("out 0x80 (CPL0, long mode)", bench_port, sizeof bench_port, 20000);
    probe_bench("mmio write (CPL0, long mode)", bench_mmio, sizeof bench_mmio, 20000);
    probe_bench("dec;jnz loop (CPL0)", bench_loop, sizeof bench_loop, 2000000);
    return 0;
}

// ---------------------------------------------------------------------------------------------

static int usage(void) {
    fprintf(stderr, "usage: kvm-exit-ref [-l loadaddr] [-m MiB] [-n N] [-t secs] [-q] [-i] [-e] [-c] guest.bin\n"
                    "       kvm-exit-ref --probe\n");
    return 2;
}

int main(int argc, char **argv) {
    struct sigaction sa = {.sa_handler = on_alarm};   // no SA_RESTART: KVM_RUN must see EINTR
    sigaction(SIGALRM, &sa, NULL);
    if (argc == 2 && strcmp(argv[1], "--probe") == 0) return probe();

    uint64_t load = 0x1000, mib = 4;
    long n = -1;
    unsigned timeout = 60;
    int quiet = 0, irqchip = 0, opt;
    while ((opt = getopt(argc, argv, "l:m:n:t:qiec")) != -1) {
        switch (opt) {
        case 'l': load = strtoull(optarg, NULL, 0); break;
        case 'm': mib = strtoull(optarg, NULL, 0); break;
        case 'n': n = strtol(optarg, NULL, 0); break;
        case 't': timeout = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'q': quiet = 1; break;
        case 'i': irqchip = 1; break;
        case 'e': g_inject_soft_int = 1; break;
        case 'c': g_minimal_cpuid = 1; break;
        default: return usage();
        }
    }
    if (optind != argc - 1 || mib < 1 || mib > 4096) return usage();

    FILE *f = fopen(argv[optind], "rb");
    if (!f) { perror(argv[optind]); return 2; }
    struct vm v;
    vm_create(&v, mib << 20, irqchip);
    if (load >= v.mem_size) { fprintf(stderr, "load address outside RAM\n"); return 2; }
    size_t got = fread(v.mem + load, 1, v.mem_size - load, f);
    fclose(f);
    if (n >= 0) {
        uint32_t n32 = (uint32_t)n;
        memcpy(v.mem + PARAM_ADDR, &n32, 4);
    }
    fprintf(stderr, "loaded %zu bytes at 0x%llx, %llu MiB RAM%s\n", got, (unsigned long long)load,
            (unsigned long long)mib, irqchip ? ", in-kernel irqchip+PIT" : "");
    set_real_mode(&v, load, 0x8000);

    struct stats *st = calloc(1, sizeof *st);
    st->quiet = quiet;
    alarm(timeout);
    enum stop stop = run_vcpu(&v, st, 0);
    alarm(0);
    print_stats(st, stop);
    free(st);
    vm_destroy(&v);
    switch (stop) {
    case STOP_RESET: case STOP_HALTED: case STOP_SHUTDOWN: return 0;
    case STOP_TIMEOUT: return 5;
    default: return 4;
    }
}
