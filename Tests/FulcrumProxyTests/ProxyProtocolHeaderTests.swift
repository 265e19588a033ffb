import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import NIOCore
import Testing

@Suite("PROXY protocol header")
struct ProxyProtocolHeaderTests {
    private static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    private let ipv4 = ProxyProtocolHeader(
        source: Endpoint("192.168.0.1:56324"), destination: Endpoint("192.168.0.11:443"))
    private let ipv6 = ProxyProtocolHeader(
        source: Endpoint("[2001:db8::1]:56324"), destination: Endpoint("[2001:db8::ff]:443"))
    private let mixed = ProxyProtocolHeader(
        source: Endpoint("192.0.2.1:1000"), destination: Endpoint("[2001:db8::ff]:443"))
    private let unknown = ProxyProtocolHeader(source: nil, destination: Endpoint("192.168.0.11:443"))

    @Test func version1ForIPv4() {
        #expect(ipv4.encodedV1() == Array("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".utf8))
    }

    @Test func version1ForIPv6() {
        #expect(ipv6.encodedV1() == Array("PROXY TCP6 2001:db8::1 2001:db8::ff 56324 443\r\n".utf8))
    }

    @Test func version1MapsIPv4IntoIPv6WhenTheFamiliesDiffer() {
        #expect(mixed.encodedV1() == Array("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::ff 1000 443\r\n".utf8))
    }

    @Test func version1Unknown() {
        #expect(unknown.encodedV1() == Array("PROXY UNKNOWN\r\n".utf8))
    }

    @Test func version2ForIPv4() {
        let expected: [UInt8] =
            Self.signature + [0x21, 0x11, 0x00, 0x0C]
            + [192, 168, 0, 1] + [192, 168, 0, 11]
            + [0xDC, 0x04] + [0x01, 0xBB]
        #expect(ipv4.encodedV2() == expected)
    }

    @Test func version2ForIPv6() {
        let source: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [0x01]
        let destination: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [0xFF]
        let expected: [UInt8] =
            Self.signature + [0x21, 0x21, 0x00, 0x24] + source + destination + [0xDC, 0x04] + [0x01, 0xBB]
        #expect(ipv6.encodedV2() == expected)
        #expect(ipv6.encodedV2().count == 16 + 36)
    }

    @Test func version2MapsIPv4IntoIPv6WhenTheFamiliesDiffer() {
        let source: [UInt8] = [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF, 192, 0, 2, 1]
        let bytes = mixed.encodedV2()
        #expect(Array(bytes[12..<16]) == [0x21, 0x21, 0x00, 0x24])
        #expect(Array(bytes[16..<32]) == source)
        #expect(Array(bytes[48..<52]) == [0x03, 0xE8, 0x01, 0xBB])
    }

    @Test func version2UnknownIsALocalCommandWithoutAddresses() {
        #expect(unknown.encodedV2() == Self.signature + [0x20, 0x00, 0x00, 0x00])
    }

    @Test func fromSocketAddresses() throws {
        let header = ProxyProtocolHeader(
            source: try SocketAddress(ipAddress: "10.1.2.3", port: 40000),
            destination: try SocketAddress(ipAddress: "::ffff:10.0.0.1", port: 8080))
        // A dual-stack socket's IPv4-mapped address is the IPv4 client it is.
        #expect(header.encodedV1() == Array("PROXY TCP4 10.1.2.3 10.0.0.1 40000 8080\r\n".utf8))
        let unix = ProxyProtocolHeader(source: try SocketAddress(unixDomainSocketPath: "/tmp/x"), destination: nil)
        #expect(unix.encodedV1() == Array("PROXY UNKNOWN\r\n".utf8))
    }

    @Test func encodedPicksTheConfiguredVersion() {
        #expect(ipv4.encoded(.none).isEmpty)
        #expect(ipv4.encoded(.v1) == ipv4.encodedV1())
        #expect(ipv4.encoded(.v2) == ipv4.encodedV2())
    }
}
