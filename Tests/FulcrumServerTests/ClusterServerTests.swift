import Foundation
import FulcrumAdmin
import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumServer
import FulcrumTestSupport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing

/// Three FulcrumServer nodes in one process sharing one etcd prefix. They bind the shared listener on one
/// loopback port with SO_REUSEPORT, so the kernel spreads connections over the three; each node's own
/// `Pool` counts the requests it forwarded, which says which node carried traffic to which backend.
@Suite(
    .serialized,
    .enabled(
        if: EtcdServer.isAvailable,
        "SKIPPED: `etcd` is not in PATH — install Debian's etcd-server (scripts/test does so as root)"))
struct ClusterServerTests {
    static let prefix = "/fulcrum-cluster-test/"

    struct Node {
        let server: FulcrumServer
        let serviceGroup: ServiceGroup

        func pool() async throws -> Pool { try #require(await server.pool(named: "web")) }

        /// One admin API call over HTTP.
        func admin(
            _ method: String, _ path: String, _ body: String? = nil, group: any EventLoopGroup
        ) async throws
            -> (status: Int, json: JSONValue?)
        {
            let port = try #require(await server.adminPort)
            let response = try await DemoHTTPClient.request(
                port: port,
                DemoRequest(
                    method: method, path: path, headers: [(name: "Content-Type", value: "application/json")],
                    body: body.map { ByteBuffer(string: $0) }),
                timeout: .seconds(20), group: group)
            return (response.status, try? JSONValue.parse(Array(buffer: response.body)))
        }
    }

    static func nodeConfig(_ index: Int, etcdPort: Int) throws -> FulcrumConfig {
        try ConfigLoader.load(
            yaml: """
                admin: { listen: 127.0.0.1:0 }
                cluster:
                  store: etcd
                  endpoints: [http://127.0.0.1:\(etcdPort)]
                  prefix: \(prefix)
                  node_name: node-\(index)
                """)
    }

    /// etcd, two demo backends, the seeded prefix and three running nodes for the duration of `body`.
    static func withCluster(
        _ body: (EtcdServer, any EventLoopGroup, [DemoBackend], [Node], Int) async throws -> Void
    ) async throws {
        try await withEtcd { etcd in
            try await withEventLoopGroup(threads: 2) { group in
                var backends: [DemoBackend] = []
                defer { for backend in backends { Task { try? await backend.stop() } } }
                for index in 0..<3 {
                    backends.append(try await DemoBackend.start(name: "b\(index)", group: group))
                }
                let listenPort = try EtcdServer.freePort()
                let client = EtcdClient(endpoints: [etcd.endpoint], group: group)
                _ = try await ClusterSeed.seed(
                    configText: """
                        pools:
                          web:
                            algorithm: round-robin
                            backends: [127.0.0.1:\(backends[0].port)]
                        listeners:
                          - { name: www, bind: 127.0.0.1:\(listenPort), mode: http, pool: web }
                        """, client: client, prefix: prefix)
                var logger = Logger(label: "fulcrum.test")
                logger.logLevel = .warning
                var nodes: [Node] = []
                for index in 1...3 {
                    let server = try await FulcrumServer.start(
                        config: try nodeConfig(index, etcdPort: etcd.clientPort), group: group, logger: logger)
                    nodes.append(Node(server: server, serviceGroup: ServiceGroup(services: [server], logger: logger)))
                }
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    for node in nodes { tasks.addTask { try await node.serviceGroup.run() } }
                    do {
                        try await body(etcd, group, backends, nodes, listenPort)
                    } catch {
                        for node in nodes { await node.serviceGroup.triggerGracefulShutdown() }
                        throw error
                    }
                    for node in nodes { await node.serviceGroup.triggerGracefulShutdown() }
                    try await tasks.waitForAll()
                }
                for backend in backends { try? await backend.stop() }
                backends = []
            }
        }
    }

    /// `count` requests through the shared port; each connection goes to one of the nodes.
    static func drive(_ count: Int, port: Int, group: any EventLoopGroup) async throws {
        for _ in 0..<count {
            let response = try await DemoHTTPClient.request(port: port, DemoRequest(), group: group)
            #expect(response.status == 200)
        }
    }

    static func requests(_ node: Node, to backend: DemoBackend) async throws -> UInt64 {
        let endpoint = try #require(Endpoint("127.0.0.1:\(backend.port)"))
        guard let member = try await node.pool().snapshot().member(endpoint) else { return 0 }
        return member.backend.stats.totalRequests.load(ordering: .relaxed)
    }

    @Test func aChangeThroughOneNodeReachesEveryNodeAndSurvivesAnEtcdOutage() async throws {
        try await Self.withCluster { etcd, group, backends, nodes, port in
            // Every node joined and runs the seeded pool.
            for node in nodes { #expect(try await node.pool().snapshot().members.count == 1) }
            let joined = await eventually(within: .seconds(5)) {
                let view = await nodes[0].server.cluster()
                return view?.nodes.map(\.id) == ["node-1", "node-2", "node-3"]
            }
            #expect(joined, "not every node registered")

            // Scale-out through node 1's admin API; nodes 2 and 3 apply it from their watch.
            let added = "127.0.0.1:\(backends[1].port)"
            let started = ContinuousClock.now
            let (status, _) = try await nodes[0].admin(
                "POST", "/api/v1/pools/web/backends", "{\"address\": \"\(added)\"}", group: group)
            #expect(status == 201)
            let everywhere = await eventually(within: .seconds(1), every: .milliseconds(2)) {
                for node in nodes {
                    guard (try? await node.pool().snapshot().member(Endpoint(added)!)) != nil else { return false }
                }
                return true
            }
            let elapsed = ContinuousClock.now - started
            print("cluster: backend added through node 1 applied on all three nodes in \(elapsed)")
            #expect(everywhere, "not applied on every node within 1 s")
            try await Self.drive(60, port: port, group: group)
            for (index, node) in nodes.enumerated() {
                let count = try await Self.requests(node, to: backends[1])
                #expect(count > 0, "node \(index + 1) sent no request to the added backend")
            }

            // A weight change through node 2 applies everywhere.
            let (weightStatus, _) = try await nodes[1].admin(
                "PATCH", "/api/v1/pools/web/backends/\(added)", "{\"weight\": 7}", group: group)
            #expect(weightStatus == 200)
            #expect(
                await eventually(within: .seconds(1)) {
                    for node in nodes {
                        guard (try? await node.pool().snapshot().member(Endpoint(added)!))?.weight == 7 else {
                            return false
                        }
                    }
                    return true
                })

            // etcd stops: every node keeps serving and says so.
            await etcd.stop()
            #expect(
                await eventually(within: .seconds(10)) {
                    for node in nodes {
                        if await node.server.cluster()?.connected != false { return false }
                    }
                    return true
                })
            try await Self.drive(6, port: port, group: group)
            let (refused, body) = try await nodes[0].admin(
                "PATCH", "/api/v1/pools/web/backends/\(added)", "{\"weight\": 3}", group: group)
            #expect(refused == 503, "\(String(describing: body))")

            // A change made meanwhile (etcd on another port for a moment, unseen by the nodes)...
            let originalPort = etcd.clientPort
            try await etcd.restart(clientPort: try EtcdServer.freePort())
            let other = EtcdClient(endpoints: [etcd.endpoint], group: group)
            let store = try EtcdConfigStore(client: other, prefix: Self.prefix)
            _ = try await store.reload()
            let third = try #require(Endpoint("127.0.0.1:\(backends[2].port)"))
            _ = try await SharedPoolEditor(store: store).apply(.add(BackendSpec(endpoint: third)), to: "web")
            await etcd.stop()
            // ...is caught up with once etcd is back.
            try await etcd.restart(clientPort: originalPort)
            let caughtUp = await eventually(within: .seconds(15), every: .milliseconds(20)) {
                for node in nodes {
                    if (try? await node.pool().snapshot().member(third)) == nil { return false }
                }
                return true
            }
            #expect(caughtUp, "a node did not catch up after etcd returned")
        }
    }

    @Test func aMalformedDocumentIsRejectedAndConcurrentWritesAreAllKept() async throws {
        try await Self.withCluster { etcd, group, backends, nodes, port in
            let client = EtcdClient(endpoints: [etcd.endpoint], group: group)
            try await client.put(
                Self.prefix + "pools/web", value: Array("backends: [{ address: nope }]\n".utf8))
            let rejected = await eventually(within: .seconds(2)) {
                for node in nodes {
                    guard let view = await node.server.cluster(), view.rejections.map(\.key) == ["pools/web"] else {
                        return false
                    }
                }
                return true
            }
            #expect(rejected, "not every node reported the rejection")
            let view = try #require(await nodes[2].server.cluster())
            #expect(view.rejections.first?.problems.first?.contains("nope") == true, "\(view.rejections)")
            // The same through the API, and as a metric.
            let (status, json) = try await nodes[1].admin("GET", "/api/v1/cluster", group: group)
            #expect(status == 200)
            guard case .array(let rejections)? = json?["store"]?["rejections"] else {
                Issue.record("no store.rejections in \(String(describing: json))")
                return
            }
            #expect(rejections.first?["key"] == .string("pools/web"))
            let adminPort = try #require(await nodes[1].server.adminPort)
            let metricsSeen = await eventually(within: .seconds(3), every: .milliseconds(100)) {
                guard
                    let metrics = try? await DemoHTTPClient.request(
                        port: adminPort, DemoRequest(path: "/metrics"), group: group)
                else { return false }
                return String(buffer: metrics.body).contains("fulcrum_cluster_rejected_documents 1")
            }
            #expect(metricsSeen, "fulcrum_cluster_rejected_documents 1 not in /metrics")
            for node in nodes {
                #expect(try await node.pool().snapshot().members.map(\.endpoint.port) == [UInt16(backends[0].port)])
            }
            try await Self.drive(3, port: port, group: group)

            // Repair it (directly), then two operators add backends at the same time on two nodes.
            try await client.put(Self.prefix + "pools/web", value: Array("backends: []\n".utf8))
            #expect(await eventually(within: .seconds(2)) { await nodes[0].server.cluster()?.rejections == [] })
            let addresses = (0..<6).map { "127.0.0.1:\(20000 + $0)" }
            try await withThrowingTaskGroup(of: Int.self) { writes in
                for (index, address) in addresses.enumerated() {
                    writes.addTask {
                        let body = "{\"address\": \"\(address)\", \"healthy\": true}"
                        let (status, json) = try await nodes[index % 2].admin(
                            "POST", "/api/v1/pools/web/backends", body, group: group)
                        #expect(status == 201, "\(String(describing: json))")
                        return status
                    }
                }
                for try await _ in writes {}
            }
            let all = await eventually(within: .seconds(2)) {
                for node in nodes {
                    let members = (try? await node.pool().snapshot().members.map(\.endpoint.description)) ?? []
                    if Set(members) != Set(addresses) { return false }
                }
                return true
            }
            #expect(all, "a concurrent change was lost")
            var conflicts = 0
            for node in nodes { conflicts += await node.server.cluster()?.writeConflicts ?? 0 }
            print("cluster: 6 concurrent adds on two nodes, \(conflicts) compare-and-swap conflict(s) retried")
        }
    }
}

/// A node whose etcd is down at start serves nothing shared, says so, and applies the prefix once etcd answers.
@Suite(
    .serialized,
    .enabled(
        if: EtcdServer.isAvailable,
        "SKIPPED: `etcd` is not in PATH — install Debian's etcd-server (scripts/test does so as root)"))
struct ClusterStartTests {
    @Test func aNodeStartedWithoutEtcdCatchesUpWhenItAnswers() async throws {
        try await withEtcd { etcd in
            try await withEventLoopGroup(threads: 2) { group in
                let backend = try await DemoBackend.start(name: "b0", group: group)
                let port = try EtcdServer.freePort()
                _ = try await ClusterSeed.seed(
                    configText: """
                        pools: { web: { backends: [127.0.0.1:\(backend.port)] } }
                        listeners: [{ name: www, bind: 127.0.0.1:\(port), mode: http, pool: web }]
                        """, client: EtcdClient(endpoints: [etcd.endpoint], group: group),
                    prefix: ClusterServerTests.prefix)
                await etcd.stop()
                var logger = Logger(label: "fulcrum.test")
                logger.logLevel = .critical
                let server = try await FulcrumServer.start(
                    config: try ClusterServerTests.nodeConfig(1, etcdPort: etcd.clientPort), group: group,
                    logger: logger)
                #expect(await server.pool(named: "web") == nil)
                let serviceGroup = ServiceGroup(services: [server], logger: logger)
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await serviceGroup.run() }
                    let view = await server.cluster()
                    #expect(view?.connected == false && view?.nodesError != nil, "\(String(describing: view))")
                    try await etcd.restart()
                    let caughtUp = await eventually(within: .seconds(15), every: .milliseconds(20)) {
                        await server.port(ofListener: "www") == port
                    }
                    #expect(caughtUp, "the node did not apply the prefix after etcd came up")
                    if caughtUp {
                        let response = try await DemoHTTPClient.request(port: port, DemoRequest(), group: group)
                        #expect(response.status == 200)
                    }
                    await serviceGroup.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
                try? await backend.stop()
            }
        }
    }
}

/// The commands an operator types: `fulcrum cluster seed`, `fulcrum run` on a clustered node file, and
/// `fulcrum ctl` unchanged against it (its writes land in etcd), plus `fulcrum ctl cluster`.
@Suite(
    .serialized,
    .enabled(
        if: EtcdServer.isAvailable,
        "SKIPPED: `etcd` is not in PATH — install Debian's etcd-server (scripts/test does so as root)"))
struct ClusterProcessTests {
    @Test func seedRunAndCtlAgainstAClusteredNode() async throws {
        try await withEtcd { etcd in
            try await withEventLoopGroup(threads: 1) { group in
                let first = try await DemoBackend.start(name: "first", group: group)
                let second = try await DemoBackend.start(name: "second", group: group)
                let directory = FileManager.default.temporaryDirectory
                    .appendingPathComponent("fulcrum-cluster-ctl-\(getpid())")
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let port = try await RunProcessTests.freePort(group: group)
                let adminPort = try await RunProcessTests.freePort(group: group)
                let seedFile = directory.appendingPathComponent("seed.yaml").path
                let nodeFile = directory.appendingPathComponent("node.yaml").path
                let endpoint = "http://127.0.0.1:\(etcd.clientPort)"
                try """
                pools:
                  web: { algorithm: round-robin, backends: [127.0.0.1:\(first.port)] }
                listeners:
                  - { name: www, bind: 127.0.0.1:\(port), mode: http, pool: web }
                """.write(toFile: seedFile, atomically: true, encoding: .utf8)
                try """
                admin: { listen: 127.0.0.1:\(adminPort) }
                cluster: { store: etcd, endpoints: [\(endpoint)], prefix: /ops/, node_name: lb-1 }
                """.write(toFile: nodeFile, atomically: true, encoding: .utf8)
                var process: Process?
                func cleanUp() async {
                    if let process { await RunProcessTests.stop(process) }
                    try? await first.stop()
                    try? await second.stop()
                    try? FileManager.default.removeItem(at: directory)
                }
                do {
                    let seeded = try await CtlProcessTests.fulcrum(
                        ["cluster", "seed", seedFile, "--endpoints", endpoint, "--prefix", "/ops/"])
                    #expect(seeded.status == 0, "\(seeded)")
                    #expect(seeded.stdout.contains("/ops/pools/web") && seeded.stdout.contains("/ops/listeners/www"))
                    let again = try await CtlProcessTests.fulcrum(
                        ["cluster", "seed", seedFile, "--endpoints", endpoint, "--prefix", "/ops/"])
                    #expect(again.status == 1 && again.stderr.contains("already holds configuration"), "\(again)")

                    process = try RunProcessTests.startRun(configFile: nodeFile, extra: ["--log-level", "warning"])
                    let admin = ["--admin", "http://127.0.0.1:\(adminPort)"]
                    #expect(
                        await eventually(within: .seconds(20)) {
                            (try? await CtlProcessTests.fulcrum(["ctl", "backends", "web"] + admin))?.status == 0
                        })
                    let response = try await DemoHTTPClient.request(port: port, DemoRequest(), group: group)
                    #expect(response.status == 200)

                    let added = "127.0.0.1:\(second.port)"
                    let add = try await CtlProcessTests.fulcrum(["ctl", "add", "web", added] + admin)
                    #expect(add.status == 0, "\(add)")
                    #expect(!add.stderr.contains("lost on restart"), "a clustered change is kept in etcd: \(add)")
                    #expect(try await CtlProcessTests.fulcrum(["ctl", "drain", "web", added] + admin).status == 0)
                    let client = EtcdClient(endpoints: [etcd.endpoint], group: group)
                    let document = try await client.get("/ops/pools/web").keyValue?.text ?? ""
                    #expect(document.contains(added) && document.contains("draining"), "\(document)")
                    #expect(
                        try await CtlProcessTests.fulcrum(["ctl", "remove", "web", added, "--timeout", "5s"] + admin)
                            .status == 0)
                    let after = try await client.get("/ops/pools/web").keyValue?.text ?? ""
                    #expect(!after.contains(added), "\(after)")

                    let table = try await CtlProcessTests.fulcrum(["ctl", "cluster"] + admin)
                    #expect(table.status == 0, "\(table)")
                    #expect(table.stdout.contains("lb-1 *") && table.stdout.contains("connected"), "\(table)")
                    let json = try await CtlProcessTests.fulcrum(["ctl", "cluster", "--json"] + admin)
                    let parsed = try JSONValue.parse(Array(json.stdout.utf8))
                    #expect(parsed["node"] == .string("lb-1"))
                    #expect(parsed["store"]?["connected"] == .bool(true))
                } catch {
                    await cleanUp()
                    throw error
                }
                await cleanUp()
            }
        }
    }
}
