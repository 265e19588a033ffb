import CFulcrumLinux
import Dispatch
import Foundation
import FulcrumTestSupport
import Glibc

let isRoot = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")

/// Runs a command to completion off the cooperative pool and returns its status and output.
@discardableResult
func command(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(
                with: Result {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                    process.arguments = arguments
                    let pipe = Pipe()
                    process.standardOutput = pipe
                    process.standardError = pipe
                    try process.run()
                    let data = pipe.fileHandleForReading.readDataToEndOfFile()
                    process.waitUntilExit()
                    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
                })
        }
    }
}

/// A bridge in its own namespace and one namespace per node with `eth0` on it, named uniquely per process
/// and deleted by `tearDown()` (call it in a `defer`-like path, also on failure).
struct NamespaceLab {
    let bridge: String
    let nodes: [String]

    init(tag: String, nodeCount: Int) {
        let pid = getpid()
        bridge = "fha\(tag)br\(pid)"
        nodes = (0..<nodeCount).map { "fha\(tag)n\($0)-\(pid)" }
    }

    func netnsPath(_ node: Int) -> String { "/var/run/netns/\(nodes[node])" }

    /// Builds the topology; node i gets 10.201.0.(2+i)/24 and MAC 02:00:00:00:01:0(2+i).
    func setUp() async throws {
        try await run("ip", "netns", "add", bridge)
        try await run("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
        try await run("ip", "-n", bridge, "link", "set", "br0", "up")
        for (i, ns) in nodes.enumerated() {
            try await run("ip", "netns", "add", ns)
            try await run("ip", "-n", ns, "link", "set", "lo", "up")
            try await run(
                "ip", "-n", bridge, "link", "add", "p\(i)", "type", "veth", "peer", "name", "eth0", "netns", ns)
            try await run("ip", "-n", bridge, "link", "set", "p\(i)", "master", "br0", "up")
            try await run("ip", "-n", ns, "link", "set", "eth0", "address", "02:00:00:00:01:0\(2 + i)")
            try await run("ip", "-n", ns, "addr", "add", "\(address(i))/24", "dev", "eth0")
            try await run("ip", "-n", ns, "link", "set", "eth0", "up")
        }
    }

    func address(_ node: Int) -> String { "10.201.0.\(2 + node)" }

    func tearDown() async {
        for ns in nodes + [bridge] { _ = try? await command(["ip", "netns", "delete", ns]) }
    }

    /// Whether `address` is on node's eth0.
    func holds(_ node: Int, _ address: String) async throws -> Bool {
        let (_, output) = try await command(["ip", "-n", nodes[node], "-4", "-o", "addr", "show", "dev", "eth0"])
        return output.contains(" \(address)/")
    }

    /// The node's neighbour entry for `address` (`ip neigh` line), nil when it has none.
    func neighbour(_ node: Int, _ address: String) async throws -> String? {
        let (_, output) = try await command(["ip", "-n", nodes[node], "neigh", "show", address, "dev", "eth0"])
        return output.isEmpty ? nil : output
    }

    func setLink(_ node: Int, up: Bool) async throws {
        try await run("ip", "-n", nodes[node], "link", "set", "eth0", up ? "up" : "down")
    }

    func run(_ arguments: String...) async throws {
        let (status, output) = try await command(arguments)
        if status != 0 { throw LabError(message: "\(arguments.joined(separator: " ")): \(output)") }
    }
}

struct LabError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// setns(2) for the test threads, through the same helper the service uses.
func fulcrumEnterNetns(_ path: UnsafePointer<CChar>) -> Int32 { fulcrum_enter_netns(path) }

extension NamespaceLab {
    /// Starts watching node's interfaces for `address` from a thread inside its namespace (getifaddrs every
    /// millisecond, no process per poll), so takeover times are measured without `ip`'s start-up cost.
    /// The returned task yields the time from `since` until the address appeared, or nil after `timeout`.
    func watchForAddress(
        _ node: Int, _ address: String, since: @escaping @Sendable () -> ContinuousClock.Instant?,
        timeout: Duration
    ) -> Task<Duration?, Never> {
        let path = netnsPath(node)
        let target = inet_addr(address)
        return Task {
            await withCheckedContinuation { (continuation: CheckedContinuation<Duration?, Never>) in
                let thread = Thread {
                    guard path.withCString({ fulcrumEnterNetns($0) }) >= 0 else {
                        continuation.resume(returning: nil)
                        return
                    }
                    let deadline = ContinuousClock.now + timeout
                    while ContinuousClock.now < deadline {
                        if Self.hasAddress(target), let start = since() {
                            continuation.resume(returning: ContinuousClock.now - start)
                            return
                        }
                        usleep(1000)
                    }
                    continuation.resume(returning: nil)
                }
                thread.start()
            }
        }
    }

    private static func hasAddress(_ target: in_addr_t) -> Bool {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return false }
        defer { freeifaddrs(first) }
        var node: UnsafeMutablePointer<ifaddrs>? = first
        var steps = 0
        while let current = node, steps < 10_000 {
            steps += 1
            node = current.pointee.ifa_next
            guard let sa = current.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            let value = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            if value == target { return true }
        }
        return false
    }
}

extension NamespaceLab {
    /// Runs `body` in a fresh lab of `nodeCount` namespaces with a scratch directory, and always cleans up: the
    /// processes `body` registers are killed by PID, the lab is torn down and the directory removed. A failure
    /// carries the tail of the two balancers' logs (`lb0.log`, `lb1.log` in the directory).
    static func withPairLab(
        tag: String, nodeCount: Int, directoryName: String,
        _ body: (NamespaceLab, URL, (Process) -> Void) async throws -> Void
    ) async throws {
        let lab = NamespaceLab(tag: tag, nodeCount: nodeCount)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(directoryName)-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var processes: [Process] = []
        func cleanUp() async {
            for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            for process in processes { _ = try? await offCooperativePool { process.waitUntilExit() } }
            await lab.tearDown()
            try? FileManager.default.removeItem(at: directory)
        }
        do {
            try await lab.setUp()
            try await body(lab, directory) { processes.append($0) }
        } catch {
            let logs = (0...1).map {
                (try? String(contentsOf: directory.appendingPathComponent("lb\($0).log"), encoding: .utf8)) ?? ""
            }
            await cleanUp()
            throw LabError(message: "\(error)\nlb0 log:\n\(logs[0].suffix(3000))\nlb1 log:\n\(logs[1].suffix(3000))")
        }
        await cleanUp()
    }
}
