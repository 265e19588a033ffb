import Synchronization

/// A lock-free pseudo-random source for the hot path: SplitMix64 over an atomic counter.
///
/// Not cryptographic. Shared by every thread that picks from one selector; one atomic add per number.
public final class FastRandom: Sendable {
    private let state: Atomic<UInt64>

    public init(seed: UInt64) {
        state = Atomic(seed)
    }

    @inlinable
    public func next() -> UInt64 {
        StableHash.fmix64(advance())
    }

    @usableFromInline
    func advance() -> UInt64 {
        state.wrappingAdd(0x9e37_79b9_7f4a_7c15, ordering: .relaxed).newValue
    }
}
