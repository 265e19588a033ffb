/// The Internet checksum (RFC 1071): the 16-bit one's complement of the one's complement sum.
///
/// Accumulate the parts (pseudo-header, then message) with `add`, then read `value`. A message whose
/// checksum field is filled in sums to a `value` of 0.
struct InternetChecksum {
    private var sum: UInt32 = 0
    /// Whether an odd byte is pending, so that parts of odd length concatenate correctly.
    private var pendingHigh: UInt8?

    init() {}

    mutating func add(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
            if let high = pendingHigh {
                sum &+= UInt32(high) << 8 | UInt32(byte)
                pendingHigh = nil
                // Fold often enough that the 32-bit sum cannot overflow, whatever the length.
                if sum > 0xFFFF_0000 { sum = (sum & 0xFFFF) + (sum >> 16) }
            } else {
                pendingHigh = byte
            }
        }
    }

    mutating func add(_ word: UInt16) {
        add([UInt8(truncatingIfNeeded: word >> 8), UInt8(truncatingIfNeeded: word)])
    }

    mutating func add(_ word: UInt32) {
        add(UInt16(truncatingIfNeeded: word >> 16))
        add(UInt16(truncatingIfNeeded: word))
    }

    var value: UInt16 {
        var total = sum
        if let high = pendingHigh { total &+= UInt32(high) << 8 }
        while total > 0xFFFF { total = (total & 0xFFFF) + (total >> 16) }
        return ~UInt16(truncatingIfNeeded: total)
    }
}
