import CFulcrumLinux

#if canImport(Glibc)
import Glibc
#endif

/// A system call of the packet plane failed; `operation` says which and on what.
public struct PacketIOError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), the clock the workers give the flow tables.
public enum MonotonicClock {
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
