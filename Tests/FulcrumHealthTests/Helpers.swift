import FulcrumCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Runs `body` with a one-thread event loop group that is shut down afterwards, whatever happens.
func withEventLoopGroup<T>(_ body: (MultiThreadedEventLoopGroup) async throws -> T) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    do {
        let result = try await body(group)
        try await group.shutdownGracefully()
        return result
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

/// The project's notion of "now": monotonic nanoseconds.
func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
