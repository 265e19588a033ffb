import Foundation
import FulcrumConfig
import Testing

/// SplitMix64: small, seeded, and the same sequence on every platform.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Fuzz")
struct FuzzTests {
    /// Characters that matter to YAML, to splice in as well as the file's own.
    static let interesting: [Character] = [
        ":", "-", " ", "\n", "[", "]", "{", "}", "&", "*", "!", "'", "\"", "#",
        "|", ">", "?", ",", "0", "9", "\t", "%", "@", "`", "é",
    ]

    static func mutate(_ text: String, using generator: inout SeededGenerator) -> String {
        var characters = Array(text)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let mutations = Int.random(in: 1...4, using: &generator)
        var lineMode = false
        for _ in 0..<mutations {
            let operation = Int.random(in: 0..<7, using: &generator)
            lineMode = operation >= 4
            if !lineMode {
                guard !characters.isEmpty else {
                    characters.append(interesting.randomElement(using: &generator) ?? " ")
                    continue
                }
                let index = Int.random(in: 0..<characters.count, using: &generator)
                switch operation {
                case 0: characters.remove(at: index)
                case 1: characters.insert(characters[index], at: index)
                case 2: characters.insert(interesting.randomElement(using: &generator) ?? " ", at: index)
                default: characters[index] = interesting.randomElement(using: &generator) ?? " "
                }
            } else {
                lines = String(characters).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                guard !lines.isEmpty else { continue }
                let index = Int.random(in: 0..<lines.count, using: &generator)
                switch operation {
                case 4: lines.remove(at: index)
                case 5: lines.insert(lines[index], at: index)
                default:
                    let other = Int.random(in: 0..<lines.count, using: &generator)
                    lines.swapAt(index, other)
                }
                characters = Array(lines.joined(separator: "\n"))
            }
        }
        return String(characters)
    }

    @Test func mutatedConfigsNeverTrapAndAlwaysAnswer() throws {
        let base = try String(contentsOf: Examples.directory.appendingPathComponent("full.yaml"), encoding: .utf8)
        var generator = SeededGenerator(seed: 0xF0_1C_2A_11)
        var valid = 0
        var invalid = 0
        for _ in 0..<10_000 {
            let mutated = Self.mutate(base, using: &generator)
            do {
                _ = try ConfigLoader.load(yaml: mutated)
                valid += 1
            } catch {
                invalid += 1
                #expect(!error.diagnostics.isEmpty)
                if error.diagnostics.isEmpty { Issue.record("no diagnostics for:\n\(mutated)") }
            }
        }
        #expect(valid + invalid == 10_000)
        // Both outcomes must occur, or the mutations are not exercising anything.
        #expect(valid > 0 && invalid > 0)
    }
}
