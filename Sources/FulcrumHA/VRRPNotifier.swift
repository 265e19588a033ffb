import Dispatch
import Foundation
import Logging
import Synchronization

/// Runs the operator's notify command on each state change (`/bin/sh -c "<command> <state>"`), one at a time
/// and in order, off the router's thread so a slow script never delays an advert. A run that outlasts the
/// timeout is killed (SIGKILL to the process group of the shell we started, so its children too) and
/// counted.
final class VRRPNotifier: Sendable {
    struct Counts: Sendable, Equatable {
        var started = 0
        var failed = 0
        var timedOut = 0
    }

    let command: String
    let timeout: Duration
    private let queue = DispatchQueue(label: "fulcrum.ha.notify")
    private let counts = Mutex(Counts())
    private let logger: Logger

    /// How long to wait, after the kill, for the end of a command that outlived its timeout.
    static let reapGrace = 5

    init(command: String, timeout: Duration, logger: Logger) {
        self.command = command
        self.timeout = timeout
        self.logger = logger
    }

    var snapshot: Counts { counts.withLock { $0 } }

    func notify(_ state: VRRPStateMachine.State) {
        queue.async { self.runOnce(state) }
    }

    private func runOnce(_ state: VRRPStateMachine.State) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\(command) \(state.rawValue)"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        do {
            try process.run()
        } catch {
            counts.withLock { $0.failed += 1 }
            logger.error("VRRP notify command did not start", metadata: ["error": "\(error)"])
            return
        }
        counts.withLock { $0.started += 1 }
        let (seconds, attoseconds) = timeout.components
        let nanos = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        if done.wait(timeout: .now() + .nanoseconds(nanos)) == .timedOut {
            // The whole process group, not just the shell: Foundation sees the end of a child through a socket
            // that every descendant inherits, so a command's own children (a script running `sleep`) kept
            // this queue blocked until they exited, long after the timeout. Foundation starts the shell as
            // the leader of a new group; the check keeps us from ever signalling a group that is not its own.
            let pid = process.processIdentifier
            kill(getpgid(pid) == pid ? -pid : pid, SIGKILL)
            // Bounded: a descendant that left the group (setsid) would otherwise hold the queue.
            if done.wait(timeout: .now() + .seconds(Self.reapGrace)) == .timedOut {
                logger.warning(
                    "VRRP notify command's children outlived it; not waiting for them", metadata: ["state": "\(state)"])
            }
            counts.withLock { $0.timedOut += 1 }
            logger.warning("VRRP notify command killed after its timeout", metadata: ["state": "\(state)"])
        } else if process.terminationStatus != 0 {
            counts.withLock { $0.failed += 1 }
            logger.warning(
                "VRRP notify command failed", metadata: ["state": "\(state)", "status": "\(process.terminationStatus)"])
        }
    }
}
