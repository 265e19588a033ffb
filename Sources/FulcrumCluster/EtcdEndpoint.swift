/// One etcd client URL, `http://host:port` (TLS is not supported yet).
public struct EtcdEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `http://host:port`, `http://[v6]:port` or `host:port`; the port defaults to 2379.
    public init(url: String) throws(EtcdError) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") {
            rest = rest.dropFirst("http://".count)
        } else if rest.contains("://") {
            throw .invalidEndpoint(url)
        }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw .invalidEndpoint(url) }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .invalidEndpoint(url) }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty, !host.contains("/"), !host.contains("@") else { throw .invalidEndpoint(url) }
        var port = 2379
        if let portText {
            guard let parsed = Int(portText), (1...65535).contains(parsed) else { throw .invalidEndpoint(url) }
            port = parsed
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String {
        host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
    }
}
