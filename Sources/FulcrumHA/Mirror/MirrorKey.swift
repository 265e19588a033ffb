import Crypto
import Foundation

/// The shared secret both nodes read from `ha.mirror.key_file`; every mirror message carries an
/// HMAC-SHA256 over its bytes made with it.
public struct MirrorKey: Sendable {
    /// Shorter keys are refused: HMAC is only as strong as its key.
    public static let minimumLength = 16

    /// The raw bytes (swift-crypto's `SymmetricKey` is not Sendable; building one per message is cheap).
    private let bytes: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: bytes) }

    public enum Invalid: Error, Equatable, CustomStringConvertible {
        case unreadable(path: String, reason: String)
        case tooShort(path: String, length: Int)

        public var description: String {
            switch self {
            case .unreadable(let path, let reason): "mirror key file \(path): \(reason)"
            case .tooShort(let path, let length):
                "mirror key file \(path): \(length) bytes; at least \(MirrorKey.minimumLength) are needed "
                    + "(e.g. `head -c 32 /dev/urandom | base64 > \(path)`)"
            }
        }
    }

    public init(bytes: some Collection<UInt8>) {
        self.bytes = Array(bytes)
    }

    /// Reads the key file; surrounding whitespace (a trailing newline) is not part of the key.
    public init(contentsOf path: String) throws(Invalid) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .unreadable(path: path, reason: "\(error.localizedDescription)")
        }
        var bytes = Array(data)
        while let last = bytes.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 { bytes.removeLast() }
        while let first = bytes.first, first == 0x0A || first == 0x0D || first == 0x20 || first == 0x09 {
            bytes.removeFirst()
        }
        guard bytes.count >= Self.minimumLength else { throw .tooShort(path: path, length: bytes.count) }
        self.init(bytes: bytes)
    }

    func authenticationCode(for message: some Collection<UInt8>) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(message), using: key))
    }

    /// Constant-time comparison (swift-crypto's), so timing does not leak how much of a forged MAC was right.
    func isValid(code: some Collection<UInt8>, for message: some Collection<UInt8>) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(Array(code), authenticating: Array(message), using: key)
    }
}
