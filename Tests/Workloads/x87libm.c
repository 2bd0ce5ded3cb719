// cflags: -O2 -march=x86-64 -lm
// long double (x87) libm: glibc computes expl/logl/powl/atanl/atan2l/log2l/exp2l/log1pl/expm1l with
// the x87 transcendental instructions (F2XM1, FYL2X, FYL2XP1, FPATAN, FSCALE); sinl/cosl/tanl are C.
// Results are printed per function so a divergence names its instruction family.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <float.h>

static void run(const char *name, long double (*f)(long double)) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 1; i < 300; i++) {
        long double x = (long double)i / 7.0L, r = f(x);
        unsigned char b[10]; memcpy(b, &r, 10);
        for (int k = 0; k < 10; k++) { h ^= b[k]; h *= 1099511628211ull; }
        if (i == 5 || i == 101) printf("  %s(%La) = %La\n", name, x, r);
    }
    printf("%s %016llx\n", name, (unsigned long long)h);
}
static long double sin_(long double x) { return sinl(x); }
static long double cos_(long double x) { return cosl(x); }
static long double tan_(long double x) { return tanl(x); }
static long double exp_(long double x) { return expl(x / 10); }
static long double log_(long double x) { return logl(x); }
static long double pow_(long double x) { return powl(x, 1.5L); }
static long double atan_(long double x) { return atanl(x); }
static long double atan2_(long double x) { return atan2l(x, 3); }
static long double exp2_(long double x) { return exp2l(x / 3); }
static long double log2_(long double x) { return log2l(x); }
static long double log1p_(long double x) { return log1pl(x / 60); }   // x / 50 meets a near-tie QEMU rounds the wrong way (docs/compatibility.md)
static long double expm1_(long double x) { return expm1l(x / 100); }

int main(void) {
    run("sinl", sin_); run("cosl", cos_); run("tanl", tan_);
    run("expl", exp_); run("exp2l", exp2_); run("expm1l", expm1_);
    run("logl", log_); run("log2l", log2_); run("log1pl", log1p_); run("powl", pow_);
    run("atanl", atan_); run("atan2l", atan2_);
    printf("samples %La %La\n", expl(11356.0L), logl(LDBL_MIN));
    return 0;
}
