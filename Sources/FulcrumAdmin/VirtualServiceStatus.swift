/// A packet-plane virtual service as the admin API and `/metrics` show it (FulcrumAdmin does not depend on
/// FulcrumPacket: the server copies the worker's counters into this).
public struct VirtualServiceStatus: Sendable, Equatable {
    /// The configured name, or `vip:port/protocol` when it has none.
    public var name: String
    public var vip: String
    public var port: Int
    /// `tcp` or `udp`.
    public var transport: String
    /// `nat`, `dsr`, `tunnel-ipip` or `tunnel-vxlan`.
    public var forwarding: String
    public var pool: String
    /// False when the service is configured but its worker could not start (see the log).
    public var running: Bool
    /// Client → backend.
    public var packetsIn: UInt64 = 0
    public var bytesIn: UInt64 = 0
    /// Backend → client (NAT only: DSR and tunnel replies bypass the balancer).
    public var packetsOut: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// Drops by reason (`DropReason` names), only reasons with a count.
    public var drops: [String: UInt64] = [:]
    public var flowsActive: Int = 0
    public var flowsCreated: UInt64 = 0
    public var flowsExpired: UInt64 = 0
    public var flowsEvicted: UInt64 = 0
    public var sendFailures: UInt64 = 0

    public init(
        name: String, vip: String, port: Int, transport: String, forwarding: String, pool: String, running: Bool
    ) {
        self.name = name
        self.vip = vip
        self.port = port
        self.transport = transport
        self.forwarding = forwarding
        self.pool = pool
        self.running = running
    }
}

extension AdminControl {
    /// No packet plane by default (controls that predate it, test doubles).
    public func virtualServices() async -> [VirtualServiceStatus] { [] }
}

extension AdminAPI {
    static func virtualServiceJSON(_ service: VirtualServiceStatus) -> JSONValue {
        .object([
            ("name", .string(service.name)),
            ("vip", .string(service.vip)),
            ("port", .int(service.port)),
            ("protocol", .string(service.transport)),
            ("forwarding", .string(service.forwarding)),
            ("pool", .string(service.pool)),
            ("running", .bool(service.running)),
            ("packets_in", .int(Int(clamping: service.packetsIn))),
            ("bytes_in", .int(Int(clamping: service.bytesIn))),
            ("packets_out", .int(Int(clamping: service.packetsOut))),
            ("bytes_out", .int(Int(clamping: service.bytesOut))),
            (
                "drops",
                .object(service.drops.sorted { $0.key < $1.key }.map { ($0.key, .int(Int(clamping: $0.value))) })
            ),
            ("flows_active", .int(service.flowsActive)),
            ("flows_created", .int(Int(clamping: service.flowsCreated))),
            ("flows_expired", .int(Int(clamping: service.flowsExpired))),
            ("flows_evicted", .int(Int(clamping: service.flowsEvicted))),
            ("send_failures", .int(Int(clamping: service.sendFailures))),
        ])
    }
}

extension MetricsExposition {
    /// The packet plane's series, one label set per virtual service (nothing when there are none).
    public static func render(virtualServices services: [VirtualServiceStatus]) -> String {
        guard !services.isEmpty else { return "" }
        var out = Exposition()
        func each(_ name: String, _ type: String, _ help: String, _ value: (VirtualServiceStatus) -> Double) {
            out.family(name, type, help)
            for service in services {
                out.sample(name, ["virtual_service": service.name, "mode": service.forwarding], value(service))
            }
        }
        each("fulcrum_vs_up", "gauge", "1 when the virtual service's worker runs.") { $0.running ? 1 : 0 }
        each("fulcrum_vs_packets_in_total", "counter", "Packets forwarded client to backend.") {
            Double($0.packetsIn)
        }
        each("fulcrum_vs_bytes_in_total", "counter", "Bytes forwarded client to backend.") { Double($0.bytesIn) }
        each("fulcrum_vs_packets_out_total", "counter", "Packets forwarded backend to client (NAT only).") {
            Double($0.packetsOut)
        }
        each("fulcrum_vs_bytes_out_total", "counter", "Bytes forwarded backend to client (NAT only).") {
            Double($0.bytesOut)
        }
        each("fulcrum_vs_flows_active", "gauge", "Flows in the flow table.") { Double($0.flowsActive) }
        each("fulcrum_vs_flows_created_total", "counter", "Flows created.") { Double($0.flowsCreated) }
        each("fulcrum_vs_flows_expired_total", "counter", "Flows removed after their idle timeout.") {
            Double($0.flowsExpired)
        }
        each("fulcrum_vs_flows_evicted_total", "counter", "Live flows evicted because the table was full.") {
            Double($0.flowsEvicted)
        }
        each("fulcrum_vs_send_failures_total", "counter", "Packets the kernel refused to send.") {
            Double($0.sendFailures)
        }
        out.family("fulcrum_vs_dropped_packets_total", "counter", "Packets dropped, by reason.")
        for service in services {
            for (reason, count) in service.drops.sorted(by: { $0.key < $1.key }) {
                out.sample(
                    "fulcrum_vs_dropped_packets_total",
                    ["virtual_service": service.name, "mode": service.forwarding, "reason": reason], Double(count))
            }
        }
        return out.text
    }
}
