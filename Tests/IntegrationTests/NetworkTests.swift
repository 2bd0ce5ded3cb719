import Foundation
import SwhvTestSupport
import XCTest

/// `--net` and `--rng` as a user sees them: the Debian cloud kernel on the interpreter (release
/// binary) in a network namespace the test makes itself (scripts/netns: a bridge at 10.0.2.1/24 and
/// TAPs on it; nothing leaves the namespace) and removes afterwards. The guest gets its address from
/// `ip=` on the kernel command line. Checked: ping both ways, the MAC the guest sees, 64 MiB of TCP
/// each way between the guest's busybox nc and scripts/netpeer with equal MD5s, two guests talking
/// over the bridge, the TAP's link going down and up, virtio-rng seeding the guest's CRNG, and a
/// TAP that is missing, taken or forbidden failing with one line. Needs root (namespaces, TAPs), as
/// scripts/test runs.
final class NetworkTests: XCTestCase {
    static let netmask = "255.255.255.0"
    static let hostAddress = "10.0.2.1"

    /// A network namespace with a bridge at 10.0.2.1/24 and the given TAPs on it.
    final class Namespace {
        let name: String
        let ip: String
        private var deleted = false

        init(taps: [String]) throws {
            guard geteuid() == 0 else {
                throw TestSetupError("network tests make namespaces and TAPs: run them as root (scripts/test does in CI)")
            }
            ip = try Repository.tool("ip", package: "iproute2")
            name = "swhv-test-\(getpid())-\(UUID().uuidString.prefix(8))"
            let r = try Subprocess.run(Repository.path("scripts/netns"), ["create", name] + taps, timeout: 60)
            guard r.status == 0 else { throw TestSetupError("scripts/netns create failed: \(r.stderr)") }
        }

        /// Runs a command inside the namespace to its end.
        @discardableResult
        func run(_ arguments: [String], timeout: Double = 120) throws -> Subprocess.Outcome {
            try Subprocess.run(ip, ["netns", "exec", name] + arguments, timeout: timeout)
        }

        /// `ip -n NAME ...`: configures the namespace's interfaces.
        func ipCommand(_ arguments: [String]) throws {
            let r = try Subprocess.run(ip, ["-n", name] + arguments, timeout: 60)
            XCTAssertEqual(r.status, 0, "ip \(arguments): \(r.stderr)")
        }

        func delete() {
            guard !deleted else { return }
            deleted = true
            _ = try? Subprocess.run(Repository.path("scripts/netns"), ["delete", name], timeout: 60)
        }

        deinit { delete() }
    }

    func namespace(taps: [String] = ["tap0"]) throws -> Namespace {
        let ns = try Namespace(taps: taps)
        addTeardownBlock { ns.delete() }
        return ns
    }

    /// `ip=` for a static address on the bridge's subnet (the guest's /init applies it).
    static func ipArgument(_ address: String) -> String {
        "ip=\(address)::\(hostAddress):\(netmask)::eth0:off"
    }

    /// Boots the test guest in `ns` with `--net tap=...` and `extra` swhv arguments.
    func boot(in ns: Namespace, tap: String, address: String, net extraNet: String = "", memory: String = "512M",
              extra: [String] = []) throws -> ConsoleSession {
        let args = ["netns", "exec", ns.name, try Repository.releaseBinary(), "boot", "--quiet", "--accel", "interp",
                    "--memory", memory, "--kernel", try Repository.fixture("vmlinuz-cloud"),
                    "--initrd", try Repository.fixture("initramfs.cpio.gz"),
                    "--net", "tap=\(tap)" + extraNet, "--cmdline", Self.ipArgument(address)] + extra
        let g = try ConsoleSession(binary: ns.ip, arguments: args)
        addTeardownBlock { if g.process.isRunning { kill(g.process.processIdentifier, SIGKILL) } }
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        return g
    }

    /// `swhv boot` in `ns` that must fail before the guest runs: its outcome. `withoutNetAdmin`
    /// runs it as root without CAP_NET_ADMIN (dropped from the bounding set).
    func failingBoot(in ns: Namespace, net: String, withoutNetAdmin: Bool = false) throws -> Subprocess.Outcome {
        var command = [try Repository.releaseBinary(), "boot", "--accel", "interp",
                       "--kernel", try Repository.fixture("vmlinuz-cloud"),
                       "--initrd", try Repository.fixture("initramfs.cpio.gz"), "--net", net]
        if withoutNetAdmin {
            command = [try Repository.tool("setpriv", package: "util-linux"), "--bounding-set=-net_admin", "--"] + command
        }
        let r = try ns.run(command, timeout: 60)
        XCTAssertFalse(r.timedOut, "swhv hung: \(r.stderr)")
        return r
    }

    /// A scripts/netpeer in `ns`, running until its transfer is done.
    final class Peer {
        let process = Process()
        private let out = Pipe()
        private let output = LockedData()

        init(ns: Namespace, _ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: ns.ip)
            process.arguments = ["netns", "exec", ns.name, Repository.path("scripts/netpeer")] + arguments
            process.standardOutput = out
            process.standardError = out
            let o = output
            out.fileHandleForReading.readabilityHandler = { h in o.append(h.availableData) }
            try process.run()
            // Listening before the guest connects.
            let deadline = Date().addingTimeInterval(60)
            while !text.contains("listening") && process.isRunning && Date() < deadline { usleep(20_000) }
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        var text: String { String(decoding: output.data, as: UTF8.self) }

        /// (bytes, md5) from its last line, after waiting for it to finish.
        func result(timeout: TimeInterval) -> (bytes: Int, md5: String)? {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL); return nil }
            guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("done") }) else { return nil }
            let w = line.split(separator: " ")
            guard w.count >= 5, let n = Int(w[2]) else { return nil }
            return (n, String(w[4]))
        }
    }

    // MARK: One guest

    /// Ping both ways, the MAC from `mac=`, the CRNG seeded through virtio-rng, and a second VM on
    /// the same TAP refused with one line.
    func testPingBothWaysMACAndEntropy() throws {
        let ns = try namespace()
        let mac = "52:54:00:12:34:56"
        let g = try boot(in: ns, tap: "tap0", address: "10.0.2.15", net: ",mac=\(mac)", extra: ["--rng"])
        XCTAssertEqual(g.run("cat /sys/class/net/eth0/address"), mac)
        XCTAssertEqual(g.run("cat /sys/class/net/eth0/carrier"), "1")
        let ping = g.run("ping -c 3 -W 10 \(Self.hostAddress)", timeout: 120) ?? ""
        XCTAssertTrue(ping.contains("3 packets received"), "guest -> host: \(ping)")
        let back = try ns.run([try Repository.fixture("busybox"), "ping", "-c", "3", "-W", "10", "10.0.2.15"])
        XCTAssertTrue(back.stdout.contains("3 packets received"), "host -> guest: \(back.stdout) \(back.stderr)")

        // virtio-rng is the guest's hardware RNG and its CRNG is ready.
        XCTAssertEqual(g.run("cat /sys/class/misc/hw_random/rng_current"), "virtio_rng.0")
        XCTAssertEqual(g.run("dmesg | grep -c 'crng init done'"), "1")
        XCTAssertEqual(g.run("head -c 16 /dev/hwrng | wc -c"), "16")

        let second = try failingBoot(in: ns, net: "tap=tap0")
        XCTAssertEqual(second.status, 1)
        XCTAssertEqual(second.stderrLines, ["swhv: error: TAP device 'tap0' is in use by another process"])
        XCTAssertEqual(g.reboot(), 0, g.tail)
    }

    /// 64 MiB from a server in the namespace into the guest's busybox nc, and the same bytes back
    /// out of it: MD5 on both ends each way.
    func testSixtyFourMiBEachWayArriveIntact() throws {
        let ns = try namespace()
        let g = try boot(in: ns, tap: "tap0", address: "10.0.2.15", memory: "768M")
        let size = 64 << 20

        let source = try Peer(ns: ns, ["source", "5001", "\(size)", "17"])
        let received = g.runWithStatus("nc \(Self.hostAddress) 5001 > /tmp/in && md5sum /tmp/in && wc -c < /tmp/in",
                                       timeout: 1200)
        let sent = source.result(timeout: 60)
        XCTAssertEqual(received?.status, 0, g.tail)
        let lines = received?.output.split(separator: "\n") ?? []
        XCTAssertEqual(lines.last.map(String.init), "\(size)", "bytes the guest got")
        XCTAssertEqual(sent?.bytes, size)
        XCTAssertEqual(lines.first.map { String($0.prefix(32)) }, sent?.md5, "host -> guest MD5")

        let sink = try Peer(ns: ns, ["sink", "5002", "\(size)"])
        let back = g.runWithStatus("nc \(Self.hostAddress) 5002 < /tmp/in", timeout: 1800)
        let got = sink.result(timeout: 120)
        XCTAssertEqual(back?.status, 0, g.tail)
        XCTAssertEqual(got?.bytes, size, "bytes the host got")
        XCTAssertEqual(got?.md5, sent?.md5, "guest -> host MD5")
        XCTAssertEqual(g.reboot(), 0, g.tail)
    }

    /// The TAP goes down: the guest's carrier drops (config interrupt, VIRTIO_NET_S_LINK_UP); up
    /// again: carrier back and traffic flows.
    func testLinkDownAndUpReachTheGuest() throws {
        let ns = try namespace()
        let g = try boot(in: ns, tap: "tap0", address: "10.0.2.15")
        XCTAssertEqual(g.run("cat /sys/class/net/eth0/carrier"), "1")
        try ns.ipCommand(["link", "set", "tap0", "down"])
        let wait = "for i in $(seq 100); do c=$(cat /sys/class/net/eth0/carrier); [ $c = %@ ] && break; sleep 0.2; done; echo $c"
        XCTAssertEqual(g.run(wait.replacingOccurrences(of: "%@", with: "0")), "0", "carrier after the TAP went down")
        // operstate follows the carrier through the kernel's linkwatch work, up to a second later.
        let operstate = "for i in $(seq 50); do s=$(cat /sys/class/net/eth0/operstate); [ $s = down ] && break; sleep 0.2; done; echo $s"
        XCTAssertEqual(g.run(operstate), "down")
        try ns.ipCommand(["link", "set", "tap0", "up"])
        XCTAssertEqual(g.run(wait.replacingOccurrences(of: "%@", with: "1")), "1", "carrier after the TAP came up")
        let ping = g.run("ping -c 2 -W 10 \(Self.hostAddress)", timeout: 120) ?? ""
        XCTAssertTrue(ping.contains("2 packets received"), ping)
        XCTAssertEqual(g.reboot(), 0, g.tail)
    }

    // MARK: Two guests

    /// Two VMs on one bridge: each sees its own default MAC (from its TAP's name), they ping each
    /// other and one sends the other a line through nc.
    func testTwoGuestsOnABridgeTalkToEachOther() throws {
        let ns = try namespace(taps: ["tap0", "tap1"])
        let a = try boot(in: ns, tap: "tap0", address: "10.0.2.15")
        let b = try boot(in: ns, tap: "tap1", address: "10.0.2.16")
        let macA = a.run("cat /sys/class/net/eth0/address") ?? "a", macB = b.run("cat /sys/class/net/eth0/address") ?? "b"
        XCTAssertNotEqual(macA, macB)
        XCTAssertTrue(macA.hasPrefix("52:54:00:"), macA)
        let ping = a.run("ping -c 3 -W 10 10.0.2.16", timeout: 120) ?? ""
        XCTAssertTrue(ping.contains("3 packets received"), "A -> B: \(ping)")
        // Every descriptor redirected: the console's command substitution must not wait for nc.
        XCTAssertEqual(b.run("nc -l -p 7000 </dev/null >/tmp/msg 2>/dev/null & echo listening"), "listening")
        var delivered = false
        for _ in 0..<10 where !delivered {
            delivered = a.runWithStatus("echo hello-from-a | nc 10.0.2.16 7000")?.status == 0
            if !delivered { sleep(1) }
        }
        XCTAssertTrue(delivered, a.tail)
        let msg = b.run("for i in $(seq 50); do [ -s /tmp/msg ] && break; sleep 0.2; done; cat /tmp/msg")
        XCTAssertEqual(msg, "hello-from-a")
        XCTAssertEqual(a.reboot(), 0, a.tail)
        XCTAssertEqual(b.reboot(), 0, b.tail)
    }

    // MARK: TAPs swhv cannot use

    func testMissingTapIsOneClearLine() throws {
        let ns = try namespace()
        let r = try failingBoot(in: ns, net: "tap=swhv-none")
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderrLines, ["swhv: error: TAP device 'swhv-none' does not exist (create it first: ip tuntap add dev swhv-none mode tap)"])
        let bridge = try failingBoot(in: ns, net: "tap=br0")
        XCTAssertEqual(bridge.status, 1)
        XCTAssertEqual(bridge.stderrLines.count, 1, bridge.stderr)
        XCTAssertTrue(bridge.stderr.contains("'br0' is not a single-queue TAP device"), bridge.stderr)
    }

    /// A TAP that belongs to another user, opened without CAP_NET_ADMIN: refused by the kernel, one line.
    func testTapSwhvMayNotOpenIsOneClearLine() throws {
        let ns = try namespace(taps: [])
        try ns.ipCommand(["tuntap", "add", "dev", "tapr", "mode", "tap", "user", "1"])
        let r = try failingBoot(in: ns, net: "tap=tapr", withoutNetAdmin: true)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderrLines.first?.hasPrefix("swhv: error: swhv may not open TAP device 'tapr'") == true, r.stderr)
    }
}
