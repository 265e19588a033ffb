import Foundation
import FulcrumDemo
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Testing

/// `fulcrum run` as a real process: signals, reload, drain.
@Suite("fulcrum run (process)")
struct RunProcessTests {
    static var binary: URL { Bundle.main.bundleURL.appendingPathComponent("fulcrum") }

    /// A loopback port nobody listens on right now (bound then released).
    static func freePort(group: any EventLoopGroup) async throws -> Int {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }

    static func config(port: Int, backend: String) -> String {
        """
        pools:
          web: { backends: [\(backend)] }
        listeners:
          - { name: www, bind: 127.0.0.1:\(port), mode: http, pool: web, timeouts: { drain: 5s } }
        """
    }

    @Test("SIGHUP reloads the file (a broken one is refused); SIGTERM lets in-flight requests finish, exit 0")
    func signals() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { group.shutdownGracefully { _ in } }
        let first = try await DemoBackend.start(name: "first", group: group)
        let second = try await DemoBackend.start(name: "second", group: group)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-run-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configFile = directory.appendingPathComponent("fulcrum.yaml").path
        let logFile = directory.appendingPathComponent("stderr.log")
        let port = try await Self.freePort(group: group)
        try Self.config(port: port, backend: "127.0.0.1:\(first.port)").write(
            toFile: configFile, atomically: true, encoding: .utf8)

        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = ["run", "--config", configFile]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: logFile)
        try process.run()
        func cleanUp() async {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            try? await first.stop()
            try? await second.stop()
            try? FileManager.default.removeItem(at: directory)
        }
        do {
            try await exercise(
                process: process, port: port, configFile: configFile, logFile: logFile, second: second, group: group)
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }

    private func exercise(
        process: Process, port: Int, configFile: String, logFile: URL, second: DemoBackend, group: any EventLoopGroup
    ) async throws {
        func get(_ path: String = "/") async throws -> DemoResponse {
            try await DemoHTTPClient.request(port: port, DemoRequest(path: path), timeout: .seconds(5), group: group)
        }
        func log() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

        #expect(await eventually(within: .seconds(20)) { (try? await get())?.status == 200 }, "\(log())")
        #expect(try await get().header("X-Backend") == "first")

        try Self.config(port: port, backend: "127.0.0.1:\(second.port)").write(
            toFile: configFile, atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        #expect(await eventually { (try? await get())?.header("X-Backend") == "second" }, "\(log())")

        try "pools: [broken".write(toFile: configFile, atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        #expect(await eventually { log().contains("reload rejected") }, "\(log())")
        #expect(try await get().header("X-Backend") == "second")
        #expect(process.isRunning)

        // A slow request in flight when SIGTERM arrives still completes.
        try await withThrowingTaskGroup(of: DemoResponse.self) { tasks in
            tasks.addTask { try await get("/slow/700") }
            #expect(await eventually { second.requestsByPath()["/slow/700", default: 0] == 1 })
            kill(process.processIdentifier, SIGTERM)
            let slow = try #require(try await tasks.next())
            #expect(slow.status == 200)
        }
        #expect(await eventually(within: .seconds(10)) { !process.isRunning }, "\(log())")
        #expect(process.terminationStatus == 0, "\(log())")
    }
}
