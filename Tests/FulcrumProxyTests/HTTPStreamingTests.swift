import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import NIOCore
import NIOHTTP1
import Testing

@testable import FulcrumProxy

@Suite("HTTP proxy: streaming 100 MB both ways", .serialized)
struct HTTPStreamingTests {
    static let size = 100 * 1024 * 1024

    @Test func downloadOf100MBIsByteExactWithBoundedMemory() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let baseline = httpResidentBytes()
            let peak = PeakTracker()
            let sampler = Task { await peak.sample() }
            let started = ContinuousClock.now
            let result = try await httpWithDeadline(120) { [port = proxy.port, group = proxy.group] in
                try await httpStreamingRequest(
                    method: .GET, path: "/bytes/\(Self.size)", uploadLength: 0, port: port, group: group)
            }
            let elapsed = ContinuousClock.now - started
            sampler.cancel()
            let growth = await peak.value - baseline
            print("HTTP 100 MB download: \(elapsed), RSS growth \(growth / 1_048_576) MiB")
            #expect(result.status == 200)
            #expect(result.bytes == Self.size)
            #expect(result.firstMismatch == nil)
            #expect(growth < 64 * 1024 * 1024)
        }
    }

    @Test func uploadOf100MBThroughEchoIsByteExactWithBoundedMemory() async throws {
        try await HTTPProxyHarness.with(backends: 1) { proxy in
            let baseline = httpResidentBytes()
            let peak = PeakTracker()
            let sampler = Task { await peak.sample() }
            let started = ContinuousClock.now
            let result = try await httpWithDeadline(120) { [port = proxy.port, group = proxy.group] in
                try await httpStreamingRequest(
                    method: .POST, path: "/echo", uploadLength: Self.size, port: port, group: group)
            }
            let elapsed = ContinuousClock.now - started
            sampler.cancel()
            let growth = await peak.value - baseline
            print("HTTP 100 MB upload+echo: \(elapsed), RSS growth \(growth / 1_048_576) MiB")
            #expect(result.status == 200)
            #expect(result.bytes == Self.size)
            #expect(result.firstMismatch == nil)
            #expect(growth < 64 * 1024 * 1024)
        }
    }
}

/// The highest resident size seen while sampling (every 20 ms until cancelled).
actor PeakTracker {
    private(set) var value = httpResidentBytes()

    func sample() async {
        while !Task.isCancelled {
            value = max(value, httpResidentBytes())
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
