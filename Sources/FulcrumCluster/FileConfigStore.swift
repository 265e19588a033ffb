import Foundation
import FulcrumConfig
import Logging
import ServiceLifecycle
import Synchronization

/// Today's behaviour behind the ``ConfigStore`` interface: the configuration is one YAML file, read at
/// start and again on ``reload()`` (SIGHUP). An invalid file is rejected and the last good one stays.
public final class FileConfigStore: ConfigStore {
    public let path: String
    private let read: @Sendable (String) throws -> String
    private let logger: Logger
    private let state: Mutex<State>
    private let broadcaster = SnapshotBroadcaster()

    private struct State {
        var current: ConfigSnapshot?
        var status = ConfigStoreStatus(store: .file, connected: true)
    }

    /// `read` returns the file's text (injected by tests; default: the file system).
    public init(
        path: String, logger: Logger = Logger(label: "fulcrum.cluster"),
        read: @escaping @Sendable (String) throws -> String = { try String(contentsOfFile: $0, encoding: .utf8) }
    ) {
        self.path = path
        self.read = read
        self.logger = logger
        self.state = Mutex(State())
    }

    public var current: ConfigSnapshot? { state.withLock { $0.current } }
    public var status: ConfigStoreStatus { state.withLock { $0.status } }

    public func snapshots() -> AsyncStream<ConfigSnapshot> {
        // Under the lock, so a reload cannot publish between reading `current` and subscribing.
        state.withLock { broadcaster.subscribe(current: $0.current) }
    }

    @discardableResult
    public func reload() async throws -> ConfigSnapshot {
        let text: String
        do {
            text = try read(path)
        } catch {
            let reason = "cannot read \(path): \(error.localizedDescription)"
            state.withLock { $0.status.lastError = reason }
            logger.error(
                "config file unreadable; keeping the last good configuration", metadata: ["error": "\(reason)"])
            throw error
        }
        do {
            let config = try ConfigLoader.load(yaml: text)
            return state.withLock { state in
                let snapshot = ConfigSnapshot(config: config, revision: state.status.revision + 1)
                state.status.revision = snapshot.revision
                state.status.appliedRevision = snapshot.revision
                state.status.rejections = []
                state.status.lastError = nil
                state.current = snapshot
                broadcaster.publish(snapshot)
                return snapshot
            }
        } catch {
            let problems = error.diagnostics.map {
                DocumentProblem(key: path, path: $0.path, line: $0.line, column: $0.column, message: $0.message)
            }
            state.withLock { state in
                state.status.revision += 1
                state.status.rejections = [DocumentRejection(key: path, modRevision: 0, problems: problems)]
                state.status.rejectedTotal += 1
                state.status.lastError = nil
            }
            logger.error(
                "config file rejected; keeping the last good configuration",
                metadata: ["file": "\(path)", "problems": "\(error.description)"])
            throw error
        }
    }

    /// Nothing to watch: waits for shutdown, then ends the snapshot sequences.
    public func run() async throws {
        defer { broadcaster.finish() }
        try? await gracefulShutdown()
    }
}
