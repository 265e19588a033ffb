import Foundation
import FulcrumCore
import FulcrumTestSupport
import Glibc
import Logging
import Testing

@testable import FulcrumHA

private let keepalivedPath = "/usr/sbin/keepalived"
private let canRunKeepalived = isRoot && FileManager.default.isExecutableFile(atPath: keepalivedPath)
private let vip = "10.201.0.60"

/// keepalived 2.2.7 (Debian) in a namespace of the lab: started and killed by PID, files in a scratch folder.
private final class Keepalived: @unchecked Sendable {
    // @unchecked: the process handle is touched only by the test that owns this object, one step at a time.
    let directory: URL
    let process = Process()
    private var killed = false

    init(lab: NamespaceLab, node: Int, priority: Int, state: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fha-keepalived-\(getpid())-\(node)")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = """
            global_defs {
              router_id fulcrum-test
              vrrp_version 3
            }
            vrrp_instance VI_T {
              state \(state)
              interface eth0
              virtual_router_id 52
              priority \(priority)
              advert_int 0.1
              virtual_ipaddress {
                \(vip)/24 dev eth0
              }
            }

            """
        let file = directory.appendingPathComponent("k.conf")
        try config.write(to: file, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = [
            "netns", "exec", lab.nodes[node], keepalivedPath, "-n", "-l", "-D", "-P", "-f", file.path,
            "-p", directory.appendingPathComponent("k.pid").path,
            "-r", directory.appendingPathComponent("k.vrrp.pid").path,
        ]
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("k.log").path, contents: nil)
        let log = FileHandle(forWritingAtPath: directory.appendingPathComponent("k.log").path)
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    /// The VRRP child's PID, once keepalived wrote it.
    var vrrpChild: pid_t? {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("k.vrrp.pid"), encoding: .utf8)
        else { return nil }
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// What keepalived logged, for failure messages.
    var log: String {
        (try? String(contentsOf: directory.appendingPathComponent("k.log"), encoding: .utf8)) ?? "(no log)"
    }

    /// A crash of keepalived (the processes we started): the parent is frozen first so it can neither respawn
    /// the VRRP child nor, by dying, make the child stop gracefully (its parent-death signal is SIGTERM); then
    /// both get SIGKILL and the parent is reaped.
    func kill() {
        // Once only: a second signal to a remembered PID could hit a process that reused it.
        guard !killed else { return }
        killed = true
        let parent = process.processIdentifier
        let running = process.isRunning
        if running { Glibc.kill(parent, SIGSTOP) }
        if let child = vrrpChild { Glibc.kill(child, SIGKILL) }
        if running { Glibc.kill(parent, SIGKILL) }
        process.waitUntilExit()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }
}

private func fulcrum(_ lab: NamespaceLab, node: Int, priority: Int) -> (VRRPService, Task<Void, any Error>) {
    var logger = Logger(label: "fulcrum.ha.test")
    logger.logLevel = .warning
    let service = VRRPService(
        settings: VRRPInstanceSettings(
            interface: "eth0", virtualRouterId: 52, priority: priority, advertInterval: .milliseconds(100),
            virtualAddresses: [VRRPVirtualAddress(address: IPAddress(vip)!, prefixLength: 24)],
            networkNamespacePath: lab.netnsPath(node)),
        logger: logger)
    return (service, Task { try await service.run() })
}

@Suite(
    .serialized,
    .enabled(
        if: canRunKeepalived,
        "SKIPPED LOUDLY: keepalived interop needs root and keepalived (`apt-get install -y keepalived`)"))
struct VRRPKeepalivedInteropTests {
    /// keepalived master (150) + Fulcrum backup (100): Fulcrum accepts keepalived's adverts and stays backup;
    /// keepalived crashes (SIGKILL + link down) and Fulcrum takes the address.
    @Test func fulcrumBacksUpKeepalivedAndTakesOverWhenItDies() async throws {
        let lab = NamespaceLab(tag: "k", nodeCount: 2)
        await lab.tearDown()
        do {
            try await lab.setUp()
            let keepalived = try Keepalived(lab: lab, node: 0, priority: 150, state: "MASTER")
            defer { keepalived.kill() }
            #expect(
                try await eventually(within: .seconds(10)) { try await lab.holds(0, vip) },
                "keepalived: \(keepalived.log)")
            let (service, task) = fulcrum(lab, node: 1, priority: 100)
            defer { task.cancel() }
            #expect(await eventually(within: .seconds(3)) { service.status.advertsReceived >= 5 })
            #expect(service.status.drops.total == 0, "keepalived's adverts pass our checks: \(service.status.drops)")
            // Three Master_Down_Intervals later it is still backup: keepalived's adverts hold it.
            try await Task.sleep(for: .milliseconds(1200))  // observing that nothing changes needs elapsed time
            #expect(service.status.state == .backup)
            #expect(try await !lab.holds(1, vip))

            let clock = ContinuousClock()
            let crashing = clock.now
            keepalived.kill()
            // Its adverts stopped with the kill (the VRRP child is killed first); the timing starts here.
            let crashed = clock.now
            #expect(await eventually(within: .seconds(3)) { service.status.state == .master })
            let tookOver = clock.now
            // Only then the link: `ip` is a process spawn, slow on a loaded machine, and keepalived's address
            // (left behind by SIGKILL) must not answer on the segment any more.
            try await lab.setLink(0, up: false)
            let takeover = tookOver - crashed
            #expect(try await lab.holds(1, vip))
            print("keepalived master crashed: Fulcrum took over in \(takeover) (Master_Down_Interval 361 ms)")
            // Not sooner than a crash allows (a graceful stop would take Skew_Time, ≈ 61 ms).
            #expect(tookOver - crashing > .milliseconds(200) && takeover < .milliseconds(1500), "\(takeover)")
            task.cancel()
            try await task.value
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }

    /// Fulcrum master (200) + keepalived backup (100): keepalived accepts Fulcrum's adverts (it never takes the
    /// address while Fulcrum runs); Fulcrum's graceful stop hands the address to keepalived at once.
    @Test func keepalivedBacksUpFulcrumAndTakesOverOnItsGracefulStop() async throws {
        let lab = NamespaceLab(tag: "j", nodeCount: 2)
        await lab.tearDown()
        do {
            try await lab.setUp()
            let (service, task) = fulcrum(lab, node: 0, priority: 200)
            defer { task.cancel() }
            #expect(await eventually(within: .seconds(3)) { service.status.state == .master })
            let keepalived = try Keepalived(lab: lab, node: 1, priority: 100, state: "BACKUP")
            defer { keepalived.kill() }
            #expect(await eventually(within: .seconds(5)) { keepalived.vrrpChild != nil })
            // keepalived's Master_Down_Interval is ≈ 361 ms; 1.5 s without taking the address means it
            // accepts ours. Observing that nothing changes needs elapsed time.
            try await Task.sleep(for: .milliseconds(1500))
            #expect(try await !lab.holds(1, vip), "keepalived took the address: \(keepalived.log)")
            #expect(try await lab.holds(0, vip))
            #expect(service.status.state == .master)

            let clock = ContinuousClock()
            let stopped = clock.now
            task.cancel()
            try await task.value
            #expect(
                try await eventually(within: .seconds(3)) { try await lab.holds(1, vip) },
                "keepalived: \(keepalived.log)")
            print("Fulcrum master stopped: keepalived took over in \(clock.now - stopped)")
            #expect(clock.now - stopped < .milliseconds(1000))
        } catch {
            await lab.tearDown()
            throw error
        }
        await lab.tearDown()
    }
}
