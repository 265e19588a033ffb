import FulcrumConfig
import Testing

@Suite("Durations")
struct DurationTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("2s", .seconds(2)), ("1.5s", .milliseconds(1500)),
        ("1m", .seconds(60)), ("1h", .seconds(3600)), ("500us", .microseconds(500)), ("500µs", .microseconds(500)),
        ("10ns", .nanoseconds(10)), ("0s", .zero), ("1m30s", .seconds(90)), ("1h0m0.5s", .milliseconds(3_600_500)),
        (".5s", .milliseconds(500)), ("40.95s", .milliseconds(40_950)), ("0.1ms", .microseconds(100)),
    ])
    func parses(text: String, expected: Duration) {
        #expect(parseDuration(text) == expected)
    }

    @Test(arguments: [
        "", "2", "0", "1.5", "s", "ms", "2 s", "-2s", "+2s", "2sec", "2x", "1min", "2s ", " 2s", "1.2.3s", ".s",
        "1e3ms", "99999999999999999999s", "9999999999h", "nan", "inf",
    ])
    func rejects(text: String) {
        #expect(parseDuration(text) == nil)
    }

    @Test(arguments: [
        (Duration.seconds(2), "2s"), (.milliseconds(1500), "1.5s"), (.milliseconds(40_950), "40.95s"),
        (.milliseconds(1001), "1.001s"), (.seconds(300), "5m"), (.seconds(7200), "2h"),
        (.zero, "0s"), (.microseconds(500), "500us"), (.nanoseconds(7), "7ns"),
    ])
    func formats(duration: Duration, text: String) {
        #expect(formatDuration(duration) == text)
        #expect(parseDuration(text) == duration)
    }
}
