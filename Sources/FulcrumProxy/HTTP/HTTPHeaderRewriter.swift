import FulcrumConfig
import FulcrumCore
import NIOCore
import NIOHTTP1

/// Header changes a proxy makes in both directions: hop-by-hop fields removed, forwarding fields added.
enum HTTPHeaderRewriter {
    /// What `writeClientResponseHead` says in the Connection field, if anything.
    enum ConnectionField {
        case close, keepAlive
    }

    /// Writes the response head for the client, spliced from the backend's `head`: the status line in the
    /// client's `version` with the backend's code and reason, every field copied except the hop-by-hop
    /// ones and those the Connection field names (and Content-Length when the body is re-framed), `Via`
    /// as one line with this hop appended, then the sticky cookie, Connection and chunked framing.
    static func writeClientResponseHead(
        _ head: HTTPParsedResponseHead, version: HTTPVersion, keepContentLength: Bool, setCookie: String?,
        connection: ConnectionField?, chunked: Bool, into buffer: inout ByteBuffer
    ) {
        buffer.reserveCapacity(minimumWritableBytes: head.bytes.readableBytes + 96)
        buffer.writeStaticString(version.major == 1 && version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        let status = head.status
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(status / 100 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(status / 10 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(status % 10))
        buffer.writeInteger(UInt8.space)
        let connectionTokens = head.connectionOptions.fieldNames
        var via: [Range<Int>] = []
        head.bytes.withUnsafeReadableBytes { raw in
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.reasonRange]))
            buffer.writeStaticString("\r\n")
            var kept = FieldRun()
            for field in head.fields {
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                let dropped: Bool
                if isHopByHop(name) {
                    dropped = true
                } else if name.count == 3 && name.equalsLowercase("via") {
                    via.append(field.value)
                    dropped = true
                } else if !keepContentLength && name.count == 14 && name.equalsLowercase("content-length") {
                    dropped = true
                } else {
                    dropped =
                        !connectionTokens.isEmpty
                        && connectionTokens.contains(where: { name.equalsLowercase(string: $0) })
                }
                if dropped {
                    kept.flush(raw, into: &buffer)
                } else {
                    kept.add(field)
                }
            }
            kept.flush(raw, into: &buffer)
            buffer.writeStaticString("via: ")
            for range in via {
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[range]))
                buffer.writeStaticString(", ")
            }
        }
        buffer.writeString(Self.via(head.version))
        buffer.writeStaticString("\r\n")
        if let setCookie {
            buffer.writeStaticString("set-cookie: ")
            buffer.writeString(setCookie)
            buffer.writeStaticString("\r\n")
        }
        switch connection {
        case .close?: buffer.writeStaticString("connection: close\r\n")
        case .keepAlive?: buffer.writeStaticString("connection: keep-alive\r\n")
        case nil: break
        }
        if chunked { buffer.writeStaticString("transfer-encoding: chunked\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// Whether `name` (any case) is a field that describes one connection, not the message (RFC 9110
    /// §7.6.1: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade), or
    /// proxy credentials, which are meant for this proxy. Transfer-Encoding is set again from the framing.
    static func isHopByHop(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 2: return name.equalsLowercase("te")
        case 7: return name.equalsLowercase("trailer") || name.equalsLowercase("upgrade")
        case 10: return name.equalsLowercase("connection") || name.equalsLowercase("keep-alive")
        case 16: return name.equalsLowercase("proxy-connection")
        case 17: return name.equalsLowercase("transfer-encoding")
        case 18: return name.equalsLowercase("proxy-authenticate")
        case 19: return name.equalsLowercase("proxy-authorization")
        default: return false
        }
    }

    /// Writes the head sent to the backend, spliced from the client's `head`: the request line as HTTP/1.1
    /// (keep-alive), every field copied except the hop-by-hop ones, those the Connection field names
    /// (`connectionTokens`, lowercased; never Host), `Expect` (Fulcrum answers 100 itself) and the framing
    /// fields, which are set again from the validated `framing`; then the forwarding fields, each as one
    /// line that carries the client's earlier values followed by this hop's element.
    static func writeUpstreamHead(
        _ head: HTTPParsedRequestHead, framing: HTTPRequestFraming, connectionTokens: [String],
        client: ForwardingElements?, into buffer: inout ByteBuffer
    ) {
        buffer.reserveCapacity(minimumWritableBytes: head.bytes.readableBytes + 160)
        var forwardedFor: [Range<Int>] = []
        var forwarded: [Range<Int>] = []
        var via: [Range<Int>] = []
        head.bytes.withUnsafeReadableBytes { raw in
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.methodRange]))
            buffer.writeInteger(UInt8.space)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.targetRange]))
            buffer.writeStaticString(" HTTP/1.1\r\n")
            var kept = FieldRun()
            for field in head.fields {
                let name = UnsafeRawBufferPointer(rebasing: raw[field.name])
                let kind = FieldKind(name)
                switch kind {
                case .dropped:
                    break
                case .forwardedFor:
                    forwardedFor.append(field.value)
                case .forwarded:
                    forwarded.append(field.value)
                case .via:
                    via.append(field.value)
                case .host, .other:
                    if kind == .other && !connectionTokens.isEmpty
                        && connectionTokens.contains(where: { name.equalsLowercase(string: $0) })
                    {
                        break
                    }
                    kept.add(field)
                    continue
                }
                kept.flush(raw, into: &buffer)
            }
            kept.flush(raw, into: &buffer)
            /// Writes `name` and the elements the request brought, and a separator when `adding` one more;
            /// false when there is nothing to write at all. (The caller writes its element and the line end:
            /// a closure for it would be allocated on every request.)
            func startList(_ name: StaticString, _ existing: [Range<Int>], adding: Bool) -> Bool {
                guard !existing.isEmpty || adding else { return false }
                buffer.writeStaticString(name)
                var first = true
                for range in existing {
                    if !first { buffer.writeStaticString(", ") }
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[range]))
                    first = false
                }
                if adding && !first { buffer.writeStaticString(", ") }
                return true
            }
            switch framing {
            case .none: break
            case .contentLength(let length):
                buffer.writeStaticString("content-length: ")
                buffer.writeString(String(length))
                buffer.writeStaticString("\r\n")
            case .chunked: buffer.writeStaticString("transfer-encoding: chunked\r\n")
            }
            if startList("x-forwarded-for: ", forwardedFor, adding: client != nil) {
                client?.writeForwardedFor(into: &buffer)
                buffer.writeStaticString("\r\n")
            }
            if startList("forwarded: ", forwarded, adding: client != nil) {
                client?.writeForwarded(into: &buffer)
                buffer.writeStaticString("\r\n")
            }
            buffer.writeStaticString("x-forwarded-proto: http\r\n")
            _ = startList("via: ", via, adding: true)
            buffer.writeString(Self.via(head.version))
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    /// Consecutive kept field lines, copied with one write as they came (original spacing included).
    private struct FieldRun {
        private var start = -1
        private var end = -1

        mutating func add(_ field: HTTPFieldRange) {
            if start < 0 { start = field.name.lowerBound }
            end = field.lineEnd
        }

        mutating func flush(_ raw: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
            guard start >= 0 else { return }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
            start = -1
        }
    }

    /// How `writeUpstreamHead` treats a request field, by name.
    private enum FieldKind {
        /// Hop-by-hop, `Expect`, the framing fields and `X-Forwarded-Proto` (set again).
        case dropped
        case forwardedFor, forwarded, via, host, other

        init(_ name: UnsafeRawBufferPointer) {
            switch name.count {
            case 3 where name.equalsLowercase("via"): self = .via
            case 4 where name.equalsLowercase("host"): self = .host
            case 6 where name.equalsLowercase("expect"): self = .dropped
            case 9 where name.equalsLowercase("forwarded"): self = .forwarded
            case 14 where name.equalsLowercase("content-length"): self = .dropped
            case 15 where name.equalsLowercase("x-forwarded-for"): self = .forwardedFor
            case 17 where name.equalsLowercase("x-forwarded-proto"): self = .dropped
            default: self = isHopByHop(name) ? .dropped : .other
            }
        }
    }

    /// The `Via` element for a message received with `version`.
    static func via(_ version: HTTPVersion) -> String {
        version == .http1_1 ? via11 : "\(version.major).\(version.minor) fulcrum"
    }

    private static let via11 = "1.1 fulcrum"

    /// A client's forwarding elements, formatted once per connection without allocating: an IPv4 address
    /// (at most 15 characters) is kept as bytes inline, an IPv6 one as a string.
    struct ForwardingElements {
        /// The dotted-quad text of an IPv4 client, `v4Count` bytes of it.
        private let v4Text: (UInt64, UInt64)
        private let v4Count: Int
        /// The textual IPv6 address; nil for IPv4.
        private let v6Text: String?

        init(client: IPAddress) {
            var text: (UInt64, UInt64) = (0, 0)
            var count = 0
            if case .v4(let address) = client {
                withUnsafeMutableBytes(of: &text) { raw in
                    for shift in stride(from: 24, through: 0, by: -8) {
                        let octet = UInt8(truncatingIfNeeded: address >> UInt32(shift))
                        if octet >= 100 {
                            raw[count] = UInt8(ascii: "0") + octet / 100
                            count += 1
                        }
                        if octet >= 10 {
                            raw[count] = UInt8(ascii: "0") + octet / 10 % 10
                            count += 1
                        }
                        raw[count] = UInt8(ascii: "0") + octet % 10
                        count += 1
                        if shift > 0 {
                            raw[count] = UInt8(ascii: ".")
                            count += 1
                        }
                    }
                }
                v6Text = nil
            } else {
                v6Text = client.description
            }
            v4Text = text
            v4Count = count
        }

        /// The `X-Forwarded-For` element: the address.
        func writeForwardedFor(into buffer: inout ByteBuffer) {
            writeAddress(into: &buffer)
        }

        /// The `Forwarded` element: `for=1.2.3.4;proto=http` (IPv6 quoted and bracketed).
        func writeForwarded(into buffer: inout ByteBuffer) {
            if v6Text != nil {
                buffer.writeStaticString("for=\"[")
                writeAddress(into: &buffer)
                buffer.writeStaticString("]\";proto=http")
            } else {
                buffer.writeStaticString("for=")
                writeAddress(into: &buffer)
                buffer.writeStaticString(";proto=http")
            }
        }

        private func writeAddress(into buffer: inout ByteBuffer) {
            if let v6Text {
                buffer.writeString(v6Text)
            } else {
                withUnsafeBytes(of: v4Text) { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: $0[..<v4Count])) }
            }
        }
    }

    /// The value of cookie `name` in the request's Cookie fields, or nil.
    static func cookie(_ name: String, in head: HTTPParsedRequestHead) -> Substring? {
        for line in head.values("cookie") {
            for pair in line.split(separator: ";") {
                let trimmed = pair.trimmingHTTPWhitespace()
                guard let equals = trimmed.firstIndex(of: "=") else { continue }
                guard trimmed[..<equals].trimmingHTTPWhitespace() == name else { continue }
                var value = trimmed[trimmed.index(after: equals)...].trimmingHTTPWhitespace()
                if value.count >= 2, value.first == "\"", value.last == "\"" {
                    value = value.dropFirst().dropLast()
                }
                return value
            }
        }
        return nil
    }

    /// The hash the configured `hash_key` gives this request; the client address when the request lacks the key.
    static func keyHash(_ key: HashKey, head: HTTPParsedRequestHead, sourceHash: UInt64) -> UInt64 {
        switch key {
        case .source, .flow:
            return sourceHash
        case .header(let name):
            guard let value = head.firstValue(named: name) else { return sourceHash }
            return head.bytes.withUnsafeReadableBytes {
                StableHash.hash(bytes: UnsafeRawBufferPointer(rebasing: $0[value]))
            }
        case .cookie(let name):
            guard let value = cookie(name, in: head) else { return sourceHash }
            return StableHash.hash(bytes: value.utf8)
        case .uri:
            return head.bytes.withUnsafeReadableBytes {
                StableHash.hash(bytes: UnsafeRawBufferPointer(rebasing: $0[head.targetRange]))
            }
        }
    }
}

/// The opaque value of the sticky cookie: the stable hash of the backend's name in hex, the same on every
/// Fulcrum node and free of addresses.
enum StickyCookie {
    static func value(for backend: Backend) -> String {
        let hex = String(StableHash.hash(backend.name), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The candidate the cookie value names, if it is still a candidate of `snapshot`.
    static func backend(named value: Substring, in snapshot: PoolSnapshot) -> Backend? {
        guard value.utf8.count == 16, let id = UInt64(value, radix: 16) else { return nil }
        for candidate in snapshot.candidates where StableHash.hash(candidate.backend.name) == id {
            return candidate.backend
        }
        return nil
    }

    static func setCookie(_ config: StickyCookieConfig, backend: Backend) -> String {
        "\(config.name)=\(value(for: backend)); Path=/; HttpOnly"
    }
}

extension UnsafeRawBufferPointer {
    /// Whether these bytes equal `lowercase` (which has no upper-case letters), ASCII letters in any case.
    func equalsLowercase(_ lowercase: StaticString) -> Bool {
        guard count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            for index in 0..<count where self[index].asciiLowercased != expected[index] { return false }
            return true
        }
    }

    /// Whether these bytes equal `lowercase` (which has no upper-case letters), ASCII letters in any case.
    func equalsLowercase(string lowercase: String) -> Bool {
        guard count == lowercase.utf8.count else { return false }
        var index = 0
        for byte in lowercase.utf8 {
            guard self[index].asciiLowercased == byte else { return false }
            index += 1
        }
        return true
    }
}

extension UInt8 {
    var asciiLowercased: UInt8 { self >= 0x41 && self <= 0x5A ? self | 0x20 : self }
}
