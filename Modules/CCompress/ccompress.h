// zlib and liblzma for host-side decompression of bzImage payloads (gzip, xz, lzma).
// Both -dev packages are part of the base Debian image. LZ4 and zstd have no -dev package there,
// so LinuxLoader reaches liblz4.so.1 / libzstd.so.1 with dlopen instead.
#include <zlib.h>
#include <lzma.h>
