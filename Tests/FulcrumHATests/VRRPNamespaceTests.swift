import Foundation
import FulcrumCore
import FulcrumTestSupport
import Glibc
import Logging
import Synchronization
import Testing

@testable import FulcrumHA

private let vip = "10.201.0.50"

private func settings(_ lab: NamespaceLab, node: Int, priority: Int, trackWeight: Int = 0) -> VRRPInstanceSettings {
    VRRPInstanceSettings(
        interface: "eth0", virtualRouterId: 51, priority: priority, advertInterval: .milliseconds(100),
        virtualAddresses: [VRRPVirtualAddress(address: IPAddress(vip)!, prefixLength: 24)], trackWeight: trackWeight,
        networkNamespacePath: lab.netnsPath(node))
}

/// A running service and the task that runs it; `stop()` cancels it (a graceful VRRP shutdown) and waits.
private struct Running {
    let service: VRRPService
    let task: Task<Void, any Error>

    init(_ settings: VRRPInstanceSettings) {
        var logger = Logger(label: "fulcrum.ha.test")
        logger.logLevel = .warning
        let service = VRRPService(settings: settings, logger: logger)
        self.service = service
        task = Task { try await service.run() }
    }

    func stop() async throws {
        task.cancel()
        try await task.value
    }
}

private func milliseconds(_ d: Duration) -> Int {
    Int(d.components.seconds) * 1000 + Int(d.components.attoseconds / 1_000_000_000_000_000)
}

@Suite(
    .serialized,
    .enabled(
        if: isRoot, "SKIPPED LOUDLY: VRRP namespace tests need root and iproute2 (network namespaces, raw sockets)"))
struct VRRPNamespaceTests {
    @Test func twoFulcrumRoutersElectHandOverAndTakeOverAfterACrash() async throws {
        let lab = NamespaceLab(tag: "p", nodeCount: 3)  // node 2 is a client
        await lab.tearDown()
        do {
            try await lab.setUp()
            try await pair(lab)
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }

    private func pair(_ lab: NamespaceLab) async throws {
        var a = Running(settings(lab, node: 0, priority: 200))
        let b = Running(settings(lab, node: 1, priority: 100))
        defer {
            a.task.cancel()
            b.task.cancel()
        }
        #expect(
            await eventually(within: .seconds(5)) {
                a.service.status.state == .master && b.service.status.state == .backup
            })
        #expect(try await lab.holds(0, vip))
        #expect(try await !lab.holds(1, vip))
        #expect(await eventually(within: .seconds(2)) { b.service.status.advertsReceived >= 3 })
        #expect(b.service.status.drops.total == 0, "\(b.service.status.drops)")
        #expect(a.service.status.primaryAddress == IPAddress(lab.address(0)))

        // Graceful stop: the priority-0 advert makes B master after its Skew_Time (156/256 × 100 ms ≈ 61 ms).
        // The handover is timed before anything else is checked: each `lab.holds` runs `ip`, and spawning a
        // process on a loaded machine can take a good part of the bound.
        let clock = ContinuousClock()
        let stopped = clock.now
        try await a.stop()
        #expect(await eventually(within: .seconds(2)) { b.service.status.state == .master })
        let handover = clock.now - stopped
        #expect(try await !lab.holds(0, vip), "the stopped master gave its address back")
        #expect(try await lab.holds(1, vip))
        print("VRRP pair: graceful handover took \(milliseconds(handover)) ms (Skew_Time 61 ms + stop)")
        #expect(handover < .milliseconds(500))

        // A returns with the higher priority and preempts.
        a = Running(settings(lab, node: 0, priority: 200, trackWeight: 150))
        #expect(
            await eventually(within: .seconds(5)) {
                a.service.status.state == .master && b.service.status.state == .backup
            })
        #expect(try await lab.holds(0, vip))
        #expect(try await !lab.holds(1, vip))

        // Tracking: A turns sick (200 − 150 = 50 < 100) and B preempts it; healthy again, A preempts back.
        a.service.setTracking(failing: true)
        #expect(
            await eventually(within: .seconds(3)) {
                b.service.status.state == .master && a.service.status.state == .backup
            })
        #expect(a.service.status.effectivePriority == 50)
        #expect(try await lab.holds(1, vip))
        a.service.setTracking(failing: false)
        #expect(
            await eventually(within: .seconds(3)) {
                a.service.status.state == .master && b.service.status.state == .backup
            })
        #expect(try await lab.holds(0, vip))

        // The client has A's MAC for the address (locktime 0: it accepts ARP updates at any time).
        try await lab.run("ip", "netns", "exec", lab.nodes[2], "sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0")
        try await lab.run(
            "ip", "-n", lab.nodes[2], "neigh", "replace", vip, "lladdr", "02:00:00:00:01:02", "dev", "eth0", "nud",
            "stale")
        #expect(try await lab.neighbour(2, vip)?.contains("02:00:00:00:01:02") == true)

        // Crash model: A's link goes down (it says nothing more); B takes over after Master_Down_Interval
        // (3 × 100 ms + 61 ms ≈ 361 ms after A's last advert).
        // Two stamps around `ip link set down` (a process spawn, slow on a loaded machine): the lower bound
        // (B waits out Master_Down_Interval) is measured from before the link can have gone down, the upper
        // bound from after it certainly has.
        let crashing = clock.now
        try await lab.setLink(0, up: false)
        let crashed = clock.now
        #expect(await eventually(within: .seconds(3)) { b.service.status.state == .master })
        let tookOver = clock.now
        let takeover = tookOver - crashed
        #expect(try await lab.holds(1, vip))
        print("VRRP pair: takeover after link down took \(milliseconds(takeover)) ms (Master_Down_Interval 361 ms)")
        #expect(tookOver - crashing > .milliseconds(200) && takeover < .milliseconds(1500))
        // B's gratuitous ARP moved the client's entry to B's MAC without the client asking.
        #expect(
            try await eventually(within: .seconds(2)) {
                try await lab.neighbour(2, vip)?.contains("02:00:00:00:01:03") == true
            })
        // A still believes it is master; its adverts fail on the downed link and are counted.
        #expect(await eventually(within: .seconds(2)) { a.service.status.systemErrors > 0 })

        // The link comes back: two masters for a moment, then the higher priority wins again.
        try await lab.setLink(0, up: true)
        #expect(
            await eventually(within: .seconds(5)) {
                a.service.status.state == .master && b.service.status.state == .backup
            })
        #expect(try await !lab.holds(1, vip))

        try await a.stop()
        try await b.stop()
        #expect(a.service.status.state == .initialize && b.service.status.state == .initialize)
        #expect(try await !lab.holds(0, vip), "A gave the address back on stop")
        #expect(try await !lab.holds(1, vip), "B gave the address back on stop")
    }

    /// keepalived's `unicast_peer`: no multicast at all, each node advertises to the other's address.
    @Test func unicastPeersElectAndHandOver() async throws {
        let lab = NamespaceLab(tag: "u", nodeCount: 2)
        await lab.tearDown()
        do {
            try await lab.setUp()
            var first = settings(lab, node: 0, priority: 200)
            first.unicastPeers = [IPAddress(lab.address(1))!]
            var second = settings(lab, node: 1, priority: 100)
            second.unicastPeers = [IPAddress(lab.address(0))!]
            let a = Running(first)
            let b = Running(second)
            defer {
                a.task.cancel()
                b.task.cancel()
            }
            #expect(
                await eventually(within: .seconds(5)) {
                    a.service.status.state == .master && b.service.status.state == .backup
                })
            #expect(await eventually(within: .seconds(2)) { b.service.status.advertsReceived >= 3 })
            #expect(b.service.status.drops.total == 0, "\(b.service.status.drops)")
            #expect(try await lab.holds(0, vip))
            try await a.stop()
            #expect(await eventually(within: .seconds(2)) { b.service.status.state == .master })
            #expect(try await lab.holds(1, vip))
            try await b.stop()
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }

    /// The address owner (255) is master at once, and re-announces the address on the refresh period: a
    /// neighbour whose entry went wrong is corrected without asking.
    @Test func theOwnerIsMasterAtOnceAndRefreshesItsAnnouncement() async throws {
        let lab = NamespaceLab(tag: "o", nodeCount: 2)  // node 1 is a client
        await lab.tearDown()
        do {
            try await lab.setUp()
            var owner = settings(lab, node: 0, priority: 255)
            owner.gratuitousARPRefresh = .milliseconds(200)
            let a = Running(owner)
            defer { a.task.cancel() }
            #expect(await eventually(within: .seconds(2)) { a.service.status.state == .master })
            #expect(try await lab.holds(0, vip))
            try await lab.run("ip", "netns", "exec", lab.nodes[1], "sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0")
            try await lab.run(
                "ip", "-n", lab.nodes[1], "neigh", "replace", vip, "lladdr", "02:00:00:00:09:09", "dev", "eth0", "nud",
                "stale")
            #expect(
                try await eventually(within: .seconds(2)) {
                    try await lab.neighbour(1, vip)?.contains("02:00:00:00:01:02") == true
                })
            try await a.stop()
            #expect(try await !lab.holds(0, vip))
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }

    /// With the packet plane serving the address, the master leaves the kernel alone and reports its
    /// transitions through `onTransition`.
    @Test func withoutManagingAddressesOnlyTransitionsAreReported() async throws {
        let lab = NamespaceLab(tag: "m", nodeCount: 1)
        await lab.tearDown()
        do {
            try await lab.setUp()
            var unmanaged = settings(lab, node: 0, priority: 100)
            unmanaged.managesAddresses = false
            let seen = Mutex<[VRRPStateMachine.State]>([])
            var logger = Logger(label: "fulcrum.ha.test")
            logger.logLevel = .warning
            let service = VRRPService(settings: unmanaged, logger: logger) { state in seen.withLock { $0.append(state) }
            }
            let task = Task { try await service.run() }
            defer { task.cancel() }
            #expect(await eventually(within: .seconds(3)) { service.status.state == .master })
            #expect(try await !lab.holds(0, vip))
            task.cancel()
            try await task.value
            #expect(seen.withLock { $0 } == [.backup, .master, .initialize])
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }

    @Test func badAdvertsAreCountedAndIgnored() async throws {
        let lab = NamespaceLab(tag: "b", nodeCount: 2)
        await lab.tearDown()
        do {
            try await lab.setUp()
            let backup = Running(settings(lab, node: 1, priority: 100))
            defer { backup.task.cancel() }
            #expect(await eventually(within: .seconds(2)) { backup.service.status.state == .backup })
            // Forged adverts from node 0's namespace with a higher priority: each fails one check.
            let good = try VRRPAdvertisement(
                virtualRouterId: 51, priority: 250, maxAdvertInterval: 100, addresses: [IPAddress(vip)!])
            let source = IPAddress(lab.address(0))!
            let group = FulcrumHA.vrrpMulticastGroup
            var badChecksum = good.encodePacket(source: source, destination: group)!
            badChecksum[27] ^= 0xFF
            var badVersion = good.encodePacket(source: source, destination: group)!
            badVersion[20] = 0x21
            let packets: [[UInt8]] = [
                good.encodePacket(source: source, destination: group, ttl: 64)!, badChecksum, badVersion,
            ]
            try await sendRaw(packets, inNamespace: lab.netnsPath(0), repeat: 20)
            #expect(await eventually(within: .seconds(2)) { backup.service.status.drops.total >= 60 })
            let drops = backup.service.status.drops
            #expect(drops[.wrongTTL] == 20 && drops[.badChecksum] == 20 && drops[.wrongVersion] == 20, "\(drops)")
            #expect(backup.service.status.advertsReceived == 0)
            // None of them held it back: with no valid master it takes over.
            #expect(await eventually(within: .seconds(3)) { backup.service.status.state == .master })
            try await backup.stop()
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }
}

/// Sends whole IPv4 packets (IP_HDRINCL) to 224.0.0.18 from a thread moved into the namespace.
private func sendRaw(_ packets: [[UInt8]], inNamespace path: String, repeat count: Int) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let thread = Thread {
            continuation.resume(
                with: Result {
                    let rc = path.withCString { fulcrumEnterNetns($0) }
                    guard rc == 0 else { throw LabError(message: "setns: \(rc)") }
                    let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), 112)
                    guard fd >= 0 else { throw LabError(message: "socket: \(errno)") }
                    defer { close(fd) }
                    var one: Int32 = 1
                    setsockopt(fd, Int32(IPPROTO_IP), IP_HDRINCL, &one, 4)
                    _ = "eth0".withCString { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, 5) }
                    var to = sockaddr_in()
                    to.sin_family = sa_family_t(AF_INET)
                    to.sin_addr.s_addr = UInt32(0xE000_0012).bigEndian
                    for _ in 0..<count {
                        for packet in packets {
                            let sent = packet.withUnsafeBytes { bytes in
                                withUnsafePointer(to: &to) {
                                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                                        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, 16)
                                    }
                                }
                            }
                            guard sent == packet.count else { throw LabError(message: "sendto: \(errno)") }
                        }
                    }
                })
        }
        thread.start()
    }
}
