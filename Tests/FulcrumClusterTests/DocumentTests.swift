import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import Testing

/// The shared documents are parsed by FulcrumConfig's loader: same results as the file, errors traced to
/// the key and the line inside the document. No etcd needed.
@Suite struct DocumentTests {
    static let webPool = """
        algorithm: maglev
        backends:
          - { address: 127.0.0.1:8081, weight: 3 }
          - { address: 127.0.0.1:8082 }
        """

    @Test func poolDocumentDecodesLikeTheFile() throws {
        let assembled = try ConfigAssembler.assemble(
            local: FulcrumConfig(), documents: [.pool("web"): Self.webPool]
        ).get()
        let file = try ConfigLoader.load(
            yaml: "pools:\n  web:\n" + Self.webPool.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        #expect(assembled.pools == file.pools)
        #expect(assembled.pools.first?.algorithm == .maglev)
        #expect(assembled.pools.first?.backends.map(\.weight) == [3, 1])
    }

    @Test func jsonDocumentsAreYAMLToo() throws {
        let config = try ConfigAssembler.assemble(
            local: FulcrumConfig(),
            documents: [
                .pool("api"): #"{"algorithm": "round-robin", "backends": [{"address": "127.0.0.1:9001"}]}"#,
                .listener("www"): #"{"name": "www", "bind": "127.0.0.1:0", "pool": "api"}"#,
                .virtualService("vip"): """
                vip: 192.0.2.10
                port: 9001
                forwarding: dsr
                interface: eth0
                pool: api
                """,
            ]
        ).get()
        #expect(config.pools.map(\.name) == ["api"])
        #expect(config.listeners.map(\.name) == ["www"])
        #expect(config.virtualServices.first?.name == "vip")
        #expect(config.virtualServices.first?.port == 9001)
    }

    @Test func problemsPointIntoTheDocument() {
        let broken = """
            algorithm: maglev
            backends:
              - { address: 127.0.0.1:8081, weight: 0 }
            """
        let result = ConfigAssembler.assemble(
            local: FulcrumConfig(), documents: [.pool("web"): Self.webPool, .pool("zz"): broken])
        guard case .failure(let failure) = result else {
            Issue.record("a weight of 0 was accepted")
            return
        }
        #expect(failure.keys == [.pool("zz")])
        let problem = failure.problems.first
        #expect(problem?.key == "pools/zz")
        #expect(problem?.path == "backends[0].weight")
        #expect(problem?.line == 3)
        // The column of the value `0` in the document's own third line.
        let line = "  - { address: 127.0.0.1:8081, weight: 0 }"
        let valueColumn = line.distance(from: line.startIndex, to: line.firstRange(of: "weight: ")!.upperBound) + 1
        #expect(problem?.column == valueColumn)
    }

    @Test func syntaxErrorsAndMarkersAreTheDocumentsOwn() {
        let result = ConfigAssembler.assemble(
            local: FulcrumConfig(), documents: [.pool("web"): Self.webPool, .pool("bad"): "backends: [\n"])
        guard case .failure(let failure) = result else {
            Issue.record("unclosed flow sequence accepted")
            return
        }
        #expect(failure.keys == [.pool("bad")])

        let marker = ConfigAssembler.assemble(local: FulcrumConfig(), documents: [.pool("web"): "---\nbackends: []"])
        guard case .failure(let markerFailure) = marker else {
            Issue.record("document marker accepted")
            return
        }
        #expect(markerFailure.problems.first?.line == 1)
    }

    @Test func listenerNameMustMatchItsKey() {
        let result = ConfigAssembler.assemble(
            local: FulcrumConfig(),
            documents: [.pool("web"): Self.webPool, .listener("www"): "{name: other, bind: 127.0.0.1:0, pool: web}"])
        guard case .failure(let failure) = result else {
            Issue.record("mismatched listener name accepted")
            return
        }
        #expect(failure.keys == [.listener("www")])
    }

    @Test func listenerOnTheAdminAddressIsRefused() {
        let local = FulcrumConfig(admin: AdminConfig(listen: Endpoint(address: .v4(0x7F00_0001), port: 9900)))
        let result = ConfigAssembler.assemble(
            local: local,
            documents: [.pool("web"): Self.webPool, .listener("www"): "{name: www, bind: 127.0.0.1:9900, pool: web}"])
        guard case .failure(let failure) = result else {
            Issue.record("listener on the admin address accepted")
            return
        }
        #expect(failure.keys == [.listener("www")])
    }

    // MARK: per-document last good state

    static func stored(_ text: String, _ revision: Int64) -> StoredDocument {
        StoredDocument(text: text, modRevision: revision)
    }

    @Test func brokenDocumentKeepsItsLastGoodVersionWhileOthersApply() {
        let good: [ClusterKey: StoredDocument] = [
            .pool("web"): Self.stored(Self.webPool, 2), .pool("api"): Self.stored("backends: []", 3),
        ]
        var now = good
        now[.pool("web")] = Self.stored("algorithm: nonsense", 5)
        now[.pool("api")] = Self.stored("backends: [{address: 127.0.0.1:9000}]", 6)
        let evaluation = DocumentSet.evaluate(local: FulcrumConfig(), current: now, lastGood: good)
        #expect(evaluation.config?.pool(named: "web")?.algorithm == .maglev)
        #expect(evaluation.config?.pool(named: "api")?.backends.count == 1)
        #expect(evaluation.rejections.map(\.key) == ["pools/web"])
        #expect(evaluation.rejections.first?.modRevision == 5)
        #expect(evaluation.applied[.pool("web")]?.modRevision == 2)
    }

    @Test func newBrokenDocumentStaysAbsent() {
        let evaluation = DocumentSet.evaluate(
            local: FulcrumConfig(), current: [.pool("web"): Self.stored("backends: 7", 4)], lastGood: [:])
        #expect(evaluation.config?.pools.isEmpty == true)
        #expect(evaluation.rejections.map(\.key) == ["pools/web"])
    }

    @Test func deletingAPoolInUseIsHeldBack() {
        let good: [ClusterKey: StoredDocument] = [
            .pool("web"): Self.stored(Self.webPool, 2),
            .listener("www"): Self.stored("{name: www, bind: 127.0.0.1:0, pool: web}", 3),
        ]
        var now = good
        now[.pool("web")] = nil
        let evaluation = DocumentSet.evaluate(local: FulcrumConfig(), current: now, lastGood: good)
        #expect(evaluation.config?.pool(named: "web") != nil)
        #expect(evaluation.config?.listeners.count == 1)
        #expect(evaluation.rejections.map(\.key) == ["pools/web"])
        #expect(evaluation.rejections.first?.problems.first?.message.contains("unknown pool") == true)
    }

    @Test func listenerOfABrokenNewPoolIsHeldBackToo() {
        let now: [ClusterKey: StoredDocument] = [
            .pool("web"): Self.stored("backends: nope", 2),
            .listener("www"): Self.stored("{name: www, bind: 127.0.0.1:0, pool: web}", 3),
            .pool("api"): Self.stored("backends: []", 4),
        ]
        let evaluation = DocumentSet.evaluate(local: FulcrumConfig(), current: now, lastGood: [:])
        #expect(evaluation.config?.pools.map(\.name) == ["api"])
        #expect(evaluation.config?.listeners.isEmpty == true)
        #expect(Set(evaluation.rejections.map(\.key)) == ["pools/web", "listeners/www"])
    }

    // MARK: small parts

    @Test func keyLayout() {
        #expect(ClusterKey(relativePath: "pools/web") == .pool("web"))
        #expect(ClusterKey(relativePath: "virtual_services/v.1") == .virtualService("v.1"))
        #expect(ClusterKey(relativePath: "nodes/lb-1") == .node("lb-1"))
        #expect(ClusterKey(relativePath: "pools/a/b") == nil)
        #expect(ClusterKey(relativePath: "pools/") == nil)
        #expect(ClusterKey(relativePath: "other/x") == nil)
        #expect(ClusterKey.pool("web").key(under: "/fulcrum/") == "/fulcrum/pools/web")
    }

    @Test func endpoints() throws {
        #expect(try EtcdEndpoint(url: "http://127.0.0.1:2379") == EtcdEndpoint(host: "127.0.0.1", port: 2379))
        #expect(try EtcdEndpoint(url: "http://[::1]:23790/") == EtcdEndpoint(host: "::1", port: 23790))
        #expect(try EtcdEndpoint(url: "etcd.local") == EtcdEndpoint(host: "etcd.local", port: 2379))
        #expect(throws: EtcdError.self) { try EtcdEndpoint(url: "https://x:1") }
        #expect(throws: EtcdError.self) { try EtcdEndpoint(url: "http://x:99999") }
    }

    @Test func backoffIsBounded() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        var waits: [Duration] = []
        for _ in 0..<10 { waits.append(backoff.next()) }
        #expect(waits.allSatisfy { $0 >= .milliseconds(50) && $0 <= .seconds(1) })
        #expect(waits.last! >= .milliseconds(500))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(100))
    }
}
