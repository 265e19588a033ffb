import FulcrumPacket
import Testing

@Suite struct ChecksumTests {
    @Test func matchesReferenceOnRandomData() {
        var rng = SeededGenerator(seed: 1)
        for length in 0..<200 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let fast = bytes.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
            #expect(fast == TestPackets.referenceChecksum(bytes), "length \(length)")
        }
    }

    @Test func rfc1071Example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (before the complement).
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        #expect(bytes.withUnsafeBytes { Checksum.fold(Checksum.sum($0)) } == 0xDDF2)
    }

    @Test func incrementalUpdateEqualsRecompute() {
        var rng = SeededGenerator(seed: 2)
        for _ in 0..<2000 {
            var words = (0..<10).map { _ in UInt16.random(in: 0...UInt16.max, using: &rng) }
            let bytes = { (w: [UInt16]) in w.flatMap { TestPackets.be16($0) } }
            let before = TestPackets.referenceChecksum(bytes(words))
            let i = Int.random(in: 0..<10, using: &rng)
            let old = words[i]
            words[i] = UInt16.random(in: 0...UInt16.max, using: &rng)
            let updated = Checksum.update(before, old: old, new: words[i])
            let recomputed = TestPackets.referenceChecksum(bytes(words))
            // 0x0000 and 0xFFFF are the same number in ones' complement (RFC 1624 §3).
            #expect(updated == recomputed || (updated | recomputed == 0xFFFF && updated & recomputed == 0))
        }
    }

    @Test func incrementalUpdateOf32BitField() {
        var packet = TestPackets.ipv4()
        let newDestination = TestPackets.ip("10.9.8.7")
        packet.withPacket { p in
            IPv4Header.rewriteAddress(p, at: 0, field: IPv4Header.destinationOffset, to: newDestination)
        }
        #expect(TestPackets.read32(packet, 16) == newDestination)
        #expect(TestPackets.referenceChecksum(Array(packet[0..<20])) == 0)
    }
}
