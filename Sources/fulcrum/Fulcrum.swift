import ArgumentParser
import Foundation
import FulcrumConfig
import FulcrumCore
import FulcrumServer

/// The `fulcrum` command: one binary for every role.
@main
struct Fulcrum: AsyncParsableCommand {
    static let version = FulcrumBuild.version

    static let configuration = CommandConfiguration(
        commandName: "fulcrum",
        abstract:
            "Fulcrum: a load balancer for Linux — proxy (L4/L7), packet forwarding (NAT, DSR, tunnel), VRRP, clustering.",
        version: version,
        subcommands: [Run.self, Demo.self, Validate.self, Ctl.self, ClusterCommand.self, Decap.self, Version.self]
    )
}

/// Exit codes shared by the subcommands.
enum ExitStatus {
    static let invalidConfig: Int32 = 2
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config file. Exit 0 when valid, 2 when not, with one problem per line on stderr.")

    @Argument(help: "The YAML config file.")
    var file: String

    func run() throws {
        let config = try loadConfigOrExit(file)
        let backends = config.pools.reduce(0) { $0 + $1.backends.count }
        print(
            "\(file): valid — \(config.pools.count) pool(s), \(backends) backend(s), "
                + "\(config.listeners.count) listener(s), \(config.virtualServices.count) virtual service(s)")
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("fulcrum \(Fulcrum.version)") }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Reads and validates a config file; on any problem prints one line per problem and exits 2.
func loadConfigOrExit(_ file: String) throws -> FulcrumConfig {
    let text: String
    do {
        text = try readFile(file)
    } catch {
        printError("\(file): cannot read: \(error.reason)")
        throw ExitCode(ExitStatus.invalidConfig)
    }
    do {
        return try ConfigLoader.load(yaml: text)
    } catch {
        for diagnostic in error.diagnostics { printError("\(file): \(diagnostic)") }
        throw ExitCode(ExitStatus.invalidConfig)
    }
}
