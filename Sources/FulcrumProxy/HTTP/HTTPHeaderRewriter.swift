import FulcrumConfig
import FulcrumCore
import NIOHTTP1

/// Header changes a proxy makes in both directions: hop-by-hop fields removed, forwarding fields added.
enum HTTPHeaderRewriter {
    /// Fields that describe one connection, not the message (RFC 9110 §7.6.1), plus the proxy credentials,
    /// which are meant for this proxy. Transfer-Encoding is set again by the encoder from the framing.
    static let hopByHop: [String] = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authorization", "proxy-authenticate",
    ]

    /// Removes the hop-by-hop fields and every field the Connection header names (except Host, which a
    /// client must not be able to strip on its way to the backend). One pass finds whether there is
    /// anything to remove; most messages carry at most `Connection`.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        var found = false
        for (name, _) in headers where isHopByHop(name) {
            found = true
            break
        }
        guard found else { return }
        if headers.contains(name: "connection") {
            for token in HTTPRequestFraming.tokens(headers["connection"]) where !token.isEmpty {
                let name = token.lowercased()
                if name != "host" { headers.remove(name: name) }
            }
        }
        for name in hopByHop where headers.contains(name: name) {
            headers.remove(name: name)
        }
    }

    /// Whether `name` is one of `hopByHop`, compared case-insensitively without allocating.
    static func isHopByHop(_ name: String) -> Bool {
        let length = name.utf8.count
        guard length >= 2 && length <= 19 else { return false }
        for candidate in hopByHop where candidate.utf8.count == length {
            if name.utf8.elementsEqual(candidate.utf8, by: { $0 | 0x20 == $1 }) { return true }
        }
        return false
    }

    /// The head sent to the backend: HTTP/1.1 (keep-alive), hop-by-hop fields removed, framing set from
    /// the validated `framing`, forwarding fields appended, `Expect` removed (Fulcrum answers 100 itself).
    static func upstreamHead(
        _ head: HTTPRequestHead, framing: HTTPRequestFraming, client: ForwardingElements?
    ) -> HTTPRequestHead {
        var headers = head.headers
        removeHopByHop(&headers)
        headers.remove(name: "expect")
        headers.remove(name: "content-length")
        switch framing {
        case .none: break
        case .contentLength(let length): headers.add(name: "content-length", value: String(length))
        case .chunked: headers.add(name: "transfer-encoding", value: "chunked")
        }
        if let client {
            append(&headers, name: "x-forwarded-for", element: client.forwardedFor)
            append(&headers, name: "forwarded", element: client.forwarded)
        }
        headers.replaceOrAdd(name: "x-forwarded-proto", value: "http")
        append(&headers, name: "via", element: via(head.version))
        return HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: headers)
    }

    /// The `Via` element for a message received with `version`.
    static func via(_ version: HTTPVersion) -> String {
        version == .http1_1 ? via11 : "\(version.major).\(version.minor) fulcrum"
    }

    private static let via11 = "1.1 fulcrum"

    /// A client's forwarding elements, formatted once per connection rather than per request.
    struct ForwardingElements {
        /// The `X-Forwarded-For` element: the address.
        let forwardedFor: String
        /// The `Forwarded` element: `for=1.2.3.4;proto=http` (IPv6 quoted and bracketed).
        let forwarded: String

        init(client: IPAddress) {
            let text = client.description
            forwardedFor = text
            forwarded = "for=\(client.isIPv4 ? text : "\"[\(text)]\"");proto=http"
        }
    }

    /// Appends `element` to a list-valued field, merging existing lines into one so that applications
    /// reading only the first line still see the whole chain.
    static func append(_ headers: inout HTTPHeaders, name: String, element: String) {
        let existing = headers[name]
        guard !existing.isEmpty else {
            headers.add(name: name, value: element)
            return
        }
        headers.replaceOrAdd(name: name, value: (existing + [element]).joined(separator: ", "))
    }

    /// The value of cookie `name` in the request's Cookie fields, or nil.
    static func cookie(_ name: String, in headers: HTTPHeaders) -> Substring? {
        for line in headers["cookie"] {
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
    static func keyHash(_ key: HashKey, head: HTTPRequestHead, sourceHash: UInt64) -> UInt64 {
        switch key {
        case .source, .flow:
            return sourceHash
        case .header(let name):
            guard let value = head.headers.first(name: name) else { return sourceHash }
            return StableHash.hash(value)
        case .cookie(let name):
            guard let value = cookie(name, in: head.headers) else { return sourceHash }
            return StableHash.hash(bytes: value.utf8)
        case .uri:
            return StableHash.hash(head.uri)
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
