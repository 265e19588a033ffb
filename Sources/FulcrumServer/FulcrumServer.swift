import FulcrumAdmin
import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import FulcrumHA
import FulcrumHealth
import FulcrumProxy
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// The composition root: builds pools, listeners and health checkers from a config, keeps them
/// running, applies reloads without dropping connections, and drains on graceful shutdown.
///
/// `start` binds everything (so a bad port fails before the service runs); `run` serves until
/// graceful shutdown (SIGTERM/SIGINT through the `ServiceGroup`), then stops accepting and lets
/// connections finish for each listener's `timeouts.drain`.
public actor FulcrumServer: Service {
    public let group: any EventLoopGroup
    let logger: Logger
    private let configPath: String?
    public private(set) var config: FulcrumConfig
    private var poolsByName: [String: Pool] = [:]
    private var listenersByName: [String: ProxyListener] = [:]
    /// The admin API, when the config has an `admin:` section.
    private var admin: AdminServer?
    /// The access log, when the config has an `access_log:` section.
    private var accessLog: AccessLog?
    /// Access logs replaced by a reload: closed once connections that may still write to them drained.
    private let retiredLogs: AsyncStream<(AccessLog, Duration)>
    private let retiredLogInput: AsyncStream<(AccessLog, Duration)>.Continuation
    /// The packet plane's workers (`FulcrumServer+Packet.swift`).
    let packetPlane = PacketPlane()
    /// Run-time changes made through the admin API (an overlay on the config file; unused in a cluster).
    var runtime = RuntimeState()
    /// The shared store and membership, with `cluster: { store: etcd }` (FulcrumServer+Cluster.swift).
    var clusterNode: ClusterNode?
    /// The store revision of the shared configuration running now, and of the newest one processed.
    var clusterAppliedRevision: Int64 = 0
    var clusterSeenRevision: Int64 = 0
    /// Listeners taken out by a reload, drained by `run`.
    private let retired: AsyncStream<(ProxyListener, Duration)>
    private let retiredInput: AsyncStream<(ProxyListener, Duration)>.Continuation
    /// Each element is the complete set of health checkers to run; a reload publishes a new set.
    private let checkerSets: AsyncStream<[HealthChecker]>
    private let checkerSetInput: AsyncStream<[HealthChecker]>.Continuation
    /// The VRRP router and its tracking, when the config has `ha.vrrp` (`FulcrumServer+HA.swift`).
    let highAvailability: HighAvailability?

    private init(
        config: FulcrumConfig, configPath: String?, group: any EventLoopGroup, logger: Logger,
        highAvailability: HighAvailability?
    ) {
        self.highAvailability = highAvailability
        self.config = config
        self.configPath = configPath
        self.group = group
        self.logger = logger
        (retired, retiredInput) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        (retiredLogs, retiredLogInput) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        (checkerSets, checkerSetInput) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Builds the pools and binds every listener of `config`.
    public static func start(
        config: FulcrumConfig, configPath: String? = nil, group: any EventLoopGroup, logger: Logger
    ) async throws -> FulcrumServer {
        _ = MetricsBootstrap.registry
        if config.ha?.mirror != nil && config.ha?.vrrp == nil {
            throw HAConfigurationError(message: "ha.mirror needs ha.vrrp (the VRRP master is the side that sends)")
        }
        let highAvailability = try config.ha?.vrrp.map {
            try HighAvailability(
                config: $0, mirror: config.ha?.mirror, virtualServices: config.virtualServices,
                logger: Logger(label: "fulcrum.ha"))
        }
        let server = FulcrumServer(
            config: config, configPath: configPath, group: group, logger: logger, highAvailability: highAvailability)
        // In a cluster the pools come from etcd (and admin changes go there), not from the file.
        let initial = try await server.joinCluster(config)
        if let stateFile = config.admin?.stateFile, await server.clusterNode == nil {
            await server.loadState(from: stateFile)
        }
        do {
            try await server.apply(initial, initial: true)
            if let adminConfig = config.admin {
                try await server.startAdmin(adminConfig)
            }
        } catch {
            await server.closeAll()
            throw error
        }
        return server
    }

    // MARK: Reading the running state

    public func pool(named name: String) -> Pool? { poolsByName[name] }

    /// The port a listener is bound to (its config may say 0).
    public func port(ofListener name: String) -> Int? { listenersByName[name]?.port }

    public var listenerNames: [String] { listenersByName.keys.sorted() }

    /// The port the admin API is bound to, when it runs.
    public var adminPort: Int? { admin?.port }

    private func loadState(from path: String) {
        do {
            runtime = try RuntimeState.load(from: path)
        } catch {
            logger.error(
                "state file unreadable: starting from the config file alone; the next change rewrites it",
                metadata: ["file": .string(path), "error": "\(error)"])
        }
    }

    private func startAdmin(_ adminConfig: AdminConfig) async throws {
        admin = try await AdminServer.start(config: adminConfig, control: self, group: group, logger: logger)
    }

    func listener(named name: String) -> ProxyListener? { listenersByName[name] }

    // MARK: Service

    public func run() async throws {
        await withDiscardingTaskGroup { tasks in
            tasks.addTask { await self.tickPools() }
            tasks.addTask { await self.superviseHealthCheckers() }
            tasks.addTask { await self.drainRetiredListeners() }
            tasks.addTask { await self.closeRetiredLogs() }
            tasks.addTask { await self.reloadOnHangup() }
            let admin = self.admin
            if let admin { tasks.addTask { await admin.run() } }
            if let clusterNode { tasks.addTask { await self.followCluster(clusterNode) } }
            // Both see graceful shutdown at once; the group below waits for the router's priority-0 advert
            // and address removal, so the standby takes over before the listeners drain.
            if let highAvailability {
                tasks.addTask { await self.runHighAvailability(highAvailability, logger: self.logger) }
            }
            // Serve until graceful shutdown is requested (or the task is cancelled).
            try? await gracefulShutdown()
            await clusterNode?.leave()
            packetPlane.stopAll()
            await admin?.shutdown()
            tasks.cancelAll()
        }
        retiredInput.finish()
        retiredLogInput.finish()
        checkerSetInput.finish()
        await shutdownListeners()
        // After the listeners: the last connections have logged their lines.
        await accessLog?.closeAsync()
        accessLog = nil
    }

    /// The running access log, if any (tests read its counters).
    public var currentAccessLog: AccessLog? { accessLog }

    // MARK: Reload

    /// Re-reads the config file and applies it. An invalid file is logged, one line per problem,
    /// and the running config keeps serving. Returns whether the new config was applied.
    @discardableResult
    public func reloadFromFile() async -> Bool {
        if clusterNode != nil { return await reloadFromCluster() }
        guard let configPath else {
            logger.warning("reload requested but the config did not come from a file")
            return false
        }
        let text: String
        do {
            text = try readFile(configPath)
        } catch {
            logger.error(
                "reload rejected: cannot read config", metadata: ["file": .string(configPath), "error": "\(error)"])
            ControlPlaneMetrics.reload(applied: false)
            return false
        }
        do {
            let newConfig = try ConfigLoader.load(yaml: text)
            return await reload(newConfig)
        } catch {
            for diagnostic in error.diagnostics {
                logger.error("reload rejected: \(diagnostic)", metadata: ["file": .string(configPath)])
            }
            logger.error("reload rejected; the running config keeps serving")
            ControlPlaneMetrics.reload(applied: false)
            return false
        }
    }

    /// Applies a validated config: pools are reconfigured in place (surviving backends keep their
    /// state and connections), listeners whose bind and mode are unchanged switch route at once,
    /// others are bound anew and the old ones drain.
    @discardableResult
    public func reload(_ newConfig: FulcrumConfig) async -> Bool {
        do {
            try await apply(newConfig, initial: false)
            ControlPlaneMetrics.reload(applied: true)
            logger.info(
                "config reloaded",
                metadata: ["pools": "\(newConfig.pools.count)", "listeners": "\(newConfig.listeners.count)"])
            return true
        } catch {
            logger.error("reload failed; the running config keeps serving", metadata: ["error": "\(error)"])
            ControlPlaneMetrics.reload(applied: false)
            return false
        }
    }

    private func apply(_ fileConfig: FulcrumConfig, initial: Bool) async throws {
        // Pools are built from the file plus the run-time changes kept in the state file.
        let newConfig = runtime.applied(to: fileConfig)
        if !initial, newConfig.workers != config.workers {
            logger.warning("'workers' changes take effect on restart, not on reload")
        }
        if !initial, newConfig.admin != config.admin {
            logger.warning("'admin' changes take effect on restart, not on reload")
        }
        let now = MonotonicClock.now()
        // The access log first: a path that cannot be opened rejects the config like any other error.
        let newAccessLog: AccessLog?
        var replacedLog: AccessLog?
        if let logConfig = newConfig.accessLog {
            if let running = accessLog, running.path == logConfig.path, running.format == logConfig.format,
                running.capacity == logConfig.bufferLines
            {
                newAccessLog = running
            } else {
                newAccessLog = try AccessLog.open(logConfig) { ControlPlaneMetrics.accessLogDropped($0) }
                replacedLog = accessLog
            }
        } else {
            newAccessLog = nil
            replacedLog = accessLog
        }
        var accessLogCommitted = false
        defer {
            // A config that fails further on must not leave a second writer thread running. The writer
            // has nothing queued yet, so this close is immediate.
            if !accessLogCommitted, let newAccessLog, newAccessLog !== accessLog { newAccessLog.close() }
        }
        // Build new pools and bind new listeners first, so a failure leaves the running state untouched.
        var newPools: [String: Pool] = [:]
        for poolConfig in newConfig.pools where poolsByName[poolConfig.name] == nil {
            let pool = try Pool(
                name: poolConfig.name, settings: poolConfig.poolSettings, backends: poolConfig.backendSpecs, now: now)
            pool.addObserver { [logger, highAvailability] pool, events in
                PoolEventText.log(events, of: pool, to: logger)
                ControlPlaneMetrics.record(events, pool: pool.name)
                highAvailability?.poolChanged(pool)
            }
            newPools[poolConfig.name] = pool
        }
        func pool(_ name: String) -> Pool? { poolsByName[name] ?? newPools[name] }

        var bound: [String: ProxyListener] = [:]
        var unbound: [String] = []
        do {
            for listenerConfig in newConfig.listeners {
                if let existing = listenersByName[listenerConfig.name],
                    existing.context.current.config.bind == listenerConfig.bind,
                    existing.context.current.config.mode == listenerConfig.mode
                {
                    continue
                }
                guard let target = pool(listenerConfig.pool),
                    let poolConfig = newConfig.pool(named: listenerConfig.pool)
                else { continue }
                let context = ListenerContext(
                    route: ListenerRoute(
                        config: listenerConfig, pool: target, hashKey: poolConfig.effectiveHashKey,
                        accessLog: newAccessLog),
                    logger: logger)
                do {
                    bound[listenerConfig.name] = try await ProxyListener.bind(
                        listenerConfig.bind, group: group, context: context,
                        childInitializer: Self.childInitializer(for: listenerConfig.mode))
                } catch  where highAvailability != nil && listenersByName[listenerConfig.name] == nil {
                    // In a pair a listener that cannot bind lowers this node's priority (tracking) instead
                    // of stopping it, so the peer serves; the next reload tries the bind again.
                    logger.error(
                        "listener not bound; VRRP tracking lowers this node's priority",
                        metadata: ["listener": .string(listenerConfig.name), "error": "\(error)"])
                    unbound.append(listenerConfig.name)
                }
            }
        } catch {
            for listener in bound.values { await listener.shutdown(grace: .zero) }
            throw error
        }

        // Commit: reconfigure surviving pools, switch routes, retire what is gone.
        for poolConfig in newConfig.pools {
            if let existing = poolsByName[poolConfig.name] {
                try existing.reconfigure(
                    settings: poolConfig.poolSettings, backends: poolConfig.backendSpecs, now: now)
            }
        }
        poolsByName.merge(newPools) { old, _ in old }
        for listenerConfig in newConfig.listeners {
            guard let target = poolsByName[listenerConfig.pool],
                let poolConfig = newConfig.pool(named: listenerConfig.pool)
            else { continue }
            if let fresh = bound[listenerConfig.name] {
                if let old = listenersByName[listenerConfig.name] {
                    retiredInput.yield((old, old.context.current.config.timeouts.drain))
                }
                listenersByName[listenerConfig.name] = fresh
            } else if let existing = listenersByName[listenerConfig.name] {
                existing.context.update(
                    ListenerRoute(
                        config: listenerConfig, pool: target, hashKey: poolConfig.effectiveHashKey,
                        accessLog: newAccessLog))
            }
        }
        let keptListeners = Set(newConfig.listeners.map(\.name))
        for (name, listener) in listenersByName where !keptListeners.contains(name) {
            retiredInput.yield((listener, listener.context.current.config.timeouts.drain))
            listenersByName[name] = nil
        }
        let keptPools = Set(newConfig.pools.map(\.name))
        for name in poolsByName.keys where !keptPools.contains(name) { poolsByName[name] = nil }
        config = fileConfig
        accessLog = newAccessLog
        accessLogCommitted = true
        if let replacedLog {
            // Connections that started before the reload keep their route, and its log, until they end.
            let grace = newConfig.listeners.map(\.timeouts.drain).max() ?? .zero
            retiredLogInput.yield((replacedLog, grace + .seconds(1)))
        }
        // Admin states: the overlay's (already in `newConfig`), else the config's, else enabled.
        for poolConfig in newConfig.pools {
            for backend in poolConfig.backends {
                _ = try? poolsByName[poolConfig.name]?.setAdmin(
                    backend.address, to: backend.state ?? .enabled, now: now)
            }
        }
        let owner = highAvailability.map { ha in { (vs: VirtualServiceConfig) in ha.answersARP(for: vs) } }
        try packetPlane.apply(
            newConfig, pools: poolsByName, initial: initial, logger: logger, answersARP: owner ?? { _ in true })
        checkerSetInput.yield(makeHealthCheckers())
        updateHATracking(config: newConfig, pools: poolsByName, unboundListeners: unbound)
    }

    static func childInitializer(for mode: ListenerConfig.Mode) -> ProxyListener.ChildInitializer {
        switch mode {
        case .tcp: return { channel, context in try TCPProxy.childInitializer(channel: channel, context: context) }
        case .http: return { channel, context in try HTTPProxy.childInitializer(channel: channel, context: context) }
        }
    }

    // MARK: Background work

    private func makeHealthCheckers() -> [HealthChecker] {
        config.pools.compactMap { poolConfig in
            guard let check = poolConfig.healthCheck, let pool = poolsByName[poolConfig.name] else { return nil }
            var checkerLogger = logger
            checkerLogger[metadataKey: "pool"] = .string(poolConfig.name)
            return HealthChecker(pool: pool, config: check, eventLoopGroup: group, logger: checkerLogger)
        }
    }

    /// Runs the current set of health checkers; a reload replaces the whole set (pool health state
    /// lives in the pools, so restarting the probes loses nothing).
    private nonisolated func superviseHealthCheckers() async {
        enum Outcome: Sendable {
            case checkerEnded
            case replaced([HealthChecker])
            case streamEnded
        }
        var next: [HealthChecker]? = await checkerSets.first { _ in true }
        while let checkers = next, !Task.isCancelled {
            next = await withTaskGroup(of: Outcome.self) { running in
                for checker in checkers {
                    running.addTask {
                        try? await checker.run()
                        return .checkerEnded
                    }
                }
                running.addTask { [checkerSets] in
                    guard let set = await checkerSets.first(where: { _ in true }) else { return .streamEnded }
                    return .replaced(set)
                }
                var replacement: [HealthChecker]?
                loop: while let outcome = await running.next() {
                    switch outcome {
                    case .checkerEnded: continue
                    case .replaced(let set):
                        replacement = set
                        break loop
                    case .streamEnded: break loop
                    }
                }
                running.cancelAll()
                return replacement
            }
        }
    }

    /// Advances ejection and slow-start clocks of every pool (four times a second).
    private func tickPools() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            let now = MonotonicClock.now()
            for pool in poolsByName.values { pool.tick(now: now) }
        }
    }

    private nonisolated func drainRetiredListeners() async {
        await withDiscardingTaskGroup { draining in
            for await (listener, grace) in retired {
                draining.addTask { await listener.shutdown(grace: grace) }
            }
        }
    }

    private nonisolated func closeRetiredLogs() async {
        await withDiscardingTaskGroup { closing in
            for await (log, grace) in retiredLogs {
                closing.addTask {
                    try? await Task.sleep(for: grace)
                    await log.closeAsync()
                }
            }
        }
    }

    private nonisolated func reloadOnHangup() async {
        guard configPath != nil else { return }
        for await _ in await UnixSignalsSequence(trapping: .sighup) {
            logger.info("SIGHUP: reloading config")
            // Reopen first (log rotation moves the file away and sends SIGHUP), then reload.
            await accessLog?.reopen()
            await reloadFromFile()
        }
    }

    private func shutdownListeners() async {
        let all = listenersByName
        listenersByName = [:]
        logger.info("draining listeners", metadata: ["listeners": "\(all.count)"])
        await withDiscardingTaskGroup { draining in
            for listener in all.values {
                let grace = listener.context.current.config.timeouts.drain
                draining.addTask { await listener.shutdown(grace: grace) }
            }
        }
    }

    /// Closes the listeners and the admin API at once, for a server started but never run (tests).
    public func stopForTests() async {
        await closeAll()
    }

    private func closeAll() async {
        packetPlane.stopAll()
        await admin?.shutdown()
        for listener in listenersByName.values { await listener.shutdown(grace: .zero) }
        listenersByName = [:]
        await accessLog?.closeAsync()
        accessLog = nil
    }
}

/// One line of text per pool event, the same in every log: each state change is logged once, at
/// info, by the observer the server installs on every pool.
public enum PoolEventText {
    public static func log(_ events: [PoolEvent], of pool: Pool, to logger: Logger) {
        let settings = pool.settings
        for event in events {
            var metadata: Logger.Metadata = ["pool": .string(pool.name)]
            if let endpoint = event.endpoint { metadata["backend.address"] = .string(endpoint.description) }
            logger.info("\(describe(event, health: settings.health))", metadata: metadata)
        }
    }

    public static func describe(_ event: PoolEvent, health: HealthSettings? = nil) -> String {
        switch event {
        case .added(let e): return "backend \(e) added"
        case .removed(let e): return "backend \(e) removed"
        case .healthChanged(let e, let healthy, let detail):
            let inARow = health.map { " (\(healthy ? $0.rise : $0.fall) checks in a row)" } ?? ""
            return "backend \(e) \(healthy ? "up" : "down")\(detail.isEmpty || healthy ? "" : ": \(detail)")\(inARow)"
        case .ejected(let e, let nanos): return "backend \(e) ejected for \(nanos / 1_000_000) ms (outlier)"
        case .returned(let e): return "backend \(e) back from ejection"
        case .adminChanged(let e, let state): return "backend \(e) \(state.rawValue)"
        case .weightChanged(let e, let weight): return "backend \(e) weight \(weight)"
        case .usingBackups(let on):
            return on ? "no primary backend up: backups serving" : "primaries back: backups idle"
        }
    }
}

extension PoolEvent {
    /// The backend the event is about, if any.
    public var endpoint: Endpoint? {
        switch self {
        case .added(let e), .removed(let e), .healthChanged(let e, _, _), .ejected(let e, _), .returned(let e),
            .adminChanged(let e, _), .weightChanged(let e, _):
            return e
        case .usingBackups: return nil
        }
    }
}
