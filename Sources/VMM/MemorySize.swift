/// Parses a memory size as users write it: `512` (MiB, as QEMU's -m), `256M`, `1G`, `1536MiB`, `2g`.
public enum MemorySize {
    public static func parse(_ text: String) -> UInt64? {
        let t = text.trimmingCharacters(in: " ").lowercased()
        guard !t.isEmpty else { return nil }
        var digits = Substring(t)
        var unit = Substring("")
        if let i = t.firstIndex(where: { !$0.isNumber }) {
            digits = t[..<i]
            unit = t[i...]
        }
        guard !digits.isEmpty, let n = UInt64(digits) else { return nil }
        let shift: UInt64
        switch unit {
        case "", "m", "mb", "mib": shift = 20
        case "k", "kb", "kib": shift = 10
        case "g", "gb", "gib": shift = 30
        case "t", "tb", "tib": shift = 40
        default: return nil
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : v
    }
}

extension String {
    func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s = s.dropFirst() }
        while s.last == c { s = s.dropLast() }
        return String(s)
    }
}
