import Foundation
import FulcrumCluster
import FulcrumConfig
import Testing

/// The file store: today's behaviour (load, reload on demand) behind the `ConfigStore` interface.
@Suite struct FileConfigStoreTests {
    /// A temporary config file, removed afterwards.
    static func withFile<T>(_ text: String, _ body: (URL) async throws -> T) async throws -> T {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("fulcrum-file-store-\(UUID().uuidString).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        return try await body(url)
    }

    @Test func reloadKeepsTheLastGoodFileAndReportsTheBadOne() async throws {
        try await Self.withFile("pools:\n  web:\n    backends: [{address: 127.0.0.1:8081}]\n") { url in
            let store = FileConfigStore(path: url.path)
            #expect(store.current == nil)
            let first = try await store.reload()
            #expect(first.revision == 1)
            #expect(first.config.pool(named: "web")?.backends.count == 1)
            #expect(store.status.connected)

            try "pools:\n  web:\n    backends: [{address: nowhere}]\n".write(to: url, atomically: true, encoding: .utf8)
            await #expect(throws: ConfigErrors.self) { try await store.reload() }
            #expect(store.current == first)
            #expect(store.status.rejections.first?.problems.first?.line == 3)
            #expect(store.status.rejectedTotal == 1)

            try FileManager.default.removeItem(at: url)
            await #expect(throws: (any Error).self) { try await store.reload() }
            #expect(store.current == first)
            #expect(store.status.lastError != nil)

            try "pools:\n  web: {}\n  api: {}\n".write(to: url, atomically: true, encoding: .utf8)
            let updates = store.snapshots()
            let second = try await store.reload()
            #expect(second.revision > first.revision)
            #expect(second.config.pools.map(\.name) == ["web", "api"])
            #expect(store.status.rejections.isEmpty)
            #expect(store.status.lastError == nil)
            // The sequence held the snapshot current when subscribing (first); a reader that had not read it
            // yet skips to the newest.
            var iterator = updates.makeAsyncIterator()
            #expect(await iterator.next() == second)
        }
    }
}
