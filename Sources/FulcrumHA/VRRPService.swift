import CFulcrumLinux
import Foundation
import FulcrumCore
import Logging
import ServiceLifecycle
import Synchronization

/// Runs one VRRPv3 virtual router: the pure `VRRPStateMachine` driven by a raw-socket transport, holding the
/// virtual addresses while master.
///
/// The router runs on a dedicated thread (poll on the raw socket with the machine's deadline as timeout), so
/// a 10 ms advert interval keeps its timing whatever the cooperative pool is doing. `run()` returns after a
/// graceful shutdown or cancellation, which sends the priority-0 advert and removes the addresses so the
/// backup takes over at once (after its Skew_Time).
public final class VRRPService: Service, Sendable {
    /// What the service has seen; read it for metrics, the admin API and tests.
    public struct Status: Sendable, Equatable {
        public var state: VRRPStateMachine.State = .initialize
        public var effectivePriority: Int = 0
        public var primaryAddress: IPAddress?
        /// The master as last seen: this node while master, the sender of the adverts it obeys while backup.
        public var masterAddress: IPAddress?
        /// Whether tracking lowers the priority now.
        public var trackingFailing = false
        public var transitions: Int = 0
        public var advertsSent: UInt64 = 0
        public var advertsReceived: UInt64 = 0
        public var drops = VRRPDropCounters()
        /// Failed sends, address changes or announcements (each also logged).
        public var systemErrors: UInt64 = 0
        /// Notify commands started, failed (non-zero exit or no start) and killed at their timeout.
        public var notifyStarted = 0
        public var notifyFailed = 0
        public var notifyTimedOut = 0
    }

    private struct Control {
        var stopRequested = false
        var trackingFailing = false
        /// The write end of the thread's wake-up pipe, once it exists.
        var wakeDescriptor: Int32?
        var status = Status()
    }

    public let settings: VRRPInstanceSettings
    private let logger: Logger
    private let control = Mutex(Control())
    private let notifier: VRRPNotifier?

    private let onTransition: (@Sendable (VRRPStateMachine.State) -> Void)?

    /// - Parameter onTransition: called on the router's thread after each state change (keep it short): the
    ///   packet plane uses it to start or stop answering ARP for addresses it serves without the kernel.
    public init(
        settings: VRRPInstanceSettings, logger: Logger = Logger(label: "fulcrum.ha"),
        onTransition: (@Sendable (VRRPStateMachine.State) -> Void)? = nil
    ) {
        self.settings = settings
        self.onTransition = onTransition
        var logger = logger
        logger[metadataKey: "vrrp.vrid"] = "\(settings.virtualRouterId)"
        logger[metadataKey: "vrrp.interface"] = "\(settings.interface)"
        self.logger = logger
        notifier = settings.notify.map { VRRPNotifier(command: $0, timeout: settings.notifyTimeout, logger: logger) }
    }

    public var status: Status {
        var status = control.withLock { $0.status }
        if let counts = notifier?.snapshot {
            status.notifyStarted = counts.started
            status.notifyFailed = counts.failed
            status.notifyTimedOut = counts.timedOut
        }
        return status
    }

    /// Tracking: while `failing`, the router's priority is lowered by `trackWeight` (a master re-advertises
    /// at once, so a healthier backup can preempt).
    public func setTracking(failing: Bool) {
        control.withLock { $0.trackingFailing = failing }
        wake()
    }

    public func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let thread = Thread { [self] in
                    continuation.resume(with: Result { try self.runLoop() })
                }
                thread.name = "fulcrum-vrrp-\(settings.virtualRouterId)"
                thread.start()
            }
        } onCancelOrGracefulShutdown: {
            self.control.withLock { $0.stopRequested = true }
            self.wake()
        }
    }

    private func wake() {
        control.withLock { control in
            if let fd = control.wakeDescriptor {
                var byte: UInt8 = 1
                _ = write(fd, &byte, 1)
            }
        }
    }

    /// The router's thread: everything below runs here only.
    private func runLoop() throws {
        try settings.validate()
        if let path = settings.networkNamespacePath {
            let rc = path.withCString { fulcrum_enter_netns($0) }
            if rc < 0 { throw VRRPSystemError(operation: "setns(\(path))", errno: -rc) }
        }
        let virtualSet = Set(settings.virtualAddresses.map(\.address))
        var advert = try settings.makeAdvert()
        let link = try VRRPLinuxLink(
            interface: settings.interface, primaryAddress: settings.primaryAddress, excluding: virtualSet,
            multicast: settings.unicastPeers.isEmpty)
        var machine = VRRPStateMachine(settings: try settings.makeMachineSettings(primaryAddress: link.primaryAddress))
        let validator = VRRPPacketValidator(
            virtualRouterId: advert.virtualRouterId, expectedAddresses: virtualSet,
            localAddresses: [link.primaryAddress])
        let destinations = settings.unicastPeers.isEmpty ? [FulcrumHA.vrrpMulticastGroup] : settings.unicastPeers

        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { throw VRRPSystemError(operation: "pipe", errno: errno) }
        for fd in pipeEnds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        control.withLock {
            $0.wakeDescriptor = pipeEnds[1]
            $0.status.primaryAddress = link.primaryAddress
        }
        defer {
            control.withLock { $0.wakeDescriptor = nil }
            close(pipeEnds[0])
            close(pipeEnds[1])
        }
        logger.info(
            "VRRP starting",
            metadata: ["vrrp.priority": "\(settings.priority)", "vrrp.source": "\(link.primaryAddress)"])

        let refreshNanos = settings.gratuitousARPRefresh.map(Self.nanos)
        var nextRefresh: UInt64?

        func perform(_ actions: [VRRPStateMachine.Action], now: UInt64) {
            var errors: UInt64 = 0
            var sent: UInt64 = 0
            for action in actions {
                switch action {
                case .sendAdvert(let priority):
                    advert = advert.with(priority: priority)
                    for destination in destinations {
                        guard let packet = advert.encodePacket(source: link.primaryAddress, destination: destination)
                        else { continue }
                        if let code = link.send(packet: packet, to: destination) {
                            errors += 1
                            logger.debug(
                                "VRRP advert not sent", metadata: ["errno": "\(code)", "to": "\(destination)"])
                        } else {
                            sent += 1
                        }
                    }
                case .addVirtualAddresses, .removeVirtualAddresses:
                    let present = action == .addVirtualAddresses
                    for vip in settings.kernelAddresses {
                        if let code = link.setAddress(vip, present: present) {
                            errors += 1
                            logger.error(
                                "VRRP could not \(present ? "add" : "remove") a virtual address",
                                metadata: ["vip": "\(vip)", "error": "\(String(cString: strerror(code)))"])
                        }
                    }
                case .sendGratuitousARP:
                    errors += announce(link)
                    nextRefresh = refreshNanos.map { now + $0 }
                case .stateChanged(let from, let to):
                    logger.info("VRRP state changed", metadata: ["from": "\(from)", "to": "\(to)"])
                    if to != .master { nextRefresh = nil }
                    notifier?.notify(to)
                    onTransition?(to)
                    control.withLock {
                        $0.status.transitions += 1
                        if to == .master { $0.status.masterAddress = link.primaryAddress }
                        if to == .initialize { $0.status.masterAddress = nil }
                    }
                case .armTimer, .cancelTimer:
                    break  // the machine keeps its deadline; the loop below polls until it
                }
            }
            let state = machine.state
            let priority = Int(machine.effectivePriority)
            control.withLock {
                $0.status.state = state
                $0.status.effectivePriority = priority
                $0.status.trackingFailing = machine.trackingFailing
                $0.status.advertsSent += sent
                $0.status.systemErrors += errors
            }
        }

        perform(machine.handle(.start, now: monotonicNanos()), now: monotonicNanos())
        if machine.state != .master {
            // A node that crashed as master left the addresses on the interface: a backup must not answer for
            // them (keepalived clears them at start too).
            for vip in settings.kernelAddresses { _ = link.setAddress(vip, present: false) }
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var fds = [
            pollfd(fd: link.receiveDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: pipeEnds[0], events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let (stop, failing) = control.withLock { ($0.stopRequested, $0.trackingFailing) }
            if stop {
                perform(machine.handle(.shutdown, now: monotonicNanos()), now: monotonicNanos())
                logger.info("VRRP stopped")
                return
            }
            if failing != machine.trackingFailing {
                let now = monotonicNanos()
                perform(machine.handle(.trackingChanged(failing: failing), now: now), now: now)
            }

            // Sleep until the machine's deadline or the next refresh, at most a second (a bound, not a tick).
            var now = monotonicNanos()
            let wakeAt = [machine.timerDeadline, nextRefresh].compactMap { $0 }.min() ?? now + 1_000_000_000
            let waitMillis = wakeAt > now ? min(1000, Int32((wakeAt - now + 999_999) / 1_000_000)) : 0
            fds[0].revents = 0
            fds[1].revents = 0
            let ready = poll(&fds, nfds_t(fds.count), waitMillis)
            if ready < 0 && errno != EINTR {
                let error = VRRPSystemError(operation: "poll", errno: errno)
                // Give the role up cleanly (priority 0, addresses removed) rather than hold it blind.
                perform(machine.handle(.shutdown, now: monotonicNanos()), now: monotonicNanos())
                throw error
            }
            if fds[1].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                while read(pipeEnds[0], &drain, drain.count) > 0 {}
            }
            if fds[0].revents != 0 {
                // A bounded batch per wake-up, so a flood cannot starve the timers.
                for _ in 0..<64 {
                    guard let count = link.receive(into: &buffer) else { break }
                    switch validator.validate(buffer[0..<count]) {
                    case .failure(let reason):
                        control.withLock { $0.status.drops.record(reason) }
                    case .success(let received):
                        control.withLock { $0.status.advertsReceived += 1 }
                        now = monotonicNanos()
                        let input = VRRPStateMachine.Input.advert(
                            from: received.source, priority: received.advert.priority,
                            maxAdvertInterval: received.advert.maxAdvertInterval)
                        perform(machine.handle(input, now: now), now: now)
                        if machine.state == .backup, received.advert.priority > 0 {
                            control.withLock { $0.status.masterAddress = received.source }
                        }
                    }
                }
            }
            now = monotonicNanos()
            if let deadline = machine.timerDeadline, now >= deadline {
                perform(machine.handle(.timerFired, now: now), now: now)
            }
            if let refresh = nextRefresh, now >= refresh, machine.state == .master {
                perform([.sendGratuitousARP], now: now)
            }
        }
    }

    private func announce(_ link: VRRPLinuxLink) -> UInt64 {
        var errors: UInt64 = 0
        for vip in settings.virtualAddresses {
            for _ in 0..<max(1, settings.gratuitousARPRepeat) {
                if let code = link.announce(vip.address) {
                    errors += 1
                    logger.debug("gratuitous ARP not sent", metadata: ["vip": "\(vip)", "errno": "\(code)"])
                }
            }
        }
        return errors
    }

    private static func nanos(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = max(duration, .milliseconds(10)).components
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }
}
