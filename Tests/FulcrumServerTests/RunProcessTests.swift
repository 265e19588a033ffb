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

    /// A loopback port nobody listens on right now, for the child process to bind (`freeLoopbackPort`).
    static func freePort(group: any EventLoopGroup) async throws -> Int {
        try #require(freeLoopbackPort())
    }

    /// Starts `fulcrum run --config FILE` with stderr to `stderr` (or discarded).
    static func startRun(configFile: String, stderr: URL? = nil, extra: [String] = []) throws -> Process {
        let process = Process()
        process.executableURL = binary
        process.arguments = ["run", "--config", configFile] + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try stderr.map { try FileHandle(forWritingTo: $0) } ?? FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Stops a child started by `startRun` (if still running) and waits for it, off the cooperative pool.
    static func stop(_ process: Process) async {
        if process.isRunning { process.terminate() }
        _ = try? await offCooperativePool { process.waitUntilExit() }
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
        let process = try Self.startRun(configFile: configFile, stderr: logFile)
        func cleanUp() async {
            await Self.stop(process)
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

/// `fulcrum ctl` against a running `fulcrum run`: scale-out, weight, drain, scale-in, errors.
@Suite("fulcrum ctl (process)")
struct CtlProcessTests {
    static func fulcrum(_ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(RunProcessTests.binary, arguments)
    }

    @Test("ctl lists pools and backends, adds, weighs, drains and removes a backend")
    func scaleOutAndIn() async throws {
        try await withEventLoopGroup(threads: 1) { group in
            let first = try await DemoBackend.start(name: "first", group: group)
            let second = try await DemoBackend.start(name: "second", group: group)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-ctl-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let configFile = directory.appendingPathComponent("fulcrum.yaml").path
            let port = try await RunProcessTests.freePort(group: group)
            let adminPort = try await RunProcessTests.freePort(group: group)
            try """
            admin: { listen: 127.0.0.1:\(adminPort) }
            pools:
              web: { algorithm: round-robin, backends: [127.0.0.1:\(first.port)] }
            listeners:
              - { name: www, bind: 127.0.0.1:\(port), mode: http, pool: web }
            """.write(toFile: configFile, atomically: true, encoding: .utf8)
            let process = try RunProcessTests.startRun(configFile: configFile, extra: ["--log-level", "warning"])
            func cleanUp() async {
                await RunProcessTests.stop(process)
                try? await first.stop()
                try? await second.stop()
                try? FileManager.default.removeItem(at: directory)
            }
            do {
                let admin = ["--admin", "http://127.0.0.1:\(adminPort)"]
                let added = "127.0.0.1:\(second.port)"
                #expect(
                    await eventually(within: .seconds(20)) {
                        (try? await Self.fulcrum(["ctl", "pools"] + admin))?.status == 0
                    })
                let pools = try await Self.fulcrum(["ctl", "pools"] + admin)
                #expect(pools.stdout.contains("web") && pools.stdout.contains("round-robin"), "\(pools)")

                let add = try await Self.fulcrum(["ctl", "add", "web", added, "--weight", "2", "--healthy"] + admin)
                #expect(add.status == 0, "\(add)")
                #expect(add.stderr.contains("lost on restart"), "\(add)")
                let listed = try await Self.fulcrum(["ctl", "backends", "web"] + admin)
                #expect(listed.stdout.contains(added) && listed.stdout.contains("up"), "\(listed)")

                #expect(try await Self.fulcrum(["ctl", "weight", "web", added, "3"] + admin).status == 0)
                #expect(try await Self.fulcrum(["ctl", "drain", "web", added] + admin).status == 0)
                let drained = try await Self.fulcrum(["ctl", "backends", "web", "--json"] + admin)
                #expect(drained.stdout.contains("\"draining\""), "\(drained)")

                #expect(try await Self.fulcrum(["ctl", "remove", "web", added, "--timeout", "5s"] + admin).status == 0)
                #expect(try await !Self.fulcrum(["ctl", "backends", "web"] + admin).stdout.contains(added))

                let missing = try await Self.fulcrum(["ctl", "backends", "nope"] + admin)
                #expect(missing.status == 1)
                #expect(missing.stderr.contains("error:") && missing.stderr.contains("404"), "\(missing)")
            } catch {
                await cleanUp()
                throw error
            }
            await cleanUp()
        }
    }
}
