// cflags: -O2 -pthread
// Threads hammering shared counters with every kind of atomic read-modify-write the x86 offers, a
// spinlock built on XCHG, a pthread mutex (futexes) and C11 atomics. On a multiprocessor guest the
// threads run at once on different CPUs, and any update lost to a non-atomic read-modify-write shows
// up as a wrong total. The totals are exact and the same on any number of CPUs.
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define THREADS 4
#define ITERS 100000

static volatile uint64_t lock_add, lock_inc, lock_sub, xadd_sum, cas_ctr, spin_ctr, mutex_ctr;
static volatile uint32_t lock_or_and, lock_xor, bts_word;
static volatile uint16_t lock_add16;
static volatile uint8_t lock_inc8;
static volatile int spin;
static atomic_long c11_ctr;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static uint64_t xadd_seen[THREADS];

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint32_t bit = 1u << id;
    uint64_t seen = 0;
    for (int i = 0; i < ITERS; i++) {
        __asm__ volatile("lock addq $3, %0" : "+m"(lock_add));
        __asm__ volatile("lock incq %0" : "+m"(lock_inc));
        __asm__ volatile("lock subq $2, %0" : "+m"(lock_sub));
        __asm__ volatile("lock addw $7, %0" : "+m"(lock_add16));
        __asm__ volatile("lock incb %0" : "+m"(lock_inc8));
        // Set and clear this thread's bit: another thread's update must never be lost.
        __asm__ volatile("lock orl %1, %0" : "+m"(lock_or_and) : "r"(bit));
        __asm__ volatile("lock andl %1, %0" : "+m"(lock_or_and) : "r"(~bit));
        __asm__ volatile("lock xorl %1, %0" : "+m"(lock_xor) : "r"(bit));
        __asm__ volatile("lock xorl %1, %0" : "+m"(lock_xor) : "r"(bit));
        __asm__ volatile("lock btsl %1, %0" : "+m"(bts_word) : "r"(id) : "cc");
        __asm__ volatile("lock btrl %1, %0" : "+m"(bts_word) : "r"(id) : "cc");
        // XADD: every value it returns is distinct, so their sum is known.
        seen += __atomic_fetch_add(&xadd_sum, 1, __ATOMIC_SEQ_CST);
        // CMPXCHG loop.
        uint64_t old = cas_ctr;
        while (!__atomic_compare_exchange_n(&cas_ctr, &old, old + 5, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
        // A spinlock on XCHG guarding a plain increment.
        while (__atomic_exchange_n(&spin, 1, __ATOMIC_ACQUIRE))
            while (__atomic_load_n(&spin, __ATOMIC_RELAXED)) __builtin_ia32_pause();
        spin_ctr = spin_ctr + 1;
        __atomic_store_n(&spin, 0, __ATOMIC_RELEASE);
        atomic_fetch_add(&c11_ctr, 2);
        if ((i & 15) == 0) {
            pthread_mutex_lock(&mutex);
            mutex_ctr = mutex_ctr + 1;
            pthread_mutex_unlock(&mutex);
        }
    }
    xadd_seen[id] = seen;
    return 0;
}

int main(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], 0, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], 0);
    uint64_t n = (uint64_t)THREADS * ITERS, seen = 0;
    for (int i = 0; i < THREADS; i++) seen += xadd_seen[i];
    int ok = 1;
#define CHECK(name, got, want) do { \
        unsigned long long g_ = (unsigned long long)(got), w_ = (unsigned long long)(want); \
        printf("%-10s %llu%s\n", name, g_, g_ == w_ ? "" : " WRONG"); ok &= g_ == w_; } while (0)
    CHECK("lock add", lock_add, 3 * n);
    CHECK("lock inc", lock_inc, n);
    CHECK("lock sub", (uint64_t)0 - lock_sub, 2 * n);
    CHECK("lock add16", lock_add16, (uint16_t)(7 * n));
    CHECK("lock inc8", lock_inc8, (uint8_t)n);
    CHECK("or/and", lock_or_and, 0);
    CHECK("xor", lock_xor, 0);
    CHECK("bts/btr", bts_word, 0);
    CHECK("xadd", xadd_sum, n);
    CHECK("xadd seen", seen, n * (n - 1) / 2);
    CHECK("cmpxchg", cas_ctr, 5 * n);
    CHECK("spinlock", spin_ctr, n);
    CHECK("c11", atomic_load(&c11_ctr), 2 * n);
    CHECK("mutex", mutex_ctr, (uint64_t)THREADS * ((ITERS + 15) / 16));
    printf("threads %s\n", ok ? "ok" : "FAILED");
    return !ok;
}
