import ArgumentParser
import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `fulcrum ctl`: a client for the admin API, for operators and scripts.
struct Ctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Operate a running balancer through its admin API (pools, scale-out/in, drain, weights).",
        discussion: """
            The admin address and token come from --admin / --token (or --token-file), or from the
            FULCRUM_ADMIN and FULCRUM_TOKEN environment variables. Tables by default, --json for scripts.
            """,
        subcommands: [
            CtlPools.self, CtlBackends.self, CtlAdd.self, CtlRemove.self, CtlDrain.self, CtlEnable.self,
            CtlDisable.self, CtlWeight.self, CtlCluster.self,
        ])
}

/// Where the admin API is and how to authenticate, shared by every `ctl` subcommand.
struct AdminOptions: ParsableArguments {
    @Option(help: "Admin API base URL (default: $FULCRUM_ADMIN or http://127.0.0.1:9900).")
    var admin: String?

    @Option(help: "Bearer token for changes (default: $FULCRUM_TOKEN).")
    var token: String?

    @Option(help: "File holding the bearer token.")
    var tokenFile: String?

    @Flag(help: "Print the API's JSON instead of a table.")
    var json = false

    var baseURL: String {
        let base = admin ?? ProcessInfo.processInfo.environment["FULCRUM_ADMIN"] ?? "http://127.0.0.1:9900"
        return base.hasSuffix("/") ? String(base.dropLast()) : base
    }

    func bearer() throws -> String? {
        if let token { return token }
        if let tokenFile {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                throw ValidationError("cannot read token file \(tokenFile)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return ProcessInfo.processInfo.environment["FULCRUM_TOKEN"]
    }

    /// Sends one request; prints the error and exits 1 on any failure. Returns the response body.
    @discardableResult
    func call(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> Data {
        guard let url = URL(string: baseURL + path) else { throw ValidationError("bad admin URL \(baseURL + path)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 120
        if let token = try bearer() { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            printError("cannot reach the admin API at \(baseURL): \(error.localizedDescription)")
            throw ExitCode.failure
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            let problem = try? JSONDecoder().decode(APIProblem.self, from: data)
            let detail = problem?.detail.map { ": \($0)" } ?? ""
            printError("error: \(problem?.error ?? "HTTP \(status)")\(detail) (HTTP \(status))")
            throw ExitCode.failure
        }
        if json { print(String(decoding: data, as: UTF8.self)) }
        return data
    }

    /// Decodes an API answer (snake_case keys).
    func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(type, from: data)
        } catch {
            printError("unexpected answer from the admin API: \(error)")
            throw ExitCode.failure
        }
    }
}

/// Percent-encodes an address for a URL path segment (`[::1]:80` has brackets and colons).
func pathSegment(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: ".-_~"))) ?? text
}

/// Prints rows as aligned columns under a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    for row in [header] + rows {
        print(
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces))
    }
}

/// The admin API's JSON, as `ctl` reads it.
struct APIProblem: Decodable {
    var error: String
    var detail: String?
}

struct APIPools: Decodable { var pools: [APIPool] }

struct APIPool: Decodable {
    var name: String
    var algorithm: String
    var backends: [APIBackend]
}

struct APIBackend: Decodable {
    struct Check: Decodable {
        var success: Bool
        var detail: String
    }
    var address: String
    var state: String
    var weight: Int
    var effectiveWeight: Double?
    var backup: Bool?
    var activeConnections: Int?
    var requests: Int?
    var errors: Int?
    var latencyP50Ms: Double?
    var latencyP99Ms: Double?
    var lastCheck: Check?
}

struct APINote: Decodable { var note: String? }

func text(_ value: Int?) -> String { value.map(String.init) ?? "-" }
func text(_ value: Double?) -> String { value.map { String(format: $0 == $0.rounded() ? "%.0f" : "%.2f", $0) } ?? "-" }

func printBackends(_ backends: [APIBackend]) {
    printTable(
        [
            "ADDRESS", "STATE", "WEIGHT", "EFFECTIVE", "BACKUP", "ACTIVE", "REQUESTS", "ERRORS", "P50 MS", "P99 MS",
            "LAST CHECK",
        ],
        backends.map { backend in
            [
                backend.address, backend.state, String(backend.weight), text(backend.effectiveWeight),
                backend.backup == true ? "yes" : "no", text(backend.activeConnections), text(backend.requests),
                text(backend.errors), text(backend.latencyP50Ms), text(backend.latencyP99Ms),
                backend.lastCheck.map { "\($0.success ? "ok" : "fail"): \($0.detail)" } ?? "-",
            ]
        })
}

func printNote(_ data: Data) {
    if let note = (try? JSONDecoder().decode(APINote.self, from: data))?.note { printError("note: \(note)") }
}

struct CtlPools: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pools", abstract: "List pools.")
    @OptionGroup var options: AdminOptions

    func run() async throws {
        let data = try await options.call("GET", "/api/v1/pools")
        guard !options.json else { return }
        let pools = try options.decode(APIPools.self, from: data).pools
        printTable(
            ["POOL", "ALGORITHM", "BACKENDS", "UP"],
            pools.map { pool in
                [
                    pool.name, pool.algorithm, String(pool.backends.count),
                    String(pool.backends.filter { $0.state == "up" }.count),
                ]
            })
    }
}

struct CtlBackends: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backends", abstract: "List a pool's backends.")
    @OptionGroup var options: AdminOptions
    @Argument(help: "Pool name.") var pool: String

    func run() async throws {
        let data = try await options.call("GET", "/api/v1/pools/\(pathSegment(pool))")
        guard !options.json else { return }
        printBackends(try options.decode(APIPool.self, from: data).backends)
    }
}

struct CtlAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Scale out: add a backend (it gets traffic once its health checks pass).")
    @OptionGroup var options: AdminOptions
    @Argument(help: "Pool name.") var pool: String
    @Argument(help: "Backend address, ip:port or [ipv6]:port.") var address: String
    @Option(help: "Weight, 1-256.") var weight: Int = 1
    @Flag(help: "Only used when no primary backend is up.") var backup = false
    @Flag(help: "Take traffic at once, without waiting for health checks.") var healthy = false

    func run() async throws {
        var body: [String: Any] = ["address": address, "weight": weight, "backup": backup]
        if healthy { body["healthy"] = true }
        let result = try await options.call("POST", "/api/v1/pools/\(pathSegment(pool))/backends", body: body)
        if !options.json { print("added \(address) to \(pool)") }
        printNote(result)
    }
}

struct CtlRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Scale in: drain a backend, then remove it (--force: at once).")
    @OptionGroup var options: AdminOptions
    @Argument(help: "Pool name.") var pool: String
    @Argument(help: "Backend address.") var address: String
    @Flag(help: "Remove at once instead of draining first.") var force = false
    @Option(help: "Longest drain, e.g. 30s.") var timeout: String = "30s"

    func run() async throws {
        let path =
            "/api/v1/pools/\(pathSegment(pool))/backends/\(pathSegment(address))?force=\(force)&timeout=\(timeout)"
        let result = try await options.call("DELETE", path)
        if !options.json { print("removed \(address) from \(pool)") }
        printNote(result)
    }
}

/// The backend a PATCH command changes: shared by drain, enable, disable and weight.
struct BackendTarget: ParsableArguments {
    @OptionGroup var options: AdminOptions
    @Argument(help: "Pool name.") var pool: String
    @Argument(help: "Backend address.") var address: String

    /// Sets fields of the backend and says what was done.
    func patch(_ body: [String: Any], done: String) async throws {
        let result = try await options.call(
            "PATCH", "/api/v1/pools/\(pathSegment(pool))/backends/\(pathSegment(address))", body: body)
        if !options.json { print("\(address) \(done)") }
        printNote(result)
    }
}

struct CtlDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "No new connections to a backend; established ones finish.")
    @OptionGroup var target: BackendTarget
    func run() async throws { try await target.patch(["state": "draining"], done: "draining") }
}

struct CtlEnable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Put a backend back in rotation.")
    @OptionGroup var target: BackendTarget
    func run() async throws { try await target.patch(["state": "enabled"], done: "enabled") }
}

struct CtlDisable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Take a backend out of rotation.")
    @OptionGroup var target: BackendTarget
    func run() async throws { try await target.patch(["state": "disabled"], done: "disabled") }
}

struct CtlWeight: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "weight", abstract: "Set a backend's weight (1-256).")
    @OptionGroup var target: BackendTarget
    @Argument(help: "Weight, 1-256.") var weight: Int
    func run() async throws { try await target.patch(["weight": weight], done: "weight \(weight)") }
}

/// `GET /api/v1/cluster` as `ctl` reads it.
struct APICluster: Decodable {
    struct Store: Decodable {
        struct Rejection: Decodable {
            var key: String
            var modRevision: Int
            var problems: [String]
        }
        var type: String
        var prefix: String
        var connected: Bool
        var revision: Int
        var appliedRevision: Int
        var lastError: String?
        var rejections: [Rejection]
        var writeConflicts: Int?
    }
    struct Node: Decodable {
        var id: String
        var adminAddress: String?
        var configRevision: Int
        var health: String
        var storeConnected: Bool
    }
    var node: String
    var store: Store
    var nodes: [Node]
    var nodesError: String?
}

struct CtlCluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "List the cluster's live nodes and this node's etcd store status.")
    @OptionGroup var options: AdminOptions

    func run() async throws {
        let data = try await options.call("GET", "/api/v1/cluster")
        guard !options.json else { return }
        let cluster = try options.decode(APICluster.self, from: data)
        printTable(
            ["NODE", "ADMIN", "REVISION", "ETCD", "HEALTH"],
            cluster.nodes.map { node in
                [
                    node.id + (node.id == cluster.node ? " *" : ""), node.adminAddress ?? "-",
                    String(node.configRevision), node.storeConnected ? "connected" : "lost", node.health,
                ]
            })
        if let error = cluster.nodesError { print("nodes: cannot list (\(error))") }
        let store = cluster.store
        print(
            "this node (\(cluster.node)): \(store.type) \(store.prefix), "
                + "\(store.connected ? "connected" : "NOT connected"), revision \(store.revision), "
                + "applied \(store.appliedRevision)")
        if let error = store.lastError { print("last error: \(error)") }
        for rejection in store.rejections {
            print("rejected \(rejection.key) (mod_revision \(rejection.modRevision)):")
            for problem in rejection.problems { print("  \(problem)") }
        }
    }
}
