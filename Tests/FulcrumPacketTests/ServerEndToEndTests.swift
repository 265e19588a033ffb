import Foundation
import FulcrumCore
import FulcrumPacket
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The packet plane through the real server: `fulcrum run` with a config in the balancer's namespace, the same
/// lab as `EndToEndTests` (client, balancer, three backends on a bridge), health checks on, admin API on.
/// Backends listen on 0.0.0.0:80 so health checks reach their real address (docs/packet-plane.md). For IPIP the
/// backends run `fulcrum decap --ipip` (in-kernel decapsulation; user space in the "ipip-nobpf" case). Needs
/// root; skipped loudly otherwise.
@Suite(.serialized) struct ServerEndToEndTests {
    static let modes = ["dsr", "vxlan", "ipip", "nat"]

    /// Requests through the VIP reach every backend; the admin API and /metrics count them; a capture in the
    /// client's namespace shows who sent the replies: the backends in DSR and tunnel modes, the balancer in NAT.
    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: server packet-plane tests SKIPPED"),
        arguments: modes)
    func fulcrumRunForwardsAndCounts(mode: String) throws {
        let server = try RunningServer(mode)
        defer { server.stop() }
        let lab = server.lab
        let capture = try ReplyCapture(namespace: lab.client)
        let requests = 30
        let answers = try lab.requestThroughVIP(requests)
        #expect(answers.values.reduce(0, +) == requests)
        #expect(Set(answers.keys) == ["be1", "be2", "be3"], "every backend answers: \(answers)")

        let senders = capture.replySenders()
        let backendMACs = Set(lab.backends.map { $0.2 })
        print("\(mode) server e2e: answers \(answers.sorted { $0.key < $1.key }), reply senders \(senders)")
        #expect(!senders.isEmpty, "the capture saw the replies")
        if mode == "nat" {
            #expect(Set(senders.keys) == ["02:00:00:00:00:02"], "NAT replies come back through the balancer")
        } else {
            #expect(Set(senders.keys).isSubset(of: backendMACs), "replies bypass the balancer: \(senders)")
            #expect(senders.count == 3, "every backend replied directly: \(senders)")
        }

        let status = try server.virtualService()
        #expect(status["running"] as? Bool == true)
        #expect(status["flows_created"] as? Int == requests, "\(status)")
        #expect((status["packets_in"] as? Int ?? 0) >= requests * 3, "\(status)")
        if mode == "ipip" || mode == "vxlan" {
            // The whole-frame path runs: the log names the TAP (and for IPIP the tcx program).
            let log = (try? String(contentsOf: server.logFile, encoding: .utf8)) ?? ""
            let device = mode == "ipip" ? "eth0 -> fip0 (IPIP GSO, tcx program)" : "eth0 -> fvx0 (tunnel GSO)"
            #expect(log.contains(device), "\(log)")
            #expect(!log.contains("split in software"), "\(log)")
        }
        if mode == "ipip" {
            // The backends decapsulate in their kernel: each decap says so.
            for decapLog in server.decapsulatorLogs {
                let text = (try? String(contentsOf: decapLog, encoding: .utf8)) ?? ""
                #expect(text.contains("decapsulating IPIP in the kernel (tcx program on eth0)"), "\(text)")
                #expect(!text.contains("unavailable"), "\(text)")
            }
        }
        let metrics = try server.admin("/metrics")
        let modeLabel = mode == "vxlan" || mode == "ipip" ? "tunnel-\(mode)" : mode
        #expect(
            metrics.contains(
                "fulcrum_vs_flows_created_total{mode=\"\(modeLabel)\",virtual_service=\"web\"} \(requests)"),
            "\(metrics.split(separator: "\n").filter { $0.hasPrefix("fulcrum_vs_flows_created") })")
    }

    /// `fulcrum run` without CAP_BPF and CAP_SYS_ADMIN cannot load the IPIP encapsulation program: the service
    /// still starts, says once why it splits super-frames in software, and forwards. The backends decapsulate in
    /// user space here, through the command: be1 with `--user-space`, be2 and be3 because they cannot load their
    /// program either (same capabilities dropped) — each of those says once why.
    @Test(.enabled(if: isRoot, "needs root for network namespaces: server packet-plane tests SKIPPED"))
    func ipipWithoutBPFFallsBackAndSaysWhy() throws {
        let server = try RunningServer("ipip-nobpf")
        defer { server.stop() }
        // 30 requests, as in the test above: with 15, Maglev on random client ports leaves a backend out about
        // once in 150 runs (3 × (2/3)^15).
        let answers = try server.lab.requestThroughVIP(30)
        #expect(answers.values.reduce(0, +) == 30, "\(answers)")
        #expect(Set(answers.keys) == ["be1", "be2", "be3"], "every backend answers: \(answers)")
        let log = (try? String(contentsOf: server.logFile, encoding: .utf8)) ?? ""
        let warnings = log.split(separator: "\n").filter { $0.contains("split in software") }
        #expect(warnings.count == 1, "\(log)")
        #expect(warnings.first?.contains("IPIP encapsulation program not attached") == true, "\(log)")
        #expect(warnings.first?.contains("Operation not permitted") == true, "\(log)")
        #expect(log.contains("eth0 -> raw socket (software segmentation)"), "\(log)")
        for (index, decapLog) in server.decapsulatorLogs.enumerated() {
            let text = (try? String(contentsOf: decapLog, encoding: .utf8)) ?? ""
            #expect(text.contains("decapsulating IPIP in user space"), "\(text)")
            let fallbacks = text.split(separator: "\n").filter { $0.contains("in-kernel decapsulation unavailable") }
            if index == 0 {
                #expect(fallbacks.isEmpty, "--user-space asks for no program: \(text)")
            } else {
                #expect(fallbacks.count == 1, "\(text)")
                #expect(fallbacks.first?.contains("Operation not permitted") == true, "\(text)")
            }
        }
        let status = try server.virtualService()
        #expect(status["running"] as? Bool == true, "\(status)")
    }

    /// A backend whose service stops is marked down by its health check within fall × interval (+ one check
    /// timeout and scheduling slack); new flows then go to the others, and downloads from the healthy backends
    /// that were running all along complete byte-identical.
    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: server packet-plane tests SKIPPED"),
        arguments: modes)
    func aStoppedBackendLosesNewFlowsOnly(mode: String) throws {
        let server = try RunningServer(mode)
        defer { server.stop() }
        let lab = server.lab
        // Which backend each client port lands on (Maglev on the 5-tuple: the same port lands there again).
        let placement = try lab.requestsFromPorts(Array(41000..<41024))
        var downloads: [(port: Int, backend: String)] = []
        for backend in ["be1", "be2", "be3"] {
            let ports = placement.filter { $0.value == backend }.keys.sorted().prefix(2)
            try #require(!ports.isEmpty, "no port of 24 landed on \(backend): \(placement)")
            downloads += ports.map { ($0, backend) }
        }
        let running = try downloads.map { download in
            try lab.startDownload(localPort: download.port, rate: "2M")
        }
        defer { for process in running where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Let the downloads get going, then kill be3's server (by the PID we started).
        #expect(waitUntil(seconds: 5) { lab.establishedPorts(on: "be3").count >= 1 })
        lab.stopBackend(index: 2)
        // Killed and reaped: from here on its port refuses, so the clock starts here.
        let stoppedAt = Date()
        // Timed to the start of the poll that saw "down": each poll spawns `ip netns exec curl`, which on a loaded
        // machine takes a good part of a second, and the state may have changed at any moment during it (the
        // previous poll, which ended just before, still saw it up).
        var sawDownFrom = stoppedAt
        let markedDown = waitUntil(seconds: 5) {
            sawDownFrom = Date()
            return (try? server.backendState("10.200.0.13:80")) == "down"
        }
        let elapsed = sawDownFrom.timeIntervalSince(stoppedAt)
        let poll = Date().timeIntervalSince(sawDownFrom)
        print(
            "\(mode): be3 marked down after \(String(format: "%.2f", elapsed)) s (fall 2 × interval 0.5 s), "
                + "seen by a poll of \(String(format: "%.2f", poll)) s")
        #expect(markedDown)
        // fall × interval = 1 s, plus the timeout of the check in flight (0.25 s) and scheduling slack.
        #expect(elapsed < 2.5, "marked down after \(elapsed) s")
        let after = try lab.requestThroughVIP(15)
        #expect(after["be3"] == nil && after.values.reduce(0, +) == 15, "new flows avoid be3: \(after)")

        for (download, process) in zip(downloads, running) where download.backend != "be3" {
            process.waitUntilExit()
            let output = lab.downloadOutput(localPort: download.port)
            #expect(output.hasPrefix(lab.bigFileSHA256), "download on \(download.backend) intact: \(output)")
        }
    }

    /// Removing one backend from a Maglev pool (admin API, force) moves the flows that hashed to it and almost
    /// nothing else: the same 5-tuples, opened again, land where they did before unless they were on the
    /// removed backend.
    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: server packet-plane tests SKIPPED"),
        arguments: ["dsr", "nat"])
    func removingABackendMovesOnlyItsFlows(mode: String) throws {
        let server = try RunningServer(mode)
        defer { server.stop() }
        let lab = server.lab
        let ports = Array(43000..<43060)

        let before = try lab.requestsFromPorts(ports)
        #expect(before.count == ports.count, "every request answered: \(before.count)")
        // Control: without a change, the same 5-tuples land on the same backends.
        let again = try lab.requestsFromPorts(ports)
        #expect(again.count == ports.count, "every request answered again: \(again.count)")
        let unstable = ports.filter { again[$0] != nil && again[$0] != before[$0] }
        #expect(unstable.isEmpty, "without a change \(unstable.count) flows moved: \(unstable)")
        let removed = try server.admin(
            "/api/v1/pools/web/backends/10.200.0.13:80?force=true", method: "DELETE")
        #expect(removed.contains("removed"), "\(removed)")
        let after = try lab.requestsFromPorts(ports)
        let onRemoved = before.filter { $0.value == "be3" }.map(\.key)
        let others = before.filter { $0.value != "be3" }.map(\.key)
        #expect(after.count == ports.count, "every request answered after the removal: \(after.count)")
        let movedOthers = others.filter { after[$0] != nil && after[$0] != before[$0] }
        let changed = ports.filter { after[$0] != nil && after[$0] != before[$0] }
        let share = Double(onRemoved.count) / Double(ports.count)
        let fraction = Double(changed.count) / Double(ports.count)
        print(
            "\(mode) maglev removal: \(changed.count)/\(ports.count) flows changed backend "
                + "(fraction \(String(format: "%.2f", fraction)), be3's share \(String(format: "%.2f", share)); "
                + "\(movedOthers.count) of \(others.count) flows on be1/be2 moved)")
        #expect(!onRemoved.isEmpty && after.values.allSatisfy { $0 == "be1" || $0 == "be2" }, "\(after)")
        #expect(onRemoved.allSatisfy { after[$0] != "be3" })
        // Maglev's disruption is near-minimal, not zero: allow a few percent of the other flows to move.
        #expect(Double(movedOthers.count) <= 0.1 * Double(others.count), "moved: \(movedOthers)")
    }
}

extension ServerEndToEndTests {
    /// SIGHUP with a config that adds a virtual service starts it and leaves the running one alone (its counters
    /// continue); a changed definition restarts that service (its counters start over); SIGTERM stops the
    /// workers and the process exits 0.
    @Test(.enabled(if: isRoot, "needs root for network namespaces: server packet-plane tests SKIPPED"))
    func reloadStartsRestartsAndShutdownStops() throws {
        let server = try RunningServer("dsr")
        defer { server.stop() }
        let lab = server.lab
        _ = try lab.requestThroughVIP(5)
        #expect(try server.virtualService()["flows_created"] as? Int == 5)
        let pid = try #require(server.pid)

        let added =
            server.config + """

                  - { name: second, vip: 10.200.0.101, port: 80, pool: web, forwarding: dsr, interface: eth0 }
                """
        try added.write(to: server.configFile, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        #expect(waitUntil(seconds: 5) { (try? server.virtualServices().count) == 2 })
        let afterAdd = try server.virtualServices()
        #expect(afterAdd.first { $0["name"] as? String == "web" }?["flows_created"] as? Int == 5, "\(afterAdd)")
        #expect(afterAdd.first { $0["name"] as? String == "second" }?["running"] as? Bool == true, "\(afterAdd)")

        let renamed = added.replacingOccurrences(of: "name: web, vip", with: "name: web2, vip")
        try renamed.write(to: server.configFile, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        #expect(waitUntil(seconds: 5) { (try? server.virtualServices())?.first?["name"] as? String == "web2" })
        let afterRename = try server.virtualServices()
        #expect(afterRename.first?["flows_created"] as? Int == 0, "restarted: \(afterRename)")
        #expect(try lab.requestThroughVIP(3).values.reduce(0, +) == 3, "the restarted service forwards")

        kill(pid, SIGTERM)
        let exited = try #require(server.waitForExit(seconds: 10), "fulcrum run exits after SIGTERM")
        #expect(exited == 0)
    }
}

extension ServerEndToEndTests {
    /// VXLAN services each get a TAP device for their outer frames. A service added in front of a running one on
    /// SIGHUP takes a free name (fvx1: the running one keeps fvx0), both forward, and SIGTERM removes the devices.
    @Test(.enabled(if: isRoot, "needs root for network namespaces: server packet-plane tests SKIPPED"))
    func vxlanServicesGetTheirOwnTAPDevicesAcrossReloads() throws {
        let server = try RunningServer("vxlan")
        defer { server.stop() }
        let lab = server.lab
        func links() throws -> String { try lab.run("/usr/sbin/ip", ["-n", lab.lb, "-o", "link", "show"]).stdout }
        #expect(try links().contains("fvx0"), "the first VXLAN service's TAP")
        _ = try lab.requestThroughVIP(3)
        let pid = try #require(server.pid)

        let vxlan =
            "forwarding: tunnel, encapsulation: vxlan, interface: eth0, vxlan: { inner_mac: \"\(RunningMode.vxlanMAC)\" }"
        let first = "  - { name: web, vip: 10.200.0.100"
        let added = server.config.replacingOccurrences(
            of: first, with: "  - { name: second, vip: 10.200.0.101, port: 80, pool: web, \(vxlan) }\n" + first)
        try #require(added != server.config)
        try added.write(to: server.configFile, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        #expect(waitUntil(seconds: 5) { (try? server.virtualServices().count) == 2 })
        let services = try server.virtualServices()
        #expect(services.allSatisfy { $0["running"] as? Bool == true }, "both running: \(services)")
        #expect(services.first { $0["name"] as? String == "web" }?["flows_created"] as? Int == 3, "kept: \(services)")
        let both = try links()
        #expect(both.contains("fvx0") && both.contains("fvx1"), "\(both)")
        #expect(try lab.requestThroughVIP(3).values.reduce(0, +) == 3, "the kept service still forwards")

        kill(pid, SIGTERM)
        #expect(try #require(server.waitForExit(seconds: 10), "fulcrum run exits after SIGTERM") == 0)
        let after = try links()
        #expect(!after.contains("fvx0") && !after.contains("fvx1"), "TAP devices removed with the process: \(after)")
    }
}

/// `fulcrum run` (the built binary) in the lab's balancer namespace for one mode.
final class RunningServer {
    let mode: String
    let lab: NamespaceLab
    private var process: Process?
    private var decapsulators: [Process] = []
    /// Each backend's `fulcrum decap` log (IPIP modes).
    private(set) var decapsulatorLogs: [URL] = []
    let logFile: URL

    static var binary: URL { Bundle.main.bundleURL.appendingPathComponent("fulcrum") }

    init(_ mode: String) throws {
        self.mode = mode
        let serial = RunningMode.labsCreated.add(1, ordering: .relaxed).newValue
        lab = NamespaceLab(prefix: "fs\(mode.prefix(1))\(getpid() % 100_000)x\(serial)")
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.prefix)-fulcrum.log")
        do {
            try setUp()
        } catch {
            print("fulcrum log:\n\((try? String(contentsOf: logFile, encoding: .utf8)) ?? "")")
            stop()
            throw error
        }
    }

    var configFile: URL { lab.workDirectory.appendingPathComponent("fulcrum.yaml") }
    var pid: Int32? { process?.processIdentifier }

    var config: String {
        let service: String
        switch mode {
        case "nat":
            service = "forwarding: nat, interface: fnat0, snat: { address: 10.200.0.200 }"
        case "dsr":
            service = "forwarding: dsr, interface: eth0"
        case "vxlan":
            service =
                "forwarding: tunnel, encapsulation: vxlan, interface: eth0, vxlan: { inner_mac: \"\(RunningMode.vxlanMAC)\" }"
        default:
            service = "forwarding: tunnel, encapsulation: ipip, interface: eth0"
        }
        return """
            admin: { listen: 127.0.0.1:9900 }
            pools:
              web:
                algorithm: maglev
                health_check: { type: http, path: /id, interval: 500ms, timeout: 250ms, rise: 1, fall: 2, jitter: 0 }
                backends: [10.200.0.11:80, 10.200.0.12:80, 10.200.0.13:80]
            virtual_services:
              - { name: web, vip: 10.200.0.100, port: 80, pool: web, \(service) }
            """
    }

    private func setUp() throws {
        try lab.build()
        switch mode {
        case "nat": try lab.configureForNAT()
        case "dsr": try lab.configureForDSR()
        default:
            try lab.configureForTunnel(
                vxlanMAC: mode == "vxlan" ? RunningMode.vxlanMAC : nil, advmss: mode == "vxlan" ? 1410 : 1440)
        }
        if mode.hasPrefix("ipip") {
            for (name, _, _) in lab.backends {
                let ns = "\(lab.prefix)-\(name)"
                let decapLog = FileManager.default.temporaryDirectory.appendingPathComponent("\(ns)-decap.log")
                decapsulatorLogs.append(decapLog)
                var command = ["netns", "exec", ns, Self.binary.path, "decap", "--ipip"]
                if mode == "ipip-nobpf" {
                    // be1 asks for user space; be2 and be3 lose CAP_BPF and CAP_SYS_ADMIN, like the balancer below.
                    if name == "be1" {
                        command.append("--user-space")
                    } else {
                        command.insert(
                            contentsOf: [
                                "/usr/bin/python3", "-c",
                                "import ctypes, os, sys; [ctypes.CDLL(None).prctl(24, c) for c in (39, 21)]; "
                                    + "os.execv(sys.argv[1], sys.argv[1:])",
                            ], at: 3)
                    }
                }
                decapsulators.append(try spawn(command, log: decapLog))
                let up = waitUntil(seconds: 10) {
                    ((try? lab.run("/usr/sbin/ip", ["-n", ns, "link", "show", "tipip"]))?.stdout ?? "").contains(",UP")
                }
                guard up else { throw NamespaceLab.CommandFailed(description: "fulcrum decap did not set up tipip") }
            }
        }
        try lab.startBackends(bindAll: true)
        try config.write(to: configFile, atomically: true, encoding: .utf8)
        // Through a Python exec that unblocks signals: a child of a test thread inherits libdispatch's blocked
        // signal mask, and fulcrum must see SIGHUP (reload) and SIGTERM (graceful stop) here.
        process = try spawn(
            [
                "netns", "exec", lab.lb, "/usr/bin/python3", "-c",
                "import ctypes, os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, range(1, 32)); "
                    // "ipip-nobpf": without CAP_BPF (39) and CAP_SYS_ADMIN (21) in the bounding set, fulcrum
                    // cannot load its IPIP program (PR_CAPBSET_DROP = 24) and must fall back.
                    + (mode == "ipip-nobpf" ? "[ctypes.CDLL(None).prctl(24, c) for c in (39, 21)]; " : "")
                    + "os.execv(sys.argv[1], sys.argv[1:])",
                Self.binary.path, "run", "--config", configFile.path,
            ], log: logFile)
        // Ready when the admin API shows every backend up (the first checks passed).
        let ready = waitUntil(seconds: 15) {
            guard let pools = try? self.admin("/api/v1/pools/web") else { return false }
            return pools.components(separatedBy: "\"state\":\"up\"").count - 1 == 3
        }
        guard ready else { throw NamespaceLab.CommandFailed(description: "fulcrum run did not become ready") }
        if mode == "nat" {
            try lab.ip(["-n", lab.lb, "route", "add", "10.200.0.100/32", "dev", "fnat0"])
            try lab.ip(["-n", lab.lb, "route", "add", "10.200.0.200/32", "dev", "fnat0"])
        }
    }

    private func spawn(_ arguments: [String], log: URL?) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        if let log {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        return process
    }

    /// An admin API call from inside the balancer's namespace; the body.
    func admin(_ path: String, method: String = "GET") throws -> String {
        let out = try lab.run(
            "/usr/sbin/ip",
            ["netns", "exec", lab.lb, "curl", "-s", "--max-time", "3", "-X", method, "http://127.0.0.1:9900\(path)"],
            timeout: 5)
        return out.stdout
    }

    /// The one virtual service as the admin API shows it.
    func virtualService() throws -> [String: Any] {
        let list = try virtualServices()
        try #require(list.count == 1, "virtual services: \(list)")
        return list[0]
    }

    func virtualServices() throws -> [[String: Any]] {
        let body = try admin("/api/v1/virtual_services")
        let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return json?["virtual_services"] as? [[String: Any]] ?? []
    }

    /// The exit status once `fulcrum run` exited (bounded), nil if it is still running.
    func waitForExit(seconds: Double) -> Int32? {
        guard let process else { return nil }
        guard waitUntil(seconds: seconds, { !process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    /// A backend's state in the admin API (`up`, `down`, ...).
    func backendState(_ address: String) throws -> String? {
        let body = try admin("/api/v1/pools/web/backends/\(address)")
        let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return json?["state"] as? String
    }

    func stop() {
        // SIGKILL by the PIDs we started (see NamespaceLab.tearDown for why not SIGTERM).
        for process in [process].compactMap({ $0 }) + decapsulators where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        lab.tearDown()
        // Health changes explain surprises (a flapping backend moves flows): show them.
        let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        let events = log.split(separator: "\n").filter { $0.contains("backend") || $0.contains("maglev") }
        if !events.isEmpty { print("\(mode) fulcrum health events:\n\(events.joined(separator: "\n"))") }
        try? FileManager.default.removeItem(at: logFile)
        for decapLog in decapsulatorLogs { try? FileManager.default.removeItem(at: decapLog) }
    }
}

/// Frames arriving at the client from the VIP, captured with an AF_PACKET socket in the client's namespace
/// (what `tcpdump -e src host VIP` would show): the source MAC says who really sent each reply.
final class ReplyCapture {
    let socket: PacketSocket

    init(namespace: String) throws {
        socket = try NetworkNamespace.perform(path: "/var/run/netns/\(namespace)") { () throws(PacketIOError) in
            try PacketSocket(interface: "eth0")
        }
    }

    /// Source MAC → frames, for IPv4 frames from the VIP received so far (bounded: at most 100,000 frames).
    func replySenders() -> [String: Int] {
        var senders: [String: Int] = [:]
        var buffer = [UInt8](repeating: 0, count: 65536 + VirtioNetHeader.length)
        let header = VirtioNetHeader.length
        for _ in 0..<100_000 {
            let n = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { break }
            guard n >= header + 34, buffer[header + 12] == 0x08, buffer[header + 13] == 0x00 else { continue }
            let source = buffer[(header + 26)..<(header + 30)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard source == TestPackets.vip else { continue }
            let mac = buffer[(header + 6)..<(header + 12)].map { String(format: "%02x", $0) }.joined(separator: ":")
            senders[mac, default: 0] += 1
        }
        return senders
    }
}

extension NamespaceLab {
    /// A client that asks `GET /id` once from each given source port and ends every connection with a RST
    /// (SO_LINGER 0): no side keeps the 4-tuple in TIME_WAIT, so the same port can open a new flow at once.
    static let portClientScript = """
        import socket, struct, sys
        for port in map(int, sys.argv[1:]):
            name = ""
            s = socket.socket()
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.bind(("0.0.0.0", port)); s.settimeout(3); s.connect(("10.200.0.100", 80))
                s.sendall(b"GET /id HTTP/1.0\\r\\n\\r\\n"); data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk: break
                    data += chunk
                name = data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip()
            except OSError:
                pass
            finally:
                s.close()
            print(port, name, flush=True)
        """

    /// One request per client source port; port → the backend that answered. A port whose request failed is
    /// left out.
    func requestsFromPorts(_ ports: [Int]) throws -> [Int: String] {
        let script = workDirectory.appendingPathComponent("port-client.py")
        if !FileManager.default.fileExists(atPath: script.path) {
            try Self.portClientScript.write(to: script, atomically: true, encoding: .utf8)
        }
        let out = try run(
            "/usr/sbin/ip", ["netns", "exec", client, "/usr/bin/python3", script.path] + ports.map(String.init),
            timeout: Double(5 + ports.count * 4))
        var answers: [Int: String] = [:]
        for line in out.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let port = Int(parts[0]) { answers[port] = String(parts[1]) }
        }
        return answers
    }

    /// Starts a rate-limited download of `big` from the client's `localPort`; its SHA-256 goes to a file.
    func startDownload(localPort: Int, rate: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = [
            "netns", "exec", client, "sh", "-c",
            "curl -s --max-time 60 --limit-rate \(rate) --local-port \(localPort) http://10.200.0.100/big "
                + "| sha256sum > \(workDirectory.path)/download-\(localPort)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    func downloadOutput(localPort: Int) -> String {
        (try? String(contentsOf: workDirectory.appendingPathComponent("download-\(localPort)"), encoding: .utf8))
            ?? ""
    }

    /// Client ports with an established connection to backend `name`'s port 80.
    func establishedPorts(on name: String) -> [Int] {
        guard
            let out = try? run(
                "/usr/sbin/ip",
                ["netns", "exec", "\(prefix)-\(name)", "ss", "-Htn", "state", "established", "( sport = :80 )"])
        else { return [] }
        return out.stdout.split(separator: "\n").compactMap { line in
            line.split(separator: " ").last.flatMap { $0.split(separator: ":").last }.flatMap { Int($0) }
        }
    }

    /// Kills backend `index`'s server (SIGKILL by the PID we started): its kernel resets its connections.
    func stopBackend(index: Int) {
        let process = backendProcesses[index]
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
