import ArgumentParser
import FulcrumPacket
import Logging
import UnixSignals

/// `fulcrum decap --ipip`: the backend side of IPIP tunnel mode for kernels without the ipip module.
struct Decap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decapsulate IPIP on a backend without the ipip module (tcx program; or user space -> TUN).",
        discussion: """
            By default attaches a small tcx ingress program to each Ethernet interface with an IPv4 address (or \
            those named with --interface) that strips the outer header of whole IPIP frames for that interface's \
            addresses in the kernel, so the inner packet — a TCP GSO super-frame too — goes on into the IP stack \
            without a copy (Linux 6.6+, CAP_BPF + CAP_NET_ADMIN). What it passes on (outer fragments, options, \
            other addresses) and everything when the program cannot be attached, or with --user-space, is \
            received here, stripped and written into a TUN device (created and set up here), so the kernel \
            delivers it to the VIP on lo. Also needed on the backend: the VIP on lo with \
            arp_ignore=1/arp_announce=2, and rp_filter 0 or 2 for the TUN path (docs/packet-plane.md). Runs until \
            SIGTERM/SIGINT; needs root or CAP_NET_RAW + CAP_NET_ADMIN (+ CAP_BPF for the program).
            """)

    @Flag(help: "Decapsulate IPIP (protocol 4); the only encapsulation this command handles.")
    var ipip = false

    @Option(help: "The TUN device to write inner packets into.")
    var tun = "tipip"

    @Flag(help: "Decapsulate in user space only (AF_PACKET -> TUN), without the tcx program.")
    var userSpace = false

    @Option(
        name: .customLong("interface"),
        help: "An interface to attach the tcx program to (repeatable; default: every Ethernet one with IPv4).")
    var interfaces: [String] = []

    @Option(help: "Seconds between counter lines on the log (0: none).")
    var statsInterval: Int = 0

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard ipip else { throw ValidationError("say which encapsulation to remove: --ipip") }
        guard !tun.isEmpty, tun.utf8.count <= 15 else { throw ValidationError("--tun must be 1 to 15 characters") }
        guard statsInterval >= 0 else { throw ValidationError("--stats-interval must be >= 0") }
        guard !userSpace || interfaces.isEmpty else {
            throw ValidationError("--interface names where the tcx program goes; --user-space runs without it")
        }
        for name in interfaces where name.isEmpty || name.utf8.count > 15 {
            throw ValidationError("--interface must be 1 to 15 characters: \"\(name)\"")
        }
    }

    func run() async throws {
        let logger = logging.bootstrap()
        let decapsulator: IPIPDecapsulator
        do {
            decapsulator = try IPIPDecapsulator(
                tunName: tun, setUp: true,
                input: userSpace ? .packetSocket : .kernelProgram(interfaces: interfaces.isEmpty ? nil : interfaces))
            try decapsulator.start()
        } catch {
            logger.error("fulcrum decap: \(error)")
            throw ExitCode.failure
        }
        if let reason = decapsulator.fallbackReason {
            logger.warning("in-kernel decapsulation unavailable, decapsulating in user space: \(reason)")
        }
        if let error = decapsulator.packetSocketError {
            logger.warning("no AF_PACKET input, packets come one by one from the raw socket: \(error)")
        }
        if decapsulator.usesKernelProgram {
            let names = decapsulator.programs.map { $0.interface }.joined(separator: ",")
            logger.info(
                "decapsulating IPIP in the kernel (tcx program on \(names)); fragments and the rest in user space",
                metadata: ["tun": .string(decapsulator.device.name), "path": "kernel"])
        } else {
            logger.info(
                "decapsulating IPIP in user space",
                metadata: ["tun": .string(decapsulator.device.name), "path": "user-space"])
        }
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
