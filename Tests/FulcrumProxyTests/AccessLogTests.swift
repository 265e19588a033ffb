import Foundation
import FulcrumConfig
import NIOCore
import Synchronization
import Testing

@testable import FulcrumProxy

@Suite("Access log: queue and formats")
struct AccessLogTests {
    static func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-access-\(UUID()).log").path
    }

    static func record(_ index: Int) -> AccessLogRecord {
        AccessLogRecord(
            kind: .http, time: 1_764_595_346.5, listener: "www",
            client: try? SocketAddress(ipAddress: "127.0.0.1", port: 40_000 + index), backend: "127.0.0.1:8081",
            method: "GET", uri: "/item/\(index)", version: "HTTP/1.1", status: 200, bytesIn: 0, bytesOut: 12,
            durationNanos: 1_234_567, firstByteNanos: 1_000_000, retries: 0, outcome: .completed)
    }

    @Test("a full queue drops and counts lines instead of blocking; close writes what was queued")
    func fullQueueDrops() throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // The writer is not started yet: nothing drains the queue, like a disk that stalls.
        let reported = Atomic<UInt64>(0)
        let log = try AccessLog(AccessLogConfig(path: path, format: .json, bufferLines: 16)) {
            reported.wrappingAdd($0, ordering: .relaxed)
        }
        let started = ContinuousClock.now
        for index in 0..<100 { log.record(Self.record(index)) }
        #expect(ContinuousClock.now - started < .seconds(1), "recording must not wait for the writer")
        #expect(log.dropped == 84)
        #expect(log.written == 0)
        log.start()
        log.close()
        #expect(log.written == 16)
        // The writer reports drops (the server turns them into fulcrum_access_log_dropped_lines_total).
        #expect(reported.load(ordering: .relaxed) == 84)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 16)
        // The first 16 were kept, in order.
        let uris = try lines.map { line in
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return object["uri"] as? String
        }
        #expect(uris == (0..<16).map { "/item/\($0)" })
        // After close, records are refused (counted as dropped), never written to a closed file.
        log.record(Self.record(999))
        #expect(log.dropped == 85)
    }

    @Test("a JSON line carries every field, with JSON escaping")
    func jsonLine() throws {
        var record = Self.record(1)
        record.uri = "/a\"b\\c\n"
        let line = AccessLogFormatter.line(record, format: .json)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["time"] as? String == "2025-12-01T13:22:26.500Z")
        #expect(object["type"] as? String == "http")
        #expect(object["client"] as? String == "127.0.0.1:40001")
        #expect(object["backend"] as? String == "127.0.0.1:8081")
        #expect(object["uri"] as? String == "/a\"b\\c\n")
        #expect(object["status"] as? Int == 200)
        #expect(object["bytes_out"] as? Int == 12)
        #expect(object["duration_ms"] as? Double == 1.234)
        #expect(object["first_byte_ms"] as? Double == 1.0)
        #expect(object["connect_ms"] is NSNull)
        #expect(object["outcome"] as? String == "completed")
    }

    @Test("a text line is combined-log-like and splits on spaces whatever the client sent")
    func textLine() {
        var record = Self.record(2)
        record.uri = "/x y\"z"
        #expect(
            AccessLogFormatter.line(record, format: .text)
                == "127.0.0.1:40002 - - [01/Dec/2025:13:22:26.500 +0000] \"GET /x%20y%22z HTTP/1.1\" 200 12"
                + " listener=www backend=127.0.0.1:8081 bytes_in=0 duration_ms=1.234 first_byte_ms=1.000"
                + " retries=0 outcome=completed")
        let tcp = AccessLogRecord(
            kind: .tcp, time: 0, listener: "raw", client: nil, backend: nil, bytesIn: 0, bytesOut: 0,
            durationNanos: 5_000, retries: 0, outcome: .noUpstream)
        #expect(
            AccessLogFormatter.line(tcp, format: .text)
                == "- - - [01/Jan/1970:00:00:00.000 +0000] \"TCP\" - 0 listener=raw backend=- bytes_in=0"
                + " duration_ms=0.005 retries=0 outcome=no_upstream")
    }

    @Test("a path that cannot be opened is an error, not a silent loss")
    func unopenablePath() {
        #expect(throws: AccessLogError.self) {
            try AccessLog.open(AccessLogConfig(path: "/nonexistent-dir-\(UUID())/access.log"))
        }
    }
}
