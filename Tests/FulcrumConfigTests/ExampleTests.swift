import Foundation
import FulcrumConfig
import FulcrumCore
import Testing

/// Every file in the repository's `examples/` must validate: the README and docs point users at them.
enum Examples {
    static var directory: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // FulcrumConfigTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // repository root
            .appendingPathComponent("examples")
    }

    static var files: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
    }
}

@Suite("Examples")
struct ExampleTests {
    @Test func theExpectedExamplesExist() {
        for name in ["minimal.yaml", "full.yaml", "packet-dsr.yaml", "ha-pair.yaml", "cluster-etcd.yaml", "demo.yaml"] {
            #expect(Examples.files.contains(name), "examples/\(name) is missing")
        }
    }

    @Test(arguments: Examples.files)
    func validates(file: String) throws {
        let yaml = try String(contentsOf: Examples.directory.appendingPathComponent(file), encoding: .utf8)
        do {
            _ = try ConfigLoader.load(yaml: yaml)
        } catch {
            Issue.record("examples/\(file):\n\(error)")
        }
    }

    @Test func demoIsWhatTheCLIExpects() throws {
        let yaml = try String(contentsOf: Examples.directory.appendingPathComponent("demo.yaml"), encoding: .utf8)
        let config = try loadValid(yaml)
        #expect(config.admin?.listen == endpoint("127.0.0.1:9900"))
        let pool = try #require(config.pool(named: "demo"))
        #expect(pool.algorithm == .leastConnections)
        #expect(pool.backends.map(\.address) == (9001...9003).map { endpoint("127.0.0.1:\($0)") })
        #expect(pool.healthCheck?.type == .http)
        #expect(pool.healthCheck?.path == "/healthz")
        #expect(config.listeners.map(\.bind) == [endpoint("127.0.0.1:8080")])
        #expect(config.listeners.first?.mode == .http)
        #expect(config.listeners.first?.pool == "demo")
    }
}
