import NIOHTTP1

/// How a request's body is delimited, decided once from its head.
enum HTTPRequestFraming: Equatable {
    /// No body.
    case none
    case contentLength(Int)
    case chunked

    /// Checks a request head for ambiguous framing (request smuggling) and for what the proxy does not
    /// serve. Any ambiguity is refused: a proxy and its backend must agree where every request ends.
    /// `transferEncoding` holds the values of every such field, in order.
    static func validate(
        version: HTTPVersion, method: HTTPMethod, transferEncoding: [String], contentLength: HTTPContentLength
    ) -> Result<HTTPRequestFraming, HTTPRejection> {
        guard version.major == 1, version.minor <= 1 else {
            return .failure(HTTPRejection(.httpVersionNotSupported, "HTTP version not supported"))
        }
        if method == .CONNECT {
            return .failure(HTTPRejection(.methodNotAllowed, "CONNECT is not supported"))
        }
        if !transferEncoding.isEmpty {
            if contentLength != .absent {
                return .failure(HTTPRejection(.badRequest, "both Content-Length and Transfer-Encoding"))
            }
            guard version.minor == 1 else {
                return .failure(HTTPRejection(.badRequest, "Transfer-Encoding in an HTTP/1.0 request"))
            }
            let transferCodings = tokens(transferEncoding)
            guard transferCodings.count == 1, transferCodings[0].lowercased() == "chunked" else {
                return .failure(HTTPRejection(.badRequest, "Transfer-Encoding other than chunked"))
            }
            return .success(.chunked)
        }
        switch contentLength {
        case .absent: return .success(.none)
        case .value(let length): return .success(.contentLength(length))
        case .invalid(let problem): return .failure(HTTPRejection(.badRequest, problem))
        }
    }

    /// The comma-separated elements of every value of a header, trimmed; empty elements kept so that
    /// `Content-Length: 5,` is not mistaken for a single length.
    static func tokens(_ values: [String]) -> [Substring] {
        var result: [Substring] = []
        for value in values {
            for element in value.split(separator: ",", omittingEmptySubsequences: false) {
                result.append(element.trimmingHTTPWhitespace())
            }
        }
        return result
    }
}

/// Why the proxy answers a request itself instead of forwarding it.
struct HTTPRejection: Error, Equatable {
    var status: HTTPResponseStatus
    var message: String

    init(_ status: HTTPResponseStatus, _ message: String) {
        self.status = status
        self.message = message
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (RFC 9110 OWS).
    func trimmingHTTPWhitespace() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return result
    }
}
