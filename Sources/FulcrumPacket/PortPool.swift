/// Source ports for SNAT. Freed ports go to the back of a queue, so a port is reused as late as possible
/// (a backend may still hold the old connection in TIME_WAIT). Fixed storage; one worker owns it.
public struct PortPool: Sendable {
    private var ring: [UInt16]
    private var head = 0
    public private(set) var available: Int

    /// Ring index of each port (port − lower bound), so a given port can be claimed in O(1).
    private var position: [Int32]
    private let lower: UInt16

    public init(_ range: ClosedRange<UInt16>) {
        ring = Array(range)
        available = ring.count
        lower = range.lowerBound
        position = (0..<Int32(ring.count)).map { $0 }
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

    /// Takes this particular port (a flow mirrored from the active node keeps its SNAT port); false when it
    /// is outside the range or in use.
    public mutating func claim(_ port: UInt16) -> Bool {
        guard port >= lower, Int(port - lower) < ring.count else { return false }
        let index = Int(position[Int(port - lower)])
        guard (index - head + ring.count) % ring.count < available else { return false }
        // Swap it to the head, then allocate it.
        let other = ring[head]
        ring[index] = other
        position[Int(other - lower)] = Int32(index)
        ring[head] = port
        position[Int(port - lower)] = Int32(head)
        return allocate() == port
    }

    /// Returns a port taken with `allocate`.
    public mutating func release(_ port: UInt16) {
        precondition(available < ring.count, "released more ports than allocated")
        let index = (head + available) % ring.count
        ring[index] = port
        if port >= lower, Int(port - lower) < ring.count { position[Int(port - lower)] = Int32(index) }
        available += 1
    }
}
