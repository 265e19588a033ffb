import NIOCore

/// A request for ``DemoHTTPClient``. Header names and values are plain strings so that callers need not
/// import NIOHTTP1.
public struct DemoRequest: Sendable {
    /// The method, e.g. `"GET"`, `"POST"`.
    public var method: String
    /// The request target, e.g. `"/bytes/1024"`.
    public var path: String
    /// Extra headers, sent in order. `Host` and `Content-Length` are added when missing.
    public var headers: [(name: String, value: String)]
    /// The body, sent with a `Content-Length`.
    public var body: ByteBuffer?
    /// When false the response body is only counted (``DemoResponse/bodyLength``), not kept: for large bodies.
    public var collectBody: Bool

    public init(
        method: String = "GET",
        path: String = "/",
        headers: [(name: String, value: String)] = [],
        body: ByteBuffer? = nil,
        collectBody: Bool = true
    ) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.collectBody = collectBody
    }
}

/// A complete response received by ``DemoHTTPClient``.
public struct DemoResponse: Sendable {
    /// The status code, e.g. 200.
    public var status: Int
    /// The response headers in the order received.
    public var headers: [(name: String, value: String)]
    /// The body (empty when the request did not collect it).
    public var body: ByteBuffer
    /// The body's length in bytes, counted even when not collected.
    public var bodyLength: Int
    /// Whether the connection may be reused after this response.
    public var isKeepAlive: Bool

    public init(
        status: Int,
        headers: [(name: String, value: String)],
        body: ByteBuffer,
        bodyLength: Int,
        isKeepAlive: Bool
    ) {
        self.status = status
        self.headers = headers
        self.body = body
        self.bodyLength = bodyLength
        self.isKeepAlive = isKeepAlive
    }

    /// The first value of the header `name`, compared case-insensitively.
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return self.headers.first { $0.name.lowercased() == lowered }?.value
    }

    /// The body as UTF-8 text.
    public var bodyString: String { String(buffer: self.body) }
}
