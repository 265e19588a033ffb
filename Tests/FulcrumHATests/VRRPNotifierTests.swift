import Foundation
import FulcrumTestSupport
import Logging
import Testing

@testable import FulcrumHA

@Suite struct VRRPNotifierTests {
    private let logger = Logger(label: "fulcrum.ha.test")

    @Test func runsTheCommandWithTheNewStateInOrder() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fha-notify-\(getpid())")
        try? FileManager.default.removeItem(at: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let notifier = VRRPNotifier(command: "echo >> \(file.path)", timeout: .seconds(5), logger: logger)
        notifier.notify(.backup)
        notifier.notify(.master)
        notifier.notify(.initialize)
        let ran = await eventually(within: .seconds(10)) {
            notifier.snapshot.started == 3 && notifier.snapshot == .init(started: 3)
        }
        #expect(ran, "\(notifier.snapshot)")
        #expect(
            await eventually(within: .seconds(5)) {
                (try? String(contentsOf: file, encoding: .utf8)) == "backup\nmaster\ninitialize\n"
            })
    }

    @Test func aSlowCommandIsKilledAtItsTimeoutAndAFailureIsCounted() async {
        let slow = VRRPNotifier(command: "exec sleep 30 #", timeout: .milliseconds(100), logger: logger)
        let clock = ContinuousClock()
        let start = clock.now
        slow.notify(.master)
        #expect(await eventually(within: .seconds(5)) { slow.snapshot.timedOut == 1 })
        #expect(clock.now - start < .seconds(5))

        // A command whose shell has a child (no `exec`): the child dies with it, and the next notification runs
        // at once, not after the child's 30 s (the queue used to wait for the orphaned `sleep`) nor after the
        // notifier's grace for children that escaped the group. The bound leaves seconds for a loaded machine.
        let forking = VRRPNotifier(
            command: #"f() { if [ "$1" = master ]; then sleep 30; fi; true; }; f"#, timeout: .milliseconds(100),
            logger: logger)
        forking.notify(.master)
        forking.notify(.backup)
        #expect(
            await eventually(within: .seconds(VRRPNotifier.reapGrace - 2)) {
                forking.snapshot == .init(started: 2, timedOut: 1)
            },
            "\(forking.snapshot)")

        let failing = VRRPNotifier(command: "exit 3 #", timeout: .seconds(5), logger: logger)
        failing.notify(.backup)
        #expect(await eventually(within: .seconds(5)) { failing.snapshot.failed == 1 })
        #expect(failing.snapshot.timedOut == 0)
    }
}
