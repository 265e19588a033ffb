import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite("TCP proxy")
struct TCPProxyTests {
    @Test func echoesThroughTheProxyAndCountsOneCloseForOneOpen() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend()
            let proxy = try await env.proxy(to: [backend.endpoint])
            for index in 0..<5 {
                #expect(try await env.exchange("hello \(index)", through: proxy.port) == "hello \(index)")
            }
            #expect(await proxy.allFlowsClosed())
            #expect(proxy.statistics.flowsOpened == 5)
            #expect(proxy.statistics.flowsClosed == 5)
            let stats = proxy.backend(backend.endpoint).stats
            #expect(stats.totalConnections.load(ordering: .relaxed) == 5)
            #expect(stats.active == 0)
        }
    }

    @Test func clientHalfCloseReachesTheBackendAndTheReplyStillArrives() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend(.echo(trailer: "<backend saw EOF>"))
            let proxy = try await env.proxy(to: [backend.endpoint])
            let client = try await env.connect(to: proxy.port)
            let reply = try await client.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "hello"))
                outbound.finish()  // shutdown(SHUT_WR): the client still reads
                return String(decoding: try await tcpReadToEnd(inbound), as: UTF8.self)
            }
            #expect(reply == "hello<backend saw EOF>")
            #expect(backend.eofs == 1)
            #expect(await proxy.allFlowsClosed())
        }
    }

    @Test func backendHalfCloseReachesTheClientAndTheClientCanStillSend() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend(.greetAndHalfClose("220 hello\r\n"))
            let proxy = try await env.proxy(to: [backend.endpoint])
            let client = try await env.connect(to: proxy.port)
            let greeting = try await client.executeThenClose { inbound, outbound in
                let greeting = String(decoding: try await tcpReadToEnd(inbound), as: UTF8.self)
                // The backend's FIN arrived; the other direction is still open.
                try await outbound.write(ByteBuffer(string: "QUIT\r\n"))
                outbound.finish()
                return greeting
            }
            #expect(greeting == "220 hello\r\n")
            #expect(await tcpEventually { backend.received == ["QUIT\r\n"] })
            #expect(await proxy.allFlowsClosed())
        }
    }

    @Test func connectFailureIsRetriedOnAnotherBackendAndReportedToThePool() async throws {
        try await TCPTestEnvironment.run { env in
            let dead = try await env.deadEndpoint()
            let live = try await env.backend()
            let proxy = try await env.proxy(to: [dead, live.endpoint], retries: 2)
            for index in 0..<4 {
                #expect(try await env.exchange("try \(index)", through: proxy.port) == "try \(index)")
            }
            #expect(live.accepted == 4)
            // Each failed attempt was reported; none opened a connection.
            #expect((1...4).contains(proxy.backend(dead).stats.failures.load(ordering: .relaxed)))
            #expect(proxy.backend(dead).stats.totalConnections.load(ordering: .relaxed) == 0)
            #expect(proxy.backend(live.endpoint).stats.consecutiveFailures.load(ordering: .relaxed) == 0)
            #expect(await proxy.allFlowsClosed())
        }
    }

    @Test func allBackendsDownClosesTheClientPromptly() async throws {
        try await TCPTestEnvironment.run { env in
            let dead = [try await env.deadEndpoint(), try await env.deadEndpoint()]
            let proxy = try await env.proxy(to: dead, retries: 1)
            let started = ContinuousClock.now
            let client = try await env.connect(to: proxy.port)
            let received = try await client.executeThenClose { inbound, outbound in
                try? await outbound.write(ByteBuffer(string: "anyone?"))
                return (try? await tcpReadToEnd(inbound)) ?? []
            }
            #expect(received.isEmpty)
            #expect(ContinuousClock.now - started < .seconds(2))
            for endpoint in dead {
                #expect(proxy.backend(endpoint).stats.failures.load(ordering: .relaxed) == 1)
            }
            #expect(proxy.statistics.flowsOpened == 0)
            #expect(proxy.activeConnections == 0)
        }
    }

    @Test func idleTimeoutClosesAnIdlePair() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend()
            let proxy = try await env.proxy(to: [backend.endpoint], idle: .milliseconds(300))
            let client = try await env.connect(to: proxy.port)
            let started = ContinuousClock.now
            let echoed = try await client.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "ping"))
                // No half-close: only the idle timeout can end this flow (the watchdog is 15 s).
                return String(decoding: try await tcpReadToEnd(inbound), as: UTF8.self)
            }
            let elapsed = ContinuousClock.now - started
            #expect(echoed == "ping")
            #expect(elapsed >= .milliseconds(300))
            #expect(elapsed < .seconds(5))
            #expect(await proxy.allFlowsClosed())
            #expect(proxy.backend(backend.endpoint).stats.active == 0)
        }
    }

    @Test func roundRobinSpreadsConnectionsOverThreeBackends() async throws {
        try await TCPTestEnvironment.run { env in
            var backends: [TCPTestBackend] = []
            for _ in 0..<3 { backends.append(try await env.backend()) }
            let proxy = try await env.proxy(to: backends.map(\.endpoint), algorithm: .roundRobin, instrumented: false)
            for index in 0..<9 {
                #expect(try await env.exchange("n\(index)", through: proxy.port) == "n\(index)")
            }
            #expect(backends.map(\.accepted) == [3, 3, 3])
            #expect(await proxy.allFlowsClosed())
            for backend in backends {
                #expect(proxy.backend(backend.endpoint).stats.totalConnections.load(ordering: .relaxed) == 3)
            }
        }
    }

    @Test func sourceHashSendsOneClientToOneBackend() async throws {
        try await TCPTestEnvironment.run { env in
            var backends: [TCPTestBackend] = []
            for _ in 0..<3 { backends.append(try await env.backend()) }
            let proxy = try await env.proxy(to: backends.map(\.endpoint), algorithm: .sourceHash)
            for index in 0..<6 {
                #expect(try await env.exchange("s\(index)", through: proxy.port) == "s\(index)")
            }
            #expect(backends.map(\.accepted).sorted() == [0, 0, 6])
            #expect(await proxy.allFlowsClosed())
        }
    }

    @Test func flowKeyHashesThePortsAndSourceKeyDoesNot() throws {
        let clientA = try SocketAddress(ipAddress: "10.0.0.1", port: 40000)
        let clientB = try SocketAddress(ipAddress: "10.0.0.1", port: 40001)
        let local = try SocketAddress(ipAddress: "10.0.0.100", port: 443)
        let source = { TCPProxy.keyHash(hashKey: .source, client: $0, local: local) }
        let flow = { TCPProxy.keyHash(hashKey: .flow, client: $0, local: local) }
        #expect(source(clientA) == source(clientB))
        #expect(source(clientA) == StableHash.hash(IPAddress("10.0.0.1")!))
        #expect(flow(clientA) != flow(clientB))
        #expect(
            flow(clientA)
                == StableHash.hash(
                    source: IPAddress("10.0.0.1")!, sourcePort: 40000, destination: IPAddress("10.0.0.100")!,
                    destinationPort: 443, protocol: 6))
    }

    @Test(arguments: [ListenerConfig.ProxyProtocol.v1, .v2])
    func proxyProtocolHeaderArrivesFirstWithTheClientAddress(version: ListenerConfig.ProxyProtocol) async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend()
            let proxy = try await env.proxy(to: [backend.endpoint], proxyProtocol: version)
            let client = try await env.connect(to: proxy.port)
            let clientPort = client.channel.localAddress!.port!
            let received = try await client.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "ping"))
                outbound.finish()
                return try await tcpReadToEnd(inbound)
            }
            // The echo backend returns the header it received, then the client's bytes.
            let expectedHeader: [UInt8]
            switch version {
            case .v1:
                expectedHeader = Array("PROXY TCP4 127.0.0.1 127.0.0.1 \(clientPort) \(proxy.port)\r\n".utf8)
            default:
                expectedHeader =
                    [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C]
                    + [127, 0, 0, 1, 127, 0, 0, 1]
                    + [
                        UInt8(clientPort >> 8), UInt8(clientPort & 0xFF), UInt8(proxy.port >> 8),
                        UInt8(proxy.port & 0xFF),
                    ]
            }
            #expect(received == expectedHeader + Array("ping".utf8))
            #expect(await proxy.allFlowsClosed())
        }
    }

    @Test func drainingLetsAnOpenFlowContinueUntilItEnds() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend()
            let proxy = try await env.proxy(to: [backend.endpoint])
            let client = try await env.connect(to: proxy.port)
            try await client.executeThenClose { inbound, outbound in
                var replies = inbound.makeAsyncIterator()
                try await outbound.write(ByteBuffer(string: "before"))
                #expect(try await read(6, from: &replies) == "before")

                await proxy.listener.stopAccepting()
                let started = ContinuousClock.now
                async let drained: Void = proxy.listener.context.connections.drain(grace: .seconds(30))
                try await outbound.write(ByteBuffer(string: "during drain"))
                #expect(try await read(12, from: &replies) == "during drain")
                outbound.finish()
                #expect(try await replies.next() == nil)
                await drained
                // The drain ended because the flow did, not because the grace ran out.
                #expect(ContinuousClock.now - started < .seconds(10))
            }
            #expect(await proxy.allFlowsClosed())
        }
    }
}

/// Reads exactly `count` bytes (fewer only at EOF) as text.
private func read(
    _ count: Int, from replies: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
) async throws -> String {
    var bytes: [UInt8] = []
    while bytes.count < count, let buffer = try await replies.next() { bytes += buffer.readableBytesView }
    return String(decoding: bytes, as: UTF8.self)
}
