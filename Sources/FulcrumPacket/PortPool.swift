/// Source ports for SNAT. Freed ports go to the back of a queue, so a port is reused as late as possible
/// (a backend may still hold the old connection in TIME_WAIT). Fixed storage; one worker owns it.
public struct PortPool: Sendable {
    private var ring: [UInt16]
    private var head = 0
    public private(set) var available: Int

    public init(_ range: ClosedRange<UInt16>) {
        ring = Array(range)
        available = ring.count
    }

    public var capacity: Int { ring.count }

    /// A free port, or nil when all are in use.
    public mutating func allocate() -> UInt16? {
        guard available > 0 else { return nil }
        let port = ring[head]
        head = (head + 1) % ring.count
        available -= 1
        return port
    }

    /// Returns a port taken with `allocate`.
    public mutating func release(_ port: UInt16) {
        precondition(available < ring.count, "released more ports than allocated")
        ring[(head + available) % ring.count] = port
        available += 1
    }
}
