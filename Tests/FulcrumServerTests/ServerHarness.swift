import Foundation
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumServer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

/// Demo backends plus a running FulcrumServer (in a ServiceGroup, as `fulcrum run` runs it) on loopback.
struct ServerHarness {
    let group: any EventLoopGroup
    let backends: [DemoBackend]
    let server: FulcrumServer
    let port: Int

    var pool: Pool {
        get async throws { try #require(await server.pool(named: "web")) }
    }

    /// One `GET path` on a fresh connection.
    func get(_ path: String = "/", timeout: Duration = .seconds(5)) async throws -> DemoResponse {
        try await DemoHTTPClient.request(port: port, DemoRequest(path: path), timeout: timeout, group: group)
    }

    func backend(named name: String) -> DemoBackend? { backends.first { $0.name == name } }

    /// `127.0.0.1:PORT` of each backend, in order.
    var addresses: [String] { backends.map { "127.0.0.1:\($0.port)" } }

    /// Starts `behaviors.count` backends named b0, b1, …, builds the config from their addresses,
    /// runs the server for the duration of `body`, then shuts everything down (also on failure).
    static func with(
        backends behaviors: [DemoBehavior], configPath: String? = nil,
        yaml: ([String]) -> String, _ body: (ServerHarness) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var backends: [DemoBackend] = []
        defer { group.shutdownGracefully { _ in } }
        do {
            for (index, behavior) in behaviors.enumerated() {
                backends.append(try await DemoBackend.start(name: "b\(index)", behavior: behavior, group: group))
            }
            let text = yaml(backends.map { "127.0.0.1:\($0.port)" })
            if let configPath { try text.write(toFile: configPath, atomically: true, encoding: .utf8) }
            let config = try ConfigLoader.load(yaml: text)
            var logger = Logger(label: "fulcrum.test")
            logger.logLevel = .warning
            let server = try await FulcrumServer.start(
                config: config, configPath: configPath, group: group, logger: logger)
            let port = try #require(await server.port(ofListener: "www"))
            let serviceGroup = ServiceGroup(services: [server], logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await serviceGroup.run() }
                do {
                    try await body(ServerHarness(group: group, backends: backends, server: server, port: port))
                } catch {
                    await serviceGroup.triggerGracefulShutdown()
                    throw error
                }
                await serviceGroup.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        } catch {
            for backend in backends { try? await backend.stop() }
            throw error
        }
        for backend in backends { try? await backend.stop() }
    }
}
