import FulcrumDemo
import FulcrumTestSupport
import NIOCore
import NIOPosix

/// Runs `body` with one backend named `name`, stopped afterwards, on a fresh group.
func withBackend<T>(
    name: String = "alpha",
    behavior: DemoBehavior = .default,
    threads: Int = 2,
    _ body: (DemoBackend, MultiThreadedEventLoopGroup) async throws -> T
) async throws -> T {
    try await withEventLoopGroup(threads: threads) { group in
        let backend = try await DemoBackend.start(name: name, behavior: behavior, group: group)
        do {
            let result = try await body(backend, group)
            try await backend.stop()
            return result
        } catch {
            try? await backend.stop()
            throw error
        }
    }
}

struct TestTimedOut: Error {}

/// Runs `body`, failing with `TestTimedOut` if it takes longer than `limit`.
func withTimeout<T: Sendable>(
    _ limit: Duration,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { tasks in
        tasks.addTask { try await body() }
        tasks.addTask {
            try await Task.sleep(for: limit)
            throw TestTimedOut()
        }
        defer { tasks.cancelAll() }
        return try await tasks.next()!
    }
}

/// The `/bytes/N` pattern, for comparisons.
func pattern(count: Int) -> [UInt8] {
    (0..<count).map { DemoBackend.patternByte(at: $0) }
}
