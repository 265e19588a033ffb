// Packet-plane helpers (issue 5): only what the Glibc module does not export to Swift.
// TUN ioctls and flags, sockaddr_ll and AF_PACKET options, virtio_net_hdr, mmsghdr with recvmmsg/sendmmsg.
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

// Function-like macros (_IOW) and some plain macros do not reach Swift: re-export them as constants.
static const unsigned long fulcrum_TUNSETIFF = TUNSETIFF;
static const short fulcrum_IFF_TUN = IFF_TUN;
static const short fulcrum_IFF_TAP = IFF_TAP;
static const short fulcrum_IFF_NO_PI = IFF_NO_PI;
static const short fulcrum_IFF_VNET_HDR = IFF_VNET_HDR;
static const unsigned int fulcrum_TUN_F_CSUM = TUN_F_CSUM;
static const unsigned int fulcrum_TUN_F_TSO4 = TUN_F_TSO4;
static const unsigned int fulcrum_TUN_F_TSO_ECN = TUN_F_TSO_ECN;
// UDP-tunnel GSO on TUN/TAP (Linux 6.17+); the system headers here predate it, the values are kernel ABI
// (include/uapi/linux/if_tun.h).
static const unsigned int fulcrum_TUN_F_UDP_TUNNEL_GSO = 0x080;
static const unsigned int fulcrum_TUN_F_UDP_TUNNEL_GSO_CSUM = 0x100;
static const uint16_t fulcrum_ETH_P_ALL = ETH_P_ALL;
static const uint16_t fulcrum_ETH_P_IP = ETH_P_IP;
static const uint16_t fulcrum_ETH_P_ARP = ETH_P_ARP;
static const int fulcrum_SOL_PACKET = SOL_PACKET;
static const int fulcrum_PACKET_VNET_HDR = PACKET_VNET_HDR;
static const int fulcrum_PACKET_FANOUT = PACKET_FANOUT;
static const int fulcrum_PACKET_IGNORE_OUTGOING = PACKET_IGNORE_OUTGOING;
// Fanout modes live in <linux/if_packet.h>, which clashes with glibc's <netpacket/packet.h> (both define
// sockaddr_ll): the values are kernel ABI, copied here.
static const int fulcrum_PACKET_FANOUT_HASH = 0;
static const int fulcrum_PACKET_FANOUT_CPU = 2;
static const int fulcrum_PACKET_FANOUT_FLAG_DEFRAG = 0x8000;
static const unsigned char fulcrum_PACKET_OUTGOING = PACKET_OUTGOING;
static const unsigned char fulcrum_PACKET_OTHERHOST = PACKET_OTHERHOST;
static const uint8_t fulcrum_VIRTIO_NET_HDR_F_NEEDS_CSUM = VIRTIO_NET_HDR_F_NEEDS_CSUM;
static const uint8_t fulcrum_VIRTIO_NET_HDR_GSO_NONE = VIRTIO_NET_HDR_GSO_NONE;
static const uint8_t fulcrum_VIRTIO_NET_HDR_GSO_TCPV4 = VIRTIO_NET_HDR_GSO_TCPV4;
static const uint8_t fulcrum_VIRTIO_NET_HDR_GSO_UDP = VIRTIO_NET_HDR_GSO_UDP;
static const uint8_t fulcrum_VIRTIO_NET_HDR_GSO_TCPV6 = VIRTIO_NET_HDR_GSO_TCPV6;
static const uint8_t fulcrum_VIRTIO_NET_HDR_GSO_ECN = VIRTIO_NET_HDR_GSO_ECN;
/// Size of the header AF_PACKET puts before each frame with PACKET_VNET_HDR (the legacy 10-byte form).
static const int fulcrum_VIRTIO_NET_HDR_LEN = (int)sizeof(struct virtio_net_hdr);

/// Layout-compatible with glibc's `struct mmsghdr`, which is only declared under _GNU_SOURCE
/// (the Swift importer does not see it).
typedef struct fulcrum_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} fulcrum_mmsghdr;

/// recvmmsg(2); returns the number of messages or -1 with errno set. Defined in shim.c (_GNU_SOURCE).
int fulcrum_recvmmsg(int fd, fulcrum_mmsghdr *msgs, unsigned int vlen, int flags);
/// sendmmsg(2); returns the number of messages sent or -1 with errno set.
int fulcrum_sendmmsg(int fd, fulcrum_mmsghdr *msgs, unsigned int vlen, int flags);

/// setns(fd, CLONE_NEWNET) for the calling thread (a GNU extension in glibc); 0 or -1 with errno set.
int fulcrum_setns_net(int fd);

/// Opens /dev/net/tun and attaches it to interface `name` (created if missing) with `flags`
/// (IFF_TUN | IFF_NO_PI ...). On success returns the fd and copies the kernel's interface name into
/// `actual_name` (IFNAMSIZ bytes) when not NULL; on failure returns -errno.
static inline int fulcrum_tun_open(const char *name, short flags, char *actual_name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = flags;
    if (name != NULL) strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int saved = errno;
        close(fd);
        return -saved;
    }
    if (actual_name != NULL) memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
    return fd;
}

/// TUNSETVNETHDRSZ: the size of the virtio_net_hdr before every packet (24 for
/// `virtio_net_hdr_v1_hash_tunnel`, which UDP-tunnel GSO needs). Returns 0 or -errno.
static inline int fulcrum_tun_set_vnet_header_size(int fd, int size) {
    return ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 ? -errno : 0;
}

/// Sets interface `name` up (IFF_UP, as `ip link set NAME up`) with `fd`, any socket of the namespace the
/// interface is in; 0 or -errno.
static inline int fulcrum_link_up(int fd, const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) return -errno;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) return -errno;
    return 0;
}

/// Binds an AF_PACKET socket to interface `ifindex` for `protocol_host_order` (ETH_P_ALL ...); 0 or -errno.
static inline int fulcrum_packet_bind(int fd, int ifindex, uint16_t protocol_host_order) {
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(protocol_host_order);
    sll.sll_ifindex = ifindex;
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) return -errno;
    return 0;
}

/// The interface's hardware address (6 bytes into `mac`) from an AF_PACKET socket bound to it; 0 or -errno.
static inline int fulcrum_packet_local_mac(int fd, uint8_t *mac) {
    struct sockaddr_ll sll;
    socklen_t len = sizeof(sll);
    memset(&sll, 0, sizeof(sll));
    if (getsockname(fd, (struct sockaddr *)&sll, &len) < 0) return -errno;
    if (sll.sll_halen != 6) return -EINVAL;
    memcpy(mac, sll.sll_addr, 6);
    return 0;
}

/// Joins fanout group `group_id` with `mode` (PACKET_FANOUT_HASH ...) so several workers share one
/// interface, each flow staying on one worker; 0 or -errno.
static inline int fulcrum_packet_fanout(int fd, uint16_t group_id, uint16_t mode) {
    int arg = (int)group_id | ((int)mode << 16);
    if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof(arg)) < 0) return -errno;
    return 0;
}

/// TUNSETOFFLOAD: which offloads (TUN_F_CSUM, TUN_F_TSO4 ...) the reader of a TUN opened with IFF_VNET_HDR
/// accepts, so the kernel hands it GSO super-frames and partial checksums. Returns 0 or -errno.
static inline int fulcrum_tun_set_offload(int fd, unsigned int offloads) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0 ? -errno : 0;
}

/// IP_RECVFRAGSIZE (Linux 4.10+): a raw or UDP socket gets the largest fragment size of a reassembled packet as
/// a control message (none for a packet that came whole). Kernel ABI, not in every libc's headers.
static const int fulcrum_IP_RECVFRAGSIZE = 25;
/// `struct sock_filter` codes and the ancillary offsets classic BPF socket filters use.
static const int fulcrum_SKF_AD_PKTTYPE = SKF_AD_OFF + SKF_AD_PKTTYPE;
static const int fulcrum_SKF_AD_HATYPE = SKF_AD_OFF + SKF_AD_HATYPE;

/// Attaches the classic BPF program `code` (`count` instructions) as the socket's filter (SO_ATTACH_FILTER):
/// the kernel drops what it rejects before queueing (or copying) anything. Returns 0 or -errno.
static inline int fulcrum_attach_socket_filter(int fd, const struct sock_filter *code, unsigned short count) {
    struct sock_fprog program;
    program.len = count;
    program.filter = (struct sock_filter *)code;
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) < 0 ? -errno : 0;
}
