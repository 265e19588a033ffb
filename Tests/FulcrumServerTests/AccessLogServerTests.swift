import Foundation
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumProxy
import FulcrumServer
import FulcrumTestSupport
import NIOCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Sends `request` over a plain TCP connection to 127.0.0.1:`port`, half-closes, and reads until the
/// other side closes (bounded by a 5 s receive timeout). Blocking, so it runs off the cooperative pool.
func rawTCPExchange(port: Int, request: [UInt8]) async throws -> [UInt8] {
    struct SocketFailure: Error { let step: String }
    return try await offCooperativePool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(step: "socket") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw SocketFailure(step: "connect") }
        var offset = 0
        while offset < request.count {
            let n = request[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw SocketFailure(step: "write") }
            offset += n
        }
        shutdown(fd, Int32(SHUT_WR))
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw SocketFailure(step: "read") }
            received += chunk[0..<n]
        }
        return received
    }
}

@Suite("Access log through the proxy")
struct AccessLogServerTests {
    static func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-access-\(UUID()).log").path
    }

    @Test("JSON lines for HTTP requests and a TCP connection carry status, backend, bytes; backend byte counters match")
    func jsonLinesThroughTheProxy() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await ServerHarness.with(backends: [DemoBehavior(), DemoBehavior()]) { addresses in
            """
            access_log: { path: \(path), format: json }
            pools:
              web: { algorithm: round-robin, backends: [\(addresses.joined(separator: ", "))] }
              gone: { backends: [127.0.0.1:1] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
              - { name: raw, bind: 127.0.0.1:0, mode: tcp, pool: web }
              - { name: dead, bind: 127.0.0.1:0, mode: http, pool: gone, retries: 0 }
            """
        } _: { harness in
            func address(ofBackendNamed name: String?) -> String? {
                harness.backends.firstIndex { $0.name == name }.map { harness.addresses[$0] }
            }
            let bytes = try await harness.get("/bytes/1000")
            #expect(bytes.status == 200 && bytes.bodyLength == 1000)
            let upload = ByteBuffer(repeating: UInt8(ascii: "u"), count: 321)
            let echo = try await DemoHTTPClient.request(
                port: harness.port, DemoRequest(method: "POST", path: "/echo", body: upload), group: harness.group)
            #expect(echo.status == 200 && echo.bodyLength == 321)
            let unavailable = try await harness.get("/status/503")
            #expect(unavailable.status == 503)
            let deadPort = try #require(await harness.server.port(ofListener: "dead"))
            let refused = try await DemoHTTPClient.request(port: deadPort, DemoRequest(path: "/"), group: harness.group)
            #expect(refused.status == 502)

            let rawPort = try #require(await harness.server.port(ofListener: "raw"))
            let tcpRequest = Array("GET /bytes/500 HTTP/1.0\r\nHost: raw\r\n\r\n".utf8)
            let tcpResponse = try await rawTCPExchange(port: rawPort, request: tcpRequest)
            #expect(tcpResponse.count > 500)

            let log = try #require(await harness.server.currentAccessLog)
            #expect(await eventually { log.written >= 5 }, "written: \(log.written)")
            let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 5)
            let objects = try lines.map { line in
                try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            }
            func line(_ match: ([String: Any]) -> Bool) -> [String: Any]? { objects.first(where: match) }

            let get = try #require(line { $0["uri"] as? String == "/bytes/1000" })
            #expect(get["type"] as? String == "http" && get["listener"] as? String == "www")
            #expect(get["method"] as? String == "GET" && get["status"] as? Int == 200)
            #expect(get["backend"] as? String == address(ofBackendNamed: bytes.header("X-Backend")))
            #expect(get["bytes_out"] as? Int == 1000 && get["bytes_in"] as? Int == 0)
            #expect((get["client"] as? String)?.hasPrefix("127.0.0.1:") == true)
            #expect(get["outcome"] as? String == "completed" && get["first_byte_ms"] is Double)

            let post = try #require(line { $0["uri"] as? String == "/echo" })
            #expect(post["bytes_in"] as? Int == 321 && post["bytes_out"] as? Int == 321)
            #expect(post["backend"] as? String == address(ofBackendNamed: echo.header("X-Backend")))

            let status = try #require(line { $0["uri"] as? String == "/status/503" })
            #expect(status["status"] as? Int == 503 && status["outcome"] as? String == "completed")

            let proxyAnswer = try #require(line { $0["listener"] as? String == "dead" })
            #expect(proxyAnswer["status"] as? Int == 502 && proxyAnswer["outcome"] as? String == "proxy_answered")
            #expect(proxyAnswer["backend"] is NSNull && proxyAnswer["retries"] as? Int == 1)

            let tcp = try #require(line { $0["type"] as? String == "tcp" })
            #expect(tcp["listener"] as? String == "raw" && tcp["status"] is NSNull)
            #expect(tcp["bytes_in"] as? Int == tcpRequest.count && tcp["bytes_out"] as? Int == tcpResponse.count)
            #expect(harness.addresses.contains(tcp["backend"] as? String ?? "?"))
            #expect(tcp["connect_ms"] is Double && tcp["outcome"] as? String == "completed")

            // The same bytes, per backend: TCP payload both ways, HTTP bodies.
            let members = try await harness.pool.snapshot().members
            let sent = members.map { $0.backend.stats.bytesSent.load(ordering: .relaxed) }.reduce(0, +)
            let received = members.map { $0.backend.stats.bytesReceived.load(ordering: .relaxed) }.reduce(0, +)
            #expect(sent == UInt64(321 + tcpRequest.count))
            #expect(received == UInt64(1000 + 321 + unavailable.bodyLength + tcpResponse.count))
            #expect(log.dropped == 0)
        }
    }

    @Test("text lines are combined-log-like")
    func textLines() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await ServerHarness.with(backends: [DemoBehavior()]) { addresses in
            """
            access_log: { path: \(path), format: text }
            pools:
              web: { backends: [\(addresses[0])] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            #expect(try await harness.get("/bytes/10").status == 200)
            let log = try #require(await harness.server.currentAccessLog)
            #expect(await eventually { log.written >= 1 })
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let line = try #require(text.split(separator: "\n").first.map(String.init))
            let fields = line.split(separator: " ").map(String.init)
            #expect(fields.count == 17, "\(line)")
            #expect(fields[0].hasPrefix("127.0.0.1:") && fields[1] == "-" && fields[2] == "-")
            #expect(fields[3].hasPrefix("[") && fields[4] == "+0000]")
            #expect(fields[5] == "\"GET" && fields[6] == "/bytes/10" && fields[7] == "HTTP/1.1\"")
            #expect(fields[8] == "200" && fields[9] == "10")
            #expect(fields[10] == "listener=www" && fields[11] == "backend=\(harness.addresses[0])")
            #expect(fields.last == "outcome=completed")
        }
    }

    @Test("reopen() (what SIGHUP calls): after the file is moved away, new lines go to a fresh file at the path")
    func reopenAfterRotation() async throws {
        let path = Self.temporaryPath()
        let rotated = path + ".1"
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: rotated)
        }
        try await ServerHarness.with(backends: [DemoBehavior()]) { addresses in
            """
            access_log: { path: \(path) }
            pools:
              web: { backends: [\(addresses[0])] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            let log = try #require(await harness.server.currentAccessLog)
            #expect(try await harness.get("/first").status == 200)
            #expect(await eventually { log.written >= 1 })
            try FileManager.default.moveItem(atPath: path, toPath: rotated)
            log.reopen()
            #expect(try await harness.get("/second").status == 200)
            #expect(await eventually { log.written >= 2 })
            let old = try String(contentsOfFile: rotated, encoding: .utf8)
            let fresh = try String(contentsOfFile: path, encoding: .utf8)
            #expect(old.contains("/first") && !old.contains("/second"))
            #expect(fresh.contains("/second") && !fresh.contains("/first"))
        }
    }
    @Test("reload: a new path takes the new lines; a path that cannot be opened rejects the reload")
    func reloadSwitchesFiles() async throws {
        let first = Self.temporaryPath()
        let second = Self.temporaryPath()
        defer {
            try? FileManager.default.removeItem(atPath: first)
            try? FileManager.default.removeItem(atPath: second)
        }
        func yaml(_ path: String, _ backend: String) -> String {
            """
            access_log: { path: \(path) }
            pools:
              web: { backends: [\(backend)] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        }
        try await ServerHarness.with(backends: [DemoBehavior()]) {
            yaml(first, $0[0])
        } _: { harness in
            let firstLog = try #require(await harness.server.currentAccessLog)
            #expect(try await harness.get("/before").status == 200)
            #expect(await eventually { firstLog.written >= 1 })

            let unopenable = try ConfigLoader.load(
                yaml: yaml("/nonexistent-\(UUID())/access.log", harness.addresses[0]))
            #expect(await harness.server.reload(unopenable) == false)
            #expect(await harness.server.currentAccessLog === firstLog)

            #expect(await harness.server.reload(try ConfigLoader.load(yaml: yaml(second, harness.addresses[0]))))
            let secondLog = try #require(await harness.server.currentAccessLog)
            #expect(secondLog !== firstLog)
            #expect(try await harness.get("/after").status == 200)
            #expect(await eventually { secondLog.written >= 1 })
            let old = try String(contentsOfFile: first, encoding: .utf8)
            let new = try String(contentsOfFile: second, encoding: .utf8)
            #expect(old.contains("/before") && !old.contains("/after"))
            #expect(new.contains("/after") && !new.contains("/before"))
        }
    }
}
