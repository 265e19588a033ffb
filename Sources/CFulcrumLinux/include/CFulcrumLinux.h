// CFulcrumLinux: what Glibc does not export to Swift. Kept minimal (issue 5).
#ifndef CFULCRUM_LINUX_H
#define CFULCRUM_LINUX_H
#include <stdint.h>

/// Version of the shim, so a Swift caller can check it links.
static inline int fulcrum_linux_shim_version(void) { return 1; }

#endif
