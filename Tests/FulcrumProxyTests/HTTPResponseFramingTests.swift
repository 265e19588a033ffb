import Foundation
import FulcrumCore
import NIOCore
import NIOPosix
import Testing

@testable import FulcrumProxy

/// The proxy frames every response for its client itself (`HTTPWire`): whatever framing the backend used
/// (length, chunks, or until close), the client gets a message it can delimit, and bodyless responses
/// never get a body or chunked framing.
@Suite("HTTP proxy: response framing towards the client")
struct HTTPResponseFramingTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        /// The backend's whole answer (it closes afterwards).
        let backendReply: String
        let request: String
        /// The client's status line.
        let statusLine: String
        /// The body the client must read, after undoing the framing it was given.
        let body: String
        let chunked: Bool
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "chunked backend → chunked to an HTTP/1.1 client, trailers kept",
            backendReply:
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
            request: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            statusLine: "HTTP/1.1 200 OK", body: "hello world", chunked: true),
        Case(
            name: "close-delimited backend → chunked to an HTTP/1.1 client",
            backendReply: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close",
            request: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            statusLine: "HTTP/1.1 200 OK", body: "until the close", chunked: true),
        Case(
            name: "chunked backend → close-delimited to an HTTP/1.0 client",
            backendReply: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            request: "GET / HTTP/1.0\r\n\r\n",
            statusLine: "HTTP/1.0 200 OK", body: "abc", chunked: false),
        Case(
            name: "length-delimited backend → same length",
            backendReply: "HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade",
            request: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            statusLine: "HTTP/1.1 201 Created", body: "made", chunked: false),
        Case(
            name: "204 → no body, no chunked framing",
            backendReply: "HTTP/1.1 204 No Content\r\n\r\n",
            request: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            statusLine: "HTTP/1.1 204 No Content", body: "", chunked: false),
        Case(
            name: "HEAD without a length → no body, no chunked framing",
            backendReply: "HTTP/1.1 200 OK\r\nX-Head: yes\r\n\r\n",
            request: "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            statusLine: "HTTP/1.1 200 OK", body: "", chunked: false),
    ]

    @Test(arguments: cases)
    func responseIsFramedForTheClient(_ testCase: Case) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let backend = try await HTTPScriptedBackend.start(reply: testCase.backendReply, group: group)
        do {
            try await HTTPProxyHarness.with(backends: 0, extra: [backend.endpoint], retries: 0) { proxy in
                let text = try await HTTPRawConnection.exchange(testCase.request, port: proxy.port, group: proxy.group)
                guard let split = text.range(of: "\r\n\r\n") else {
                    Issue.record("no complete head in \(text.debugDescription)")
                    return
                }
                let head = text[..<split.lowerBound].lowercased()
                let payload = String(text[split.upperBound...])
                #expect(text.hasPrefix(testCase.statusLine + "\r\n"))
                #expect(head.contains("transfer-encoding: chunked") == testCase.chunked)
                if testCase.chunked {
                    let decoded = try #require(Self.dechunk(payload), "bad chunked body \(payload.debugDescription)")
                    #expect(decoded.body == testCase.body)
                    if testCase.backendReply.contains("X-Sum: 1") { #expect(decoded.trailers.contains("X-Sum: 1")) }
                } else {
                    #expect(payload == testCase.body)
                }
            }
        } catch {
            await backend.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        await backend.stop()
        try await group.shutdownGracefully()
    }

    @Test func writeChunkHeaderIsLowercaseHex() {
        for (size, text) in [(1, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (4096, "1000\r\n"), (0xABCDE, "abcde\r\n")] {
            var buffer = ByteBuffer()
            HTTPWire.writeChunkHeader(&buffer, size: size)
            #expect(String(buffer: buffer) == text)
        }
    }

    /// Undoes chunked framing strictly: every size line, CRLF after every chunk, the last chunk and the
    /// final empty line; nil if anything is off. Works on bytes: "\r\n" is one Character in a String.
    static func dechunk(_ text: String) -> (body: String, trailers: String)? {
        let bytes = Array(text.utf8)
        var index = 0
        var body: [UInt8] = []
        func line() -> [UInt8]? {
            var end = index
            while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            guard end + 1 < bytes.count else { return nil }
            defer { index = end + 2 }
            return Array(bytes[index..<end])
        }
        while true {
            guard let sizeLine = line(), let size = Int(String(decoding: sizeLine, as: UTF8.self), radix: 16) else {
                return nil
            }
            if size == 0 {
                let rest = Array(bytes[index...])
                guard rest.count >= 2, rest.suffix(2) == [13, 10] else { return nil }
                return (String(decoding: body, as: UTF8.self), String(decoding: rest.dropLast(2), as: UTF8.self))
            }
            guard index + size + 2 <= bytes.count, bytes[index + size] == 13, bytes[index + size + 1] == 10 else {
                return nil
            }
            body += bytes[index..<index + size]
            index += size + 2
        }
    }
}
