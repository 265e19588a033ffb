import Foundation
import FulcrumAdmin
import FulcrumDemo
import FulcrumTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A headless Chromium (Debian's `chromium`, or `chromium-browser`) found in PATH, run as a child process.
enum Chromium {
    /// The browser binary, or nil; when nil the browser tests are SKIPPED and a warning says so.
    static let binary: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for name in ["chromium", "chromium-browser"] {
            for directory in path.split(separator: ":") {
                let candidate = "\(directory)/\(name)"
                if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            }
        }
        let warning = """

            ************************************************************************************
            WARNING: no `chromium` or `chromium-browser` in PATH: the dashboard browser test is
            SKIPPED. Install it (Debian: apt-get install -y chromium) to run it.
            ************************************************************************************

            """
        FileHandle.standardError.write(Data(warning.utf8))
        return nil
    }()

    /// Runs the browser headless with `arguments` (plus the common flags and a throwaway profile) and
    /// returns its stdout. Blocking: call it through `offCooperativePool`. Killed after `timeout`.
    static func run(
        _ arguments: [String], timeout: TimeInterval = 60
    ) throws -> (
        status: Int32, stdout: String, stderr: String, timedOut: Bool
    ) {
        let binary = try #require(binary)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-chromium-\(UUID())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("stdout")
        let errURL = scratch.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        defer {
            try? out.close()
            try? err.close()
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        // --no-sandbox: Chromium refuses to run as root without it (CI containers run as root).
        process.arguments =
            [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(scratch.appendingPathComponent("profile").path)",
            ] + arguments
        // Files rather than pipes: nothing to drain while waiting, so the wait below can time out.
        process.standardOutput = out
        process.standardError = err
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        var timedOut = false
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            // Chromium's helpers (zygote, renderer) share its process group (Foundation starts it as a group
            // leader): kill them all, or one holding an inherited descriptor keeps the wait below open.
            let pid = process.processIdentifier
            kill(getpgid(pid) == pid ? -pid : pid, SIGKILL)
            exited.wait()
        }
        return (
            process.terminationStatus,
            (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            (try? String(contentsOf: errURL, encoding: .utf8)) ?? "",
            timedOut
        )
    }
}

/// The `tr.backend` rows of a serialized DOM: data-address -> data-state.
func backendRows(in html: String) -> [String: String] {
    var rows: [String: String] = [:]
    let tag = try! Regex(#"<tr\b[^>]*>"#)
    for match in html.matches(of: tag) {
        let text = String(html[match.range])
        guard text.contains(#"class="backend""#) else { continue }
        func attribute(_ name: String) -> String? {
            guard let found = text.firstMatch(of: try! Regex(#"\b\#(name)="([^"]*)""#)) else { return nil }
            return found.output[1].substring.map(String.init)
        }
        if let address = attribute("data-address") { rows[address] = attribute("data-state") ?? "" }
    }
    return rows
}

@Suite("Dashboard (/ui)")
struct DashboardTests {
    @Test("the page is self-contained and never inserts API text as HTML")
    func pageIsSelfContained() {
        let html = Dashboard.html
        #expect(html.hasPrefix("<!doctype html>"))
        #expect(!html.contains("innerHTML"))
        #expect(!html.contains("src=\"http"))
        #expect(!html.contains("href=\"http"))
        #expect(html.contains("/api/v1/pools"))
        #expect(html.contains("sessionStorage"))
        #expect(html.split(separator: "\n").count < 300)
    }

    @Test(
        "headless Chromium renders a row per backend with its state; a drained backend shows draining",
        .enabled(if: Chromium.binary != nil, "no chromium or chromium-browser in PATH: browser test SKIPPED"),
        .timeLimit(.minutes(3))
    )
    func rendersBackendsInChromium() async throws {
        let alwaysDown = DemoBehavior(flaky: FlakySchedule(up: .zero, down: .seconds(3600)))
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior(), alwaysDown]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let addresses = harness.addresses
            let drained = addresses[1]
            let down = addresses[2]
            // Some traffic, so counters and latency have values.
            _ = try await LoadDriver.run(port: harness.port, requests: 50, concurrency: 2, group: harness.group)
            // Percent-encoded the way the page's Drain button sends it (encodeURIComponent: ":" -> "%3A").
            let encoded = drained.replacingOccurrences(of: ":", with: "%3A")
            let (status, json) = try await harness.call(
                "PATCH", "/api/v1/pools/web/backends/\(encoded)", body: #"{"state": "draining"}"#)
            #expect(status == 200, "\(json.serialized)")
            let settled = try await eventually(within: .seconds(10)) {
                let backends = try await harness.backendsJSON()
                return backends[addresses[0]]?["state"] == "up" && backends[drained]?["state"] == "draining"
                    && backends[down]?["state"] == "down"
            }
            #expect(settled, "the pool did not reach up/draining/down")

            let url = "http://127.0.0.1:\(harness.admin.port)/ui"
            let dom = try await offCooperativePool {
                try Chromium.run(["--virtual-time-budget=5000", "--dump-dom", url])
            }
            #expect(!dom.timedOut, "chromium --dump-dom ran over 60 s and was killed")
            #expect(dom.status == 0, "chromium exited \(dom.status): \(dom.stderr.suffix(2000))")
            let rows = backendRows(in: dom.stdout)
            for address in addresses {
                #expect(rows[address] != nil, "no tr.backend row for \(address) in:\n\(dom.stdout.prefix(4000))")
            }
            #expect(rows[drained] == "draining")
            #expect(rows[addresses[0]] == "up")
            #expect(rows[down] == "down")
            #expect(dom.stdout.contains(#"class="state s-draining""#))
            #expect(dom.stdout.contains(#"<div id="status" class="">updated"#))

            // Kept where FULCRUM_DASHBOARD_SCREENSHOT says (to look at it), else a temporary file removed after.
            let keep = ProcessInfo.processInfo.environment["FULCRUM_DASHBOARD_SCREENSHOT"]
            let screenshot =
                keep.map { URL(fileURLWithPath: $0) }
                ?? FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-dashboard-\(UUID()).png")
            try? FileManager.default.removeItem(at: screenshot)
            defer { if keep == nil { try? FileManager.default.removeItem(at: screenshot) } }
            let shot = try await offCooperativePool {
                try Chromium.run([
                    "--virtual-time-budget=5000", "--window-size=1200,800", "--screenshot=\(screenshot.path)", url,
                ])
            }
            #expect(!shot.timedOut, "chromium --screenshot ran over 60 s and was killed")
            #expect(shot.status == 0, "chromium exited \(shot.status): \(shot.stderr.suffix(2000))")
            let size = (try? FileManager.default.attributesOfItem(atPath: screenshot.path)[.size] as? Int) ?? 0
            #expect(size > 0, "no screenshot at \(screenshot.path)")
            if keep != nil { print("dashboard screenshot: \(screenshot.path) (\(size) bytes)") }
        }
    }
    @Test(
        "clicking Drain in headless Chromium, with the token typed into the page's prompt, drains the backend",
        .enabled(if: Chromium.binary != nil, "no chromium or chromium-browser in PATH: browser test SKIPPED"),
        .timeLimit(.minutes(3))
    )
    func drainButtonClickPath() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior()]) {
            AdminHarness.yaml($0, health: false)
        } _: { harness in
            let target = harness.addresses[1]
            let url = "http://127.0.0.1:\(harness.admin.port)/ui"
            let binary = try #require(Chromium.binary)
            let outcome = try await offCooperativePool { () throws -> (dialogs: [String], shown: Bool, drained: Bool) in
                let session = try ChromiumSession(binary: binary)
                defer { session.close() }
                session.promptAnswer = AdminHarness.token
                try session.open(url)
                let row = "document.querySelector('tr.backend[data-address=\"\(target)\"]')"
                let shown = try session.waitFor("\(row) !== null && \(row).dataset.state === 'up'")
                guard shown else { return (session.dialogs, false, false) }
                // A real click on the row's first button (Drain); its prompt() is answered with the token.
                _ = try session.evaluate("\(row).querySelector('button').click(); true")
                let drained = try session.waitFor("\(row) !== null && \(row).dataset.state === 'draining'")
                return (session.dialogs, shown, drained)
            }
            #expect(outcome.shown, "the dashboard never showed \(target) as up")
            #expect(
                outcome.dialogs.count == 1 && outcome.dialogs.first?.hasPrefix("prompt:") == true, "\(outcome.dialogs)")
            #expect(outcome.drained, "the row did not turn draining after the click")
            let backends = try await harness.backendsJSON()
            #expect(backends[target]?["admin"] == "draining")
            #expect(backends[harness.addresses[0]]?["admin"] == "enabled")
        }
    }
}
