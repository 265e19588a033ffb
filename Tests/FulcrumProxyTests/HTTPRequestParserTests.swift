import FulcrumCore
import NIOCore
import NIOHTTP1
import Testing

@testable import FulcrumProxy

/// The proxy's own HTTP/1 codec: request and response heads parsed in place, chunked body scanning,
/// and the spliced upstream head.
@Suite("HTTP head parsers and chunked scanner")
struct HTTPRequestParserTests {
    static func parse(_ text: String) -> HTTPRequestHeadParser.Result {
        var parser = HTTPRequestHeadParser()
        return parser.parse(ByteBuffer(string: text))
    }

    static func head(_ text: String) throws -> (HTTPParsedRequestHead, Int) {
        guard case .complete(let head, let length) = parse(text) else {
            throw ParseFailure(text: text, result: "\(parse(text))")
        }
        return (head, length)
    }

    struct ParseFailure: Error {
        let text: String
        let result: String
    }

    @Test func parsesMethodTargetVersionAndFields() throws {
        let text = "\r\nPOST /a?b=c HTTP/1.1\r\nHost: example\r\nX-Empty:\r\nX-Pad: \t padded value \t\r\n\r\nBODY"
        let (head, length) = try Self.head(text)
        #expect(length == text.utf8.count - 4)
        #expect(head.method == .POST)
        #expect(head.target == "/a?b=c")
        #expect(head.version == .http1_1)
        #expect(head.fields.map { head.string($0.name) } == ["Host", "X-Empty", "X-Pad"])
        #expect(head.fields.map { head.string($0.value) } == ["example", "", "padded value"])
        #expect(head.values("host") == ["example"])
        #expect(head.contains("x-pad") && !head.contains("x-pa"))
        #expect(head.firstValue(named: "X-PAD").map(head.string) == "padded value")
    }

    @Test(arguments: [
        ("GET", HTTPMethod.GET), ("HEAD", .HEAD), ("PUT", .PUT), ("DELETE", .DELETE), ("OPTIONS", .OPTIONS),
        ("PATCH", .PATCH), ("BREW", .RAW(value: "BREW")),
    ])
    func methods(text: String, method: HTTPMethod) throws {
        #expect(try Self.head("\(text) / HTTP/1.0\r\n\r\n").0.method == method)
    }

    @Test(arguments: [
        ("bare LF line end", "GET / HTTP/1.1\nHost: x\r\n\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"),
        ("no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n"),
        ("empty name", "GET / HTTP/1.1\r\n: x\r\n\r\n"),
        ("NUL in value", "GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n"),
        ("bare CR in value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
        ("DEL in value", "GET / HTTP/1.1\r\nX: a\u{7F}\r\n\r\n"),
        ("two spaces", "GET  / HTTP/1.1\r\n\r\n"),
        ("no target", "GET HTTP/1.1\r\n\r\n"),
        ("control in target", "GET /\u{1}x HTTP/1.1\r\n\r\n"),
        ("lowercase version", "GET / http/1.1\r\n\r\n"),
        ("short version", "GET / HTTP/1\r\n\r\n"),
        ("trailing space after version", "GET / HTTP/1.1 \r\n\r\n"),
        ("garbage", "\u{1}\u{2}GARBAGE\r\n\r\n"),
        ("separator in method", "GE(T / HTTP/1.1\r\n\r\n"),
    ])
    func malformedHeadsGet400(name: String, text: String) {
        guard case .invalid(let rejection) = Self.parse(text) else {
            Issue.record("\(name) was not refused: \(Self.parse(text))")
            return
        }
        #expect(rejection.status == .badRequest, "\(name)")
    }

    @Test func limitsGive431() {
        let many = (0...HTTPLimits.maxRequestHeaderCount).map { "X-\($0): v\r\n" }.joined()
        guard case .invalid(let tooMany) = Self.parse("GET / HTTP/1.1\r\n\(many)\r\n") else {
            Issue.record("too many fields accepted")
            return
        }
        #expect(tooMany.status == .requestHeaderFieldsTooLarge)
        let atLimit = (1..<HTTPLimits.maxRequestHeaderCount).map { "X-\($0): v\r\n" }.joined()
        #expect((try? Self.head("GET / HTTP/1.1\r\nHost: x\r\n\(atLimit)\r\n")) != nil)

        let big = String(repeating: "a", count: HTTPLimits.maxRequestHeaderBytes)
        for text in ["GET / HTTP/1.1\r\nX: \(big)\r\n\r\n", "GET / HTTP/1.1\r\nX: \(big)"] {
            guard case .invalid(let tooLarge) = Self.parse(text) else {
                Issue.record("oversized head accepted or awaited (\(text.utf8.count) bytes)")
                continue
            }
            #expect(tooLarge.status == .requestHeaderFieldsTooLarge)
        }
    }

    /// Every truncation of a valid head is incomplete, and feeding it byte by byte to one parser (which
    /// resumes its search) ends with the same head as parsing it whole.
    @Test func truncatedHeadsAreIncompleteAndResumable() throws {
        let text = "\r\nGET /x HTTP/1.1\r\nHost: a\r\nCookie: k=v\r\n\r\nNEXT"
        let bytes = Array(text.utf8)
        let (whole, length) = try Self.head(text)
        var parser = HTTPRequestHeadParser()
        var buffer = ByteBuffer()
        for (index, byte) in bytes.enumerated() {
            buffer.writeInteger(byte)
            switch parser.parse(buffer) {
            case .incomplete:
                #expect(index + 1 < length, "complete head not found at \(index + 1) bytes")
            case .complete(let head, let parsedLength):
                #expect(index + 1 == length)
                #expect(parsedLength == length)
                #expect(head.bytes == whole.bytes)
                #expect(head.fields.count == 2)
                return
            case .invalid(let rejection):
                Issue.record("prefix of \(index + 1) bytes refused: \(rejection)")
                return
            }
        }
        Issue.record("never complete")
    }

    // MARK: Chunked bodies

    static func scan(_ text: String, splitAt split: Int? = nil) -> HTTPChunkedScanner.Outcome {
        var scanner = HTTPChunkedScanner()
        let bytes = Array(text.utf8)
        guard let split else { return bytes.withUnsafeBytes { scanner.scan($0) } }
        let first = bytes[..<split].withUnsafeBytes { scanner.scan($0) }
        guard case .body(let count, let ended) = first else { return first }
        if ended { return first }
        #expect(count == split)
        let second = bytes[split...].withUnsafeBytes { scanner.scan($0) }
        guard case .body(let rest, let secondEnded) = second else { return second }
        return .body(count: count + rest, ended: secondEnded)
    }

    @Test func chunkedBodiesEndWhereTheyEndAtEverySplit() {
        let body = "5\r\nhello\r\nA;ext=1;q=\"x y\"\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n"
        let next = "GET / HTTP/1.1\r\n\r\n"
        let total = body.utf8.count
        #expect(Self.scan(body + next) == .body(count: total, ended: true))
        for split in 0...total {
            #expect(Self.scan(body + next, splitAt: split) == .body(count: total, ended: true), "split at \(split)")
        }
        #expect(Self.scan("0\r\n\r\n") == .body(count: 5, ended: true))
        #expect(Self.scan("5\r\nhel") == .body(count: 6, ended: false))
    }

    @Test(arguments: [
        ("not hex", "zz\r\nabc\r\n0\r\n\r\n"),
        ("17 digits", "fffffffffffffffff1\r\na\r\n0\r\n\r\n"),
        ("leading space", " 5\r\nhello\r\n0\r\n\r\n"),
        ("sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after data", "5\r\nhelloX0\r\n\r\n"),
        ("bare LF after size", "5\nhello\r\n0\r\n\r\n"),
        ("bare LF after data", "5\r\nhello\n0\r\n\r\n"),
        ("space then no extension", "5 \r\nhello\r\n0\r\n\r\n"),
        ("control in extension", "5;a\u{1}\r\nhello\r\n0\r\n\r\n"),
        ("bare LF in trailer", "0\r\nX: 1\n\r\n"),
        ("trailer not a field", "0\r\n:x\r\n\r\n"),
        ("bare LF at the end", "0\r\n\n"),
        ("empty size", "\r\nhello\r\n0\r\n\r\n"),
    ])
    func malformedChunkedBodiesGet400(name: String, text: String) {
        guard case .invalid(let rejection) = Self.scan(text) else {
            Issue.record("\(name) accepted: \(Self.scan(text))")
            return
        }
        #expect(rejection.status == .badRequest, "\(name)")
    }

    // MARK: The upstream head

    static func upstream(_ text: String, client: String? = "127.0.0.1") throws -> String {
        let (head, _) = try Self.head(text)
        let framing = try HTTPRequestFraming.validate(
            version: head.version, method: head.method, transferEncoding: head.values("transfer-encoding"),
            contentLength: head.contentLength
        ).get()
        var buffer = ByteBuffer()
        HTTPHeaderRewriter.writeUpstreamHead(
            head, framing: framing, connectionTokens: head.connectionOptions.fieldNames,
            client: client.flatMap(IPAddress.init).map(HTTPHeaderRewriter.ForwardingElements.init(client:)),
            into: &buffer)
        return String(buffer: buffer)
    }

    @Test func upstreamHeadIsSplicedFromTheClientHead() throws {
        let text = try Self.upstream(
            "PUT /p?q HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\n"
                + "X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: https\r\n"
                + "Expect: 100-continue\r\nContent-Length: 3\r\nVia: 1.0 edge\r\nUser-Agent: t\r\n\r\n")
        #expect(
            text
                == "PUT /p?q HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\ncontent-length: 3\r\n"
                + "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nforwarded: for=127.0.0.1;proto=http\r\n"
                + "x-forwarded-proto: http\r\nvia: 1.0 edge, 1.0 fulcrum\r\n\r\n")
    }

    @Test func hostIsNeverDroppedByConnection() throws {
        let text = try Self.upstream("GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n", client: nil)
        #expect(text == "GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-proto: http\r\nvia: 1.1 fulcrum\r\n\r\n")
    }

    @Test func chunkedFramingIsSetAgain() throws {
        let text = try Self.upstream(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nTE: trailers\r\n\r\n", client: nil)
        #expect(
            text
                == "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\nx-forwarded-proto: http\r\n"
                + "via: 1.1 fulcrum\r\n\r\n")
    }

    @Test func forwardedQuotesAndBracketsIPv6() throws {
        let text = try Self.upstream("GET / HTTP/1.1\r\nHost: x\r\n\r\n", client: "2001:db8::1")
        #expect(text.contains("\r\nforwarded: for=\"[2001:db8::1]\";proto=http\r\n"))
        #expect(text.contains("\r\nx-forwarded-for: 2001:db8::1\r\n"))
    }

    /// IPv4 elements are written digit by digit: every octet width, and the same text as `IPAddress.description`.
    @Test(arguments: ["0.0.0.0", "9.10.99.100", "255.255.255.255", "192.168.1.20", "10.0.0.1"])
    func forwardedWritesIPv4AsDottedDecimal(_ address: String) throws {
        let text = try Self.upstream("GET / HTTP/1.1\r\nHost: x\r\n\r\n", client: address)
        #expect(IPAddress(address)?.description == address)
        #expect(text.contains("\r\nx-forwarded-for: \(address)\r\n"))
        #expect(text.contains("\r\nforwarded: for=\(address);proto=http\r\n"))
    }

    // MARK: Response heads

    static func response(_ text: String) -> HTTPResponseHeadParser.Result {
        var parser = HTTPResponseHeadParser()
        return parser.parse(ByteBuffer(string: text))
    }

    @Test func parsesStatusLinesWithAndWithoutReason() {
        for (text, status, reason) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "OK"),
            ("HTTP/1.0 404 Not Found Here\r\n\r\n", 404, "Not Found Here"), ("HTTP/1.1 204\r\n\r\n", 204, ""),
            ("HTTP/1.1 500 \r\n\r\n", 500, ""),
        ] {
            guard case .complete(let head, let length) = Self.response(text) else {
                Issue.record("not parsed: \(text.debugDescription) → \(Self.response(text))")
                continue
            }
            #expect(head.status == status)
            #expect(head.string(head.reasonRange) == reason)
            #expect(length == text.utf8.count - (text.hasSuffix("ok") ? 2 : 0))
        }
    }

    @Test(arguments: [
        "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nX : y\r\n\r\n", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 O\u{1}K\r\n\r\n", "HTTP/1.1 200 OK\nX: y\r\n\r\n",
    ])
    func malformedResponseHeadsAreInvalid(text: String) {
        guard case .invalid = Self.response(text) else {
            Issue.record("accepted: \(text.debugDescription) → \(Self.response(text))")
            return
        }
    }

    @Test func responseLimits() {
        let many = (0...HTTPLimits.maxResponseHeaderCount).map { "X-\($0): v\r\n" }.joined()
        guard case .invalid = Self.response("HTTP/1.1 200 OK\r\n\(many)\r\n") else {
            Issue.record("too many response fields accepted")
            return
        }
        let big = String(repeating: "a", count: HTTPLimits.maxResponseHeaderBytes)
        guard case .invalid = Self.response("HTTP/1.1 200 OK\r\nX: \(big)") else {
            Issue.record("oversized response head awaited")
            return
        }
        guard case .incomplete = Self.response("HTTP/1.1 200 OK\r\nX: y\r\n") else {
            Issue.record("a partial response head is not incomplete")
            return
        }
    }

    @Test func chunkDataIsReportedForUnwrapping() {
        var scanner = HTTPChunkedScanner()
        var data: [Range<Int>] = []
        let bytes = Array("3;x\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".utf8)
        let outcome = bytes.withUnsafeBytes { scanner.scan($0) { data.append($0) } }
        #expect(outcome == .body(count: bytes.count, ended: true))
        #expect(data.map { String(decoding: bytes[$0], as: UTF8.self) } == ["abc", "de"])
    }

    // MARK: Fuzzing

    /// SplitMix64: a fixed seed makes every run test the same inputs (a failure can be replayed).
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let corpus: [String] = [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /upload?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nCookie: a=b; c=\"d\"\r\n\r\n"
            + "5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        "PUT /p HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\nabc",
        "\r\nHEAD /h HTTP/1.1\r\nExpect: 100-continue\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    ]

    /// 1–4 random edits: a byte replaced, a delimiter inserted, a byte removed, a truncation, a run doubled.
    static func mutate(_ text: String, using random: inout SeededGenerator) -> [UInt8] {
        var bytes = Array(text.utf8)
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let position = Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0: bytes[position] = UInt8.random(in: 0...255, using: &random)
            case 1: bytes.insert(Array("\r\n: ;\t0\0\u{7F}".utf8).randomElement(using: &random)!, at: position)
            case 2: if bytes.count > 1 { bytes.remove(at: position) }
            case 3: bytes.removeLast(Int.random(in: 0..<bytes.count, using: &random))
            default: bytes.insert(contentsOf: bytes[position...].prefix(8), at: position)
            }
            if bytes.isEmpty { bytes = [UInt8(ascii: "H")] }
        }
        return bytes
    }

    static let responseCorpus: [String] = [
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 a\r\n\r\nok",
        "HTTP/1.0 404 Not Found\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
        "HTTP/1.1 204\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ]

    @Test func mutatedResponsesNeverCrashAndFailCleanly() {
        var random = SeededGenerator(state: 0xBAC_CE4D)
        let started = ContinuousClock.now
        var outcomes = (complete: 0, incomplete: 0, invalid: 0)
        for _ in 0..<10_000 where ContinuousClock.now - started < .seconds(20) {
            let bytes = Self.mutate(Self.responseCorpus.randomElement(using: &random)!, using: &random)
            var parser = HTTPResponseHeadParser()
            switch parser.parse(ByteBuffer(bytes: bytes)) {
            case .incomplete: outcomes.incomplete += 1
            case .invalid: outcomes.invalid += 1
            case .complete(let head, let length):
                outcomes.complete += 1
                let count = head.bytes.readableBytes
                #expect(length <= bytes.count && count <= length)
                #expect((100...999).contains(head.status) && head.reasonRange.upperBound <= count)
                #expect(head.fields.allSatisfy { $0.name.upperBound <= count && $0.value.upperBound <= count })
            }
        }
        #expect(outcomes.complete > 50 && outcomes.incomplete > 50 && outcomes.invalid > 50, "\(outcomes)")
    }

    /// Mutated and truncated requests: every outcome is incomplete, a head whose ranges lie inside its
    /// bytes, or a 400/431 — never a crash. The chunked scanner gets the bytes after the head the same way.
    @Test func mutatedRequestsNeverCrashAndFailCleanly() {
        var random = SeededGenerator(state: 0x5EED_F00D)
        let started = ContinuousClock.now
        var outcomes = (complete: 0, incomplete: 0, invalid: 0)
        for _ in 0..<20_000 where ContinuousClock.now - started < .seconds(20) {
            let bytes = Self.mutate(Self.corpus.randomElement(using: &random)!, using: &random)
            var parser = HTTPRequestHeadParser()
            switch parser.parse(ByteBuffer(bytes: bytes)) {
            case .incomplete:
                outcomes.incomplete += 1
            case .invalid(let rejection):
                outcomes.invalid += 1
                #expect(rejection.status == .badRequest || rejection.status == .requestHeaderFieldsTooLarge)
            case .complete(let head, let length):
                outcomes.complete += 1
                let count = head.bytes.readableBytes
                #expect(length <= bytes.count && count <= length)
                #expect(head.targetRange.upperBound <= count && !head.targetRange.isEmpty)
                #expect(head.fields.allSatisfy { $0.name.upperBound <= count && $0.value.upperBound <= count })
                var scanner = HTTPChunkedScanner()
                switch bytes[length...].withUnsafeBytes({ scanner.scan($0) }) {
                case .body(let scanned, _): #expect(scanned <= bytes.count - length)
                case .invalid(let rejection):
                    #expect(rejection.status == .badRequest || rejection.status == .requestHeaderFieldsTooLarge)
                }
            }
        }
        // The mutations must reach every outcome, or the loop tests less than it claims.
        #expect(outcomes.complete > 100 && outcomes.incomplete > 100 && outcomes.invalid > 100, "\(outcomes)")
    }
}
