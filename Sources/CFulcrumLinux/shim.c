// Out-of-line wrappers that need _GNU_SOURCE (recvmmsg/sendmmsg are GNU extensions in glibc).
#define _GNU_SOURCE
#include <sys/socket.h>
#include "CFulcrumLinux.h"

_Static_assert(sizeof(fulcrum_mmsghdr) == sizeof(struct mmsghdr), "fulcrum_mmsghdr must match struct mmsghdr");

int fulcrum_recvmmsg(int fd, fulcrum_mmsghdr *msgs, unsigned int vlen, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, vlen, flags, NULL);
}

int fulcrum_sendmmsg(int fd, fulcrum_mmsghdr *msgs, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, vlen, flags);
}

#include <sched.h>

int fulcrum_setns_net(int fd) {
    return setns(fd, CLONE_NEWNET);
}
