# Text tools: sort, uniq, tr, sed regexes, grep, cut, od, cmp, diff.
cd /tmp
seq 1 3000 | awk '{ printf "%d %s %d\n", ($1 * 7919) % 1000, substr("kqzjxvbwmplhgfdctsrnoieua", $1 % 25 + 1, 3), $1 }' > s.txt
sort s.txt | md5sum
sort -n s.txt | md5sum
sort -k2,2 -k1,1nr s.txt | md5sum
sort -u -k1,1n s.txt | wc -l
sort -n s.txt | uniq -c -w 4 | sort -nr | head -5
cut -d' ' -f2 s.txt | sort | uniq -c | sort -k1,1nr -k2 | head -5
tr 'a-z' 'n-za-m' < s.txt | md5sum
tr -d '0-9' < s.txt | tr -s ' ' | md5sum
sed -E 's/^([0-9]+) ([a-z]+) ([0-9]+)$/\3:\2:\1/' s.txt | md5sum
sed -n '/^9[0-9][0-9] [a-k]/p' s.txt | wc -l
sed 's/\([aeiou]\)\([^aeiou ]*\)/<\2\1>/g' s.txt | tail -3
grep -cE '^[0-9]{3} [^aeiou]+ ' s.txt
grep -E 'x.z|q[a-z]j' s.txt | head -3
od -A x -t x1 -N 48 s.txt; od -c -N 24 s.txt
od -t d2 -N 32 s.txt
echo 'The quick brown fox jumps over the lazy dog' | rev
echo 'The quick brown fox jumps over the lazy dog' | tr ' ' '\n' | sort -r | tr '\n' ','
echo
head -c 4000 s.txt > a.txt; head -c 4000 s.txt | sed '3s/^./X/; 40s/[a-z]/&&/' > b.txt
cmp a.txt b.txt; echo "cmp rc=$?"
diff a.txt b.txt; echo "diff rc=$?"
tac s.txt | head -2; nl s.txt | tail -1; fold -w 17 s.txt | wc -l
printf '%s\n' 10 9 100 1e3 -5 0x10 | sort -g 2>/dev/null || true
