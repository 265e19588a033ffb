import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import FulcrumTestSupport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

/// The etcd store, the client and membership against a real etcd started by each test.
@Suite(
    .serialized,
    .enabled(
        if: EtcdServer.isAvailable,
        "SKIPPED: `etcd` is not in PATH — install Debian's etcd-server (scripts/test does so as root)"))
struct EtcdStoreTests {
    static let prefix = "/fulcrum-test/"

    static func pool(_ ports: [Int], weight: Int = 1) -> String {
        "algorithm: weighted-round-robin\nbackends:\n"
            + ports.map { "  - { address: 127.0.0.1:\($0), weight: \(weight) }" }.joined(separator: "\n")
    }

    static func client(_ server: EtcdServer, _ group: any EventLoopGroup) -> EtcdClient {
        EtcdClient(
            endpoints: [server.endpoint], group: group, requestTimeout: .seconds(2), connectTimeout: .milliseconds(500))
    }

    static func store(_ client: EtcdClient) throws -> EtcdConfigStore {
        try EtcdConfigStore(
            client: client, prefix: prefix, probeInterval: .milliseconds(500),
            retry: Backoff(initial: .milliseconds(50), maximum: .milliseconds(500)))
    }

    /// Runs `store` in a child task for the duration of `body`.
    static func running<T: Sendable>(
        _ service: some ConfigStore, _ body: () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            do {
                let result = try await body()
                group.cancelAll()
                return result
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    @Test func loadsThePrefixThenAppliesAPutWithinOneSecond() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = Self.client(server, group)
                try await client.put(Self.prefix + "pools/web", value: Array(Self.pool([8081, 8082]).utf8))
                try await client.put(
                    Self.prefix + "listeners/www", value: Array("{name: www, bind: 127.0.0.1:0, pool: web}".utf8))
                try await client.put("/elsewhere/pools/x", value: Array("ignored: true".utf8))
                let store = try Self.store(client)
                let initial = try await store.reload()
                #expect(initial.config.pools.map(\.name) == ["web"])
                #expect(initial.config.pool(named: "web")?.backends.count == 2)
                #expect(initial.config.listeners.map(\.pool) == ["web"])
                #expect(store.status.rejections.isEmpty)

                try await Self.running(store) {
                    let connected = await eventually(within: .seconds(5)) { store.status.connected }
                    try #require(connected, "the watch was never established")
                    let updates = store.snapshots()
                    let started = ContinuousClock.now
                    let written = try await client.put(
                        Self.prefix + "pools/web", value: Array(Self.pool([8081, 8082, 8083], weight: 5).utf8))
                    let seen = await Self.first(updates, within: .seconds(1)) {
                        $0.config.pool(named: "web")?.backends.count == 3
                    }
                    let elapsed = ContinuousClock.now - started
                    #expect(seen != nil, "the put did not arrive through the watch within 1 s")
                    #expect(seen?.revision == written)
                    #expect(seen?.config.pool(named: "web")?.backends.allSatisfy { $0.weight == 5 } == true)
                    #expect(store.status.appliedRevision == written)
                    print("cluster: put → snapshot in \(elapsed)")

                    // A delete arrives the same way.
                    try await client.put(Self.prefix + "pools/api", value: Array("backends: []".utf8))
                    #expect(await eventually(within: .seconds(1)) { store.current?.config.pool(named: "api") != nil })
                    try await client.delete(Self.prefix + "pools/api")
                    #expect(await eventually(within: .seconds(1)) { store.current?.config.pool(named: "api") == nil })
                }
            }
        }
    }

    @Test func compareAndSwapLetsOnlyOneOfTwoWritersWin() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = Self.client(server, group)
                let store = try Self.store(client)
                _ = try await store.reload()

                try await store.put(.pool("web"), text: Self.pool([8081]), ifModRevision: 0)
                // Creating it again (expecting absence) conflicts.
                await #expect(throws: EtcdError.self) {
                    try await store.put(.pool("web"), text: Self.pool([8082]), ifModRevision: 0)
                }
                // Two operators read the same version; the first write wins, the second conflicts.
                let read = try #require(try await store.document(.pool("web")))
                let first = try await store.put(
                    .pool("web"), text: Self.pool([8081, 8082]), ifModRevision: read.modRevision)
                do {
                    try await store.put(.pool("web"), text: Self.pool([8081, 8083]), ifModRevision: read.modRevision)
                    Issue.record("the second writer overwrote the first")
                } catch let error as EtcdError {
                    #expect(
                        error == .conflict(key: Self.prefix + "pools/web", expected: read.modRevision, actual: first))
                }
                #expect(try await store.document(.pool("web"))?.text == Self.pool([8081, 8082]))

                // The store refuses to write what every node would reject.
                await #expect(throws: ClusterWriteError.self) {
                    try await store.put(.pool("web"), text: "backends: 7", ifModRevision: first)
                }
                #expect(try await store.document(.pool("web"))?.modRevision == first)
            }
        }
    }

    @Test func malformedDocumentIsRejectedAndTheLastGoodStateKept() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = Self.client(server, group)
                try await client.put(Self.prefix + "pools/web", value: Array(Self.pool([8081]).utf8))
                let store = try Self.store(client)
                _ = try await store.reload()
                try await Self.running(store) {
                    let connected = await eventually(within: .seconds(5)) { store.status.connected }
                    try #require(connected, "the watch was never established")
                    // Written straight into etcd, as `etcdctl put` would.
                    let broken = try await client.put(
                        Self.prefix + "pools/web", value: Array("algorithm: maglev\nbackends: [ {address: nope} ]".utf8)
                    )
                    #expect(await eventually(within: .seconds(1)) { !store.status.rejections.isEmpty })
                    let rejection = try #require(store.status.rejections.first)
                    #expect(rejection.key == "pools/web")
                    #expect(rejection.modRevision == broken)
                    #expect(rejection.problems.first?.line == 2)
                    #expect(store.status.rejectedTotal == 1)
                    #expect(store.current?.config.pool(named: "web")?.backends.map(\.address.port) == [8081])
                    #expect(store.current?.config.pool(named: "web")?.algorithm == .weightedRoundRobin)

                    // Other documents still apply meanwhile.
                    try await client.put(Self.prefix + "pools/api", value: Array("backends: []".utf8))
                    #expect(await eventually(within: .seconds(1)) { store.current?.config.pool(named: "api") != nil })
                    #expect(store.status.rejections.map(\.key) == ["pools/web"])

                    // Fixing it clears the rejection.
                    try await client.put(Self.prefix + "pools/web", value: Array(Self.pool([8085]).utf8))
                    #expect(await eventually(within: .seconds(1)) { store.status.rejections.isEmpty })
                    #expect(store.current?.config.pool(named: "web")?.backends.map(\.address.port) == [8085])
                    #expect(store.status.rejectedTotal == 1)

                    // A key outside the layout is reported, not used.
                    let applied = store.current
                    try await client.put(Self.prefix + "pools/a/b", value: Array("backends: []".utf8))
                    #expect(
                        await eventually(within: .seconds(1)) { store.status.rejections.map(\.key) == ["pools/a/b"] })
                    #expect(store.current == applied)
                }
            }
        }
    }

    @Test func nodesRegisterUnderALeaseAndDisappearWhenItExpires() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = Self.client(server, group)
                let crashing = try ClusterMembership(
                    client: client, prefix: Self.prefix,
                    record: NodeRecord(id: "lb-1", adminAddress: "127.0.0.1:9901", configRevision: 7), ttl: 2)
                let leaving = try ClusterMembership(
                    client: client, prefix: Self.prefix, record: NodeRecord(id: "lb-2"), ttl: 30)
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await crashing.run() }
                    tasks.addTask { try await leaving.run() }
                    var nodes: [NodeRecord] = []
                    #expect(
                        await eventually(within: .seconds(5)) {
                            nodes = (try? await ClusterMembership.liveNodes(client: client, prefix: Self.prefix)) ?? []
                            return nodes.count == 2
                        })
                    #expect(nodes.first == NodeRecord(id: "lb-1", adminAddress: "127.0.0.1:9901", configRevision: 7))

                    // An update is published at once (not at the next keep-alive).
                    crashing.update { $0.health = "degraded" }
                    #expect(
                        await eventually(within: .seconds(1)) {
                            let listed = try? await ClusterMembership.liveNodes(client: client, prefix: Self.prefix)
                            return listed?.first?.health == "degraded"
                        })

                    // Leaving revokes the lease: gone at once, although its TTL is 30 s.
                    leaving.leave()
                    #expect(
                        await eventually(within: .seconds(2)) {
                            let listed = try? await ClusterMembership.liveNodes(client: client, prefix: Self.prefix)
                            return listed?.map(\.id) == ["lb-1"]
                        })

                    // The lease outlives several TTLs while kept alive...
                    try await Task.sleep(for: .seconds(3))
                    #expect(
                        try await ClusterMembership.liveNodes(client: client, prefix: Self.prefix).map(\.id) == ["lb-1"]
                    )
                    // ...and a node that dies (cancelled: no revoke) disappears when it expires.
                    tasks.cancelAll()
                    let stopped = ContinuousClock.now
                    #expect(
                        await eventually(within: .seconds(8), every: .milliseconds(100)) {
                            let listed = try? await ClusterMembership.liveNodes(client: client, prefix: Self.prefix)
                            return listed?.isEmpty == true
                        })
                    print("cluster: dead node gone after \(ContinuousClock.now - stopped) (TTL 2 s)")
                }
            }
        }
    }

    @Test func survivesAnEtcdOutageAndCatchesUpAfterwards() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = Self.client(server, group)
                try await client.put(Self.prefix + "pools/web", value: Array(Self.pool([8081]).utf8))
                let store = try Self.store(client)
                _ = try await store.reload()
                try await Self.running(store) {
                    let connected = await eventually(within: .seconds(5)) { store.status.connected }
                    try #require(connected, "the watch was never established")
                    let before = try #require(store.current)

                    await server.stop()
                    #expect(await eventually(within: .seconds(5)) { !store.status.connected })
                    #expect(store.current == before)
                    #expect(store.status.lastError != nil)
                    #expect(store.status.disconnectsTotal == 1)

                    // A change is made while this node cannot see etcd: etcd runs on another port for a moment.
                    let originalPort = server.clientPort
                    try await server.restart(clientPort: try EtcdServer.freePort())
                    try await withEventLoopGroup(threads: 1) { otherGroup in
                        let other = Self.client(server, otherGroup)
                        try await other.put(Self.prefix + "pools/web", value: Array(Self.pool([8081, 8082]).utf8))
                        try await other.put(Self.prefix + "pools/api", value: Array("backends: []".utf8))
                        // Compaction: the revision the node watched from is gone from history.
                        try await other.compact(revision: try await other.get("/x").revision)
                    }
                    await server.stop()
                    #expect(!store.status.connected)
                    #expect(store.current == before)

                    try await server.restart(clientPort: originalPort)
                    #expect(
                        await eventually(within: .seconds(10)) {
                            store.status.connected && store.current?.config.pool(named: "api") != nil
                        })
                    #expect(store.current?.config.pool(named: "web")?.backends.count == 2)

                    // And the watch works again.
                    try await client.delete(Self.prefix + "pools/api")
                    #expect(await eventually(within: .seconds(1)) { store.current?.config.pool(named: "api") == nil })
                }
            }
        }
    }

    @Test func aSilentEtcdIsNoticedAndTheWatchResumesAfterwards() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = EtcdClient(
                    endpoints: [server.endpoint], group: group, requestTimeout: .milliseconds(500),
                    connectTimeout: .milliseconds(500))
                try await client.put(Self.prefix + "pools/web", value: Array(Self.pool([8081]).utf8))
                let store = try Self.store(client)
                _ = try await store.reload()
                try await Self.running(store) {
                    let connected = await eventually(within: .seconds(5)) { store.status.connected }
                    try #require(connected, "the watch was never established")
                    // The watch connection stays open but silent; only the periodic read can notice.
                    server.freeze(true)
                    let frozen = ContinuousClock.now
                    let noticed = await eventually(within: .seconds(5)) { !store.status.connected }
                    let elapsed = ContinuousClock.now - frozen
                    // Read before thawing: reconnecting clears the error.
                    let whileFrozen = store.status
                    server.freeze(false)
                    #expect(noticed, "a frozen etcd went unnoticed")
                    print("cluster: silent etcd noticed after \(elapsed) (probe 0.5 s, timeout 0.5 s)")
                    #expect(elapsed >= .milliseconds(400), "noticed before any probe could time out: \(whileFrozen)")
                    #expect(whileFrozen.lastError?.contains("timed out") == true)
                    #expect(whileFrozen.disconnectsTotal == 1)
                    #expect(await eventually(within: .seconds(10)) { store.status.connected })
                    try await client.put(Self.prefix + "pools/api", value: Array("backends: []".utf8))
                    #expect(await eventually(within: .seconds(1)) { store.current?.config.pool(named: "api") != nil })
                }
            }
        }
    }

    @Test func aDeadEndpointIsSkipped() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let dead = EtcdEndpoint(host: "127.0.0.1", port: try EtcdServer.freePort())
                let client = EtcdClient(
                    endpoints: [dead, server.endpoint], group: group, requestTimeout: .seconds(2),
                    connectTimeout: .milliseconds(500))
                let revision = try await client.put("/k", value: Array("v".utf8))
                #expect(try await client.get("/k").keyValue?.modRevision == revision)

                let onlyDead = EtcdClient(endpoints: [dead], group: group, connectTimeout: .milliseconds(500))
                do {
                    _ = try await onlyDead.get("/k")
                    Issue.record("a dead endpoint answered")
                } catch let error as EtcdError {
                    guard case .unreachable = error else {
                        Issue.record("expected unreachable, got \(error)")
                        return
                    }
                }
            }
        }
    }

    @Test func watchFromACompactedRevisionSaysSo() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = Self.client(server, group)
                try await client.put("/k", value: [1])
                let revision = try await client.put("/k", value: [2])
                try await client.compact(revision: revision)
                do {
                    try await client.watch(prefix: "/k", fromRevision: 1) { _ in }
                    Issue.record("a watch from a compacted revision did not fail")
                } catch let error as EtcdError {
                    #expect(error == .compacted(compactRevision: revision))
                }
            }
        }
    }

    /// The first element of `sequence` satisfying `predicate` within `timeout`, or nil.
    static func first(
        _ sequence: AsyncStream<ConfigSnapshot>, within timeout: Duration,
        where predicate: @escaping @Sendable (ConfigSnapshot) -> Bool
    ) async -> ConfigSnapshot? {
        await withTaskGroup(of: ConfigSnapshot?.self) { group in
            group.addTask {
                for await snapshot in sequence where predicate(snapshot) { return snapshot }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let result = await group.next() ?? nil
            group.cancelAll()
            return result
        }
    }
}
