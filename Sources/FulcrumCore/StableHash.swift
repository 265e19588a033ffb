/// Hashing that gives the same answer in every process and on every node.
///
/// Swift's `Hasher` is seeded per process, so two balancer nodes would disagree on where a key goes.
/// Consistent hashing across a cluster needs a stable function: FNV-1a over the bytes, finished with
/// MurmurHash3's 64-bit finaliser for avalanche (FNV alone mixes its last bytes poorly).
public enum StableHash {
    @inlinable
    public static func fmix64(_ value: UInt64) -> UInt64 {
        var k = value
        k ^= k >> 33
        k &*= 0xff51_afd7_ed55_8ccd
        k ^= k >> 33
        k &*= 0xc4ce_b9fe_1a85_ec53
        k ^= k >> 33
        return k
    }

    @inlinable
    public static func hash(bytes: some Sequence<UInt8>, seed: UInt64 = 0) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ fmix64(seed)
        for byte in bytes {
            h ^= UInt64(byte)
            h &*= 0x0000_0100_0000_01b3
        }
        return fmix64(h)
    }

    @inlinable
    public static func hash(_ string: String, seed: UInt64 = 0) -> UInt64 {
        hash(bytes: string.utf8, seed: seed)
    }

    /// Hash of a client address (the `source` key).
    @inlinable
    public static func hash(_ address: IPAddress) -> UInt64 {
        switch address {
        case .v4(let a): return fmix64(UInt64(a) | 0x4_0000_0000)
        case .v6(let hi, let lo): return fmix64(fmix64(hi) ^ lo)
        }
    }

    /// Hash of a connection's 5-tuple (the `flow` key of the packet plane). Symmetric in nothing:
    /// the packet plane hashes the client → VIP direction only.
    @inlinable
    public static func hash(
        source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16, protocol proto: UInt8
    ) -> UInt64 {
        let ports = UInt64(sourcePort) << 24 | UInt64(destinationPort) << 8 | UInt64(proto)
        return fmix64(hash(source) &* 31 ^ fmix64(hash(destination) ^ ports))
    }

    /// Derives a different, still deterministic key for the n-th retry of the same request.
    @inlinable
    public static func rehash(_ hash: UInt64, attempt: Int) -> UInt64 {
        attempt == 0 ? hash : fmix64(hash ^ (UInt64(truncatingIfNeeded: attempt) &* 0x9e37_79b9_7f4a_7c15))
    }

    /// Maps a 64-bit hash onto `0..<count` without a division (Lemire's multiply-shift).
    @inlinable
    public static func reduce(_ hash: UInt64, into count: Int) -> Int {
        Int(truncatingIfNeeded: hash.multipliedFullWidth(by: UInt64(count)).high)
    }
}
