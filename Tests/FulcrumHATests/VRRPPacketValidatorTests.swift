import FulcrumCore
import Testing

@testable import FulcrumHA

private let peer = IPAddress("10.200.0.3")!
private let me = IPAddress("10.200.0.2")!
private let group = FulcrumHA.vrrpMulticastGroup
private let vips: [IPAddress] = [IPAddress("10.200.0.50")!, IPAddress("10.200.0.51")!]
private let validator = VRRPPacketValidator(virtualRouterId: 51, expectedAddresses: Set(vips), localAddresses: [me])

private func packet(
    priority: Int = 100, interval: Int = 100, addresses: [IPAddress] = vips, ttl: UInt8 = 255
)
    throws -> [UInt8]
{
    let advert = try VRRPAdvertisement(
        virtualRouterId: 51, priority: priority, maxAdvertInterval: interval, addresses: addresses)
    return try #require(advert.encodePacket(source: peer, destination: group, ttl: ttl))
}

private func reason(_ bytes: [UInt8], _ v: VRRPPacketValidator = validator) -> VRRPDropReason? {
    if case .failure(let reason) = v.validate(bytes) { return reason }
    return nil
}

@Suite struct VRRPPacketValidatorTests {
    @Test func acceptsAGoodAdvertAndReportsItsFields() throws {
        let received = try validator.validate(try packet(priority: 120, interval: 7)).get()
        #expect(received.source == peer)
        #expect(received.destination == group)
        #expect(received.advert.priority == 120)
        #expect(received.advert.maxAdvertInterval == 7)
        #expect(received.advert.virtualRouterId == 51)
        #expect(received.advert.addresses == vips)
    }

    @Test func acceptsAddressesInAnotherOrderAndIPOptionsAndLinkPadding() throws {
        #expect(reason(try packet(addresses: vips.reversed())) == nil)
        // Link-layer padding after the IP total length is not part of the message.
        #expect(reason(try packet() + [0, 0, 0, 0, 0, 0]) == nil)
        // An IP header with options (IHL 6): the message starts after them.
        var withOptions = try packet()
        withOptions.insert(contentsOf: [1, 1, 1, 0], at: 20)  // NOP, NOP, NOP, end of options
        withOptions[0] = 0x46
        let total = withOptions.count
        withOptions[2] = UInt8(total >> 8)
        withOptions[3] = UInt8(truncatingIfNeeded: total)
        #expect(reason(withOptions) == nil)
    }

    @Test func ignoresTheReservedBitsOfTheIntervalField() throws {
        var bytes = try packet(interval: 100)
        bytes[24] |= 0xF0
        refreshChecksum(&bytes)
        #expect(try validator.validate(bytes).get().advert.maxAdvertInterval == 100)
    }

    @Test func everyCheckHasItsOwnReason() throws {
        var seen: [VRRPDropReason: [UInt8]] = [:]
        func expectDrop(_ expected: VRRPDropReason, _ bytes: [UInt8], _ v: VRRPPacketValidator = validator) {
            #expect(reason(bytes, v) == expected, "expected \(expected)")
            seen[expected] = bytes
        }
        let good = try packet()

        expectDrop(.truncated, Array(good.prefix(19)))
        expectDrop(.truncated, Array(good.prefix(27)))  // IP total length says 36
        var shortTotal = good
        shortTotal[3] = 20 + 7  // the IP packet holds less than the fixed VRRP fields
        expectDrop(.truncated, shortTotal)

        var v6 = good
        v6[0] = 0x65
        expectDrop(.badIPHeader, v6)
        var tinyIHL = good
        tinyIHL[0] = 0x44
        expectDrop(.badIPHeader, tinyIHL)
        var hugeIHL = good
        hugeIHL[0] = 0x4F  // 60 bytes of header in a 36-byte packet
        expectDrop(.badIPHeader, hugeIHL)
        var totalBelowHeader = good
        totalBelowHeader[3] = 10
        expectDrop(.badIPHeader, totalBelowHeader)

        var udp = good
        udp[9] = 17
        expectDrop(.wrongProtocol, udp)

        expectDrop(.wrongTTL, try packet(ttl: 254))
        expectDrop(.wrongTTL, try packet(ttl: 1))

        var v2 = good
        v2[20] = 0x21
        refreshChecksum(&v2)
        expectDrop(.wrongVersion, v2)
        var type2 = good
        type2[20] = 0x32
        refreshChecksum(&type2)
        expectDrop(.wrongType, type2)

        var countTooHigh = good
        countTooHigh[23] = 3
        refreshChecksum(&countTooHigh)
        expectDrop(.lengthMismatch, countTooHigh)
        var countZero = good
        countZero[23] = 0
        refreshChecksum(&countZero)
        expectDrop(.lengthMismatch, countZero)
        var extraBytes = good + [0, 0, 0, 0]
        extraBytes[3] = UInt8(extraBytes.count)
        refreshChecksum(&extraBytes)
        expectDrop(.lengthMismatch, extraBytes)

        var corrupted = good
        corrupted[22] ^= 0x01  // priority changed after the checksum was computed
        expectDrop(.badChecksum, corrupted)
        var badSum = good
        badSum[26] ^= 0xFF
        expectDrop(.badChecksum, badSum)
        var spoofedSource = good
        spoofedSource[15] = 99  // the pseudo-header covers the source address
        expectDrop(.badChecksum, spoofedSource)

        var zeroInterval = good
        zeroInterval[24] = 0
        zeroInterval[25] = 0
        refreshChecksum(&zeroInterval)
        expectDrop(.zeroInterval, zeroInterval)

        let otherVRID = VRRPPacketValidator(virtualRouterId: 52, expectedAddresses: Set(vips), localAddresses: [me])
        expectDrop(.vridMismatch, good, otherVRID)

        let iAmThePeer = VRRPPacketValidator(virtualRouterId: 51, expectedAddresses: Set(vips), localAddresses: [peer])
        expectDrop(.ownAdvert, good, iAmThePeer)

        expectDrop(.addressCountMismatch, try packet(addresses: [vips[0]]))
        expectDrop(.addressListMismatch, try packet(addresses: [vips[0], IPAddress("10.200.0.99")!]))

        #expect(Set(seen.keys) == Set(VRRPDropReason.allCases), "a reason without a test")
    }

    @Test func theAddressOwnersAdvertIsKeptDespiteAnAddressMismatch() throws {
        // RFC 5798 §7.1: a mismatch is logged, but only a non-owner's advert is dropped.
        #expect(reason(try packet(priority: 255, addresses: [vips[0]])) == nil)
        #expect(reason(try packet(priority: 255, addresses: [IPAddress("10.200.0.99")!])) == nil)
        #expect(reason(try packet(priority: 254, addresses: [vips[0]])) == .addressCountMismatch)
    }

    @Test func countersCountEachReason() throws {
        var counters = VRRPDropCounters()
        for bytes in [try packet(ttl: 1), try packet(ttl: 64), Array(try packet().prefix(10))] {
            if let r = reason(bytes) { counters.record(r) }
        }
        #expect(counters[.wrongTTL] == 2)
        #expect(counters[.truncated] == 1)
        #expect(counters[.badChecksum] == 0)
        #expect(counters.total == 3)
    }

    /// Random corruptions of good packets and random byte strings: the validator must return a reason or an
    /// advert, never trap; an accepted packet must re-encode to the same message. Bounded: 60,000 inputs,
    /// deterministic seed, and a time cap.
    @Test func fuzzNeverTrapsAndAcceptedPacketsRoundTrip() throws {
        let random = FastRandom(seed: 0x5798)
        let seeds = [try packet(), try packet(priority: 255, addresses: [vips[0]]), try packet(priority: 0)]
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(20)
        var reasons = Set<VRRPDropReason>()
        var accepted = 0
        var iterations = 0
        while iterations < 60_000 && clock.now < deadline {
            iterations += 1
            var bytes = seeds[Int(random.next() % UInt64(seeds.count))]
            switch random.next() % 6 {
            case 0:  // flip one to three bytes
                for _ in 0...(random.next() % 3) {
                    bytes[Int(random.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                }
            case 1:  // truncate
                bytes = Array(bytes.prefix(Int(random.next() % UInt64(bytes.count))))
            case 2:  // append garbage
                bytes += (0..<(random.next() % 16)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            case 3:  // pure noise
                bytes = (0..<(random.next() % 80)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            case 4:  // change a VRRP field and fix the checksum, to get past it
                bytes[20 + Int(random.next() % 8)] = UInt8(truncatingIfNeeded: random.next())
                refreshChecksum(&bytes)
            default:  // change the IP header's length fields
                bytes[Int([0, 2, 3][Int(random.next() % 3)])] = UInt8(truncatingIfNeeded: random.next())
            }
            switch validator.validate(bytes) {
            case .failure(let r):
                reasons.insert(r)
            case .success(let received):
                accepted += 1
                let ihl = Int(bytes[0] & 0x0F) * 4
                let message = try #require(received.advert.encode(source: received.source, destination: group))
                var original = Array(bytes[ihl..<(ihl + message.count)])
                original[4] &= 0x0F  // reserved bits are not kept
                original[6] = message[6]
                original[7] = message[7]
                #expect(message == original)
            }
        }
        #expect(iterations >= 10_000, "the fuzz loop ran \(iterations) times before its time cap")
        // The mutations reach deep checks, not only the first one.
        #expect(reasons.isSuperset(of: [.truncated, .badChecksum, .wrongVersion, .lengthMismatch, .badIPHeader]))
        #expect(accepted > 0)
    }
}
