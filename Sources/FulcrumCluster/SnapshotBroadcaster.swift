import Synchronization

/// Hands each new snapshot to every `snapshots()` sequence (newest wins for a slow reader).
final class SnapshotBroadcaster: Sendable {
    private let continuations = Mutex<[Int: AsyncStream<ConfigSnapshot>.Continuation]>([:])
    private let nextID = Atomic<Int>(0)

    func subscribe(current: ConfigSnapshot?) -> AsyncStream<ConfigSnapshot> {
        let (stream, continuation) = AsyncStream<ConfigSnapshot>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = nextID.add(1, ordering: .relaxed).newValue
        if let current { continuation.yield(current) }
        continuation.onTermination = { [weak self] _ in
            _ = self?.continuations.withLock { $0.removeValue(forKey: id) }
        }
        continuations.withLock { $0[id] = continuation }
        return stream
    }

    func publish(_ snapshot: ConfigSnapshot) {
        for continuation in continuations.withLock({ Array($0.values) }) { continuation.yield(snapshot) }
    }

    func finish() {
        for continuation in continuations.withLock({ Array($0.values) }) { continuation.finish() }
    }
}
