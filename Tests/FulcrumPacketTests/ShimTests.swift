import CFulcrumLinux
import Testing

@Suite struct ShimTests {
    @Test func shimLinks() { #expect(fulcrum_linux_shim_version() == 1) }

    @Test func kernelConstantsReachSwift() {
        // Values from the kernel ABI (linux/if_tun.h, linux/if_packet.h, linux/virtio_net.h).
        #expect(fulcrum_TUNSETIFF == 0x4004_54CA)
        #expect(fulcrum_IFF_TUN == 1 && fulcrum_IFF_NO_PI == 0x1000)
        #expect(fulcrum_ETH_P_ALL == 3 && fulcrum_SOL_PACKET == 263 && fulcrum_PACKET_VNET_HDR == 15)
        #expect(fulcrum_PACKET_FANOUT == 18 && fulcrum_PACKET_OUTGOING == 4)
        #expect(fulcrum_VIRTIO_NET_HDR_LEN == 10 && fulcrum_VIRTIO_NET_HDR_GSO_TCPV4 == 1)
        #expect(MemoryLayout<fulcrum_mmsghdr>.size == 64)
    }
}
