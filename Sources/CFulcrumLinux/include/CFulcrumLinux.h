// CFulcrumLinux: what Glibc does not export to Swift. Kept minimal.
// fulcrum_packet.h: TUN, AF_PACKET, mmsghdr (issue 5). fulcrum_netlink.h: rtnetlink address helpers (issue 6).
#ifndef CFULCRUM_LINUX_H
#define CFULCRUM_LINUX_H
#include <stdint.h>
#include "fulcrum_packet.h"
#include "fulcrum_netlink.h"

/// Version of the shim, so a Swift caller can check it links.
static inline int fulcrum_linux_shim_version(void) { return 1; }

#endif
