import FulcrumAdmin
import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A clustered node's link to etcd: the shared configuration store, this node's membership record, and
/// counters the admin API shows. Built by ``FulcrumServer/joinCluster(_:)`` from `cluster: { store: etcd }`.
final class ClusterNode: Sendable {
    let store: EtcdConfigStore
    let membership: ClusterMembership
    let client: EtcdClient
    let prefix: String
    let nodeID: String
    let editor: SharedPoolEditor
    let counters = Mutex(Counters())

    struct Counters {
        /// Compare-and-swap writes that lost a race and were retried.
        var writeConflicts = 0
        /// Why the last snapshot could not be applied (a listener that cannot bind), while that lasts.
        var applyError: String?
    }

    init(store: EtcdConfigStore, membership: ClusterMembership, client: EtcdClient, prefix: String, nodeID: String) {
        self.store = store
        self.membership = membership
        self.client = client
        self.prefix = prefix
        self.nodeID = nodeID
        self.editor = SharedPoolEditor(store: store)
    }

    /// Leaves the member list at once (revokes the lease) and waits a little for it, before shutdown.
    func leave() async {
        membership.leave()
        var waited = 0
        while membership.isRegistered && waited < 60 {
            try? await Task.sleep(for: .milliseconds(50))
            waited += 1
        }
    }
}

extension FulcrumServer {
    /// With `cluster: { store: etcd }`, builds the store and the membership, reads the shared configuration
    /// once (bounded by the etcd client's timeouts) and returns it; otherwise returns `fileConfig`.
    /// etcd being down at start is not fatal: the node starts with no pools and catches up when it answers.
    func joinCluster(_ fileConfig: FulcrumConfig) async throws -> FulcrumConfig {
        guard let cluster = fileConfig.cluster, cluster.store == .etcd else { return fileConfig }
        var endpoints: [EtcdEndpoint] = []
        for url in cluster.endpoints { endpoints.append(try EtcdEndpoint(url: url)) }
        let client = EtcdClient(endpoints: endpoints, group: group)
        var clusterLogger = logger
        clusterLogger[metadataKey: "prefix"] = .string(cluster.prefix)
        let store = try EtcdConfigStore(
            client: client, prefix: cluster.prefix, local: fileConfig, logger: clusterLogger)
        let nodeID = cluster.nodeName ?? Self.hostName()
        let membership = try ClusterMembership(
            client: client, prefix: cluster.prefix,
            record: NodeRecord(id: nodeID, configRevision: 0, health: "starting", storeConnected: false),
            logger: clusterLogger)
        if fileConfig.admin?.stateFile != nil {
            logger.warning("admin.state_file is not used in a cluster: admin changes are kept in etcd")
        }
        clusterNode = ClusterNode(
            store: store, membership: membership, client: client, prefix: cluster.prefix, nodeID: nodeID)
        do {
            let snapshot = try await store.reload()
            clusterAppliedRevision = snapshot.revision
            logger.info(
                "joined the cluster", metadata: ["node": "\(nodeID)", "revision": "\(snapshot.revision)"])
            return snapshot.config
        } catch {
            logger.warning(
                "etcd not reachable at start: serving no shared pools until it answers",
                metadata: ["error": "\(error)", "node": "\(nodeID)"])
            return fileConfig
        }
    }

    /// Runs the store (watch), the membership (lease) and the status reporter, and applies every new
    /// snapshot through the reload path. Returns when cancelled.
    nonisolated func followCluster(_ node: ClusterNode) async {
        // Outside the group below: the store ends at graceful shutdown, and the lease revocation that
        // follows must not be cancelled with the store's helpers.
        async let membership: Void = { try? await node.membership.run() }()
        await withDiscardingTaskGroup { tasks in
            tasks.addTask { try? await node.store.run() }
            tasks.addTask { await self.reportClusterStatus(node) }
            for await snapshot in node.store.snapshots() {
                await applyClusterSnapshot(snapshot, node: node)
            }
            tasks.cancelAll()
        }
        await membership
    }

    /// One shared configuration: applied like a SIGHUP reload (new snapshots, no dropped connections).
    private func applyClusterSnapshot(_ snapshot: ConfigSnapshot, node: ClusterNode) async {
        defer { clusterSeenRevision = max(clusterSeenRevision, snapshot.revision) }
        if snapshot.config == config {
            clusterAppliedRevision = max(clusterAppliedRevision, snapshot.revision)
            return
        }
        if await reload(snapshot.config) {
            clusterAppliedRevision = snapshot.revision
            node.counters.withLock { $0.applyError = nil }
        } else {
            node.counters.withLock {
                $0.applyError =
                    "revision \(snapshot.revision) could not be applied (see the log); running revision "
                    + "\(clusterAppliedRevision)"
            }
        }
        publishRecord(node)
    }

    /// SIGHUP in a cluster: the node's own file is only read at start; the shared part is read again.
    func reloadFromCluster() async -> Bool {
        guard let clusterNode else { return false }
        do {
            try await clusterNode.store.reload()
            return true
        } catch {
            logger.error("reload: cannot read etcd; the running config keeps serving", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Waits (bounded) until this node runs what the store has seen up to `revision`: a writer's own change
    /// comes back through the watch like everyone else's.
    func waitUntilApplied(_ revision: Int64, timeout: Duration = .seconds(5)) async -> Bool {
        guard let clusterNode else { return true }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let status = clusterNode.store.status
            let wanted = clusterNode.store.current?.revision ?? 0
            if status.revision >= revision && clusterSeenRevision >= wanted { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return false
    }

    /// Every second: the membership record (revision, health, admin address) and the cluster metrics.
    private nonisolated func reportClusterStatus(_ node: ClusterNode) async {
        var lastRejectedTotal = 0
        while !Task.isCancelled {
            await publishRecord(node)
            let status = node.store.status
            Gauge(label: "fulcrum_cluster_store_connected").record(status.connected ? 1 : 0)
            Gauge(label: "fulcrum_cluster_config_revision").record(Double(status.appliedRevision))
            Gauge(label: "fulcrum_cluster_rejected_documents").record(Double(status.rejections.count))
            if status.rejectedTotal > lastRejectedTotal {
                Counter(label: "fulcrum_cluster_document_rejections_total")
                    .increment(by: Int64(status.rejectedTotal - lastRejectedTotal))
                lastRejectedTotal = status.rejectedTotal
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func publishRecord(_ node: ClusterNode) {
        let status = node.store.status
        let admin = adminPort.flatMap { port in
            config.admin.map { Endpoint(address: $0.listen.address, port: UInt16(clamping: port)).description }
        }
        let health = healthSummary(status, applyError: node.counters.withLock { $0.applyError })
        let revision = clusterAppliedRevision
        node.membership.update { record in
            record.adminAddress = admin
            record.configRevision = revision
            record.health = health
            record.storeConnected = status.connected
        }
    }

    /// `serving`, or `degraded: …` with the first reason (etcd lost, rejected documents, a pool with no
    /// backend up).
    private func healthSummary(_ status: ConfigStoreStatus, applyError: String?) -> String {
        if !status.connected { return "degraded: etcd unreachable" }
        if applyError != nil { return "degraded: a shared configuration could not be applied" }
        if !status.rejections.isEmpty { return "degraded: \(status.rejections.count) rejected document(s)" }
        let down = pools().filter { pool in
            let snapshot = pool.snapshot()
            return !snapshot.members.isEmpty && snapshot.candidates.isEmpty
        }
        if let first = down.first { return "degraded: no backend up in pool \(first.name)" }
        return "serving"
    }

    /// `GET /api/v1/cluster`.
    public func cluster() async -> ClusterView? {
        guard let clusterNode else { return nil }
        let status = clusterNode.store.status
        let counters = clusterNode.counters.withLock { $0 }
        var nodes: [ClusterView.Node] = []
        var nodesError: String?
        do {
            nodes = try await ClusterMembership.liveNodes(client: clusterNode.client, prefix: clusterNode.prefix).map {
                ClusterView.Node(
                    id: $0.id, adminAddress: $0.adminAddress, configRevision: $0.configRevision, health: $0.health,
                    storeConnected: $0.storeConnected)
            }
        } catch {
            nodesError = "\(error)"
        }
        return ClusterView(
            node: clusterNode.nodeID, store: status.store.rawValue, prefix: clusterNode.prefix,
            connected: status.connected, revision: status.revision, appliedRevision: clusterAppliedRevision,
            lastError: counters.applyError ?? status.lastError,
            rejections: status.rejections.map {
                ClusterView.Rejection(
                    key: $0.key, modRevision: $0.modRevision, problems: $0.problems.map(\.description))
            },
            rejectedTotal: status.rejectedTotal, disconnectsTotal: status.disconnectsTotal,
            writeConflicts: counters.writeConflicts, registered: clusterNode.membership.isRegistered,
            nodes: nodes, nodesError: nodesError)
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "node" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let cleaned = String(name.unicodeScalars.map { ClusterKey.isValidName(String($0)) ? Character($0) : "-" })
        return cleaned.isEmpty ? "node" : cleaned
    }
}
