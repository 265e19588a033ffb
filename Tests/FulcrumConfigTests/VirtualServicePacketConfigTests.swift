import FulcrumConfig
import FulcrumCore
import Testing

/// The packet-plane settings the server needs to build a worker: the VXLAN inner MAC and the tunnel's
/// outer source address.
@Suite("Virtual service packet settings")
struct VirtualServicePacketConfigTests {
    @Test func innerMACAndSourceAddressAreReadWithDefaults() throws {
        let config = try loadValid(
            """
            pools: { web: { algorithm: maglev, backends: [10.0.0.11:80] } }
            virtual_services:
              - { vip: 192.0.2.1, port: 80, forwarding: tunnel, encapsulation: vxlan, interface: eth0, pool: web,
                  source_address: 10.0.0.2, vxlan: { vni: 7, inner_mac: "02:aa:bb:cc:dd:0e" } }
              - { vip: 192.0.2.2, port: 80, forwarding: tunnel, encapsulation: vxlan, interface: eth0, pool: web }
              - { vip: 192.0.2.3, port: 80, forwarding: tunnel, encapsulation: ipip, interface: eth0, pool: web }
            """)
        let services = config.virtualServices
        #expect(services[0].sourceAddress == ip("10.0.0.2"))
        #expect(services[0].vxlan == VXLANConfig(vni: 7, port: 4789, innerMAC: [0x02, 0xAA, 0xBB, 0xCC, 0xDD, 0x0E]))
        #expect(services[1].sourceAddress == nil)
        #expect(services[1].vxlan?.innerMAC == VXLANConfig.defaultInnerMAC)
        #expect(services[2].vxlan == nil && services[2].sourceAddress == nil)
    }

    @Test func badValuesAreReportedWithTheirPosition() {
        let lines = diagnostics(
            """
            pools: { web: { backends: [10.0.0.11:80] } }
            virtual_services:
              - { vip: 192.0.2.1, port: 80, forwarding: tunnel, encapsulation: vxlan, interface: eth0, pool: web,
                  source_address: "2001:db8::1", vxlan: { inner_mac: "01:00:5e:00:00:01" } }
              - { vip: 192.0.2.2, port: 80, forwarding: tunnel, encapsulation: vxlan, interface: eth0, pool: web,
                  vxlan: { inner_mac: "02:00:00:0a:a0" } }
              - { vip: 192.0.2.3, port: 80, forwarding: dsr, interface: eth0, pool: web, source_address: 10.0.0.2 }
            """)
        #expect(
            lines.contains { $0.hasPrefix("virtual_services[0].source_address: the tunnel's outer packets are IPv4") },
            "\(lines)")
        #expect(
            lines.contains {
                $0.hasPrefix("virtual_services[0].vxlan.inner_mac: expected a unicast MAC address")
                    && $0.contains("'01:00:5e:00:00:01'")
            }, "\(lines)")
        #expect(
            lines.contains { $0.hasPrefix("virtual_services[1].vxlan.inner_mac:") && $0.contains("line 6") },
            "\(lines)")
        #expect(
            lines.contains { $0.hasPrefix("virtual_services[2].source_address: only valid with forwarding tunnel") },
            "\(lines)")
    }
}
