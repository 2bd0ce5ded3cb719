// cflags: -O2
// scripts/bench's parallel workload: two CPU-bound processes at once (no shared memory, no system
// calls while they run), so a guest with two CPUs can finish in half the time of one. Each child
// runs a xorshift generator for ITERS steps; the parent prints both results (the same on any VMM).
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#define ITERS 200000000ULL

static uint64_t spin(uint64_t seed) {
    uint64_t x = seed;
    for (uint64_t i = 0; i < ITERS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

int main(void) {
    int fds[2][2];
    for (int c = 0; c < 2; c++) {
        if (pipe(fds[c])) return 1;
        pid_t p = fork();
        if (p < 0) return 1;
        if (p == 0) {
            uint64_t r = spin(0x9E3779B97F4A7C15ULL + c);
            if (write(fds[c][1], &r, sizeof r) != sizeof r) _exit(1);
            _exit(0);
        }
    }
    for (int c = 0; c < 2; c++) {
        uint64_t r = 0;
        if (read(fds[c][0], &r, sizeof r) != sizeof r) return 1;
        printf("child %d: %016llx\n", c, (unsigned long long)r);
    }
    while (wait(NULL) > 0) {}
    return 0;
}
