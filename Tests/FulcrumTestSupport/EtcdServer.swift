import Foundation
import FulcrumCluster
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd (Debian's `etcd-server`) started by a test on 127.0.0.1 with free ports and a temporary data
/// directory, stopped by PID. The suites that need it are skipped, loudly, when `etcd` is not in PATH.
public final class EtcdServer: @unchecked Sendable {
    // @unchecked: `process` is replaced only by start/stop, which the owning test calls one at a time.

    /// The `etcd` binary in PATH, if any.
    public static let executable: URL? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent("etcd")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }()

    public static var isAvailable: Bool { executable != nil }

    public let directory: URL
    public var dataDirectory: URL { directory.appendingPathComponent("data") }
    public private(set) var clientPort: Int
    public private(set) var peerPort: Int
    private var process: Process?

    public var endpoint: EtcdEndpoint { EtcdEndpoint(host: "127.0.0.1", port: clientPort) }

    private init(directory: URL, clientPort: Int, peerPort: Int) {
        self.directory = directory
        self.clientPort = clientPort
        self.peerPort = peerPort
    }

    /// Starts a fresh etcd and waits (bounded) until it answers.
    public static func start() async throws -> EtcdServer {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("fulcrum-etcd-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let server = EtcdServer(directory: directory, clientPort: try freePort(), peerPort: try freePort())
        // A port found free can be taken before etcd binds it; then etcd exits at once with "address already
        // in use". Try again on fresh ports, a bounded number of times.
        for attempt in 1...3 {
            do {
                try await server.launch()
                return server
            } catch EtcdServerError.notReady(let log) where attempt < 3 && log.contains("address already in use") {
                await server.stop()
                try? FileManager.default.removeItem(at: server.dataDirectory)
                server.clientPort = try freePort()
                server.peerPort = try freePort()
            } catch {
                await server.stopAndRemove()
                throw error
            }
        }
        await server.stopAndRemove()
        throw EtcdServerError.noPort
    }

    /// Starts etcd again on the same data directory, on `clientPort` (default: the current one).
    public func restart(clientPort: Int? = nil) async throws {
        if let clientPort { self.clientPort = clientPort }
        try await launch()
    }

    private func launch() async throws {
        guard let executable = Self.executable else { throw EtcdServerError.notInstalled }
        let process = Process()
        process.executableURL = executable
        let client = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        process.arguments = [
            "--name", "fulcrum-test", "--data-dir", dataDirectory.path,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "fulcrum-test=\(peer)", "--initial-cluster-state", "new",
            "--log-level", "warn",
        ]
        let logPath = directory.appendingPathComponent("etcd.log").path
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        let ready = await eventually(within: .seconds(15), every: .milliseconds(50)) {
            guard process.isRunning else { return true }  // exited: stop waiting, the check below reports it
            return (try? await Self.probe(port: self.clientPort)) == true
        }
        guard ready, process.isRunning else {
            await stop()
            throw EtcdServerError.notReady(
                String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: logPath))) ?? Data(), as: UTF8.self)
                    .suffix(2000).description)
        }
    }

    /// Stops etcd by its PID (SIGTERM, then SIGKILL after 5 s) and waits for it to exit, off the
    /// cooperative pool.
    public func stop() async {
        _ = try? await offCooperativePool { self.stopBlocking() }
    }

    private func stopBlocking() {
        guard let process, process.isRunning else {
            self.process = nil
            return
        }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        kill(pid, SIGCONT)  // in case a test froze it
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) etcd: its sockets stay open but nothing answers, like a
    /// network that drops packets silently.
    public func freeze(_ frozen: Bool) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, frozen ? SIGSTOP : SIGCONT)
    }

    /// Stops etcd and deletes its directory.
    public func stopAndRemove() async {
        await stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Whether etcd answers a range on `port`.
    private static func probe(port: Int) async throws -> Bool {
        try await withEventLoopGroup(threads: 1) { group in
            let client = EtcdClient(
                endpoints: [EtcdEndpoint(host: "127.0.0.1", port: port)], group: group,
                requestTimeout: .milliseconds(500), connectTimeout: .milliseconds(200))
            _ = try await client.get("/probe")
            return true
        }
    }

    /// A TCP port on 127.0.0.1 nothing listens on now (see `freeLoopbackPort`).
    public static func freePort() throws -> Int {
        guard let port = freeLoopbackPort() else { throw EtcdServerError.noPort }
        return port
    }
}

public enum EtcdServerError: Error {
    case notInstalled
    case notReady(String)
    case noPort
}

/// Runs `body` with a started etcd, stopping it and removing its directory afterwards, whatever happens.
public func withEtcd<T>(_ body: (EtcdServer) async throws -> T) async throws -> T {
    let server = try await EtcdServer.start()
    do {
        let result = try await body(server)
        await server.stopAndRemove()
        return result
    } catch {
        await server.stopAndRemove()
        throw error
    }
}
