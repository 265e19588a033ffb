import FulcrumAdmin
import FulcrumCore
import FulcrumDemo
import FulcrumTestSupport
import NIOCore
import Testing

@Suite("Admin API: reads, auth, errors")
struct AdminAPITests {
    @Test("GET pools: every backend with state and counters matching the traffic sent")
    func poolsShowCounters() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior()]) {
            AdminHarness.yaml($0, health: false)
        } _: { harness in
            let report = try await LoadDriver.run(
                port: harness.port, requests: 200, concurrency: 4, group: harness.group)
            #expect(report.succeeded == 200)

            let (status, json) = try await harness.call("GET", "/api/v1/pools", token: nil)
            #expect(status == 200)
            guard case .array(let pools)? = json["pools"], let pool = pools.first else {
                Issue.record("no pools in \(json.serialized)")
                return
            }
            #expect(pool["name"] == "web")
            #expect(pool["algorithm"] == "round-robin")
            let backends = try await harness.backendsJSON()
            #expect(backends.count == 2)
            var total = 0
            for backend in harness.backends {
                let json = try #require(backends["127.0.0.1:\(backend.port)"])
                #expect(json["state"] == "up")
                #expect(json["weight"] == 1)
                #expect(json["effective_weight"]?.doubleValue == 1)
                #expect(json["backup"] == false)
                #expect(json["errors"] == 0)
                #expect(json["last_check"] == .null)
                let requests = try #require(json["requests"]?.intValue)
                #expect(requests == backend.requests)
                total += requests
                if let p50 = json["latency_p50_ms"]?.doubleValue, let p99 = json["latency_p99_ms"]?.doubleValue {
                    #expect(p50 > 0 && p99 >= p50)
                } else {
                    Issue.record("latency missing in \(json.serialized)")
                }
            }
            #expect(total == 200)

            let (listenersStatus, listeners) = try await harness.call("GET", "/api/v1/listeners", token: nil)
            #expect(listenersStatus == 200)
            guard case .array(let list)? = listeners["listeners"], let www = list.first else {
                Issue.record("no listeners in \(listeners.serialized)")
                return
            }
            #expect(www["name"] == "www")
            #expect(www["mode"] == "http")
            #expect(www["pool"] == "web")
            #expect((www["accepted_connections"]?.intValue ?? 0) >= 4)
        }
    }

    @Test("health results show as last_check with its age")
    func lastCheck() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            #expect(
                try await eventually {
                    try await harness.backendsJSON()[harness.addresses[0]]?["last_check"]?["success"] == true
                })
            let check = try #require(try await harness.backendsJSON()[harness.addresses[0]]?["last_check"])
            #expect((check["age_ms"]?.intValue ?? -1) >= 0)
        }
    }

    @Test("writes need the bearer token: none → 401, wrong → 401, right → 2xx")
    func auth() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let path = "/api/v1/pools/web/backends/\(harness.addresses[0])"
            let missing = try await harness.call("PATCH", path, body: #"{"weight":2}"#, token: nil)
            #expect(missing.status == 401)
            #expect(missing.json["error"] == "unauthorized")
            let wrong = try await harness.call("PATCH", path, body: #"{"weight":2}"#, token: "s3cret-tokeX")
            #expect(wrong.status == 401)
            let shorter = try await harness.call("DELETE", path, token: "s3cret")
            #expect(shorter.status == 401)
            let right = try await harness.call("PATCH", path, body: #"{"weight":2}"#)
            #expect(right.status == 200)
            #expect(right.json["weight"] == 2)
            // Reads are open on loopback.
            #expect(try await harness.call("GET", "/api/v1/pools", token: nil).status == 200)
        }
    }

    @Test("without a token file, writes are open on a loopback listener")
    func noTokenOnLoopback() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()], tokenFile: false) {
            AdminHarness.yaml($0)
        } _: { harness in
            let path = "/api/v1/pools/web/backends/\(harness.addresses[0])"
            let response = try await harness.call("PATCH", path, body: #"{"weight":3}"#, token: nil)
            #expect(response.status == 200)
        }
    }

    @Test("bad input: 400 naming the problem, 404, 405, 409, 413, 422")
    func errors() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let backends = "/api/v1/pools/web/backends"
            func expectError(
                _ method: String, _ path: String, body: String? = nil, status: Int, detail: String? = nil,
                sourceLocation: SourceLocation = #_sourceLocation
            ) async throws {
                let response = try await harness.call(method, path, body: body)
                #expect(response.status == status, "\(response.json.serialized)", sourceLocation: sourceLocation)
                #expect(response.json["error"]?.stringValue != nil, sourceLocation: sourceLocation)
                if let detail {
                    let text = response.json["detail"]?.stringValue ?? ""
                    #expect(text.contains(detail), "detail: \(text)", sourceLocation: sourceLocation)
                }
            }
            try await expectError("POST", backends, body: #"{"address": "127.0.0.1:1""#, status: 400, detail: "JSON")
            try await expectError("POST", backends, body: #"{"weight": 2}"#, status: 400, detail: "\"address\"")
            try await expectError("POST", backends, body: "[1]", status: 400, detail: "object")
            try await expectError(
                "POST", backends, body: #"{"address":"127.0.0.1:1","weight":"x"}"#, status: 400,
                detail: "\"weight\": expected an integer")
            try await expectError(
                "POST", backends, body: #"{"address":"127.0.0.1:1","weight":true}"#, status: 400, detail: "weight")
            try await expectError(
                "POST", backends, body: #"{"address":"127.0.0.1:1","wieght":2}"#, status: 400, detail: "wieght")
            try await expectError(
                "POST", backends, body: #"{"address":"127.0.0.1:1","weight":0}"#, status: 422, detail: "weight")
            try await expectError("POST", backends, body: #"{"address":"nowhere:80"}"#, status: 422, detail: "address")
            try await expectError(
                "POST", "/api/v1/pools/nope/backends", body: #"{"address":"127.0.0.1:1"}"#, status: 404, detail: "nope")
            try await expectError(
                "POST", backends, body: #"{"address":"\#(harness.addresses[0])"}"#, status: 409, detail: "already")
            try await expectError("GET", "/api/v1/pools/nope", status: 404)
            try await expectError("GET", "/api/v2/whatever", status: 404)
            try await expectError("DELETE", "/api/v1/pools/web/backends/127.0.0.1:1", status: 404)
            try await expectError("DELETE", "/api/v1/pools/web/backends/127.0.0.1:1?timeout=soon", status: 400)
            try await expectError(
                "PATCH", "\(backends)/\(harness.addresses[0])", body: #"{"state":"sleeping"}"#, status: 422)
            try await expectError("PATCH", "\(backends)/\(harness.addresses[0])", body: "{}", status: 400)
            try await expectError("PUT", "/api/v1/pools", status: 405)
            try await expectError(
                "POST", backends, body: String(repeating: " ", count: AdminServer.maxBodyBytes + 1), status: 413)
            // The server is still fine.
            #expect(try await harness.call("GET", "/api/v1/pools").status == 200)
        }
    }

    @Test("a percent-encoded IPv6 backend address in the path")
    func ipv6Path() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let added = try await harness.call(
                "POST", "/api/v1/pools/web/backends", body: #"{"address":"[::1]:9","weight":2,"healthy":false}"#)
            #expect(added.status == 201)
            #expect(added.json["address"] == "[::1]:9")
            #expect(added.json["persisted"] == false)
            #expect(added.json["note"]?.stringValue?.contains("lost on restart") == true)
            let one = try await harness.call("GET", "/api/v1/pools/web/backends/%5B%3A%3A1%5D%3A9", token: nil)
            #expect(one.status == 200)
            #expect(one.json["weight"] == 2)
            let removed = try await harness.call("DELETE", "/api/v1/pools/web/backends/%5B%3A%3A1%5D%3A9?force=true")
            #expect(removed.status == 200)
            #expect(removed.json["removed"] == "[::1]:9")
            #expect(try await harness.backendsJSON()["[::1]:9"] == nil)
        }
    }
}
