import FulcrumConfig
import FulcrumCore
import NIOCore
import Prometheus

/// The admin API's routes, independent of HTTP: a request in, a JSON response out. `AdminServer` feeds it;
/// tests can call it directly.
///
/// Access: with a token, every write (and, off loopback, every read) needs `Authorization: Bearer <token>`.
/// Without a token, reads and writes are open, which `AdminServer` only allows on a loopback listener
/// (the config refuses a non-loopback admin listener without `token_file`): anyone who can reach the port
/// on this host can change pools, the same trust as HAProxy's local stats socket.
public struct AdminAPI: Sendable {
    public let control: any AdminControl
    let token: BearerToken?
    /// Reads need no token (loopback listener).
    let readsAreOpen: Bool

    /// - Parameters:
    ///   - token: required by writes when set; nil leaves writes open (loopback only).
    ///   - readsAreOpen: GETs need no token (true on a loopback listener).
    public init(control: any AdminControl, token: String?, readsAreOpen: Bool) {
        self.control = control
        self.token = token.map(BearerToken.init)
        self.readsAreOpen = readsAreOpen
    }

    static let runtimeChangeNote = "runtime change: lost on restart or reload (no state_file configured)"
    static let defaultDrainTimeout = Duration.seconds(30)

    /// Answers one request. Never throws: every failure is an error response.
    public func handle(_ request: AdminRequest) async -> AdminResponse {
        let response: AdminResponse
        do {
            response = try await route(request)
        } catch let refusal as AdminRefusal {
            response = refusal.response
        } catch let error as AdminError {
            response = Self.response(for: error)
        } catch {
            response = .error(500, "internal", "\(error)")
        }
        let method = request.method.uppercased()
        if method == "POST" || method == "PATCH" || method == "DELETE" || method == "PUT" {
            ControlPlaneMetrics.adminWrite(method: method, status: response.status)
        }
        return response
    }

    /// `/metrics` (Prometheus text format) and `/ui` (the dashboard): reads, open like the other reads.
    private func textRoute(path: String, request: AdminRequest) async -> AdminResponse? {
        guard path == "/metrics" || path == "/ui" || path == "/ui/" else { return nil }
        guard request.method.uppercased() == "GET" else {
            return .error(405, "method_not_allowed", "\(request.method) is not allowed on \(path) (allowed: GET)")
        }
        if let refusal = authorize(request, isWrite: false) { return refusal }
        if path == "/metrics" {
            var text = MetricsExposition.render(pools: await control.pools(), listeners: await control.listeners())
            if let ha = await control.haStatus { text += ha.exposition }
            text += MetricsExposition.render(virtualServices: await control.virtualServices())
            // The control-plane series swift-metrics collected (names distinct from the ones above).
            if let registry = await control.metricsRegistry { text += registry.emitToString() }
            return AdminResponse(status: 200, text: text, contentType: MetricsExposition.contentType)
        }
        return AdminResponse(status: 200, text: Dashboard.html, contentType: "text/html; charset=utf-8")
    }

    private enum Route {
        case pools
        case pool(String)
        case backends(pool: String)
        case backend(pool: String, address: String)
        case listeners
        case cluster
        case ha
        case virtualServices
    }

    private func route(_ request: AdminRequest) async throws -> AdminResponse {
        let (path, query) = Self.splitTarget(request.target)
        if let page = await textRoute(path: path, request: request) { return page }
        guard let segments = Self.segments(of: path) else {
            return .badRequest("the path is not valid percent-encoded UTF-8")
        }
        let route: Route
        switch segments.count {
        case 3 where segments[0...2] == ["api", "v1", "pools"]: route = .pools
        case 3 where segments[0...2] == ["api", "v1", "listeners"]: route = .listeners
        case 3 where segments[0...2] == ["api", "v1", "cluster"]: route = .cluster
        case 3 where segments[0...2] == ["api", "v1", "ha"]: route = .ha
        case 3 where segments[0...2] == ["api", "v1", "virtual_services"]: route = .virtualServices
        case 4 where segments[0...2] == ["api", "v1", "pools"]: route = .pool(segments[3])
        case 5 where segments[0...2] == ["api", "v1", "pools"] && segments[4] == "backends":
            route = .backends(pool: segments[3])
        case 6 where segments[0...2] == ["api", "v1", "pools"] && segments[4] == "backends":
            route = .backend(pool: segments[3], address: segments[5])
        default:
            return .notFound("no route \(path); see GET /api/v1/pools")
        }

        let allowed: [String]
        switch route {
        case .pools, .pool, .listeners, .cluster, .ha, .virtualServices: allowed = ["GET"]
        case .backends: allowed = ["GET", "POST"]
        case .backend: allowed = ["GET", "PATCH", "DELETE"]
        }
        let method = request.method.uppercased()
        guard allowed.contains(method) else {
            return .error(
                405, "method_not_allowed",
                "\(method) is not allowed on \(path) (allowed: \(allowed.joined(separator: ", ")))")
        }
        if let refusal = authorize(request, isWrite: method != "GET") { return refusal }

        switch (route, method) {
        case (.pools, _):
            var pools: [JSONValue] = []
            for pool in await control.pools() { pools.append(Self.poolJSON(pool)) }
            return AdminResponse(status: 200, body: .object([("pools", .array(pools))]))
        case (.listeners, _):
            let listeners = await control.listeners().map(Self.listenerJSON)
            return AdminResponse(status: 200, body: .object([("listeners", .array(listeners))]))
        case (.ha, _):
            guard let ha = await control.haStatus else { return .notFound("no ha.vrrp in the config") }
            return AdminResponse(status: 200, body: ha.json)
        case (.virtualServices, _):
            let services = await control.virtualServices().map(Self.virtualServiceJSON)
            return AdminResponse(status: 200, body: .object([("virtual_services", .array(services))]))
        case (.pool(let name), _):
            return AdminResponse(status: 200, body: Self.poolJSON(try await existingPool(name)))
        case (.cluster, _):
            guard let view = await control.cluster() else {
                return .error(404, "not_clustered", "this node is not in a cluster (no 'cluster: { store: etcd }')")
            }
            return AdminResponse(status: 200, body: Self.clusterJSON(view))
        case (.backends(let name), "GET"):
            let pool = try await existingPool(name)
            let now = Self.now()
            let backends = pool.snapshot().members.map { Self.backendJSON($0, now: now) }
            return AdminResponse(status: 200, body: .object([("backends", .array(backends))]))
        case (.backends(let name), _):
            return try await addBackend(pool: name, body: request.body)
        case (.backend(let name, let address), "GET"):
            let endpoint = try Self.endpoint(address, field: "backend address")
            return AdminResponse(status: 200, body: try await backendJSON(pool: name, endpoint: endpoint))
        case (.backend(let name, let address), "DELETE"):
            return try await removeBackend(pool: name, address: address, query: query)
        case (.backend(let name, let address), _):
            return try await patchBackend(pool: name, address: address, body: request.body)
        }
    }

    /// nil when allowed; otherwise the 401 to send.
    private func authorize(_ request: AdminRequest, isWrite: Bool) -> AdminResponse? {
        if !isWrite && readsAreOpen { return nil }
        guard let token else {
            // No token configured: only a loopback listener gets here (AdminServer refuses anything else).
            return readsAreOpen ? nil : .error(401, "unauthorized", "no token is configured for this listener")
        }
        if token.accepts(authorizationHeader: request.authorization) { return nil }
        let detail =
            request.authorization == nil
            ? "this call needs 'Authorization: Bearer <token>'" : "the bearer token is not valid"
        return .error(401, "unauthorized", detail)
    }

    // MARK: Writes

    private func addBackend(pool: String, body: [UInt8]) async throws -> AdminResponse {
        let object = try Self.bodyObject(body, allowedFields: ["address", "weight", "backup", "healthy"])
        guard let addressValue = object["address"] else {
            throw AdminRefusal.badRequest("\"address\": required (e.g. \"127.0.0.1:9001\")")
        }
        guard case .string(let address) = addressValue else {
            throw AdminRefusal.badRequest("\"address\": expected a string like \"127.0.0.1:9001\"")
        }
        let endpoint = try Self.endpoint(address, field: "\"address\"")
        let weight = try Self.integer(object["weight"], field: "weight") ?? 1
        try Self.validate(weight: weight)
        let backup = try Self.bool(object["backup"], field: "backup") ?? false
        let healthy = try Self.bool(object["healthy"], field: "healthy")
        let result = try await control.addBackend(
            pool: pool, spec: BackendSpec(endpoint: endpoint, weight: weight, backup: backup), healthy: healthy)
        var members: [(String, JSONValue)] = []
        if case .object(let backend) = try await backendJSON(pool: pool, endpoint: endpoint) { members = backend }
        return AdminResponse(status: 201, body: .object(members + Self.persistence(result.persisted)))
    }

    private func removeBackend(pool: String, address: String, query: [(String, String)]) async throws -> AdminResponse {
        let endpoint = try Self.endpoint(address, field: "backend address")
        var force = false
        var timeout = Self.defaultDrainTimeout
        for (name, value) in query {
            switch name {
            case "force":
                switch value.lowercased() {
                case "", "true", "1", "yes": force = true
                case "false", "0", "no": force = false
                default: throw AdminRefusal.badRequest("\"force\": expected true or false, got '\(value)'")
                }
            case "timeout":
                guard let duration = parseDuration(value) else {
                    throw AdminRefusal.badRequest("\"timeout\": expected a duration like 10s or 500ms, got '\(value)'")
                }
                timeout = duration
            default:
                throw AdminRefusal.badRequest("unknown query parameter '\(name)' (expected force, timeout)")
            }
        }
        let result = try await control.removeBackend(
            pool: pool, endpoint: endpoint, force: force, drainTimeout: timeout)
        return AdminResponse(
            status: 200,
            body: .object([("removed", .string(endpoint.description))] + Self.persistence(result.persisted)))
    }

    private func patchBackend(pool: String, address: String, body: [UInt8]) async throws -> AdminResponse {
        let endpoint = try Self.endpoint(address, field: "backend address")
        let object = try Self.bodyObject(body, allowedFields: ["weight", "state"])
        let weight = try Self.integer(object["weight"], field: "weight")
        var state: AdminState?
        if let value = object["state"] {
            guard case .string(let text) = value else {
                throw AdminRefusal.badRequest("\"state\": expected a string (enabled, draining or disabled)")
            }
            guard let parsed = Self.adminState(text) else {
                throw AdminRefusal.unprocessable(
                    "\"state\": '\(text)' is not one of enabled, draining, disabled (or enable, drain, disable)")
            }
            state = parsed
        }
        guard weight != nil || state != nil else {
            throw AdminRefusal.badRequest("expected \"weight\" and/or \"state\" in the body")
        }
        if let weight { try Self.validate(weight: weight) }
        var persisted = true
        if let weight {
            persisted =
                try await control.setWeight(pool: pool, endpoint: endpoint, weight: weight).persisted && persisted
        }
        if let state {
            persisted =
                try await control.setAdminState(pool: pool, endpoint: endpoint, state: state).persisted && persisted
        }
        var members: [(String, JSONValue)] = []
        if case .object(let backend) = try await backendJSON(pool: pool, endpoint: endpoint) { members = backend }
        return AdminResponse(status: 200, body: .object(members + Self.persistence(persisted)))
    }

    // MARK: Helpers

    private func existingPool(_ name: String) async throws(AdminError) -> Pool {
        guard let pool = await control.pool(named: name) else { throw .unknownPool(name) }
        return pool
    }

    private func backendJSON(pool name: String, endpoint: Endpoint) async throws(AdminError) -> JSONValue {
        let pool = try await existingPool(name)
        guard let member = pool.snapshot().member(endpoint) else { throw .unknownBackend(pool: name, endpoint) }
        return Self.backendJSON(member, now: Self.now())
    }

    static func response(for error: AdminError) -> AdminResponse {
        switch error {
        case .unknownPool: return .error(404, "unknown_pool", error.description)
        case .unknownBackend: return .error(404, "unknown_backend", error.description)
        case .duplicateBackend: return .error(409, "duplicate_backend", error.description)
        case .invalidWeight: return .error(422, "invalid_weight", error.description)
        case .persistenceFailed: return .error(500, "persistence_failed", error.description)
        case .conflict: return .error(409, "conflict", error.description)
        case .storeUnavailable: return .error(503, "store_unavailable", error.description)
        case .rejected: return .error(422, "rejected", error.description)
        }
    }

    private static func persistence(_ persisted: Bool) -> [(String, JSONValue)] {
        persisted ? [("persisted", true)] : [("persisted", false), ("note", .string(runtimeChangeNote))]
    }

    private static func adminState(_ text: String) -> AdminState? {
        switch text.lowercased() {
        case "enabled", "enable": return .enabled
        case "draining", "drain": return .draining
        case "disabled", "disable": return .disabled
        default: return nil
        }
    }

    private static func validate(weight: Int) throws {
        guard BackendSpec.weightRange.contains(weight) else {
            throw AdminRefusal.unprocessable(
                "\"weight\": \(weight) is out of range \(BackendSpec.weightRange.lowerBound)-\(BackendSpec.weightRange.upperBound)"
            )
        }
    }

    private static func endpoint(_ text: String, field: String) throws -> Endpoint {
        switch Endpoint.parse(text) {
        case .success(let endpoint): return endpoint
        case .failure(let error): throw AdminRefusal.unprocessable("\(field): \(error)")
        }
    }

    /// The body as a JSON object; names the problem when it is not one or has an unknown field.
    private static func bodyObject(_ body: [UInt8], allowedFields: [String]) throws -> JSONValue {
        guard !body.isEmpty else { throw AdminRefusal.badRequest("expected a JSON object body") }
        let value: JSONValue
        do {
            value = try JSONValue.parse(body)
        } catch {
            throw AdminRefusal.badRequest("the body is not valid JSON")
        }
        guard case .object(let members) = value else { throw AdminRefusal.badRequest("the body must be a JSON object") }
        for (key, _) in members where !allowedFields.contains(key) {
            throw AdminRefusal.badRequest(
                "unknown field \"\(key)\" (expected \(allowedFields.map { "\"\($0)\"" }.joined(separator: ", ")))")
        }
        return value
    }

    private static func integer(_ value: JSONValue?, field: String) throws -> Int? {
        switch value {
        case nil: return nil
        case .int(let number): return number
        case .double(let number) where number == number.rounded() && abs(number) < 1e15: return Int(number)
        default: throw AdminRefusal.badRequest("\"\(field)\": expected an integer")
        }
    }

    private static func bool(_ value: JSONValue?, field: String) throws -> Bool? {
        switch value {
        case nil: return nil
        case .bool(let flag): return flag
        default: throw AdminRefusal.badRequest("\"\(field)\": expected true or false")
        }
    }

    /// Same clock as the core's timestamps (`MonotonicClock` in FulcrumProxy): nanoseconds since boot.
    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    static func splitTarget(_ target: String) -> (path: String, query: [(String, String)]) {
        guard let mark = target.firstIndex(of: "?") else { return (target, []) }
        let path = String(target[..<mark])
        let query = target[target.index(after: mark)...].split(separator: "&").map { pair -> (String, String) in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(String(parts[0])) ?? String(parts[0])
            let value = parts.count > 1 ? (percentDecode(String(parts[1])) ?? String(parts[1])) : ""
            return (name, value)
        }
        return (path, query)
    }

    /// Path segments, percent-decoded; nil when the encoding is broken.
    static func segments(of path: String) -> [String]? {
        var out: [String] = []
        for segment in path.split(separator: "/") {
            guard let decoded = percentDecode(String(segment)) else { return nil }
            out.append(decoded)
        }
        return out
    }

    static func percentDecode(_ text: String) -> String? {
        guard text.contains("%") else { return text }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
