import Testing

@testable import FulcrumConfig

@Suite("Suggestions")
struct SuggestionTests {
    @Test(arguments: [
        ("algoritm", "algorithm"), ("algorithim", "algorithm"), ("weigth", "weight"), ("hashKey", "hash_key"),
        ("HASH-KEY", "hash_key"), ("helth_check", "health_check"), ("least-connection", "least-connections"),
        ("tpc", "tcp"),
    ])
    func suggests(input: String, expected: String) {
        let candidates = ["algorithm", "weight", "hash_key", "health_check", "least-connections", "tcp", "http"]
        #expect(Suggestion.closest(to: input, in: candidates) == expected)
    }

    @Test(arguments: ["xyz", "completely-different", "", "ab"])
    func staysQuietWhenNothingIsClose(input: String) {
        #expect(Suggestion.closest(to: input, in: ["algorithm", "weight", "tcp", "http"]) == nil)
    }

    @Test func editDistance() {
        func distance(_ a: String, _ b: String) -> Int {
            Suggestion.editDistance(Array(a.unicodeScalars), Array(b.unicodeScalars))
        }
        #expect(distance("", "abc") == 3)
        #expect(distance("kitten", "sitting") == 3)
        #expect(distance("ab", "ba") == 1)
        #expect(distance("same", "same") == 0)
    }
}
