import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import NIOCore
import NIOHTTP1
import Testing

@testable import FulcrumProxy

@Suite("HTTP proxy: balancing, keep-alive, headers, stickiness")
struct HTTPProxyTests {
    @Test func roundRobinSpreadsRequestsEvenlyOverThreeBackends() async throws {
        try await HTTPProxyHarness.with { proxy in try await Self.roundRobin(proxy) }
    }

    static func roundRobin(_ proxy: HTTPProxyHarness) async throws {
        let client = try await proxy.client()
        var counts: [String: Int] = [:]
        for _ in 0..<30 {
            let response = try await client.get("/")
            #expect(response.status == 200)
            let name = response.header("X-Backend") ?? "?"
            counts[name, default: 0] += 1
        }
        await client.close()
        #expect(counts == ["b0": 10, "b1": 10, "b2": 10])
    }

    @Test func keepAliveReusesUpstreamConnections() async throws {
        try await HTTPProxyHarness.with { proxy in
            let client = try await proxy.client()
            for _ in 0..<100 {
                let response = try await client.get("/")
                #expect(response.status == 200)
                #expect(response.isKeepAlive)
            }
            #expect(client.isActive)
            await client.close()
            #expect(proxy.totalRequests == 100)
            // One upstream connection per backend on the client's event loop, reused 33 times or so.
            #expect(proxy.totalConnections <= 3)
        }
    }

    @Test func requestHeadersAreRewrittenForTheBackend() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let client = try await proxy.client()
            let response = try await client.get(
                "/headers",
                headers: [
                    ("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "1"), ("Keep-Alive", "timeout=5"),
                    ("TE", "trailers"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("Upgrade", "websocket"),
                    ("Proxy-Connection", "keep-alive"), ("X-Forwarded-For", "10.1.2.3"), ("X-Kept", "yes"),
                ])
            await client.close()
            #expect(response.status == 200)
            let lines = Set(response.bodyString.split(separator: "\n").map { $0.lowercased() })
            #expect(lines.contains("x-forwarded-for: 10.1.2.3, 127.0.0.1"))
            #expect(lines.contains("x-forwarded-proto: http"))
            #expect(lines.contains("forwarded: for=127.0.0.1;proto=http"))
            #expect(lines.contains("via: 1.1 fulcrum"))
            #expect(lines.contains("x-kept: yes"))
            let names = Set(lines.compactMap { $0.split(separator: ":").first.map(String.init) })
            for hopByHop in [
                "connection", "keep-alive", "te", "proxy-authorization", "upgrade", "proxy-connection", "x-drop-me",
            ] {
                #expect(!names.contains(hopByHop), "\(hopByHop) reached the backend")
            }
            #expect(response.header("Via") == "1.1 fulcrum")
            #expect(response.header("X-Backend") == "b0")
        }
    }

    @Test func stickyCookieSticksAndIsSetOnlyWhenNeeded() async throws {
        try await HTTPProxyHarness.with(stickyCookie: StickyCookieConfig(name: "FULCRUM")) { proxy in
            let client = try await proxy.client()
            let first = try await client.get("/")
            let setCookie = try #require(first.header("Set-Cookie"))
            #expect(setCookie.hasPrefix("FULCRUM="))
            #expect(setCookie.hasSuffix("; Path=/; HttpOnly"))
            let cookie = String(setCookie.split(separator: ";")[0])
            let stuckTo = first.header("X-Backend")
            for _ in 0..<12 {
                let response = try await client.get("/", headers: [("Cookie", "other=1; \(cookie)")])
                #expect(response.header("X-Backend") == stuckTo)
                #expect(response.header("Set-Cookie") == nil)
            }
            // A cookie naming no current backend is replaced.
            let stale = try await client.get("/", headers: [("Cookie", "FULCRUM=0123456789abcdef")])
            #expect(stale.header("Set-Cookie") != nil)
            await client.close()
        }
    }

    @Test(arguments: [
        (HashKey.header("X-User"), "X-User", ""), (HashKey.cookie("session"), "Cookie", "session="),
        (HashKey.uri, "", ""),
    ])
    func hashKeysStickToOneBackend(key: HashKey, header: String, prefix: String) async throws {
        try await HTTPProxyHarness.with(algorithm: .maglev, hashKey: key) { proxy in
            let client = try await proxy.client()
            var seen: Set<String> = []
            var perKey: [String: Set<String>] = [:]
            for round in 0..<3 {
                for user in 0..<20 {
                    let path = header.isEmpty ? "/?user=\(user)" : "/"
                    let headers = header.isEmpty ? [] : [(header, "\(prefix)user-\(user)")]
                    let response = try await client.get(path, headers: headers)
                    let backend = response.header("X-Backend") ?? "?"
                    perKey["\(user)", default: []].insert(backend)
                    if round == 0 { seen.insert(backend) }
                }
            }
            await client.close()
            #expect(perKey.values.allSatisfy { $0.count == 1 }, "a key moved between backends")
            #expect(seen.count >= 2, "20 keys all landed on one backend")
        }
    }

    @Test func missingHashKeyFallsBackToTheClientAddress() async throws {
        try await HTTPProxyHarness.with(algorithm: .maglev, hashKey: .header("X-User")) { proxy in
            let client = try await proxy.client()
            var backends: Set<String> = []
            for _ in 0..<10 { backends.insert(try await client.get("/").header("X-Backend") ?? "?") }
            await client.close()
            #expect(backends.count == 1)
        }
    }

    @Test func expectContinueIsAnsweredByTheProxy() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let connection = try await HTTPRawConnection.connect(port: proxy.port, group: proxy.group)
            try await connection.send(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            // The echo backend answers as soon as it has the head, so its 200 may follow the 100 at once.
            let interim = try await connection.read(until: "\r\n\r\n")
            #expect(interim.hasPrefix("HTTP/1.1 100 Continue\r\n\r\n"))
            try await connection.send("hello")
            let text = try await connection.readToEnd()
            await connection.close()
            #expect((interim + text).contains("HTTP/1.1 200 OK"))
            #expect(text.contains("hello"))
        }
    }

    @Test func headRequestsGetNoBody() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let client = try await proxy.client()
            let head = try await client.send(DemoRequest(method: "HEAD", path: "/bytes/1000"))
            #expect(head.status == 200)
            #expect(head.bodyLength == 0)
            let after = try await client.get("/")
            #expect(after.status == 200)
            #expect(after.bodyString == "b0\n")
            await client.close()
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await HTTPProxyHarness.with { proxy in
            let requests = (0..<5).map { "GET /status/\(200 + $0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined()
            let text = try await HTTPRawConnection.exchange(
                requests + "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", port: proxy.port,
                group: proxy.group)
            let statuses = text.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("HTTP/1.1 ") }.map {
                $0.dropFirst(9).prefix(3)
            }
            #expect(statuses == ["200", "201", "202", "203", "204", "200"], "\(text)")
        }
    }

    @Test func http10ClientGetsAnHTTP10ResponseAndAClose() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let text = try await HTTPRawConnection.exchange(
                "GET /bytes/10 HTTP/1.0\r\nHost: x\r\n\r\n", port: proxy.port, group: proxy.group)
            #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"))
            #expect(!text.lowercased().contains("transfer-encoding"))
            #expect(text.utf8.count > 10)
        }
    }

    @Test func drainFinishesTheInFlightRequestThenCloses() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let busy = try await proxy.client()
            let idle = try await proxy.client()
            _ = try await idle.get("/")
            // Long enough that the drain event reaches the connection while the request is in flight, even on a busy machine.
            let slow = Task { try await busy.get("/slow/1500") }
            try await httpWaitUntil { proxy.backends[0].requests >= 2 }
            async let drained: Void = proxy.listener.context.connections.drain(grace: .seconds(5))
            let response = try await slow.value
            await drained
            #expect(response.status == 200)
            #expect(!response.isKeepAlive)
            try await httpWaitUntil { !idle.isActive && !busy.isActive }
        }
    }
}

@Suite("HTTP header rewriting")
struct HTTPHeaderRewriterTests {
    @Test(
        "hop-by-hop names are recognised in any case, and nothing else is",
        arguments: [
            ("Connection", true), ("KEEP-ALIVE", true), ("proxy-connection", true), ("TE", true),
            ("Transfer-Encoding", true), ("Proxy-Authenticate", true), ("Content-Length", false), ("tee", false),
            ("Host", false), ("x", false), ("Upgrade-Insecure-Requests", false),
        ])
    func hopByHopNames(name: String, expected: Bool) {
        var name = name
        #expect(name.withUTF8 { HTTPHeaderRewriter.isHopByHop(UnsafeRawBufferPointer($0)) } == expected)
    }

    static func clientHead(
        _ backend: String, version: HTTPVersion = .http1_1, keepContentLength: Bool = true, chunked: Bool = false
    ) throws -> String {
        var parser = HTTPResponseHeadParser()
        guard case .complete(let head, _) = parser.parse(ByteBuffer(string: backend)) else {
            throw HTTPFieldError.malformed("not a response head: \(backend)")
        }
        var buffer = ByteBuffer()
        HTTPHeaderRewriter.writeClientResponseHead(
            head, version: version, keepContentLength: keepContentLength, setCookie: nil,
            connection: version.minor == 0 ? .keepAlive : nil, chunked: chunked, into: &buffer)
        return String(buffer: buffer)
    }

    @Test("a response loses exactly its hop-by-hop fields and those Connection names; Via gains this hop")
    func responseSplice() throws {
        #expect(
            try Self.clientHead("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n\r\n")
                == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\nvia: 1.1 fulcrum\r\n\r\n")
        #expect(
            try Self.clientHead(
                "HTTP/1.0 404 Not There\r\nConnection: close, X-Token\r\nX-Token: t\r\nTE: x\r\nVia: 1.1 a\r\n"
                    + "Via: 1.1 b\r\nKeep-Alive: 5\r\nContent-Length: 0\r\n\r\n", version: .http1_0)
                == "HTTP/1.0 404 Not There\r\nContent-Length: 0\r\nvia: 1.1 a, 1.1 b, 1.0 fulcrum\r\n"
                + "connection: keep-alive\r\n\r\n")
        #expect(
            try Self.clientHead(
                "HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", keepContentLength: false,
                chunked: true) == "HTTP/1.1 200 \r\nvia: 1.1 fulcrum\r\ntransfer-encoding: chunked\r\n\r\n")
    }
}
