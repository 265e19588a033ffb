/// An IP address, v4 or v6, parsed without any system call so it can be used by the pure modules.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// IPv4 in host byte order (`10.0.0.1` is `0x0A00_0001`).
    case v4(UInt32)
    /// IPv6 as two 64-bit halves in host byte order, high half first.
    case v6(UInt64, UInt64)

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (with `::` compression and an optional
    /// trailing dotted-quad). Returns nil for anything else; zone ids (`%eth0`) are not accepted.
    public init?(_ text: some StringProtocol) {
        if let v4 = IPAddress.parseV4(Substring(text)) {
            self = .v4(v4)
        } else if let v6 = IPAddress.parseV6(Substring(text)) {
            self = v6
        } else {
            return nil
        }
    }

    public var isIPv4: Bool {
        if case .v4 = self { return true }
        return false
    }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a):
            return [
                UInt8(truncatingIfNeeded: a >> 24), UInt8(truncatingIfNeeded: a >> 16),
                UInt8(truncatingIfNeeded: a >> 8), UInt8(truncatingIfNeeded: a),
            ]
        case .v6(let hi, let lo):
            var out = [UInt8]()
            out.reserveCapacity(16)
            for half in [hi, lo] {
                for shift in stride(from: 56, through: 0, by: -8) {
                    out.append(UInt8(truncatingIfNeeded: half >> UInt64(shift)))
                }
            }
            return out
        }
    }

    public var description: String {
        switch self {
        case .v4(let a):
            return "\(a >> 24).\((a >> 16) & 0xFF).\((a >> 8) & 0xFF).\(a & 0xFF)"
        case .v6(let hi, let lo):
            let groups: [UInt16] = (0..<8).map { i in
                let half = i < 4 ? hi : lo
                return UInt16(truncatingIfNeeded: half >> UInt64((3 - i % 4) * 16))
            }
            // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on ties.
            var bestStart = -1
            var bestLength = 0
            var i = 0
            while i < 8 {
                if groups[i] == 0 {
                    var j = i
                    while j < 8 && groups[j] == 0 { j += 1 }
                    if j - i > bestLength && j - i >= 2 {
                        bestStart = i
                        bestLength = j - i
                    }
                    i = j
                } else {
                    i += 1
                }
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            if bestStart < 0 { return hex(0..<8) }
            return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
        }
    }

    private static func parseV4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let octet = UInt32(part), octet <= 255
            else { return nil }
            // Leading zeros are ambiguous (octal in some parsers): reject them like inet_pton does.
            if part.count > 1 && part.first == "0" { return nil }
            value = value << 8 | octet
        }
        return value
    }

    private static func parseV6(_ text: Substring) -> IPAddress? {
        guard text.contains(":"), text.count <= 45 else { return nil }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawDoubleColon = false
        if let range = text.firstRange(of: "::") {
            sawDoubleColon = true
            let left = text[..<range.lowerBound]
            let right = text[range.upperBound...]
            if right.contains("::") { return nil }
            guard let l = parseGroups(left, allowV4Tail: right.isEmpty),
                let r = parseGroups(right, allowV4Tail: true)
            else { return nil }
            head = l
            tail = r
        } else {
            guard let all = parseGroups(text, allowV4Tail: true) else { return nil }
            head = all
        }
        let total = head.count + tail.count
        if sawDoubleColon {
            guard total <= 7 else { return nil }
        } else {
            guard total == 8 else { return nil }
        }
        let groups = head + Array(repeating: 0, count: 8 - total) + tail
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(groups[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(groups[i]) }
        return .v6(hi, lo)
    }

    /// Colon-separated hex groups; the last one may be a dotted quad (two groups).
    private static func parseGroups(_ text: Substring, allowV4Tail: Bool) -> [UInt16]? {
        if text.isEmpty { return [] }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var out: [UInt16] = []
        for (index, part) in parts.enumerated() {
            if index == parts.count - 1 && allowV4Tail && part.contains(".") {
                guard let v4 = parseV4(part) else { return nil }
                out.append(UInt16(v4 >> 16))
                out.append(UInt16(v4 & 0xFFFF))
                continue
            }
            guard !part.isEmpty, part.count <= 4, part.allSatisfy({ $0.isHexDigit }),
                let group = UInt16(part, radix: 16)
            else { return nil }
            out.append(group)
        }
        return out
    }
}

/// An IP address and a port: where a backend listens or a listener binds.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Why a text is not an endpoint; the message is meant for the user.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case missingPort
        case invalidPort(String)
        case invalidAddress(String)

        public var description: String {
            switch self {
            case .missingPort: return "missing port (expected host:port, or [v6]:port)"
            case .invalidPort(let p): return "invalid port '\(p)' (expected 1-65535)"
            case .invalidAddress(let a): return "'\(a)' is not an IPv4 or IPv6 address"
            }
        }
    }

    /// Parses `1.2.3.4:80` or `[::1]:80`. Host names are not resolved here (pure module).
    public static func parse(_ text: String, allowPortZero: Bool = false) -> Result<Endpoint, ParseError> {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(.invalidAddress(text)) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(.missingPort) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.missingPort) }
            host = text[..<colon]
            if host.contains(":") {
                // Bare IPv6 without brackets: the port cannot be told apart from the last group.
                return .failure(.invalidAddress(text + " (write IPv6 as [addr]:port)"))
            }
            portText = text[text.index(after: colon)...]
        }
        guard let address = IPAddress(host) else { return .failure(.invalidAddress(String(host))) }
        guard let port = UInt16(portText), port > 0 || allowPortZero else {
            return .failure(.invalidPort(String(portText)))
        }
        return .success(Endpoint(address: address, port: port))
    }

    public init?(_ text: String) {
        guard case .success(let endpoint) = Endpoint.parse(text) else { return nil }
        self = endpoint
    }

    public var description: String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }

    public static func < (lhs: Endpoint, rhs: Endpoint) -> Bool {
        lhs.description < rhs.description
    }
}
