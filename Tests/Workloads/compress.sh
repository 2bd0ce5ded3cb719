# Compressors: exact compressed bytes (hashed) and round trips.
cd /tmp
[ -f r.bin ] || { i=0; while [ $i -lt 300 ]; do echo "$i" | sha256sum; i=$((i + 1)); done | cut -c1-64 | xxd -r -p > r.bin; }
seq 1 6000 | awk '{ print $1 * $1 % 9973, "line", $1 }' > t.txt
head -c 20000 r.bin | cat t.txt - > mix.bin
for f in t.txt r.bin mix.bin; do
    echo "gzip $f $(gzip -9 -c < $f | md5sum | cut -c1-32) $(gzip -9 -c < $f | wc -c)"
    echo "bzip2 $f $(bzip2 -9 -c < $f | md5sum | cut -c1-32) $(bzip2 -c < $f | wc -c)"
    echo "lzop $f $(lzop -c < $f | wc -c)"
    echo "gzip rt $(gzip -c < $f | gunzip -c | md5sum)"
    echo "bzip2 rt $(bzip2 -c < $f | bunzip2 -c | md5sum)"
    echo "lzop rt $(lzop -c < $f | lzop -dc | md5sum)"
done
tar -cf - t.txt r.bin 2>/dev/null | wc -c
# busybox xz and lzma only decompress: feed them streams made on the host (xz 5.4) of `seq 1 3000`.
base64 -d > s.xz <<'B64'
/Td6WFoAAAFpIt42AgAhARwAAAAQz1jM4DZEBLRdABiCgo8iTvimVffwmaUlDZBFkVpRtJvKrNwF
MuyFUp+xSG3v3OhLuWG64JxTf5jIqVQO/D0q0wbXZkQ9VmSmzT3Xxx9E9BjfAgs/4sbGe+Hnf3lE
HHm3Qq5luBu1DoThmoIGIzlaf3KqQ/qlmh+SwL5FcXlK1ZPGkAo5rZxlhyq2GjjH4ZMXytA+Ceqw
UvAQYCbAXl8QkQ25eXh9l0Jg0KY4d+Ej6LsoT4hSLXVYJj9m/eKc69OvYdk1ev/7YrE8fJMc8mS4
TRyFKrFcAAY2AUrrvAVI71xotTxxgZ4sbORnBs+FKnUJGYy8F0QNzTxpxjbEnpzS7js1Ej6TUped
keFNVjFeyuWWgq9ADIWjSVbIkWpANfkU5FUtUTUkUoSAFyAtXAOMweh6LXV6XITE6Tf+hxp7RcSU
AOAYbZ+3J8KP2MwrTYBsqCN9xr0472fUEeIwmOP/QyESPWWjl2Esp+aPkecapktTI2MwWKFwPrGR
A2lPijaYbUSsckSgfta3pQb/7Tz3bendovwf7HoMJ2Hw9dvf4Ga/wVD7YFZmMqh4GMbugUKRydSe
QJKZKn7jZ88DoyDAw5BAOcjNFqzApW8eU0wP1nlKsIfXVyNIlWUhTomyhYQsvBCx2Xp2Yy2sJlWe
+ZRRjYnwoK+xDrTWUe0A1LFDs+t4u0Lxv1d5cA86eyevhEa8nr8BtfuIDHcV8qrG8yzmZvYcYG/T
aO+sz2kQGud4IN9of/q8tt/NGN4JAzg/UEB0eqkOolMDo78umZKx/HQqTAHLTIrxNCPGCmzhrx3x
/ynf1FMSMI+jwDlVZ7jIafaEjnl+mLe+L4PR+PWBZpcYWduFznN845SI5Ry79yA6rUBD285POdPl
Wkvrl5Q5WCQLR3T7xAxK6qSLVn3qMdkJ7S1pltw9bHTUmlQ6IxaI10ThvQBmoNViim33tZRt7Xp+
7kRqJRZdRRwdykYkR3AWk8swXtYF2WWlxCT2pVG3i2041rLMB2wspU2lhNGc57D2GyL1fCNvPQq3
eatTJg+cG3OSSosvaG8672Xe+zGbmRzgEiYxNNTophXpxUqcU/Xkd0e5lpbWxh1zDZj3hj8EObUX
WTp8pvclEl+vhaAayDyT/Gqc3dS7mHB7Hnnz+MeWwS7iGtAyQ2IFw9AksXM7HzZx0Q98GDmMblr+
QeI3WX+cd3+9UZ9AhZRhr3RV0Id1wJApJ3QpXWvHoQoKkU2gMTdnn69vPcOSF6Cr2nxPm1sGb5xv
YckXCZYQDe2KIMuGRxjvAYD665ReuybA6CyWUK8G6YyTVvp8SKZjdOscBj82DWrlPTzjZwyLDc4m
g9Dpagl2CohGonSEr0PXSq0Py/Dkgx66FJ7uDjTCt4Ztu0ZbFm42uwBjnpG9nMzvm7pJyvkZU9fq
ZoAsFPuNzbh5RhktgyQqONCbD527p6J6jiNyluhagFs1HRRivLe7PcSFEUterO3qXe6pDOv3b0EL
J7sG++KwJ3S/J9SzYtHDOzS4JqJbHu5sY3VepsrVk8SM9mzYncwLUUplaSRVJz7Jit3edQt+8KIa
GDHNB5PT6L3oyJ48HXtfJAGZByd7J8K2J9n6xEgVVsRK8mYnXQAA408FLQABzAnFbAAAE0QxqD4w
DYsCAAAAAAFZWg==
B64
base64 -d > s.lzma <<'B64'
XQAAAAT//////////wAYgoKPIk74plX38JmlJQ2QRZFaUbSbyqzcBTLshVKfsUht79zoS7lhuuCc
U3+YyKlUDvw9KtMG12ZEPVZkps0918cfRPQY3wILP+LGxnvh5395RBx5t0KuZbgbtQ6E4ZqCBiM5
Wn9yqkP6pZofksC+RXF5StWTxpAKOa2cZYcqtho4x+GTF8rQPgnqsFLwEGAmwF5fEJENuXl4fZdC
YNCmOHfhI+i7KE+IUi11WCY/Zv3inOvTr2HZNXr/+2KxPHyTHPJkuE0chSqxXAAGNgFK67wFSO9c
aLU8cYGeLGzkZwbPhSp1CRmMvBdEDc08acY2xJ6c0u47NRI+k1KXnZHhTVYxXsrlloKvQAyFo0lW
yJFqQDX5FORVLVE1JFKEgBcgLVwDjMHoei11elyExOk3/ocae0XElADgGG2ftyfCj9jMK02AbKgj
fca9OO9n1BHiMJjj/0MhEj1lo5dhLKfmj5HnGqZLUyNjMFihcD6xkQNpT4o2mG1ErHJEoH7Wt6UG
/+08923p3aL8H+x6DCdh8PXb3+Bmv8FQ+2BWZjKoeBjG7oFCkcnUnkCSmSp+42fPA6MgwMOQQDnI
zRaswKVvHlNMD9Z5SrCH11cjSJVlIU6JsoWELLwQsdl6dmMtrCZVnvmUUY2J8KCvsQ601lHtANSx
Q7PreLtC8b9XeXAPOnsnr4RGvJ6/AbX7iAx3FfKqxvMs5mb2HGBv02jvrM9pEBrneCDfaH/6vLbf
zRjeCQM4P1BAdHqpDqJTA6O/LpmSsfx0KkwBy0yK8TQjxgps4a8d8f8p39RTEjCPo8A5VWe4yGn2
hI55fpi3vi+D0fj1gWaXGFnbhc5zfOOUiOUcu/cgOq1AQ9vOTznT5VpL65eUOVgkC0d0+8QMSuqk
i1Z96jHZCe0taZbcPWx01JpUOiMWiNdE4b0AZqDVYopt97WUbe16fu5EaiUWXUUcHcpGJEdwFpPL
MF7WBdllpcQk9qVRt4ttONayzAdsLKVNpYTRnOew9hsi9Xwjbz0Kt3mrUyYPnBtzkkqLL2hvOu9l
3vsxm5kc4BImMTTU6KYV6cVKnFP15HdHuZaW1sYdcw2Y94Y/BDm1F1k6fKb3JRJfr4WgGsg8k/xq
nN3Uu5hwex558/jHlsEu4hrQMkNiBcPQJLFzOx82cdEPfBg5jG5a/kHiN1l/nHd/vVGfQIWUYa90
VdCHdcCQKSd0KV1rx6EKCpFNoDE3Z5+vbz3Dkhegq9p8T5tbBm+cb2HJFwmWEA3tiiDLhkcY7wGA
+uuUXrsmwOgsllCvBumMk1b6fEimY3TrHAY/Ng1q5T0842cMiw3OJoPQ6WoJdgqIRqJ0hK9D10qt
D8vw5IMeuhSe7g40wreGbbtGWxZuNrsAY56RvZzM75u6Scr5GVPX6maALBT7jc24eUYZLYMkKjjQ
mw+du6eieo4jcpboWoBbNR0UYry3uz3EhRFLXqzt6l3uqQzr929BCye7BvvisCd0vyfUs2LRwzs0
uCaiWx7ubGN1XqbK1ZPEjPZs2J3MC1FKZWkkVSc+yYrd3nULfvCiGhgxzQeT0+i96MiePB17XyQB
mQcneyfCtifZ+sRIFVbESvKNehT//+hhhNo=
B64
xz -dc s.xz | md5sum; unlzma -c s.lzma | md5sum; seq 1 3000 | md5sum
