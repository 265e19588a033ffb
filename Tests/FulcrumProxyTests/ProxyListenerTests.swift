import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The accept path that sets channels up without ServerBootstrap's futures (`AcceptedChannelSetup`,
/// `AcceptBypass`): what it must still do — track connections for draining, close a connection whose
/// setup failed, keep accepting.
@Suite("Proxy listener: accepted channels")
struct ProxyListenerTests {
    struct SetupRefused: Error {}

    final class Calls: Sendable {
        let count = Atomic<Int>(0)
    }

    @Test func aChildInitializerThatThrowsClosesTheConnectionAndTheListenerGoesOn() async throws {
        try await TCPTestEnvironment.run { env in
            let pool = try Pool(
                name: "refusing", settings: PoolSettings(algorithm: .roundRobin),
                backends: [BackendSpec(endpoint: try await env.deadEndpoint())], now: MonotonicClock.now())
            let bind = Endpoint(address: IPAddress("127.0.0.1")!, port: 0)
            let config = ListenerConfig(name: "refusing", bind: bind, mode: .tcp, pool: pool.name)
            let context = ListenerContext(
                route: ListenerRoute(config: config, pool: pool, hashKey: .source), logger: Logger(label: "test"))
            let calls = Calls()
            let listener = try await ProxyListener.bind(bind, group: env.group, context: context) { _, _ in
                calls.count.add(1, ordering: .relaxed)
                throw SetupRefused()
            }
            do {
                for _ in 0..<3 {
                    let started = ContinuousClock.now
                    let client = try await env.connect(to: listener.port)
                    // EOF (or a reset) from the listener, long before the client's 15 s watchdog.
                    let received = try? await client.executeThenClose { inbound, _ in try await tcpReadToEnd(inbound) }
                    #expect(received?.isEmpty ?? true)
                    #expect(ContinuousClock.now - started < .seconds(5))
                }
                #expect(calls.count.load(ordering: .relaxed) == 3)
                #expect(context.connections.accepted == 0)
                #expect(context.connections.count == 0)
            } catch {
                await listener.shutdown(grace: .zero)
                throw error
            }
            await listener.shutdown(grace: .zero)
        }
    }

    @Test func acceptedConnectionsAreTrackedUntilTheyClose() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend()
            let proxy = try await env.proxy(to: [backend.endpoint])
            let tracker = proxy.listener.context.connections
            let client = try await env.connect(to: proxy.port)
            #expect(await tcpEventually { tracker.count == 1 })
            let reply = try await client.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "x"))
                outbound.finish()
                return try await tcpReadToEnd(inbound)
            }
            #expect(reply == Array("x".utf8))
            #expect(await tcpEventually { tracker.count == 0 })
            // Freed slots are taken again by later connections.
            for index in 0..<3 {
                #expect(try await env.exchange("n\(index)", through: proxy.port) == "n\(index)")
            }
            #expect(await tcpEventually { tracker.count == 0 })
            #expect(tracker.accepted == 4)
        }
    }
}
