/// The eBPF program that lets the kernel encapsulate IPIP GSO super-frames whole (tcx ingress on the IPIP
/// tunnel's TAP device, `IPIPEncapsulator`). Hand-assembled here (about forty instructions) so the build needs
/// no clang, ELF loader or libbpf; pure, so the instruction list is tested without loading it.
///
/// Contract with user space: the tunnel worker writes the inner IPv4 packet into the TAP behind an Ethernet
/// header whose destination is the TAP's own MAC (else the frame is PACKET_OTHERHOST and IP drops it) and whose
/// source MAC carries the outer header's per-packet fields: bytes 0–3 the backend's IPv4 address, bytes 4–5 the
/// first outer IP id (both in network order, `sourceMAC(backend:identification:)`). The program
///
/// 1. reads those six bytes, then `bpf_skb_adjust_room(skb, 20, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)`
///    makes room for the outer header after the Ethernet header and marks a GSO skb `SKB_GSO_IPXIP4` (and lowers
///    its gso_size by 20, so every segment keeps its outer packet within the inner path's MTU);
/// 2. builds the outer IPv4 header on its stack: version 4, IHL 5, the inner TOS (ECN), total length
///    `skb->len - 14`, the id, DF clear (like the software path), TTL 64, protocol 4, the source address
///    (an immediate of this program: one program per service), the backend, and the header checksum
///    (`bpf_csum_diff` over the 20 bytes, folded);
/// 3. stores it at offset 14 and passes the frame on (`TCX_PASS`): the kernel routes the outer packet (the TAP
///    forwards) and segments it, or hands it whole to a veth.
///
/// Any helper failure drops the frame (`TCX_DROP`); frames that are not IPv4 are dropped too (we write none).
public enum IPIPEncapsulationProgram {
    /// tcx verdicts.
    static let pass: Int32 = 0
    static let drop: Int32 = 2

    /// The frame's Ethernet source MAC for `backend` (host order) and the first outer IP id.
    public static func sourceMAC(backend: UInt32, identification: UInt16) -> MACAddress {
        MACAddress(
            UInt8(truncatingIfNeeded: backend >> 24), UInt8(truncatingIfNeeded: backend >> 16),
            UInt8(truncatingIfNeeded: backend >> 8), UInt8(truncatingIfNeeded: backend),
            UInt8(truncatingIfNeeded: identification >> 8), UInt8(truncatingIfNeeded: identification))
    }

    /// The program for outer source address `source` (host order), as 8-byte instructions for BPF_PROG_LOAD.
    public static func instructions(source: UInt32) -> [UInt64] {
        typealias I = BPFInstruction
        // Stack: fp-8 … fp-3 the six MAC bytes, fp-32 … fp-13 the outer header under construction. Stack
        // accesses must be aligned to their size (the verifier is strict about the stack).
        let mac: Int16 = -8
        let header: Int16 = -32
        // The source address as the 4 bytes it has on the wire, read as a little-endian word (BPF on x86/arm64).
        let sourceWire = Int32(bitPattern: source.byteSwapped)
        let prologue: [BPFInstruction] = [
            I.mov64(.r6, .r1),
            // skb->protocol (offset 16, network order in the low 16 bits): only IPv4.
            I.loadX(.word, .r2, .r6, 16),
            I.jumpNotEqual(.r2, 0x0008, label: "drop"),
            // bpf_skb_load_bytes(skb, 6, fp-8, 6): the backend and the id from the source MAC.
            I.mov64(.r1, .r6), I.mov64(.r2, 6), I.mov64(.r3, .r10), I.add64(.r3, Int32(mac)), I.mov64(.r4, 6),
            I.call(.skbLoadBytes),
            I.jumpNotEqual(.r0, 0, label: "drop"),
            // bpf_skb_adjust_room(skb, 20, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
            I.mov64(.r1, .r6), I.mov64(.r2, 20), I.mov64(.r3, 1), I.mov64(.r4, 2),
            I.call(.skbAdjustRoom),
            I.jumpNotEqual(.r0, 0, label: "drop"),
            // bpf_skb_load_bytes(skb, 34, fp-32, 2): the inner version/IHL and TOS byte; the first is replaced.
            I.mov64(.r1, .r6), I.mov64(.r2, 34), I.mov64(.r3, .r10), I.add64(.r3, Int32(header)), I.mov64(.r4, 2),
            I.call(.skbLoadBytes),
            I.jumpNotEqual(.r0, 0, label: "drop"),
            I.store(.byte, .r10, header, 0x45),
            // Total length: skb->len (offset 0, the Ethernet header included at tcx ingress) - 14, big-endian.
            I.loadX(.word, .r2, .r6, 0),
            I.add64(.r2, -14),
            I.toBigEndian16(.r2),
            I.storeX(.half, .r10, header + 2, .r2),
            // Identification from MAC bytes 4-5 (already in network order).
            I.loadX(.half, .r2, .r10, mac + 4),
            I.storeX(.half, .r10, header + 4, .r2),
            // Flags and fragment offset 0; TTL 64, protocol 4, checksum 0 (as one little-endian word).
            I.store(.half, .r10, header + 6, 0),
            I.store(.word, .r10, header + 8, 0x0000_0440),
            I.store(.word, .r10, header + 12, sourceWire),
            I.loadX(.word, .r2, .r10, mac),
            I.storeX(.word, .r10, header + 16, .r2),
            // bpf_csum_diff(NULL, 0, fp-32, 20, 0): the 32-bit one's-complement sum of the header.
            I.mov64(.r1, 0), I.mov64(.r2, 0), I.mov64(.r3, .r10), I.add64(.r3, Int32(header)), I.mov64(.r4, 20),
            I.mov64(.r5, 0),
            I.call(.csumDiff),
            // Fold to 16 bits twice, complement; stored in memory order like the sum was taken.
            I.mov64(.r1, .r0), I.rsh64(.r1, 16), I.and64(.r0, 0xFFFF), I.add64(.r0, .r1),
            I.mov64(.r1, .r0), I.rsh64(.r1, 16), I.add64(.r0, .r1),
            I.xor64(.r0, -1), I.and64(.r0, 0xFFFF),
            I.storeX(.half, .r10, header + 10, .r0),
            // bpf_skb_store_bytes(skb, 14, fp-32, 20, 0)
            I.mov64(.r1, .r6), I.mov64(.r2, 14), I.mov64(.r3, .r10), I.add64(.r3, Int32(header)), I.mov64(.r4, 20),
            I.mov64(.r5, 0),
            I.call(.skbStoreBytes),
            I.jumpNotEqual(.r0, 0, label: "drop"),
            I.mov64(.r0, pass),
            I.exit,
            I.label("drop"),
            I.mov64(.r0, drop),
            I.exit,
        ]
        return BPFInstruction.assemble(prologue)
    }
}
