import ArgumentParser
import Foundation
import FulcrumConfig
import FulcrumCore

/// The `fulcrum` command: one binary for every role.
@main
struct Fulcrum: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "fulcrum",
        abstract:
            "Fulcrum: a load balancer for Linux — proxy (L4/L7), packet forwarding (NAT, DSR, tunnel), VRRP, clustering.",
        version: version,
        subcommands: [Run.self, Demo.self, Validate.self, Ctl.self, Version.self]
    )
}

/// Exit codes shared by the subcommands.
enum ExitStatus {
    static let invalidConfig: Int32 = 2
    static let notYetAvailable: Int32 = 3
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config file. Exit 0 when valid, 2 when not, with one problem per line on stderr.")

    @Argument(help: "The YAML config file.")
    var file: String

    func run() throws {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            printError("\(file): cannot read: \(describe(error))")
            throw ExitCode(ExitStatus.invalidConfig)
        }
        do {
            let config = try ConfigLoader.load(yaml: text)
            let backends = config.pools.reduce(0) { $0 + $1.backends.count }
            print(
                "\(file): valid — \(config.pools.count) pool(s), \(backends) backend(s), "
                    + "\(config.listeners.count) listener(s), \(config.virtualServices.count) virtual service(s)")
        } catch {
            for diagnostic in error.diagnostics { printError("\(file): \(diagnostic)") }
            throw ExitCode(ExitStatus.invalidConfig)
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("fulcrum \(Fulcrum.version)") }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the balancer with a config file (arrives with the proxy, issue 3).")
    @Option(name: .shortAndLong, help: "The YAML config file.")
    var config: String
    func run() throws { try notYet("run", arrivesWith: "the proxy (issue 3)") }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run an embedded demo: a balancer in front of in-process demo backends (arrives with the proxy, issue 3).")
    func run() throws { try notYet("demo", arrivesWith: "the proxy (issue 3)") }
}

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Operate a running balancer through its admin API (arrives with the control plane, issue 4).")
    @Argument(parsing: .captureForPassthrough) var words: [String] = []
    func run() throws { try notYet("ctl", arrivesWith: "the admin API (issue 4)") }
}

func notYet(_ command: String, arrivesWith: String) throws -> Never {
    printError(
        "fulcrum \(command) is not available yet: it arrives with \(arrivesWith). Today: `fulcrum validate FILE`.")
    throw ExitCode(ExitStatus.notYetAvailable)
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

func describe(_ error: any Error) -> String {
    if let cocoa = error as? CocoaError, let underlying = cocoa.userInfo[NSUnderlyingErrorKey] as? NSError {
        return underlying.localizedDescription
    }
    return (error as NSError).localizedDescription
}
