// fuzz_native: replays differential fuzz cases (the text format of FuzzCase.swift) on the host CPU
// at CPL3 and compares every step with the case's expected (unicorn) state. It is the tie-breaker
// when the interpreter and unicorn disagree: fuzz.py --native runs it next to swhv-cpu-runner.
//
// The case's code, data and stack are mapped at their guest addresses in this process. A UD2 in
// host code enters the guest: the SIGILL handler swaps its saved context for the guest registers
// with RFLAGS.TF set, so every guest instruction ends in a SIGTRAP whose handler records the
// registers and a snapshot of data and stack. REP string instructions trap once per iteration;
// only traps that leave the instruction count. FS base is the case's while the guest runs, so nothing here may touch thread-local storage then: no errno, no stack
// protector (build with -fno-stack-protector). GS base is the case's too.
//
// What the host CPU shows differently by construction is not compared: TF (kept set by us; PUSHF
// images get it cleared), IF/IOPL and the other system flags (CPL3), undefined flags (the mask).
//
//   cc -O2 -fno-stack-protector -o fuzz_native fuzz_native.c && ./fuzz_native < cases.txt
// Output: PASS <id> <steps> | FAIL <id> <step> <rip> <problems> | SKIP <id> <why>, then a summary line.

#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define CODE 0x10000ULL
#define CODE_SIZE 0x10000ULL
#define DATA 0x100000ULL
#define DATA_SIZE 0x2000ULL
#define STACK_LO 0x1FE000ULL
#define STACK_TOP 0x200000ULL
#define STACK_SIZE (STACK_TOP - STACK_LO)
#define SNAP (DATA_SIZE + STACK_SIZE)
#define MAXSTEPS 4096
#define TF 0x100ULL
#define NATIVE_FLAGS 0xCD5ULL   /* OF DF SF ZF AF PF CF */

struct write { uint64_t addr, value; int size; };
struct step {
    uint64_t rip, rflags, mask;
    int nregs, nwrites, nxmm;
    int regidx[16];
    uint64_t regval[16];
    int xmmidx[16];
    uint64_t xmmval[16][2];
    int has_mxcsr;
    uint32_t mxcsr;
    int has_x87;
    uint16_t fcw, fsw, fsw_mask;
    uint8_t ftw;
    uint64_t st_m[8];
    uint16_t st_e[8];
    struct write *writes;
};
struct kase {
    char id[64];
    uint64_t regs[16], rflags, seed, fs_base, gs_base;
    uint64_t xmm[16][2];
    uint32_t mxcsr, mxcsr_mask;
    /* A final instruction that must fault: vector, error code (-1: none given), CR2 (has_cr2). */
    int has_fault, fault_vector, has_cr2;
    long long fault_err;
    uint64_t fault_cr2;
    uint8_t *code;
    size_t codelen;
    int nsteps;
    struct step steps[MAXSTEPS];
};

/* Linux mcontext order for our register numbering (rax rcx rdx rbx rsp rbp rsi rdi r8..r15). */
static const int greg_of[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
                                REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15};
static const char *reg_names[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"};

/* Guest run state, shared with the signal handlers. */
static struct kase *cur;
static volatile int in_guest;
static gregset_t host_gregs;
static struct _libc_fpstate host_fp;
static uint64_t cur_start;
static int nrec;
static uint64_t rec_regs[MAXSTEPS][16], rec_rip[MAXSTEPS], rec_flags[MAXSTEPS];
static uint64_t rec_xmm[MAXSTEPS][16][2];
static uint32_t rec_mxcsr[MAXSTEPS];
static uint16_t rec_fcw[MAXSTEPS], rec_fsw[MAXSTEPS];
static uint8_t rec_ftw[MAXSTEPS];
static uint8_t rec_st[MAXSTEPS][8][10];
static uint8_t *snaps;
static int fault_sig;
static uint64_t fault_rip, fault_trapno, fault_errcode, fault_cr2;

static void splitmix_fill(uint64_t seed, uint64_t base, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n / 8; i++) {
        uint64_t z = seed + (base + i * 8) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        memcpy(out + i * 8, &z, 8);
    }
}

/* Makes sigreturn load the legacy x87/SSE area of the frame: with XSAVE frames, state components
   whose XSTATE_BV bit is clear are reset instead (the header follows the 512-byte legacy area). */
static void mark_fp_dirty(struct _libc_fpstate *fp) {
    uint8_t *fx = (uint8_t *)fp;
    uint32_t magic;
    memcpy(&magic, fx + 464, 4);
    if (magic == 0x46505853U) {   /* FP_XSTATE_MAGIC1 */
        uint64_t bv;
        memcpy(&bv, fx + 512, 8);
        bv |= 3;
        memcpy(fx + 512, &bv, 8);
    }
}

static void leave_guest(ucontext_t *uc) {
    memcpy(uc->uc_mcontext.gregs, host_gregs, sizeof(gregset_t));
    if (uc->uc_mcontext.fpregs) {
        memcpy(uc->uc_mcontext.fpregs, &host_fp, sizeof(host_fp));
        mark_fp_dirty(uc->uc_mcontext.fpregs);
    }
    in_guest = 0;
}

/* Is the instruction at p PUSHF (any prefixes)? */
static int is_pushf(const uint8_t *p) {
    for (int i = 0; i < 15; i++) {
        uint8_t b = p[i];
        if (b == 0x66 || b == 0x67 || b == 0xF0 || b == 0xF2 || b == 0xF3 || b == 0x2E || b == 0x3E ||
            b == 0x26 || b == 0x36 || b == 0x64 || b == 0x65 || (b >= 0x40 && b <= 0x4F)) continue;
        return b == 0x9C;
    }
    return 0;
}

static void on_trap(int sig, siginfo_t *si, void *ctx) {
    (void)si;
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    if (!in_guest) return;
    uint64_t rip = (uint64_t)g[REG_RIP];
    if (sig != SIGTRAP) {
        fault_sig = sig;
        fault_rip = rip;
        fault_trapno = (uint64_t)g[REG_TRAPNO];
        fault_errcode = (uint64_t)g[REG_ERR];
        fault_cr2 = (uint64_t)g[REG_CR2];
        /* The state at the fault, as one more record (checked against "nothing changed"). */
        if (nrec < MAXSTEPS) {
            for (int i = 0; i < 16; i++) rec_regs[nrec][i] = (uint64_t)g[greg_of[i]];
            rec_rip[nrec] = rip;
            rec_flags[nrec] = (uint64_t)g[REG_EFL];
            if (uc->uc_mcontext.fpregs) {
                memcpy(rec_xmm[nrec], uc->uc_mcontext.fpregs->_xmm, sizeof rec_xmm[nrec]);
                rec_mxcsr[nrec] = uc->uc_mcontext.fpregs->mxcsr;
            }
            memcpy(snaps + (size_t)nrec * SNAP, (void *)DATA, DATA_SIZE);
            memcpy(snaps + (size_t)nrec * SNAP + DATA_SIZE, (void *)STACK_LO, STACK_SIZE);
        }
        leave_guest(uc);
        return;
    }
    if (rip == cur_start) return;      /* another REP iteration */
    if (is_pushf((const uint8_t *)cur_start)) {
        /* The pushed image carries our TF and CPL3's IF (the cases run with IF clear): clear both
           (they are in the low word for either operand size). */
        *(uint16_t *)(uintptr_t)g[REG_RSP] &= (uint16_t)~(TF | 0x200);
    }
    for (int i = 0; i < 16; i++) rec_regs[nrec][i] = (uint64_t)g[greg_of[i]];
    rec_rip[nrec] = rip;
    rec_flags[nrec] = (uint64_t)g[REG_EFL];
    if (uc->uc_mcontext.fpregs) {
        struct _libc_fpstate *fp = uc->uc_mcontext.fpregs;
        memcpy(rec_xmm[nrec], fp->_xmm, sizeof rec_xmm[nrec]);
        rec_mxcsr[nrec] = fp->mxcsr;
        rec_fcw[nrec] = fp->cwd;
        rec_fsw[nrec] = fp->swd;
        rec_ftw[nrec] = (uint8_t)fp->ftw;
        for (int i = 0; i < 8; i++) memcpy(rec_st[nrec][i], &fp->_st[i], 10);
    }
    memcpy(snaps + (size_t)nrec * SNAP, (void *)DATA, DATA_SIZE);
    memcpy(snaps + (size_t)nrec * SNAP + DATA_SIZE, (void *)STACK_LO, STACK_SIZE);
    nrec++;
    cur_start = rip;
    g[REG_EFL] |= TF;   /* POPF may have cleared it */
    if (nrec >= cur->nsteps && !cur->has_fault) leave_guest(uc);
}

static void on_enter(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    if (in_guest) {
        on_trap(sig, si, ctx);
        return;
    }
    memcpy(host_gregs, g, sizeof(gregset_t));
    host_gregs[REG_RIP] += 2;   /* past the UD2 */
    if (uc->uc_mcontext.fpregs) {
        memcpy(&host_fp, uc->uc_mcontext.fpregs, sizeof(host_fp));
        memcpy(uc->uc_mcontext.fpregs->_xmm, cur->xmm, sizeof cur->xmm);
        uc->uc_mcontext.fpregs->mxcsr = cur->mxcsr;
        /* FNINIT state, as the other runners start each case. */
        uc->uc_mcontext.fpregs->cwd = 0x37F;
        uc->uc_mcontext.fpregs->swd = 0;
        uc->uc_mcontext.fpregs->ftw = 0;
        memset(uc->uc_mcontext.fpregs->_st, 0, sizeof uc->uc_mcontext.fpregs->_st);   /* R0-R7 zero (MMX reads them) */
        uc->uc_mcontext.fpregs->fop = 0;
        uc->uc_mcontext.fpregs->rip = 0;
        uc->uc_mcontext.fpregs->rdp = 0;
        mark_fp_dirty(uc->uc_mcontext.fpregs);
    }
    for (int i = 0; i < 16; i++) g[greg_of[i]] = (greg_t)cur->regs[i];
    g[REG_RIP] = (greg_t)CODE;
    g[REG_EFL] = (greg_t)((cur->rflags & NATIVE_FLAGS) | 0x202 | TF);
    cur_start = CODE;
    nrec = 0;
    fault_sig = 0;
    in_guest = 1;
}

static long raw_arch_prctl(int code, uint64_t addr) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_arch_prctl), "D"((long)code), "S"(addr)
                     : "rcx", "r11", "memory");
    return ret;
}

/* Returns 0, or -1 when Linux refuses the case's FS/GS base (it takes user-half addresses only). */
static int run_guest(void) {
    uint64_t fs = 0, gs = 0;
    raw_arch_prctl(ARCH_GET_FS, (uint64_t)(uintptr_t)&fs);
    raw_arch_prctl(ARCH_GET_GS, (uint64_t)(uintptr_t)&gs);
    if (raw_arch_prctl(ARCH_SET_GS, cur->gs_base) != 0) return -1;
    alarm(5);
    if (raw_arch_prctl(ARCH_SET_FS, cur->fs_base) == 0) {
        __asm__ volatile("ud2" ::: "memory");
        raw_arch_prctl(ARCH_SET_FS, fs);
        alarm(0);
        raw_arch_prctl(ARCH_SET_GS, gs);
        return 0;
    }
    alarm(0);
    raw_arch_prctl(ARCH_SET_GS, gs);
    return -1;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static uint64_t hex64(const char *s, char **end) { return strtoull(s, end, 16); }

/* A 128-bit hex number (up to 32 digits) as low, high quadwords; returns the end. */
static const char *hex128(const char *s, uint64_t out[2]) {
    while (*s == ' ') s++;
    const char *e = s;
    while (hexval(*e) >= 0) e++;
    size_t n = (size_t)(e - s);
    out[0] = out[1] = 0;
    for (size_t i = 0; i < n; i++) {
        int v = hexval(s[i]);
        size_t pos = n - 1 - i;   /* nibble index from the right */
        if (pos < 16) out[0] |= (uint64_t)v << (4 * pos);
        else if (pos < 32) out[1] |= (uint64_t)v << (4 * (pos - 16));
    }
    return e;
}

/* Parses one S line's items into st. */
static int parse_step(char *line, struct step *st) {
    char *semi = strchr(line, ';');
    if (semi) *semi = 0;
    char *p = line + 1, *e;
    st->rip = hex64(p, &e); p = e;
    st->rflags = hex64(p, &e); p = e;
    st->mask = hex64(p, &e); p = e;
    st->nregs = st->nwrites = st->nxmm = st->has_mxcsr = st->has_x87 = 0;
    st->writes = NULL;
    int cap = 0;
    for (char *tok = strtok(p, " \n"); tok; tok = strtok(NULL, " \n")) {
        if (tok[0] == 'x') {
            int n = atoi(tok + 1);
            char *eq = strchr(tok, '=');
            if (!eq || n < 0 || n > 15) return -1;
            st->xmmidx[st->nxmm] = n;
            hex128(eq + 1, st->xmmval[st->nxmm++]);
        } else if (tok[0] == 'f' && tok[1] == 'x' && tok[2] == '=') {
            char *q = tok + 3, *e;
            st->has_x87 = 1;
            st->fcw = (uint16_t)strtoull(q, &e, 16); q = e + 1;
            st->fsw = (uint16_t)strtoull(q, &e, 16); q = e + 1;
            st->ftw = (uint8_t)strtoull(q, &e, 16); q = e + 1;
            st->fsw_mask = (uint16_t)strtoull(q, &e, 16); q = e;
            for (int i = 0; i < 8; i++) {
                uint64_t v[2];
                if (*q != ':') return -1;
                q = (char *)hex128(q + 1, v);
                st->st_m[i] = v[0];
                st->st_e[i] = (uint16_t)v[1];
            }
        } else if (tok[0] == 'm' && tok[1] == 'x' && tok[2] == '=') {
            st->has_mxcsr = 1;
            st->mxcsr = (uint32_t)hex64(tok + 3, NULL);
        } else if (tok[0] == 'r') {
            int n = atoi(tok + 1);
            char *eq = strchr(tok, '=');
            if (!eq || n < 0 || n > 15) return -1;
            st->regidx[st->nregs] = n;
            st->regval[st->nregs++] = hex64(eq + 1, NULL);
        } else if (tok[0] == 'm') {
            char *colon = strchr(tok, ':'), *eq = strchr(tok, '=');
            if (!colon || !eq) return -1;
            if (st->nwrites == cap) {
                cap = cap ? cap * 2 : 4;
                st->writes = realloc(st->writes, cap * sizeof(struct write));
            }
            struct write *w = &st->writes[st->nwrites++];
            w->addr = hex64(tok + 1, NULL);
            w->size = atoi(colon + 1);
            w->value = hex64(eq + 1, NULL);
        } else {
            return -1;
        }
    }
    return 0;
}

static void free_case(struct kase *c) {
    for (int i = 0; i < c->nsteps; i++) free(c->steps[i].writes);
    free(c->code);
    c->code = NULL;
    c->nsteps = 0;
}

/* Appends to a bounded report. */
static void add(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static void add(char *buf, size_t cap, const char *fmt, ...) {
    size_t n = strlen(buf);
    if (n + 4 >= cap) return;
    if (n) { strcat(buf, " | "); n += 3; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

static uint8_t exp_mem[SNAP];

/* Returns 1 if the case passed. */
static int check_case(struct kase *c) {
    static char report[4096];
    uint64_t exp[16], exp_xmm[16][2];
    struct step *x87 = NULL;   /* the last step with x87 state */
    uint32_t exp_mxcsr = c->mxcsr;
    memcpy(exp, c->regs, sizeof(exp));
    memcpy(exp_xmm, c->xmm, sizeof exp_xmm);
    splitmix_fill(c->seed, DATA, exp_mem, DATA_SIZE);
    splitmix_fill(c->seed, STACK_LO, exp_mem + DATA_SIZE, STACK_SIZE);
    for (int k = 0; k < c->nsteps; k++) {
        struct step *st = &c->steps[k];
        report[0] = 0;
        for (int i = 0; i < st->nregs; i++) exp[st->regidx[i]] = st->regval[i];
        for (int i = 0; i < st->nxmm; i++) memcpy(exp_xmm[st->xmmidx[i]], st->xmmval[i], 16);
        if (st->has_mxcsr) exp_mxcsr = st->mxcsr;
        if (st->has_x87) x87 = st;
        for (int i = 0; i < st->nwrites; i++) {
            struct write *w = &st->writes[i];
            for (int b = 0; b < w->size; b++) {
                uint64_t a = w->addr + b;
                uint8_t v = (uint8_t)(w->value >> (8 * b));
                if (a >= DATA && a < DATA + DATA_SIZE) exp_mem[a - DATA] = v;
                else if (a >= STACK_LO && a < STACK_TOP) exp_mem[DATA_SIZE + a - STACK_LO] = v;
            }
        }
        if (k >= nrec) {
            if (fault_sig) add(report, sizeof report, "signal %d at rip 0x%llx", fault_sig, (unsigned long long)fault_rip);
            else add(report, sizeof report, "stopped after %d steps", nrec);
        } else {
            for (int i = 0; i < 16; i++)
                if (rec_regs[k][i] != exp[i])
                    add(report, sizeof report, "%s = 0x%llx, expected 0x%llx", reg_names[i],
                        (unsigned long long)rec_regs[k][i], (unsigned long long)exp[i]);
            if (rec_rip[k] != st->rip)
                add(report, sizeof report, "rip = 0x%llx, expected 0x%llx", (unsigned long long)rec_rip[k],
                    (unsigned long long)st->rip);
            for (int i = 0; i < 16; i++)
                if (memcmp(rec_xmm[k][i], exp_xmm[i], 16))
                    add(report, sizeof report, "xmm%d = 0x%016llx%016llx, expected 0x%016llx%016llx", i,
                        (unsigned long long)rec_xmm[k][i][1], (unsigned long long)rec_xmm[k][i][0],
                        (unsigned long long)exp_xmm[i][1], (unsigned long long)exp_xmm[i][0]);
            if (x87) {
                char d[1024] = "";
                size_t n = 0;
                if (rec_fcw[k] != x87->fcw)
                    n += snprintf(d + n, sizeof d - n, "%sfcw 0x%x vs 0x%x", n ? ", " : "", rec_fcw[k], x87->fcw);
                if ((rec_fsw[k] ^ x87->fsw) & x87->fsw_mask)
                    n += snprintf(d + n, sizeof d - n, "%sfsw 0x%x vs 0x%x (compared 0x%x)", n ? ", " : "", rec_fsw[k],
                                  x87->fsw, x87->fsw_mask);
                if (rec_ftw[k] != x87->ftw)
                    n += snprintf(d + n, sizeof d - n, "%sftw 0x%x vs 0x%x", n ? ", " : "", rec_ftw[k], x87->ftw);
                int top = (x87->fsw >> 11) & 7;
                for (int i = 0; i < 8 && n < sizeof d - 100; i++) {
                    if (!((x87->ftw >> ((top + i) & 7)) & 1)) continue;
                    uint64_t m;
                    uint16_t e;
                    memcpy(&m, rec_st[k][i], 8);
                    memcpy(&e, rec_st[k][i] + 8, 2);
                    if (m != x87->st_m[i] || e != x87->st_e[i])
                        n += snprintf(d + n, sizeof d - n, "%sst%d 0x%x_%llx vs 0x%x_%llx", n ? ", " : "", i, e,
                                      (unsigned long long)m, x87->st_e[i], (unsigned long long)x87->st_m[i]);
                }
                if (n) add(report, sizeof report, "x87 = %s (got vs expected)", d);
            }
            if ((rec_mxcsr[k] ^ exp_mxcsr) & c->mxcsr_mask)
                add(report, sizeof report, "mxcsr = 0x%x, expected 0x%x (compared 0x%x)", rec_mxcsr[k], exp_mxcsr,
                    c->mxcsr_mask);
            uint64_t m = st->mask & NATIVE_FLAGS;
            if ((rec_flags[k] ^ st->rflags) & m)
                add(report, sizeof report, "rflags = 0x%llx, expected 0x%llx (differing 0x%llx, compared 0x%llx)",
                    (unsigned long long)(rec_flags[k] & m), (unsigned long long)(st->rflags & m),
                    (unsigned long long)((rec_flags[k] ^ st->rflags) & m), (unsigned long long)m);
            const uint8_t *got = snaps + (size_t)k * SNAP;
            if (memcmp(got, exp_mem, SNAP)) {
                int shown = 0;
                for (size_t i = 0; i < SNAP && shown < 6; i++) {
                    if (got[i] == exp_mem[i]) continue;
                    uint64_t a = i < DATA_SIZE ? DATA + i : STACK_LO + (i - DATA_SIZE);
                    add(report, sizeof report, "mem[0x%llx] = 0x%x, expected 0x%x", (unsigned long long)a, got[i], exp_mem[i]);
                    shown++;
                }
            }
        }
        if (report[0]) {
            printf("FAIL %s %d %llx %s\n", c->id, k, (unsigned long long)st->rip, report);
            return 0;
        }
    }
    if (c->has_fault) {
        report[0] = 0;
        uint64_t rip = c->nsteps ? c->steps[c->nsteps - 1].rip : CODE;
        uint64_t m = c->nsteps ? c->steps[c->nsteps - 1].mask & NATIVE_FLAGS : 0;
        uint64_t fl = c->nsteps ? c->steps[c->nsteps - 1].rflags : c->rflags;
        int k = c->nsteps;
        if (!fault_sig) {
            add(report, sizeof report, "no exception, expected #%d", c->fault_vector);
        } else if ((int)fault_trapno != c->fault_vector) {
            add(report, sizeof report, "exception #%d (signal %d), expected #%d", (int)fault_trapno, fault_sig,
                c->fault_vector);
        } else {
            /* CPL3 here, CPL0 in the cases: the page-fault error code's U bit differs by design. */
            uint64_t err = fault_trapno == 14 ? fault_errcode & ~4ULL : fault_errcode;
            if (c->fault_err >= 0 && err != (uint64_t)c->fault_err)
                add(report, sizeof report, "error code 0x%llx, expected 0x%llx", (unsigned long long)err,
                    (unsigned long long)c->fault_err);
            if (c->has_cr2 && fault_cr2 != c->fault_cr2)
                add(report, sizeof report, "cr2 = 0x%llx, expected 0x%llx", (unsigned long long)fault_cr2,
                    (unsigned long long)c->fault_cr2);
            for (int i = 0; i < 16; i++)
                if (rec_regs[k][i] != exp[i])
                    add(report, sizeof report, "%s = 0x%llx, expected 0x%llx", reg_names[i],
                        (unsigned long long)rec_regs[k][i], (unsigned long long)exp[i]);
            if (rec_rip[k] != rip)
                add(report, sizeof report, "rip = 0x%llx, expected 0x%llx", (unsigned long long)rec_rip[k],
                    (unsigned long long)rip);
            if ((rec_flags[k] ^ fl) & m)
                add(report, sizeof report, "rflags = 0x%llx, expected 0x%llx (differing 0x%llx, compared 0x%llx)",
                    (unsigned long long)(rec_flags[k] & m), (unsigned long long)(fl & m),
                    (unsigned long long)((rec_flags[k] ^ fl) & m), (unsigned long long)m);
            for (int i = 0; i < 16; i++)
                if (memcmp(rec_xmm[k][i], exp_xmm[i], 16))
                    add(report, sizeof report, "xmm%d changed", i);
            if (memcmp(snaps + (size_t)k * SNAP, exp_mem, SNAP)) add(report, sizeof report, "memory changed");
        }
        if (report[0]) {
            printf("FAIL %s %d %llx %s\n", c->id, k, (unsigned long long)rip, report);
            return 0;
        }
    }
    printf("PASS %s %d\n", c->id, c->nsteps);
    return 1;
}

static int run_case(struct kase *c) {
    memset((void *)CODE, 0, CODE_SIZE);
    memcpy((void *)CODE, c->code, c->codelen);
    splitmix_fill(c->seed, DATA, (uint8_t *)DATA, DATA_SIZE);
    splitmix_fill(c->seed, STACK_LO, (uint8_t *)STACK_LO, STACK_SIZE);
    cur = c;
    nrec = 0;
    int r = c->nsteps > 0 || c->has_fault ? run_guest() : 0;
    in_guest = 0;
    return r;
}

int main(int argc, char **argv) {
    FILE *in = stdin;
    if (argc > 1 && !(in = fopen(argv[1], "r"))) { perror(argv[1]); return 2; }
    if (mmap((void *)CODE, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)CODE ||
        mmap((void *)DATA, DATA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)DATA ||
        mmap((void *)STACK_LO, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)STACK_LO) {
        perror("fuzz_native: mmap at the guest addresses");
        return 2;
    }
    snaps = malloc((size_t)MAXSTEPS * SNAP);
    static char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sa.sa_sigaction = on_enter;
    sigaction(SIGILL, &sa, NULL);
    sa.sa_sigaction = on_trap;
    sigaction(SIGTRAP, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);

    static struct kase c;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int cases = 0, failed = 0, skipped = 0;
    long steps = 0;
    int lineno = 0;
    while ((len = getline(&line, &cap, in)) > 0) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        if (line[0] == 'C') {
            free_case(&c);
            char *p = line + 2, *e;
            char *sp = strchr(p, ' ');
            if (!sp) goto bad;
            size_t n = (size_t)(sp - p) < sizeof c.id - 1 ? (size_t)(sp - p) : sizeof c.id - 1;
            memcpy(c.id, p, n);
            c.id[n] = 0;
            p = sp;
            c.rflags = hex64(p, &e); p = e;
            c.seed = hex64(p, &e); p = e;
            for (int i = 0; i < 16; i++) { c.regs[i] = hex64(p, &e); p = e; }
            c.fs_base = c.gs_base = 0;
            memset(c.xmm, 0, sizeof c.xmm);
            c.mxcsr = 0x1F80;
            c.mxcsr_mask = 0xFFFF;
            c.has_fault = 0;
        } else if (line[0] == 'F') {
            char *p = line + 1, *e;
            c.has_fault = 1;
            c.fault_vector = (int)hex64(p, &e);
            p = e;
            while (*p == ' ') p++;
            if (*p == '-') { c.fault_err = -1; p++; } else { c.fault_err = (long long)hex64(p, &e); p = e; }
            while (*p == ' ') p++;
            if (*p == '-') c.has_cr2 = 0; else { c.has_cr2 = 1; c.fault_cr2 = hex64(p, NULL); }
        } else if (line[0] == 'V') {
            char *e;
            c.mxcsr = (uint32_t)hex64(line + 1, &e);
            c.mxcsr_mask = (uint32_t)hex64(e, &e);
            const char *q = e;
            for (int i = 0; i < 16; i++) q = hex128(q, c.xmm[i]);
        } else if (line[0] == 'B') {
            char *e;
            c.fs_base = hex64(line + 1, &e);
            c.gs_base = hex64(e, NULL);
        } else if (line[0] == 'X') {
            char *p = line + 1;
            while (*p == ' ') p++;
            size_t n = 0;
            while (hexval(p[n]) >= 0) n++;
            if (n / 2 > CODE_SIZE) goto bad;
            c.code = malloc(n / 2 + 1);
            for (size_t i = 0; i < n / 2; i++) c.code[i] = (uint8_t)(hexval(p[2 * i]) << 4 | hexval(p[2 * i + 1]));
            c.codelen = n / 2;
        } else if (line[0] == 'S') {
            if (c.nsteps >= MAXSTEPS || parse_step(line, &c.steps[c.nsteps]) < 0) goto bad;
            c.nsteps++;
        } else if (line[0] == 'E') {
            cases++;
            if (run_case(&c) < 0) {
                printf("SKIP %s FS/GS base not settable from user space\n", c.id);
                skipped++;
            } else {
                steps += c.nsteps;
                if (!check_case(&c)) failed++;
            }
            fflush(stdout);
            free_case(&c);
        } else {
            goto bad;
        }
    }
    printf("native: %d cases (%d skipped), %ld instructions, %d diverged\n", cases, skipped, steps, failed);
    return failed ? 1 : 0;
bad:
    fprintf(stderr, "fuzz_native: bad input at line %d\n", lineno);
    return 2;
}
