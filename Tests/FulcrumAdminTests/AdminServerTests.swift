import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumTestSupport
import Logging
import NIOCore
import Testing

@Suite("Admin server: start errors, keep-alive")
struct AdminServerTests {
    private static let loopback = Endpoint(address: .v4(0x7F00_0001), port: 0)

    @Test("a missing token file is a start error naming the file")
    func missingTokenFile() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let path = "/nonexistent/fulcrum-admin-token"
            do {
                let server = try await AdminServer.start(
                    config: AdminConfig(listen: Self.loopback, tokenFile: path), control: harness.server,
                    group: harness.group, logger: Logger(label: "test"))
                await server.shutdown()
                Issue.record("started without its token file")
            } catch let error as AdminServerError {
                #expect(error.description.contains(path))
            }
        }
    }

    @Test("a non-loopback listener without a token is refused")
    func nonLoopbackNeedsToken() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            await #expect(throws: AdminServerError.tokenRequired(listen: "0.0.0.0:0")) {
                _ = try await AdminServer.start(
                    config: AdminConfig(listen: Endpoint(address: .v4(0), port: 0)), control: harness.server,
                    group: harness.group, logger: Logger(label: "test"))
            }
        }
    }

    @Test("several requests on one keep-alive connection")
    func keepAlive() async throws {
        try await AdminHarness.with(backends: [DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let client = try await DemoHTTPClient.connect(port: harness.admin.port, group: harness.group)
            for path in ["/api/v1/pools", "/api/v1/nothing", "/api/v1/listeners"] {
                let response = try await client.get(path)
                #expect(response.isKeepAlive)
                #expect(response.status == (path == "/api/v1/nothing" ? 404 : 200))
            }
            #expect(client.isActive)
            await client.close()
        }
    }
}
