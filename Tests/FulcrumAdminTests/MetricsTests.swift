import FulcrumAdmin
import FulcrumDemo
import FulcrumServer
import FulcrumTestSupport
import NIOCore
import Testing

/// One sample of a Prometheus text exposition.
struct MetricSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// A strict parser of the text format (0.0.4) for what Fulcrum writes: every sample's family must be
/// declared by `# TYPE` first, label values quoted and escaped, values numbers.
func parseExposition(_ text: String) throws -> [MetricSample] {
    struct Malformed: Error, CustomStringConvertible {
        let line: String
        var description: String { "malformed exposition line: \(line)" }
    }
    var declared: Set<String> = []
    var samples: [MetricSample] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) where !line.isEmpty {
        if line.hasPrefix("# HELP ") { continue }
        if line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            guard parts.count == 4, ["counter", "gauge", "histogram"].contains(parts[3]) else {
                throw Malformed(line: line)
            }
            declared.insert(String(parts[2]))
            continue
        }
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            throw Malformed(line: line)
        }
        let series = line[..<space]
        var name = String(series)
        var labels: [String: String] = [:]
        if let brace = series.firstIndex(of: "{") {
            guard series.last == "}" else { throw Malformed(line: line) }
            name = String(series[..<brace])
            var rest = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            while !rest.isEmpty {
                guard let equals = rest.firstIndex(of: "="), rest[rest.index(after: equals)] == "\"" else {
                    throw Malformed(line: line)
                }
                let key = String(rest[..<equals])
                var index = rest.index(equals, offsetBy: 2)
                var value = ""
                while index < rest.endIndex && rest[index] != "\"" {
                    if rest[index] == "\\" { index = rest.index(after: index) }
                    value.append(rest[index])
                    index = rest.index(after: index)
                }
                guard index < rest.endIndex else { throw Malformed(line: line) }
                labels[key] = value
                rest = rest[rest.index(after: index)...]
                if rest.first == "," { rest = rest.dropFirst() }
            }
        }
        let family = ["_bucket", "_sum", "_count"].reduce(name) {
            $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0
        }
        guard declared.contains(name) || declared.contains(family) else { throw Malformed(line: line) }
        samples.append(MetricSample(name: name, labels: labels, value: value))
    }
    return samples
}

@Suite("Admin: /metrics")
struct MetricsTests {
    @Test("the exposition parses, and its counters match the traffic the test sent")
    func countersMatchTraffic() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior(errorRate: 0.25)]) {
            AdminHarness.yaml($0, health: false)
        } _: { harness in
            let report = try await LoadDriver.run(
                port: harness.port, requests: 400, concurrency: 4, group: harness.group)
            #expect(report.requests == 400 && report.errors == 0)
            let response = try await DemoHTTPClient.request(
                port: harness.admin.port, DemoRequest(path: "/metrics"), group: harness.group)
            #expect(response.status == 200)
            #expect(response.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
            let samples = try parseExposition(String(buffer: response.body))
            func values(_ name: String, _ match: [String: String] = [:]) -> [MetricSample] {
                samples.filter { sample in sample.name == name && match.allSatisfy { sample.labels[$0.key] == $0.value }
                }
            }
            for (index, backend) in harness.backends.enumerated() {
                let labels = ["pool": "web", "backend": harness.addresses[index]]
                let byCode = Dictionary(
                    uniqueKeysWithValues: values("fulcrum_backend_requests_total", labels).map {
                        ($0.labels["code"]!, $0.value)
                    })
                // Every answer the client got from this backend, whatever its class.
                #expect(Int(byCode.values.reduce(0, +)) == report.byBackend[backend.name, default: 0], "\(byCode)")
                #expect(byCode.values.reduce(0, +) == Double(backend.requests), "\(byCode)")
                let count = try #require(values("fulcrum_backend_latency_seconds_count", labels).first?.value)
                #expect(count == Double(backend.requests))
                let infinity = try #require(
                    values("fulcrum_backend_latency_seconds_bucket", labels + ["le": "+Inf"]).first)
                #expect(infinity.value == count)
                let buckets = values("fulcrum_backend_latency_seconds_bucket", labels).map(\.value)
                #expect(buckets == buckets.sorted(), "buckets are cumulative")
                #expect(values("fulcrum_backend_up", labels).first?.value == 1)
            }
            let errors = report.statusCounts[500, default: 0]
            let fiveHundreds = values("fulcrum_backend_requests_total", ["code": "5xx"]).map(\.value).reduce(0, +)
            #expect(Int(fiveHundreds) == errors && errors > 0)
            let accepted = try #require(
                values("fulcrum_listener_accepted_connections_total", ["listener": "www"]).first)
            #expect(accepted.value >= 4)
            #expect(values("fulcrum_build_info").first?.labels["version"] != nil)
            #expect(values("fulcrum_pool_no_backend_available_total", ["pool": "web"]).first?.value == 0)
        }
    }

    @Test("bytes per backend match what the test sent; control-plane series come from swift-metrics, no name twice")
    func bytesAndControlPlaneSeries() async throws {
        // A pool name of this test's own: the swift-metrics registry is one per process, shared by every test.
        let eventsPool = "events-\(UInt32.random(in: 0...UInt32.max))"
        try await AdminHarness.with(backends: [DemoBehavior()]) { addresses in
            """
            pools:
              web: { backends: [\(addresses[0])] }
              \(eventsPool): { backends: [\(addresses[0])] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            for size in [100, 200, 300] {
                let response = try await DemoHTTPClient.request(
                    port: harness.port,
                    DemoRequest(method: "POST", path: "/echo", body: ByteBuffer(repeating: 0x61, count: size)),
                    group: harness.group)
                #expect(response.status == 200 && response.bodyLength == size)
            }
            let download = try await DemoHTTPClient.request(
                port: harness.port, DemoRequest(path: "/bytes/700"), group: harness.group)
            #expect(download.bodyLength == 700)

            func scrape() async throws -> (samples: [MetricSample], text: String) {
                let response = try await DemoHTTPClient.request(
                    port: harness.admin.port, DemoRequest(path: "/metrics"), group: harness.group)
                #expect(response.status == 200)
                let text = String(buffer: response.body)
                return (try parseExposition(text), text)
            }
            func value(_ samples: [MetricSample], _ name: String, _ labels: [String: String]) -> Double? {
                samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
                }?
                .value
            }
            let backendLabels = ["pool": "web", "backend": harness.addresses[0]]
            let before = try await scrape()
            #expect(value(before.samples, "fulcrum_backend_sent_bytes_total", backendLabels) == 600)
            #expect(value(before.samples, "fulcrum_backend_received_bytes_total", backendLabels) == 1300)
            let json = try #require(try await harness.backendsJSON()[harness.addresses[0]])
            #expect(json["bytes_sent"]?.intValue == 600 && json["bytes_received"]?.intValue == 1300)

            // Control-plane events: an admin write (a drain in this test's own pool) and a reload.
            let reloadsBefore = value(before.samples, "fulcrum_config_reloads_total", ["result": "applied"]) ?? 0
            let writesBefore =
                value(before.samples, "fulcrum_admin_writes_total", ["method": "PATCH", "status": "200"]) ?? 0
            let drained = try await harness.call(
                "PATCH", "/api/v1/pools/\(eventsPool)/backends/\(harness.addresses[0])", body: #"{"state":"draining"}"#)
            #expect(drained.status == 200)
            #expect(await harness.server.reload(harness.server.config))
            let after = try await scrape()
            #expect(
                value(after.samples, "fulcrum_pool_events_total", ["pool": eventsPool, "event": "admin_draining"]) == 1)
            #expect(value(after.samples, "fulcrum_config_reloads_total", ["result": "applied"])! >= reloadsBefore + 1)
            #expect(
                value(after.samples, "fulcrum_admin_writes_total", ["method": "PATCH", "status": "200"])!
                    >= writesBefore + 1)
            // One family per name: the registry's series and the per-backend ones never collide.
            let families = after.text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
                .map { $0.split(separator: " ")[2] }
            #expect(families.count == Set(families).count, "duplicate families")
        }
    }

    @Test("the parser rejects what Prometheus would reject")
    func parserIsStrict() {
        #expect(throws: (any Error).self) { try parseExposition("undeclared_metric 1\n") }
        #expect(throws: (any Error).self) { try parseExposition("# TYPE x gauge\nx{a=b} 1\n") }
        #expect(throws: (any Error).self) { try parseExposition("# TYPE x gauge\nx one\n") }
        #expect((try? parseExposition("# TYPE x gauge\nx{a=\"q\\\"\"} 2\n"))?.first?.labels["a"] == "q\"")
    }
}

func + (lhs: [String: String], rhs: [String: String]) -> [String: String] {
    lhs.merging(rhs) { $1 }
}
