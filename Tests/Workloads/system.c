// cflags: -O2 -march=x86-64 -pthread
// Processes and the kernel interface: setjmp/longjmp, signals raised by faults (SIGFPE, SIGSEGV,
// SIGILL, SIGTRAP) with their siginfo, fork/wait, pipes, mmap/mprotect/mremap, pthreads with
// mutexes, condition variables and atomics on one CPU. Output is independent of time and PIDs.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>

extern char **environ;

static sigjmp_buf jb;
static volatile sig_atomic_t got_sig, got_code;
static void *volatile got_addr;
static char *region;

static void handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig; got_code = si->si_code; got_addr = si->si_addr;
    siglongjmp(jb, sig);
}

static uint64_t h = 1469598103934665603ull;
static void mixb(const void *p, size_t n) { const unsigned char *c = p; for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 1099511628211ull; } }

static int depth(int n, jmp_buf *env) { if (n == 0) longjmp(*env, 77); return depth(n - 1, env) + 1; }

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn;
static uint64_t shared_sum;
static _Atomic uint64_t atomic_sum;
static char order[64];
static int order_len;

struct job { int id; uint64_t result; };
static void *worker(void *arg) {
    struct job *j = arg;
    uint64_t s = 0;
    for (uint64_t i = 0; i < 200000; i++) s += (i * (j->id + 1)) ^ (i >> 3);
    j->result = s;
    for (int k = 0; k < 1000; k++) { pthread_mutex_lock(&mu); shared_sum += (uint64_t)j->id * k; pthread_mutex_unlock(&mu); atomic_sum += k; }
    // Take turns in id order through a condition variable: the order must be 0,1,2,3 whatever the scheduler does.
    pthread_mutex_lock(&mu);
    while (turn != j->id) pthread_cond_wait(&cv, &mu);
    order[order_len++] = (char)('0' + j->id);
    turn++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return (void *)(uintptr_t)(j->id * 11);
}

static __thread int tls_value = 5;
static void *tls_worker(void *arg) { tls_value += (int)(intptr_t)arg; return (void *)(intptr_t)tls_value; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = { .sa_sigaction = handler, .sa_flags = SA_SIGINFO | SA_NODEFER };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGFPE, &sa, 0); sigaction(SIGSEGV, &sa, 0); sigaction(SIGILL, &sa, 0);
    sigaction(SIGTRAP, &sa, 0); sigaction(SIGBUS, &sa, 0); sigaction(SIGUSR1, &sa, 0);

    // setjmp/longjmp through recursion.
    jmp_buf env; int r = setjmp(env);
    if (r == 0) depth(1000, &env);
    printf("longjmp %d\n", r);

    // Faults: integer divide by zero, INT64_MIN / -1, a PROT_NONE page, ud2, int3, a raised signal.
    volatile int64_t zero = 0, minus1 = -1, big = INT64_MIN; volatile int32_t z32 = 0;
    region = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(region + 4096, 4096, PROT_NONE);
    for (int t = 0; t < 8; t++) {
        got_sig = 0; got_code = 0; got_addr = 0;
        if (sigsetjmp(jb, 1) == 0) {
            switch (t) {
            case 0: printf("no fault %" PRId64 "\n", 7 / (zero + 1)); break;
            case 1: printf("%" PRId64 "\n", 7 / zero); break;
            case 2: printf("%" PRId64 "\n", big / minus1); break;
            case 3: printf("%d\n", 5 % z32); break;
            case 4: region[4096 + 123] = 1; break;
            case 5: __asm__ volatile("ud2"); break;
            case 6: __asm__ volatile("int3"); break;
            case 7: raise(SIGUSR1); break;
            }
        }
        long off = got_addr ? (long)((char *)got_addr - region) : -1;
        printf("fault %d: sig %d code %d addr-off %ld\n", t, got_sig, got_code, t == 4 ? off : -1L);
    }
    // Reading PROT_NONE then making it readable; write to a read-only mapping.
    if (sigsetjmp(jb, 1) == 0) { mprotect(region, 4096, PROT_READ); region[5] = 1; }
    printf("write to read-only: sig %d code %d off %ld\n", got_sig, got_code, (long)((char *)got_addr - region));
    mprotect(region, 3 * 4096, PROT_READ | PROT_WRITE);   // one mapping again, so mremap can move it
    region[4096 + 9] = 42; printf("after mprotect %d\n", region[4096 + 9]);
    char *grown = mremap(region, 3 * 4096, 64 * 4096, MREMAP_MAYMOVE);
    if (grown == MAP_FAILED) { printf("mremap failed %d\n", errno); return 1; }
    grown[64 * 4096 - 1] = 7; printf("mremap %d %d\n", grown[4096 + 9], grown[64 * 4096 - 1]);

    // sigprocmask: a blocked signal stays pending until unblocked.
    sigset_t set, pend; sigemptyset(&set); sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, 0); got_sig = 0;
    raise(SIGUSR1); sigpending(&pend);
    printf("blocked: delivered %d pending %d\n", got_sig, sigismember(&pend, SIGUSR1));
    if (sigsetjmp(jb, 1) == 0) sigprocmask(SIG_UNBLOCK, &set, 0);
    printf("unblocked: delivered %d\n", got_sig);

    // fork/wait: exit codes, signals, a pipe carrying data both ways.
    for (int c = 0; c < 4; c++) {
        pid_t p = fork();
        if (p == 0) {
            if (c == 3) { volatile int *np = 0; signal(SIGSEGV, SIG_DFL); *np = 1; }
            if (c == 2) abort();
            _exit(c * 10 + 3);
        }
        int st; waitpid(p, &st, 0);
        printf("child %d: exited %d code %d signaled %d sig %d\n", c, WIFEXITED(st), WIFEXITED(st) ? WEXITSTATUS(st) : -1,
               WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
    int up[2], down[2]; pipe(up); pipe(down);
    pid_t p = fork();
    if (p == 0) {
        close(up[0]); close(down[1]);
        uint64_t s = 0; unsigned char b[4096]; ssize_t n;
        while ((n = read(down[0], b, sizeof b)) > 0) for (ssize_t i = 0; i < n; i++) s = s * 31 + b[i];
        write(up[1], &s, sizeof s); _exit(0);
    }
    close(up[1]); close(down[0]);
    unsigned char big_buf[70000];
    for (size_t i = 0; i < sizeof big_buf; i++) big_buf[i] = (unsigned char)(i * 7 + (i >> 8));
    for (int k = 0; k < 5; k++) write(down[1], big_buf, sizeof big_buf);
    close(down[1]);
    uint64_t child_sum = 0; read(up[0], &child_sum, sizeof child_sum);
    int st; waitpid(p, &st, 0);
    printf("pipe checksum %016" PRIx64 " status %d\n", child_sum, st);

    // A shared anonymous mapping written by a child; a file mapping.
    uint64_t *shm = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if ((p = fork()) == 0) { for (int i = 0; i < 1024; i++) shm[i] = (uint64_t)i * i * 2654435761u; _exit(0); }
    waitpid(p, &st, 0);
    h = 1469598103934665603ull; mixb(shm, 8192); printf("shared mapping %016" PRIx64 "\n", h);
    int fd = open("/tmp/mapped", O_RDWR | O_CREAT | O_TRUNC, 0600);
    ftruncate(fd, 10000);
    char *fm = mmap(0, 10000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    for (int i = 0; i < 10000; i++) fm[i] = (char)(i % 251);
    msync(fm, 10000, MS_SYNC); munmap(fm, 10000);
    unsigned char rb[10000]; pread(fd, rb, sizeof rb, 0); close(fd);
    h = 1469598103934665603ull; mixb(rb, sizeof rb); printf("file mapping %016" PRIx64 "\n", h);

    // Threads on one CPU.
    pthread_t th[4]; struct job jobs[4];
    for (int i = 3; i >= 0; i--) { jobs[i].id = i; pthread_create(&th[i], 0, worker, &jobs[i]); }
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) { void *ret; pthread_join(th[i], &ret); total += jobs[i].result + (uintptr_t)ret; }
    printf("threads total %" PRIu64 " mutex sum %" PRIu64 " atomic %" PRIu64 " order %s\n", total, shared_sum, (uint64_t)atomic_sum, order);
    pthread_t t2; void *tv; pthread_create(&t2, 0, tls_worker, (void *)(intptr_t)37); pthread_join(t2, &tv);
    printf("tls thread %d main %d\n", (int)(intptr_t)tv, tls_value);
    uint64_t v = 5; uint64_t old = __sync_val_compare_and_swap(&v, 5, 9);
    printf("cas old %" PRIu64 " new %" PRIu64 " xadd %" PRIu64 "\n", old, v, __atomic_fetch_add(&v, 3, __ATOMIC_SEQ_CST));
    printf("errno %d %s\n", (close(-1), errno), strerror(EBADF));

    // Generated code: write a function into an executable mapping, run it, patch it, run it again
    // (a JIT's pattern: the emulator must not run stale decoded instructions).
    unsigned char *jit = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    static const unsigned char fn[] = { 0x8D, 0x04, 0x3F, 0x05, 0x11, 0x22, 0x33, 0x44, 0xC3 };   // lea eax,[rdi+rdi]; add eax,imm32; ret
    memcpy(jit, fn, sizeof fn);
    int (*f)(int) = (int (*)(int))jit;
    int r1 = f(5);
    jit[4] = 0x55; jit[1] = 0x04; jit[2] = 0x7F;   // new immediate; lea eax,[rdi+rdi*2]
    int r2 = f(5);
    mprotect(jit, 4096, PROT_READ | PROT_WRITE);
    jit[0] = 0x8D; jit[3] = 0x2D;   // add -> sub
    mprotect(jit, 4096, PROT_READ | PROT_EXEC);
    int r3 = f(5);
    printf("jit %#x %#x %#x\n", r1, r2, r3);

    // posix_spawn and system(): a child program through the shell.
    pid_t sp; char *argv[] = { "/bin/sh", "-c", "echo spawned $((40 + 2)); exit 7", 0 };
    posix_spawn(&sp, "/bin/sh", 0, 0, argv, environ);
    waitpid(sp, &st, 0);
    printf("posix_spawn status %d\n", WEXITSTATUS(st));
    printf("system status %d\n", WEXITSTATUS(system("echo from system; exit 3")));
    return 0;
}
