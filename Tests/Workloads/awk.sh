# awk floating point (busybox awk here has no libm: sin/exp/log/sqrt are computed in awk itself):
# printf %.17g, int/float conversion, % on doubles, big numbers, string/number conversions.
awk 'function sn(x,  t, s, k) { t = x; s = x; for (k = 1; k < 30; k++) { t = -t * x * x / ((2 * k) * (2 * k + 1)); s += t }; return s }
function ex(x,  t, s, k) { t = 1; s = 1; for (k = 1; k < 60; k++) { t = t * x / k; s += t }; return s }
function sq(x,  r, k) { if (x <= 0) return 0; r = x > 1 ? x : 1; for (k = 0; k < 60; k++) r = (r + x / r) / 2; return r }
function ln(x,  y, t, s, k) { y = (x - 1) / (x + 1); t = y; s = 0; for (k = 1; k < 400; k += 2) { s += t / k; t = t * y * y }; return 2 * s }
function pw(b, e,  r) { r = 1; while (e > 0) { if (e % 2 == 1) r *= b; b *= b; e = int(e / 2) }; return r }
BEGIN {
    for (i = -6; i <= 6; i++) { x = i * 0.7371; printf "%d %.17g %.17g %.17g\n", i, sn(x), ex(x), sq(i * i + 0.5) }
    for (i = 1; i <= 12; i++) printf "ln %.17g int %d mod %.17g\n", ln(i * 3.3), int(i * 1e15 / 7), (i * 1e10 + 0.3) % 7.25
    printf "%.17g %.17g %.17g\n", pw(2, 53) + 1, pw(2, 63), 1e308 * 10
    printf "%.17g %.17g %.17g\n", -0.0 * 1, 1 / 3, pw(1.0000001, 1000000)
    printf "%d %d %d\n", pw(2, 31), -pw(2, 31) - 1, 123456789012
    printf "%e %g %.0f %.0f %.0f %.3f\n", 1/7, 1e-300 * 1e-10, 0.5, 1.5, 2.5, 1.0005
    printf "%x %o %c %5.1f|%-6d|%+d\n", 255, 8, 65, 3.14159, 42, 7
    s = 0; for (i = 1; i <= 20000; i++) s += 1 / (i * i); printf "zeta2 %.17g\n", s
    p = 1; for (i = 1; i <= 170; i++) p *= i; printf "170! %.17g %.17g\n", p, p * 171
    print 0.1 + 0.2, 1e21, 123456789, 0.000001, 100000000000000000000, 1e300 * 1e300, -(1e300 * 1e300)
    print substr("hello", 2, 3), index("hello", "ll"), length("hello"), toupper("abc"), sprintf("%5.2f|", 3.14159)
    n = split("a:b:c:d", parts, ":"); print n, parts[3]
    x = "3.5abc" + 0; print x, "10" < "9", 10 < 9, "0x1A" + 0, " 12 " + 1, "1e3" * 1
    print int(-3.7), int(2147483648.9), int(-9007199254740993), 7 % -3, -7 % 3
    CONVFMT = "%.2g"; a = 3.14159; b = a ""; print b; OFMT = "%.3f"; print 2.718281828
    srand(1); r = rand(); print (r >= 0 && r < 1)
}'
seq 1 3000 | awk '{ s += $1 * 1.000001; q += $1 / 7; h[$1 % 7]++ } END { printf "%.17g %.17g\n", s, q; for (k = 0; k < 7; k++) printf "%d ", h[k]; print "" }'
echo "3 1.5 -2e-3 x 7" | awk '{ for (i = 1; i <= NF; i++) t += $i; printf "%.17g %d\n", t, NF }'
