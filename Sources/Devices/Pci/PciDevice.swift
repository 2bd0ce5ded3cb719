import VMCore

/// One PCI function on the root bus: a configuration space and the memory BARs it decodes.
/// Called only on the vCPU thread.
public protocol PciDevice: AnyObject {
    /// A short name for messages ("virtio-blk").
    var pciName: String { get }
    /// The configuration space; the root reads BAR addresses and the command register from it to route MMIO.
    var config: PciConfigSpace { get }
    /// A guest configuration read (`offset` < 256, `size` 1/2/4, not crossing a dword).
    func configRead(offset: Int, size: Int) -> UInt32
    /// A guest configuration write. Devices override it to react (MSI-X enable, ...).
    func configWrite(offset: Int, size: Int, value: UInt32)
    /// An access at `offset` inside memory BAR `bar`. Only called while memory decoding is enabled.
    func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64
    func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64)
}

extension PciDevice {
    public func configRead(offset: Int, size: Int) -> UInt32 { config.read(offset: offset, size: size) }
    public func configWrite(offset: Int, size: Int, value: UInt32) {
        config.write(offset: offset, size: size, value: value)
    }
}

/// A bus/device/function address.
public struct PciAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let bus: UInt8
    public let device: UInt8
    public let function: UInt8
    public init(bus: UInt8 = 0, device: UInt8, function: UInt8 = 0) {
        self.bus = bus; self.device = device; self.function = function
    }
    /// The form Linux prints: 0000:00:01.0.
    public var description: String {
        "0000:\(hexDigits(bus, width: 2)):\(hexDigits(device, width: 2)).\(function)"
    }
}

/// Where `PciRoot.add` placed a device.
public struct PciPlacement: Equatable, Sendable {
    public let address: PciAddress
    /// The guest-physical address assigned to each declared BAR, by BAR index.
    public let barAddresses: [Int: UInt64]
}

/// The host bridge at 00:00.0. Linux's type-1 probe (arch/x86/pci/direct.c) accepts the config
/// mechanism when bus 0 holds a host bridge or an Intel device; this is both (an i440FX PMC look-alike).
public final class PciHostBridge: PciDevice {
    public let config = PciConfigSpace(vendorID: 0x8086, deviceID: 0x1237, revisionID: 0x02,
                                       classCode: 0x06, subclass: 0x00)
    public var pciName: String { "host-bridge" }
    public init() {}
    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 { allOnes(size: size) }
    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {}
}
