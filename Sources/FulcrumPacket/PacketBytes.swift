/// A view of one packet's bytes: big-endian (network order) reads and writes at byte offsets.
///
/// It does not own the memory. Parsers check lengths before they read, so every access here is in
/// bounds by construction; the underlying buffer pointer still bounds-checks in debug builds, which is
/// what the fuzz tests rely on to prove it.
public struct PacketBytes {
    public let raw: UnsafeMutableRawBufferPointer

    public init(_ raw: UnsafeMutableRawBufferPointer) {
        self.raw = raw
    }

    public var count: Int { raw.count }

    @inline(__always)
    public func u8(_ offset: Int) -> UInt8 {
        raw[offset]
    }

    @inline(__always)
    public func u16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    public func u32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always)
    public func setU8(_ offset: Int, _ value: UInt8) {
        raw[offset] = value
    }

    @inline(__always)
    public func setU16(_ offset: Int, _ value: UInt16) {
        raw.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always)
    public func setU32(_ offset: Int, _ value: UInt32) {
        raw.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    public func mac(_ offset: Int) -> MACAddress {
        MACAddress(
            raw[offset], raw[offset + 1], raw[offset + 2], raw[offset + 3], raw[offset + 4], raw[offset + 5])
    }

    public func setMAC(_ offset: Int, _ mac: MACAddress) {
        let b = mac.bytes
        raw[offset] = b.0
        raw[offset + 1] = b.1
        raw[offset + 2] = b.2
        raw[offset + 3] = b.3
        raw[offset + 4] = b.4
        raw[offset + 5] = b.5
    }

    /// The bytes `range` as a read-only view.
    public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: raw[range])
    }
}

/// An Ethernet hardware address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        bytes = (b0, b1, b2, b3, b4, b5)
    }

    /// Parses `02:00:00:00:00:11` (also with `-`); nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var out = [UInt8]()
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            out.append(byte)
        }
        self.init(out[0], out[1], out[2], out[3], out[4], out[5])
    }

    public static let broadcast = MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
    public static let zero = MACAddress(0, 0, 0, 0, 0, 0)

    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }

    public static func == (lhs: MACAddress, rhs: MACAddress) -> Bool { lhs.array == rhs.array }
    public func hash(into hasher: inout Hasher) { hasher.combine(array) }

    public var description: String {
        array.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
}
