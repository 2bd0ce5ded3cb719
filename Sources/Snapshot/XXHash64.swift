/// XXH64 (Yann Collet's xxHash, 64-bit): the snapshot's checksum for the state file, its
/// sections and guest-memory chunks. Chosen for speed (several GB/s in plain Swift, so checking
/// a memory file costs little next to reading it) and a stable, published definition; it guards
/// against truncation and corruption, not against an attacker who rewrites the file (the files
/// are the user's, like disk images).
public enum XXHash64 {
    static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x &<< r) | (x &>> (64 &- r)) }

    @inline(__always) static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always) static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 {
        (acc ^ round(0, v)) &* p1 &+ p4
    }

    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    public static func hash(_ buffer: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        guard let base = buffer.baseAddress else { return hash(base: nil, count: 0, seed: seed) }
        return hash(base: base, count: buffer.count, seed: seed)
    }

    public static func hash(base: UnsafeRawPointer?, count: Int, seed: UInt64 = 0) -> UInt64 {
        guard let p = base, count > 0 else { return finish(seed &+ p5, count: 0) }
        var i = 0
        var h: UInt64
        if count >= 32 {
            var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
            let stripes = count - 32
            while i <= stripes {
                v1 = round(v1, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
                v2 = round(v2, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)))
                v3 = round(v3, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)))
                v4 = round(v4, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)))
                i += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        h &+= UInt64(truncatingIfNeeded: count)
        return tail(h, p + i, count - i)
    }

    /// The bytes after the last 32-byte stripe, then the avalanche.
    @inline(__always)
    static func tail(_ start: UInt64, _ p: UnsafeRawPointer, _ count: Int) -> UInt64 {
        var h = start
        var i = 0
        while i + 8 <= count {
            h ^= round(0, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            h = rotl(h, 27) &* p1 &+ p4
            i += 8
        }
        if i + 4 <= count {
            h ^= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self))) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            i += 4
        }
        while i < count {
            h ^= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) &* p5
            h = rotl(h, 11) &* p1
            i += 1
        }
        return avalanche(h)
    }

    @inline(__always)
    static func avalanche(_ x: UInt64) -> UInt64 {
        var h = x
        h ^= h >> 33; h &*= p2
        h ^= h >> 29; h &*= p3
        h ^= h >> 32
        return h
    }

    /// An empty input's hash: the length added, nothing else.
    static func finish(_ h: UInt64, count: Int) -> UInt64 { avalanche(h &+ UInt64(truncatingIfNeeded: count)) }
}

extension XXHash64 {
    /// Incremental XXH64 over pieces fed in order; same result as one `hash` over their concatenation.
    public struct Stream {
        private var v1: UInt64, v2: UInt64, v3: UInt64, v4: UInt64
        private let seed: UInt64
        private var total: UInt64 = 0
        /// Bytes of an incomplete 32-byte stripe.
        private var pending: [UInt8] = []

        public init(seed: UInt64 = 0) {
            self.seed = seed
            v1 = seed &+ p1 &+ p2; v2 = seed &+ p2; v3 = seed; v4 = seed &- p1
        }

        private mutating func stripe(_ p: UnsafeRawPointer) {
            @inline(__always) func load(_ at: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
            v1 = round(v1, load(0)); v2 = round(v2, load(8)); v3 = round(v3, load(16)); v4 = round(v4, load(24))
        }

        public mutating func update(_ base: UnsafeRawPointer, count: Int) {
            total &+= UInt64(truncatingIfNeeded: count)
            var i = 0
            if !pending.isEmpty {
                let take = min(32 - pending.count, count)
                pending.append(contentsOf: UnsafeRawBufferPointer(start: base, count: take))
                i = take
                guard pending.count == 32 else { return }
                pending.withUnsafeBytes { stripe($0.baseAddress!) }
                pending.removeAll(keepingCapacity: true)
            }
            while i + 32 <= count { stripe(base + i); i += 32 }
            if i < count { pending.append(contentsOf: UnsafeRawBufferPointer(start: base + i, count: count - i)) }
        }

        public mutating func update(_ bytes: [UInt8]) {
            bytes.withUnsafeBytes { if let b = $0.baseAddress { update(b, count: $0.count) } }
        }

        public func finalize() -> UInt64 {
            var h: UInt64
            if total >= 32 {
                h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
                h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
            } else {
                h = seed &+ p5
            }
            h &+= total
            // The tail is what `hash` processes after its stripes.
            return pending.withUnsafeBytes { t in
                t.baseAddress.map { XXHash64.tail(h, $0, t.count) } ?? XXHash64.avalanche(h)
            }
        }
    }
}
