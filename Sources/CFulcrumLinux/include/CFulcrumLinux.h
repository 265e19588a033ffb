// CFulcrumLinux: what Glibc does not export to Swift. Kept minimal.
// fulcrum_packet.h: TUN, AF_PACKET, mmsghdr (issue 5). fulcrum_netlink.h: rtnetlink address helpers (issue 6).
// fulcrum_bpf.h: bpf(2) program load and tcx attach for the IPIP tunnel's encapsulation program.
#ifndef CFULCRUM_LINUX_H
#define CFULCRUM_LINUX_H
#include <stdint.h>
#include "fulcrum_packet.h"
#include "fulcrum_netlink.h"
#include "fulcrum_bpf.h"

/// Version of the shim, so a Swift caller can check it links.
static inline int fulcrum_linux_shim_version(void) { return 1; }

#endif
