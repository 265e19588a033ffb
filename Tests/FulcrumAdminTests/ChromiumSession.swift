import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands
/// in on fd 3, answers and events out on fd 4, each message JSON ending in a NUL byte). Lets a test click
/// a button and answer the `prompt()` it opens, which the `--dump-dom` command line cannot. Blocking:
/// use it inside `offCooperativePool`. Every wait is bounded; `close()` kills the browser.
final class ChromiumSession {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let pid: pid_t
    private let toBrowser: Int32
    private let fromBrowser: Int32
    private var pending: [UInt8] = []
    private var nextID = 0
    private var sessionID: String?
    private let scratch: URL
    /// Text of each dialog the page opened (type: message), in order.
    private(set) var dialogs: [String] = []
    /// What to type into a `prompt()` (accepted); nil dismisses it.
    var promptAnswer: String?

    init(binary: String) throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-cdp-\(UUID())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        var commands: [Int32] = [0, 0]
        var events: [Int32] = [0, 0]
        guard pipe(&commands) == 0, pipe(&events) == 0 else { throw Failure(description: "pipe failed") }
        // Close-on-exec everywhere, so the browser inherits only the two copies made below.
        for fd in commands + events { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears close-on-exec on the copies: the browser gets exactly fds 3 and 4 of these pipes.
        posix_spawn_file_actions_adddup2(&actions, commands[0], 3)
        posix_spawn_file_actions_adddup2(&actions, events[1], 4)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(
            &actions, 2, scratch.appendingPathComponent("stderr").path, O_WRONLY | O_CREAT, 0o600)
        let arguments = [
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--remote-debugging-pipe", "--user-data-dir=\(scratch.appendingPathComponent("profile").path)",
            "about:blank",
        ]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var child: pid_t = 0
        let spawned = posix_spawn(&child, binary, &actions, nil, &argv, environ)
        Glibc.close(commands[0])
        Glibc.close(events[1])
        guard spawned == 0 else {
            Glibc.close(commands[1])
            Glibc.close(events[0])
            throw Failure(description: "posix_spawn \(binary) failed: \(spawned)")
        }
        pid = child
        toBrowser = commands[1]
        fromBrowser = events[0]
    }

    /// Opens a page on `url` and attaches to it (all later commands go to that page).
    func open(_ url: String, timeout: TimeInterval = 20) throws {
        let target = try command("Target.createTarget", ["url": "about:blank"], timeout: timeout)
        guard let targetID = target["targetId"] as? String else { throw Failure(description: "no targetId") }
        let attached = try command(
            "Target.attachToTarget", ["targetId": targetID, "flatten": true], timeout: timeout)
        guard let session = attached["sessionId"] as? String else { throw Failure(description: "no sessionId") }
        sessionID = session
        _ = try command("Page.enable", [:], timeout: timeout)
        _ = try command("Page.navigate", ["url": url], timeout: timeout)
    }

    /// Evaluates `expression` in the page and returns its value (awaiting a promise).
    func evaluate(_ expression: String, timeout: TimeInterval = 20) throws -> Any? {
        let result = try command(
            "Runtime.evaluate", ["expression": expression, "returnByValue": true, "awaitPromise": true],
            timeout: timeout)
        if let exception = result["exceptionDetails"] {
            throw Failure(description: "page exception: \(exception)")
        }
        return (result["result"] as? [String: Any])?["value"]
    }

    /// Evaluates `expression` until it returns true, at most for `timeout` (every 100 ms).
    func waitFor(_ expression: String, timeout: TimeInterval = 15) throws -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if (try? evaluate(expression, timeout: 5)) as? Bool == true { return true }
            usleep(100_000)
        }
        return (try? evaluate(expression, timeout: 5)) as? Bool == true
    }

    func close() {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        Glibc.close(toBrowser)
        Glibc.close(fromBrowser)
        try? FileManager.default.removeItem(at: scratch)
    }

    // MARK: Protocol

    /// Sends one command and reads messages until its answer, answering dialogs that open meanwhile
    /// (a `prompt()` blocks the page, and the command that caused it, until it is answered).
    private func command(_ method: String, _ params: [String: Any], timeout: TimeInterval) throws -> [String: Any] {
        nextID += 1
        let id = nextID
        try send(
            ["id": id, "method": method, "params": params], session: method.hasPrefix("Target.") ? nil : sessionID)
        let deadline = Date(timeIntervalSinceNow: timeout)
        while true {
            let message = try receive(until: deadline)
            if message["method"] as? String == "Page.javascriptDialogOpening" {
                let params = message["params"] as? [String: Any] ?? [:]
                dialogs.append("\(params["type"] ?? "?"): \(params["message"] ?? "")")
                var answer: [String: Any] = ["accept": promptAnswer != nil]
                if let promptAnswer { answer["promptText"] = promptAnswer }
                nextID += 1
                try send(["id": nextID, "method": "Page.handleJavaScriptDialog", "params": answer], session: sessionID)
                continue
            }
            guard message["id"] as? Int == id else { continue }
            if let error = message["error"] { throw Failure(description: "\(method): \(error)") }
            return message["result"] as? [String: Any] ?? [:]
        }
    }

    private func send(_ object: [String: Any], session: String?) throws {
        var object = object
        if let session { object["sessionId"] = session }
        var bytes = [UInt8](try JSONSerialization.data(withJSONObject: object))
        bytes.append(0)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(toBrowser, $0.baseAddress, $0.count) }
            guard n > 0 else { throw Failure(description: "write to the browser failed") }
            offset += n
        }
    }

    private func receive(until deadline: Date) throws -> [String: Any] {
        while true {
            if let end = pending.firstIndex(of: 0) {
                let data = Data(pending[..<end])
                pending.removeSubrange(...end)
                if let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] { return object }
                continue
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw Failure(description: "no answer from the browser in time") }
            var poller = pollfd(fd: fromBrowser, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(left, 1) * 1000))
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let n = chunk.withUnsafeMutableBytes { read(fromBrowser, $0.baseAddress, $0.count) }
            guard n > 0 else { throw Failure(description: "the browser closed the pipe") }
            pending += chunk[0..<n]
        }
    }
}
