import CFulcrumLinux
import FulcrumCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The thread-safe side of one worker's mirroring, for the HA mirror channel: the change feed, a snapshot on
/// request, and mirrored flows to install on a standby. The worker serves requests between batches (at least
/// every poll interval, 100 ms); the control plane never touches the flow table itself.
public final class FlowMirrorPort: Sendable {
    private enum Command: Sendable {
        case install([FlowRecord])
        case remove([FlowKey])
    }

    private struct SnapshotState: Sendable {
        var requested: UInt64 = 0
        var answered: UInt64 = 0
        var records: [FlowRecord] = []
    }

    /// New and removed flows, filled by the worker while `isEnabled`.
    public let feed: FlowChangeFeed
    private let enabled = Atomic<Bool>(false)
    private let commands = Mutex<[Command]>([])
    private let snapshotState = Mutex(SnapshotState())
    private let rejectedCount = Atomic<UInt64>(0)

    public init(feedCapacity: Int = 65536) {
        feed = FlowChangeFeed(capacity: feedCapacity)
    }

    /// Whether the worker publishes its changes (off until a mirror channel turns it on: nobody drains).
    public var isEnabled: Bool {
        get { enabled.load(ordering: .relaxed) }
        set { enabled.store(newValue, ordering: .relaxed) }
    }

    /// Mirrored flows that could not be installed (unknown backend, SNAT port taken, already present).
    public var rejected: UInt64 { rejectedCount.load(ordering: .relaxed) }

    /// Every live flow, taken by the worker between two batches; pending feed changes are cleared at the same
    /// moment (the snapshot contains them). Nil when the worker did not answer within `timeout` (not running).
    /// One caller at a time.
    public func snapshotFlows(timeout: Duration = .seconds(2)) -> [FlowRecord]? {
        let id = snapshotState.withLock { s -> UInt64 in
            s.requested &+= 1
            return s.requested
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            let answer = snapshotState.withLock { s -> [FlowRecord]? in
                guard s.answered == id else { return nil }
                defer { s.records = [] }
                return s.records
            }
            if let answer { return answer }
            // The worker answers within one poll interval; waiting in 1 ms steps keeps this simple.
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
        return nil
    }

    /// Queues flows mirrored from the active node for the worker to install (standby side).
    public func installMirrored(_ records: [FlowRecord]) {
        guard !records.isEmpty else { return }
        commands.withLock { $0.append(.install(records)) }
    }

    /// Queues the removal of mirrored flows that ended on the active node.
    public func removeMirrored(_ keys: [FlowKey]) {
        guard !keys.isEmpty else { return }
        commands.withLock { $0.append(.remove(keys)) }
    }

    /// Worker side, once per loop: publish the batch's changes, apply queued commands, answer a snapshot.
    func serve(_ processor: any FlowMirroring, log: FlowChangeLog, snapshot: () -> PoolSnapshot, now: UInt64) {
        let changes = log.take()
        if isEnabled { feed.publish(changes) }
        let queued = commands.withLock { c -> [Command] in
            defer { c = [] }
            return c
        }
        if !queued.isEmpty {
            let current = snapshot()
            for command in queued {
                switch command {
                case .install(let records):
                    let rejected = processor.installMirrored(records, snapshot: current, now: now)
                    rejectedCount.add(UInt64(rejected), ordering: .relaxed)
                case .remove(let keys):
                    processor.removeMirrored(keys, now: now)
                }
            }
        }
        let wanted = snapshotState.withLock { $0.requested != $0.answered ? $0.requested : nil }
        if let wanted {
            let records = processor.flowRecords(now: now)
            feed.reset()
            snapshotState.withLock { s in
                s.records = records
                s.answered = wanted
            }
        }
    }
}
