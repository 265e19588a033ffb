import Foundation
import FulcrumCore
import FulcrumPacket
import Synchronization
import Testing

let isRoot = geteuid() == 0

/// Every forwarding mode end to end in network namespaces: a client, the balancer and three HTTP backends on
/// one bridge (../shared/docs/NETWORK-LAB.md, docs/packet-plane.md). Needs root; skipped loudly otherwise.
@Suite(.serialized) struct EndToEndTests {
    /// "ipip": the backends decapsulate in their kernel (tcx program); "ipip-user": in user space (AF_PACKET -> TUN).
    static let modes = ["nat", "dsr", "vxlan", "ipip", "ipip-user"]

    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: packet-plane end-to-end tests SKIPPED"),
        arguments: modes)
    func httpRequestsThroughTheVIPAreSpreadOverTheBackends(mode: String) throws {
        let running = try RunningMode(mode)
        defer { running.stop() }
        let requests = 30
        let answers = try running.lab.requestThroughVIP(requests)
        print("\(mode) e2e: answers \(answers.sorted { $0.key < $1.key }), \(running.summary)")
        #expect(answers.values.reduce(0, +) == requests)
        #expect(Set(answers.keys) == ["be1", "be2", "be3"], "every backend answers: \(answers)")
        #expect(running.flowsCreated == UInt64(requests))
        try running.checkConsistency(everyPacketDecapsulated: true)
        if mode == "dsr" || mode == "vxlan" || mode.hasPrefix("ipip") {
            // The client learned the VIP at the balancer's MAC (the backends never answered ARP for it).
            let neighbor = try running.lab.run(
                "/usr/sbin/ip", ["-n", running.lab.client, "neigh", "show", "10.200.0.100"])
            #expect(neighbor.stdout.contains("02:00:00:00:00:02"), "\(neighbor.stdout)")
        }
        if mode == "vxlan" {
            // Only the TAP forwards: the balancer's kernel must not route the VIP's frames it also receives.
            let forwarding = try running.lab.run(
                "/usr/sbin/ip",
                [
                    "netns", "exec", running.lab.lb, "sysctl", "-n", "net.ipv4.ip_forward",
                    "net.ipv4.conf.eth0.forwarding", "net.ipv4.conf.fvx0.forwarding", "net.ipv4.conf.fvx0.accept_local",
                ])
            #expect(forwarding.stdout.split(separator: "\n") == ["0", "0", "1", "1"], "\(forwarding.stdout)")
        }
    }

    /// A 20 MB download and a 5 MB upload arrive byte-identical: the download exercises the NAT return path,
    /// the upload the client's GSO super-frames and partial checksums through every mode.
    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: packet-plane end-to-end tests SKIPPED"),
        arguments: modes)
    func bulkTransfersAreByteIdentical(mode: String) throws {
        let running = try RunningMode(mode)
        defer { running.stop() }
        let lab = running.lab
        let download = try lab.run(
            "/usr/sbin/ip",
            ["netns", "exec", lab.client, "sh", "-c", "curl -s --max-time 60 http://10.200.0.100/big | sha256sum"],
            timeout: 65)
        #expect(download.stdout.hasPrefix(lab.bigFileSHA256), "download: \(download.stdout)")
        let upload = try lab.uploadThroughVIP()
        #expect(upload == lab.uploadFileSHA256, "upload: \(upload)")
        print("\(mode) bulk: \(running.summary)")
        // Under bulk load a decapsulator may lose a burst (TCP retransmits it): exactness is checked above.
        try running.checkConsistency(everyPacketDecapsulated: false)
        if mode == "vxlan" {
            // The upload's super-frames went whole into the TAP device (the kernel segmented them), not split.
            #expect(running.tunnelUsesTAP, "VXLAN runs on the TAP path (kernel with UDP-tunnel GSO on TAP)")
            #expect(running.gsoFramesWhole > 0, "whole GSO frames: \(running.summary)")
        }
        if mode.hasPrefix("ipip") {
            // The upload's super-frames went whole into fip0, the tcx program encapsulated them (SKB_GSO_IPXIP4),
            // they crossed the bridge whole and each backend decapsulated them whole: in its kernel ("ipip", the
            // user-space path saw none: `checkConsistency`) or into its TUN ("ipip-user").
            #expect(running.tunnelUsesTAP, "IPIP runs on the TAP + tcx program path: \(running.fallbackReason ?? "")")
            // (A frame above 65515 bytes, which GRO could build, would still be split: not all of them need be whole.)
            #expect(running.gsoFramesWhole > running.gsoFramesSplit, "\(running.summary)")
            if mode == "ipip-user" {
                #expect(running.decapsulatorGSOWrites > 0, "GSO writes into the backends' TUNs: \(running.summary)")
            }
        }
    }

    /// Without the encapsulation program (here switched off; in production: no CAP_BPF, no tcx, a verifier
    /// rejection) IPIP takes the software split through the raw socket, and the decapsulators get plain packets.
    @Test(.enabled(if: isRoot, "needs root for network namespaces: packet-plane end-to-end tests SKIPPED"))
    func ipipWithoutTheProgramSplitsInSoftware() throws {
        let running = try RunningMode("ipip-split")
        defer { running.stop() }
        let lab = running.lab
        #expect(!running.tunnelUsesTAP)
        #expect(running.fallbackReason?.contains("switched off") == true, "\(running.fallbackReason ?? "nil")")
        let upload = try lab.uploadThroughVIP()
        #expect(upload == lab.uploadFileSHA256, "upload: \(upload)")
        print("ipip-split bulk: \(running.summary)")
        #expect(running.gsoFramesSplit > 0 && running.gsoFramesWhole == 0, "\(running.summary)")
        #expect(running.decapsulatorGSOWrites == 0, "\(running.summary)")
        try running.checkConsistency(everyPacketDecapsulated: false)
    }
}

/// Malformed packets sent at the VIP are dropped and counted by reason while an upload through the balancer
/// completes byte-identical (the modes that read frames with AF_PACKET; under NAT the kernel drops malformed
/// IPv4 before the TUN device).
@Suite(.serialized) struct MalformedTrafficTests {
    static let kinds: [(DropReason, @Sendable ([UInt8]) -> [UInt8])] = [
        (
            .badChecksum,
            { p in
                var c = p; c[10] ^= 0xFF; return c
            }
        ),
        (
            .fragment,
            { p in
                var c = p; c[6] = 0x20; return withHeaderChecksum(c)
            }
        ),
        (
            .badIHL,
            { p in
                var c = p; c[0] = 0x44; return c
            }
        ),
        (
            .badVersion,
            { p in
                var c = p; c[0] = 0x65; return c
            }
        ),
        (
            .truncated,
            { p in
                var c = Array(p[0..<30]); c[2] = 0; c[3] = 30; return withHeaderChecksum(c)
            }
        ),
    ]

    static func withHeaderChecksum(_ packet: [UInt8]) -> [UInt8] {
        var c = packet
        c[10] = 0
        c[11] = 0
        let sum = TestPackets.referenceChecksum(Array(c[0..<20]))
        c[10] = UInt8(sum >> 8)
        c[11] = UInt8(sum & 0xFF)
        return c
    }

    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: packet-plane end-to-end tests SKIPPED"),
        arguments: ["dsr", "vxlan"])
    func malformedPacketsAreDroppedAndCountedDuringAnUpload(mode: String) throws {
        let running = try RunningMode(mode)
        defer { running.stop() }
        let lab = running.lab
        let uploadResult = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        let uploadFile = lab.uploadFile.path
        let client = lab.client
        DispatchQueue.global().async {
            let out = try? lab.run(
                "/usr/sbin/ip",
                [
                    "netns", "exec", client, "curl", "-s", "--max-time", "60", "-H", "Expect:", "-T", uploadFile,
                    "http://10.200.0.100/upload",
                ],
                timeout: 65)
            uploadResult.withLock { $0 = out?.stdout ?? "failed" }
            done.signal()
        }
        // Hand-built frames from the client's interface to the balancer's MAC, paced (1 ms) so they are not
        // lost to a full socket buffer, interleaved with the upload.
        let perKind = 50
        let sender = try NetworkNamespace.perform(path: "/var/run/netns/\(lab.client)") { () throws(PacketIOError) in
            try PacketSocket(interface: "eth0")
        }
        let valid = TestPackets.ipv4(sport: 50000, flags: TCPFlags.ack, payload: Array("malformed".utf8))
        var sent: [DropReason: Int] = [:]
        for _ in 0..<perKind {
            for (reason, mutate) in Self.kinds
            where sender.sendPlain(TestPackets.ethernet(src: MACAddress(2, 0, 0, 0, 0, 0x10)) + mutate(valid)) {
                sent[reason, default: 0] += 1
            }
            usleep(1_000)
        }
        #expect(done.wait(timeout: .now() + 70) == .success)
        #expect(uploadResult.withLock { $0 } == lab.uploadFileSHA256, "upload completed byte-identical")
        for (reason, _) in Self.kinds {
            let expected = UInt64(sent[reason, default: 0])
            #expect(expected > perKind / 2, "\(reason): only \(expected) of \(perKind) could be sent")
            let counted = waitUntil(seconds: 3) { running.drops[reason] == expected }
            #expect(counted, "\(reason): \(running.drops[reason]) of \(expected) counted; all drops: \(running.drops)")
        }
        print("\(mode) malformed: \(running.summary)")
    }
}

/// One mode's balancer running in the lab (namespaces, backends and, for IPIP, the decapsulators).
final class RunningMode {
    let mode: String
    let lab: NamespaceLab
    private var nat: NATVirtualService?
    private var dsr: DSRVirtualService?
    private var tunnel: TunnelVirtualService?
    private var decapsulators: [IPIPDecapsulator] = []
    static let vxlanMAC = "02:00:00:0a:a0:01"
    static let labsCreated = Atomic<Int>(0)

    init(_ mode: String) throws {
        self.mode = mode
        // Unique per lab: suites run in parallel, and a test may use the same mode as another.
        let serial = Self.labsCreated.add(1, ordering: .relaxed).newValue
        lab = NamespaceLab(prefix: "fp\(mode.prefix(1))\(getpid() % 100_000)x\(serial)")
        do {
            try setUp()
        } catch {
            stop()
            throw error
        }
    }

    private func setUp() throws {
        try lab.build()
        let service = VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp)
        let lbNamespace = "/var/run/netns/\(lab.lb)"
        switch mode {
        case "nat":
            try lab.configureForNAT()
            let nat = try NATVirtualService(
                settings: NATSettings(service: service, snatAddress: TestPackets.snat), pool: TestPackets.pool(),
                tunName: "fnat0", networkNamespace: lbNamespace)
            self.nat = nat
            try nat.start()
            try lab.ip(["-n", lab.lb, "link", "set", "fnat0", "up"])
            try lab.ip(["-n", lab.lb, "route", "add", "10.200.0.100/32", "dev", "fnat0"])
            try lab.ip(["-n", lab.lb, "route", "add", "10.200.0.200/32", "dev", "fnat0"])
            try lab.startBackends()
        case "dsr":
            try lab.configureForDSR()
            try lab.startBackends(bindVIP: true)
            let dsr = try DSRVirtualService(
                service: service, pool: TestPackets.pool(port: 80), interface: "eth0", networkNamespace: lbNamespace)
            self.dsr = dsr
            try dsr.start()
        default:
            let isVXLAN = mode == "vxlan"
            // "ipip-split": IPIP with the whole-frame path switched off (the software split).
            try lab.configureForTunnel(vxlanMAC: isVXLAN ? Self.vxlanMAC : nil, advmss: isVXLAN ? 1410 : 1440)
            if !isVXLAN {
                for (name, _, _) in lab.backends {
                    // In-kernel decapsulation delivers the inner packet on eth0, where the route back to the client
                    // leaves: strict reverse-path filtering passes it (the TUN path needs 0 or 2).
                    if mode == "ipip" { try lab.sysctl("\(lab.prefix)-\(name)", "net.ipv4.conf.all.rp_filter=1") }
                    let decap = try IPIPDecapsulator(
                        tunName: "tipip", networkNamespace: "/var/run/netns/\(lab.prefix)-\(name)",
                        input: mode == "ipip" ? .kernelProgram(interfaces: nil) : .packetSocket)
                    decapsulators.append(decap)
                    try decap.start()
                    try lab.ip(["-n", "\(lab.prefix)-\(name)", "link", "set", "tipip", "up"])
                }
            }
            try lab.startBackends(bindVIP: true)
            let kind: TunnelSettings.Kind =
                isVXLAN
                ? .vxlan(
                    Encapsulation.VXLAN(vni: 42, innerDestinationMAC: MACAddress(Self.vxlanMAC)!, innerSourceMAC: .zero)
                )
                : .ipip
            let settings = TunnelSettings(
                frame: FrameServiceSettings(service: service, localMAC: .zero), kind: kind,
                localAddress: TestPackets.lb)
            let tunnel = try TunnelVirtualService(
                settings: settings, pool: TestPackets.pool(port: 80), interface: "eth0", networkNamespace: lbNamespace,
                wholeFrames: mode != "ipip-split")
            self.tunnel = tunnel
            try tunnel.start()
        }
    }

    var flowsCreated: UInt64 {
        nat?.statistics.flows.created ?? dsr?.statistics.flows.created ?? tunnel?.statistics.flows.created ?? 0
    }

    /// Whether the tunnel service writes into its TAP device (VXLAN's whole-frame path).
    var tunnelUsesTAP: Bool { tunnel?.usesTAP ?? false }

    /// GSO super-frames the tunnel service handed to the kernel whole.
    var gsoFramesWhole: UInt64 { tunnel?.statistics.forwarding.gsoFramesWhole ?? 0 }

    /// GSO super-frames the tunnel service split in software.
    var gsoFramesSplit: UInt64 { tunnel?.statistics.forwarding.gsoFrames ?? 0 }

    /// Why the tunnel service runs on the split path (nil on the whole-frame path).
    var fallbackReason: String? { tunnel?.fallbackReason }

    /// TCP GSO super-frames the IPIP decapsulators wrote whole into their TUNs.
    var decapsulatorGSOWrites: UInt64 { decapsulators.map { $0.statistics.gsoWrites }.reduce(0, +) }

    var drops: DropCounters {
        nat?.statistics.drops ?? dsr?.statistics.drops ?? tunnel?.statistics.drops ?? DropCounters()
    }

    var summary: String {
        if let nat { return "\(nat.statistics)" }
        if let dsr { return "\(dsr.statistics)" }
        if let tunnel {
            let decap = decapsulators.map { "\($0.statistics.decapsulated) (\($0.statistics.gsoWrites) GSO)" }
            return "\(tunnel.statistics), decap \(decap)"
        }
        return ""
    }

    /// Mode-specific invariants after traffic.
    func checkConsistency(everyPacketDecapsulated: Bool) throws {
        if let nat {
            #expect(nat.statistics.forwarding.packetsIn > 0 && nat.statistics.forwarding.packetsOut > 0)
        }
        if let dsr {
            #expect(dsr.statistics.forwarding.arpReplies >= 1 && dsr.statistics.sendFailures == 0)
        }
        if let tunnel {
            #expect(tunnel.statistics.sendFailures == 0 && tunnel.statistics.forwarding.exceedsMTU == 0)
            if mode == "ipip" {
                // Whole frames only: the programs stripped every one in the kernel and the user-space path saw none
                // (had it seen one, the backend would have got it twice).
                #expect(decapsulators.allSatisfy { $0.usesKernelProgram && !$0.usesPacketSocket })
                #expect(
                    decapsulators.allSatisfy { $0.statistics.decapsulated == 0 && $0.statistics.drops.total == 0 },
                    "\(decapsulators.map { $0.statistics })")
            } else if !decapsulators.isEmpty && everyPacketDecapsulated {
                // Every encapsulated packet was decapsulated by a backend (the last ones may still be in flight).
                let all = waitUntil(seconds: 3) {
                    decapsulators.map { $0.statistics.decapsulated }.reduce(0, +)
                        == tunnel.statistics.forwarding.packetsIn + tunnel.statistics.forwarding.gsoSegments
                        - tunnel.statistics.forwarding.gsoFrames
                }
                #expect(all, "decapsulated \(decapsulators.map { $0.statistics }), sent \(tunnel.statistics)")
            }
        }
    }

    func stop() {
        nat?.stop()
        dsr?.stop()
        tunnel?.stop()
        for decap in decapsulators { decap.stop() }
        lab.tearDown()
    }
}

/// The bridge topology of NETWORK-LAB.md with unique namespace names; everything it creates is removed by
/// `tearDown`, also after a failure.
final class NamespaceLab: @unchecked Sendable {
    // Used from one test thread only.
    let prefix: String
    var namespaces: [String] = []
    var backendProcesses: [Process] = []
    var tempDirectories: [URL] = []

    var client: String { "\(prefix)-cli" }
    var lb: String { "\(prefix)-lb" }
    var switchNamespace: String { "\(prefix)-sw" }
    let backends = [
        ("be1", "10.200.0.11", "02:00:00:00:00:11"), ("be2", "10.200.0.12", "02:00:00:00:00:12"),
        ("be3", "10.200.0.13", "02:00:00:00:00:13"),
    ]

    init(prefix: String) { self.prefix = prefix }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    @discardableResult
    func run(
        _ executable: String, _ arguments: [String], timeout: Double = 10
    ) throws -> (status: Int32, stdout: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(2_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            throw CommandFailed(description: "timed out: \(executable) \(arguments.joined(separator: " "))")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func ip(_ arguments: [String]) throws {
        let result = try run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw CommandFailed(description: "ip \(arguments.joined(separator: " ")) failed (\(result.status))")
        }
    }

    /// Two namespaces `PREFIX-a` and `PREFIX-b` (registered for tear-down), lo up, joined by a veth named eth0 on
    /// both sides with the given `(address, mac)` each (/24). Returns their names.
    func twoHostsOnAVeth(
        a hostA: (address: String, mac: String), b hostB: (address: String, mac: String)
    ) throws -> (a: String, b: String) {
        let (a, b) = ("\(prefix)-a", "\(prefix)-b")
        for namespace in [a, b] {
            try ip(["netns", "add", namespace])
            namespaces.append(namespace)
            try ip(["-n", namespace, "link", "set", "lo", "up"])
        }
        try ip(["-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        for (namespace, host) in [(a, hostA), (b, hostB)] {
            try ip(["-n", namespace, "link", "set", "eth0", "address", host.mac])
            try ip(["-n", namespace, "addr", "add", "\(host.address)/24", "dev", "eth0"])
            try ip(["-n", namespace, "link", "set", "eth0", "up"])
        }
        return (a, b)
    }

    func sysctl(_ namespace: String, _ setting: String) throws {
        let result = try run("/usr/sbin/ip", ["netns", "exec", namespace, "sysctl", "-qw", setting])
        guard result.status == 0 else { throw CommandFailed(description: "sysctl \(setting) in \(namespace)") }
    }

    func build() throws {
        for name in [switchNamespace, client, lb] + backends.map({ "\(prefix)-\($0.0)" }) {
            try ip(["netns", "add", name])
            namespaces.append(name)
            try ip(["-n", name, "link", "set", "lo", "up"])
        }
        // With br_netfilter loaded (it is here), the bridge validates IPv4 headers and silently drops bad
        // checksums, versions and header lengths before they reach the balancer: a plain L2 switch does not.
        try sysctl(switchNamespace, "net.bridge.bridge-nf-call-iptables=0")
        try ip(["-n", switchNamespace, "link", "add", "br0", "type", "bridge"])
        try ip(["-n", switchNamespace, "link", "set", "br0", "up"])
        func attach(_ ns: String, _ port: String, _ address: String, _ mac: String) throws {
            try ip(["-n", switchNamespace, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            try ip(["-n", switchNamespace, "link", "set", port, "master", "br0", "up"])
            try ip(["-n", ns, "link", "set", "eth0", "address", mac])
            try ip(["-n", ns, "addr", "add", "\(address)/24", "dev", "eth0"])
            try ip(["-n", ns, "link", "set", "eth0", "up"])
        }
        try attach(client, "p-cli", "10.200.0.10", "02:00:00:00:00:10")
        try sysctl(lb, "net.ipv4.conf.all.rp_filter=0")
        try sysctl(lb, "net.ipv4.conf.default.rp_filter=0")
        try attach(lb, "p-lb", "10.200.0.2", "02:00:00:00:00:02")
        for (name, address, mac) in backends {
            try attach("\(prefix)-\(name)", "p-\(name)", address, mac)
        }
    }

    /// NAT: the balancer routes; the client reaches the VIP and backends reach the SNAT address through it.
    func configureForNAT() throws {
        try sysctl(lb, "net.ipv4.ip_forward=1")
        for (name, _, _) in backends {
            try ip(["-n", "\(prefix)-\(name)", "route", "add", "10.200.0.200/32", "via", "10.200.0.2"])
        }
        try ip(["-n", client, "route", "add", "10.200.0.100/32", "via", "10.200.0.2"])
    }

    /// DSR: each backend owns the VIP on loopback and never answers ARP for it; the balancer does not route.
    func configureForDSR() throws {
        try sysctl(lb, "net.ipv4.ip_forward=0")
        for (name, _, _) in backends {
            let ns = "\(prefix)-\(name)"
            try ip(["-n", ns, "addr", "add", "10.200.0.100/32", "dev", "lo"])
            for interface in ["all", "eth0"] {
                try sysctl(ns, "net.ipv4.conf.\(interface).arp_ignore=1")
                try sysctl(ns, "net.ipv4.conf.\(interface).arp_announce=2")
            }
        }
    }

    /// A tiny HTTP server for the backends: GET serves files (`id` holds the backend's name, `big` 20 MB),
    /// PUT answers the SHA-256 of the body it received.
    static let serverScript = """
        import hashlib, http.server, sys
        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_PUT(self):
                left = int(self.headers["Content-Length"]); digest = hashlib.sha256()
                while left > 0:
                    chunk = self.rfile.read(min(65536, left))
                    if not chunk: break
                    digest.update(chunk); left -= len(chunk)
                body = digest.hexdigest().encode()
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args): pass
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        server = http.server.ThreadingHTTPServer(
            (sys.argv[1], int(sys.argv[2])), lambda *a, **k: Handler(*a, directory=sys.argv[3], **k))
        server.serve_forever()
        """

    private(set) var bigFileSHA256 = ""
    private(set) var uploadFileSHA256 = ""
    var uploadFile: URL { workDirectory.appendingPathComponent("upload") }
    var workDirectory: URL { FileManager.default.temporaryDirectory.appendingPathComponent(prefix) }

    /// Writes `count` pseudo-random bytes (seeded) to `url`; returns their SHA-256 as sha256sum prints it.
    func writeRandomFile(_ url: URL, count: Int, seed: UInt64) throws -> String {
        var rng = SeededGenerator(seed: seed)
        var bytes = [UInt8](repeating: 0, count: count)
        for i in stride(from: 0, to: count, by: 8) {
            var word = rng.next()
            for k in i..<min(i + 8, count) {
                bytes[k] = UInt8(truncatingIfNeeded: word)
                word >>= 8
            }
        }
        try Data(bytes).write(to: url)
        let out = try run("/usr/bin/sha256sum", [url.path])
        return String(out.stdout.prefix(64))
    }

    /// One server per backend (on the VIP at port 80 for DSR and tunnels, on its own address at 8080 for NAT).
    /// With `bindAll` every backend listens on 0.0.0.0:80 (the VIP and its own address: health checks reach it).
    func startBackends(bindVIP: Bool = false, bindAll: Bool = false) throws {
        try FileManager.default.createDirectory(at: workDirectory, withIntermediateDirectories: true)
        tempDirectories.append(workDirectory)
        let script = workDirectory.appendingPathComponent("server.py")
        try Self.serverScript.write(to: script, atomically: true, encoding: .utf8)
        let big = workDirectory.appendingPathComponent("big")
        bigFileSHA256 = try writeRandomFile(big, count: 20 << 20, seed: 20)
        uploadFileSHA256 = try writeRandomFile(uploadFile, count: 5 << 20, seed: 5)
        for (name, realAddress, _) in backends {
            let address = bindAll ? "0.0.0.0" : bindVIP ? "10.200.0.100" : realAddress
            let port = bindVIP || bindAll ? "80" : "8080"
            let directory = workDirectory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try name.write(to: directory.appendingPathComponent("id"), atomically: true, encoding: .utf8)
            try FileManager.default.linkItem(at: big, to: directory.appendingPathComponent("big"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = [
                "netns", "exec", "\(prefix)-\(name)", "/usr/bin/python3", script.path, address, port, directory.path,
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            backendProcesses.append(process)
        }
        // Ready when each answers locally (bounded: 10 s per backend).
        for (name, realAddress, _) in backends {
            let url =
                bindAll
                ? "http://\(realAddress):80/id"
                : bindVIP ? "http://10.200.0.100:80/id" : "http://\(realAddress):8080/id"
            let deadline = Date().addingTimeInterval(10)
            var ready = false
            while !ready && Date() < deadline {
                let out = try run(
                    "/usr/sbin/ip",
                    [
                        "netns", "exec", "\(prefix)-\(name)", "curl", "-s", "--max-time", "1",
                        url,
                    ],
                    timeout: 3)
                ready = out.stdout == name
                if !ready { usleep(50_000) }
            }
            guard ready else { throw CommandFailed(description: "backend \(name) did not start") }
        }
    }

    /// Tunnel modes: like DSR (VIP on loopback, no ARP for it), and packets for the VIP arrive on a tunnel
    /// device, so reverse-path filtering must not drop them (their source is routed via eth0).
    /// `advmss` clamps the MSS the backends announce so encapsulated segments fit the 1500-byte underlay.
    func configureForTunnel(vxlanMAC: String?, advmss: Int) throws {
        try configureForDSR()
        // Loose reverse-path filtering, as systemd sets it on most hosts: VXLAN's TAP must work under it.
        if vxlanMAC != nil { try sysctl(lb, "net.ipv4.conf.all.rp_filter=2") }
        for (name, address, _) in backends {
            let ns = "\(prefix)-\(name)"
            try sysctl(ns, "net.ipv4.conf.all.rp_filter=0")
            try sysctl(ns, "net.ipv4.conf.default.rp_filter=0")
            try ip([
                "-n", ns, "route", "replace", "10.200.0.0/24", "dev", "eth0", "proto", "kernel", "scope", "link", "src",
                address, "advmss", "\(advmss)",
            ])
            if let vxlanMAC {
                try ip([
                    "-n", ns, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "dstport", "4789", "local", address,
                    "dev", "eth0", "nolearning",
                ])
                try ip(["-n", ns, "link", "set", "vxlan0", "address", vxlanMAC])
                try ip(["-n", ns, "link", "set", "vxlan0", "up"])
            }
        }
    }

    /// Sends `requests` HTTP requests from the client to the VIP; counts the answers (backend names).
    /// Uploads `uploadFile` from the client through the VIP; returns what the backend answers (its SHA-256).
    func uploadThroughVIP() throws -> String {
        try run(
            "/usr/sbin/ip",
            [
                "netns", "exec", client, "curl", "-s", "--max-time", "60", "-H", "Expect:", "-T", uploadFile.path,
                "http://10.200.0.100/upload",
            ],
            timeout: 65
        ).stdout
    }

    func requestThroughVIP(_ requests: Int) throws -> [String: Int] {
        var answers: [String: Int] = [:]
        for _ in 0..<requests {
            let out = try run(
                "/usr/sbin/ip", ["netns", "exec", client, "curl", "-s", "--max-time", "3", "http://10.200.0.100/id"],
                timeout: 5)
            answers[out.stdout.trimmingCharacters(in: .whitespacesAndNewlines), default: 0] += 1
        }
        return answers
    }

    func tearDown() {
        for process in backendProcesses where process.isRunning {
            // SIGKILL by the PID we started: children spawned from a test thread inherit libdispatch's blocked
            // signal mask, so a SIGTERM would stay pending forever.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for name in namespaces.reversed() { _ = try? run("/usr/sbin/ip", ["netns", "del", name]) }
        for directory in tempDirectories { try? FileManager.default.removeItem(at: directory) }
    }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass (bounded; for state another thread publishes).
func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
