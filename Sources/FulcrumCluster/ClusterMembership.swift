import Logging
import ServiceLifecycle
import Synchronization

/// Registers this node at `<prefix>nodes/<id>` under an etcd lease and keeps the lease alive, so the key
/// disappears by itself `ttl` seconds after the node dies. The record is rewritten when it changes
/// (``update(_:)``); a lease etcd forgot (expired while unreachable) is replaced by a new one. On graceful
/// shutdown the lease is revoked: the node leaves the list at once.
public final class ClusterMembership: Service {
    public let client: EtcdClient
    public let prefix: String
    /// Lease time to live in seconds; keep-alives go every third of it.
    public let ttl: Int64
    private let retry: Backoff
    private let logger: Logger
    private let state: Mutex<State>
    private let wakeup = Wakeup()

    private struct State {
        var record: NodeRecord
        var registered = false
        var leaving = false
    }

    public init(
        client: EtcdClient, prefix: String, record: NodeRecord, ttl: Int64 = 10, retry: Backoff = Backoff(),
        logger: Logger = Logger(label: "fulcrum.cluster")
    ) throws(ClusterSetupError) {
        guard prefix.hasPrefix("/"), prefix.hasSuffix("/") else { throw .invalidPrefix(prefix) }
        guard ClusterKey.isValidName(record.id) else { throw .invalidNodeID(record.id) }
        self.client = client
        self.prefix = prefix
        self.ttl = max(ttl, 2)
        self.retry = retry
        self.logger = logger
        self.state = Mutex(State(record: record))
    }

    /// The record as this node will publish it.
    public var record: NodeRecord { state.withLock { $0.record } }

    /// Whether the record is in etcd under a live lease (as far as the last keep-alive knows).
    public var isRegistered: Bool { state.withLock { $0.registered } }

    /// Changes the published record (config revision, health); written at once when etcd is reachable.
    public func update(_ change: (inout NodeRecord) -> Void) {
        let changed = state.withLock { state in
            let before = state.record
            change(&state.record)
            state.record.id = before.id
            return state.record != before
        }
        if changed { wakeup.signal() }
    }

    /// Leaves the cluster: revokes the lease and returns from `run()`.
    public func leave() {
        state.withLock { $0.leaving = true }
        wakeup.signal()
    }

    /// Registers and keeps alive until graceful shutdown or ``leave()`` (then revokes the lease), or until
    /// cancelled (then the lease is left to expire, as when the process dies).
    public func run() async throws {
        await withGracefulShutdownHandler {
            await self.maintain()
        } onGracefulShutdown: {
            self.leave()
        }
    }

    private var key: String { ClusterKey.node(record.id).key(under: prefix) }

    private func maintain() async {
        var backoff = retry
        var lease: Int64?
        while !Task.isCancelled && !state.withLock({ $0.leaving }) {
            do {
                let granted = try await client.grantLease(ttl: ttl)
                lease = granted.id
                var written: NodeRecord?
                while !Task.isCancelled {
                    let record = state.withLock { $0.record }
                    if record != written {
                        try await client.put(key, value: record.json(), lease: granted.id)
                        written = record
                        setRegistered(true)
                        backoff.reset()
                    }
                    await wakeup.wait(timeout: .seconds(Double(granted.ttl) / 3))
                    if state.withLock({ $0.leaving }) { break }
                    if Task.isCancelled { return }
                    if try await client.keepAlive(lease: granted.id) == 0 {
                        logger.warning("cluster lease expired; registering again", metadata: ["node": "\(record.id)"])
                        setRegistered(false)
                        break
                    }
                }
            } catch {
                if Task.isCancelled { return }
                setRegistered(false)
                logger.warning("cluster registration failed; retrying", metadata: ["error": "\(error)"])
                await wakeup.wait(timeout: backoff.next())
            }
        }
        if let lease, state.withLock({ $0.leaving }) {
            do {
                try await client.revoke(lease: lease)
            } catch {
                logger.warning("could not revoke the cluster lease; it will expire", metadata: ["error": "\(error)"])
            }
        }
        setRegistered(false)
    }

    private func setRegistered(_ value: Bool) {
        state.withLock { $0.registered = value }
    }

    /// The nodes registered under `prefix` now (live leases only), sorted by id. A record that is not
    /// valid JSON is listed with health `unreadable`.
    public static func liveNodes(client: EtcdClient, prefix: String) async throws -> [NodeRecord] {
        let directory = prefix + ClusterKey.nodesDirectory
        let (_, keyValues) = try await client.range(prefix: directory)
        return keyValues.map { keyValue in
            NodeRecord.decode(keyValue.value)
                ?? NodeRecord(id: String(keyValue.key.dropFirst(directory.count)), health: "unreadable")
        }
        .sorted { $0.id < $1.id }
    }
}
