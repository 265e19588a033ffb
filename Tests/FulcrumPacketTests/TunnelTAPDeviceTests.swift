import Foundation
import FulcrumCore
import FulcrumPacket
import Testing

/// The tunnel TAP devices (VXLAN's fvx0, IPIP's fip0 with its tcx program) under the reverse-path filter settings
/// hosts ship with: loose mode (systemd's `all.rp_filter=2`) works because the device gets 192.0.0.8/32; strict
/// mode would drop every forwarded frame, so the service falls back to the raw-socket path and says why. Root and
/// a network namespace per case.
@Suite(.serialized) struct TunnelTAPDeviceTests {
    @Test(
        .enabled(if: isRoot, "needs root for network namespaces: TAP device tests SKIPPED"),
        arguments: ["0", "2", "1"], ["vxlan", "ipip"])
    func reversePathFilterModes(rpFilter: String, encapsulation: String) throws {
        let lab = NamespaceLab(prefix: "ftap\(getpid() % 100_000)r\(rpFilter)\(encapsulation.prefix(1))")
        let isVXLAN = encapsulation == "vxlan"
        let tap = isVXLAN ? "fvx0" : "fip0"
        defer { lab.tearDown() }
        let namespace = lab.lb
        try lab.ip(["netns", "add", namespace])
        lab.namespaces.append(namespace)
        try lab.ip(["-n", namespace, "link", "set", "lo", "up"])
        try lab.sysctl(namespace, "net.ipv4.conf.all.rp_filter=\(rpFilter)")
        let vxlan = Encapsulation.VXLAN(
            vni: 42, innerDestinationMAC: MACAddress(2, 0, 0, 0x0A, 0xA0, 1), innerSourceMAC: .zero)
        let service = try TunnelVirtualService(
            settings: TunnelSettings(
                frame: FrameServiceSettings(
                    service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6), localMAC: .zero),
                kind: isVXLAN ? .vxlan(vxlan) : .ipip, localAddress: TestPackets.lb),
            pool: TestPackets.pool(port: 80), interface: "lo", networkNamespace: "/var/run/netns/\(namespace)",
            deviceName: tap)
        let addresses = try lab.run("/usr/sbin/ip", ["-n", namespace, "-o", "-4", "addr", "show"]).stdout
        if rpFilter == "1" {
            #expect(!service.usesTAP)
            #expect(service.settings.output == .rawSocket)
            #expect(service.fallbackReason?.contains("rp_filter=1") == true, "\(service.fallbackReason ?? "")")
            #expect(!addresses.contains(tap))
            #expect(service.encapsulationProgram == nil)
        } else {
            #expect(service.usesTAP, "\(service.fallbackReason ?? "")")
            #expect(service.fallbackReason == nil)
            let mac = service.device!.mac
            #expect(service.settings.output == (isVXLAN ? .tap(mac: mac) : .ipipTAP(mac: mac)))
            #expect((service.encapsulationProgram != nil) == !isVXLAN, "IPIP's tcx program is attached")
            #expect(
                addresses.contains(tap) && addresses.contains("192.0.0.8/32") && addresses.contains("scope host"))
            let settings = try lab.run(
                "/usr/sbin/ip",
                [
                    "netns", "exec", namespace, "sysctl", "-n", "net.ipv4.conf.\(tap).forwarding",
                    "net.ipv4.conf.\(tap).accept_local", "net.ipv4.conf.\(tap).rp_filter", "net.ipv4.ip_forward",
                ])
            #expect(settings.stdout.split(separator: "\n") == ["1", "1", "0", "0"], "\(settings.stdout)")
        }
    }
}
