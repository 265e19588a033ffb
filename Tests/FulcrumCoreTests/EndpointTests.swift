import Testing

@testable import FulcrumCore

@Test(arguments: ["10.0.0.1:80", "[::1]:8080", "[2001:db8::1]:443", "[::ffff:10.0.0.1]:1"])
func endpointRoundTrips(_ text: String) throws {
    let endpoint = try #require(Endpoint(text))
    #expect(Endpoint(endpoint.description) == endpoint)
}

@Test(arguments: [
    "10.0.0.1", "10.0.0.256:80", "::1:80", "[::1]", "1.2.3.4:0", "1.2.3.4:70000", "01.2.3.4:80",
    "[1:2:3:4:5:6:7:8:9]:1", "[1::2::3]:1", "host:80",
])
func endpointRejects(_ text: String) {
    #expect(Endpoint(text) == nil)
}

@Test func ipv6Formatting() {
    #expect(IPAddress("2001:db8:0:0:0:0:0:1")?.description == "2001:db8::1")
    #expect(IPAddress("::")?.description == "::")
    #expect(IPAddress("1:0:0:2:0:0:0:3")?.description == "1:0:0:2::3")
    #expect(IPAddress("10.1.2.3")?.bytes == [10, 1, 2, 3])
}
