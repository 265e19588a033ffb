/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// Sums are kept as 32-bit partial sums of 16-bit network-order words (`UInt32`), folded and
/// complemented only when written into a header.
public enum Checksum {
    /// Ones'-complement sum of `bytes` as 16-bit big-endian words (an odd last byte is padded with
    /// zero), added to `initial`. Returns a partial sum; `finish` turns it into a header value.
    public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        // Summing native-endian words and swapping once at the end gives the same result (RFC 1071 §2(B)).
        var acc: UInt64 = 0
        var i = 0
        let n = bytes.count
        while i + 8 <= n {
            let word = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            acc &+= (word & 0xFFFF_FFFF) &+ (word >> 32)
            i += 8
        }
        while i + 2 <= n {
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i += 2
        }
        if i < n {
            // The odd byte is the high byte of a network-order word: in a little-endian load it is the low one.
            #if _endian(little)
            acc &+= UInt64(bytes[i])
            #else
            acc &+= UInt64(bytes[i]) << 8
            #endif
        }
        let folded = UInt16(truncatingIfNeeded: fold64(acc))
        let network = UInt16(bigEndian: folded)  // native-order sum → network-order value
        return fold(initial &+ UInt32(network))
    }

    /// Folds a partial sum to 16 bits (end-around carry).
    @inline(__always)
    public static func fold(_ sum: UInt32) -> UInt32 {
        var s = sum
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return s
    }

    @inline(__always)
    static func fold64(_ sum: UInt64) -> UInt64 {
        var s = sum
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return s
    }

    /// The value to write into a checksum field: the complement of the folded sum.
    @inline(__always)
    public static func finish(_ sum: UInt32) -> UInt16 {
        ~UInt16(truncatingIfNeeded: fold(sum))
    }

    /// Partial sum of the IPv4 pseudo-header used by TCP and UDP.
    @inline(__always)
    public static func pseudoHeader(source: UInt32, destination: UInt32, protocol proto: UInt8, length: Int) -> UInt32 {
        let s = (source >> 16) &+ (source & 0xFFFF) &+ (destination >> 16) &+ (destination & 0xFFFF)
        return fold(s &+ UInt32(proto) &+ UInt32(truncatingIfNeeded: length & 0xFFFF))
    }

    /// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changed from `old` to `new`.
    /// HC' = ~(~HC + ~m + m')
    @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        let s = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        return ~UInt16(truncatingIfNeeded: fold(s))
    }

    /// The same for a 32-bit field (an IPv4 address): two word updates.
    @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        let s =
            UInt32(~checksum) &+ UInt32(~UInt16(truncatingIfNeeded: old >> 16))
            &+ UInt32(~UInt16(truncatingIfNeeded: old))
            &+ (new >> 16) &+ (new & 0xFFFF)
        return ~UInt16(truncatingIfNeeded: fold(s))
    }
}
