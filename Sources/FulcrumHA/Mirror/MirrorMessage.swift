import FulcrumCore
import FulcrumPacket

/// One mirrored flow on the wire: the packet plane's own `FlowRecord` (client 5-tuple, backend, NAT's SNAT port,
/// TCP state, idle age) tagged with the virtual service it belongs to, so the standby finds the matching
/// service. The service is named by `vip:port/protocol` (`FulcrumServer.flowMirrors()`), the same on both nodes.
public struct MirroredFlow: Sendable, Hashable {
    public var service: String
    public var record: FlowRecord

    public init(service: String, record: FlowRecord) {
        self.service = service
        self.record = record
    }

    public var key: FlowKey { record.key }
}

/// A flow that ended on the active (the standby forgets it).
public struct MirroredFlowRemoval: Sendable, Hashable {
    public var service: String
    public var key: FlowKey

    public init(service: String, key: FlowKey) {
        self.service = service
        self.key = key
    }
}

/// What the active sends: a snapshot (in chunks, the last one marked) when a standby connects or after the
/// packet plane's change feed overflowed, then batched updates.
public enum MirrorBody: Sendable, Equatable {
    /// Part of a full snapshot; the standby replaces its table with the union of the parts once `last` arrives.
    case snapshot(flows: [MirroredFlow], last: Bool)
    case update(upserts: [MirroredFlow], removals: [MirroredFlowRemoval])
}

/// One mirror message on the wire. Framing (big-endian):
///
/// ```
/// "FMIR" | version 2 | kind (1 snapshot, 2 snapshot-last, 3 update) | reserved u16 | sender u64 |
/// epoch u64 | sequence u64 | body length u32 | body | HMAC-SHA256 (32 bytes) over everything before it
/// ```
/// `sender` names the node, `epoch` its run (the active picks a larger one each start), `sequence` counts
/// messages within the epoch: a receiver accepts only (epoch, sequence) above the last it accepted, so a
/// replayed message changes nothing.
public struct MirrorMessage: Sendable, Equatable {
    public static let magic: [UInt8] = Array("FMIR".utf8)
    public static let version: UInt8 = 2
    public static let headerLength = 4 + 1 + 1 + 2 + 8 + 8 + 8 + 4
    public static let macLength = 32
    /// A body larger than this is refused before it is read (bounded memory per peer).
    public static let maxBodyLength = 4 << 20

    public var sender: UInt64
    public var epoch: UInt64
    public var sequence: UInt64
    public var body: MirrorBody

    public init(sender: UInt64, epoch: UInt64, sequence: UInt64, body: MirrorBody) {
        self.sender = sender
        self.epoch = epoch
        self.sequence = sequence
        self.body = body
    }

    /// Why bytes are not a message we accept.
    public enum DecodeError: Error, Equatable, Sendable {
        case truncated
        case badMagic
        case unsupportedVersion(UInt8)
        case unknownKind(UInt8)
        case bodyTooLarge(Int)
        case badBody
        case badMAC
    }

    /// The message framed and MAC'd with `key`.
    public func encode(key: MirrorKey) -> [UInt8] {
        var body = MirrorWriter()
        let kind: UInt8
        switch self.body {
        case .snapshot(let flows, let last):
            kind = last ? 2 : 1
            body.u32(UInt32(flows.count))
            for flow in flows { body.flow(flow) }
        case .update(let upserts, let removals):
            kind = 3
            body.u32(UInt32(upserts.count))
            for flow in upserts { body.flow(flow) }
            body.u32(UInt32(removals.count))
            for removal in removals {
                body.string(removal.service)
                body.key(removal.key)
            }
        }
        var out = MirrorWriter()
        out.bytes.reserveCapacity(Self.headerLength + body.bytes.count + Self.macLength)
        out.bytes += Self.magic
        out.u8(Self.version)
        out.u8(kind)
        out.u16(0)
        out.u64(sender)
        out.u64(epoch)
        out.u64(sequence)
        out.u32(UInt32(body.bytes.count))
        out.bytes += body.bytes
        out.bytes += key.authenticationCode(for: out.bytes)
        return out.bytes
    }

    /// The whole frame's length once its header (`headerLength` bytes) is known, or an error for a header no
    /// sender of ours writes (the stream is then out of sync and the connection is closed).
    public static func frameLength(header: some RandomAccessCollection<UInt8>) throws(DecodeError) -> Int {
        let bytes = Array(header.prefix(headerLength))
        guard bytes.count == headerLength else { throw .truncated }
        guard Array(bytes[0..<4]) == magic else { throw .badMagic }
        guard bytes[4] == version else { throw .unsupportedVersion(bytes[4]) }
        var reader = MirrorReader(bytes[(headerLength - 4)..<headerLength])
        let length = Int(try reader.u32())
        guard length <= maxBodyLength else { throw .bodyTooLarge(length) }
        return headerLength + length + macLength
    }

    /// Checks the MAC first (nothing of an unauthenticated message is parsed), then decodes.
    public static func decode(_ frame: [UInt8], key: MirrorKey) throws(DecodeError) -> MirrorMessage {
        let length = try frameLength(header: frame)
        guard frame.count == length else { throw .truncated }
        let signed = frame[0..<(length - macLength)]
        guard key.isValid(code: frame[(length - macLength)...], for: signed) else { throw .badMAC }
        var header = MirrorReader(frame[5..<headerLength])
        let kind = try header.u8()
        _ = try header.u16()
        let sender = try header.u64()
        let epoch = try header.u64()
        let sequence = try header.u64()
        var reader = MirrorReader(frame[headerLength..<(length - macLength)])
        let body: MirrorBody
        switch kind {
        case 1, 2:
            let count = try reader.count()
            var flows: [MirroredFlow] = []
            for _ in 0..<count { flows.append(try reader.flow()) }
            body = .snapshot(flows: flows, last: kind == 2)
        case 3:
            let upsertCount = try reader.count()
            var upserts: [MirroredFlow] = []
            for _ in 0..<upsertCount { upserts.append(try reader.flow()) }
            let removalCount = try reader.count()
            var removals: [MirroredFlowRemoval] = []
            for _ in 0..<removalCount {
                removals.append(MirroredFlowRemoval(service: try reader.string(), key: try reader.key()))
            }
            body = .update(upserts: upserts, removals: removals)
        default:
            throw .unknownKind(kind)
        }
        guard reader.isAtEnd else { throw .badBody }
        return MirrorMessage(sender: sender, epoch: epoch, sequence: sequence, body: body)
    }
}

struct MirrorWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(truncatingIfNeeded: v)] }
    mutating func u32(_ v: UInt32) {
        u16(UInt16(truncatingIfNeeded: v >> 16))
        u16(UInt16(truncatingIfNeeded: v))
    }
    mutating func u64(_ v: UInt64) {
        u32(UInt32(truncatingIfNeeded: v >> 32))
        u32(UInt32(truncatingIfNeeded: v))
    }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8.prefix(255))
        u8(UInt8(utf8.count))
        bytes += utf8
    }
    mutating func key(_ k: FlowKey) {
        u32(k.source)
        u32(k.destination)
        u16(k.sourcePort)
        u16(k.destinationPort)
        u8(k.proto)
    }
    mutating func endpoint(_ e: Endpoint) {
        switch e.address {
        case .v4(let a):
            u8(4)
            u32(a)
        case .v6(let high, let low):
            u8(6)
            u64(high)
            u64(low)
        }
        u16(e.port)
    }
    mutating func flow(_ f: MirroredFlow) {
        string(f.service)
        key(f.record.key)
        endpoint(f.record.backend)
        u8(f.record.state.rawValue)
        if let port = f.record.snatPort {
            u8(1)
            u16(port)
        } else {
            u8(0)
        }
        u64(f.record.ageNanos)
    }
}

struct MirrorReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ slice: ArraySlice<UInt8>) { bytes = Array(slice) }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func u8() throws(MirrorMessage.DecodeError) -> UInt8 {
        guard offset < bytes.count else { throw .badBody }
        defer { offset += 1 }
        return bytes[offset]
    }
    mutating func u16() throws(MirrorMessage.DecodeError) -> UInt16 {
        UInt16(try u8()) << 8 | UInt16(try u8())
    }
    mutating func u32() throws(MirrorMessage.DecodeError) -> UInt32 {
        UInt32(try u16()) << 16 | UInt32(try u16())
    }
    mutating func u64() throws(MirrorMessage.DecodeError) -> UInt64 {
        UInt64(try u32()) << 32 | UInt64(try u32())
    }
    /// A count that the remaining bytes could hold (each element is at least one byte), so a forged count
    /// cannot make the decoder reserve or loop without bound.
    mutating func count() throws(MirrorMessage.DecodeError) -> Int {
        let n = Int(try u32())
        guard n <= bytes.count - offset else { throw .badBody }
        return n
    }
    mutating func string() throws(MirrorMessage.DecodeError) -> String {
        let n = Int(try u8())
        guard offset + n <= bytes.count else { throw .badBody }
        defer { offset += n }
        guard let text = String(validating: bytes[offset..<(offset + n)], as: UTF8.self) else { throw .badBody }
        return text
    }
    mutating func key() throws(MirrorMessage.DecodeError) -> FlowKey {
        FlowKey(
            source: try u32(), destination: try u32(), sourcePort: try u16(), destinationPort: try u16(),
            proto: try u8())
    }
    mutating func endpoint() throws(MirrorMessage.DecodeError) -> Endpoint {
        let address: IPAddress
        switch try u8() {
        case 4: address = .v4(try u32())
        case 6: address = .v6(try u64(), try u64())
        default: throw .badBody
        }
        return Endpoint(address: address, port: try u16())
    }
    mutating func flow() throws(MirrorMessage.DecodeError) -> MirroredFlow {
        let service = try string()
        let key = try key()
        let backend = try endpoint()
        guard let state = FlowState(rawValue: try u8()) else { throw .badBody }
        let snatPort: UInt16?
        switch try u8() {
        case 0: snatPort = nil
        case 1: snatPort = try u16()
        default: throw .badBody
        }
        let age = try u64()
        return MirroredFlow(
            service: service,
            record: FlowRecord(key: key, backend: backend, snatPort: snatPort, state: state, ageNanos: age))
    }
}
