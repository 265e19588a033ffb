import Foundation
import FulcrumConfig
import FulcrumCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin HTTP/1.1 JSON API on its own listener (see ``AdminAPI`` for routes and access rules).
///
/// Connections are `NIOAsyncChannel`s served by one task group (a child task per connection, requests
/// on a connection one after another, keep-alive). That group lives in one task that `start` creates and
/// `shutdown` cancels and joins, so nothing outlives the server.
public final class AdminServer: Sendable {
    /// Largest request body accepted; larger ones get 413.
    public static let maxBodyBytes = 64 * 1024

    /// The bound port (useful with port 0).
    public let port: Int
    public let api: AdminAPI
    private let listener: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    private let logger: Logger

    private init(
        port: Int, api: AdminAPI,
        listener: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>,
        logger: Logger
    ) {
        self.port = port
        self.api = api
        self.listener = listener
        self.logger = logger
    }

    /// Reads the token (if configured), binds `config.listen` and starts serving.
    public static func start(
        config: AdminConfig, control: any AdminControl, group: any EventLoopGroup, logger: Logger
    ) async throws -> AdminServer {
        let token = try config.tokenFile.map(readToken)
        let loopback = isLoopback(config.listen.address)
        guard loopback || token != nil else { throw AdminServerError.tokenRequired(listen: "\(config.listen)") }
        let api = AdminAPI(control: control, token: token, readsAreOpen: loopback)

        let listener: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            listener = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .bind(host: config.listen.address.description, port: Int(config.listen.port)) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                            wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw AdminServerError.bindFailed(listen: "\(config.listen)", reason: "\(error)")
        }
        let channel = listener.channel
        guard let port = channel.localAddress?.port else {
            try? await channel.close()
            throw AdminServerError.bindFailed(listen: "\(config.listen)", reason: "no local address")
        }
        var logger = logger
        logger[metadataKey: "admin.listen"] = "\(config.listen.address):\(port)"
        logger.info("admin API listening")
        return AdminServer(port: port, api: api, listener: listener, logger: logger)
    }

    /// Serves connections until `shutdown()` closes the listener; each connection is a child task.
    /// The owner runs this in its own task group (the server's `run`), so nothing outlives it.
    public func run() async {
        let api = api
        let logger = logger
        await withDiscardingTaskGroup { connections in
            do {
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        connections.addTask { await Self.serve(connection, api: api, logger: logger) }
                    }
                }
            } catch {
                logger.debug("admin listener stopped", metadata: ["error": "\(error)"])
            }
            // The listener is closed: idle keep-alive connections would wait forever.
            connections.cancelAll()
        }
    }

    /// Stops listening, which ends `run()` and closes every connection (a request being answered is
    /// abandoned). Idempotent.
    public func shutdown() async {
        try? await listener.channel.close()
    }

    static func readToken(path: String) throws -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw AdminServerError.tokenFile(path: path, reason: "cannot read it (\(error.localizedDescription))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw AdminServerError.tokenFile(path: path, reason: "not UTF-8 text")
        }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw AdminServerError.tokenFile(path: path, reason: "the file is empty") }
        return token
    }

    static func isLoopback(_ address: IPAddress) -> Bool {
        switch address {
        case .v4(let value): return value >> 24 == 127
        case .v6(let high, let low): return high == 0 && low == 1
        }
    }

    /// One connection: requests in order, each answered before the next is read.
    private static func serve(
        _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, api: AdminAPI, logger: Logger
    ) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body: [UInt8] = []
                var tooLarge = false
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        body = []
                        tooLarge = false
                        if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init),
                            length > maxBodyBytes
                        {
                            // Answer at once rather than read a body we will not use.
                            try await write(
                                tooLargeResponse, version: requestHead.version, keepAlive: false, to: outbound)
                            return
                        }
                    case .body(let chunk):
                        if body.count + chunk.readableBytes > maxBodyBytes {
                            tooLarge = true
                            body = []
                        } else if !tooLarge {
                            body += chunk.readableBytesView
                        }
                    case .end:
                        guard let requestHead = head else { continue }
                        head = nil
                        let response =
                            tooLarge
                            ? tooLargeResponse
                            : await api.handle(
                                AdminRequest(
                                    method: requestHead.method.rawValue, target: requestHead.uri,
                                    authorization: requestHead.headers.first(name: "authorization"), body: body))
                        let keepAlive = requestHead.isKeepAlive && !tooLarge
                        try await write(response, version: requestHead.version, keepAlive: keepAlive, to: outbound)
                        if !keepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("admin connection ended", metadata: ["error": "\(error)"])
        }
    }

    private static let tooLargeResponse = AdminResponse.error(
        413, "body_too_large", "request bodies are limited to \(maxBodyBytes) bytes")

    private static func write(
        _ response: AdminResponse, version: HTTPVersion, keepAlive: Bool,
        to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        let body = ByteBuffer(string: response.text ?? response.body.serialized + "\n")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Cache-Control", value: "no-store")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        try await outbound.write(
            contentsOf: [
                .head(HTTPResponseHead(version: version, status: status, headers: headers)),
                .body(.byteBuffer(body)),
                .end(nil),
            ])
    }
}
