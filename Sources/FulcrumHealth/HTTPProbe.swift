import FulcrumCore
import NIOCore
import NIOHTTP1

/// Passes when `GET <path>` answers, within the timeout, with a status in `expectStatus` and, when
/// `expectBody` is set, a body whose first 64 KiB contain it. One connection per check
/// (`Connection: close`). Details: "status 200", "status 503", "body lacks 'ok'", "timed out after 1s".
public struct HTTPProbe: HealthProbe {
    /// How much of the body is searched for `expectBody`.
    public static let maxBodyBytes = 64 * 1024

    public let eventLoopGroup: any EventLoopGroup
    public let timeout: Duration
    public let path: String
    /// The Host header; nil: the target's address and port.
    public let host: String?
    public let expectStatus: ClosedRange<Int>
    public let expectBody: String?

    public init(
        eventLoopGroup: any EventLoopGroup, timeout: Duration, path: String = "/", host: String? = nil,
        expectStatus: ClosedRange<Int> = 200...399, expectBody: String? = nil
    ) {
        self.eventLoopGroup = eventLoopGroup
        self.timeout = timeout
        self.path = path
        self.host = host
        self.expectStatus = expectStatus
        self.expectBody = expectBody
    }

    public func check(_ target: Endpoint) async -> ProbeOutcome {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host ?? target.description)
        headers.add(name: "User-Agent", value: "fulcrum-health")
        headers.add(name: "Connection", value: "close")
        let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        let expectStatus = expectStatus
        let expectBody = expectBody
        return await ProbeAttempt.run(
            group: eventLoopGroup, target: target, timeout: timeout,
            protocolHandlers: { channel, outcome in
                let pipeline = channel.pipeline.syncOperations
                try pipeline.addHTTPClientHandlers()
                try pipeline.addHandler(
                    HTTPProbeHandler(
                        request: request, expectStatus: expectStatus, expectBody: expectBody, outcome: outcome))
            })
    }
}

/// Sends one request and judges the response; completes `outcome` as soon as the verdict is known
/// (the channel is then closed by `ProbeAttempt`).
final class HTTPProbeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let expectStatus: ClosedRange<Int>
    private let expectBody: String?
    private let expectBytes: [UInt8]
    private let outcome: EventLoopPromise<ProbeOutcome>
    private var status: Int?
    private var body: [UInt8] = []
    private var done = false

    init(
        request: HTTPRequestHead, expectStatus: ClosedRange<Int>, expectBody: String?,
        outcome: EventLoopPromise<ProbeOutcome>
    ) {
        self.request = request
        self.expectStatus = expectStatus
        self.expectBody = expectBody
        self.expectBytes = Array((expectBody ?? "").utf8)
        self.outcome = outcome
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            let code = Int(head.status.code)
            // An interim answer (100 Continue, 103 Early Hints) comes before the real one.
            if (100..<200).contains(code) && code != 101 && !expectStatus.contains(code) { return }
            status = code
            if !expectStatus.contains(code) {
                finish(.failed("status \(code)"))
            } else if expectBody == nil {
                finish(.passed("status \(code)"))
            }
        case .body(var buffer):
            guard let code = status else { return }
            let room = HTTPProbe.maxBodyBytes - body.count
            let searchFrom = max(0, body.count - expectBytes.count + 1)
            body += buffer.readBytes(length: min(room, buffer.readableBytes)) ?? []
            if body[searchFrom...].firstRange(of: expectBytes) != nil {
                finish(.passed("status \(code)"))
            } else if body.count >= HTTPProbe.maxBodyBytes {
                finish(.failed("body lacks '\(expectBody ?? "")' (in its first 64 KiB)"))
            }
        case .end:
            if status != nil { finish(.failed("body lacks '\(expectBody ?? "")'")) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failed(status == nil ? "connection closed before the response" : "connection closed in the body"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError {
            finish(.failed("invalid HTTP response (\(error))"))
        } else if let error = error as? IOError, let text = ProbeAttempt.describe(errno: error.errnoCode) {
            finish(.failed(text))
        } else {
            finish(.failed("\(error)"))
        }
        context.close(promise: nil)
    }

    private func finish(_ result: ProbeOutcome) {
        guard !done else { return }
        done = true
        outcome.succeed(result)
    }
}

@available(*, unavailable)
extension HTTPProbeHandler: Sendable {}
