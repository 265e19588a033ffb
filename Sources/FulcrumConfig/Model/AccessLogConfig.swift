/// The optional access log (`access_log:`): one line per HTTP request and per TCP connection of every
/// listener, written by a background thread so a slow disk never stalls traffic.
public struct AccessLogConfig: Sendable, Equatable {
    /// How each line is written.
    public enum Format: String, CaseIterable, Sendable {
        /// One JSON object per line (JSON Lines).
        case json
        /// A combined-log-like line: client, time, request, status, bytes, then key=value fields.
        case text
    }

    /// The file lines are appended to (created if missing; reopened on SIGHUP for log rotation).
    public var path: String
    public var format: Format
    /// Lines that may wait for the writer; when it is full, new lines are dropped and counted.
    public var bufferLines: Int

    public static let defaultBufferLines = 65_536

    public init(path: String, format: Format = .json, bufferLines: Int = AccessLogConfig.defaultBufferLines) {
        self.path = path
        self.format = format
        self.bufferLines = bufferLines
    }
}
