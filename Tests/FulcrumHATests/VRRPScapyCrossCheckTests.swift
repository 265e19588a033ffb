import Foundation
import FulcrumCore
import Testing

@testable import FulcrumHA

/// Whether Debian's python3 with scapy's VRRPv3 layer is here (`apt-get install -y python3-scapy`).
private let scapyPython: URL? = {
    let python = URL(fileURLWithPath: "/usr/bin/python3")
    guard FileManager.default.isExecutableFile(atPath: python.path) else { return nil }
    let process = Process()
    process.executableURL = python
    process.arguments = ["-c", "import scapy.layers.vrrp"]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return nil }
    process.waitUntilExit()
    return process.terminationStatus == 0 ? python : nil
}()

@Suite struct VRRPScapyCrossCheckTests {
    struct Case: Sendable {
        var source: String
        var destination: String
        var vrid: Int
        var priority: Int
        var interval: Int
        var addresses: [String]
    }

    static let cases: [Case] = [
        Case(
            source: "10.200.0.2", destination: "224.0.0.18", vrid: 51, priority: 150, interval: 100,
            addresses: ["10.200.0.50"]),
        Case(
            source: "10.200.0.3", destination: "10.200.0.2", vrid: 1, priority: 0, interval: 1,
            addresses: ["192.0.2.10", "192.0.2.11", "192.0.2.12"]),
        Case(
            source: "192.168.255.254", destination: "224.0.0.18", vrid: 255, priority: 255, interval: 4095,
            addresses: ["255.255.255.255", "0.0.0.1"]),
        Case(
            source: "10.0.0.1", destination: "224.0.0.18", vrid: 7, priority: 1, interval: 10,
            addresses: (1...40).map { "10.9.0.\($0)" }),
    ]

    /// Our encoder against scapy's independent VRRPv3 layer, whole packets byte for byte; then our validator
    /// decodes what scapy built.
    @Test(
        .enabled(
            if: scapyPython != nil,
            "SKIPPED LOUDLY: /usr/bin/python3 with scapy is missing; run `apt-get install -y python3-scapy` to check the codec against scapy"
        ))
    func encoderMatchesScapy() throws {
        let python = try #require(scapyPython)
        var script = """
            from scapy.layers.inet import IP
            from scapy.layers.vrrp import VRRPv3
            cases = [

            """
        for c in Self.cases {
            let addresses = c.addresses.map { "'\($0)'" }.joined(separator: ",")
            script +=
                "  ('\(c.source)', '\(c.destination)', \(c.vrid), \(c.priority), \(c.interval), [\(addresses)]),\n"
        }
        script += """
            ]
            for s, d, vrid, prio, adv, addrs in cases:
                p = IP(src=s, dst=d, ttl=255, tos=0xc0, id=0) / VRRPv3(vrid=vrid, priority=prio, adv=adv, addrlist=addrs)
                print(bytes(p).hex())

            """
        let process = Process()
        process.executableURL = python
        process.arguments = ["-c", script]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        try #require(lines.count == Self.cases.count)

        for (c, scapyHex) in zip(Self.cases, lines) {
            let advert = try VRRPAdvertisement(
                virtualRouterId: c.vrid, priority: c.priority, maxAdvertInterval: c.interval,
                addresses: c.addresses.map { IPAddress($0)! })
            let ours = try #require(
                advert.encodePacket(source: IPAddress(c.source)!, destination: IPAddress(c.destination)!))
            let hex = ours.map { String(format: "%02x", $0) }.joined()
            #expect(hex == scapyHex, "vrid \(c.vrid)")

            let scapyBytes = stride(from: 0, to: scapyHex.count, by: 2).map { i -> UInt8 in
                let start = scapyHex.index(scapyHex.startIndex, offsetBy: i)
                return UInt8(scapyHex[start..<scapyHex.index(start, offsetBy: 2)], radix: 16)!
            }
            let validator = VRRPPacketValidator(
                virtualRouterId: UInt8(c.vrid), expectedAddresses: Set(advert.addresses), localAddresses: [])
            #expect(try validator.validate(scapyBytes).get().advert == advert)
        }
    }
}
