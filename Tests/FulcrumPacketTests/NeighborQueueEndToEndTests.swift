import Foundation
import FulcrumCore
import FulcrumPacket
import Synchronization
import Testing

/// DSR to a backend whose MAC is not known yet: the first SYN waits in the neighbour queue until the backend
/// answers ARP, instead of being dropped (which would cost the client a 1 s SYN retransmit). Needs root.
@Suite(.serialized) struct NeighborQueueEndToEndTests {
    @Test(.enabled(if: isRoot, "needs root for network namespaces: neighbour-queue end-to-end test SKIPPED"))
    func theFirstSYNToAnUnknownBackendWaitsForARP() throws {
        let serial = RunningMode.labsCreated.add(1, ordering: .relaxed).newValue
        let lab = NamespaceLab(prefix: "fpq\(getpid() % 100_000)x\(serial)")
        var service: DSRVirtualService?
        defer {
            service?.stop()
            lab.tearDown()
        }
        try lab.build()
        try lab.configureForDSR()
        try lab.startBackends(bindVIP: true)
        let be1 = "\(lab.prefix)-be1"
        // be1 does not answer ARP yet: the balancer cannot learn its MAC.
        try lab.ip(["-n", be1, "link", "set", "eth0", "arp", "off"])
        let dsr = try DSRVirtualService(
            service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp),
            pool: TestPackets.pool(["10.200.0.11"], port: 80), interface: "eth0",
            networkNamespace: "/var/run/netns/\(lab.lb)")
        service = dsr
        try dsr.start()
        let synRetransmits = { () throws -> Int in
            let out = try lab.run("/usr/sbin/ip", ["netns", "exec", lab.client, "nstat", "-az", "TcpExtTCPSynRetrans"])
            return out.stdout.split(separator: "\n").compactMap { line -> Int? in
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                return fields.first == "TcpExtTCPSynRetrans" ? Int(fields[1]) : nil
            }.first ?? -1
        }
        let before = try synRetransmits()
        // The request starts while be1 is silent; be1 answers ARP again 300 ms later.
        let answer = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        let client = lab.client
        DispatchQueue.global().async {
            let out = try? lab.run(
                "/usr/sbin/ip", ["netns", "exec", client, "curl", "-s", "--max-time", "5", "http://10.200.0.100/id"],
                timeout: 7)
            answer.withLock { $0 = out?.stdout }
            done.signal()
        }
        #expect(waitUntil(seconds: 3) { dsr.statistics.queuedForNeighbor >= 1 }, "\(dsr.statistics)")
        try lab.ip(["-n", be1, "link", "set", "eth0", "arp", "on"])
        #expect(done.wait(timeout: .now() + 8) == .success)
        #expect(answer.withLock { $0 } == "be1")
        let stats = dsr.statistics
        print("neighbour queue e2e: \(stats)")
        #expect(stats.releasedAfterARP >= 1 && stats.neighborQueueDrops == 0, "\(stats)")
        #expect(try synRetransmits() == before, "the client did not have to resend its SYN")
    }
}
