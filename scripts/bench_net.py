"""Network and entropy rows for scripts/bench (imported by it; not run alone).

All traffic stays in a network namespace made by scripts/netns (a bridge at 10.0.2.1/24 with one TAP
for swhv and one for QEMU) and removed afterwards. Each VMM boots the same kernel and initramfs with
a static address (`ip=`), then:
  - TCP host -> guest: scripts/netpeer in the namespace sends N bytes; the guest's busybox nc reads
    them into /dev/null. Time from the first byte sent to the guest closing, on the host.
  - TCP guest -> host: the guest's busybox nc sends N bytes of /tmp/blob (tmpfs) to netpeer, which
    times first to last byte.
  - Ping: busybox ping from the namespace to the guest, 20 echoes 0.2 s apart, average round trip.
"""
import os, re, select, signal, subprocess, time, uuid

SIZE = int(os.environ.get("BENCH_NET_MIB", "32")) << 20
HOST = "10.0.2.1"


class Console:
    """A VMM whose serial console is a pair of pipes: boot, type commands, read their output."""

    def __init__(self, cmd, root, env=None):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  cwd=root, start_new_session=True, env=env)
        self.buf = b""
        self.seq = 0

    def read_until(self, found, timeout):
        end = time.monotonic() + timeout
        while True:
            m = found(self.buf)
            if m is not None or time.monotonic() > end:
                return m
            r, _, _ = select.select([self.p.stdout], [], [], 0.5)
            if r:
                data = os.read(self.p.stdout.fileno(), 65536)
                if not data:
                    return found(self.buf)
                self.buf += data

    def run(self, command, timeout=600):
        """Runs `command` in the guest shell; its output, or None on timeout."""
        self.seq += 1
        start = len(self.buf)
        self.p.stdin.write(f"{command}; echo \"<@{self.seq}@$((40+2))@\"\n".encode())
        self.p.stdin.flush()
        mark = f"<@{self.seq}@42@".encode()
        echoed = f"<@{self.seq}@$((40+2))@".encode()
        def found(b):
            i = b.find(mark, start)
            if i < 0:
                return None
            # The output starts after the line the shell echoed last (the terminal may echo it
            # once more while the shell is still starting).
            j = b.rfind(echoed, start, i)
            body = b[j if j >= 0 else start:i].decode(errors="replace").replace("\r", "")
            return body.split("\n", 1)[1].strip() if "\n" in body else ""
        return self.read_until(found, timeout)

    def boot(self, marker, timeout):
        if self.read_until(lambda b: True if marker in b else None, timeout) is None:
            return False
        return self.run("echo ready", 120) == "ready"

    def close(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


class Namespace:
    def __init__(self, root, taps):
        self.root, self.name = root, f"swhv-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run([os.path.join(root, "scripts/netns"), "create", self.name] + taps, check=True)

    def cmd(self, args):
        return ["ip", "netns", "exec", self.name] + args

    def delete(self):
        subprocess.run([os.path.join(self.root, "scripts/netns"), "delete", self.name])


def transfer(ns, root, console, mode, port, guest_command, timeout=900):
    """Runs netpeer (`source` or `sink`) and the guest's side; returns the host-measured seconds."""
    args = [os.path.join(root, "scripts/netpeer"), mode, str(port), str(SIZE)] + (["7"] if mode == "source" else [])
    peer = subprocess.Popen(ns.cmd(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if peer.stdout.readline().strip() != f"listening {port}":
            return None
        if console.run(guest_command, timeout) is None:
            return None
        line = peer.stdout.readline()
        m = re.match(r"done bytes (\d+) md5 \S+ seconds ([0-9.]+)", line)
        return float(m.group(2)) if m and int(m.group(1)) == SIZE else None
    finally:
        peer.kill()
        peer.wait()


def ping_ms(ns, root, address):
    r = subprocess.run(ns.cmd([os.path.join(root, "fixtures/busybox"), "ping", "-c", "20", "-i", "0.2", address]),
                       capture_output=True, text=True)
    m = re.search(r"min/avg/max = [0-9.]+/([0-9.]+)/", r.stdout)
    return float(m.group(1)) if m else None


def measure(ns, root, cmd, address, marker, boot_timeout, env=None):
    """Boots one VMM and runs the three measurements: (MB/s in, MB/s out, ping ms), None where one failed."""
    c = Console(cmd, root, env)
    try:
        if not c.boot(marker, boot_timeout):
            return None, None, None
        c.run(f"dd if=/dev/zero of=/tmp/blob bs=1M count={SIZE >> 20} 2>/dev/null")
        t_in = transfer(ns, root, c, "source", 5001, f"nc {HOST} 5001 >/dev/null")
        t_out = transfer(ns, root, c, "sink", 5002, f"nc {HOST} 5002 </tmp/blob")
        ping = ping_ms(ns, root, address)
        mbs = lambda t: SIZE / 1e6 / t if t else None
        return mbs(t_in), mbs(t_out), ping
    finally:
        c.close()


def swhv_cmd(ns, swhv, kernel, initrd, net="", extra=()):
    return ns.cmd([swhv, "boot", "--quiet", "--accel", "interp", "--memory", "512M", "--kernel", kernel, "--initrd", initrd,
                   "--net", "tap=tap0" + net, "--cmdline", f"ip=10.0.2.15::{HOST}:255.255.255.0::eth0:off"] + list(extra))


def qemu_cmd(ns, qemu, kernel, initrd):
    # -M pc with virtio-net-pci: the same transport as swhv's (microvm's virtio-mmio needs its ACPI
    # tables, and its TCG boot of this kernel stalls at TSC calibration on some hosts).
    return ns.cmd([qemu, "-M", "pc", "-accel", "tcg", "-m", "512", "-nodefaults", "-no-user-config", "-nographic",
                   "-serial", "stdio", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
                   "-append", f"console=ttyS0 reboot=k panic=-1 ip=10.0.2.16::{HOST}:255.255.255.0::eth0:off",
                   "-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no,vhost=off",
                   "-device", "virtio-net-pci,netdev=n0"])


def bench_net(b):
    """swhv (interpreter) vs QEMU TCG on the same namespace: throughput both ways and ping."""
    kernel, initrd = os.path.join(b.FIX, "vmlinuz-cloud"), os.path.join(b.FIX, "initramfs.cpio.gz")
    ns = Namespace(b.ROOT, ["tap0", "tap1"])
    ours, peer = ([], [], []), ([], [], [])
    try:
        for _ in range(b.RUNS):
            for results, cmd, address in ((ours, swhv_cmd(ns, b.SWHV, kernel, initrd), "10.0.2.15"),
                                          (peer, qemu_cmd(ns, b.QEMU, kernel, initrd), "10.0.2.16")):
                for lst, v in zip(results, measure(ns, b.ROOT, cmd, address, b.MARKER, b.BOOT_TIMEOUT)):
                    if v is not None:
                        lst.append(v)
    finally:
        ns.delete()
    mib = SIZE >> 20
    method = ("Debian cloud kernel, busybox nc in the guest, scripts/netpeer in a network namespace (bridge + TAP; "
              "swhv --net tap=..., QEMU -M pc virtio-net-pci over -netdev tap, vhost off), all offloads on both")
    peer_name = "QEMU pc TCG"
    b.row("TCP throughput host → guest (interpreter vs QEMU TCG)", f"{mib} MiB into `nc HOST PORT >/dev/null`; " + method,
          b.stats(ours[0]), b.stats(peer[0]), peer_name, "MB/s", lower_is_better=False)
    b.row("TCP throughput guest → host (interpreter vs QEMU TCG)", f"{mib} MiB from `nc HOST PORT </tmp/blob`; " + method,
          b.stats(ours[1]), b.stats(peer[1]), peer_name, "MB/s", lower_is_better=False)
    b.row("Ping round trip host → guest (interpreter vs QEMU TCG)", "busybox ping -c 20 -i 0.2 from the namespace; " + method,
          b.stats(ours[2]), b.stats(peer[2]), peer_name, "ms")


def bench_net_variants(b):
    """Which offloads pay, and where the TAP is read: swhv variants against swhv's defaults, alternating."""
    kernel, initrd = os.path.join(b.FIX, "vmlinuz-cloud"), os.path.join(b.FIX, "initramfs.cpio.gz")
    variants = [("offload=csum (no TSO/UFO)", ",offload=csum", None),
                ("offload=none", ",offload=none", None),
                ("mrg_rxbuf=off", ",mrg_rxbuf=off", None)]
    ns = Namespace(b.ROOT, ["tap0"])
    base = ([], [], [])
    results = {name: ([], [], []) for name, _, _ in variants}
    try:
        for _ in range(b.RUNS):
            for lst, v in zip(base, measure(ns, b.ROOT, swhv_cmd(ns, b.SWHV, kernel, initrd), "10.0.2.15",
                                            b.MARKER, b.BOOT_TIMEOUT)):
                if v is not None:
                    lst.append(v)
            for name, net, env in variants:
                e = dict(os.environ, **env) if env else None
                for lst, v in zip(results[name], measure(ns, b.ROOT, swhv_cmd(ns, b.SWHV, kernel, initrd, net), "10.0.2.15",
                                                         b.MARKER, b.BOOT_TIMEOUT, e)):
                    if v is not None:
                        lst.append(v)
    finally:
        ns.delete()
    for name, _, _ in variants:
        for i, (what, unit, lower) in enumerate((("host → guest", "MB/s", False), ("guest → host", "MB/s", False),
                                                 ("ping", "ms", True))):
            b.row(f"Network variant: {name}, {what}", f"as the TCP/ping rows, {SIZE >> 20} MiB; swhv with the variant "
                  "vs swhv's defaults (all offloads, MRG_RXBUF, TAP read on the vCPU thread)",
                  b.stats(results[name][i]), b.stats(base[i]), "swhv defaults", unit, lower_is_better=lower)


def bench_rng_boot(b):
    """Boot to userspace with and without --rng (interpreter, Debian cloud kernel)."""
    cloud = os.path.join(b.FIX, "vmlinuz-cloud")
    with_rng, without = [], []
    initrd = os.path.join(b.FIX, "initramfs.cpio.gz")
    for _ in range(b.RUNS):
        for lst, flag in ((with_rng, "--rng"), (without, "--no-rng")):
            a = b.watch([b.SWHV, "boot", "--quiet", "--accel", "interp", "--kernel", cloud, "--initrd", initrd,
                         "--memory", "512M", "--no-default-cmdline", "--cmdline", b.CMDLINE, flag],
                        [b.MARKER], b.BOOT_TIMEOUT)
            if b.MARKER in a:
                lst.append(a[b.MARKER])
    b.row("Boot to userspace with --rng vs --no-rng (interpreter, Debian cloud kernel)",
          f"spawn → `{b.MARKER.decode()}`, cmdline `{b.CMDLINE}`, 512 MiB; the initramfs loads virtio_rng either way",
          b.stats(with_rng), b.stats(without), "swhv --no-rng", "s")
