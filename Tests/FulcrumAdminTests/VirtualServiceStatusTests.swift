import FulcrumAdmin
import FulcrumCore
import Testing

/// A control with packet-plane services and nothing else, to test what the API and /metrics make of them.
private struct PacketOnlyControl: AdminControl {
    let services: [VirtualServiceStatus]
    func pools() async -> [Pool] { [] }
    func pool(named name: String) async -> Pool? { nil }
    func listeners() async -> [ListenerStatus] { [] }
    func virtualServices() async -> [VirtualServiceStatus] { services }
    var persistsChanges: Bool { false }
    func addBackend(pool: String, spec: BackendSpec, healthy: Bool?) async throws(AdminError) -> ChangeResult {
        throw AdminError.unknownPool(pool)
    }
    func removeBackend(
        pool: String, endpoint: Endpoint, force: Bool, drainTimeout: Duration
    ) async throws(AdminError) -> ChangeResult { throw AdminError.unknownPool(pool) }
    func setWeight(pool: String, endpoint: Endpoint, weight: Int) async throws(AdminError) -> ChangeResult {
        throw AdminError.unknownPool(pool)
    }
    func setAdminState(pool: String, endpoint: Endpoint, state: AdminState) async throws(AdminError) -> ChangeResult {
        throw AdminError.unknownPool(pool)
    }
}

@Suite("Virtual services in the admin API and /metrics")
struct VirtualServiceStatusTests {
    static var sample: [VirtualServiceStatus] {
        var dsr = VirtualServiceStatus(
            name: "web", vip: "192.0.2.10", port: 80, transport: "tcp", forwarding: "dsr", pool: "web", running: true)
        dsr.packetsIn = 1200
        dsr.bytesIn = 96_000
        dsr.drops = ["bad_checksum": 3, "fragment": 2]
        dsr.flowsActive = 7
        dsr.flowsCreated = 40
        dsr.flowsEvicted = 1
        let down = VirtualServiceStatus(
            name: "192.0.2.11:53/udp", vip: "192.0.2.11", port: 53, transport: "udp", forwarding: "tunnel-ipip",
            pool: "dns", running: false)
        return [dsr, down]
    }

    @Test func listedByTheAPI() async throws {
        let api = AdminAPI(control: PacketOnlyControl(services: Self.sample), token: nil, readsAreOpen: true)
        let response = await api.handle(AdminRequest(method: "GET", target: "/api/v1/virtual_services"))
        #expect(response.status == 200)
        guard case .object(let top) = response.body, case .array(let list)? = top.first?.1 else {
            Issue.record("unexpected body \(response.body)")
            return
        }
        #expect(list.count == 2)
        guard case .object(let first) = list[0] else { return }
        let fields = Dictionary(first, uniquingKeysWith: { a, _ in a })
        #expect(fields["name"] == .string("web"))
        #expect(fields["forwarding"] == .string("dsr"))
        #expect(fields["packets_in"] == .int(1200))
        #expect(fields["flows_created"] == .int(40))
        #expect(fields["drops"] == .object([("bad_checksum", .int(3)), ("fragment", .int(2))]))
        let post = await api.handle(AdminRequest(method: "POST", target: "/api/v1/virtual_services"))
        #expect(post.status == 405)
    }

    @Test func exposedInMetrics() async throws {
        let api = AdminAPI(control: PacketOnlyControl(services: Self.sample), token: nil, readsAreOpen: true)
        let response = await api.handle(AdminRequest(method: "GET", target: "/metrics"))
        let samples = try parseExposition(response.text ?? "")
        func value(_ name: String, _ labels: [String: String]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
        let web = ["virtual_service": "web", "mode": "dsr"]
        #expect(value("fulcrum_vs_packets_in_total", web) == 1200)
        #expect(value("fulcrum_vs_bytes_in_total", web) == 96_000)
        #expect(value("fulcrum_vs_flows_active", web) == 7)
        #expect(value("fulcrum_vs_flows_evicted_total", web) == 1)
        #expect(value("fulcrum_vs_dropped_packets_total", web.merging(["reason": "bad_checksum"]) { a, _ in a }) == 3)
        #expect(value("fulcrum_vs_up", ["virtual_service": "192.0.2.11:53/udp", "mode": "tunnel-ipip"]) == 0)
    }
}
