import ArgumentParser
import FulcrumConfig
import FulcrumServer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `fulcrum run --config FILE`: serve until SIGTERM/SIGINT (then drain), reload on SIGHUP.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the balancer. SIGTERM/SIGINT: stop accepting, drain, exit 0. SIGHUP: reload the config file.")

    @Option(name: .shortAndLong, help: "The YAML config file.")
    var config: String

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        // A SIGHUP that arrives before the server's reload handler is installed would kill the process (the
        // default action); until then it is ignored: the config about to be read is the newest anyway.
        signal(SIGHUP, SIG_IGN)
        let logger = logging.bootstrap()
        let fulcrumConfig = try loadConfigOrExit(config)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: fulcrumConfig.workers ?? System.coreCount)
        do {
            let server = try await FulcrumServer.start(
                config: fulcrumConfig, configPath: config, group: group, logger: logger)
            try await runUntilSignalled([server], logger: logger)
        } catch let error as ExitCode {
            try? await group.shutdownGracefully()
            throw error
        } catch {
            logger.error("fulcrum run failed: \(error)")
            try? await group.shutdownGracefully()
            throw ExitCode.failure
        }
        try await group.shutdownGracefully()
    }
}

/// Runs services in a `ServiceGroup` that shuts down gracefully on SIGTERM and SIGINT.
func runUntilSignalled(_ services: [any Service], logger: Logger) async throws {
    let serviceGroup = ServiceGroup(
        configuration: .init(
            services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
    try await serviceGroup.run()
}

/// `--log-level`, shared by the serving commands.
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    /// Sets up swift-log once for the process (stderr) and returns the root logger.
    func bootstrap() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "fulcrum")
    }
}
