# Hashes of generated text and binary data (busybox md5/sha1/sha256/sha512/sha3, crc32, cksum-like sums).
cd /tmp
seq 1 30000 > n.txt
i=0; : > h.hex
while [ $i -lt 300 ]; do echo "$i" | sha256sum; i=$((i + 1)); done | cut -c1-64 > h.hex
xxd -r -p h.hex > r.bin
wc -c n.txt h.hex r.bin
for f in n.txt h.hex r.bin; do
    md5sum $f; sha1sum $f; sha256sum $f; sha512sum $f; sha3sum $f
    crc32 $f 2>/dev/null || true
done
sha3sum -a 224 r.bin; sha3sum -a 384 r.bin
cat n.txt r.bin n.txt | sha256sum
dd if=r.bin bs=7 skip=3 count=100 2>/dev/null | md5sum
