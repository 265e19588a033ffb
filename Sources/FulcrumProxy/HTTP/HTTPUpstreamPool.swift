import FulcrumCore
import NIOCore
import NIOPosix

/// Idle keep-alive connections to backends, one pool per event loop: a request only ever takes a
/// connection of its own loop, so the pool needs no lock. Connections are kept per `Backend` object
/// (a removed and re-added backend starts afresh), most recently used first, at most
/// `HTTPLimits.maxIdleConnectionsPerBackend` each, and closed after `HTTPLimits.upstreamIdleTimeout`.
final class HTTPUpstreamPool {
    let eventLoop: any EventLoop
    private var idle: [ObjectIdentifier: [HTTPUpstreamHandler]] = [:]

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Thread-local because an event loop is a thread; the box checks that it is only used on its loop.
    private static let perThread = ThreadSpecificVariable<NIOLoopBoundBox<HTTPUpstreamPool>>()

    /// The pool of the current event loop (created on first use).
    static func current(on eventLoop: any EventLoop) -> HTTPUpstreamPool {
        eventLoop.preconditionInEventLoop()
        if let box = perThread.currentValue, box.value.eventLoop === eventLoop {
            return box.value
        }
        let pool = HTTPUpstreamPool(eventLoop: eventLoop)
        perThread.currentValue = NIOLoopBoundBox(pool, eventLoop: eventLoop)
        return pool
    }

    /// Idle connections held for `backend` right now (tests, metrics).
    func idleCount(for backend: Backend) -> Int {
        idle[ObjectIdentifier(backend)]?.count ?? 0
    }

    /// An idle connection to `backend` that still looks alive, or nil.
    func take(_ backend: Backend) -> HTTPUpstreamHandler? {
        let key = ObjectIdentifier(backend)
        // Mutate the list in place (`idle[key]?.popLast()`): copying it out would copy, and retain,
        // every idle connection of the backend on every request.
        while let connection = idle[key]?.popLast() {
            connection.leavePool()
            if connection.isUsable { return connection }
            connection.close()
        }
        return nil
    }

    /// Keeps a connection that finished a response with keep-alive; closes it when the pool is full.
    func release(_ connection: HTTPUpstreamHandler) {
        guard connection.isUsable else {
            connection.close()
            return
        }
        let key = ObjectIdentifier(connection.backend)
        guard idle[key, default: []].count < HTTPLimits.maxIdleConnectionsPerBackend else {
            connection.close()
            return
        }
        idle[key, default: []].append(connection)
        connection.enterPool(timeout: HTTPLimits.upstreamIdleTimeout)
    }

    /// Forgets a pooled connection that closed or timed out.
    func remove(_ connection: HTTPUpstreamHandler) {
        let key = ObjectIdentifier(connection.backend)
        guard let index = idle[key]?.firstIndex(where: { $0 === connection }) else { return }
        idle[key]?.remove(at: index)
        if idle[key]?.isEmpty == true { idle[key] = nil }  // a removed backend leaves no entry behind
    }

    /// Opens a new connection to `backend` on this loop. `completion` runs on the loop.
    func connect(
        to backend: Backend, timeout: TimeAmount,
        completion: @escaping (Result<HTTPUpstreamHandler, UpstreamError>) -> Void
    ) {
        let address: SocketAddress
        do {
            address = try backend.endpoint.socketAddress()
        } catch {
            completion(.failure(.connectFailed(backend: backend.endpoint, reason: "\(error)")))
            return
        }
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            // TCP_NODELAY: ClientBootstrap sets it by default (`.socketOption(.tcp_nodelay)` would set SO_DEBUG).
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPUpstreamHandler(backend: backend, pool: pool.value))
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    do {
                        completion(
                            .success(try channel.pipeline.syncOperations.handler(type: HTTPUpstreamHandler.self)))
                    } catch {
                        channel.close(promise: nil)
                        completion(.failure(.connectFailed(backend: backend.endpoint, reason: "\(error)")))
                    }
                case .failure(ChannelError.connectTimeout):
                    completion(.failure(.connectTimedOut(backend: backend.endpoint)))
                case .failure(let error):
                    completion(
                        .failure(.connectFailed(backend: backend.endpoint, reason: UpstreamConnector.describe(error))))
                }
            }
    }
}
