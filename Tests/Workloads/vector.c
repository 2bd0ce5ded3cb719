// cflags: -O3 -ffast-math -msse2 -ftree-vectorize -funroll-loops
// Loops the compiler vectorises with SSE2 (packed float/double/int arithmetic, shuffles, min/max,
// reductions). -ffast-math lets it reassociate reductions, so the exact results depend on the
// generated code: the same binary must print the same bits on every x86-64.
#include <stdint.h>
#include <stdio.h>
#include <inttypes.h>
#include <math.h>

enum { N = 4096 };
static float fa[N], fb[N], fc[N];
static double da[N], db[N], dc[N];
static int32_t ia[N], ib[N], ic[N];
static int16_t sa[N], sb[N];
static uint8_t ua[N], ub[N];

static uint64_t h = 1469598103934665603ull;
static void mixb(const void *p, size_t n) { const unsigned char *c = p; for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 1099511628211ull; } }

__attribute__((noinline)) static float dotf(const float *a, const float *b) { float s = 0; for (int i = 0; i < N; i++) s += a[i] * b[i]; return s; }
__attribute__((noinline)) static double dotd(const double *a, const double *b) { double s = 0; for (int i = 0; i < N; i++) s += a[i] * b[i]; return s; }
__attribute__((noinline)) static void saxpy(float k, const float *x, float *y) { for (int i = 0; i < N; i++) y[i] = k * x[i] + y[i]; }
__attribute__((noinline)) static void daxpy(double k, const double *x, double *y) { for (int i = 0; i < N; i++) y[i] = k * x[i] + y[i]; }
__attribute__((noinline)) static float maxf(const float *a) { float m = -INFINITY; for (int i = 0; i < N; i++) m = a[i] > m ? a[i] : m; return m; }
__attribute__((noinline)) static double mind(const double *a) { double m = INFINITY; for (int i = 0; i < N; i++) m = a[i] < m ? a[i] : m; return m; }
__attribute__((noinline)) static int64_t dot16(const int16_t *a, const int16_t *b) { int32_t s = 0; for (int i = 0; i < N; i++) s += a[i] * b[i]; return s; }
__attribute__((noinline)) static uint32_t sad8(const uint8_t *a, const uint8_t *b) { uint32_t s = 0; for (int i = 0; i < N; i++) s += a[i] > b[i] ? a[i] - b[i] : b[i] - a[i]; return s; }
__attribute__((noinline)) static void imix(const int32_t *a, const int32_t *b, int32_t *c) { for (int i = 0; i < N; i++) c[i] = (a[i] * 3 + (b[i] >> 2)) ^ (a[i] < b[i] ? a[i] : b[i]); }
__attribute__((noinline)) static void fsqrt(const float *a, float *c) { for (int i = 0; i < N; i++) c[i] = sqrtf(a[i] * a[i] + 1.0f) / (a[i] + 3.0f); }
__attribute__((noinline)) static void dconv(const int32_t *a, double *c) { for (int i = 0; i < N; i++) c[i] = (double)a[i] * 0.5 + (double)(float)c[i]; }
__attribute__((noinline)) static void fconv(const float *a, int32_t *c) { for (int i = 0; i < N; i++) c[i] = (int32_t)(a[i] * 100.0f); }
__attribute__((noinline)) static void u8avg(const uint8_t *a, uint8_t *b) { for (int i = 0; i < N; i++) b[i] = (uint8_t)((a[i] + b[i] + 1) >> 1); }

int main(void) {
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        fa[i] = (float)(int32_t)x / 2147483648.0f; fb[i] = (float)(x >> 8 & 0xffff) / 1000.0f; fc[i] = fa[i] * 0.5f;
        da[i] = (double)(int32_t)x / 3.0; db[i] = (double)(x >> 5) * 1e-6; dc[i] = -da[i];
        ia[i] = (int32_t)x >> (i & 7); ib[i] = (int32_t)(x * 2654435761u); sa[i] = (int16_t)x; sb[i] = (int16_t)(x >> 16);
        ua[i] = (uint8_t)x; ub[i] = (uint8_t)(x >> 24);
    }
    for (int round = 0; round < 20; round++) {
        float f = dotf(fa, fb); double d = dotd(da, db);
        saxpy(0.25f + round, fa, fc); daxpy(-1.5 + round, db, dc);
        float mf = maxf(fc); double md = mind(dc);
        int64_t i16 = dot16(sa, sb); uint32_t sad = sad8(ua, ub);
        imix(ia, ib, ic); fsqrt(fc, fb); dconv(ic, da); fconv(fb, ib); u8avg(ua, ub);
        printf("round %2d dotf %a dotd %a maxf %a mind %a dot16 %" PRId64 " sad %u\n", round, f, d, mf, md, i16, sad);
    }
    mixb(fa, sizeof fa); mixb(fb, sizeof fb); mixb(fc, sizeof fc); mixb(da, sizeof da); mixb(db, sizeof db);
    mixb(dc, sizeof dc); mixb(ia, sizeof ia); mixb(ib, sizeof ib); mixb(ic, sizeof ic); mixb(ub, sizeof ub);
    printf("arrays %016" PRIx64 "\n", h);
    return 0;
}
