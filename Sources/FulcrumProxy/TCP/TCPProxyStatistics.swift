import Synchronization

/// Counters of the TCP flows of the listeners that share it: flows, bytes each way, and the most bytes
/// the proxy ever held queued for one socket (the backpressure bound). Lock-free; for tests and metrics.
public final class TCPProxyStatistics: Sendable {
    private let opened = Atomic<Int>(0)
    private let closed = Atomic<Int>(0)
    private let fromClients = Atomic<UInt64>(0)
    private let fromBackends = Atomic<UInt64>(0)
    private let peakQueued = Atomic<Int>(0)
    private let pauses = Atomic<Int>(0)

    public init() {}

    /// Flows whose upstream connected and that were glued (each counted once on `Backend.connectionOpened`).
    public var flowsOpened: Int { opened.load(ordering: .relaxed) }
    /// Flows whose two connections have both closed.
    public var flowsClosed: Int { closed.load(ordering: .relaxed) }
    /// Bytes read from clients and relayed to backends.
    public var bytesFromClients: UInt64 { fromClients.load(ordering: .relaxed) }
    /// Bytes read from backends and relayed to clients.
    public var bytesFromBackends: UInt64 { fromBackends.load(ordering: .relaxed) }
    /// The most bytes ever queued in the proxy for one socket, waiting for its peer to read them.
    public var peakQueuedBytes: Int { peakQueued.load(ordering: .relaxed) }
    /// How often a side stopped reading because the other side's socket was full (backpressure at work).
    public var readPauses: Int { pauses.load(ordering: .relaxed) }

    func flowOpened() { opened.wrappingAdd(1, ordering: .relaxed) }
    func flowClosed() { closed.wrappingAdd(1, ordering: .relaxed) }
    func readPaused() { pauses.wrappingAdd(1, ordering: .relaxed) }

    func relayed(_ bytes: Int, fromClient: Bool) {
        if fromClient {
            fromClients.wrappingAdd(UInt64(bytes), ordering: .relaxed)
        } else {
            fromBackends.wrappingAdd(UInt64(bytes), ordering: .relaxed)
        }
    }

    func queued(_ bytes: Int) {
        var current = peakQueued.load(ordering: .relaxed)
        while bytes > current {
            let (exchanged, original) = peakQueued.compareExchange(
                expected: current, desired: bytes, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}
