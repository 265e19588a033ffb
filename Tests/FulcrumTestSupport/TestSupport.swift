import Dispatch
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
