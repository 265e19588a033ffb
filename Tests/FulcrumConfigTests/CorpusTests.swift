import Foundation
import FulcrumConfig
import Testing

/// Bad configs in `Corpus/NAME.yaml`, each with `Corpus/NAME.expected`: the exact diagnostic lines.
enum Corpus {
    static var directory: URL? {
        Bundle.module.url(forResource: "Corpus", withExtension: nil)
    }

    static var names: [String] {
        guard let directory,
            let files = try? FileManager.default.contentsOfDirectory(atPath: directory.path)
        else { return [] }
        return files.filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(".yaml".count)) }.sorted()
    }

    static func read(_ name: String, _ fileExtension: String) throws -> String {
        let directory = try #require(directory)
        return try String(contentsOf: directory.appendingPathComponent("\(name).\(fileExtension)"), encoding: .utf8)
    }
}

@Suite("Corpus of bad configs")
struct CorpusTests {
    @Test func corpusIsThere() {
        #expect(Corpus.names.count >= 25)
    }

    @Test(arguments: Corpus.names)
    func reportsExactlyTheExpectedDiagnostics(name: String) throws {
        let yaml = try Corpus.read(name, "yaml")
        let expected = try Corpus.read(name, "expected")
            .split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        #expect(!expected.isEmpty, "\(name).expected is empty")
        do {
            _ = try ConfigLoader.load(yaml: yaml)
            Issue.record("\(name).yaml loaded without errors")
        } catch {
            #expect(error.diagnostics.map(\.description) == expected)
        }
    }
}
