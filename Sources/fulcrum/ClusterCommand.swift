import ArgumentParser
import FulcrumCluster
import FulcrumConfig
import FulcrumServer
import NIOCore
import NIOPosix

/// `fulcrum cluster …`: operations on the shared configuration in etcd that need no running node.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Operate on a cluster's shared configuration in etcd.",
        subcommands: [ClusterSeedCommand.self])
}

/// `fulcrum cluster seed FILE --endpoints URL… --prefix P`: a config file's pools, listeners and virtual
/// services become one document each under an empty prefix.
struct ClusterSeedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed",
        abstract: "Write a config file's pools, listeners and virtual services into an empty etcd prefix.",
        discussion: """
            FILE is an ordinary config (the one a single node runs today). Its other sections (admin, ha, …)
            are not shared and are ignored. Refuses a prefix that already holds configuration. The nodes'
            own files then say `cluster: { store: etcd, endpoints: […], prefix: … }` and no pools.
            """)

    @Argument(help: "The config file whose pools, listeners and virtual services to share.")
    var file: String

    @Option(parsing: .upToNextOption, help: "etcd endpoints (http://host:port), one or more.")
    var endpoints: [String] = ["http://127.0.0.1:2379"]

    @Option(help: "Key prefix; starts and ends with '/'.")
    var prefix: String = "/fulcrum/"

    func run() async throws {
        guard prefix.hasPrefix("/"), prefix.hasSuffix("/") else {
            throw ValidationError("--prefix must start and end with '/' (e.g. /fulcrum/)")
        }
        _ = try loadConfigOrExit(file)
        let text = try readFile(file)
        var parsed: [EtcdEndpoint] = []
        for url in endpoints {
            do {
                parsed.append(try EtcdEndpoint(url: url))
            } catch {
                throw ValidationError("\(error)")
            }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { group.shutdownGracefully { _ in } }
        let client = EtcdClient(endpoints: parsed, group: group)
        do {
            let keys = try await ClusterSeed.seed(configText: text, client: client, prefix: prefix)
            for key in keys { print("wrote \(prefix)\(key.relativePath)") }
            print("seeded \(keys.count) document(s) under \(prefix)")
        } catch {
            printError("seed failed: \(error)")
            throw ExitCode.failure
        }
    }
}
