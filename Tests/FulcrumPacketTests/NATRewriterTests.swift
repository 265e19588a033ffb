import FulcrumCore
import FulcrumPacket
import Testing

@Suite struct NATRewriterTests {
    let service = VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp)

    func rewriter(ports: ClosedRange<UInt16> = 20000...60000) -> NATRewriter {
        NATRewriter(settings: NATSettings(service: service, snatAddress: TestPackets.snat, snatPorts: ports))
    }

    func run(_ nat: NATRewriter, _ packet: inout [UInt8], _ snapshot: PoolSnapshot, now: UInt64 = 1) -> PacketVerdict {
        let n = packet.count
        return packet.withPacket { nat.process($0, start: 0, length: n, snapshot: snapshot, now: now) }
    }

    @Test func translatesBothDirections() throws {
        let pool = try TestPackets.pool()
        let snapshot = pool.snapshot()
        let nat = rewriter()
        var syn = TestPackets.ipv4(sport: 40000, flags: TCPFlags.syn, payload: [1, 2, 3])
        #expect(run(nat, &syn, snapshot) == .forward(0..<syn.count))
        #expect(TestPackets.checksumsValid(syn))
        #expect(TestPackets.read32(syn, 12) == TestPackets.snat)
        let backendAddress = TestPackets.read32(syn, 16)
        let backendPort = TestPackets.read16(syn, 22)
        let snatPort = TestPackets.read16(syn, 20)
        #expect(backendPort == 8080 && (20000...60000).contains(snatPort))
        // Maglev on the 5-tuple, through the pool's own selector.
        let key = FlowKey(
            source: TestPackets.client, destination: TestPackets.vip, sourcePort: 40000, destinationPort: 80, proto: 6)
        #expect(snapshot.pick(PickKey(hash: key.stableHash))?.ipv4 == backendAddress)
        #expect(snapshot.pick(PickKey(hash: key.stableHash))?.stats.active == 1)

        var synAck = TestPackets.ipv4(
            src: backendAddress, dst: TestPackets.snat, sport: 8080, dport: snatPort,
            flags: TCPFlags.syn | TCPFlags.ack, payload: [9])
        #expect(run(nat, &synAck, snapshot) == .forward(0..<synAck.count))
        #expect(TestPackets.checksumsValid(synAck))
        #expect(TestPackets.read32(synAck, 12) == TestPackets.vip && TestPackets.read16(synAck, 20) == 80)
        #expect(TestPackets.read32(synAck, 16) == TestPackets.client && TestPackets.read16(synAck, 22) == 40000)

        var ack = TestPackets.ipv4(sport: 40000, flags: TCPFlags.ack, payload: Array("GET /".utf8))
        #expect(run(nat, &ack, snapshot) == .forward(0..<ack.count))
        #expect(TestPackets.read16(ack, 20) == snatPort && TestPackets.read32(ack, 16) == backendAddress)
        #expect(TestPackets.checksumsValid(ack))
        #expect(nat.counters.packetsIn == 2 && nat.counters.packetsOut == 1)
        #expect(nat.flows.count == 1)
    }

    @Test func udpChecksumsIncludingNone() throws {
        let snapshot = try TestPackets.pool().snapshot()
        let nat = NATRewriter(
            settings: NATSettings(
                service: VirtualServiceAddress(vip: TestPackets.vip, port: 53, proto: 17),
                snatAddress: TestPackets.snat))
        var query = TestPackets.ipv4(proto: 17, sport: 5353, dport: 53, payload: Array("query".utf8))
        #expect(run(nat, &query, snapshot) == .forward(0..<query.count))
        #expect(TestPackets.checksumsValid(query))
        // Without a checksum (0) it stays without one.
        var bare = TestPackets.ipv4(proto: 17, sport: 5354, dport: 53, payload: [1])
        bare[26] = 0
        bare[27] = 0
        #expect(run(nat, &bare, snapshot) == .forward(0..<bare.count))
        #expect(bare[26] == 0 && bare[27] == 0)
        #expect(TestPackets.referenceChecksum(Array(bare[0..<20])) == 0)
    }

    @Test func dropsWithReasons() throws {
        let snapshot = try TestPackets.pool().snapshot()
        let nat = rewriter(ports: 30000...30001)
        var other = TestPackets.ipv4(dport: 443)
        #expect(run(nat, &other, snapshot) == .drop(.notForVIP))
        var midStream = TestPackets.ipv4(flags: TCPFlags.ack)
        #expect(run(nat, &midStream, snapshot) == .drop(.noFlow))
        var strayReply = TestPackets.ipv4(
            src: TestPackets.ip("10.200.0.11"), dst: TestPackets.snat, sport: 8080,
            dport: 30000, flags: TCPFlags.ack)
        #expect(run(nat, &strayReply, snapshot) == .drop(.noFlow))
        for port in UInt16(1)...2 {
            var syn = TestPackets.ipv4(sport: port)
            #expect(run(nat, &syn, snapshot) == .forward(0..<syn.count))
        }
        var third = TestPackets.ipv4(sport: 3)
        #expect(run(nat, &third, snapshot) == .drop(.portsExhausted))
        var truncated = Array(TestPackets.ipv4()[0..<10])
        #expect(run(nat, &truncated, snapshot) == .drop(.truncated))
        #expect(nat.drops[.notForVIP] == 1 && nat.drops[.noFlow] == 2 && nat.drops[.portsExhausted] == 1)
        #expect(nat.drops[.truncated] == 1)
    }

    @Test func noBackendAvailable() throws {
        let pool = try TestPackets.pool()
        for address in ["10.200.0.11", "10.200.0.12", "10.200.0.13"] {
            _ = try pool.setAdmin(Endpoint(address: IPAddress(address)!, port: 8080), to: .disabled, now: 0)
        }
        let nat = rewriter()
        var syn = TestPackets.ipv4()
        #expect(run(nat, &syn, pool.snapshot()) == .drop(.noBackend))
    }

    @Test func portsAreFreedWhenFlowsEnd() throws {
        let pool = try TestPackets.pool()
        let nat = rewriter(ports: 30000...30000)
        var syn = TestPackets.ipv4(sport: 1)
        #expect(run(nat, &syn, pool.snapshot(), now: 1) == .forward(0..<syn.count))
        let backend = try #require(pool.snapshot().candidates.first { $0.backend.ipv4 == TestPackets.read32(syn, 16) })
        #expect(backend.backend.stats.active == 1)
        var rst = TestPackets.ipv4(sport: 1, flags: TCPFlags.rst)
        #expect(run(nat, &rst, pool.snapshot(), now: 2) == .forward(0..<rst.count))
        // The closed flow expires after the closed timeout, which frees the only port.
        let later = 2 + FlowTimeouts().closed
        var next = TestPackets.ipv4(sport: 2)
        #expect(run(nat, &next, pool.snapshot(), now: later) == .forward(0..<next.count))
        #expect(TestPackets.read16(next, 20) == 30000)
        #expect(nat.flows.counters.expired == 1)
        let total = pool.snapshot().candidates.map { $0.backend.stats.active }.reduce(0, +)
        #expect(total == 1)
    }

    @Test func spreadsFlowsOverBackendsLikeMaglev() throws {
        let snapshot = try TestPackets.pool().snapshot()
        let nat = rewriter()
        var perBackend: [UInt32: Int] = [:]
        for n in 0..<3000 {
            var syn = TestPackets.ipv4(src: 0x0A01_0000 | UInt32(n / 100), sport: UInt16(30000 + n))
            guard case .forward = run(nat, &syn, snapshot) else {
                Issue.record("flow \(n) dropped")
                return
            }
            perBackend[TestPackets.read32(syn, 16), default: 0] += 1
        }
        #expect(perBackend.count == 3)
        // Maglev gives each of three equal backends a third of the table: ±10 % of 1000 flows.
        for (_, count) in perBackend { #expect((900...1100).contains(count), "\(perBackend)") }
    }
}
