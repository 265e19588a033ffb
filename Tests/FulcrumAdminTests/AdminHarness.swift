import Foundation
import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumServer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

/// Demo backends, a running FulcrumServer (in a ServiceGroup, so health checks and ticks run) and an
/// AdminServer on 127.0.0.1 talking to it, with a token file in a temporary directory.
struct AdminHarness {
    static let token = "s3cret-token"

    let group: any EventLoopGroup
    let backends: [DemoBackend]
    let server: FulcrumServer
    let admin: AdminServer
    /// Port of the proxy listener `www`.
    let port: Int

    var addresses: [String] { backends.map { "127.0.0.1:\($0.port)" } }

    /// One call to the admin API on a fresh connection; the body parsed as JSON.
    func call(
        _ method: String, _ path: String, body: String? = nil, token: String? = AdminHarness.token
    ) async throws -> (status: Int, json: JSONValue) {
        var headers: [(name: String, value: String)] = []
        if let token { headers.append((name: "Authorization", value: "Bearer \(token)")) }
        if body != nil { headers.append((name: "Content-Type", value: "application/json")) }
        let response = try await DemoHTTPClient.request(
            port: admin.port,
            DemoRequest(method: method, path: path, headers: headers, body: body.map { ByteBuffer(string: $0) }),
            timeout: .seconds(10), group: group)
        #expect(response.header("content-type") == "application/json")
        return (response.status, try JSONValue.parse(Array(response.body.readableBytesView)))
    }

    /// The backend objects of pool `web`, by address.
    func backendsJSON() async throws -> [String: JSONValue] {
        let (status, json) = try await call("GET", "/api/v1/pools/web", token: nil)
        #expect(status == 200)
        guard case .array(let backends)? = json["backends"] else { return [:] }
        var out: [String: JSONValue] = [:]
        for backend in backends {
            if case .string(let address)? = backend["address"] { out[address] = backend }
        }
        return out
    }

    static func with(
        backends behaviors: [DemoBehavior], tokenFile useToken: Bool = true, yaml: ([String]) -> String,
        _ body: (AdminHarness) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { group.shutdownGracefully { _ in } }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-admin-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenPath = directory.appendingPathComponent("token").path
        try "\(token)\n".write(toFile: tokenPath, atomically: true, encoding: .utf8)

        var backends: [DemoBackend] = []
        do {
            for (index, behavior) in behaviors.enumerated() {
                backends.append(try await DemoBackend.start(name: "b\(index)", behavior: behavior, group: group))
            }
            let config = try ConfigLoader.load(yaml: yaml(backends.map { "127.0.0.1:\($0.port)" }))
            var logger = Logger(label: "fulcrum.test")
            logger.logLevel = .warning
            let server = try await FulcrumServer.start(config: config, group: group, logger: logger)
            let port = try #require(await server.port(ofListener: "www"))
            let admin = try await AdminServer.start(
                config: AdminConfig(
                    listen: Endpoint(address: .v4(0x7F00_0001), port: 0), tokenFile: useToken ? tokenPath : nil),
                control: server, group: group, logger: logger)
            let serviceGroup = ServiceGroup(services: [server], logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await serviceGroup.run() }
                tasks.addTask { await admin.run() }
                let harness = AdminHarness(group: group, backends: backends, server: server, admin: admin, port: port)
                do {
                    try await body(harness)
                } catch {
                    await admin.shutdown()
                    await serviceGroup.triggerGracefulShutdown()
                    throw error
                }
                await admin.shutdown()
                await serviceGroup.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        } catch {
            for backend in backends { try? await backend.stop() }
            throw error
        }
        for backend in backends { try? await backend.stop() }
    }

    /// A pool `web` behind an http listener `www`; with health checks when `health` is true. Probes every
    /// 250 ms with a 250 ms timeout (the timeout may not exceed the interval): state changes still show within
    /// a second, and a healthy in-process backend on a starved 2-core machine is not marked down because two
    /// answers in a row took over 100 ms (the earlier setting, which flaked under load).
    static func yaml(_ addresses: [String], algorithm: String = "round-robin", health: Bool = true) -> String {
        let check =
            health
            ? "    health_check: { type: http, path: /healthz, interval: 250ms, timeout: 250ms, rise: 1, fall: 2, jitter: 0 }\n"
            : ""
        return """
            pools:
              web:
                algorithm: \(algorithm)
            \(check)    backends: [\(addresses.joined(separator: ", "))]
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web, retries: 2 }
            """
    }
}

extension JSONValue {
    var intValue: Int? {
        if case .int(let value) = self { return value }
        return nil
    }

    /// JSON does not tell 1 from 1.0, so a whole double reads back as an int.
    var doubleValue: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}
