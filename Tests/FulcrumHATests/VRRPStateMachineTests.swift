import FulcrumCore
import Testing

@testable import FulcrumHA

typealias Machine = VRRPStateMachine

let t0: UInt64 = 1_000_000_000_000
let ms: UInt64 = 1_000_000
let second: UInt64 = 1_000_000_000
let low = IPAddress("10.200.0.2")!
let high = IPAddress("10.200.0.3")!

func machine(
    priority: Int = 100, interval: Int = 100, address: IPAddress = low, preempt: Bool = true,
    preemptDelay: Duration = .zero, trackWeight: Int = 0
) throws -> Machine {
    Machine(
        settings: try Machine.Settings(
            priority: priority, advertInterval: interval, primaryAddress: address, preempt: preempt,
            preemptDelay: preemptDelay, trackWeight: trackWeight))
}

/// A machine started at `t0` and now backup.
func backup(
    priority: Int = 100, interval: Int = 100, address: IPAddress = low, preempt: Bool = true,
    preemptDelay: Duration = .zero, trackWeight: Int = 0
) throws -> Machine {
    var m = try machine(
        priority: priority, interval: interval, address: address, preempt: preempt, preemptDelay: preemptDelay,
        trackWeight: trackWeight)
    _ = m.handle(.start, now: t0)
    #expect(m.state == .backup)
    return m
}

/// A machine that took over when its Master_Down_Timer fired; returns it and the time it did.
func master(
    priority: Int = 100, interval: Int = 100, address: IPAddress = low, trackWeight: Int = 0
) throws -> (
    Machine, UInt64
) {
    var m = try backup(priority: priority, interval: interval, address: address, trackWeight: trackWeight)
    let at = try #require(m.timerDeadline)
    _ = m.handle(.timerFired, now: at)
    #expect(m.state == .master)
    return (m, at)
}

@Suite struct VRRPTimingTests {
    /// Values worked out by hand from RFC 5798 §6.1 (nanoseconds).
    @Test(arguments: [
        // priority, centiseconds, Skew_Time, Master_Down_Interval
        (100, 100, 609_375_000 as UInt64, 3_609_375_000 as UInt64),  // 156/256 s
        (254, 1, 78_125, 30_078_125),  // 2/256 × 10 ms
        (1, 4095, 40_790_039_062, 163_640_039_062),  // 255/256 × 40.95 s, truncated
        (200, 10, 21_875_000, 321_875_000),  // 56/256 × 100 ms
    ])
    func skewAndMasterDownInterval(priority: Int, centiseconds: Int, skew: UInt64, down: UInt64) throws {
        let m = try machine(priority: priority, interval: centiseconds)
        #expect(m.skewTimeNanos == skew)
        #expect(m.masterDownIntervalNanos == down)
    }

    @Test func aHigherPriorityBackupAlwaysWaitsLess() throws {
        for interval in [1, 10, 100] {
            var previous = UInt64.max
            for priority in 1...254 {
                let down = try machine(priority: priority, interval: interval).masterDownIntervalNanos
                #expect(down < previous, "priority \(priority) at \(interval) cs")
                previous = down
            }
        }
    }

    @Test func rejectsSettingsOutOfRange() {
        #expect(throws: Machine.InvalidSetting.priority(0)) { try machine(priority: 0) }
        #expect(throws: Machine.InvalidSetting.priority(256)) { try machine(priority: 256) }
        #expect(throws: Machine.InvalidSetting.advertInterval(0)) { try machine(interval: 0) }
        #expect(throws: Machine.InvalidSetting.advertInterval(4096)) { try machine(interval: 4096) }
        #expect(throws: Machine.InvalidSetting.trackWeight(255)) { try machine(trackWeight: 255) }
        let v6 = IPAddress("::1")!
        #expect(throws: Machine.InvalidSetting.primaryAddressNotIPv4(v6)) { try machine(address: v6) }
    }

    @Test func preemptDelayConvertsToNanoseconds() throws {
        #expect(try machine(preemptDelay: .milliseconds(1500)).settings.preemptDelayNanos == 1_500 * ms)
        #expect(try machine(preemptDelay: .seconds(-1)).settings.preemptDelayNanos == 0)
    }
}

@Suite struct VRRPInitializeTests {
    @Test func aNonOwnerStartsAsBackupWithTheMasterDownTimer() throws {
        var m = try machine(priority: 100, interval: 100)
        #expect(m.state == .initialize)
        let actions = m.handle(.start, now: t0)
        #expect(
            actions == [
                .stateChanged(from: .initialize, to: .backup), .removeVirtualAddresses,
                .armTimer(deadline: t0 + 3_609_375_000),
            ])
        #expect(m.state == .backup)
        #expect(m.masterAdvertInterval == 100)
    }

    @Test func theAddressOwnerBecomesMasterAtOnce() throws {
        var m = try machine(priority: 255, interval: 100)
        let actions = m.handle(.start, now: t0)
        #expect(
            actions == [
                .stateChanged(from: .initialize, to: .master), .sendAdvert(priority: 255), .addVirtualAddresses,
                .sendGratuitousARP, .armTimer(deadline: t0 + second),
            ])
        #expect(m.state == .master)
    }

    @Test func inInitializeOnlyStartMatters() throws {
        var m = try machine()
        #expect(m.handle(.advert(from: high, priority: 200, maxAdvertInterval: 1), now: t0).isEmpty)
        #expect(m.handle(.timerFired, now: t0 + 100 * second).isEmpty)
        #expect(m.handle(.shutdown, now: t0).isEmpty)
        #expect(m.handle(.trackingChanged(failing: true), now: t0).isEmpty)
        #expect(m.state == .initialize)
        // Start is ignored once running.
        _ = m.handle(.start, now: t0)
        #expect(m.handle(.start, now: t0 + 1).isEmpty)
    }
}

@Suite struct VRRPBackupTests {
    @Test func theMasterDownTimerMakesItMaster() throws {
        var m = try backup(priority: 100, interval: 100)
        let deadline = t0 + 3_609_375_000
        #expect(m.handle(.timerFired, now: deadline - 1).isEmpty, "an early timer changes nothing")
        #expect(m.state == .backup)
        #expect(
            m.handle(.timerFired, now: deadline) == [
                .stateChanged(from: .backup, to: .master), .sendAdvert(priority: 100), .addVirtualAddresses,
                .sendGratuitousARP, .armTimer(deadline: deadline + second),
            ])
    }

    @Test(arguments: [
        // local priority, advert priority, preempt, accepted
        (100, 101, true, true), (100, 100, true, true), (100, 99, true, false), (100, 1, true, false),
        (100, 101, false, true), (100, 100, false, true), (100, 99, false, true), (100, 1, false, true),
        (254, 255, true, true), (1, 1, true, true), (254, 253, true, false), (254, 253, false, true),
    ])
    func acceptsOrIgnoresAnAdvertByPriorityAndPreemption(
        local: Int, remote: Int, preempt: Bool, accepted: Bool
    )
        throws
    {
        var m = try backup(priority: local, preempt: preempt)
        let before = try #require(m.timerDeadline)
        let now = t0 + second
        let actions = m.handle(.advert(from: high, priority: UInt8(remote), maxAdvertInterval: 100), now: now)
        if accepted {
            #expect(actions == [.armTimer(deadline: now + m.masterDownIntervalNanos)])
        } else {
            #expect(actions.isEmpty)
            #expect(m.timerDeadline == before, "an ignored advert must not hold the timer back")
        }
        #expect(m.state == .backup)
    }

    @Test func equalPriorityIsAcceptedWhateverTheAddress() throws {
        // The backup does not compare addresses (§6.4.2); only a master does.
        var m = try backup(priority: 100, address: high)
        #expect(m.handle(.advert(from: low, priority: 100, maxAdvertInterval: 100), now: t0 + 1).count == 1)
    }

    @Test func learnsTheMastersAdvertInterval() throws {
        var m = try backup(priority: 100, interval: 100)
        let now = t0 + 500 * ms
        let actions = m.handle(.advert(from: high, priority: 200, maxAdvertInterval: 10), now: now)
        #expect(m.masterAdvertInterval == 10)
        // 3 × 100 ms + 156/256 × 100 ms
        #expect(actions == [.armTimer(deadline: now + 300 * ms + 60_937_500)])
        // A slower master later: learnt again.
        _ = m.handle(.advert(from: high, priority: 200, maxAdvertInterval: 300), now: now + ms)
        #expect(m.masterAdvertInterval == 300)
        #expect(m.timerDeadline == now + ms + 9 * second + 1_828_125_000)
    }

    @Test func anIgnoredAdvertTeachesNothing() throws {
        var m = try backup(priority: 200, interval: 100)
        _ = m.handle(.advert(from: high, priority: 100, maxAdvertInterval: 5), now: t0 + 1)
        #expect(m.masterAdvertInterval == 100)
    }

    @Test func aResigningMasterIsReplacedAfterSkewTime() throws {
        var m = try backup(priority: 200, interval: 100)
        _ = m.handle(.advert(from: high, priority: 250, maxAdvertInterval: 10), now: t0 + second)
        let now = t0 + 2 * second
        let actions = m.handle(.advert(from: high, priority: 0, maxAdvertInterval: 10), now: now)
        // Skew_Time with the learnt interval: 56/256 × 100 ms.
        #expect(actions == [.armTimer(deadline: now + 21_875_000)])
        #expect(m.handle(.timerFired, now: now + 21_875_000).first == .stateChanged(from: .backup, to: .master))
    }

    @Test func resignIsHonouredEvenWithoutPreemption() throws {
        var m = try backup(priority: 50, preempt: false)
        #expect(
            m.handle(.advert(from: high, priority: 0, maxAdvertInterval: 100), now: t0) == [
                .armTimer(deadline: t0 + m.skewTimeNanos)
            ])
    }

    @Test func shutdownCancelsTheTimer() throws {
        var m = try backup()
        #expect(m.handle(.shutdown, now: t0 + 1) == [.cancelTimer, .stateChanged(from: .backup, to: .initialize)])
        #expect(m.state == .initialize)
        #expect(m.timerDeadline == nil)
        #expect(m.handle(.timerFired, now: t0 + 100 * second).isEmpty, "a late timer after shutdown")
        // It can start again.
        #expect(m.handle(.start, now: t0 + 2).first == .stateChanged(from: .initialize, to: .backup))
    }
}

@Suite struct VRRPMasterTests {
    @Test func theAdverTimerSendsAndRearms() throws {
        var (m, at) = try master(priority: 100, interval: 10)
        #expect(m.handle(.timerFired, now: at + 99 * ms).isEmpty)
        #expect(
            m.handle(.timerFired, now: at + 100 * ms) == [
                .sendAdvert(priority: 100), .armTimer(deadline: at + 200 * ms),
            ])
        // A late timer rearms from when it really fired.
        #expect(
            m.handle(.timerFired, now: at + 350 * ms) == [
                .sendAdvert(priority: 100), .armTimer(deadline: at + 450 * ms),
            ])
    }

    @Test(arguments: [
        // local priority, local address, advert priority, advert address, steps down
        (100, low, 101, low, true), (100, high, 101, low, true),
        (100, low, 100, high, true),  // tie, the sender's address is higher
        (100, high, 100, low, false),  // tie, ours is higher
        (100, low, 99, high, false), (254, low, 255, low, true), (255, low, 255, high, true),
        (255, high, 254, low, false), (1, low, 1, high, true),
    ])
    func stepsDownOnlyForAHigherPriorityOrAHigherAddress(
        local: Int, localAddress: IPAddress, remote: Int, remoteAddress: IPAddress, stepsDown: Bool
    ) throws {
        var m: Machine
        if local == 255 {
            m = try machine(priority: 255, address: localAddress)
            _ = m.handle(.start, now: t0)
        } else {
            (m, _) = try master(priority: local, address: localAddress)
        }
        let before = m.timerDeadline
        let now = t0 + 10 * second
        let actions = m.handle(
            .advert(from: remoteAddress, priority: UInt8(remote), maxAdvertInterval: 50), now: now)
        if stepsDown {
            #expect(m.state == .backup)
            #expect(m.masterAdvertInterval == 50, "learns the new master's interval")
            #expect(
                actions == [
                    .stateChanged(from: .master, to: .backup), .removeVirtualAddresses,
                    .armTimer(deadline: now + m.masterDownIntervalNanos),
                ])
            #expect(m.masterDownIntervalNanos == 1_500 * ms + (256 - UInt64(local)) * 500 * ms / 256)
        } else {
            #expect(m.state == .master)
            #expect(actions.isEmpty)
            #expect(m.timerDeadline == before)
        }
    }

    @Test func anotherMasterResigningMakesItAdvertiseAtOnce() throws {
        var (m, at) = try master(priority: 100, interval: 100)
        let now = at + 300 * ms
        #expect(
            m.handle(.advert(from: high, priority: 0, maxAdvertInterval: 100), now: now) == [
                .sendAdvert(priority: 100), .armTimer(deadline: now + second),
            ])
        #expect(m.state == .master)
    }

    @Test func shutdownSendsPriorityZeroAndGivesTheAddressesBack() throws {
        var (m, at) = try master()
        #expect(
            m.handle(.shutdown, now: at + 1) == [
                .cancelTimer, .sendAdvert(priority: 0), .removeVirtualAddresses,
                .stateChanged(from: .master, to: .initialize),
            ])
        #expect(m.timerDeadline == nil)
        #expect(m.handle(.timerFired, now: at + 100 * second).isEmpty)
    }

    @Test func aSteppedDownMasterUsesTheLearntIntervalAsBackup() throws {
        var (m, at) = try master(priority: 100, interval: 100)
        let now = at + second
        _ = m.handle(.advert(from: high, priority: 200, maxAdvertInterval: 20), now: now)
        // It stays backup while the new master advertises; when it stops, 3 × 200 ms + skew later it takes over.
        let down: UInt64 = 600 * ms + 156 * 200 * ms / 256
        #expect(m.timerDeadline == now + down)
        #expect(m.handle(.timerFired, now: now + down).contains(.sendAdvert(priority: 100)))
        // As master it advertises at its own interval again.
        #expect(m.timerDeadline == now + down + second)
    }
}

@Suite struct VRRPPreemptDelayTests {
    @Test func aLowerMasterIsAcceptedUntilTheDelayAfterStartPasses() throws {
        var m = try backup(priority: 150, preemptDelay: .seconds(5))
        let lowerAdvert = Machine.Input.advert(from: high, priority: 100, maxAdvertInterval: 100)
        #expect(m.handle(lowerAdvert, now: t0 + 1 * second).count == 1)
        #expect(m.handle(lowerAdvert, now: t0 + 4 * second).count == 1)
        let lastAccepted = try #require(m.timerDeadline)
        #expect(m.handle(lowerAdvert, now: t0 + 5 * second).isEmpty, "the delay is over: preempt")
        #expect(m.handle(lowerAdvert, now: t0 + 6 * second).isEmpty)
        #expect(m.timerDeadline == lastAccepted)
        #expect(m.handle(.timerFired, now: lastAccepted).first == .stateChanged(from: .backup, to: .master))
    }

    @Test func theDelayRestartsWhenALowerMasterFollowsAHigherOne() throws {
        var m = try backup(priority: 150, preemptDelay: .seconds(5))
        let lowerAdvert = Machine.Input.advert(from: high, priority: 100, maxAdvertInterval: 100)
        // A higher-priority master stops the delay that began at start...
        _ = m.handle(.advert(from: high, priority: 200, maxAdvertInterval: 100), now: t0 + second)
        // ...then its priority drops (tracking) at t0 + 10 s: a new delay of 5 s begins.
        #expect(m.handle(lowerAdvert, now: t0 + 10 * second).count == 1)
        #expect(m.handle(lowerAdvert, now: t0 + 14 * second).count == 1)
        #expect(m.handle(lowerAdvert, now: t0 + 15 * second).isEmpty)
    }

    @Test func withoutDelayALowerMasterIsIgnoredAtOnce() throws {
        var m = try backup(priority: 150)
        #expect(m.handle(.advert(from: high, priority: 100, maxAdvertInterval: 100), now: t0 + 1).isEmpty)
    }

    @Test func theDelayDoesNotMatterWithoutPreemption() throws {
        var m = try backup(priority: 150, preempt: false, preemptDelay: .seconds(1))
        let lowerAdvert = Machine.Input.advert(from: high, priority: 100, maxAdvertInterval: 100)
        for s in [UInt64(2), 10, 100] {
            #expect(m.handle(lowerAdvert, now: t0 + s * second).count == 1)
        }
    }
}

@Suite struct VRRPTrackingTests {
    @Test func aFailingMasterReadvertisesWithTheLoweredPriority() throws {
        var (m, at) = try master(priority: 150, interval: 100, trackWeight: 60)
        let now = at + 300 * ms
        #expect(
            m.handle(.trackingChanged(failing: true), now: now) == [
                .sendAdvert(priority: 90), .armTimer(deadline: now + second),
            ])
        #expect(m.effectivePriority == 90)
        #expect(m.handle(.trackingChanged(failing: true), now: now + 1).isEmpty, "no change, no advert")
        #expect(m.handle(.timerFired, now: now + second).first == .sendAdvert(priority: 90))
        #expect(
            m.handle(.trackingChanged(failing: false), now: now + 2 * second) == [
                .sendAdvert(priority: 150), .armTimer(deadline: now + 3 * second),
            ])
    }

    @Test func theLoweredPriorityDecidesElections() throws {
        // A sick master (150 − 60 = 90) steps down for a healthy 100.
        var (m, at) = try master(priority: 150, trackWeight: 60)
        _ = m.handle(.trackingChanged(failing: true), now: at + 1)
        _ = m.handle(.advert(from: low, priority: 100, maxAdvertInterval: 100), now: at + 2)
        #expect(m.state == .backup)
        // As a sick backup with preemption on it now accepts the 100 master, and stops doing so once healthy.
        #expect(m.handle(.advert(from: low, priority: 100, maxAdvertInterval: 100), now: at + 3).count == 1)
        #expect(m.handle(.trackingChanged(failing: false), now: at + 4).isEmpty, "a backup sends nothing")
        #expect(m.handle(.advert(from: low, priority: 100, maxAdvertInterval: 100), now: at + 5).isEmpty)
    }

    @Test func theSkewFollowsTheEffectivePriority() throws {
        var m = try backup(priority: 200, interval: 100, trackWeight: 100)
        #expect(m.skewTimeNanos == 56 * second / 256)
        _ = m.handle(.trackingChanged(failing: true), now: t0)
        #expect(m.skewTimeNanos == 156 * second / 256)
    }

    @Test(arguments: [(150, 60, 90), (50, 200, 1), (255, 1, 254), (255, 254, 1), (100, 0, 100)])
    func effectivePriorityIsClampedToOne(priority: Int, weight: Int, effective: Int) throws {
        var m = try machine(priority: priority, trackWeight: weight)
        #expect(m.effectivePriority == UInt8(priority))
        _ = m.handle(.trackingChanged(failing: true), now: t0)
        #expect(m.effectivePriority == UInt8(effective))
    }

    @Test func aSickOwnerStartsAsBackup() throws {
        var m = try machine(priority: 255, trackWeight: 10)
        _ = m.handle(.trackingChanged(failing: true), now: t0)
        #expect(m.handle(.start, now: t0).first == .stateChanged(from: .initialize, to: .backup))
    }

    @Test func weightZeroNeverReadvertises() throws {
        var (m, at) = try master(priority: 150, trackWeight: 0)
        #expect(m.handle(.trackingChanged(failing: true), now: at + 1).isEmpty)
        #expect(m.effectivePriority == 150)
    }
}
