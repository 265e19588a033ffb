import FulcrumCore
import Logging
import Testing

@testable import FulcrumHA

private func settings(
    interface: String = "eth0", priority: Int = 100, interval: Duration = .seconds(1),
    vips: [VRRPVirtualAddress] = [VRRPVirtualAddress(address: IPAddress("192.0.2.10")!, prefixLength: 24)],
    primary: IPAddress? = nil
) -> VRRPInstanceSettings {
    VRRPInstanceSettings(
        interface: interface, virtualRouterId: 51, priority: priority, advertInterval: interval,
        virtualAddresses: vips, primaryAddress: primary)
}

@Suite struct VRRPServiceTests {
    @Test(arguments: [
        (Duration.milliseconds(10), 1), (.milliseconds(100), 10), (.seconds(1), 100), (.milliseconds(40_950), 4095),
        (.milliseconds(14), 1), (.milliseconds(15), 2), (.zero, 0),
    ])
    func advertIntervalRoundsToCentiseconds(interval: Duration, centiseconds: Int) {
        #expect(settings(interval: interval).advertIntervalCentiseconds == centiseconds)
    }

    @Test func validationNamesTheProblem() {
        #expect(throws: VRRPInstanceSettings.Invalid.advertInterval(.milliseconds(4))) {
            try settings(interval: .milliseconds(4)).validate()
        }
        #expect(throws: VRRPInstanceSettings.Invalid.advertInterval(.seconds(41))) {
            try settings(interval: .seconds(41)).validate()
        }
        let v6 = VRRPVirtualAddress(address: IPAddress("2001:db8::1")!, prefixLength: 64)
        #expect(throws: VRRPInstanceSettings.Invalid.virtualAddress(v6)) { try settings(vips: [v6]).validate() }
        let badPrefix = VRRPVirtualAddress(address: IPAddress("192.0.2.1")!, prefixLength: 33)
        #expect(throws: VRRPInstanceSettings.Invalid.virtualAddress(badPrefix)) {
            try settings(vips: [badPrefix]).validate()
        }
        #expect(throws: VRRPInstanceSettings.Invalid.advert(.addressCount(0))) { try settings(vips: []).validate() }
        #expect(throws: VRRPInstanceSettings.Invalid.machine(.priority(0))) { try settings(priority: 0).validate() }
        let v6Primary = IPAddress("::1")!
        #expect(throws: VRRPInstanceSettings.Invalid.machine(.primaryAddressNotIPv4(v6Primary))) {
            try settings(primary: v6Primary).validate()
        }
        #expect(throws: Never.self) { try settings().validate() }
    }

    /// Bad settings and a missing interface end `run()` with an error that says what is wrong, never a trap.
    @Test func runFailsCleanly() async {
        let invalid = VRRPService(settings: settings(priority: 300))
        await #expect(throws: VRRPInstanceSettings.Invalid.machine(.priority(300))) { try await invalid.run() }
        #expect(invalid.status.state == .initialize)

        let missing = VRRPService(settings: settings(interface: "fha-none0"))
        do {
            try await missing.run()
            Issue.record("run() returned for a missing interface")
        } catch let error as VRRPSystemError {
            #expect(error.description.contains("fha-none0"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
