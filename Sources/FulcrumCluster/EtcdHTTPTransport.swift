import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A small HTTP/1.1 client for etcd's JSON gateway: one `POST` per connection (`Connection: close`), either
/// answered by one JSON body (`post`) or by a stream of newline-separated JSON messages (`stream`, used by
/// watch and lease keep-alive). Endpoints are tried in order, starting with the last one that answered.
final class EtcdHTTPTransport: Sendable {
    /// A unary answer larger than this is refused (a whole prefix of documents stays far below it).
    static let maximumBodyBytes = 64 * 1024 * 1024
    /// One streamed message larger than this ends the stream.
    static let maximumMessageBytes = 16 * 1024 * 1024

    let group: any EventLoopGroup
    let endpoints: [EtcdEndpoint]
    let connectTimeout: Duration
    private let preferred = Mutex(0)

    init(group: any EventLoopGroup, endpoints: [EtcdEndpoint], connectTimeout: Duration = .seconds(2)) {
        precondition(!endpoints.isEmpty, "at least one etcd endpoint")
        self.group = group
        self.endpoints = endpoints
        self.connectTimeout = connectTimeout
    }

    /// The HTTP status and the whole body of `POST path` with `body`, within `timeout` (connect included).
    func post(_ path: String, body: [UInt8], timeout: Duration) async throws -> (status: Int, body: [UInt8]) {
        let deadline = NIODeadline.now() + TimeAmount(timeout)
        let (endpoint, channel) = try await connectAny(timeout: min(timeout, connectTimeout))
        do {
            // Closing the channel at the deadline ends the read loop below; no second task is needed.
            let timer = channel.channel.eventLoop.scheduleTask(deadline: deadline) {
                channel.channel.close(promise: nil)
            }
            defer { timer.cancel() }
            return try await channel.executeThenClose { inbound, outbound in
                try await Self.send(path, body: body, endpoint: endpoint, outbound)
                var status: Int?
                var collected: [UInt8] = []
                for try await part in inbound {
                    switch part {
                    case .head(let head):
                        status = Int(head.status.code)
                    case .body(var buffer):
                        guard collected.count + buffer.readableBytes <= Self.maximumBodyBytes else {
                            throw EtcdError.malformedResponse("response body over \(Self.maximumBodyBytes) bytes")
                        }
                        collected += buffer.readBytes(length: buffer.readableBytes) ?? []
                    case .end:
                        guard let status else { throw EtcdError.malformedResponse("no status line") }
                        return (status, collected)
                    }
                }
                throw NIODeadline.now() >= deadline
                    ? EtcdError.timedOut("POST \(path) to \(endpoint)")
                    : EtcdError.unreachable("\(endpoint) closed the connection during POST \(path)")
            }
        } catch let error as EtcdError {
            throw error
        } catch {
            if NIODeadline.now() >= deadline { throw EtcdError.timedOut("POST \(path) to \(endpoint)") }
            if Task.isCancelled { throw CancellationError() }
            throw EtcdError.unreachable("\(endpoint): \(error)")
        }
    }

    /// Sends `POST path` and hands every newline-separated JSON message of the streamed answer to
    /// `onMessage`, until the stream ends (returns), fails (throws) or the task is cancelled (closes the
    /// connection and returns). `onOpen` runs once the response head arrived with status 200.
    func stream(
        _ path: String, body: [UInt8], onOpen: @Sendable () -> Void = {},
        onMessage: ([UInt8]) async throws -> Void
    ) async throws {
        let (endpoint, channel) = try await connectAny(timeout: connectTimeout)
        do {
            try await withTaskCancellationHandler {
                try await channel.executeThenClose { inbound, outbound in
                    try await Self.send(path, body: body, endpoint: endpoint, outbound)
                    var pending: [UInt8] = []
                    var status: Int?
                    for try await part in inbound {
                        switch part {
                        case .head(let head):
                            status = Int(head.status.code)
                            if status == 200 { onOpen() }
                        case .body(var buffer):
                            pending += buffer.readBytes(length: buffer.readableBytes) ?? []
                            // Checked before splitting: a message (or an error body) never grows unbounded.
                            guard pending.count <= Self.maximumMessageBytes else {
                                throw EtcdError.malformedResponse(
                                    "streamed message over \(Self.maximumMessageBytes) bytes")
                            }
                            guard status == 200 else { continue }
                            // The gateway ends every message with a newline; JSON escapes newlines inside strings.
                            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                                let message = Array(pending[..<newline])
                                pending.removeSubrange(...newline)
                                if !message.allSatisfy({ $0 == 32 || $0 == 13 }) { try await onMessage(message) }
                            }
                        case .end:
                            if let status, status != 200 {
                                throw EtcdJSON.serverError(status: status, body: pending)
                            }
                            if !pending.isEmpty { try await onMessage(pending) }
                            return
                        }
                    }
                }
            } onCancel: {
                channel.channel.close(promise: nil)
            }
        } catch let error as EtcdError {
            throw error
        } catch {
            if Task.isCancelled { return }
            throw EtcdError.unreachable("\(endpoint): \(error)")
        }
    }

    private static func send(
        _ path: String, body: [UInt8], endpoint: EtcdEndpoint,
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(
            name: "Host",
            value: endpoint.host.contains(":")
                ? "[\(endpoint.host)]:\(endpoint.port)" : "\(endpoint.host):\(endpoint.port)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        // One write for the whole request: etcd answers as soon as it has the body and closes (`Connection:
        // close`), so a separate final write could meet a closed channel ("I/O on closed channel") although
        // the request was complete and answered.
        try await outbound.write(contentsOf: [
            .head(HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)),
            .body(.byteBuffer(ByteBuffer(bytes: body))), .end(nil),
        ])
    }

    private func connect(
        _ endpoint: EtcdEndpoint, timeout: Duration
    ) async throws -> NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart> {
        try await ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: endpoint.host, port: endpoint.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Connects to the preferred endpoint, then to the others in turn. Only connecting fails over: once a
    /// request is sent it is not repeated elsewhere (a write may have been applied).
    private func connectAny(
        timeout: Duration
    ) async throws -> (EtcdEndpoint, NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>) {
        let first = preferred.withLock { $0 }
        var reasons: [String] = []
        for offset in 0..<endpoints.count {
            let index = (first + offset) % endpoints.count
            do {
                let channel = try await connect(endpoints[index], timeout: timeout)
                if offset != 0 { preferred.withLock { $0 = index } }
                return (endpoints[index], channel)
            } catch {
                if Task.isCancelled { throw CancellationError() }
                reasons.append("\(endpoints[index]): \(error)")
            }
        }
        throw EtcdError.unreachable(reasons.joined(separator: "; "))
    }
}
