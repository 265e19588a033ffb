import Dispatch
import Foundation
import NIOCore
import NIOPosix

/// Polls `condition` until it holds or `timeout` passes; returns whether it held. Tests wait with this
/// instead of sleeping a fixed time: it returns as soon as the state is reached, and is bounded.
public func eventually(
    within timeout: Duration = .seconds(5), every interval: Duration = .milliseconds(5),
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}

/// Runs `body` with a fresh event loop group that is shut down afterwards, whatever happens.
public func withEventLoopGroup<T>(
    threads: Int = 2, _ body: (MultiThreadedEventLoopGroup) async throws -> T
) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    do {
        let result = try await body(group)
        try await group.shutdownGracefully()
        return result
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

/// Runs `body` on a Dispatch thread and awaits it, so blocking work (running a child process and
/// reading its pipes) does not hold one of the few cooperative threads other tests run on.
public func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// What a finished child process printed.
public struct ProcessOutput: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Runs `executable` to completion, off the cooperative pool, and captures both pipes (read to the
/// end before waiting, so a full pipe cannot block the child).
public func runProcess(_ executable: URL, _ arguments: [String]) async throws -> ProcessOutput {
    try await offCooperativePool {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return ProcessOutput(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }
}

/// Bound for waiting until a load driver running in the background has sent some traffic. Run in parallel with
/// other suites on a busy 2-core machine, the first hundred requests took over 5 s (the default bound); how fast
/// they come is not what those tests measure, and the wait still ends as soon as the traffic is there.
public let trafficArrivalBound = Duration.seconds(30)
