import Foundation
import FulcrumCore
import Testing

@Suite("JSONString: one escaper for every hand-written JSON")
struct JSONStringTests {
    @Test(
        "escapes quotes, backslashes and control characters",
        arguments: [
            ("plain", #""plain""#),
            ("say \"hi\"", #""say \"hi\"""#),
            (#"a\b"#, #""a\\b""#),
            ("line\nbreak\r\ttab", #""line\nbreak\r\ttab""#),
            ("\u{01}\u{1F}\u{7F}", #""\u0001\u001f\u007f""#),
            ("ünïcödé ✓", #""ünïcödé ✓""#),
        ])
    func escapes(input: String, expected: String) {
        #expect(JSONString.quoted(input) == expected)
    }

    @Test("every string of the first 256 scalars round-trips through a JSON parser")
    func roundTrips() throws {
        let text = String(String.UnicodeScalarView((0..<256).compactMap(Unicode.Scalar.init)))
        let parsed =
            try JSONSerialization.jsonObject(
                with: Data("[\(JSONString.quoted(text))]".utf8)) as? [String]
        #expect(parsed == [text])
    }
}
