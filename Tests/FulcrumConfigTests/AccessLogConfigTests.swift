import FulcrumConfig
import Testing

@Suite("Config: access_log")
struct AccessLogConfigTests {
    @Test func absentMeansOff() throws {
        let config = try loadValid("pools: { web: { backends: [10.0.0.1:80] } }")
        #expect(config.accessLog == nil)
    }

    @Test func everyKeyAndTheDefaults() throws {
        let full = try loadValid(
            """
            access_log: { path: /var/log/fulcrum/access.log, format: text, buffer_lines: 1024 }
            pools: { web: { backends: [10.0.0.1:80] } }
            """)
        #expect(
            full.accessLog == AccessLogConfig(path: "/var/log/fulcrum/access.log", format: .text, bufferLines: 1024))
        let defaults = try loadValid(
            """
            access_log: { path: access.log }
            pools: { web: { backends: [10.0.0.1:80] } }
            """)
        #expect(defaults.accessLog == AccessLogConfig(path: "access.log", format: .json, bufferLines: 65_536))
    }

    @Test func everyProblemWithPathAndPosition() {
        let lines = diagnostics(
            """
            access_log:
              format: xml
              buffer_lines: 3
              rotate: daily
            pools: { web: { backends: [10.0.0.1:80] } }
            """)
        #expect(lines.contains { $0.hasPrefix("access_log.path: required key is missing (line 2") }, "\(lines)")
        #expect(
            lines.contains(
                "access_log.format: unknown access log format 'xml' (expected one of: json, text) (line 2, column 11)"),
            "\(lines)")
        #expect(
            lines.contains { $0.hasPrefix("access_log.buffer_lines: must be ≥ 16 (line 3, column 17)") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("access_log.rotate:") && $0.contains("line 4") }, "\(lines)")
    }

    @Test func notAMapping() {
        let lines = diagnostics(
            """
            access_log: /var/log/access.log
            pools: { web: { backends: [10.0.0.1:80] } }
            """)
        #expect(lines.count == 1 && lines[0].hasPrefix("access_log:") && lines[0].contains("line 1"), "\(lines)")
    }
}
