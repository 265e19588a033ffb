import FulcrumConfig
import Logging
import ServiceLifecycle
import Synchronization

/// The cluster's shared configuration in etcd (see docs/cluster.md for the key layout).
///
/// `run()` reads the whole prefix (with its revision), then watches it from the next revision and turns
/// every change into a new validated ``ConfigSnapshot``. A document that does not validate is rejected —
/// its last good version (or its absence) stays in use — and reported in ``status``. When etcd cannot be
/// reached the store keeps its last good configuration, says `connected: false`, retries with bounded
/// backoff, and on return reads the prefix again and resumes the watch from there (which also covers a
/// compacted history).
///
/// The node's own sections (admin, ha, cluster, workers) come from `local`, its YAML file; pools,
/// listeners and virtual services come from etcd only.
public final class EtcdConfigStore: ConfigStore {
    public let client: EtcdClient
    /// Key prefix, starting and ending with `/`.
    public let prefix: String
    public let local: FulcrumConfig
    /// How often the watch is checked by a cheap read, so a silent network loss is noticed.
    public let probeInterval: Duration
    private let retry: Backoff
    private let logger: Logger
    private let state = Mutex(State())
    private let broadcaster = SnapshotBroadcaster()

    private struct State {
        /// Every configuration document in etcd, as last seen.
        var documents: [ClusterKey: StoredDocument] = [:]
        /// Keys under the prefix that are not documents (unknown layout, not UTF-8), with why.
        var strayKeys: [String: DocumentRejection] = [:]
        /// The documents the current configuration was built from.
        var applied: [ClusterKey: StoredDocument] = [:]
        var current: ConfigSnapshot?
        var status = ConfigStoreStatus(store: .etcd)
    }

    /// Throws when `local` has shared sections: in a cluster they live in etcd only, and two sources for
    /// one pool would disagree sooner or later.
    public init(
        client: EtcdClient, prefix: String, local: FulcrumConfig = FulcrumConfig(),
        probeInterval: Duration = .seconds(2), retry: Backoff = Backoff(),
        logger: Logger = Logger(label: "fulcrum.cluster")
    ) throws(ClusterSetupError) {
        guard prefix.hasPrefix("/"), prefix.hasSuffix("/") else { throw .invalidPrefix(prefix) }
        var shared: [String] = []
        if !local.pools.isEmpty { shared.append("pools") }
        if !local.listeners.isEmpty { shared.append("listeners") }
        if !local.virtualServices.isEmpty { shared.append("virtual_services") }
        guard shared.isEmpty else { throw .sharedSectionsInLocalFile(shared) }
        self.client = client
        self.prefix = prefix
        self.local = local
        self.probeInterval = probeInterval
        self.retry = retry
        self.logger = logger
    }

    public var current: ConfigSnapshot? { state.withLock { $0.current } }
    public var status: ConfigStoreStatus { state.withLock { $0.status } }

    public func snapshots() -> AsyncStream<ConfigSnapshot> {
        state.withLock { broadcaster.subscribe(current: $0.current) }
    }

    /// The stored version of one document and its `mod_revision` (the token for ``put(_:text:ifModRevision:)``).
    public func document(_ key: ClusterKey) async throws -> StoredDocument? {
        let (_, keyValue) = try await client.get(key.key(under: prefix))
        guard let keyValue else { return nil }
        return StoredDocument(text: keyValue.text ?? "", modRevision: keyValue.modRevision)
    }

    /// Writes a document if nobody wrote it since `expected` was read (0: only if it does not exist yet);
    /// otherwise throws ``EtcdError/conflict(key:expected:actual:)``. With `validate`, the document set as
    /// it would be after the write must validate first (``ClusterWriteError``), so an operator cannot
    /// store what every node would reject (checked against the documents this node has seen, so a store
    /// that is running or was reloaded). Every node, this one included, applies the write from its watch.
    @discardableResult
    public func put(
        _ key: ClusterKey, text: String, ifModRevision expected: Int64, validate: Bool = true
    )
        async throws -> Int64
    {
        guard key.isConfiguration else { throw ClusterWriteError.notConfiguration(key.relativePath) }
        if validate {
            var documents = state.withLock { $0.documents.mapValues(\.text) }
            documents[key] = text
            if case .failure(let failure) = ConfigAssembler.assemble(local: local, documents: documents) {
                throw ClusterWriteError.invalid(failure.problems)
            }
        }
        return try await client.put(key.key(under: prefix), value: Array(text.utf8), ifModRevision: expected)
    }

    /// Deletes a document if nobody wrote it since `expected`; with `validate`, only if the rest still
    /// validates (a pool a listener uses cannot be deleted).
    @discardableResult
    public func delete(_ key: ClusterKey, ifModRevision expected: Int64, validate: Bool = true) async throws -> Int64 {
        guard key.isConfiguration else { throw ClusterWriteError.notConfiguration(key.relativePath) }
        if validate {
            var documents = state.withLock { $0.documents.mapValues(\.text) }
            documents[key] = nil
            if case .failure(let failure) = ConfigAssembler.assemble(local: local, documents: documents) {
                throw ClusterWriteError.invalid(failure.problems)
            }
        }
        return try await client.delete(key.key(under: prefix), ifModRevision: expected)
    }

    @discardableResult
    public func reload() async throws -> ConfigSnapshot {
        let (revision, keyValues) = try await client.range(prefix: prefix)
        apply(range: keyValues, revision: revision)
        guard let current else { throw ClusterSetupError.noValidConfiguration(status.rejections) }
        return current
    }

    public func run() async throws {
        defer { broadcaster.finish() }
        await cancelWhenGracefulShutdown { await self.synchronize() }
    }

    /// Read, watch, and on any failure wait and start over; returns when cancelled.
    private func synchronize() async {
        var backoff = retry
        while !Task.isCancelled {
            do {
                let (revision, keyValues) = try await client.range(prefix: prefix)
                apply(range: keyValues, revision: revision)
                backoff.reset()
                try await watch(from: revision + 1)
            } catch is CancellationError {
                return
            } catch EtcdError.compacted(let compactRevision) {
                // The history we would resume from is gone: read everything again, at once.
                logger.info(
                    "etcd history compacted; reading the prefix again", metadata: ["revision": "\(compactRevision)"])
                continue
            } catch {
                if Task.isCancelled { return }
                markDisconnected(error)
            }
            try? await Task.sleep(for: backoff.next())
        }
    }

    private func watch(from revision: Int64) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await self.client.watch(
                    prefix: self.prefix, fromRevision: revision,
                    onOpen: { self.markConnected() },
                    onBatch: { batch in self.apply(batch) })
            }
            group.addTask {
                // A watch on a quiet prefix says nothing when the network silently drops; a read does.
                while !Task.isCancelled {
                    try await Task.sleep(for: self.probeInterval)
                    _ = try await self.client.get(self.prefix)
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    private func markConnected() {
        let wasConnected = state.withLock { state in
            defer {
                state.status.connected = true
                state.status.lastError = nil
            }
            return state.status.connected
        }
        if !wasConnected { logger.info("etcd watch established", metadata: ["prefix": "\(prefix)"]) }
    }

    private func markDisconnected(_ error: any Error) {
        let wasConnected = state.withLock { state in
            defer {
                state.status.connected = false
                state.status.lastError = "\(error)"
            }
            if state.status.connected { state.status.disconnectsTotal += 1 }
            return state.status.connected
        }
        if wasConnected {
            logger.warning(
                "etcd lost; serving the last good configuration and retrying", metadata: ["error": "\(error)"])
        } else {
            logger.debug("etcd still unreachable", metadata: ["error": "\(error)"])
        }
    }

    /// A full read: replaces every document (a key missing from it was deleted meanwhile).
    func apply(range keyValues: [EtcdKeyValue], revision: Int64) {
        update { state in
            // An older read than what the watch already delivered would move the node back in time.
            guard revision >= state.status.revision else { return false }
            state.documents = [:]
            state.strayKeys = [:]
            for keyValue in keyValues { store(keyValue, in: &state) }
            state.status.revision = revision
            return true
        }
    }

    /// One watch message.
    func apply(_ batch: EtcdWatchBatch) {
        update { state in
            guard batch.revision > state.status.revision else { return false }
            for event in batch.events where event.keyValue.modRevision > state.status.revision {
                switch event.kind {
                case .put:
                    store(event.keyValue, in: &state)
                case .delete:
                    let relative = relativePath(event.keyValue.key)
                    state.strayKeys[relative] = nil
                    if let key = ClusterKey(relativePath: relative[...]) { state.documents[key] = nil }
                }
            }
            state.status.revision = batch.revision
            return true
        }
    }

    private func relativePath(_ key: String) -> String {
        key.hasPrefix(prefix) ? String(key.dropFirst(prefix.count)) : key
    }

    private func store(_ keyValue: EtcdKeyValue, in state: inout State) {
        let relative = relativePath(keyValue.key)
        guard let key = ClusterKey(relativePath: relative[...]) else {
            state.strayKeys[relative] = DocumentRejection(
                key: relative, modRevision: keyValue.modRevision,
                problems: [
                    DocumentProblem(
                        key: relative,
                        message: "not a key of the layout (pools/<name>, listeners/<name>, virtual_services/<name>, "
                            + "nodes/<id>; names of letters, digits, '_', '.', '-'); ignored")
                ])
            return
        }
        guard key.isConfiguration else { return }  // node records: membership, not configuration
        guard let text = keyValue.text else {
            state.documents[key] = nil
            state.strayKeys[relative] = DocumentRejection(
                key: relative, modRevision: keyValue.modRevision,
                problems: [DocumentProblem(key: relative, message: "the value is not UTF-8 text; ignored")])
            return
        }
        state.strayKeys[relative] = nil
        state.documents[key] = StoredDocument(text: text, modRevision: keyValue.modRevision)
    }

    /// Runs `change`; if it changed anything, evaluates the documents and publishes a new snapshot when the
    /// configuration differs from the current one.
    private func update(_ change: (inout State) -> Bool) {
        var fresh: [DocumentRejection] = []
        let published: ConfigSnapshot? = state.withLock { state in
            guard change(&state) else { return nil }
            let evaluation = DocumentSet.evaluate(local: local, current: state.documents, lastGood: state.applied)
            let rejections = (evaluation.rejections + state.strayKeys.values).sorted { $0.key < $1.key }
            fresh = rejections.filter { !state.status.rejections.contains($0) }
            state.status.rejections = rejections
            state.status.rejectedTotal += fresh.count
            state.applied = evaluation.applied
            guard let config = evaluation.config, config != state.current?.config else { return nil }
            let snapshot = ConfigSnapshot(config: config, revision: state.status.revision)
            state.current = snapshot
            state.status.appliedRevision = snapshot.revision
            // Published under the lock so that subscribers never see snapshots out of order.
            broadcaster.publish(snapshot)
            return snapshot
        }
        for rejection in fresh {
            logger.error(
                "shared document rejected; keeping its last good version",
                metadata: ["key": "\(prefix)\(rejection.key)", "problems": "\(rejection.description)"])
        }
        if let published {
            logger.info(
                "configuration updated from etcd",
                metadata: [
                    "revision": "\(published.revision)", "pools": "\(published.config.pools.count)",
                    "rejected": "\(fresh.count)",
                ])
        }
    }
}
