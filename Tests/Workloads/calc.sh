# Arbitrary precision and integer calculators: dc, bc, factor, expr, seq, shell arithmetic.
echo '2 200 ^ p' | dc
echo '20 k 2 v p 1 3 / p' | dc
echo '16 o 1000000007 p 10 o 7 1000 ^ 1000000007 % p' | dc
echo 'scale=40; 4*a(1)' | bc -l 2>/dev/null || echo "bc: no math lib"
echo 'scale=30; sqrt(2); 2^100; 100/7; -17%5' | bc
echo 'define f(n) { if (n < 2) return n; return f(n-1) + f(n-2); }; f(20)' | bc
factor 1 2 97 1000000007 600851475143 18446744073709551615 9007199254740993 4294967297
expr 123456789 \* 987654321; expr 1000000 / 7 % 13; expr length "hello world"; expr "abc123" : '[a-z]*\([0-9]*\)'
expr 9223372036854775807 + 0
seq 0.5 0.25 2; seq 10 -3 -5 | tr '\n' ' '; echo; seq -w 8 11 | tr '\n' ' '; echo
echo $((2**62 + 2**62 - 1)) $((-7 / 2)) $((-7 % 2)) $((1 << 63)) $((0x7fffffffffffffff + 1)) $((077)) $((3 > 2 && 1))
printf '%d %i %x %o %e %.3f %s %5s|%-5s|\n' 42 -7 3054 8 12345.678 2.0005 str ab cd
