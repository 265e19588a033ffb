// rtnetlink and link-level helpers for FulcrumHA (issue 6): add/remove IPv4 addresses without shelling out to
// `ip`, the interface's MAC, AF_PACKET sends for gratuitous ARP, multicast membership by interface index,
// and moving a thread into a network namespace. Static inline so no shim.c change is needed. Only headers
// that also work next to fulcrum_packet.h's (glibc's net/if.h, netpacket/packet.h) are included.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/// Opens a NETLINK_ROUTE socket with a receive timeout, so an answer that never comes cannot hang the
/// caller. Returns the descriptor or -errno.
static inline int fulcrum_nl_open(int timeout_ms) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return -errno;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_nl local;
    memset(&local, 0, sizeof local);
    local.nl_family = AF_NETLINK;
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

static inline void fulcrum_nl_put_attr(struct nlmsghdr *nh, unsigned short type, const void *data, unsigned short len) {
    struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/// Adds (add != 0) or removes the IPv4 address `addr_be` (network order) with `prefixlen` and `scope`
/// (RT_SCOPE_UNIVERSE, RT_SCOPE_HOST ...) on interface `ifindex`, and waits for the kernel's acknowledgement.
/// Returns 0, or -errno as the kernel reports it:
/// -EEXIST when adding an address that is there, -EADDRNOTAVAIL when removing one that is not.
static inline int fulcrum_nl_ipv4_address_scoped(int fd, int add, int ifindex, uint32_t addr_be, uint8_t prefixlen,
                                                 unsigned char scope, uint32_t seq) {
    struct {
        struct nlmsghdr nh;
        struct ifaddrmsg ifa;
        char attrs[64];
    } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    req.nh.nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? (NLM_F_CREATE | NLM_F_EXCL) : 0);
    req.nh.nlmsg_seq = seq;
    req.ifa.ifa_family = AF_INET;
    req.ifa.ifa_prefixlen = prefixlen;
    req.ifa.ifa_scope = scope;
    req.ifa.ifa_index = (unsigned)ifindex;
    fulcrum_nl_put_attr(&req.nh, IFA_LOCAL, &addr_be, 4);
    fulcrum_nl_put_attr(&req.nh, IFA_ADDRESS, &addr_be, 4);

    struct sockaddr_nl kernel;
    memset(&kernel, 0, sizeof kernel);
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -errno;

    char buf[8192];
    // Bounded: the socket has a receive timeout and unrelated messages are skipped a limited number of times.
    for (int attempts = 0; attempts < 16; attempts++) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (unsigned)n); nh = NLMSG_NEXT(nh, n)) {
            if (nh->nlmsg_seq != seq || nh->nlmsg_type != NLMSG_ERROR) continue;
            if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EBADMSG;
            return ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
        }
    }
    return -ETIMEDOUT;
}

static const unsigned char fulcrum_RT_SCOPE_HOST = RT_SCOPE_HOST;

/// `fulcrum_nl_ipv4_address_scoped` with global scope (an address others may reach, like a VIP).
static inline int fulcrum_nl_ipv4_address(int fd, int add, int ifindex, uint32_t addr_be, uint8_t prefixlen,
                                          uint32_t seq) {
    return fulcrum_nl_ipv4_address_scoped(fd, add, ifindex, addr_be, prefixlen, RT_SCOPE_UNIVERSE, seq);
}

/// The interface's hardware address (6 bytes), read with SIOCGIFHWADDR on `fd` (any socket in the right
/// namespace). Returns 0 or -errno.
static inline int fulcrum_if_hwaddr(int fd, const char *name, uint8_t out[6]) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) return -errno;
    memcpy(out, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}

/// The interface's hardware type (`ARPHRD_*`, 1 for Ethernet), read with SIOCGIFHWADDR on `fd` (any socket in the
/// right namespace; sysfs would show the mounting process's namespace). Returns it or -errno.
static inline int fulcrum_if_hwtype(int fd, const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) return -errno;
    return ifr.ifr_hwaddr.sa_family;
}

/// Sends `len` bytes as the payload of an Ethernet frame to the broadcast address with EtherType
/// `ethertype`, on an AF_PACKET SOCK_DGRAM socket (the kernel adds our MAC as source). Returns 0 or -errno.
static inline int fulcrum_packet_send_broadcast(int fd, int ifindex, uint16_t ethertype, const void *payload,
                                                size_t len) {
    struct sockaddr_ll to;
    memset(&to, 0, sizeof to);
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ethertype);
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    memset(to.sll_addr, 0xff, 6);
    if (sendto(fd, payload, len, 0, (struct sockaddr *)&to, sizeof to) < 0) return -errno;
    return 0;
}

/// Joins (join != 0) or leaves the IPv4 multicast group `group_be` on interface `ifindex`.
static inline int fulcrum_ipv4_multicast_membership(int fd, int join, uint32_t group_be, int ifindex) {
    struct ip_mreqn mreq;
    memset(&mreq, 0, sizeof mreq);
    mreq.imr_multiaddr.s_addr = group_be;
    mreq.imr_ifindex = ifindex;
    if (setsockopt(fd, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &mreq, sizeof mreq) < 0)
        return -errno;
    return 0;
}

/// Sends multicast from interface `ifindex` (IP_MULTICAST_IF by index, so the VIP is never the choice).
static inline int fulcrum_ipv4_multicast_interface(int fd, int ifindex) {
    struct ip_mreqn mreq;
    memset(&mreq, 0, sizeof mreq);
    mreq.imr_ifindex = ifindex;
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mreq, sizeof mreq) < 0) return -errno;
    return 0;
}

/// Moves the calling thread into the network namespace at `path` (e.g. /var/run/netns/NAME). Sockets it
/// opens afterwards live in that namespace. Returns 0 or -errno.
static inline int fulcrum_enter_netns(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    // setns(2) through syscall(2): its libc declaration needs _GNU_SOURCE before the first system header,
    // which a header in a shared module cannot promise. 0x40000000 is CLONE_NEWNET.
    int rc = (int)syscall(SYS_setns, fd, 0x40000000);
    int err = errno;
    close(fd);
    return rc < 0 ? -err : 0;
}
