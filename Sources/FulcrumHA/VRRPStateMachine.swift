import FulcrumCore

/// The VRRPv3 state machine of one virtual router (RFC 5798 §6.4), as pure code: inputs in, actions out,
/// time injected (nanoseconds on any monotonic clock), no IO.
///
/// There is one timer: the Adver_Timer while master, the Master_Down_Timer while backup. `armTimer`
/// replaces whatever was armed; the driver calls `handle(.timerFired, now:)` when the deadline passes
/// (an early or stale call changes nothing, so a driver's timer races are harmless).
///
/// Departures from the RFC's letter, all as keepalived does them:
/// - times are kept in nanoseconds, so Skew_Time is exact instead of truncated to centiseconds (at a
///   10 ms interval truncation would give every priority the same skew);
/// - `preemptDelay`: a backup accepts a lower-priority master for this long after it starts, or after it
///   first sees a lower-priority master, before it preempts;
/// - tracking: while a tracked condition fails, the priority is lowered by `trackWeight` (not below 1).
public struct VRRPStateMachine: Sendable {
    public enum State: String, Sendable, CustomStringConvertible {
        case initialize, backup, master
        public var description: String { rawValue }
    }

    /// Why settings cannot drive a virtual router.
    public enum InvalidSetting: Error, Equatable, Sendable {
        case priority(Int)
        case advertInterval(Int)
        case trackWeight(Int)
        case primaryAddressNotIPv4(IPAddress)
    }

    /// What the machine needs to know about this node.
    public struct Settings: Sendable, Equatable {
        /// 1...255; 255 means this node owns the virtual addresses and becomes master at once.
        public let priority: UInt8
        /// Advertisement_Interval in centiseconds, 1...4095.
        public let advertInterval: UInt16
        /// This node's primary IPv4 address on the interface: the source of its adverts and the tie-breaker.
        public let primaryAddress: IPAddress
        /// Whether a higher-priority backup takes over from a live lower-priority master.
        public let preempt: Bool
        public let preemptDelayNanos: UInt64
        /// Priority lost while tracking fails, 0...254.
        public let trackWeight: UInt8

        public init(
            priority: Int, advertInterval centiseconds: Int, primaryAddress: IPAddress, preempt: Bool = true,
            preemptDelay: Duration = .zero, trackWeight: Int = 0
        ) throws(InvalidSetting) {
            guard (1...255).contains(priority) else { throw .priority(priority) }
            guard (1...Int(VRRPAdvertisement.maxIntervalCentiseconds)).contains(centiseconds) else {
                throw .advertInterval(centiseconds)
            }
            guard (0...254).contains(trackWeight) else { throw .trackWeight(trackWeight) }
            guard primaryAddress.isIPv4 else { throw .primaryAddressNotIPv4(primaryAddress) }
            self.priority = UInt8(priority)
            self.advertInterval = UInt16(centiseconds)
            self.primaryAddress = primaryAddress
            self.preempt = preempt
            let (seconds, attoseconds) = max(preemptDelay, .zero).components
            self.preemptDelayNanos = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
            self.trackWeight = UInt8(trackWeight)
        }
    }

    public enum Input: Sendable, Equatable {
        /// The Startup event.
        case start
        /// The Shutdown event (graceful stop): a master resigns with a priority-0 advert.
        case shutdown
        /// A validated advert from another router (`VRRPPacketValidator` has checked it is for us).
        case advert(from: IPAddress, priority: UInt8, maxAdvertInterval: UInt16)
        /// The armed timer's deadline passed.
        case timerFired
        /// A tracked condition started (`failing: true`) or stopped failing.
        case trackingChanged(failing: Bool)
    }

    public enum Action: Sendable, Equatable {
        case stateChanged(from: State, to: State)
        /// Send an advert with this priority (0 = resign) and our configured interval and addresses.
        case sendAdvert(priority: UInt8)
        case addVirtualAddresses
        case removeVirtualAddresses
        /// Announce the virtual addresses with gratuitous ARP (the driver repeats and refreshes it).
        case sendGratuitousARP
        /// Arm the one timer for this deadline (replacing the previous one).
        case armTimer(deadline: UInt64)
        case cancelTimer
    }

    public let settings: Settings
    public private(set) var state: State = .initialize
    /// Master_Adver_Interval in centiseconds: learnt from the master's adverts while backup.
    public private(set) var masterAdvertInterval: UInt16
    public private(set) var timerDeadline: UInt64?
    public private(set) var trackingFailing = false
    /// Until when a lower-priority master is still accepted (keepalived's preempt_time); nil: not started.
    private var preemptHeldUntil: UInt64?

    public init(settings: Settings) {
        self.settings = settings
        self.masterAdvertInterval = settings.advertInterval
    }

    /// The priority this node advertises and compares with: the configured one, lowered while tracking fails.
    public var effectivePriority: UInt8 {
        guard trackingFailing, settings.trackWeight > 0 else { return settings.priority }
        return UInt8(max(1, Int(settings.priority) - Int(settings.trackWeight)))
    }

    /// Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256, in nanoseconds.
    public var skewTimeNanos: UInt64 {
        (256 - UInt64(effectivePriority)) * Self.nanos(centiseconds: masterAdvertInterval) / 256
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time, in nanoseconds.
    public var masterDownIntervalNanos: UInt64 {
        3 * Self.nanos(centiseconds: masterAdvertInterval) + skewTimeNanos
    }

    static func nanos(centiseconds: UInt16) -> UInt64 { UInt64(centiseconds) * 10_000_000 }

    /// Feeds one input; returns what the driver must do, in order.
    public mutating func handle(_ input: Input, now: UInt64) -> [Action] {
        switch (input, state) {
        case (.start, .initialize):
            if effectivePriority == 255 { return becomeMaster(now: now) }
            masterAdvertInterval = settings.advertInterval
            preemptHeldUntil = settings.preemptDelayNanos > 0 ? now + settings.preemptDelayNanos : nil
            return becomeBackup(now: now)
        case (.start, _):
            return []

        case (.shutdown, .master):
            state = .initialize
            timerDeadline = nil
            return [
                .cancelTimer, .sendAdvert(priority: 0), .removeVirtualAddresses,
                .stateChanged(from: .master, to: .initialize),
            ]
        case (.shutdown, .backup):
            state = .initialize
            timerDeadline = nil
            return [.cancelTimer, .stateChanged(from: .backup, to: .initialize)]
        case (.shutdown, .initialize):
            return []

        case (.timerFired, _):
            guard let deadline = timerDeadline, now >= deadline else { return [] }
            switch state {
            case .master: return [.sendAdvert(priority: effectivePriority), arm(now + ownIntervalNanos)]
            case .backup: return becomeMaster(now: now)
            case .initialize: return []
            }

        case (.advert(let from, let priority, let interval), .backup):
            return backupReceived(from: from, priority: priority, interval: interval, now: now)
        case (.advert(let from, let priority, let interval), .master):
            return masterReceived(from: from, priority: priority, interval: interval, now: now)
        case (.advert, .initialize):
            return []

        case (.trackingChanged(let failing), _):
            let before = effectivePriority
            trackingFailing = failing
            guard state == .master, effectivePriority != before else { return [] }
            // Tell the backups at once, so a higher-priority one can preempt a sick master.
            return [.sendAdvert(priority: effectivePriority), arm(now + ownIntervalNanos)]
        }
    }

    private var ownIntervalNanos: UInt64 { Self.nanos(centiseconds: settings.advertInterval) }

    private mutating func arm(_ deadline: UInt64) -> Action {
        timerDeadline = deadline
        return .armTimer(deadline: deadline)
    }

    private mutating func becomeMaster(now: UInt64) -> [Action] {
        let from = state
        state = .master
        return [
            .stateChanged(from: from, to: .master), .sendAdvert(priority: effectivePriority), .addVirtualAddresses,
            .sendGratuitousARP, arm(now + ownIntervalNanos),
        ]
    }

    private mutating func becomeBackup(now: UInt64) -> [Action] {
        let from = state
        state = .backup
        // Removing is idempotent; at start it clears addresses a crashed earlier run may have left.
        return [.stateChanged(from: from, to: .backup), .removeVirtualAddresses, arm(now + masterDownIntervalNanos)]
    }

    /// RFC 5798 §6.4.2, "If an ADVERTISEMENT is received", plus keepalived's preempt delay.
    private mutating func backupReceived(from: IPAddress, priority: UInt8, interval: UInt16, now: UInt64) -> [Action] {
        if priority == 0 {
            // The master resigned: take over after Skew_Time, so the highest-priority backup goes first.
            return [arm(now + skewTimeNanos)]
        }
        let local = effectivePriority
        let delaying =
            settings.preemptDelayNanos > 0 && preemptHeldUntil.map { $0 > now } ?? true
        guard !settings.preempt || priority >= local || delaying else {
            // Preemption: ignore the lower-priority master; our Master_Down_Timer keeps running.
            return []
        }
        if settings.preemptDelayNanos > 0 {
            if priority >= local {
                preemptHeldUntil = nil
            } else if preemptHeldUntil == nil {
                preemptHeldUntil = now + settings.preemptDelayNanos
            }
        }
        masterAdvertInterval = interval
        return [arm(now + masterDownIntervalNanos)]
    }

    /// RFC 5798 §6.4.3, "If an ADVERTISEMENT is received".
    private mutating func masterReceived(from: IPAddress, priority: UInt8, interval: UInt16, now: UInt64) -> [Action] {
        if priority == 0 {
            // Another master resigned: assert ourselves at once so backups do not take over after Skew_Time.
            return [.sendAdvert(priority: effectivePriority), arm(now + ownIntervalNanos)]
        }
        let local = effectivePriority
        // Ties go to the higher primary address (compared as unsigned numbers, i.e. in network byte order).
        let higher =
            priority > local
            || (priority == local && settings.primaryAddress.bytes.lexicographicallyPrecedes(from.bytes))
        guard higher else { return [] }
        masterAdvertInterval = interval
        state = .backup
        return [
            .stateChanged(from: .master, to: .backup), .removeVirtualAddresses, arm(now + masterDownIntervalNanos),
        ]
    }
}
