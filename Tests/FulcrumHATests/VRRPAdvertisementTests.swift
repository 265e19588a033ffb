import FulcrumCore
import FulcrumPacket
import Testing

@testable import FulcrumHA

private let lb = IPAddress("10.200.0.2")!
private let group = FulcrumHA.vrrpMulticastGroup
private let vip = IPAddress("10.200.0.50")!

/// The advert the lab's keepalived pair uses: VRID 51, priority 150, 1 s, one VIP.
private func labAdvert(priority: Int = 150, addresses: [IPAddress] = [vip]) throws -> VRRPAdvertisement {
    try VRRPAdvertisement(virtualRouterId: 51, priority: priority, maxAdvertInterval: 100, addresses: addresses)
}

/// Recomputes the VRRP checksum of a whole IPv4 packet after a test changed a field, so that the test
/// exercises the check it means to and not the checksum.
func refreshChecksum(_ packet: inout [UInt8]) {
    let ihl = Int(packet[0] & 0x0F) * 4
    packet[ihl + 6] = 0
    packet[ihl + 7] = 0
    let copy = packet
    let word = { (o: Int) in
        UInt32(copy[o]) << 24 | UInt32(copy[o + 1]) << 16 | UInt32(copy[o + 2]) << 8 | UInt32(copy[o + 3])
    }
    let sum = VRRPAdvertisement.checksum(source: word(12), destination: word(16), message: packet[ihl...])
    packet[ihl + 6] = UInt8(sum >> 8)
    packet[ihl + 7] = UInt8(truncatingIfNeeded: sum)
}

@Suite struct VRRPAdvertisementTests {
    /// Built by hand from RFC 5798 §5.1 and §5.2.8, not by our encoder:
    /// pseudo-header 0ac8 0002 e000 0012 0070 000c + message 3133 9601 0064 0000 0ac8 0032
    /// sums to 0x1bdea → folded 0xbdeb → complemented 0x4214.
    @Test func encodesTheRFCLayoutByteForByte() throws {
        let expected: [UInt8] = [
            0x31,  // version 3, type 1
            51,  // VRID
            150,  // priority
            1,  // count
            0x00, 0x64,  // reserved 0 + 100 centiseconds
            0x42, 0x14,  // checksum
            10, 200, 0, 50,  // VIP
        ]
        #expect(try labAdvert().encode(source: lb, destination: group) == expected)
    }

    @Test func theChecksumCoversThePseudoHeader() throws {
        let advert = try labAdvert()
        let multicast = try #require(advert.encode(source: lb, destination: group))
        let unicast = try #require(advert.encode(source: lb, destination: IPAddress("10.200.0.3")!))
        let otherSource = try #require(advert.encode(source: IPAddress("10.200.0.4")!, destination: group))
        #expect(multicast[6...7] != unicast[6...7])
        #expect(multicast[6...7] != otherSource[6...7])
        #expect(multicast[8...] == unicast[8...])
    }

    @Test func encodesTheTwelveBitIntervalAndManyAddresses() throws {
        let addresses = (1...255).map { IPAddress.v4(0x0A00_0000 | UInt32($0)) }
        let advert = try VRRPAdvertisement(
            virtualRouterId: 255, priority: 255, maxAdvertInterval: 4095, addresses: addresses)
        let bytes = try #require(advert.encode(source: lb, destination: group))
        #expect(bytes.count == 8 + 4 * 255)
        #expect(bytes[3] == 255)
        #expect(bytes[4] == 0x0F && bytes[5] == 0xFF)
        #expect(Array(bytes[8 + 4 * 254..<bytes.count]) == [10, 0, 0, 255])
        let packet = try #require(advert.encodePacket(source: lb, destination: group))
        let validator = VRRPPacketValidator(virtualRouterId: 255, expectedAddresses: Set(addresses), localAddresses: [])
        #expect(try validator.validate(packet).get().advert == advert)
    }

    @Test func rejectsValuesTheWireCannotCarry() throws {
        #expect(throws: VRRPAdvertisement.InvalidField.virtualRouterId(0)) {
            try VRRPAdvertisement(virtualRouterId: 0, priority: 1, maxAdvertInterval: 1, addresses: [vip])
        }
        #expect(throws: VRRPAdvertisement.InvalidField.virtualRouterId(256)) {
            try VRRPAdvertisement(virtualRouterId: 256, priority: 1, maxAdvertInterval: 1, addresses: [vip])
        }
        #expect(throws: VRRPAdvertisement.InvalidField.priority(256)) {
            try VRRPAdvertisement(virtualRouterId: 1, priority: 256, maxAdvertInterval: 1, addresses: [vip])
        }
        #expect(throws: VRRPAdvertisement.InvalidField.maxAdvertInterval(0)) {
            try VRRPAdvertisement(virtualRouterId: 1, priority: 1, maxAdvertInterval: 0, addresses: [vip])
        }
        #expect(throws: VRRPAdvertisement.InvalidField.maxAdvertInterval(4096)) {
            try VRRPAdvertisement(virtualRouterId: 1, priority: 1, maxAdvertInterval: 4096, addresses: [vip])
        }
        #expect(throws: VRRPAdvertisement.InvalidField.addressCount(0)) {
            try VRRPAdvertisement(virtualRouterId: 1, priority: 1, maxAdvertInterval: 1, addresses: [])
        }
        let v6 = IPAddress("2001:db8::1")!
        #expect(throws: VRRPAdvertisement.InvalidField.notIPv4(v6)) {
            try VRRPAdvertisement(virtualRouterId: 1, priority: 1, maxAdvertInterval: 1, addresses: [vip, v6])
        }
        #expect(try labAdvert().encode(source: IPAddress("::1")!, destination: group) == nil)
    }

    @Test func theIPHeaderItBuildsIsValid() throws {
        let packet = try #require(try labAdvert().encodePacket(source: lb, destination: group))
        #expect(packet.count == 32)
        #expect(packet[0] == 0x45 && packet[8] == 255 && packet[9] == 112)
        #expect(Array(packet[2...3]) == [0, 32])
        #expect(Array(packet[12...15]) == [10, 200, 0, 2] && Array(packet[16...19]) == [224, 0, 0, 18])
        #expect(packet[0..<20].withUnsafeBytes { Checksum.finish(Checksum.sum($0)) } == 0)
    }
}
