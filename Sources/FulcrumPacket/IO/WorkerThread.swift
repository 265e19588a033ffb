import CFulcrumLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A plain OS thread for a packet worker: the packet plane does not run on NIO or the cooperative pool
/// (its loop blocks in poll).
final class WorkerThread: Sendable {
    private final class Box: @unchecked Sendable {
        // Written before the thread starts, read only by it: no concurrent access.
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    private let thread: pthread_t

    /// Starts `body` on a new thread.
    init(_ body: @escaping @Sendable () -> Void) throws(PacketIOError) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(
            &tid, nil,
            { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw PacketIOError("pthread_create", errno: rc)
        }
        thread = tid
    }

    /// Waits for the thread to end.
    func join() {
        pthread_join(thread, nil)
    }

    /// Runs `body` on a new thread and returns its result (for work that must not change the caller's thread,
    /// like joining a network namespace).
    static func runToCompletion<T: Sendable>(_ body: @escaping @Sendable () -> T) throws(PacketIOError) -> T {
        let result = Mutex<T?>(nil)
        let thread = try WorkerThread { result.withLock { $0 = body() } }
        thread.join()
        return result.withLock { $0! }
    }
}

/// The start/stop part every packet worker shares (NAT, DSR, tunnel, IPIP decapsulator): one thread running
/// the worker's loop, and the flag that loop checks once per poll (at most 100 ms) to end.
final class PacketWorkerLoop: Sendable {
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<WorkerThread?>(nil)

    /// Whether `stop()` was called: the loop ends its current batch and returns.
    var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// Runs `body` (the worker's loop) on its own thread.
    func start(_ body: @escaping @Sendable () -> Void) throws(PacketIOError) {
        let started = try WorkerThread(body)
        thread.withLock { $0 = started }
    }

    /// Asks the loop to end and waits for its thread.
    func stop() {
        stopping.store(true, ordering: .releasing)
        let running = thread.withLock { current -> WorkerThread? in
            defer { current = nil }
            return current
        }
        running?.join()
    }
}
