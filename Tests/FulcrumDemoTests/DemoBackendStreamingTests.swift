import FulcrumDemo
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Testing

@Suite("DemoBackend streaming and connection handling", .timeLimit(.minutes(1)))
struct DemoBackendStreamingTests {
    @Test func echoOf5MBComesBackByteExact() async throws {
        var generator = SplitMix64(seed: 42)
        let payload = (0..<(5 * 1024 * 1024)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            for method in ["POST", "PUT"] {
                let request = DemoRequest(method: method, path: "/echo", body: ByteBuffer(bytes: payload))
                let response = try await client.send(request, timeout: .seconds(20))
                #expect(response.status == 200)
                #expect(response.header("X-Backend") == "alpha")
                #expect(response.header("Transfer-Encoding") == "chunked")
                #expect(response.bodyLength == payload.count)
                #expect(Array(response.body.readableBytesView) == payload)
            }
            await client.close()
        }
    }

    @Test func echoAnswersBeforeTheRequestBodyEnds() async throws {
        // If the backend buffered the body, the first half would never come back before the second is sent.
        try await withBackend { backend, group in
            let channel = try await connectRaw(port: backend.port, group: group)
            try await withTimeout(.seconds(5)) {
                try await channel.executeThenClose { inbound, outbound in
                    var received = RawReader(inbound.makeAsyncIterator())
                    try await outbound.write(
                        ByteBuffer(string: "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
                    )
                    try await received.read { $0.contains("hello") }
                    #expect(received.text.hasPrefix("HTTP/1.1 200 OK"))
                    #expect(!received.text.contains("world"))
                    try await outbound.write(ByteBuffer(string: "world"))
                    try await received.read { $0.hasSuffix("0\r\n\r\n") }
                    #expect(received.text.contains("world"))
                }
            }
        }
    }

    @Test func bytesStreamsTheDeterministicPattern() async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            for count in [0, 1, 250, 251, 252, 1_000_003] {
                let response = try await client.get("/bytes/\(count)", timeout: .seconds(20))
                #expect(response.status == 200)
                #expect(response.header("Content-Length") == String(count))
                #expect(response.bodyLength == count)
                #expect(Array(response.body.readableBytesView) == pattern(count: count))
            }
            await client.close()
        }
    }

    @Test func bytesStreamsALargeBodyOverAKeptAliveConnection() async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            let count = 64 * 1024 * 1024
            let response = try await client.send(
                DemoRequest(path: "/bytes/\(count)", collectBody: false),
                timeout: .seconds(30)
            )
            #expect(response.bodyLength == count)
            #expect(try await client.get("/").bodyString == "alpha\n")
            await client.close()
        }
    }

    @Test func bytesWaitsForAReaderInsteadOfBuffering() async throws {
        let count = 100 * 1024 * 1024
        try await withBackend { backend, group in
            let channel = try await connectRaw(port: backend.port, group: group)
            try await withTimeout(.seconds(30)) {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(string: "GET /bytes/\(count) HTTP/1.1\r\nHost: t\r\n\r\n"))
                    // Nobody reads yet: NIOAsyncChannel stops reading once its small buffer is full, the socket
                    // buffers fill, and the backend must stop writing.
                    var last = -1
                    var unchangedPolls = 0
                    let settled = await eventually(within: .seconds(10)) {
                        let now = backend.bodyBytesWritten
                        unchangedPolls = now == last && now > 0 ? unchangedPolls + 1 : 0
                        last = now
                        return unchangedPolls >= 5
                    }
                    #expect(settled)
                    #expect(backend.bodyBytesWritten < 32 * 1024 * 1024)

                    var bodyBytes = 0
                    var header = ""
                    for try await var chunk in inbound {
                        if !header.hasSuffix("\r\n\r\n") {
                            while !header.hasSuffix("\r\n\r\n"), let byte = chunk.readInteger(as: UInt8.self) {
                                header.unicodeScalars.append(Unicode.Scalar(byte))
                            }
                        }
                        bodyBytes += chunk.readableBytes
                        if bodyBytes >= count { break }
                    }
                    #expect(header.hasPrefix("HTTP/1.1 200 OK"))
                    #expect(bodyBytes == count)
                    #expect(backend.bodyBytesWritten == count)
                }
            }
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withBackend { backend, group in
            let channel = try await connectRaw(port: backend.port, group: group)
            try await withTimeout(.seconds(5)) {
                try await channel.executeThenClose { inbound, outbound in
                    var received = RawReader(inbound.makeAsyncIterator())
                    let first = "GET /slow/50 HTTP/1.1\r\nHost: t\r\n\r\n"
                    let second = "GET /status/202 HTTP/1.1\r\nHost: t\r\n\r\n"
                    try await outbound.write(ByteBuffer(string: first + second))
                    try await received.read { $0.contains("status 202\n") }
                    let text = received.text
                    let okRange = try #require(text.firstRange(of: "HTTP/1.1 200 OK"))
                    let acceptedRange = try #require(text.firstRange(of: "HTTP/1.1 202 Accepted"))
                    #expect(okRange.lowerBound < acceptedRange.lowerBound)
                }
            }
        }
    }

    @Test func halfClosedRequestIsStillAnswered() async throws {
        try await withBackend { backend, group in
            let channel = try await connectRaw(port: backend.port, group: group)
            try await withTimeout(.seconds(5)) {
                try await channel.executeThenClose { inbound, outbound in
                    var received = RawReader(inbound.makeAsyncIterator())
                    try await outbound.write(ByteBuffer(string: "GET /slow/20 HTTP/1.1\r\nHost: t\r\n\r\n"))
                    outbound.finish()
                    try await received.readToEnd()
                    #expect(received.text.hasPrefix("HTTP/1.1 200 OK"))
                    #expect(received.text.hasSuffix("\r\n\r\nalpha\n"))
                }
            }
        }
    }

    @Test func http10RequestGetsAnAnswerAndAClose() async throws {
        try await withBackend { backend, group in
            let channel = try await connectRaw(port: backend.port, group: group)
            try await withTimeout(.seconds(5)) {
                try await channel.executeThenClose { inbound, outbound in
                    var received = RawReader(inbound.makeAsyncIterator())
                    try await outbound.write(ByteBuffer(string: "GET / HTTP/1.0\r\n\r\n"))
                    try await received.readToEnd()
                    #expect(received.text.hasPrefix("HTTP/1.0 200 OK"))
                    #expect(received.text.hasSuffix("alpha\n"))
                }
            }
        }
    }
}

/// A plain TCP connection whose output can be half-closed, for exchanges the HTTP client cannot express.
private func connectRaw(
    port: Int,
    group: any EventLoopGroup
) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    try await ClientBootstrap(group: group)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(isOutboundHalfClosureEnabled: true)
                )
            }
        }
}

/// Accumulates what a raw connection receives, as text.
private struct RawReader {
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    var text = ""

    init(_ iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) {
        self.iterator = iterator
    }

    struct ClosedEarly: Error {}

    /// Reads until `done(text)` holds; throws if the connection ends first.
    mutating func read(until done: (String) -> Bool) async throws {
        while !done(self.text) {
            guard let chunk = try await self.iterator.next() else { throw ClosedEarly() }
            self.text += String(buffer: chunk)
        }
    }

    /// Reads until the peer closes.
    mutating func readToEnd() async throws {
        while let chunk = try await self.iterator.next() {
            self.text += String(buffer: chunk)
        }
    }
}

/// A small deterministic generator, so payloads are not a repeating pattern the echo could fake.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
