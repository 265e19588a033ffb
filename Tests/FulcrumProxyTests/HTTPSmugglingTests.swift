import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import NIOCore
import NIOHTTP1
import Testing

@testable import FulcrumProxy

@Suite("HTTP proxy: request smuggling defence, limits, client timeouts")
struct HTTPSmugglingTests {
    static let smuggling: [(String, String)] = [
        ("CL and TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE and CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("two different CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ("CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde"),
        ("negative CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabcde"),
        ("signed CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd"),
        ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        (
            "TE chunked twice",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        ("TE identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE space before colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("TE obs-fold", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        (
            "invalid chunk size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        ),
        (
            "chunk size overflow",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\na\r\n0\r\n\r\n"
        ),
        (
            "chunk size with space",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"
        ),
        ("chunk without CRLF", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n"),
        (
            "bare LF in chunk size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
        ),
    ]

    @Test(arguments: smuggling)
    func ambiguousFramingIsRefusedWithoutContactingABackend(name: String, request: String) async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let text = try await HTTPRawConnection.exchange(request, port: proxy.port, group: proxy.group)
            #expect(
                text.hasPrefix("HTTP/1.1 400 Bad Request\r\n") || text.hasPrefix("HTTP/1.0 400 Bad Request\r\n"),
                "\(name): \(text)")
            #expect(text.lowercased().contains("connection: close"), "\(name)")
            #expect(proxy.backends[0].requests == 0, "\(name) reached the backend")
            #expect(proxy.backends[0].connectionsAccepted == 0, "\(name) contacted the backend")
        }
    }

    @Test func validChunkedUploadIsForwarded() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let text = try await HTTPRawConnection.exchange(
                "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                port: proxy.port, group: proxy.group)
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(text.contains("hello") && text.contains(" world"))
            #expect(proxy.backends[0].requests == 1)
        }
    }

    @Test func validationUnit() {
        func framing(_ fields: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPRequestFraming? {
            let text =
                "POST / HTTP/\(version.major).\(version.minor)\r\n"
                + fields.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
            var parser = HTTPRequestHeadParser()
            guard case .complete(let head, _) = parser.parse(ByteBuffer(string: text)) else { return nil }
            return try? HTTPRequestFraming.validate(
                version: head.version, method: head.method, transferEncoding: head.values("transfer-encoding"),
                contentLength: head.contentLength
            ).get()
        }
        #expect(framing([]) == HTTPRequestFraming.none)
        #expect(framing([("Content-Length", "10")]) == .contentLength(10))
        #expect(framing([("Content-Length", "10"), ("Content-Length", "10")]) == .contentLength(10))
        #expect(framing([("Transfer-Encoding", "Chunked")]) == .chunked)
        #expect(framing([("Content-Length", "10,")]) == nil)
        #expect(framing([("Content-Length", "")]) == nil)
        #expect(framing([("Content-Length", "99999999999999999999")]) == nil)
        #expect(framing([("Transfer-Encoding", "chunked, chunked")]) == nil)
        #expect(framing([], version: HTTPVersion(major: 2, minor: 0)) == nil)
    }

    @Test func tooManyHeadersGet431() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let headers = (0..<(HTTPLimits.maxRequestHeaderCount + 1)).map { "X-H\($0): v\r\n" }.joined()
            let text = try await HTTPRawConnection.exchange(
                "GET / HTTP/1.1\r\n\(headers)\r\n", port: proxy.port, group: proxy.group)
            #expect(text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large"))
            #expect(proxy.backends[0].requests == 0)
        }
    }

    @Test func headersAtTheCountLimitPass() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let headers = (0..<(HTTPLimits.maxRequestHeaderCount - 1)).map { "X-H\($0): v\r\n" }.joined()
            let text = try await HTTPRawConnection.exchange(
                "GET / HTTP/1.1\r\nConnection: close\r\n\(headers)\r\n", port: proxy.port, group: proxy.group)
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        }
    }

    @Test(arguments: ["header", "uri"])
    func oversizedHeadersGet431(kind: String) async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let big = String(repeating: "a", count: HTTPLimits.maxRequestHeaderBytes + 1)
            let request =
                kind == "uri"
                ? "GET /\(big) HTTP/1.1\r\nHost: x\r\n\r\n" : "GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n"
            let text = try await HTTPRawConnection.exchange(request, port: proxy.port, group: proxy.group)
            #expect(text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large"))
            #expect(proxy.backends[0].requests == 0)
        }
    }

    @Test func slowlorisGets408() async throws {
        var timeouts = ListenerTimeouts()
        // Long enough that the test's first bytes arrive before it even on a loaded machine.
        timeouts.requestHeaders = .milliseconds(1500)
        try await HTTPProxyHarness.with(backends: 1, timeouts: timeouts) { proxy in
            let connection = try await HTTPRawConnection.connect(port: proxy.port, group: proxy.group)
            let started = ContinuousClock.now
            try await connection.send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            let text = try await connection.readToEnd(within: 5)
            await connection.close()
            #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout"))
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(proxy.backends[0].requests == 0)
        }
    }

    @Test func idleKeepAliveConnectionIsClosedQuietly() async throws {
        var timeouts = ListenerTimeouts()
        timeouts.idle = .milliseconds(200)
        try await HTTPProxyHarness.with(backends: 1, timeouts: timeouts) { proxy in
            let connection = try await HTTPRawConnection.connect(port: proxy.port, group: proxy.group)
            try await connection.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            let text = try await connection.readToEnd(within: 5)
            await connection.close()
            // The response, then a close without a 408.
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(!text.contains("408"))
        }
    }

    @Test func garbageFromTheClientGets400AndOtherClientsAreUnaffected() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let client = try await proxy.client()
            let text = try await HTTPRawConnection.exchange(
                "\u{01}\u{02}GARBAGE\r\n\r\n", port: proxy.port, group: proxy.group)
            #expect(text.hasPrefix("HTTP/1.1 400"))
            let response = try await client.get("/")
            #expect(response.status == 200)
            await client.close()
        }
    }
}
