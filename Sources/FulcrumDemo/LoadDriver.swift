import NIOCore

/// Drives HTTP/1.1 load at a server: `concurrency` connections, each issuing its share of `requests` one after
/// another. A request that fails (connect error, reset, close, timeout) counts as an error and the next one
/// opens a new connection, so a run always terminates, even when the server dies.
public struct LoadDriver: Sendable {
    /// Runs `requests` `GET path` requests over `concurrency` connections and reports what happened.
    ///
    /// - Parameters:
    ///   - keepAlive: reuse each connection (true) or send `Connection: close` and reconnect for every request.
    ///   - timeout: bound on each connect and on each request (whole response).
    /// Latency is measured from the start of a request to the end of its response, including the connect when
    /// the request needs a new connection.
    public static func run(
        host: String = "127.0.0.1",
        port: Int,
        path: String = "/",
        requests: Int,
        concurrency: Int,
        keepAlive: Bool = true,
        timeout: Duration = .seconds(5),
        group: any EventLoopGroup
    ) async throws -> LoadReport {
        precondition(requests >= 0 && concurrency >= 1, "requests must be >= 0 and concurrency >= 1")
        let workers = min(concurrency, requests)
        let started = ContinuousClock.now
        let target = Target(host: host, port: port, path: path, keepAlive: keepAlive, timeout: timeout, group: group)
        let tallies = await withTaskGroup(of: Tally.self) { tasks in
            for worker in 0..<workers {
                let share = requests / workers + (worker < requests % workers ? 1 : 0)
                tasks.addTask { await Self.runConnection(requests: share, target: target) }
            }
            var tallies: [Tally] = []
            for await tally in tasks { tallies.append(tally) }
            return tallies
        }

        var report = LoadReport(requests: requests, elapsed: .now - started)
        var latencies: [Duration] = []
        for tally in tallies {
            report.succeeded += tally.succeeded
            report.errors += tally.errors
            report.statusCounts.merge(tally.statusCounts, uniquingKeysWith: +)
            report.byBackend.merge(tally.byBackend, uniquingKeysWith: +)
            latencies += tally.latencies
        }
        latencies.sort()
        report.p50 = LoadReport.percentile(0.50, of: latencies)
        report.p99 = LoadReport.percentile(0.99, of: latencies)
        report.max = latencies.last ?? .zero
        return report
    }

    private struct Target: Sendable {
        var host: String
        var port: Int
        var path: String
        var keepAlive: Bool
        var timeout: Duration
        var group: any EventLoopGroup
    }

    private struct Tally: Sendable {
        var succeeded = 0
        var errors = 0
        var statusCounts: [Int: Int] = [:]
        var byBackend: [String: Int] = [:]
        var latencies: [Duration] = []
    }

    private static func runConnection(requests: Int, target: Target) async -> Tally {
        var tally = Tally()
        tally.latencies.reserveCapacity(requests)
        let headers: [(name: String, value: String)] = target.keepAlive ? [] : [(name: "Connection", value: "close")]
        let request = DemoRequest(path: target.path, headers: headers, collectBody: false)
        var client: DemoHTTPClient?
        for _ in 0..<requests {
            let started = ContinuousClock.now
            do {
                let connection: DemoHTTPClient
                if let client, client.isActive {
                    connection = client
                } else {
                    await client?.close()
                    client = nil
                    connection = try await DemoHTTPClient.connect(
                        host: target.host,
                        port: target.port,
                        timeout: target.timeout,
                        group: target.group
                    )
                    client = connection
                }
                let response = try await connection.send(request, timeout: target.timeout)
                tally.latencies.append(.now - started)
                tally.statusCounts[response.status, default: 0] += 1
                if (200..<300).contains(response.status) { tally.succeeded += 1 }
                if let backend = response.header("X-Backend") { tally.byBackend[backend, default: 0] += 1 }
                if !target.keepAlive || !response.isKeepAlive {
                    await connection.close()
                    client = nil
                }
            } catch {
                tally.errors += 1
                await client?.close()
                client = nil
            }
        }
        await client?.close()
        return tally
    }
}
