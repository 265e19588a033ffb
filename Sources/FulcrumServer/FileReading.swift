#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a file could not be read.
public struct FileReadError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// Reads a whole (config-sized) file as UTF-8.
public func readFile(_ path: String) throws(FileReadError) -> String {
    guard let file = fopen(path, "r") else {
        throw FileReadError(path: path, reason: String(cString: strerror(errno)))
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count > 0 { bytes.append(contentsOf: buffer[0..<count]) }
        if count < buffer.count {
            if ferror(file) != 0 { throw FileReadError(path: path, reason: String(cString: strerror(errno))) }
            break
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
