// cflags: -O2 -march=x86-64 -lm
// Floating point: double (SSE2), float, long double (x87), libm, conversions, rounding modes,
// exception flags, printf/strtod round trips. Every value printed exactly (%a or %.17g).
#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>

static uint64_t h = 1469598103934665603ull;
static void mixb(const void *p, size_t n) { const unsigned char *c = p; for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 1099511628211ull; } }
static void mixd(double d) { mixb(&d, 8); }
static void mixf(float f) { mixb(&f, 4); }
static void mixl(long double l) { mixb(&l, 10); }
static void mixi(int64_t v) { mixb(&v, 8); }

static volatile double vzero = 0.0, vone = 1.0, vbig = 1e308, vtiny = 1e-308;

int main(void) {
    // libm over a range of arguments, including large ones (argument reduction) and special values.
    for (int i = 0; i < 400; i++) {
        double x = (i - 200) * 0.173 + i * 1e-3;
        double y = ldexp(x, i % 60);
        mixd(sin(x)); mixd(cos(x)); mixd(tan(x)); mixd(exp(x)); mixd(expm1(x / 9)); mixd(log1p(fabs(x)));
        mixd(atan(x)); mixd(atan2(x, 0.75)); mixd(sinh(x / 10)); mixd(tanh(x)); mixd(cbrt(x)); mixd(erf(x / 4));
        mixd(sin(y)); mixd(cos(y)); mixd(fmod(y, 7.25)); mixd(remainder(y, 3.5)); mixd(hypot(x, y));
        mixd(pow(fabs(x) + 0.5, x / 3)); mixd(log(fabs(x) + 1e-9)); mixd(log2(fabs(y) + 1)); mixd(log10(fabs(y) + 2));
        mixd(sqrt(fabs(y))); mixd(floor(x)); mixd(ceil(x)); mixd(trunc(x)); mixd(round(x)); mixd(rint(x * 2.5));
        mixd(lgamma(fabs(x) + 0.1)); mixd(tgamma(x / 20 + 3));
        float f = (float)x;
        mixf(sinf(f)); mixf(cosf(f)); mixf(expf(f / 4)); mixf(logf(fabsf(f) + 1)); mixf(sqrtf(fabsf(f))); mixf(powf(fabsf(f) + 1, 0.3f));
        mixf(atan2f(f, 2)); mixf(f * 1.1f + 3); mixf(f / 3.3f);
    }
    printf("libm %016" PRIx64 "\n", h);
    printf("samples %a %a %a %a %a\n", sin(1e22), cos(1e300), exp(709.7), log(DBL_MIN), pow(2.5, -1074.0 / 3));
    printf("float %a %a %a\n", sinf(1e10f), expf(88.5f), powf(10.0f, -45.0f));

    // x87 long double arithmetic (the transcendental functions are in x87libm.c).
    h = 1469598103934665603ull;
    long double acc = 1.0L;
    for (int i = 1; i < 300; i++) {
        long double x = (long double)i / 7.0L;
        acc = acc * 1.0001L + x / (acc + 1);
        mixl(acc); mixl(sqrtl(x)); mixl(fmodl(acc, x)); mixl(x * x - (long double)(double)(x * x)); mixl(remainderl(acc, x));
        mixl(rintl(x * 3)); mixl(ldexpl(x, i - 150)); mixl(frexpl(acc, &(int){0})); mixl((long double)(int64_t)(acc * 1e15L));
    }
    printf("x87 %016" PRIx64 " acc %La\n", h, acc);
    printf("x87 samples %La %La %La\n", 1.0L / 3, sqrtl(2.0L), (long double)LDBL_MAX / 3);

    // Conversions.
    h = 1469598103934665603ull;
    double convs[] = { 0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 1e19, -1e19, 9.2233720368547758e18, 1.8446744073709552e19,
                       4294967296.5, -2147483648.5, 1e-320, NAN, INFINITY, -INFINITY, 123456789.987654321, 0x1p63, -0x1p63 };
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        double d = convs[i];
        volatile int64_t i64 = (int64_t)(isfinite(d) && fabs(d) < 0x1p63 ? d : 0);
        volatile uint64_t u64 = (uint64_t)(isfinite(d) && d >= 0 && d < 0x1p64 ? d : 0);
        printf("conv %a -> %" PRId64 " %" PRIu64 " f=%a ld=%La lrint=%ld llround=%lld i32=%d\n", d, i64, u64, (float)d, (long double)d,
               isfinite(d) && fabs(d) < 1e18 ? lrint(d) : 0L, isfinite(d) && fabs(d) < 1e18 ? llround(d) : 0LL,
               isfinite(d) && fabs(d) < 2e9 ? (int)d : 0);
    }
    for (int64_t v = -5; v < 5; v++) { int64_t w = v * 0x0123456789ABCDEFll; mixd((double)w); mixf((float)w); mixl((long double)w); mixd((double)(uint64_t)w); mixf((float)(uint64_t)w); }
    printf("int->fp %016" PRIx64 "\n", h);

    // Rounding modes and exception flags.
    int modes[] = { FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO };
    const char *names[] = { "nearest", "down", "up", "zero" };
    for (int m = 0; m < 4; m++) {
        fesetround(modes[m]);
        volatile double a = 1.0, b = 3.0; volatile float fa = 1.0f, fb = 3.0f; volatile long double la = 1.0L, lb = 3.0L;
        double q = a / b; float fq = fa / fb; long double lq = la / lb;
        printf("round %s: %a %a %La rint %a %a nearbyint %a lrint %ld sqrt %a cvt %a %d\n", names[m], q, fq, lq,
               rint(2.5), rint(-3.5), nearbyint(-0.5), lrint(7.5), sqrt(2.0), (float)(a / b), (int)(b * 0.7));
    }
    fesetround(FE_TONEAREST);
    struct { const char *n; double (*f)(void); } dummy; (void)dummy;
    feclearexcept(FE_ALL_EXCEPT); volatile double r1 = vone / vzero; printf("1/0 %a divbyzero %d\n", r1, !!fetestexcept(FE_DIVBYZERO));
    feclearexcept(FE_ALL_EXCEPT); volatile double r2 = vzero / vzero; printf("0/0 nan %d invalid %d\n", isnan(r2), !!fetestexcept(FE_INVALID));
    feclearexcept(FE_ALL_EXCEPT); volatile double r3 = vbig * 10; printf("overflow %a %d inexact %d\n", r3, !!fetestexcept(FE_OVERFLOW), !!fetestexcept(FE_INEXACT));
    feclearexcept(FE_ALL_EXCEPT); volatile double r4 = vtiny / 1e10; printf("underflow %a %d\n", r4, !!fetestexcept(FE_UNDERFLOW));
    feclearexcept(FE_ALL_EXCEPT); volatile double r5 = vone + 1.0; printf("exact %a flags %d\n", r5, fetestexcept(FE_ALL_EXCEPT));
    feclearexcept(FE_ALL_EXCEPT); volatile long double r6 = 1.0L / (long double)vzero; printf("x87 1/0 %La divbyzero %d\n", r6, !!fetestexcept(FE_DIVBYZERO));
    feclearexcept(FE_ALL_EXCEPT); volatile float r7 = (float)vbig; printf("d->f overflow %a %d\n", r7, !!fetestexcept(FE_OVERFLOW));
    feclearexcept(FE_ALL_EXCEPT); volatile int r8 = (int)(vbig); printf("d->i invalid %d %d\n", r8, !!fetestexcept(FE_INVALID));

    // printf/strtod round trips and decimal formatting.
    h = 1469598103934665603ull;
    char buf[64];
    for (int i = 0; i < 3000; i++) {
        double d = ldexp((double)(i * 2654435761u % 1000003), i % 200 - 100) * (i & 1 ? -1 : 1);
        snprintf(buf, sizeof buf, "%.17g", d); mixb(buf, strlen(buf));
        double back = strtod(buf, 0); mixi(back == d);
        snprintf(buf, sizeof buf, "%.6e|%g|%.3f", d, d, d); mixb(buf, strlen(buf));
        long double ld = strtold(buf, 0); mixl(ld);
    }
    printf("printf/strtod %016" PRIx64 "\n", h);
    printf("%.40f\n%.20Lg\n%g %g %g %g\n", 0.1, 0.1L, DBL_MAX, DBL_TRUE_MIN, FLT_MAX, -0.0);
    printf("strtod %a %a %a %a\n", strtod("0x1.fffffffffffff8p-1022", 0), strtod("2.4703282292062328e-324", 0), strtod("1e400", 0), strtod("-nan", 0));
    return 0;
}
