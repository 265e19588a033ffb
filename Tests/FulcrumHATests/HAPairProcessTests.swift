import Foundation
import FulcrumTestSupport
import Glibc
import Synchronization
import Testing

/// Two real `fulcrum run` processes with `ha.vrrp`, an HTTP listener on 0.0.0.0 in front of a backend, and a
/// client curling the VIP from its own namespace: crash, graceful stop, preemption on and off.
private let canRunPair =
    isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
    && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")

@Suite("HA pair of fulcrum processes (root, namespaces)", .serialized)
struct HAPairProcessTests {
    static var binary: URL { Bundle.main.bundleURL.appendingPathComponent("fulcrum") }
    static let vip = "10.201.0.100"
    static let interval = Duration.milliseconds(100)

    /// lb0 and lb1 are the pair, node 2 the backend, node 3 the client.
    static func config(lab: NamespaceLab, node: Int, priority: Int, preempt: Bool, keyFile: String) -> String {
        """
        admin: { listen: 127.0.0.1:9900 }
        pools:
          web: { backends: [\(lab.address(2)):8080] }
        listeners:
          - { name: www, bind: 0.0.0.0:8080, mode: http, pool: web, timeouts: { drain: 1s } }
        ha:
          vrrp:
            interface: eth0
            virtual_router_id: 51
            priority: \(priority)
            advert_interval: 100ms
            vips: [\(vip)/24]
            preempt: \(preempt)
          mirror: { listen: \(lab.address(node)):7946, peers: [\(lab.address(1 - node)):7946], key_file: \(keyFile) }
        """
    }

    /// Starts `fulcrum run` inside node's namespace (`ip netns exec` execs, so the PID is fulcrum's).
    static func startBalancer(
        lab: NamespaceLab, node: Int, directory: URL, priority: Int, preempt: Bool
    ) throws
        -> Process
    {
        let file = directory.appendingPathComponent("lb\(node).yaml")
        let keyFile = directory.appendingPathComponent("mirror.key")
        try "a-shared-key-for-the-pair-test-0123456789".write(to: keyFile, atomically: true, encoding: .utf8)
        try config(lab: lab, node: node, priority: priority, preempt: preempt, keyFile: keyFile.path).write(
            to: file, atomically: true, encoding: .utf8)
        let log = directory.appendingPathComponent("lb\(node).log")
        if !FileManager.default.fileExists(atPath: log.path) {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", lab.nodes[node], binary.path, "run", "--config", file.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = handle
        try process.run()
        return process
    }

    /// The node's `GET /api/v1/ha` answer, nil while the admin API does not answer.
    static func haStatus(lab: NamespaceLab, node: Int) async throws -> [String: Any]? {
        let (status, output) = try await command([
            "ip", "netns", "exec", lab.nodes[node], "curl", "-s", "--max-time", "1", "http://127.0.0.1:9900/api/v1/ha",
        ])
        guard status == 0, let data = output.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    /// A client in node 3 requesting the VIP every 10 ms for `seconds` (each request bounded by 250 ms); it
    /// prints its counts and the longest time between two successful answers.
    static let clientScript = """
        import sys, time, urllib.request
        url, duration = sys.argv[1], float(sys.argv[2])
        end = time.monotonic() + duration
        last = None; gap = 0.0; ok = 0; failed = 0
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(url, timeout=0.25) as r:
                    r.read()
                now = time.monotonic()
                if last is not None: gap = max(gap, now - last)
                last = now; ok += 1
            except Exception:
                failed += 1
            time.sleep(0.01)
        print(f"ok={ok} failed={failed} gap_ms={gap * 1000:.0f}")
        """

    struct ClientResult {
        var ok: Int
        var failed: Int
        var gapMilliseconds: Int
    }

    static func startClient(lab: NamespaceLab, directory: URL, seconds: Double) throws -> (Process, Pipe) {
        let script = directory.appendingPathComponent("client.py")
        try clientScript.write(to: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = [
            "netns", "exec", lab.nodes[3], "/usr/bin/python3", script.path, "http://\(vip):8080/", String(seconds),
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, pipe)
    }

    static func finish(_ client: (Process, Pipe)) async throws -> ClientResult {
        let text = try await offCooperativePool {
            let data = client.1.fileHandleForReading.readDataToEndOfFile()
            client.0.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        var values: [String: Int] = [:]
        for field in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let parts = field.split(separator: "=")
            if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
        }
        guard let ok = values["ok"], let failed = values["failed"], let gap = values["gap_ms"] else {
            throw LabError(message: "client printed: \(text)")
        }
        return ClientResult(ok: ok, failed: failed, gapMilliseconds: gap)
    }

    /// When the event a watcher measures from happened; nil until then.
    final class Moment: Sendable {
        private let instant = Mutex<ContinuousClock.Instant?>(nil)
        func mark() { instant.withLock { $0 = .now } }
        var value: ContinuousClock.Instant? { instant.withLock { $0 } }
    }

    static func milliseconds(_ duration: Duration?) -> Int? {
        duration.map { Int($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) }
    }

    @Test(
        "crash (SIGKILL + link down) and SIGTERM hand the VIP over; preemption on and off",
        .enabled(
            if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
            "needs root, iproute2, curl and python3: SKIPPED LOUDLY"))
    func pair() async throws {
        try await NamespaceLab.withPairLab(tag: "fp", nodeCount: 4, directoryName: "fulcrum-ha-pair") {
            lab, directory, started in
            try await exercise(lab: lab, directory: directory, started: started)
        }
    }

    private func exercise(lab: NamespaceLab, directory: URL, started: (Process) -> Void) async throws {
        let backend = Process()
        backend.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        backend.arguments = [
            "netns", "exec", lab.nodes[2], "/usr/bin/python3", "-m", "http.server", "8080", "--bind", lab.address(2),
            "--directory", directory.path,
        ]
        backend.standardOutput = FileHandle.nullDevice
        backend.standardError = FileHandle.nullDevice
        try backend.run()
        started(backend)
        var lb0 = try Self.startBalancer(lab: lab, node: 0, directory: directory, priority: 200, preempt: true)
        started(lb0)
        let lb1 = try Self.startBalancer(lab: lab, node: 1, directory: directory, priority: 100, preempt: true)
        started(lb1)

        // lb0 is master and holds the VIP; lb1 is backup and reports lb0 as master through the admin API.
        #expect(try await eventually(within: .seconds(15)) { try await lab.holds(0, Self.vip) })
        #expect(
            try await eventually(within: .seconds(5)) {
                let status = try await Self.haStatus(lab: lab, node: 1)
                return status?["state"] as? String == "backup" && status?["master_address"] as? String == lab.address(0)
            })
        #expect(try await !lab.holds(1, Self.vip))
        // Mirroring: the master connects to the backup and sends its snapshot (empty: no virtual services here).
        #expect(
            try await eventually(within: .seconds(5)) {
                let mirror = try await Self.haStatus(lab: lab, node: 1)?["mirror"] as? [String: Any]
                return mirror?["snapshots_installed_total"] as? Int ?? 0 >= 1
            })
        let masterMirror = try await Self.haStatus(lab: lab, node: 0)?["mirror"] as? [String: Any]
        #expect(masterMirror?["connected_peers"] as? Int == 1)
        let (_, metrics) = try await command([
            "ip", "netns", "exec", lab.nodes[0], "curl", "-s", "http://127.0.0.1:9900/metrics",
        ])
        #expect(metrics.contains("fulcrum_vrrp_state{state=\"master\",vrid=\"51\"} 1"))
        let (_, served) = try await command([
            "ip", "netns", "exec", lab.nodes[3], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
            "2", "http://\(Self.vip):8080/",
        ])
        #expect(served == "200")

        // Crash: SIGKILL and link down. lb1 (priority 100) must hold the VIP within Master_Down_Interval
        // = 3 × 100 ms + (256 − 100) / 256 × 100 ms ≈ 361 ms; polling `ip` adds a few ms.
        let masterDown = 361
        var client = try Self.startClient(lab: lab, directory: directory, seconds: 3)
        try await Task.sleep(for: .seconds(1))  // the client's steady state before the crash, not a wait for state
        let crash = Moment()
        let crashWatch = lab.watchForAddress(1, Self.vip, since: { crash.value }, timeout: .seconds(5))
        crash.mark()
        kill(lb0.processIdentifier, SIGKILL)
        try await lab.setLink(0, up: false)
        let crashTakeover = Self.milliseconds(await crashWatch.value)
        var result = try await Self.finish(client)
        print(
            "HA pair, crash at 100 ms adverts: takeover \(crashTakeover.map(String.init) ?? "never") ms "
                + "(Master_Down_Interval \(masterDown) ms), client gap \(result.gapMilliseconds) ms, "
                + "\(result.ok) answered, \(result.failed) failed")
        // The link goes down a few ms after the kill (an `ip` command); timers add a little.
        #expect(crashTakeover != nil && crashTakeover! <= masterDown + 60)
        #expect(result.ok > 50)
        #expect(result.gapMilliseconds < 1500)

        // The old master comes back with the higher priority and preempts; it dropped the stale VIP at start.
        let crashed = lb0
        _ = try? await offCooperativePool { crashed.waitUntilExit() }
        try await lab.setLink(0, up: true)
        lb0 = try Self.startBalancer(lab: lab, node: 0, directory: directory, priority: 200, preempt: true)
        started(lb0)
        #expect(
            try await eventually(within: .seconds(10)) {
                let both = (try await lab.holds(0, Self.vip), try await lab.holds(1, Self.vip))
                return both == (true, false)
            })

        // Graceful stop: priority 0 at once, lb1 takes over after its Skew_Time (≈ 61 ms), about one interval.
        client = try Self.startClient(lab: lab, directory: directory, seconds: 2)
        try await Task.sleep(for: .seconds(0.5))  // steady state first, as above
        let stop = Moment()
        let stopWatch = lab.watchForAddress(1, Self.vip, since: { stop.value }, timeout: .seconds(5))
        stop.mark()
        kill(lb0.processIdentifier, SIGTERM)
        let gracefulTakeover = Self.milliseconds(await stopWatch.value)
        result = try await Self.finish(client)
        print(
            "HA pair, SIGTERM at 100 ms adverts: takeover \(gracefulTakeover.map(String.init) ?? "never") ms, "
                + "client gap \(result.gapMilliseconds) ms, \(result.ok) answered, \(result.failed) failed")
        #expect(gracefulTakeover != nil && gracefulTakeover! <= 250)
        let stopped = lb0
        let exit = try await offCooperativePool { () -> Int32 in
            stopped.waitUntilExit()
            return stopped.terminationStatus
        }
        #expect(exit == 0)
        #expect(try await !lab.holds(0, Self.vip))

        // Preemption off: lb0 returns with the higher priority but stays backup while lb1 serves.
        lb0 = try Self.startBalancer(lab: lab, node: 0, directory: directory, priority: 200, preempt: false)
        started(lb0)
        #expect(
            try await eventually(within: .seconds(10)) {
                let status = try await Self.haStatus(lab: lab, node: 0)
                return status?["state"] as? String == "backup" && (status?["adverts_received"] as? Int ?? 0) >= 20
            })
        #expect(try await lab.holds(1, Self.vip))
        #expect(try await !lab.holds(0, Self.vip))
    }

    @Test(
        "tracking: an unbound listener and a pool with no backend up lower the priority; a reload clears it",
        .enabled(
            if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
            "needs root, iproute2, curl and python3: SKIPPED LOUDLY"))
    func tracking() async throws {
        let lab = NamespaceLab(tag: "ft", nodeCount: 3)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-ha-track-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var processes: [Process] = []
        func cleanUp() async {
            for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            for process in processes { _ = try? await offCooperativePool { process.waitUntilExit() } }
            await lab.tearDown()
            try? FileManager.default.removeItem(at: directory)
        }
        do {
            try await lab.setUp()
            // 10.201.0.99 is on no interface: the `ghost` listener cannot bind.
            func config(ghost: Bool) -> String {
                """
                admin: { listen: 127.0.0.1:9900 }
                pools:
                  web:
                    backends: [\(lab.address(2)):8080]
                    health_check: { type: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }
                listeners:
                  - { name: www, bind: 0.0.0.0:8080, mode: http, pool: web }
                \(ghost ? "  - { name: ghost, bind: 10.201.0.99:8081, mode: tcp, pool: web }" : "")
                ha:
                  vrrp: { interface: eth0, virtual_router_id: 52, priority: 100, track_weight: 30, advert_interval: 100ms, vips: [\(Self.vip)/24] }
                """
            }
            let file = directory.appendingPathComponent("lb.yaml")
            try config(ghost: true).write(to: file, atomically: true, encoding: .utf8)
            let lb = Process()
            lb.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            lb.arguments = ["netns", "exec", lab.nodes[0], Self.binary.path, "run", "--config", file.path]
            lb.standardOutput = FileHandle.nullDevice
            lb.standardError = FileHandle.nullDevice
            try lb.run()
            processes.append(lb)

            func status() async throws -> [String: Any]? { try await Self.haStatus(lab: lab, node: 0) }
            #expect(
                try await eventually(within: .seconds(15)) {
                    let reasons = try await status()?["tracking_reasons"] as? [String] ?? []
                    return reasons == ["listener ghost is not bound", "pool web has no backend available"]
                })
            let failing = try await status()
            #expect(failing?["effective_priority"] as? Int == 70)
            #expect(failing?["tracking_failing"] as? Bool == true)
            #expect(lb.isRunning)

            // The backend comes up: only the listener is left.
            let backend = Process()
            backend.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            backend.arguments = [
                "netns", "exec", lab.nodes[2], "/usr/bin/python3", "-m", "http.server", "8080", "--bind",
                lab.address(2), "--directory", directory.path,
            ]
            backend.standardOutput = FileHandle.nullDevice
            backend.standardError = FileHandle.nullDevice
            try backend.run()
            processes.append(backend)
            #expect(
                try await eventually(within: .seconds(10)) {
                    try await status()?["tracking_reasons"] as? [String] == ["listener ghost is not bound"]
                })

            // A reload without the listener clears tracking: the full priority again.
            try config(ghost: false).write(to: file, atomically: true, encoding: .utf8)
            kill(lb.processIdentifier, SIGHUP)
            #expect(
                try await eventually(within: .seconds(10)) {
                    let now = try await status()
                    return now?["tracking_failing"] as? Bool == false && now?["effective_priority"] as? Int == 100
                })
            let (_, metrics) = try await command([
                "ip", "netns", "exec", lab.nodes[0], "curl", "-s", "http://127.0.0.1:9900/metrics",
            ])
            #expect(metrics.contains("fulcrum_vrrp_priority{vrid=\"52\"} 100"))
            #expect(metrics.contains("fulcrum_vrrp_tracking_failing{vrid=\"52\"} 0"))
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }
}
