import ArgumentParser
import FulcrumPacket
import Logging
import UnixSignals

/// `fulcrum decap --ipip`: the backend side of IPIP tunnel mode for kernels without the ipip module.
struct Decap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decapsulate IPIP on a backend whose kernel lacks the ipip module (AF_PACKET/raw socket -> TUN).",
        discussion: """
            Receives every IPv4 protocol-4 packet for this host, strips the outer header and writes the inner \
            packet into a TUN device (created and set up here), so the kernel delivers it to the VIP on lo; TCP \
            GSO super-frames from a balancer on the same host or a veth/bridge segment go in whole. Also needed on \
            the backend: the VIP on lo with arp_ignore=1/arp_announce=2, and rp_filter 0 or 2 \
            (docs/packet-plane.md). Runs until SIGTERM/SIGINT; needs root or CAP_NET_RAW + CAP_NET_ADMIN.
            """)

    @Flag(help: "Decapsulate IPIP (protocol 4); the only encapsulation this command handles.")
    var ipip = false

    @Option(help: "The TUN device to write inner packets into.")
    var tun = "tipip"

    @Option(help: "Seconds between counter lines on the log (0: none).")
    var statsInterval: Int = 0

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard ipip else { throw ValidationError("say which encapsulation to remove: --ipip") }
        guard !tun.isEmpty, tun.utf8.count <= 15 else { throw ValidationError("--tun must be 1 to 15 characters") }
        guard statsInterval >= 0 else { throw ValidationError("--stats-interval must be >= 0") }
    }

    func run() async throws {
        let logger = logging.bootstrap()
        let decapsulator: IPIPDecapsulator
        do {
            decapsulator = try IPIPDecapsulator(tunName: tun, setUp: true)
            try decapsulator.start()
        } catch {
            logger.error("fulcrum decap: \(error)")
            throw ExitCode.failure
        }
        if let error = decapsulator.packetSocketError {
            logger.warning("no AF_PACKET input, packets come one by one from the raw socket: \(error)")
        }
        logger.info("decapsulating IPIP", metadata: ["tun": .string(decapsulator.device.name)])
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) { return }
            }
            if statsInterval > 0 {
                tasks.addTask { [statsInterval] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(statsInterval))
                        let stats = decapsulator.statistics
                        logger.info(
                            "decap",
                            metadata: [
                                "decapsulated": "\(stats.decapsulated)", "gso_writes": "\(stats.gsoWrites)",
                                "drops": "\(stats.drops)",
                            ])
                    }
                }
            }
            await tasks.next()
            tasks.cancelAll()
        }
        decapsulator.stop()
        let stats = decapsulator.statistics
        logger.info(
            "decap stopped",
            metadata: [
                "decapsulated": "\(stats.decapsulated)", "gso_writes": "\(stats.gsoWrites)", "drops": "\(stats.drops)",
            ])
    }
}
