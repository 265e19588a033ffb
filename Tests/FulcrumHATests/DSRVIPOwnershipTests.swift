import Foundation
import FulcrumTestSupport
import Glibc
import Testing

/// Issue 6 point 2, a VIP owned in the packet plane: two `fulcrum run` with `ha.vrrp` whose VIP is also a `dsr`
/// (or `tunnel`, VXLAN) virtual service's VIP. Only the master's worker answers ARP for it (the kernel holds it on neither node);
/// after the master is crashed (SIGKILL + link down) the client's ARP entry moves to the new master's MAC and
/// requests through the VIP succeed again. A second VRRP VIP that no `dsr` service uses goes on the master's
/// kernel as usual, so one router serves both kinds.
///
/// Topology (HA `NamespaceLab`): lb0 10.201.0.2 (MAC …:02, priority 200), lb1 10.201.0.3 (…:03), backend .4,
/// client .5; DSR VIP 10.201.0.150, kernel VIP 10.201.0.151.
@Suite("DSR VIP follows the VRRP master (root, namespaces)", .serialized)
struct DSRVIPOwnershipTests {
    static let vip = "10.201.0.150"
    static let kernelVIP = "10.201.0.151"
    static func mac(_ node: Int) -> String { "02:00:00:00:01:0\(2 + node)" }

    static let vxlanMAC = "02:00:00:0a:a1:01"

    static func forwarding(_ mode: String) -> String {
        mode == "dsr"
            ? "forwarding: dsr, interface: eth0"
            : "forwarding: tunnel, encapsulation: vxlan, interface: eth0, vxlan: { inner_mac: \"\(vxlanMAC)\" }"
    }

    static func config(lab: NamespaceLab, node: Int, mode: String) -> String {
        """
        admin: { listen: 127.0.0.1:9900 }
        pools:
          web: { algorithm: maglev, backends: [\(lab.address(2)):80] }
        virtual_services:
          - { name: web, vip: \(vip), port: 80, pool: web, \(forwarding(mode)) }
        ha:
          vrrp:
            interface: eth0
            virtual_router_id: 53
            priority: \(node == 0 ? 200 : 100)
            advert_interval: 100ms
            vips: [\(vip)/32, \(kernelVIP)/32]
            preempt: false
        """
    }

    @Test(
        "the client's ARP entry for the VIP is the master's, then the new master's after a crash",
        .enabled(if: FlowsSurviveTakeoverTests.canRunLab, "needs root, iproute2, curl and python3: SKIPPED LOUDLY"),
        arguments: ["dsr", "vxlan"])
    func arpFollowsTheMaster(mode: String) async throws {
        try await NamespaceLab.withPairLab(tag: "fv", nodeCount: 4, directoryName: "fulcrum-ha-dsrvip") {
            lab, directory, started in
            try await exercise(lab: lab, directory: directory, mode: mode, started: started)
        }
    }

    private func state(_ lab: NamespaceLab, _ node: Int) async throws -> String? {
        try await FlowsSurviveTakeoverTests.status(lab: lab, node: node, "/api/v1/ha")?["state"] as? String
    }

    /// One request through the VIP from the client (fresh ARP resolution first when `flush`).
    private func fetch(_ lab: NamespaceLab, flush: Bool) async throws -> Bool {
        if flush { _ = try await command(["ip", "-n", lab.nodes[3], "neigh", "flush", "dev", "eth0"]) }
        let (_, out) = try await command([
            "ip", "netns", "exec", lab.nodes[3], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
            "1", "http://\(Self.vip):80/hello",
        ])
        return out == "200"
    }

    private func exercise(lab: NamespaceLab, directory: URL, mode: String, started: (Process) -> Void) async throws {
        for node in 0...1 {
            for setting in ["net.ipv4.ip_forward=0", "net.ipv4.conf.all.rp_filter=0"] {
                try await lab.run("ip", "netns", "exec", lab.nodes[node], "sysctl", "-qw", setting)
            }
        }
        try "hello".write(to: directory.appendingPathComponent("hello"), atomically: true, encoding: .utf8)
        let backend = lab.nodes[2]
        try await lab.run("ip", "-n", backend, "addr", "add", "\(Self.vip)/32", "dev", "lo")
        for interface in ["all", "eth0"] {
            try await lab.run(
                "ip", "netns", "exec", backend, "sysctl", "-qw", "net.ipv4.conf.\(interface).arp_ignore=1")
            try await lab.run(
                "ip", "netns", "exec", backend, "sysctl", "-qw", "net.ipv4.conf.\(interface).arp_announce=2")
        }
        if mode == "vxlan" {
            // The backend decapsulates with a kernel VXLAN device; the VIP's packets arrive on it while their
            // source is routed via eth0, so reverse-path filtering must let them through.
            for setting in ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"] {
                try await lab.run("ip", "netns", "exec", backend, "sysctl", "-qw", setting)
            }
            try await lab.run(
                "ip", "-n", backend, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "dstport", "4789", "local",
                lab.address(2), "dev", "eth0", "nolearning")
            try await lab.run("ip", "-n", backend, "link", "set", "vxlan0", "address", Self.vxlanMAC)
            try await lab.run("ip", "-n", backend, "link", "set", "vxlan0", "up")
        }
        started(
            try FlowsSurviveTakeoverTests.spawn(
                [
                    "netns", "exec", backend, "/usr/bin/python3", "-m", "http.server", "80", "--bind", "0.0.0.0",
                    "--directory", directory.path,
                ], log: nil))

        var balancers: [Process] = []
        for node in 0...1 {
            let configFile = directory.appendingPathComponent("lb\(node).yaml")
            try Self.config(lab: lab, node: node, mode: mode).write(to: configFile, atomically: true, encoding: .utf8)
            let process = try FlowsSurviveTakeoverTests.spawn(
                [
                    "netns", "exec", lab.nodes[node], FlowsSurviveTakeoverTests.binary.path, "run", "--config",
                    configFile.path,
                ], log: directory.appendingPathComponent("lb\(node).log"))
            started(process)
            balancers.append(process)
            let expected = node == 0 ? "master" : "backup"
            let reached = try await eventually(within: .seconds(15)) { try await state(lab, node) == expected }
            #expect(reached, "lb\(node) becomes \(expected)")
        }
        // The kernel holds the DSR VIP on neither node: it is owned in the packet plane. The other VIP is on the
        // master's kernel only.
        for node in 0...1 { #expect(try await !lab.holds(node, Self.vip), "lb\(node)'s kernel holds the VIP") }
        #expect(
            try await eventually(within: .seconds(5)) { try await lab.holds(0, Self.kernelVIP) },
            "the master's kernel holds the non-DSR VIP")
        #expect(try await !lab.holds(1, Self.kernelVIP), "the backup's kernel does not hold the non-DSR VIP")

        // Three fresh resolutions: only the master answers, so the entry is its MAC each time.
        for attempt in 0..<3 {
            #expect(try await eventually(within: .seconds(10)) { try await fetch(lab, flush: true) })
            let entry = try await lab.neighbour(3, Self.vip) ?? ""
            #expect(entry.contains(Self.mac(0)), "attempt \(attempt): client's entry \(entry)")
        }

        kill(balancers[0].processIdentifier, SIGKILL)
        try await lab.setLink(0, up: false)
        #expect(try await eventually(within: .seconds(5)) { try await state(lab, 1) == "master" })
        // The client keeps its entry (no flush): the new master's gratuitous ARPs (or re-resolution) move it.
        let moved = try await eventually(within: .seconds(15)) {
            guard try await fetch(lab, flush: false) else { return false }
            return (try await lab.neighbour(3, Self.vip) ?? "").contains(Self.mac(1))
        }
        #expect(moved, "after takeover the client reaches the VIP at lb1's MAC")
        #expect(
            try await eventually(within: .seconds(5)) { try await lab.holds(1, Self.kernelVIP) },
            "the new master's kernel holds the non-DSR VIP")
        #expect(try await !lab.holds(1, Self.vip), "the new master's kernel does not hold the DSR VIP")
        let entry = try await lab.neighbour(3, Self.vip) ?? ""
        print("\(mode) VIP ownership: after takeover the client's entry is \(entry)")
    }
}
