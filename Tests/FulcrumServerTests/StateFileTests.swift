import Foundation
import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumServer
import FulcrumTestSupport
import Logging
import Testing

@Suite("Run-time changes and the state file")
struct StateFileTests {
    static func config(_ yaml: String) throws -> FulcrumConfig { try ConfigLoader.load(yaml: yaml) }

    @Test("changes made through AdminControl survive a restart and a reload when state_file is set")
    func survivesRestartAndReload() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-state-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let stateFile = directory.appendingPathComponent("state.json").path
        let yaml = """
            admin: { listen: 127.0.0.1:0, state_file: \(stateFile) }
            pools:
              web: { backends: [10.0.0.1:80, 10.0.0.2:80, 10.0.0.3:80] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        try await withEventLoopGroup { group in
            let first = try await FulcrumServer.start(config: Self.config(yaml), group: group, logger: logger)
            #expect(await first.persistsChanges)
            let added = try await first.addBackend(
                pool: "web", spec: BackendSpec(endpoint: Endpoint("10.0.0.9:80")!, weight: 4), healthy: true)
            #expect(added.persisted)
            _ = try await first.removeBackend(
                pool: "web", endpoint: Endpoint("10.0.0.1:80")!, force: true, drainTimeout: .zero)
            _ = try await first.setWeight(pool: "web", endpoint: Endpoint("10.0.0.2:80")!, weight: 7)
            _ = try await first.setAdminState(pool: "web", endpoint: Endpoint("10.0.0.3:80")!, state: .draining)
            #expect(FileManager.default.fileExists(atPath: stateFile))

            func check(_ server: FulcrumServer) async throws {
                let snapshot = try #require(await server.pool(named: "web")).snapshot()
                #expect(
                    snapshot.members.map(\.endpoint.description).sorted() == [
                        "10.0.0.2:80", "10.0.0.3:80", "10.0.0.9:80",
                    ])
                #expect(snapshot.member(Endpoint("10.0.0.9:80")!)?.weight == 4)
                #expect(snapshot.member(Endpoint("10.0.0.2:80")!)?.weight == 7)
                #expect(snapshot.member(Endpoint("10.0.0.3:80")!)?.state == .draining)
            }
            // A reload of the unchanged file keeps the run-time changes.
            #expect(await first.reload(try Self.config(yaml)))
            try await check(first)
            await first.stopForTests()

            // A restart from the same file comes back with them.
            let second = try await FulcrumServer.start(config: Self.config(yaml), group: group, logger: logger)
            try await check(second)
            await second.stopForTests()
        }
    }

    @Test("an operator's enable outlives a reload of a file that says state: draining")
    func operatorStateWinsOverTheFile() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let yaml = """
            pools:
              web: { backends: [{ address: 10.0.0.1:80, state: draining }, 10.0.0.2:80] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        try await withEventLoopGroup { group in
            let server = try await FulcrumServer.start(config: Self.config(yaml), group: group, logger: logger)
            let first = Endpoint("10.0.0.1:80")!
            #expect(try #require(await server.pool(named: "web")).snapshot().member(first)?.admin == .draining)
            _ = try await server.setAdminState(pool: "web", endpoint: first, state: .enabled)
            #expect(await server.reload(try Self.config(yaml)))
            #expect(try #require(await server.pool(named: "web")).snapshot().member(first)?.admin == .enabled)
            await server.stopForTests()
        }
    }

    @Test("without state_file the API is told that changes are not kept")
    func notPersistedWithoutStateFile() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        try await withEventLoopGroup { group in
            let server = try await FulcrumServer.start(
                config: Self.config(
                    """
                    pools:
                      web: { backends: [10.0.0.1:80] }
                    listeners:
                      - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
                    """), group: group, logger: logger)
            #expect(await !server.persistsChanges)
            let result = try await server.addBackend(
                pool: "web", spec: BackendSpec(endpoint: Endpoint("10.0.0.2:80")!), healthy: true)
            #expect(!result.persisted)
            await server.stopForTests()
        }
    }
}
