import CFulcrumLinux

#if canImport(Glibc)
import Glibc
#endif

/// An eBPF program (BPF_PROG_TYPE_SCHED_CLS) loaded with bpf(BPF_PROG_LOAD) and attached to one device's tcx
/// ingress hook with bpf(BPF_LINK_CREATE) — no netlink, no qdisc. The link is owned by this object: closing its
/// fd (deinit) detaches the program, and the device going away removes it too.
public final class TCXIngressProgram: Sendable {
    public let programFD: Int32
    public let linkFD: Int32
    /// The license string BPF_PROG_LOAD asks for: it only matters for GPL-only helpers, which we do not call.
    static let license = "Fulcrum"

    /// Loads `instructions` and attaches them to interface `interfaceIndex` of the calling thread's namespace.
    /// Throws `PacketIOError` naming the step: EPERM without CAP_BPF/CAP_NET_ADMIN, EINVAL from the link on
    /// kernels before 6.6 (no tcx), and the verifier's last lines when it rejects the program.
    public init(instructions: [UInt64], interfaceIndex: Int32, name: String) throws(PacketIOError) {
        var log = [CChar](repeating: 0, count: 16384)
        let fd = instructions.withUnsafeBufferPointer { code in
            fulcrum_bpf_load_sched_cls(code.baseAddress, UInt32(code.count), Self.license, name, &log, 16384)
        }
        guard fd >= 0 else {
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let tail = text.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw PacketIOError("BPF_PROG_LOAD \(name)\(tail.isEmpty ? "" : " (verifier: \(tail))")", errno: -fd)
        }
        let link = fulcrum_bpf_tcx_ingress_attach(fd, interfaceIndex)
        guard link >= 0 else {
            close(fd)
            throw PacketIOError("BPF_LINK_CREATE tcx ingress for \(name) on ifindex \(interfaceIndex)", errno: -link)
        }
        programFD = fd
        linkFD = link
    }

    deinit {
        close(linkFD)
        close(programFD)
    }
}
