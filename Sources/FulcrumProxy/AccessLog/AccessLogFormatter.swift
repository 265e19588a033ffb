import FulcrumConfig
import FulcrumCore
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns `AccessLogRecord`s into lines; runs on the access log's writer thread, never on an event loop.
///
/// - `json`: one object per line with the keys `time`, `type`, `listener`, `client`, `backend`, `method`,
///   `uri`, `version`, `status`, `bytes_in`, `bytes_out`, `duration_ms`, `connect_ms`, `first_byte_ms`,
///   `retries`, `outcome` (absent values are `null`).
/// - `text`: `client - - [time] "METHOD URI VERSION" status bytes_out` (the combined log's first fields;
///   TCP lines say `"TCP"`, and `-` for no status) followed by `key=value` fields for the rest.
public enum AccessLogFormatter {
    public static func line(_ record: AccessLogRecord, format: AccessLogConfig.Format) -> String {
        switch format {
        case .json: return json(record)
        case .text: return text(record)
        }
    }

    static func json(_ r: AccessLogRecord) -> String {
        var out = "{\"time\":\"\(isoTime(r.time))\",\"type\":\"\(r.kind.rawValue)\""
        out += ",\"listener\":" + quoted(r.listener)
        out += ",\"client\":" + (clientText(r.client).map(quoted) ?? "null")
        out += ",\"backend\":" + (r.backend.map(quoted) ?? "null")
        out += ",\"method\":" + (r.method.map(quoted) ?? "null")
        out += ",\"uri\":" + (r.uri.map(quoted) ?? "null")
        out += ",\"version\":" + (r.version.map(quoted) ?? "null")
        out += ",\"status\":" + (r.status.map { String($0) } ?? "null")
        out += ",\"bytes_in\":\(r.bytesIn),\"bytes_out\":\(r.bytesOut)"
        out += ",\"duration_ms\":\(millis(r.durationNanos))"
        out += ",\"connect_ms\":" + (r.connectNanos.map(millis) ?? "null")
        out += ",\"first_byte_ms\":" + (r.firstByteNanos.map(millis) ?? "null")
        out += ",\"retries\":\(r.retries),\"outcome\":\"\(r.outcome.rawValue)\"}"
        return out
    }

    static func text(_ r: AccessLogRecord) -> String {
        let request: String
        switch r.kind {
        case .http:
            request = "\(r.method ?? "-") \(sanitized(r.uri ?? "-")) \(r.version ?? "-")"
        case .tcp:
            request = "TCP"
        }
        var out = "\(clientText(r.client) ?? "-") - - [\(commonTime(r.time))] \"\(request)\" "
        out += "\(r.status.map { String($0) } ?? "-") \(r.bytesOut)"
        out += " listener=\(sanitized(r.listener)) backend=\(r.backend ?? "-") bytes_in=\(r.bytesIn)"
        out += " duration_ms=\(millis(r.durationNanos))"
        if let connect = r.connectNanos { out += " connect_ms=\(millis(connect))" }
        if let firstByte = r.firstByteNanos { out += " first_byte_ms=\(millis(firstByte))" }
        out += " retries=\(r.retries) outcome=\(r.outcome.rawValue)"
        return out
    }

    static func clientText(_ address: SocketAddress?) -> String? {
        guard let address, let ip = IPAddress(address), let port = address.port else { return nil }
        return Endpoint(address: ip, port: UInt16(truncatingIfNeeded: port)).description
    }

    /// Milliseconds with microsecond precision.
    static func millis(_ nanos: UInt64) -> String {
        let micros = nanos / 1000
        let fraction = String(micros % 1000)
        return "\(micros / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// `2026-12-01T13:22:26.123Z`
    static func isoTime(_ time: Double) -> String {
        let (parts, millis) = brokenDown(time)
        return String(
            format4(Int(parts.tm_year) + 1900) + "-" + two(Int(parts.tm_mon) + 1) + "-" + two(Int(parts.tm_mday))
                + "T" + two(Int(parts.tm_hour)) + ":" + two(Int(parts.tm_min)) + ":" + two(Int(parts.tm_sec)) + "."
                + three(millis) + "Z")
    }

    /// `01/Dec/2026:13:22:26.123 +0000` (the common log format's time, with milliseconds).
    static func commonTime(_ time: Double) -> String {
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let (parts, millis) = brokenDown(time)
        return two(Int(parts.tm_mday)) + "/" + months[Int(parts.tm_mon) % 12] + "/" + format4(Int(parts.tm_year) + 1900)
            + ":" + two(Int(parts.tm_hour)) + ":" + two(Int(parts.tm_min)) + ":" + two(Int(parts.tm_sec)) + "."
            + three(millis) + " +0000"
    }

    private static func brokenDown(_ time: Double) -> (tm, Int) {
        var seconds = time_t(time.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let millis = min(999, max(0, Int((time - time.rounded(.down)) * 1000)))
        return (parts, millis)
    }

    private static func two(_ value: Int) -> String { value < 10 ? "0\(value)" : String(value) }
    private static func three(_ value: Int) -> String {
        value < 10 ? "00\(value)" : value < 100 ? "0\(value)" : String(value)
    }
    private static func format4(_ value: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, 4 - text.count)) + text
    }

    /// A JSON string literal (one escaper for every JSON writer: `JSONString`).
    static func quoted(_ value: String) -> String { JSONString.quoted(value) }

    /// Text-format fields: spaces, quotes, control characters and non-ASCII bytes become `%XX`, so a
    /// line always splits the same way whatever a client sent.
    static func sanitized(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            if byte <= 0x20 || byte == 0x22 || byte >= 0x7F {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            } else {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out
    }
}
