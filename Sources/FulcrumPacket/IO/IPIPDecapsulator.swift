import CFulcrumLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The backend side of IPIP for kernels without the ipip module (`fulcrum decap --ipip`): a raw socket
/// receives every protocol-4 packet, the outer header is stripped and the inner packet written into a TUN
/// device, so the kernel delivers it to the VIP on `lo` as if it had arrived plain. The TUN must be up and
/// `rp_filter` must not drop packets whose source is routed elsewhere (set it to 0 or 2).
public final class IPIPDecapsulator: Sendable {
    public struct Statistics: Sendable, Equatable {
        public var decapsulated: UInt64 = 0
        public var drops = DropCounters()
    }

    public let device: TUNDevice
    public let input: RawIPSocket
    private let loop = PacketWorkerLoop()
    private let published = Mutex(Statistics())

    /// Opens the TUN device and the raw socket (in `networkNamespace` when given); with `setUp` the device is
    /// also set up, which the kernel needs before it delivers what is written into it.
    public init(tunName: String, networkNamespace: String? = nil, setUp: Bool = false) throws(PacketIOError) {
        let open = { @Sendable () throws(PacketIOError) -> (TUNDevice, RawIPSocket) in
            let device = try TUNDevice(name: tunName)
            let input = try RawIPSocket(protocol: 4)
            if setUp { try device.setUp(using: input.fd) }
            return (device, input)
        }
        if let networkNamespace {
            (device, input) = try NetworkNamespace.perform(path: networkNamespace, open)
        } else {
            (device, input) = try open()
        }
        input.setReceiveBuffer(4 << 20)
    }

    public var statistics: Statistics { published.withLock { $0 } }

    public func start() throws(PacketIOError) {
        try loop.start { [self] in run() }
    }

    public func stop() {
        loop.stop()
    }

    private func run() {
        let capacity = 65536
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        let bytes = PacketBytes(buffer)
        var stats = Statistics()
        var pfd = pollfd(fd: input.fd, events: Int16(POLLIN), revents: 0)
        while !loop.isStopping {
            pfd.revents = 0
            guard poll(&pfd, 1, 100) > 0 else { continue }
            for _ in 0..<64 {
                let n = recv(input.fd, buffer.baseAddress, capacity, Int32(MSG_DONTWAIT))
                if n <= 0 { break }
                do throws(DropReason) {
                    let inner = try Encapsulation.parseIPIP(bytes, at: 0, limit: n)
                    _ = write(device.fd, buffer.baseAddress! + inner.offset, inner.totalLength)
                    stats.decapsulated &+= 1
                } catch {
                    stats.drops.record(error)
                }
            }
            published.withLock { $0 = stats }
        }
    }
}
