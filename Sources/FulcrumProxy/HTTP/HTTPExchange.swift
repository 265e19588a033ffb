import FulcrumCore
import NIOCore
import NIOHTTP1

/// One request's trip through the proxy: from its head to the end of its response, across retries.
/// Owned by its client connection's `HTTPProxyHandler`; confined to that connection's event loop.
final class HTTPExchange {
    enum Phase {
        /// Head received; dispatched when the read that carried it is complete, so that a malformed
        /// body in the same packet is refused before any backend is contacted.
        case received
        /// Waiting for a new upstream connection.
        case connecting
        /// The request is being (or was) sent to `upstream`.
        case attached
        /// The response is complete, or the proxy answered itself.
        case finished
    }

    let method: HTTPMethod
    /// The client's HTTP version (the response goes back in it).
    let version: HTTPVersion
    /// The head sent to the backend, ready to write (again, on a retry).
    let upstreamHead: ByteBuffer
    let isIdempotent: Bool
    let expectsContinue: Bool
    let snapshot: PoolSnapshot
    let key: PickKey
    /// The backend the sticky cookie named, if it is still a candidate.
    let stickyBackend: Backend?
    var phase = Phase.received
    /// Whether the client connection stays open after this response.
    var clientKeepAlive: Bool

    // Attempts
    var tried: [Backend] = []
    var retriesLeft: Int
    /// The backend of the next attempt (sticky choice, or the same backend after a stale keep-alive).
    var preferred: Backend?
    /// Skip the idle pool on the next attempt (after a reused connection turned out stale).
    var forceFreshConnection = false
    var staleRetryUsed = false
    /// Bumped per connect, so a late connect result of an abandoned attempt is recognised.
    var attempt = 0
    /// What the client gets when no further backend is left to try.
    var lastFailure: HTTPRejection?

    // Request side
    /// Body bytes received before an upstream connection was ready, as they go to the backend.
    var pendingBody: [ByteBuffer] = []
    var requestEnded = false
    /// Some request body reached a backend: the request can no longer be replayed.
    var bodyForwarded = false
    var upstreamNeedsFlush = false
    var continueSent = false
    var lastProgress = NIODeadline.now()

    // Upstream side
    var upstream: HTTPUpstreamHandler?
    var backend: Backend?
    /// `requestStarted()` was called and `requestFinished` not yet.
    var inFlight = false
    var sentAt: UInt64 = 0
    var latencyNanos: UInt64 = 0

    // Response side
    var responseStatus: HTTPResponseStatus?
    var responseStarted = false
    var responseEnded = false
    var upstreamKeepAlive = false
    /// The client gets this response in chunks (`HTTPWire`); `chunkOpen`: a chunk's data awaits its CRLF.
    var responseChunked = false
    var chunkOpen = false
    var clientNeedsFlush = false
    /// The response head, written with the first body bytes (see `HTTPProxyHandler.writeHeldHead`).
    var heldResponseHead: ByteBuffer?

    // Byte counts and access log (`HTTPExchange+AccessLog.swift`)
    var requestBytes = 0
    var responseBytes = 0
    var accountedRequestBytes = 0
    var accountedResponseBytes = 0
    /// The status Fulcrum answered with itself, if it did.
    var localStatus: HTTPResponseStatus?
    /// The request target, kept only when an access log is on (a String per request otherwise unneeded).
    var uri: String?
    var accessLogged = false

    init(
        method: HTTPMethod, version: HTTPVersion, keepAlive: Bool, expectsContinue: Bool, upstreamHead: ByteBuffer,
        snapshot: PoolSnapshot, key: PickKey, stickyBackend: Backend?, retries: Int
    ) {
        self.method = method
        self.version = version
        self.upstreamHead = upstreamHead
        self.snapshot = snapshot
        self.key = key
        self.stickyBackend = stickyBackend
        self.preferred = stickyBackend
        self.retriesLeft = retries
        self.clientKeepAlive = keepAlive
        self.expectsContinue = expectsContinue
        switch method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: isIdempotent = true
        default: isIdempotent = false
        }
    }
}

@available(*, unavailable)
extension HTTPExchange: Sendable {}
