import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import FulcrumTestSupport
import NIOCore
import Testing

/// Seeding (a file cut into documents) and the admin API's edits of a pool document, checked through the
/// one loader: what is written must load to what was meant.
struct ClusterDocumentsTests {
    static let file = """
        admin: { listen: 127.0.0.1:9900 }
        pools:
          web:
            algorithm: maglev
            health_check: { type: http, path: /healthz, interval: 2s, timeout: 1s, rise: 2, fall: 3 }
            slow_start: 30s
            backends:
              - { address: 10.0.0.11:8080, weight: 3 }
              - 10.0.0.12:8080
              - { address: 10.0.0.13:8080, backup: true, state: draining }
          empty:
          api:
            algorithm: hash
            hash_key: header:X-User
            outlier_detection: { consecutive_failures: 3 }
            backends: ["[2001:db8::1]:80"]
          tunneled: { algorithm: maglev, backends: [10.0.0.21:80] }
        listeners:
          - { name: www, bind: 0.0.0.0:80, mode: http, pool: web }
          - { name: api, bind: 0.0.0.0:81, mode: tcp, pool: api }
        virtual_services:
          - { vip: 192.0.2.10, port: 80, forwarding: tunnel, encapsulation: ipip, interface: eth0, pool: tunneled }
        """

    @Test func aSeededFileLoadsBackToTheSameConfiguration() throws {
        let original = try ConfigLoader.load(yaml: Self.file)
        let documents = try ClusterDocuments.split(configText: Self.file)
        #expect(
            Set(documents.keys)
                == [
                    .pool("web"), .pool("empty"), .pool("api"), .pool("tunneled"), .listener("www"), .listener("api"),
                    .virtualService("192.0.2.10-80-tcp"),
                ])
        var local = FulcrumConfig()
        local.admin = original.admin
        let assembled = try ConfigAssembler.assemble(local: local, documents: documents).get()
        #expect(assembled.pools.sorted { $0.name < $1.name } == original.pools.sorted { $0.name < $1.name })
        #expect(assembled.listeners.sorted { $0.name < $1.name } == original.listeners.sorted { $0.name < $1.name })
        var service = try #require(original.virtualServices.first)
        service.name = "192.0.2.10-80-tcp"
        #expect(assembled.virtualServices == [service])
    }

    @Test func anInvalidFileIsNotSeeded() {
        #expect(throws: ClusterDocuments.Failure.self) {
            try ClusterDocuments.split(configText: "pools: { web: { backends: [nope] } }")
        }
    }

    /// Each edit, loaded back: exactly the intended change, the rest of the document as it was.
    @Test func editsOfAPoolDocumentLoadToTheIntendedPool() throws {
        let documents = try ClusterDocuments.split(configText: Self.file)
        var text = try #require(documents[.pool("web")])
        func load(_ text: String) throws -> PoolConfig {
            try #require(
                try ConfigAssembler.assemble(local: FulcrumConfig(), documents: [.pool("web"): text]).get().pools.first)
        }
        let before = try load(text)
        let added = try #require(Endpoint("10.0.0.14:8080"))
        text = try ClusterDocuments.edit(
            poolDocument: text, .add(BackendSpec(endpoint: added, weight: 2, backup: false)))
        var expected = before
        expected.backends.append(BackendConfig(address: added, weight: 2))
        #expect(try load(text) == expected)

        let second = try #require(Endpoint("10.0.0.12:8080"))
        text = try ClusterDocuments.edit(poolDocument: text, .weight(second, 5))
        expected.backends[1].weight = 5
        #expect(try load(text) == expected)

        text = try ClusterDocuments.edit(poolDocument: text, .state(second, .disabled))
        expected.backends[1].state = .disabled
        #expect(try load(text) == expected)

        let third = try #require(Endpoint("10.0.0.13:8080"))
        text = try ClusterDocuments.edit(poolDocument: text, .state(third, .enabled))
        expected.backends[2].state = nil
        #expect(try load(text) == expected)

        let first = try #require(Endpoint("10.0.0.11:8080"))
        text = try ClusterDocuments.edit(poolDocument: text, .remove(first))
        expected.backends.removeFirst()
        #expect(try load(text) == expected)

        #expect(throws: ClusterDocuments.Failure.unknownBackend(first)) {
            try ClusterDocuments.edit(poolDocument: text, .remove(first))
        }
        #expect(throws: ClusterDocuments.Failure.duplicateBackend(added)) {
            try ClusterDocuments.edit(poolDocument: text, .add(BackendSpec(endpoint: added)))
        }
        // An empty pool document gets its first backend.
        let empty = try ClusterDocuments.edit(poolDocument: "{}\n", .add(BackendSpec(endpoint: added)))
        #expect(try load(empty).backends == [BackendConfig(address: added)])
    }
}

/// Compare-and-swap edits against a real etcd.
@Suite(
    .serialized,
    .enabled(
        if: EtcdServer.isAvailable,
        "SKIPPED: `etcd` is not in PATH — install Debian's etcd-server (scripts/test does so as root)"))
struct SharedPoolEditorTests {
    static let prefix = "/fulcrum-editor/"

    /// The race made certain: a second writer changes the pool between the first one's read and write.
    /// The first write loses its compare-and-swap, re-reads, and both changes are kept.
    @Test func aLostCompareAndSwapIsRetriedAndNoUpdateIsLost() async throws {
        try await withEtcd { server in
            try await withEventLoopGroup { group in
                let client = EtcdClient(endpoints: [server.endpoint], group: group)
                let seeded = try await ClusterSeed.seed(
                    configText: "pools: { web: { backends: [127.0.0.1:9001] } }", client: client, prefix: Self.prefix)
                #expect(seeded == [.pool("web")])
                let store = try EtcdConfigStore(client: client, prefix: Self.prefix)
                _ = try await store.reload()
                let editor = SharedPoolEditor(store: store)
                let first = try #require(Endpoint("127.0.0.1:9002"))
                let second = try #require(Endpoint("127.0.0.1:9003"))
                let outcome = try await editor.apply(.add(BackendSpec(endpoint: first)), to: "web") { attempt in
                    guard attempt == 1 else { return }
                    _ = try? await editor.apply(.add(BackendSpec(endpoint: second)), to: "web")
                }
                #expect(outcome.conflicts == 1)
                let snapshot = try await store.reload()
                #expect(
                    snapshot.config.pool(named: "web")?.backends.map(\.address.description)
                        == ["127.0.0.1:9001", "127.0.0.1:9003", "127.0.0.1:9002"])

                // Seeding again is refused: the prefix is not empty.
                await #expect(throws: ClusterSeed.Failure.self) {
                    try await ClusterSeed.seed(
                        configText: "pools: { other: {} }", client: client, prefix: Self.prefix)
                }
                await #expect(throws: SharedPoolEditor.Failure.unknownPool("nope")) {
                    try await editor.apply(.remove(first), to: "nope")
                }
            }
        }
    }
}
