import Foundation
import FulcrumCore
import FulcrumPacket
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The backend's tcx decapsulation program (`IPIPDecapsulationProgram`): its instruction list run by a small
/// interpreter of the few eBPF instructions it uses (every decision, byte-exact, without root), and in network
/// namespaces loaded and run by the kernel through `IPIPDecapsulator` — a whole frame delivered exactly once and
/// stripped before the IP stack, fragments reassembled and decapsulated in user space, frames for another address
/// passed untouched. Root for the namespace case, skipped loudly otherwise.
@Suite(.serialized) struct IPIPDecapsulationProgramTests {
    static let local = TestPackets.ip("10.202.0.11")
    static let sender = TestPackets.ip("10.202.0.2")
    static let vip = TestPackets.ip("10.202.0.100")

    /// An Ethernet frame carrying `inner` in an outer IPv4 header to `destination` (valid checksum).
    static func frame(
        _ inner: [UInt8], destination: UInt32 = local, versionIHL: UInt8 = 0x45, proto: UInt8 = 4,
        flagsOffset: UInt16 = 0, options: [UInt8] = []
    ) -> [UInt8] {
        var outer: [UInt8] = [versionIHL, 0] + TestPackets.be16(UInt16(20 + options.count + inner.count))
        outer += TestPackets.be16(0x55) + TestPackets.be16(flagsOffset) + [64, proto, 0, 0]
        outer += TestPackets.be32(sender) + TestPackets.be32(destination) + options
        let c = TestPackets.referenceChecksum(outer)
        outer[10] = UInt8(c >> 8)
        outer[11] = UInt8(c & 0xFF)
        return TestPackets.ethernet() + outer + inner
    }

    static let inner = TestPackets.ipv4(
        src: sender, dst: vip, proto: 17, sport: 5000, dport: 9999, payload: Array("hello".utf8))

    // MARK: - The instruction list, interpreted

    /// What the program did to one frame.
    struct Run {
        var verdict: UInt64
        var frame: [UInt8]
        /// Arguments of each bpf_skb_adjust_room call: (len_diff, mode, flags).
        var adjustments: [(Int32, UInt64, UInt64)]
    }

    /// Runs `code` on `frame` (skb->protocol `skbProtocol`, network order as in the low 16 bits of the context
    /// field), interpreting exactly the instructions the program uses; anything else fails the test.
    static func run(_ code: [UInt64], frame: [UInt8], skbProtocol: UInt16 = 0x0008) throws -> Run {
        let contextBase: UInt64 = 0x1000
        let stackTop: UInt64 = 0x10_0000 + 512
        var stack = [UInt8](repeating: 0, count: 512)
        var r = [UInt64](repeating: 0, count: 11)
        r[1] = contextBase
        r[10] = stackTop
        var packet = frame
        var adjustments: [(Int32, UInt64, UInt64)] = []
        func stackIndex(_ address: UInt64, _ size: Int) throws -> Int {
            let index = Int(address) - Int(stackTop - 512)
            guard index >= 0, index + size <= 512 else { throw Unexpected(what: "stack access at \(address)") }
            return index
        }
        var pc = 0
        var steps = 0
        while pc < code.count {
            steps += 1
            guard steps < 1000 else { throw Unexpected(what: "no exit within 1000 steps") }
            let instruction = code[pc]
            let opcode = UInt8(instruction & 0xFF)
            let dst = Int((instruction >> 8) & 0x0F)
            let src = Int((instruction >> 12) & 0x0F)
            let offset = Int(Int16(bitPattern: UInt16((instruction >> 16) & 0xFFFF)))
            let immediate = Int32(bitPattern: UInt32(instruction >> 32))
            let extended = UInt64(bitPattern: Int64(immediate))
            pc += 1
            switch opcode {
            case 0xBF: r[dst] = r[src]
            case 0xB7: r[dst] = extended
            case 0x07: r[dst] = r[dst] &+ extended
            case 0x57: r[dst] &= extended
            case 0x61, 0x69, 0x71:
                let size = opcode == 0x61 ? 4 : opcode == 0x69 ? 2 : 1
                let address = r[src] &+ UInt64(bitPattern: Int64(offset))
                if r[src] == contextBase {
                    guard offset == 16, size == 4 else { throw Unexpected(what: "context read at \(offset)") }
                    r[dst] = UInt64(skbProtocol)
                } else {
                    let i = try stackIndex(address, size)
                    r[dst] = (0..<size).reduce(0) { $0 | UInt64(stack[i + $1]) << (8 * $1) }
                }
            case 0x55: if r[dst] != extended { pc += offset }
            case 0x16: if UInt32(truncatingIfNeeded: r[dst]) == UInt32(bitPattern: immediate) { pc += offset }
            case 0x05: pc += offset
            case 0x85:
                switch immediate {
                case 26:  // bpf_skb_load_bytes(skb, offset, to, len)
                    let (from, length) = (Int(r[2]), Int(r[4]))
                    if from + length > packet.count {
                        r[0] = UInt64(bitPattern: -14)
                    } else {
                        let i = try stackIndex(r[3], length)
                        stack.replaceSubrange(i..<(i + length), with: packet[from..<(from + length)])
                        r[0] = 0
                    }
                case 50:  // bpf_skb_adjust_room(skb, len_diff, mode, flags): only the shrink after the MAC header
                    let diff = Int32(truncatingIfNeeded: Int64(bitPattern: r[2]))
                    adjustments.append((diff, r[3], r[4]))
                    if diff == -20 && r[3] == 1 { packet.removeSubrange(14..<34) }
                    r[0] = 0
                default: throw Unexpected(what: "helper \(immediate)")
                }
                // Calls clobber r1-r5.
                for i in 1...5 { r[i] = 0xDEAD }
            case 0x95:
                return Run(verdict: r[0], frame: packet, adjustments: adjustments)
            default:
                throw Unexpected(what: String(format: "opcode 0x%02x at %d", opcode, pc - 1))
            }
            guard pc >= 0, pc <= code.count else { throw Unexpected(what: "jump out of the program to \(pc)") }
        }
        throw Unexpected(what: "ran off the end")
    }

    struct Unexpected: Error, CustomStringConvertible {
        var what: String
        var description: String { what }
    }

    static let code = IPIPDecapsulationProgram.instructions(localAddresses: [local])
    /// TCX_NEXT (-1) as the 64-bit r0 the interpreter returns.
    static let tcxNext = UInt64(bitPattern: -1)

    @Test func wholeFrameForThisHostIsStrippedAfterTheEthernetHeader() throws {
        let result = try Self.run(Self.code, frame: Self.frame(Self.inner))
        #expect(result.verdict == Self.tcxNext, "TCX_NEXT")
        #expect(result.adjustments.count == 1)
        // -20 bytes, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO.
        #expect(result.adjustments.first.map { [Int64($0.0), Int64($0.1), Int64($0.2)] } == [-20, 1, 0x81])
        #expect(result.frame == TestPackets.ethernet() + Self.inner)
        // DF is no fragment.
        let df = try Self.run(Self.code, frame: Self.frame(Self.inner, flagsOffset: 0x4000))
        #expect(df.adjustments.count == 1)
    }

    @Test(
        arguments: [
            ("more fragments", frame(inner, flagsOffset: 0x2000)),
            ("a later fragment", frame(inner, flagsOffset: 0x00B9)),
            ("a fragment offset's high bits", frame(inner, flagsOffset: 0x1000)),
            ("another address", frame(inner, destination: TestPackets.ip("10.202.0.77"))),
            ("options", frame(inner, versionIHL: 0x46, options: [1, 1, 1, 1])),
            ("protocol 41", frame(inner, proto: 41)),
            ("TCP", frame(inner, proto: 6)),
            ("an inner IPv6 header", frame([0x60] + inner.dropFirst())),
            ("an outer IPv6 version", frame(inner, versionIHL: 0x65)),
            ("too short", Array(frame(inner).prefix(34))),
        ])
    func everythingElsePassesUntouched(_ what: String, _ frame: [UInt8]) throws {
        let result = try Self.run(Self.code, frame: frame)
        #expect(result.verdict == Self.tcxNext && result.adjustments.isEmpty, "\(what)")
        #expect(result.frame == frame, "\(what)")
    }

    @Test func onlyIPv4FramesAreLookedAt() throws {
        let result = try Self.run(Self.code, frame: Self.frame(Self.inner), skbProtocol: 0x0608)
        #expect(result.verdict == Self.tcxNext && result.adjustments.isEmpty)
    }

    /// Every listed address counts, also one whose last byte has the top bit set (a 64-bit compare would
    /// sign-extend the immediate and never match it), and only the first `maximumAddresses`.
    @Test func destinationsAreTheListedAddresses() throws {
        let high = TestPackets.ip("10.202.0.200")
        let addresses = [TestPackets.ip("192.0.2.1"), high] + (1...20).map { TestPackets.ip("198.51.100.\($0)") }
        let code = IPIPDecapsulationProgram.instructions(localAddresses: addresses)
        for (address, decapsulated) in [
            (high, true), (TestPackets.ip("192.0.2.1"), true), (TestPackets.ip("198.51.100.14"), true),
            (TestPackets.ip("198.51.100.15"), false), (TestPackets.ip("10.202.0.201"), false),
        ] {
            let result = try Self.run(code, frame: Self.frame(Self.inner, destination: address))
            #expect(result.adjustments.count == (decapsulated ? 1 : 0), "\(address)")
        }
        let none = IPIPDecapsulationProgram.instructions(localAddresses: [])
        #expect(try Self.run(none, frame: Self.frame(Self.inner)).adjustments.isEmpty)
    }

    @Test func everyJumpLandsInsideAndTheProgramEndsWithExit() {
        let code = Self.code
        #expect(code.last == 0x95)
        for (i, instruction) in code.enumerated() {
            let opcode = instruction & 0xFF
            guard opcode & 0x07 == 0x05 || opcode & 0x07 == 0x06, opcode != 0x85, opcode != 0x95 else { continue }
            let offset = Int(Int16(bitPattern: UInt16((instruction >> 16) & 0xFFFF)))
            #expect(i + 1 + offset < code.count && i + 1 + offset > i, "instruction \(i)")
        }
    }

    // MARK: - In the kernel

    /// Namespace `a` (10.202.0.2, the sender, an AF_PACKET socket on eth0) and `b` (10.202.0.11, the backend: the
    /// VIP 10.202.0.100 on lo, a UDP socket on it, `IPIPDecapsulator` with the program on eth0, and an AF_PACKET
    /// socket for ETH_P_IP, which the kernel feeds after tcx ingress — unlike an ETH_P_ALL tap, which runs before
    /// it: it sees what the program made of a frame).
    @Test(.enabled(if: isRoot, "needs root for network namespaces and BPF: IPIP decapsulation program test SKIPPED"))
    func kernelStripsWholeFramesOnceAndPassesTheRest() throws {
        let lab = NamespaceLab(prefix: "fdp\(getpid() % 100_000)")
        defer { lab.tearDown() }
        let (a, b) = try lab.twoHostsOnAVeth(
            a: ("10.202.0.2", "02:00:00:00:02:02"), b: ("10.202.0.11", "02:00:00:00:02:11"))
        let macA = MACAddress(0x02, 0, 0, 0, 0x02, 0x02)
        let macB = MACAddress(0x02, 0, 0, 0, 0x02, 0x11)
        try lab.ip(["-n", b, "addr", "add", "10.202.0.100/32", "dev", "lo"])
        // The TUN path (the reassembled fragment) needs loose or no reverse-path filtering on tipip.
        try lab.sysctl(b, "net.ipv4.conf.all.rp_filter=0")
        try lab.sysctl(b, "net.ipv4.conf.default.rp_filter=0")
        let pathB = "/var/run/netns/\(b)"
        let decapsulator = try IPIPDecapsulator(
            tunName: "tipip", networkNamespace: pathB, setUp: true, input: .kernelProgram(interfaces: nil))
        try decapsulator.start()
        defer { decapsulator.stop() }
        #expect(decapsulator.usesKernelProgram, "\(decapsulator.fallbackReason ?? "")")
        #expect(decapsulator.programs.map { $0.interface } == ["eth0"], "only the Ethernet interface, not lo or tipip")
        #expect(!decapsulator.usesPacketSocket, "no AF_PACKET input next to the program")

        let sender = try NetworkNamespace.perform(path: "/var/run/netns/\(a)") { () throws(PacketIOError) in
            try PacketSocket(interface: "eth0")
        }
        let (udp, capture) = try NetworkNamespace.perform(path: pathB) { () throws(PacketIOError) -> (Int32, Int32) in
            let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard udp >= 0 else { throw PacketIOError("UDP socket", errno: errno) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(9999).bigEndian
            address.sin_addr.s_addr = Self.vip.bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(udp, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else { throw PacketIOError("bind UDP", errno: errno) }
            // Unbound, for ETH_P_IP on every device of the namespace: the kernel keeps it with the IP stack's own
            // handler (ptype_base), not with the taps. (tipip's packets have no Ethernet header: `captured` skips
            // them.)
            let capture = socket(
                AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(0x0800).bigEndian))
            guard capture >= 0 else { throw PacketIOError("AF_PACKET socket", errno: errno) }
            return (udp, capture)
        }
        defer {
            close(udp)
            close(capture)
        }
        // An ETH_P_ALL tap on b's eth0 (virtio_net_hdr first): taps run before tcx ingress.
        let tap = try NetworkNamespace.perform(path: pathB) { () throws(PacketIOError) in
            try PacketSocket(interface: "eth0")
        }

        func datagram(_ text: String, id: UInt16 = 7) -> [UInt8] {
            TestPackets.ipv4(
                src: Self.sender, dst: Self.vip, proto: 17, sport: 5000, dport: 9999, payload: Array(text.utf8),
                id: id, df: false)
        }
        func send(_ frame: [UInt8]) {
            #expect(sender.sendPlain(frame), "send of \(frame.count) bytes")
        }
        func ipip(_ inner: [UInt8], destination: UInt32 = Self.local, flagsOffset: UInt16 = 0) -> [UInt8] {
            var frame = Self.frame(inner, destination: destination, flagsOffset: flagsOffset)
            frame.replaceSubrange(0..<12, with: macB.array + macA.array)
            return frame
        }
        func fragment(_ payload: [UInt8], flagsOffset: UInt16) -> [UInt8] {
            var outer: [UInt8] = [0x45, 0] + TestPackets.be16(UInt16(20 + payload.count)) + TestPackets.be16(0x77)
            outer += TestPackets.be16(flagsOffset) + [64, 4, 0, 0] + TestPackets.be32(Self.sender)
            outer += TestPackets.be32(Self.local)
            let c = TestPackets.referenceChecksum(outer)
            outer[10] = UInt8(c >> 8)
            outer[11] = UInt8(c & 0xFF)
            return macB.array + macA.array + [8, 0] + outer + payload
        }
        /// Datagrams received on the VIP until `last` arrives (at most 3 s).
        func receive(until last: String) -> [String] {
            var got: [String] = []
            var buffer = [UInt8](repeating: 0, count: 9000)
            let deadline = Date().addingTimeInterval(3)
            while Date() < deadline {
                var pfd = pollfd(fd: udp, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) > 0 else { continue }
                let n = recv(udp, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard n >= 0 else { continue }
                let text = String(decoding: buffer[0..<n], as: UTF8.self)
                got.append(text)
                if text == last { break }
            }
            return got
        }
        /// Our IPv4 frames (from the sender, UDP or IPIP) the ETH_P_IP socket has seen so far (it runs after tcx),
        /// without waiting.
        func captured() -> [[UInt8]] {
            var frames: [[UInt8]] = []
            var buffer = [UInt8](repeating: 0, count: 9000)
            for _ in 0..<1000 {
                let n = recv(capture, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard n > 0 else { break }
                let frame = Array(buffer[0..<n])
                guard frame.count >= 34, TestPackets.read16(frame, 12) == 0x0800 else { continue }
                guard TestPackets.read32(frame, 26) == Self.sender, frame[23] == 4 || frame[23] == 17 else { continue }
                frames.append(frame)
            }
            return frames
        }
        func tunReceived() throws -> String {
            try lab.run(
                "/usr/sbin/ip", ["netns", "exec", b, "cat", "/sys/class/net/tipip/statistics/rx_packets"]
            ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        // Whole frames: each delivered exactly once, stripped before the IP stack saw it, nothing in user space.
        let texts = (0..<20).map { "whole-\($0)" }
        for (i, text) in texts.enumerated() { send(ipip(datagram(text, id: UInt16(100 + i)))) }
        send(ipip(datagram("end")))
        let received = receive(until: "end")
        #expect(received == texts + ["end"], "each datagram once, in order: \(received)")
        let seen = captured()
        #expect(seen.count == 21, "the ETH_P_IP socket saw \(seen.count) frames")
        #expect(seen.allSatisfy { $0[14 + 9] == 17 }, "every one already decapsulated (UDP, not protocol 4)")
        #expect(seen.first == macB.array + macA.array + [8, 0] + datagram("whole-0", id: 100), "byte-exact")
        #expect(decapsulator.statistics.decapsulated == 0, "\(decapsulator.statistics)")
        // The tap saw the same frames still encapsulated: a decapsulator reading one would deliver them twice.
        var tapped = 0
        var tapBuffer = [UInt8](repeating: 0, count: 9000)
        for _ in 0..<1000 {
            let n = recv(tap.fd, &tapBuffer, tapBuffer.count, Int32(MSG_DONTWAIT))
            guard n > 0 else { break }
            let frame = Array(tapBuffer[10..<n])
            if frame.count >= 34 && TestPackets.read32(frame, 26) == Self.sender && frame[23] == 4 { tapped += 1 }
        }
        #expect(tapped == 21, "the tap saw \(tapped) IPIP frames")
        #expect(try tunReceived() == "0", "nothing went through the TUN")

        // An outer-fragmented packet: passed on, reassembled by the kernel, decapsulated from the raw socket.
        let big = datagram(String(repeating: "f", count: 2500) + "-fragmented", id: 300)
        let whole = ipip(big)
        let firstPart = Array(whole[34..<(34 + 1480)])
        let secondPart = Array(whole[(34 + 1480)...])
        send(fragment(firstPart, flagsOffset: 0x2000))
        send(fragment(secondPart, flagsOffset: UInt16(1480 / 8)))
        let reassembled = receive(until: String(repeating: "f", count: 2500) + "-fragmented")
        #expect(reassembled.count == 1, "the fragmented datagram arrived once: \(reassembled.map(\.count))")
        let counted = waitUntil(seconds: 3) {
            decapsulator.statistics.reassembled == 1 && decapsulator.statistics.decapsulated == 1
        }
        #expect(counted, "\(decapsulator.statistics)")
        let fragments = captured()
        #expect(fragments.count == 2 && fragments.allSatisfy { $0[14 + 9] == 4 }, "fragments passed as IPIP")

        // A frame for another address: passed untouched (and not delivered: this host does not forward).
        let foreign = ipip(datagram("foreign"), destination: TestPackets.ip("10.202.0.77"))
        send(foreign)
        send(ipip(datagram("after")))
        #expect(receive(until: "after") == ["after"], "the foreign frame was not decapsulated")
        let last = captured()
        #expect(last.first == foreign, "passed byte for byte")
        #expect(last.count == 2)

    }
}
