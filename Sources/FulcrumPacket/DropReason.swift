/// Why the packet plane dropped a packet. Every drop is counted under one reason; none is a crash.
public enum DropReason: Int, Error, CaseIterable, Sendable, CustomStringConvertible {
    /// Shorter than the headers it claims to have.
    case truncated
    /// Not an EtherType we forward (neither IPv4 nor ARP).
    case unsupportedEtherType
    /// IP version field is not 4.
    case badVersion
    /// IPv4 header length below 20 bytes or beyond the packet.
    case badIHL
    /// IPv4 total length smaller than the header or larger than the buffer.
    case badTotalLength
    /// IPv4 header checksum does not verify.
    case badChecksum
    /// A fragment: ports are only in the first one, so flows cannot be identified (not reassembled).
    case fragment
    /// A transport protocol the service does not forward.
    case unsupportedProtocol
    /// TCP data offset below 20 bytes or beyond the segment, or a UDP length that does not fit.
    case badTransportHeader
    /// Well-formed, but not addressed to a virtual service (or a reply without a NAT mapping).
    case notForVIP
    /// A reply to the SNAT address for which no flow exists (expired or never created).
    case noFlow
    /// The pool had no backend available.
    case noBackend
    /// The picked backend has no IPv4 address (the packet plane is IPv4-only for now).
    case backendNotIPv4
    /// No neighbour (MAC) known for the backend in DSR mode.
    case noNeighbor
    /// All SNAT source ports are in use.
    case portsExhausted
    /// The virtio_net_hdr is inconsistent with the frame (offsets beyond it, an unknown GSO type, ...).
    case badOffloadHeader
    /// A GSO type we do not split in software (UDP, TCPv6).
    case unsupportedGSO
    /// The rewritten packet would not fit the output buffer.
    case tooBig
    /// An ARP packet we do not answer (not a request for a VIP, or malformed).
    case arpIgnored
    /// TTL reached zero.
    case ttlExpired
    /// An IPIP packet whose outer destination is not an address of this host (the decapsulator leaves it to
    /// the kernel, which forwards or refuses it as it would any packet).
    case notLocal

    public var description: String {
        switch self {
        case .truncated: return "truncated"
        case .unsupportedEtherType: return "unsupported_ethertype"
        case .badVersion: return "bad_version"
        case .badIHL: return "bad_ihl"
        case .badTotalLength: return "bad_total_length"
        case .badChecksum: return "bad_checksum"
        case .fragment: return "fragment"
        case .unsupportedProtocol: return "unsupported_protocol"
        case .badTransportHeader: return "bad_transport_header"
        case .notForVIP: return "not_for_vip"
        case .noFlow: return "no_flow"
        case .noBackend: return "no_backend"
        case .backendNotIPv4: return "backend_not_ipv4"
        case .noNeighbor: return "no_neighbor"
        case .portsExhausted: return "ports_exhausted"
        case .badOffloadHeader: return "bad_offload_header"
        case .unsupportedGSO: return "unsupported_gso"
        case .tooBig: return "too_big"
        case .arpIgnored: return "arp_ignored"
        case .ttlExpired: return "ttl_expired"
        case .notLocal: return "not_local"
        }
    }
}

/// Drops by reason: one plain counter per reason, owned by one worker (no atomics on the data path).
public struct DropCounters: Sendable, Equatable, CustomStringConvertible {
    private var counts: [UInt64] = Array(repeating: 0, count: DropReason.allCases.count)

    public init() {}

    public mutating func record(_ reason: DropReason) {
        counts[reason.rawValue] &+= 1
    }

    public subscript(reason: DropReason) -> UInt64 { counts[reason.rawValue] }

    public var total: UInt64 { counts.reduce(0, &+) }

    /// Adds another worker's counts (aggregation for metrics).
    public mutating func add(_ other: DropCounters) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
    }

    /// `reason=count` for the non-zero reasons (log lines, test output).
    public var description: String {
        let parts = nonZero.map { "\($0.0)=\($0.1)" }
        return parts.isEmpty ? "none" : parts.joined(separator: " ")
    }

    /// Reasons with a non-zero count.
    public var nonZero: [(DropReason, UInt64)] {
        DropReason.allCases.compactMap { counts[$0.rawValue] > 0 ? ($0, counts[$0.rawValue]) : nil }
    }
}
