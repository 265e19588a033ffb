import FulcrumCore
import Testing

@testable import FulcrumHA

/// Routers on one simulated link: adverts are delivered at once to every live router, timers fire in time
/// order. Pure and deterministic; every loop is bounded.
struct SimulatedLink {
    var routers: [Machine]
    var alive: [Bool]
    var holdsAddresses: [Bool]
    var now: UInt64 = t0
    /// When each router last became master.
    var becameMaster: [UInt64?]

    init(_ routers: [Machine]) {
        self.routers = routers
        alive = Array(repeating: true, count: routers.count)
        holdsAddresses = Array(repeating: false, count: routers.count)
        becameMaster = Array(repeating: nil, count: routers.count)
    }

    var masters: [Int] { routers.indices.filter { alive[$0] && routers[$0].state == .master } }

    mutating func input(_ index: Int, _ input: Machine.Input) {
        var queue: [(Int, Machine.Input)] = [(index, input)]
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            precondition(steps < 10_000, "advert storm")
            let (i, event) = queue.removeFirst()
            guard alive[i] else { continue }
            for action in routers[i].handle(event, now: now) {
                switch action {
                case .sendAdvert(let priority):
                    let advert = Machine.Input.advert(
                        from: routers[i].settings.primaryAddress, priority: priority,
                        maxAdvertInterval: routers[i].settings.advertInterval)
                    for j in routers.indices where j != i && alive[j] { queue.append((j, advert)) }
                case .addVirtualAddresses: holdsAddresses[i] = true
                case .removeVirtualAddresses: holdsAddresses[i] = false
                case .stateChanged(_, .master): becameMaster[i] = now
                default: break
                }
            }
        }
    }

    /// Fires timers in order until `time`.
    mutating func run(until time: UInt64) {
        for _ in 0..<1_000_000 {
            let next = routers.indices.compactMap { i in alive[i] ? routers[i].timerDeadline.map { ($0, i) } : nil }
                .filter { $0.0 <= time }.min { $0 < $1 }
            guard let (deadline, i) = next else { break }
            // A router that was cut off has a deadline in the past: it fires now, time never goes back.
            now = max(now, deadline)
            input(i, .timerFired)
        }
        now = max(now, time)
    }

    /// SIGKILL and link down: the router says nothing more and its addresses are gone with its link.
    mutating func crash(_ i: Int) {
        alive[i] = false
        holdsAddresses[i] = false
    }
}

private let addresses = (1...3).map { IPAddress.v4(0x0AC8_0000 | UInt32($0)) }

@Suite struct VRRPSimulationTests {
    @Test func startingTogetherTheHighestPriorityWins() throws {
        let priorities = [1, 50, 100, 200, 254, 255]
        for p0 in priorities {
            for p1 in priorities where p1 != p0 {
                for preempt in [true, false] {
                    var link = SimulatedLink([
                        try machine(priority: p0, interval: 10, address: addresses[0], preempt: preempt),
                        try machine(priority: p1, interval: 10, address: addresses[1], preempt: preempt),
                    ])
                    link.input(0, .start)
                    link.input(1, .start)
                    link.run(until: t0 + 10 * second)
                    let expected = p0 > p1 ? 0 : 1
                    #expect(link.masters == [expected], "priorities \(p0)/\(p1) preempt \(preempt)")
                    #expect(link.holdsAddresses == [expected == 0, expected == 1])
                }
            }
        }
    }

    @Test(arguments: [true, false])
    func twoMastersOfEqualPriorityResolveToTheHigherAddress(ownersToo: Bool) throws {
        let priority = ownersToo ? 255 : 100
        var link = SimulatedLink([
            try machine(priority: priority, address: addresses[1]),
            try machine(priority: priority, address: addresses[0]),
        ])
        // A partition: each becomes master alone.
        link.alive = [true, false]
        link.input(0, .start)
        link.run(until: t0 + 5 * second)
        link.alive = [false, true]
        link.input(1, .start)
        link.run(until: t0 + 10 * second)
        link.alive = [true, true]
        #expect(link.routers.allSatisfy { $0.state == .master })
        // The partition heals: the next adverts settle it.
        link.run(until: t0 + 12 * second)
        #expect(link.masters == [0], "10.200.0.2 beats 10.200.0.1")
    }

    @Test(arguments: [
        // first's priority, late starter's priority, preempt, late starter ends master
        (100, 200, true, true), (100, 200, false, false), (200, 100, true, false), (200, 100, false, false),
        (100, 255, false, true),  // the owner takes over at once, preemption or not
    ])
    func aLateStarter(first: Int, late: Int, preempt: Bool, lateWins: Bool) throws {
        var link = SimulatedLink([
            try machine(priority: first, interval: 100, address: addresses[0], preempt: preempt),
            try machine(priority: late, interval: 100, address: addresses[1], preempt: preempt),
        ])
        link.alive[1] = false
        link.input(0, .start)
        link.run(until: t0 + 10 * second)
        #expect(link.masters == [0])
        link.alive[1] = true
        let lateStart = t0 + 10 * second + 500 * ms
        link.now = lateStart
        link.input(1, .start)
        link.run(until: t0 + 30 * second)
        #expect(link.masters == [lateWins ? 1 : 0])
        #expect(link.holdsAddresses == [!lateWins, lateWins])
        if lateWins && late != 255 {
            // Preemption happens when the late starter's first Master_Down_Timer runs out.
            let down = try machine(priority: late, interval: 100).masterDownIntervalNanos
            #expect(link.becameMaster[1] == lateStart + down)
        }
        if late == 255 { #expect(link.becameMaster[1] == lateStart) }
    }

    @Test(arguments: [10, 100])
    func aCrashedMasterIsReplacedWithinTheMasterDownInterval(interval: Int) throws {
        var link = SimulatedLink([
            try machine(priority: 200, interval: interval, address: addresses[0]),
            try machine(priority: 100, interval: interval, address: addresses[1]),
            try machine(priority: 150, interval: interval, address: addresses[2]),
        ])
        for i in 0..<3 { link.input(i, .start) }
        link.run(until: t0 + 60 * second)
        #expect(link.masters == [0])
        let crashAt = link.now + 123 * ms
        link.run(until: crashAt)
        link.crash(0)
        link.run(until: crashAt + 60 * second)
        // 150 has the shorter Master_Down_Interval of the two backups, so it goes first and 100 stays backup.
        #expect(link.masters == [2])
        #expect(link.holdsAddresses == [false, false, true])
        let takeover = try #require(link.becameMaster[2]) - crashAt
        let down = try machine(priority: 150, interval: interval).masterDownIntervalNanos
        let advertInterval = UInt64(interval) * 10 * ms
        // The last advert came at most one interval before the crash.
        #expect(takeover <= down && takeover > down - advertInterval, "took \(takeover) ns")
    }

    @Test func aGracefulShutdownHandsOverWithinSkewTime() throws {
        var link = SimulatedLink([
            try machine(priority: 200, interval: 100, address: addresses[0]),
            try machine(priority: 100, interval: 100, address: addresses[1]),
        ])
        link.input(0, .start)
        link.input(1, .start)
        link.run(until: t0 + 20 * second)
        #expect(link.masters == [0])
        let stopAt = link.now + 400 * ms
        link.run(until: stopAt)
        link.input(0, .shutdown)
        #expect(link.holdsAddresses == [false, false])
        link.run(until: stopAt + 10 * second)
        #expect(link.masters == [1])
        let skew = try machine(priority: 100, interval: 100).skewTimeNanos
        #expect(try #require(link.becameMaster[1]) == stopAt + skew)
    }

    @Test func aSickMasterHandsOverAndTakesBackWhenHealthy() throws {
        var link = SimulatedLink([
            try machine(priority: 200, interval: 10, address: addresses[0], trackWeight: 150),
            try machine(priority: 100, interval: 10, address: addresses[1]),
        ])
        link.input(0, .start)
        link.input(1, .start)
        link.run(until: t0 + 5 * second)
        #expect(link.masters == [0])
        link.input(0, .trackingChanged(failing: true))  // 200 − 150 = 50 < 100
        link.run(until: t0 + 10 * second)
        #expect(link.masters == [1])
        link.input(0, .trackingChanged(failing: false))
        link.run(until: t0 + 15 * second)
        #expect(link.masters == [0], "healthy again, it preempts")
        #expect(link.holdsAddresses == [true, false])
    }
}
