import Foundation
import FulcrumTestSupport
import Testing

/// Runs the built `fulcrum` binary (SwiftPM builds it next to the test bundle) and captures its output.
struct FulcrumProcess {
    static var binary: URL {
        Bundle.main.bundleURL.appendingPathComponent("fulcrum")
    }

    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// Runs the binary off the cooperative pool (it blocks on the child process and its pipes).
    static func run(_ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(binary, arguments)
    }
}

@Suite("fulcrum CLI")
struct CLITests {
    @Test("the binary is where the tests expect it")
    func binaryExists() {
        #expect(
            FileManager.default.isExecutableFile(atPath: FulcrumProcess.binary.path), "\(FulcrumProcess.binary.path)")
    }

    @Test("validate accepts every shipped example with exit 0")
    func validateExamples() async throws {
        let examples = FulcrumProcess.repositoryRoot.appendingPathComponent("examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: examples.path).filter { $0.hasSuffix(".yaml") }
        #expect(files.count >= 3)
        for file in files {
            let result = try await FulcrumProcess.run(["validate", examples.appendingPathComponent(file).path])
            #expect(result.status == 0, "\(file): \(result.stderr)")
            #expect(result.stdout.contains("valid"))
            #expect(result.stderr.isEmpty)
        }
    }

    @Test("validate reports every problem, one per line on stderr, with path and line:column, exit 2")
    func validateRejects() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-cli-\(getpid()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
        pools:
          web:
            algorithm: least-connection
            backends:
              - { address: 10.0.0.11:8080, weight: 0 }
        listeners:
          - { name: www, bind: 127.0.0.1:8080, pool: webb }
        """.write(to: file, atomically: true, encoding: .utf8)
        let result = try await FulcrumProcess.run(["validate", file.path])
        #expect(result.status == 2)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(lines)")
        #expect(
            lines.contains {
                $0.hasSuffix(
                    "pools.web.algorithm: unknown algorithm 'least-connection'; did you mean 'least-connections'? (line 3, column 16)"
                )
            })
        #expect(lines.contains { $0.hasSuffix("pools.web.backends[0].weight: must be ≥ 1 (line 5, column 44)") })
        #expect(lines.contains { $0.contains("listeners[0].pool: unknown pool 'webb'") })
    }

    @Test("the README's config example validates")
    func readmeExample() async throws {
        let readme = try String(
            contentsOf: FulcrumProcess.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let afterFence = try #require(readme.range(of: "```yaml\n"))
        let end = try #require(readme.range(of: "```", range: afterFence.upperBound..<readme.endIndex))
        let yaml = String(readme[afterFence.upperBound..<end.lowerBound])
        #expect(yaml.contains("pools:"))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-readme-\(getpid()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try yaml.write(to: file, atomically: true, encoding: .utf8)
        let result = try await FulcrumProcess.run(["validate", file.path])
        #expect(result.status == 0, "\(result.stderr)")
    }

    @Test("demo --requests drives traffic through four demo backends and prints the final table")
    func demoDrivesRequests() async throws {
        let result = try await FulcrumProcess.run([
            "demo", "--requests", "200", "--port", "0", "--admin-port", "0", "--log-level", "warning",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("Fulcrum demo: http://127.0.0.1:") == true, "\(result.stdout)")
        #expect(
            lines.contains { $0.hasPrefix("Dashboard:    http://127.0.0.1:") && $0.contains("/ui") }, "\(result.stdout)"
        )
        for backend in ["alpha", "bravo", "charlie", "delta"] {
            #expect(lines.contains { $0.hasPrefix(backend) }, "\(result.stdout)")
        }
        #expect(result.stdout.contains("200 of 200 requests succeeded, 0 errors"), "\(result.stdout)")
    }

    @Test("demo rejects an unknown algorithm with the list of known ones")
    func demoRejectsUnknownAlgorithm() async throws {
        let result = try await FulcrumProcess.run(["demo", "--algorithm", "fastest"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown algorithm 'fastest'"))
        #expect(result.stderr.contains("least-connections"))
    }

    @Test("validate of a missing file says so, exit 2")
    func validateMissingFile() async throws {
        let result = try await FulcrumProcess.run(["validate", "/nonexistent/fulcrum.yaml"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("cannot read"))
    }

    @Test("decap refuses --interface with --user-space and an overlong interface name, exit 64")
    func decapRejectsContradictoryOptions() async throws {
        let both = try await FulcrumProcess.run(["decap", "--ipip", "--user-space", "--interface", "eth0"])
        #expect(both.status == 64, "\(both)")
        #expect(both.stderr.contains("--user-space runs without it"), "\(both)")
        let long = try await FulcrumProcess.run(["decap", "--ipip", "--interface", "an-interface-name-too-long"])
        #expect(long.status == 64, "\(long)")
        #expect(long.stderr.contains("--interface must be 1 to 15 characters"), "\(long)")
    }

    @Test("version prints the version")
    func version() async throws {
        let result = try await FulcrumProcess.run(["version"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("fulcrum "))
    }

}
