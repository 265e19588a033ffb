import FulcrumCore
import FulcrumPacket
import FulcrumTestSupport
import Synchronization
import Testing

@testable import FulcrumHA

private let key = MirrorKey(bytes: Array("0123456789abcdef-shared-secret".utf8))
private let otherKey = MirrorKey(bytes: Array("not-the-shared-key-at-all-xxxxxx".utf8))

private func flow(_ n: UInt16, backend: UInt8 = 1, snat: UInt16? = nil, age: UInt64 = 0) -> MirroredFlow {
    MirroredFlow(
        service: "192.0.2.10:80/tcp",
        record: FlowRecord(
            key: FlowKey(
                source: 0x0A00_0001, destination: 0xC000_020A, sourcePort: 40000 + n, destinationPort: 80, proto: 6),
            backend: Endpoint(address: .v4(0x0A00_0100 | UInt32(backend)), port: 8080), snatPort: snat,
            state: .established, ageNanos: age))
}

private func removal(_ n: UInt16) -> MirroredFlowRemoval {
    MirroredFlowRemoval(service: "192.0.2.10:80/tcp", key: flow(n).key)
}

private func message(_ sequence: UInt64, epoch: UInt64 = 1, _ body: MirrorBody) -> MirrorMessage {
    MirrorMessage(sender: 7, epoch: epoch, sequence: sequence, body: body)
}

@Suite("Mirror framing and authentication")
struct MirrorFramingTests {
    @Test func roundTripsEveryKind() throws {
        let bodies: [MirrorBody] = [
            .snapshot(flows: [flow(1), flow(2, snat: 20001, age: 1_234_567_890_123)], last: false),
            .snapshot(flows: [], last: true),
            .update(upserts: [flow(3, backend: 2)], removals: [removal(1)]),
        ]
        for (i, body) in bodies.enumerated() {
            let original = message(UInt64(i + 1), body)
            let frame = original.encode(key: key)
            #expect(try MirrorMessage.frameLength(header: frame) == frame.count)
            #expect(try MirrorMessage.decode(frame, key: key) == original)
        }
    }

    @Test func aForgedMessageWithoutTheKeyChangesNothing() throws {
        var receiver = MirrorReceiver(key: key)
        #expect(receiver.receive(message(1, .snapshot(flows: [flow(1)], last: true)).encode(key: key)) != nil)
        let before = receiver.table
        // Signed with another key, and a genuine frame with one body byte flipped.
        #expect(receiver.receive(message(2, .update(upserts: [flow(9)], removals: [])).encode(key: otherKey)) == nil)
        var tampered = message(3, .update(upserts: [flow(1, backend: 9)], removals: [])).encode(key: key)
        tampered[MirrorMessage.headerLength + 10] ^= 0x01
        #expect(receiver.receive(tampered) == nil)
        #expect(receiver.table == before)
        #expect(receiver.counters.unauthenticated == 2)
        #expect(receiver.counters.accepted == 1)
    }

    @Test func aReplayedOrOlderSequenceIsRejected() {
        var receiver = MirrorReceiver(key: key)
        let first = message(5, .snapshot(flows: [flow(1)], last: true)).encode(key: key)
        let removal = message(
            6, .update(upserts: [], removals: [removal(1)])
        )
        .encode(key: key)
        #expect(receiver.receive(first) != nil)
        #expect(receiver.receive(removal) != nil)
        #expect(receiver.table.isEmpty)
        // Replaying the snapshot (sequence 5 < 6) must not bring the flow back; nor may an equal sequence.
        #expect(receiver.receive(first) == nil)
        #expect(receiver.receive(removal) == nil)
        #expect(receiver.table.isEmpty)
        #expect(receiver.counters.replayed == 2)
        // A new run of the sender (larger epoch) starts its sequence again.
        #expect(receiver.receive(message(1, epoch: 2, .snapshot(flows: [flow(4)], last: true)).encode(key: key)) != nil)
        #expect(receiver.table.count == 1)
        // The old epoch stays refused.
        #expect(receiver.receive(message(7, epoch: 1, .snapshot(flows: [], last: true)).encode(key: key)) == nil)
    }

    @Test func malformedHeadersAndBodiesAreRefused() {
        var frame = message(1, .snapshot(flows: [flow(1)], last: true)).encode(key: key)
        frame[0] = UInt8(ascii: "X")
        #expect(throws: MirrorMessage.DecodeError.badMagic) { try MirrorMessage.frameLength(header: frame) }
        #expect(throws: MirrorMessage.DecodeError.truncated) { try MirrorMessage.frameLength(header: frame.prefix(10)) }
        var huge = MirrorWriter()
        huge.bytes = MirrorMessage.magic + [MirrorMessage.version, 3, 0, 0] + [UInt8](repeating: 0, count: 24)
        huge.u32(UInt32(MirrorMessage.maxBodyLength + 1))
        #expect(throws: MirrorMessage.DecodeError.bodyTooLarge(MirrorMessage.maxBodyLength + 1)) {
            try MirrorMessage.frameLength(header: huge.bytes)
        }
        // A validly MAC'd body that lies about its count is malformed, not a crash.
        var body = MirrorWriter()
        body.u32(1_000_000)
        var forged = MirrorWriter()
        forged.bytes = MirrorMessage.magic + [MirrorMessage.version, 3, 0, 0]
        forged.u64(7)
        forged.u64(1)
        forged.u64(1)
        forged.u32(UInt32(body.bytes.count))
        forged.bytes += body.bytes
        forged.bytes += key.authenticationCode(for: forged.bytes)
        var receiver = MirrorReceiver(key: key)
        #expect(receiver.receive(forged.bytes) == nil)
        #expect(receiver.counters.malformed == 1)
    }

    @Test func aSnapshotInPartsReplacesTheTableOnlyWhenComplete() {
        var receiver = MirrorReceiver(key: key)
        _ = receiver.receive(message(1, .snapshot(flows: [flow(1)], last: true)).encode(key: key))
        #expect(receiver.receive(message(2, .snapshot(flows: [flow(2)], last: false)).encode(key: key)) == .pending)
        #expect(Set(receiver.table.keys) == [flow(1).id])
        #expect(receiver.receive(message(3, .snapshot(flows: [flow(3)], last: true)).encode(key: key)) != nil)
        #expect(Set(receiver.table.keys) == [flow(2).id, flow(3).id])
    }

    @Test func theReceiverTableIsBounded() {
        var receiver = MirrorReceiver(key: key, capacity: 2)
        _ = receiver.receive(message(1, .update(upserts: [flow(1), flow(2), flow(3)], removals: [])).encode(key: key))
        #expect(receiver.table.count == 2)
        #expect(receiver.overCapacity == 1)
    }
}

/// An in-memory stand-in for the packet plane at both ends of the loopback test: a flow table, and a change
/// feed that records only while publishing is on (as `FlowMirrorPort` does).
private final class MemoryFlows: MirrorFlowSource, MirrorFlowSink {
    let flows = Mutex<[MirroredFlowID: MirroredFlow]>([:])
    let feed = Mutex(MirrorFlowChanges())
    let publishing = Atomic<Bool>(false)

    func setPublishing(_ on: Bool) { publishing.store(on, ordering: .relaxed) }
    func snapshotFlows() -> [MirroredFlow] {
        feed.withLock { $0 = MirrorFlowChanges() }
        return flows.withLock { Array($0.values) }
    }
    func drainChanges() -> MirrorFlowChanges {
        feed.withLock { feed in
            defer { feed = MirrorFlowChanges() }
            return feed
        }
    }

    /// A flow starts or ends on the active (nil: ends).
    func change(_ id: MirroredFlowID, _ flow: MirroredFlow?) {
        flows.withLock { $0[id] = flow }
        guard publishing.load(ordering: .relaxed) else { return }
        feed.withLock {
            if let flow {
                $0.upserts.append(flow)
            } else {
                $0.removals.append(MirroredFlowRemoval(service: id.service, key: id.key))
            }
        }
    }

    func forceResync() { feed.withLock { $0.resyncNeeded = true } }

    func apply(_ change: MirrorReceiver.Change) {
        flows.withLock { table in
            switch change {
            case .replaced(let all, let stale):
                for removal in stale { table[MirroredFlowID(service: removal.service, key: removal.key)] = nil }
                for flow in all { table[flow.id] = flow }
            case .updated(let upserts, let removals):
                for removal in removals { table[MirroredFlowID(service: removal.service, key: removal.key)] = nil }
                for flow in upserts { table[flow.id] = flow }
            case .pending: break
            }
        }
    }
}

@Suite("Mirror over loopback TCP")
struct MirrorLoopbackTests {
    @Test func aStandbyReceivesTheSnapshotThenUpdates() async throws {
        let loopback = IPAddress.v4(0x7F00_0001)
        let activeTable = MemoryFlows()
        let standbyTable = MemoryFlows()
        for n in 0..<1000 { activeTable.flows.withLock { $0[flow(UInt16(n)).id] = flow(UInt16(n)) } }

        let standby = MirrorService(
            settings: .init(listen: Endpoint(address: loopback, port: 0), peers: [], key: key),
            source: standbyTable, sink: standbyTable, isActive: { false })
        // The standby accepts only its configured peer (the active's address: loopback).
        let standbyAllowing = MirrorService(
            settings: .init(
                listen: Endpoint(address: loopback, port: 0), peers: [Endpoint(address: loopback, port: 1)], key: key),
            source: standbyTable, sink: standbyTable, isActive: { false })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await standbyAllowing.run() }
            group.addTask { try await standby.run() }
            #expect(await eventually { standbyAllowing.boundPort != nil && standby.boundPort != nil })
            let port = UInt16(standbyAllowing.boundPort!)
            let active = MirrorService(
                settings: .init(
                    listen: Endpoint(address: loopback, port: 0), peers: [Endpoint(address: loopback, port: port)],
                    key: key, batchInterval: .milliseconds(10), batchLimit: 300),
                source: activeTable, sink: activeTable, isActive: { true })
            group.addTask { try await active.run() }

            // The snapshot (1000 flows in four parts of at most 300) arrives whole.
            #expect(await eventually(within: .seconds(10)) { standbyTable.flows.withLock { $0.count } == 1000 })
            let identical = standbyTable.flows.withLock { $0 } == activeTable.flows.withLock { $0 }
            #expect(identical)

            // Updates: one flow ends and is replaced by one to another backend, one ends, one starts.
            #expect(await eventually { activeTable.publishing.load(ordering: .relaxed) })
            activeTable.change(flow(1).id, nil)
            activeTable.change(flow(1).id, flow(1, backend: 7))
            activeTable.change(flow(2).id, nil)
            activeTable.change(flow(5000).id, flow(5000))
            #expect(
                await eventually(within: .seconds(10)) {
                    standbyTable.flows.withLock {
                        $0[flow(1).id]?.record.backend == flow(1, backend: 7).record.backend
                            && $0[flow(2).id] == nil && $0[flow(5000).id] != nil
                    }
                })
            #expect(active.counters.snapshotsSent >= 1)
            #expect(standbyAllowing.counters.received.accepted >= 5)

            // A feed that overflowed (changes lost) makes the active resend everything; a flow the standby
            // missed arrives with it, and one the standby still holds but the active no longer has goes.
            activeTable.flows.withLock {
                $0[flow(3).id] = nil
                $0[flow(6000).id] = flow(6000)
            }
            activeTable.forceResync()
            #expect(
                await eventually(within: .seconds(10)) {
                    standbyTable.flows.withLock { $0[flow(3).id] == nil && $0[flow(6000).id] != nil }
                })
            #expect(active.counters.resyncs >= 1)

            // A second active with the wrong key reaches the same standby: nothing changes, drops are counted.
            let forger = MirrorService(
                settings: .init(
                    listen: Endpoint(address: loopback, port: 0), peers: [Endpoint(address: loopback, port: port)],
                    key: otherKey, batchInterval: .milliseconds(10)),
                source: MemoryFlows(), sink: MemoryFlows(), isActive: { true })
            group.addTask { try await forger.run() }
            #expect(await eventually(within: .seconds(10)) { standbyAllowing.counters.received.unauthenticated >= 1 })
            #expect(standbyTable.flows.withLock { $0.count } == 1000)

            // A peer that is not configured is refused at connect.
            let stranger = MirrorService(
                settings: .init(
                    listen: Endpoint(address: loopback, port: 0),
                    peers: [Endpoint(address: loopback, port: UInt16(standby.boundPort!))], key: key,
                    batchInterval: .milliseconds(10)),
                source: activeTable, sink: MemoryFlows(), isActive: { true })
            group.addTask { try await stranger.run() }
            #expect(await eventually(within: .seconds(10)) { standby.counters.unknownPeers >= 1 })
            #expect(standbyTable.flows.withLock { $0.count } == 1000)
            group.cancelAll()
        }
    }
}

@Suite("Packet plane records over the mirror")
struct PacketPlaneMirroringTests {
    static func pool(_ addresses: [String]) throws -> Pool {
        try Pool(
            name: "vs", settings: PoolSettings(algorithm: .maglev),
            backends: addresses.map { BackendSpec(endpoint: Endpoint(address: IPAddress($0)!, port: 80)) }, now: 0)
    }

    @Test func mirroredDSRFlowsKeepTheirBackendOnTheNewMasterAfterThePoolChanged() throws {
        let activePool = try Self.pool(["10.0.0.11", "10.0.0.12"])
        let active = BackendFlows(capacity: 4096, timeouts: FlowTimeouts())
        var keys: [FlowKey] = []
        for n in 0..<500 {
            let key = FlowKey(
                source: 0xC633_6400 | UInt32(n), destination: 0xC000_020A, sourcePort: UInt16(30000 + n),
                destinationPort: 80, proto: 6)
            _ = try active.backend(for: key, tcpFlags: TCPFlags.syn, snapshot: activePool.snapshot(), now: 1)
            keys.append(key)
        }
        let exported = active.flowRecords(now: 1).map { MirroredFlow(service: "web", record: $0) }
        #expect(exported.count == 500)

        // Over the wire and into the standby, whose pool meanwhile grew (Maglev would move ~1/3 of new picks).
        var receiver = MirrorReceiver(key: key)
        let frame = MirrorMessage(sender: 1, epoch: 1, sequence: 1, body: .snapshot(flows: exported, last: true))
            .encode(key: key)
        guard case .replaced(let received, _) = receiver.receive(frame) else {
            Issue.record("snapshot refused")
            return
        }
        let standbyPool = try Self.pool(["10.0.0.11", "10.0.0.12", "10.0.0.13"])
        let standby = BackendFlows(capacity: 4096, timeouts: FlowTimeouts())
        #expect(received.count == 500)
        #expect(standby.installMirrored(received.map(\.record), snapshot: standbyPool.snapshot(), now: 2) == 0)

        var moved = 0
        var unmirroredWouldMove = 0
        let fresh = BackendFlows(capacity: 4096, timeouts: FlowTimeouts())
        for key in keys {
            let original = try active.backend(for: key, tcpFlags: TCPFlags.ack, snapshot: activePool.snapshot(), now: 3)
            let afterTakeover = try standby.backend(
                for: key, tcpFlags: TCPFlags.ack, snapshot: standbyPool.snapshot(), now: 3)
            if afterTakeover.endpoint != original.endpoint { moved += 1 }
            let withoutMirror = try fresh.backend(
                for: key, tcpFlags: TCPFlags.ack, snapshot: standbyPool.snapshot(), now: 3)
            if withoutMirror.endpoint != original.endpoint { unmirroredWouldMove += 1 }
        }
        #expect(moved == 0)
        // The comparison that shows the mirror mattered: without it a share of the flows would move.
        #expect(unmirroredWouldMove > 50)
        // The installed flows count as the backends' connections (least-connections sees them).
        let connections = standbyPool.snapshot().members.map { $0.backend.stats.active }.reduce(0, +)
        #expect(connections >= 500)

        standby.removeMirrored([keys[0]], now: 4)
        #expect(standby.flows.count == 499)
    }
}
