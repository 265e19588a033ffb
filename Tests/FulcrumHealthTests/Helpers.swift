import FulcrumCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The project's notion of "now": monotonic nanoseconds.
func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
