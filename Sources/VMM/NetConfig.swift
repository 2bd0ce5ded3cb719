import Devices

/// One `--net tap=NAME[,mac=MAC][,offload=all|csum|none][,mrg_rxbuf=on|off]`.
public struct NetConfig: Sendable, Equatable {
    public var tap: String
    /// nil: derived from the TAP's name (`defaultMAC`), so it is the same on every boot.
    public var mac: [UInt8]?
    public var offloads: VirtioNet.OffloadPolicy = .all
    public var mergeableReceiveBuffers = true

    public init(tap: String, mac: [UInt8]? = nil) { self.tap = tap; self.mac = mac }

    public static let usage = "tap=NAME[,mac=MAC][,offload=all|csum|none][,mrg_rxbuf=on|off]"

    public static func parse(_ text: String) throws(MachineError) -> NetConfig {
        var tap: String?
        var c = NetConfig(tap: "")
        for option in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard kv.count == 2 else {
                throw .invalidArgument("--net option '\(option)' is not KEY=VALUE (expected \(usage))")
            }
            switch kv[0] {
            case "tap":
                guard !kv[1].isEmpty else { throw .invalidArgument("--net tap= needs an interface name") }
                tap = kv[1]
            case "mac":
                guard let m = VirtioNet.parse(mac: kv[1]) else {
                    throw .invalidArgument("--net mac '\(kv[1])' is not a MAC address (like 52:54:00:12:34:56)")
                }
                guard m[0] & 1 == 0 else {
                    throw .invalidArgument("--net mac '\(kv[1])' is a multicast address (the first byte must be even)")
                }
                c.mac = m
            case "offload":
                guard let p = VirtioNet.OffloadPolicy(rawValue: kv[1]) else {
                    throw .invalidArgument("--net offload '\(kv[1])' is not one of all, csum, none")
                }
                c.offloads = p
            case "mrg_rxbuf":
                guard kv[1] == "on" || kv[1] == "off" else {
                    throw .invalidArgument("--net mrg_rxbuf '\(kv[1])' is not on or off")
                }
                c.mergeableReceiveBuffers = kv[1] == "on"
            default:
                throw .invalidArgument("--net option '\(kv[0])' is unknown (expected \(usage))")
            }
        }
        guard let tap else { throw .invalidArgument("--net '\(text)' names no TAP (expected \(usage))") }
        c.tap = tap
        return c
    }

    /// A locally administered unicast MAC from the TAP's name (52:54:00 as QEMU's, then 24 bits of
    /// FNV-1a): stable across boots, and different for two VMs on one bridge with different TAPs.
    public static func defaultMAC(tap: String) -> [UInt8] {
        var h: UInt32 = 0x811C_9DC5
        for b in tap.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        return [0x52, 0x54, 0x00, UInt8(truncatingIfNeeded: h >> 16), UInt8(truncatingIfNeeded: h >> 8),
                UInt8(truncatingIfNeeded: h)]
    }
}
