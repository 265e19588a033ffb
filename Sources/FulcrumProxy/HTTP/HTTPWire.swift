import NIOCore
import NIOHTTP1

/// HTTP/1.1 response framing written straight into `ByteBuffer`s by the client side of the proxy: the
/// heads of Fulcrum's own responses (errors, 100 Continue) and the chunks of a body that the backend
/// ended by closing (forwarded responses are spliced by `HTTPHeaderRewriter.writeClientResponseHead`).
enum HTTPWire {
    /// `HTTP/1.x CODE REASON\r\n`, the fields, and the empty line.
    static func writeResponseHead(
        _ buffer: inout ByteBuffer, version: HTTPVersion, status: HTTPResponseStatus, headers: HTTPHeaders
    ) {
        buffer.writeStaticString(version.minor == 0 && version.major == 1 ? "HTTP/1.0 " : "HTTP/1.1 ")
        let code = status.code
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 100 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 10 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code % 10))
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        writeFields(&buffer, headers)
        buffer.writeStaticString("\r\n")
    }

    /// `name: value\r\n` for every field, in order.
    static func writeFields(_ buffer: inout ByteBuffer, _ headers: HTTPHeaders) {
        for (name, value) in headers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
    }

    /// The size line of a chunk of `size` bytes: hex digits and CRLF (the data and its CRLF follow).
    static func writeChunkHeader(_ buffer: inout ByteBuffer, size: Int) {
        precondition(size > 0, "a zero-size chunk is the last chunk")
        var shift = (Int.bitWidth - size.leadingZeroBitCount - 1) / 4 * 4
        while shift >= 0 {
            let digit = UInt8((size >> shift) & 0xF)
            buffer.writeInteger(digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10)
            shift -= 4
        }
        buffer.writeStaticString("\r\n")
    }

    /// The last chunk and the empty line that end a chunked body.
    static func writeLastChunk(_ buffer: inout ByteBuffer) {
        buffer.writeStaticString("0\r\n\r\n")
    }
}
