import CFulcrumLinux
import Foundation
import FulcrumCore
import Glibc
import Logging
import ServiceLifecycle
import Synchronization

/// Where the active's flows come from: the packet plane's mirroring hook (`FlowMirrorPort` per virtual
/// service: a bounded change feed the workers fill, and a snapshot they take between batches). Called on the
/// mirror's sender thread only.
public protocol MirrorFlowSource: Sendable {
    /// Turns the workers' change feeds on (this node is master and has a peer) or off (nobody drains them).
    func setPublishing(_ on: Bool)
    /// Every live flow; the feeds' pending changes are superseded by it.
    func snapshotFlows() -> [MirroredFlow]
    /// The changes published since the last drain; `resyncNeeded` when a feed overflowed and dropped some
    /// (the sender then takes a snapshot instead).
    func drainChanges() -> MirrorFlowChanges
}

/// Flow changes drained from the packet plane's feeds, tagged with their virtual service.
public struct MirrorFlowChanges: Sendable, Equatable {
    public var upserts: [MirroredFlow]
    public var removals: [MirroredFlowRemoval]
    public var resyncNeeded: Bool

    public init(upserts: [MirroredFlow] = [], removals: [MirroredFlowRemoval] = [], resyncNeeded: Bool = false) {
        self.upserts = upserts
        self.removals = removals
        self.resyncNeeded = resyncNeeded
    }
}

/// Where the standby's accepted changes go: the packet plane installs them in its flow tables, so that
/// after a takeover established flows keep their backend. Called on the mirror's receiver thread.
public protocol MirrorFlowSink: Sendable {
    func apply(_ change: MirrorReceiver.Change)
}

/// Mirroring over TCP: while `isActive` (the VRRP master), streams a snapshot and then batched updates to
/// every peer; always accepts connections from the peers and applies what they send to `sink`.
///
/// Two threads, blocking sockets with timeouts: the data path only ever touches the packet plane's bounded
/// change feeds (which never wait), so a slow or dead standby costs the active nothing but a resnapshot later. Connections from an
/// address that is not a configured peer are closed and counted; messages that fail the MAC or replay
/// check are dropped and counted (`MirrorReceiver`).
public final class MirrorService: Service, Sendable {
    public struct Settings: Sendable {
        public var listen: Endpoint
        public var peers: [Endpoint]
        public var key: MirrorKey
        /// How often queued changes are sent (one message per batch).
        public var batchInterval: Duration
        /// Changes per update message, and flows per snapshot part.
        public var batchLimit: Int
        public var reconnectInterval: Duration
        /// Bound on the standby's mirrored table.
        public var capacity: Int

        public init(
            listen: Endpoint, peers: [Endpoint], key: MirrorKey, batchInterval: Duration = .milliseconds(50),
            batchLimit: Int = 4096, reconnectInterval: Duration = .seconds(1), capacity: Int = 1 << 20
        ) {
            self.listen = listen
            self.peers = peers
            self.key = key
            self.batchInterval = batchInterval
            self.batchLimit = batchLimit
            self.reconnectInterval = reconnectInterval
            self.capacity = capacity
        }
    }

    /// Counters for the admin API and metrics.
    public struct Counters: Sendable, Equatable {
        public var messagesSent: UInt64 = 0
        public var flowsSent: UInt64 = 0
        public var snapshotsSent: UInt64 = 0
        public var sendFailures: UInt64 = 0
        public var connectedPeers: UInt64 = 0
        /// Connections refused because the remote address is not a configured peer.
        public var unknownPeers: UInt64 = 0
        /// Connections from a peer refused because it already had too many open.
        public var refusedConnections: UInt64 = 0
        /// Connections closed because their byte stream did not frame (out of sync or oversized).
        public var badFrames: UInt64 = 0
        public var received = MirrorReceiver.Counters()
        public var mirroredFlows: UInt64 = 0
        /// Snapshots sent because a change feed overflowed (changes were dropped, the standby resynchronised).
        public var resyncs: UInt64 = 0
    }

    public let settings: Settings
    private let source: any MirrorFlowSource
    private let sink: any MirrorFlowSink
    private let isActive: @Sendable () -> Bool
    private let logger: Logger
    private let state = Mutex(Shared())

    private struct Shared {
        var counters = Counters()
        var stop = false
        var boundPort: Int?
        var wake: [Int32] = []
    }

    public init(
        settings: Settings, source: any MirrorFlowSource, sink: any MirrorFlowSink,
        logger: Logger = Logger(label: "fulcrum.ha.mirror"), isActive: @escaping @Sendable () -> Bool
    ) {
        self.settings = settings
        self.source = source
        self.sink = sink
        self.isActive = isActive
        self.logger = logger
    }

    public var counters: Counters { state.withLock { $0.counters } }

    /// The port the listener is bound to once running (the settings may say 0).
    public var boundPort: Int? { state.withLock { $0.boundPort } }

    public func run() async throws {
        let listener = try Self.listen(on: settings.listen)
        state.withLock { $0.boundPort = listener.port }
        let wakePipe = try Self.makePipe()
        state.withLock { $0.wake = [wakePipe.write] }
        defer {
            close(wakePipe.read)
            close(wakePipe.write)
        }
        await withTaskCancellationOrGracefulShutdownHandler {
            await withDiscardingTaskGroup { threads in
                threads.addTask {
                    await self.onThread("fulcrum-mirror-rx") { self.receiveLoop(listener.fd, wakePipe.read) }
                }
                threads.addTask { await self.onThread("fulcrum-mirror-tx") { self.sendLoop(wakePipe.read) } }
            }
        } onCancelOrGracefulShutdown: {
            let fds = self.state.withLock { state -> [Int32] in
                state.stop = true
                return state.wake
            }
            for fd in fds {
                var byte: UInt8 = 1
                _ = write(fd, &byte, 1)
            }
        }
        close(listener.fd)
    }

    private func onThread(_ name: String, _ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                body()
                continuation.resume()
            }
            thread.name = name
            thread.start()
        }
    }

    private var stopped: Bool { state.withLock { $0.stop } }

    private func count(_ change: (inout Counters) -> Void) { state.withLock { change(&$0.counters) } }

    // MARK: Sending (the active)

    private func sendLoop(_ wake: Int32) {
        // A larger epoch each run: the standby then accepts our sequence numbers starting again at 1.
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let epoch = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        let sender = UInt64(truncatingIfNeeded: StableHash.hash(settings.listen.description))
        var sequence: UInt64 = 0
        var connections: [Int: Int32] = [:]
        var nextAttempt: [Int: UInt64] = [:]
        let intervalMillis = Int32(max(1, Self.millis(settings.batchInterval)))
        defer { for fd in connections.values { close(fd) } }

        func send(_ body: MirrorBody) {
            sequence += 1
            let frame = MirrorMessage(sender: sender, epoch: epoch, sequence: sequence, body: body).encode(
                key: settings.key)
            for (peer, fd) in connections {
                if !Self.writeAll(fd, frame) {
                    close(fd)
                    connections[peer] = nil
                    nextAttempt[peer] = monotonicNanos() + Self.nanos(settings.reconnectInterval)
                    count { $0.sendFailures += 1 }
                    logger.warning("mirror peer lost", metadata: ["peer": "\(settings.peers[peer])"])
                }
            }
            count {
                $0.messagesSent += 1
                $0.connectedPeers = UInt64(connections.count)
            }
        }

        func sendSnapshot() {
            let flows = source.snapshotFlows()
            var start = 0
            repeat {
                let end = min(flows.count, start + settings.batchLimit)
                send(.snapshot(flows: Array(flows[start..<end]), last: end == flows.count))
                start = end
            } while start < flows.count
            count {
                $0.snapshotsSent += 1
                $0.flowsSent += UInt64(flows.count)
            }
        }

        var publishing = false
        defer { source.setPublishing(false) }
        while !stopped {
            if isActive() {
                let now = monotonicNanos()
                var connected = false
                for (index, peer) in settings.peers.enumerated() where connections[index] == nil {
                    guard nextAttempt[index].map({ now >= $0 }) ?? true else { continue }
                    if let fd = Self.connect(to: peer, timeoutMillis: 500) {
                        connections[index] = fd
                        connected = true
                        logger.info("mirror peer connected", metadata: ["peer": "\(peer)"])
                    } else {
                        nextAttempt[index] = now + Self.nanos(settings.reconnectInterval)
                    }
                }
                if connections.isEmpty {
                    if publishing {
                        source.setPublishing(false)
                        publishing = false
                    }
                } else {
                    // Publishing starts before the snapshot, so no change falls between the two.
                    if !publishing {
                        source.setPublishing(true)
                        publishing = true
                    }
                    let changes = source.drainChanges()
                    if connected || changes.resyncNeeded {
                        if changes.resyncNeeded && !connected { count { $0.resyncs += 1 } }
                        sendSnapshot()
                    } else {
                        var upserts = changes.upserts[...]
                        var removals = changes.removals[...]
                        while !upserts.isEmpty || !removals.isEmpty {
                            let u = upserts.prefix(settings.batchLimit)
                            let r = removals.prefix(max(0, settings.batchLimit - u.count))
                            upserts = upserts.dropFirst(u.count)
                            removals = removals.dropFirst(r.count)
                            send(.update(upserts: Array(u), removals: Array(r)))
                            count { $0.flowsSent += UInt64(u.count + r.count) }
                        }
                    }
                }
            } else {
                if publishing {
                    source.setPublishing(false)
                    publishing = false
                }
                if !connections.isEmpty {
                    for fd in connections.values { close(fd) }
                    connections = [:]
                    count { $0.connectedPeers = 0 }
                }
            }
            var fds = [pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 1, intervalMillis)
        }
    }

    // MARK: Receiving (the standby)

    private func receiveLoop(_ listener: Int32, _ wake: Int32) {
        var receiver = MirrorReceiver(key: settings.key, capacity: settings.capacity)
        var buffers: [Int32: [UInt8]] = [:]
        let allowed = Set(settings.peers.map(\.address))
        defer { for fd in buffers.keys { close(fd) } }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !stopped {
            var fds = [pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
            for fd in buffers.keys { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            guard poll(&fds, nfds_t(fds.count), 1000) > 0 else { continue }
            if fds[1].revents != 0, let (fd, address) = Self.accept(listener) {
                if !allowed.contains(address) {
                    close(fd)
                    let refused = state.withLock {
                        $0.counters.unknownPeers += 1
                        return $0.counters.unknownPeers
                    }
                    // Logged at 1, 2, 4, 8, ... so a flood of connections cannot flood the log.
                    if refused & (refused - 1) == 0 {
                        logger.warning(
                            "mirror connection from an unknown peer refused",
                            metadata: ["from": "\(address)", "refused": "\(refused)"])
                    }
                } else if buffers.count >= 4 * max(1, settings.peers.count) {
                    // A peer reconnecting leaves a few stale connections until their reads fail; beyond that
                    // connections are refused, so memory stays bounded.
                    close(fd)
                    count { $0.refusedConnections += 1 }
                } else {
                    buffers[fd] = []
                }
            }
            for entry in fds.dropFirst(2) where entry.revents != 0 {
                let fd = entry.fd
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                    close(fd)
                    buffers[fd] = nil
                    continue
                }
                guard n > 0 else { continue }
                buffers[fd]!.append(contentsOf: chunk[0..<n])
                var closed = false
                while let buffer = buffers[fd], buffer.count >= MirrorMessage.headerLength {
                    let length: Int
                    do {
                        length = try MirrorMessage.frameLength(header: buffer)
                    } catch {
                        close(fd)
                        buffers[fd] = nil
                        closed = true
                        count { $0.badFrames += 1 }
                        break
                    }
                    guard buffer.count >= length else { break }
                    let frame = Array(buffer[0..<length])
                    buffers[fd]!.removeFirst(length)
                    if let change = receiver.receive(frame) { sink.apply(change) }
                }
                if closed { continue }
            }
            let received = receiver.counters
            let flows = UInt64(receiver.table.count)
            count {
                $0.received = received
                $0.mirroredFlows = flows
            }
        }
    }

    // MARK: Sockets

    private static func sockaddr(_ endpoint: Endpoint) -> sockaddr_in? {
        guard case .v4(let value) = endpoint.address else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = endpoint.port.bigEndian
        address.sin_addr.s_addr = value.bigEndian
        return address
    }

    private static func listen(on endpoint: Endpoint) throws -> (fd: Int32, port: Int) {
        guard var address = sockaddr(endpoint) else {
            throw VRRPSystemError(operation: "mirror listen \(endpoint): IPv4 only", errno: EAFNOSUPPORT)
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VRRPSystemError(operation: "mirror socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0, Glibc.listen(fd, 16) == 0 else {
            let code = errno
            close(fd)
            throw VRRPSystemError(operation: "mirror listen on \(endpoint)", errno: code)
        }
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: bound.sin_port)))
    }

    private static func accept(_ listener: Int32) -> (Int32, IPAddress)? {
        var remote = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = withUnsafeMutablePointer(to: &remote) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) {
                Glibc.accept(listener, $0, &length)
            }
        }
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return (fd, .v4(UInt32(bigEndian: remote.sin_addr.s_addr)))
    }

    /// A blocking connection with a connect and send timeout, or nil.
    private static func connect(to endpoint: Endpoint, timeoutMillis: Int) -> Int32? {
        guard var address = sockaddr(endpoint) else { return nil }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var timeout = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        var attempts = 0
        while offset < bytes.count, attempts < 10_000 {
            attempts += 1
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return offset == bytes.count
    }

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw VRRPSystemError(operation: "pipe", errno: errno) }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(ends[1], F_SETFL, fcntl(ends[1], F_GETFL) | O_NONBLOCK)
        return (ends[0], ends[1])
    }

    static func nanos(_ d: Duration) -> UInt64 {
        let (s, a) = d.components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, a) / 1_000_000_000)
    }

    static func millis(_ d: Duration) -> Int { Int(nanos(d) / 1_000_000) }
}
