import NIOCore
import NIOHTTP1

/// One header field of a parsed head: byte ranges into `HTTPParsedRequestHead.bytes` (value without OWS).
struct HTTPFieldRange {
    var name: Range<Int>
    var value: Range<Int>
    /// Just past the field line's CRLF: the next field's line starts here.
    var lineEnd: Int
}

/// A message head parsed in place: its bytes and where every field lies. Nothing is copied into
/// `String`s; the proxy reads the few fields it needs and splices the head it forwards from the ranges.
protocol HTTPParsedHead {
    /// From the start line to the empty line that ends the head (both included), reader index 0.
    var bytes: ByteBuffer { get }
    var fields: [HTTPFieldRange] { get }
    /// Which of the fields the proxy interprets are present (found while parsing, so that a head without
    /// them costs no further search).
    var known: HTTPKnownFields { get }
}

/// Fields the proxy interprets, noted per head by the parser.
struct HTTPKnownFields: OptionSet {
    let rawValue: UInt8
    static let contentLength = HTTPKnownFields(rawValue: 1)
    static let transferEncoding = HTTPKnownFields(rawValue: 2)
    static let connection = HTTPKnownFields(rawValue: 4)
    static let expect = HTTPKnownFields(rawValue: 8)

    /// The flag for a field name, if it is one of these.
    static func of(_ name: UnsafeRawBufferPointer) -> HTTPKnownFields {
        switch name.count {
        case 6 where name.equalsLowercase("expect"): return .expect
        case 10 where name.equalsLowercase("connection"): return .connection
        case 14 where name.equalsLowercase("content-length"): return .contentLength
        case 17 where name.equalsLowercase("transfer-encoding"): return .transferEncoding
        default: return []
        }
    }
}

/// A message's Content-Length fields, read together.
enum HTTPContentLength: Equatable {
    case absent
    case value(Int)
    /// Not a single non-negative decimal length (RFC 9110 §8.6): the message cannot be delimited safely.
    case invalid(String)
}

/// The options of a message's Connection fields.
struct HTTPConnectionOptions {
    var close = false
    var keepAlive = false
    /// Other tokens, lowercased: names of fields meant for this connection only.
    var fieldNames: [String] = []
}

extension HTTPParsedHead {
    /// Whether field `index` is named `lowercaseName` (ASCII, compared case-insensitively).
    func field(_ index: Int, isNamed lowercaseName: StaticString) -> Bool {
        let range = fields[index].name
        guard range.count == lowercaseName.utf8CodeUnitCount else { return false }
        return bytes.withUnsafeReadableBytes { raw in
            lowercaseName.withUTF8Buffer { name in
                var offset = 0
                for position in range {
                    guard raw[position].asciiLowercased == name[offset] else { return false }
                    offset += 1
                }
                return true
            }
        }
    }

    /// The values of every field named `lowercaseName`, in order (allocates: for the rarely present fields).
    func values(_ lowercaseName: StaticString) -> [String] {
        var result: [String] = []
        for index in fields.indices where field(index, isNamed: lowercaseName) {
            result.append(string(fields[index].value))
        }
        return result
    }

    /// Whether some field is named `lowercaseName`.
    func contains(_ lowercaseName: StaticString) -> Bool {
        fields.indices.contains { field($0, isNamed: lowercaseName) }
    }

    /// The bytes of `range` as a `String` (header bytes are ASCII or opaque; invalid UTF-8 is repaired).
    func string(_ range: Range<Int>) -> String {
        bytes.getString(at: range.lowerBound, length: range.count) ?? ""
    }

    /// The value of the first field whose name equals `name` case-insensitively (a configured name).
    func firstValue(named name: String) -> Range<Int>? {
        let wanted = name.utf8.map(\.asciiLowercased)
        return bytes.withUnsafeReadableBytes { raw in
            for field in fields where field.name.count == wanted.count {
                var equal = true
                for (offset, position) in field.name.enumerated() where raw[position].asciiLowercased != wanted[offset]
                {
                    equal = false
                    break
                }
                if equal { return field.value }
            }
            return nil
        }
    }

    /// The comma-separated elements of every field named `lowercaseName`, without surrounding whitespace
    /// (empty elements included), as byte ranges.
    func elements(_ lowercaseName: StaticString, _ body: (UnsafeRawBufferPointer) -> Void) {
        bytes.withUnsafeReadableBytes { raw in
            for index in fields.indices where field(index, isNamed: lowercaseName) {
                let value = fields[index].value
                var start = value.lowerBound
                while start <= value.upperBound {
                    var end = start
                    while end < value.upperBound && raw[end] != UInt8(ascii: ",") { end += 1 }
                    var first = start
                    var last = end
                    while first < last && (raw[first] == .space || raw[first] == .tab) { first += 1 }
                    while last > first && (raw[last - 1] == .space || raw[last - 1] == .tab) { last -= 1 }
                    body(UnsafeRawBufferPointer(rebasing: raw[first..<last]))
                    start = end + 1
                }
            }
        }
    }

    /// The Connection options (`close`, `keep-alive`, field names), read from the bytes.
    var connectionOptions: HTTPConnectionOptions {
        var options = HTTPConnectionOptions()
        guard known.contains(.connection) else { return options }
        elements("connection") { token in
            if token.count == 5 && token.equalsLowercase("close") {
                options.close = true
            } else if token.count == 10 && token.equalsLowercase("keep-alive") {
                options.keepAlive = true
            } else if !token.isEmpty {
                options.fieldNames.append(String(decoding: token, as: UTF8.self).lowercased())
            }
        }
        return options
    }

    /// The length every Content-Length field agrees on, read from the bytes: a list (`5, 5`) or repeated
    /// fields must all say the same, in at most 18 digits.
    var contentLength: HTTPContentLength {
        guard known.contains(.contentLength) else { return .absent }
        var length: Int?
        var problem: String?
        elements("content-length") { element in
            guard problem == nil else { return }
            guard !element.isEmpty, element.count <= 18, element.allSatisfy(\.isDigit) else {
                problem = element.isEmpty ? "conflicting Content-Length" : "invalid Content-Length"
                return
            }
            var value = 0
            for digit in element { value = value * 10 + Int(digit - UInt8(ascii: "0")) }
            if let length, length != value { problem = "conflicting Content-Length" }
            length = value
        }
        if let problem { return .invalid(problem) }
        return length.map { .value($0) } ?? .invalid("invalid Content-Length")
    }
}

/// A request head parsed in place.
struct HTTPParsedRequestHead: HTTPParsedHead {
    let bytes: ByteBuffer
    let method: HTTPMethod
    let methodRange: Range<Int>
    let targetRange: Range<Int>
    let version: HTTPVersion
    let fields: [HTTPFieldRange]
    let known: HTTPKnownFields

    /// The request target's bytes.
    var target: String { string(targetRange) }
}

/// A response head parsed in place.
struct HTTPParsedResponseHead: HTTPParsedHead {
    let bytes: ByteBuffer
    let version: HTTPVersion
    let status: Int
    /// The reason phrase (possibly empty).
    let reasonRange: Range<Int>
    let fields: [HTTPFieldRange]
    let known: HTTPKnownFields
}

/// Parses HTTP/1.x request heads straight from the client's bytes (RFC 9112 §2–5), strictly: CRLF line
/// ends, no whitespace before a field's colon, no obs-fold, no control characters. Anything else is a
/// clean `HTTPRejection` (400, or 431 past `HTTPLimits`), never a crash. The search for the head's end
/// resumes where the last call stopped, so a head that arrives byte by byte costs linear time.
struct HTTPRequestHeadParser {
    enum Result {
        /// More bytes are needed.
        case incomplete
        /// A whole head, taking `length` bytes from the reader index (leading empty lines included).
        case complete(HTTPParsedRequestHead, length: Int)
        case invalid(HTTPRejection)
    }

    let maxHeadBytes: Int
    let maxFieldCount: Int
    /// Bytes already searched for the end of the head without finding it.
    private var searched = 0

    init(maxHeadBytes: Int = HTTPLimits.maxRequestHeaderBytes, maxFieldCount: Int = HTTPLimits.maxRequestHeaderCount) {
        self.maxHeadBytes = maxHeadBytes
        self.maxFieldCount = maxFieldCount
    }

    /// Looks for one head at `buffer`'s reader index. The buffer is not modified.
    mutating func parse(_ buffer: ByteBuffer) -> Result {
        let located = buffer.withUnsafeReadableBytes { HTTPHeadScanner.locate($0, searched: &searched) }
        guard let located else {
            if buffer.readableBytes > maxHeadBytes { return .invalid(Self.tooLarge) }
            return .incomplete
        }
        searched = 0
        guard located.end - located.start <= maxHeadBytes else { return .invalid(Self.tooLarge) }
        let head = buffer.getSlice(at: buffer.readerIndex + located.start, length: located.end - located.start)!
        switch Self.parseHead(head, maxFieldCount: maxFieldCount) {
        case .success(let parsed): return .complete(parsed, length: located.end)
        case .failure(let rejection): return .invalid(rejection)
        }
    }

    static let tooLarge = HTTPRejection(.requestHeaderFieldsTooLarge, "request headers too large")
    static let tooMany = HTTPRejection(.requestHeaderFieldsTooLarge, "too many request header fields")

    /// Parses a complete head (it ends with CRLF CRLF).
    static func parseHead(_ head: ByteBuffer, maxFieldCount: Int) -> Swift.Result<HTTPParsedRequestHead, HTTPRejection>
    {
        typealias Line = (method: Range<Int>, target: Range<Int>, major: Int, minor: Int)
        var fields: [HTTPFieldRange] = []
        fields.reserveCapacity(16)
        var known = HTTPKnownFields()
        let outcome: Swift.Result<Line, HTTPRejection> = head.withUnsafeReadableBytes { raw in
            func fail(_ message: String) -> Swift.Result<Line, HTTPRejection> {
                .failure(HTTPRejection(.badRequest, "malformed request (\(message))"))
            }
            // Request line: method SP target SP HTTP/d.d CRLF
            var index = 0
            while raw[index].isTokenCharacter { index += 1 }
            let method = 0..<index
            guard !method.isEmpty, raw[index] == .space else { return fail("request line") }
            index += 1
            let targetStart = index
            while raw[index] > .space && raw[index] != 0x7F { index += 1 }
            let target = targetStart..<index
            guard !target.isEmpty, raw[index] == .space else { return fail("request target") }
            index += 1
            guard index + 9 < raw.count, raw[index] == UInt8(ascii: "H"), raw[index + 1] == UInt8(ascii: "T"),
                raw[index + 2] == UInt8(ascii: "T"), raw[index + 3] == UInt8(ascii: "P"),
                raw[index + 4] == UInt8(ascii: "/"), raw[index + 5].isDigit, raw[index + 6] == UInt8(ascii: "."),
                raw[index + 7].isDigit, raw[index + 8] == .cr, raw[index + 9] == .lf
            else { return fail("HTTP version") }
            let major = Int(raw[index + 5] - UInt8(ascii: "0"))
            let minor = Int(raw[index + 7] - UInt8(ascii: "0"))
            index += 10
            switch HTTPHeadScanner.parseFields(
                raw, from: index, maxFieldCount: maxFieldCount, into: &fields, known: &known)
            {
            case .complete: break
            case .malformed(let message): return fail(message)
            case .tooMany: return .failure(tooMany)
            }
            return .success((method, target, major, minor))
        }
        switch outcome {
        case .failure(let rejection):
            return .failure(rejection)
        case .success(let line):
            return .success(
                HTTPParsedRequestHead(
                    bytes: head, method: method(head, line.method), methodRange: line.method,
                    targetRange: line.target, version: HTTPVersion(major: line.major, minor: line.minor),
                    fields: fields, known: known))
        }
    }

    /// The method of the request line; the common ones without building a `String`.
    private static func method(_ head: ByteBuffer, _ range: Range<Int>) -> HTTPMethod {
        let known: HTTPMethod? = head.withUnsafeReadableBytes { raw in
            let bytes = UnsafeRawBufferPointer(rebasing: raw[range])
            switch bytes.count {
            case 3:
                if bytes.elementsEqual("GET".utf8) { return .GET }
                if bytes.elementsEqual("PUT".utf8) { return .PUT }
            case 4:
                if bytes.elementsEqual("POST".utf8) { return .POST }
                if bytes.elementsEqual("HEAD".utf8) { return .HEAD }
            case 6:
                if bytes.elementsEqual("DELETE".utf8) { return .DELETE }
            default:
                break
            }
            return nil
        }
        return known ?? HTTPMethod(rawValue: head.getString(at: range.lowerBound, length: range.count) ?? "")
    }
}

/// Parses HTTP/1.x response heads from a backend's bytes, as strictly as requests; anything else is an
/// invalid response (the client gets 502). Limits: `HTTPLimits.maxResponseHeaderBytes` and `…Count`.
struct HTTPResponseHeadParser {
    enum Result {
        case incomplete
        case complete(HTTPParsedResponseHead, length: Int)
        case invalid(String)
    }

    private var searched = 0

    /// Looks for one head at `buffer`'s reader index. The buffer is not modified.
    mutating func parse(_ buffer: ByteBuffer) -> Result {
        let located = buffer.withUnsafeReadableBytes { HTTPHeadScanner.locate($0, searched: &searched) }
        guard let located else {
            if buffer.readableBytes > HTTPLimits.maxResponseHeaderBytes { return .invalid("response head too large") }
            return .incomplete
        }
        searched = 0
        guard located.end - located.start <= HTTPLimits.maxResponseHeaderBytes else {
            return .invalid("response head too large")
        }
        let head = buffer.getSlice(at: buffer.readerIndex + located.start, length: located.end - located.start)!
        var fields: [HTTPFieldRange] = []
        fields.reserveCapacity(16)
        var known = HTTPKnownFields()
        typealias Line = (major: Int, minor: Int, status: Int, reason: Range<Int>)
        let line: Swift.Result<Line, HTTPFieldError> = head.withUnsafeReadableBytes { raw in
            // Status line: HTTP/d.d SP ddd [SP reason] CRLF
            guard raw.count > 13, raw[0] == UInt8(ascii: "H"), raw[1] == UInt8(ascii: "T"),
                raw[2] == UInt8(ascii: "T"), raw[3] == UInt8(ascii: "P"), raw[4] == UInt8(ascii: "/"),
                raw[5].isDigit, raw[6] == UInt8(ascii: "."), raw[7].isDigit, raw[8] == .space, raw[9].isDigit,
                raw[10].isDigit, raw[11].isDigit
            else { return .failure(.malformed("status line")) }
            let status = Int(raw[9] - 48) * 100 + Int(raw[10] - 48) * 10 + Int(raw[11] - 48)
            var index = 12
            if raw[index] == .space { index += 1 }
            let reasonStart = index
            while raw[index] != .cr {
                guard raw[index] >= .space || raw[index] == .tab, raw[index] != 0x7F else {
                    return .failure(.malformed("reason phrase"))
                }
                index += 1
            }
            let reason = reasonStart..<index
            guard raw[index + 1] == .lf, reasonStart > 12 || reason.isEmpty else {
                return .failure(.malformed("status line"))
            }
            index += 2
            switch HTTPHeadScanner.parseFields(
                raw, from: index, maxFieldCount: HTTPLimits.maxResponseHeaderCount, into: &fields, known: &known)
            {
            case .complete: break
            case .malformed(let message): return .failure(.malformed(message))
            case .tooMany: return .failure(.malformed("too many header fields"))
            }
            return .success((Int(raw[5] - 48), Int(raw[7] - 48), status, reason))
        }
        switch line {
        case .failure(.malformed(let message)):
            return .invalid(message)
        case .success(let line):
            return .complete(
                HTTPParsedResponseHead(
                    bytes: head, version: HTTPVersion(major: line.major, minor: line.minor), status: line.status,
                    reasonRange: line.reason, fields: fields, known: known),
                length: located.end)
        }
    }
}

enum HTTPFieldError: Error {
    case malformed(String)
}

/// What request and response heads share: finding the end of a head and parsing its fields.
enum HTTPHeadScanner {
    enum FieldsOutcome {
        case complete
        case malformed(String)
        case tooMany
    }

    /// Where the head at the start of `raw` begins (after empty lines) and ends (after CRLF CRLF), or nil.
    /// The search starts where the last unsuccessful one stopped (`searched`), so a head that arrives
    /// byte by byte costs linear time; it is reset when a head is found.
    static func locate(_ raw: UnsafeRawBufferPointer, searched: inout Int) -> (start: Int, end: Int)? {
        var start = 0
        while start + 1 < raw.count, raw[start] == .cr, raw[start + 1] == .lf { start += 2 }
        var index = max(start, searched - 3)
        while index + 3 < raw.count {
            if raw[index + 3] != .lf {
                index += raw[index + 3] == .cr ? 1 : 4
                continue
            }
            if raw[index] == .cr && raw[index + 1] == .lf && raw[index + 2] == .cr { return (start, index + 4) }
            index += 1
        }
        searched = raw.count
        return nil
    }

    /// Parses the fields from `index` to the empty line. `raw` must end with the head's CRLF CRLF, so no
    /// bounds checks are needed before a CR is found.
    static func parseFields(
        _ raw: UnsafeRawBufferPointer, from start: Int, maxFieldCount: Int, into fields: inout [HTTPFieldRange],
        known: inout HTTPKnownFields
    ) -> FieldsOutcome {
        var index = start
        while raw[index] != .cr {
            let nameStart = index
            while raw[index].isTokenCharacter { index += 1 }
            guard index > nameStart, raw[index] == UInt8(ascii: ":") else {
                return .malformed(raw[nameStart] == .space || raw[nameStart] == .tab ? "obs-fold" : "header name")
            }
            let name = nameStart..<index
            known.formUnion(HTTPKnownFields.of(UnsafeRawBufferPointer(rebasing: raw[name])))
            index += 1
            while raw[index] == .space || raw[index] == .tab { index += 1 }
            let valueStart = index
            var valueEnd = index
            while raw[index] != .cr {
                let byte = raw[index]
                guard byte >= .space || byte == .tab, byte != 0x7F else { return .malformed("header value") }
                index += 1
                if byte != .space && byte != .tab { valueEnd = index }
            }
            guard raw[index + 1] == .lf else { return .malformed("bare CR") }
            index += 2
            guard fields.count < maxFieldCount else { return .tooMany }
            fields.append(HTTPFieldRange(name: name, value: valueStart..<valueEnd, lineEnd: index))
        }
        guard raw[index + 1] == .lf, index + 2 == raw.count else { return .malformed("end of head") }
        return .complete
    }
}

extension UInt8 {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")

    var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }

    /// RFC 9110 `tchar`: the characters of methods and field names (a bit set per 64 byte values).
    var isTokenCharacter: Bool {
        if self < 64 { return (0x03ff_6cfa_0000_0000 as UInt64) >> self & 1 == 1 }
        if self < 128 { return (0x57ff_ffff_c7ff_fffe as UInt64) >> (self - 64) & 1 == 1 }
        return false
    }
}
