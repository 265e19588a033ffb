import NIOHTTP1

/// Follows a chunked body (RFC 9112 §7.1) byte by byte without copying it: it says how many of the
/// bytes it is given belong to the body and whether the body ended, so the proxy forwards the original
/// bytes once it has checked them (requests to the backend, responses to an HTTP/1.1 client). Strict,
/// because the next hop must find the same end: hex sizes without spaces or signs and at most 15
/// digits, CRLF everywhere (a bare LF or CR is refused), chunk extensions of visible characters only,
/// trailer fields within the request header limits.
struct HTTPChunkedScanner {
    enum Outcome: Equatable {
        /// The first `count` bytes are body; `ended`: the body's last byte is among them.
        case body(count: Int, ended: Bool)
        case invalid(HTTPRejection)
    }

    private enum State {
        /// In a size line: `digits` read so far, `size` their value.
        case size(digits: Int, size: Int)
        /// Spaces after the size: only an extension may follow.
        case sizeSpace
        case sizeExtension
        /// CR of the size line seen.
        case sizeLF(size: Int)
        case data(remaining: Int)
        case dataCR
        case dataLF
        /// At the start of a trailer line (or the final empty line).
        case trailerStart
        case trailerLine
        case trailerLF
        case finalLF
        case done
    }

    private var state = State.size(digits: 0, size: 0)
    private var trailerBytes = 0
    private var trailerFields = 0

    /// Whether the whole body has been seen.
    var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    static let invalidChunkSize = HTTPRejection(.badRequest, "invalid chunk size")
    static let invalidFraming = HTTPRejection(.badRequest, "invalid chunked framing")

    /// Scans `bytes`, the next bytes after those of earlier calls.
    mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        scan(bytes) { _ in }
    }

    /// Scans `bytes` and reports where chunk data lies in them (to unwrap the body for an HTTP/1.0 client).
    mutating func scan(_ bytes: UnsafeRawBufferPointer, data: (Range<Int>) -> Void) -> Outcome {
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            switch state {
            case .size(let digits, let size):
                if let value = byte.hexValue {
                    guard digits < 15 else { return .invalid(Self.invalidChunkSize) }
                    state = .size(digits: digits + 1, size: size << 4 | value)
                } else if digits == 0 {
                    return .invalid(Self.invalidChunkSize)
                } else if byte == .cr {
                    state = .sizeLF(size: size)
                } else if byte == UInt8(ascii: ";") {
                    state = .sizeExtension
                    pendingSize = size
                } else if byte == .space || byte == .tab {
                    state = .sizeSpace
                    pendingSize = size
                } else {
                    return .invalid(Self.invalidChunkSize)
                }
                index += 1
            case .sizeSpace:
                if byte == UInt8(ascii: ";") {
                    state = .sizeExtension
                } else if byte != .space && byte != .tab {
                    return .invalid(Self.invalidChunkSize)
                }
                index += 1
            case .sizeExtension:
                if byte == .cr {
                    state = .sizeLF(size: pendingSize)
                } else if byte < .space && byte != .tab || byte == 0x7F {
                    return .invalid(Self.invalidFraming)
                }
                index += 1
            case .sizeLF(let size):
                guard byte == .lf else { return .invalid(Self.invalidFraming) }
                state = size == 0 ? .trailerStart : .data(remaining: size)
                index += 1
            case .data(let remaining):
                let take = min(remaining, count - index)
                dataBytes += take
                data(index..<index + take)
                index += take
                state = take == remaining ? .dataCR : .data(remaining: remaining - take)
            case .dataCR:
                guard byte == .cr else { return .invalid(Self.invalidFraming) }
                state = .dataLF
                index += 1
            case .dataLF:
                guard byte == .lf else { return .invalid(Self.invalidFraming) }
                state = .size(digits: 0, size: 0)
                index += 1
            case .trailerStart:
                if byte == .cr {
                    state = .finalLF
                } else {
                    guard byte.isTokenCharacter else { return .invalid(Self.invalidFraming) }
                    trailerFields += 1
                    guard trailerFields <= HTTPLimits.maxRequestHeaderCount else {
                        return .invalid(HTTPRequestHeadParser.tooMany)
                    }
                    state = .trailerLine
                }
                index += 1
            case .trailerLine:
                trailerBytes += 1
                guard trailerBytes <= HTTPLimits.maxRequestHeaderBytes else {
                    return .invalid(HTTPRequestHeadParser.tooLarge)
                }
                if byte == .cr {
                    state = .trailerLF
                } else if byte < .space && byte != .tab || byte == 0x7F {
                    return .invalid(Self.invalidFraming)
                }
                index += 1
            case .trailerLF:
                guard byte == .lf else { return .invalid(Self.invalidFraming) }
                state = .trailerStart
                index += 1
            case .finalLF:
                guard byte == .lf else { return .invalid(Self.invalidFraming) }
                state = .done
                return .body(count: index + 1, ended: true)
            case .done:
                return .body(count: index, ended: true)
            }
        }
        return .body(count: count, ended: false)
    }

    /// The size of a line whose extension is being skipped.
    private var pendingSize = 0
    /// Chunk data scanned so far, framing not counted (the body's size, for byte counters and the access log).
    private(set) var dataBytes = 0
}

extension UInt8 {
    /// The value of a hex digit, or nil.
    var hexValue: Int? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(self - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(self - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(self - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}
