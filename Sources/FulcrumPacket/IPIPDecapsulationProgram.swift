/// The eBPF program that lets a backend's kernel strip the outer IPv4 header of IPIP frames (tcx ingress on the
/// backend's Ethernet interfaces, `IPIPDecapsulator` with `.kernelProgram`): the inner packet goes on into the IP
/// stack in place — no copy to user space, GSO super-frames whole. Hand-assembled like `IPIPEncapsulationProgram`
/// (about thirty instructions); pure, so the instruction list is tested without loading it.
///
/// The program reads the outer IPv4 header and the inner version (`bpf_skb_load_bytes`, which also reads a
/// non-linear skb) and decapsulates only a frame that is IPv4 (`skb->protocol`), IHL 5 (no options), protocol 4,
/// not a fragment (MF clear, offset 0), addressed to one of `localAddresses` (immediates: the interface's IPv4
/// addresses when the program was built) and carrying an inner IPv4 header. Then
/// `bpf_skb_adjust_room(skb, -20, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO)`
/// removes the 20 bytes after the Ethernet header (Linux 6.3+ for the DECAP flag; tcx itself needs 6.6):
/// `skb->protocol` stays IPv4 and the network header moves to the inner one. FIXED_GSO keeps a super-frame's
/// gso_size as it was on the wire (without it the kernel adds the 20 bytes, and a GRO packet near the MTU could
/// then fail re-segmentation, `skb->len <= gso_size`).
///
/// Everything else — and a frame whose helper call fails — goes on untouched: fragments are reassembled by the
/// kernel and decapsulated from the raw socket in user space, like packets with options or for another of the
/// host's addresses; foreign frames are none of our business. The verdict is always `TCX_NEXT`, not `TCX_PASS`:
/// on a shared interface other tcx programs may be attached after this one (a firewall, a CNI's policy), and
/// `TCX_PASS` would let every frame skip them; with none after it the kernel passes the frame on.
public enum IPIPDecapsulationProgram {
    /// tcx verdict: the next program in the chain (or the stack) sees the (possibly decapsulated) frame.
    static let next: Int32 = -1
    /// `BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4` (uapi `linux/bpf.h`: bit 0 and bit 7).
    static let adjustFlags: Int32 = 0x01 | 0x80
    /// `BPF_ADJ_ROOM_MAC`: the room is taken right after the MAC header.
    static let adjustMode: Int32 = 1
    /// At most this many destination addresses are compared (the rest take the user-space path).
    public static let maximumAddresses = 16

    /// The program for outer destinations `localAddresses` (host order; the first `maximumAddresses` count), as
    /// 8-byte instructions for BPF_PROG_LOAD.
    public static func instructions(localAddresses: [UInt32]) -> [UInt64] {
        typealias I = BPFInstruction
        // fp-24 … fp-4: the outer header (20 bytes) and the inner version byte, loaded in one call.
        let header: Int16 = -24
        var program: [BPFInstruction] = [
            I.mov64(.r6, .r1),
            // skb->protocol (offset 16, network order in the low 16 bits): only IPv4.
            I.loadX(.word, .r2, .r6, 16),
            I.jumpNotEqual(.r2, 0x0008, label: "next"),
            // bpf_skb_load_bytes(skb, 14, fp-24, 21): fails (→ next) on a frame too short for both headers.
            I.mov64(.r1, .r6), I.mov64(.r2, 14), I.mov64(.r3, .r10), I.add64(.r3, Int32(header)), I.mov64(.r4, 21),
            I.call(.skbLoadBytes),
            I.jumpNotEqual(.r0, 0, label: "next"),
            // Version 4 and IHL 5: options take the user-space path.
            I.loadX(.byte, .r2, .r10, header),
            I.jumpNotEqual(.r2, 0x45, label: "next"),
            // Protocol 4 (IPIP).
            I.loadX(.byte, .r2, .r10, header + 9),
            I.jumpNotEqual(.r2, 4, label: "next"),
            // Flags and fragment offset, read as a little-endian half word: MF (0x20) and the offset's 13 bits
            // are 0xFF3F of it; any set is a fragment, which the kernel must reassemble first.
            I.loadX(.half, .r2, .r10, header + 6),
            I.and64(.r2, 0xFF3F),
            I.jumpNotEqual(.r2, 0, label: "next"),
            // The destination, as the 4 bytes it has on the wire read as a little-endian word.
            I.loadX(.word, .r2, .r10, header + 16),
        ]
        for address in localAddresses.prefix(maximumAddresses) {
            program.append(I.jump32Equal(.r2, Int32(bitPattern: address.byteSwapped), label: "local"))
        }
        program += [
            I.jump(label: "next"),
            I.label("local"),
            // The inner packet must be IPv4 too (version nibble 4).
            I.loadX(.byte, .r2, .r10, header + 20),
            I.and64(.r2, 0xF0),
            I.jumpNotEqual(.r2, 0x40, label: "next"),
            // bpf_skb_adjust_room(skb, -20, BPF_ADJ_ROOM_MAC, DECAP_L3_IPV4 | FIXED_GSO); on failure the frame
            // is unchanged and goes on to the raw socket.
            I.mov64(.r1, .r6), I.mov64(.r2, -20), I.mov64(.r3, adjustMode), I.mov64(.r4, adjustFlags),
            I.call(.skbAdjustRoom),
            I.label("next"),
            I.mov64(.r0, next),
            I.exit,
        ]
        return BPFInstruction.assemble(program)
    }
}
