// The bpf(2) calls the IPIP tunnel's encapsulation program needs: load a BPF_PROG_TYPE_SCHED_CLS program and
// attach it to a device's tcx ingress hook with a BPF link. The attribute layouts are the kernel's
// `union bpf_attr` members for these two commands (uapi, stable); they are spelled out here because the system
// headers (linux-libc-dev 6.1) predate tcx (Linux 6.6). Anything the structs leave out is zero, which the
// kernel accepts for a shorter attribute.
#pragma once

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const int fulcrum_BPF_PROG_LOAD = 5;
static const int fulcrum_BPF_LINK_CREATE = 28;
static const uint32_t fulcrum_BPF_PROG_TYPE_SCHED_CLS = 3;
/// `enum bpf_attach_type` value of BPF_TCX_INGRESS (Linux 6.6+).
static const uint32_t fulcrum_BPF_TCX_INGRESS = 46;

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `expected_attach_type`.
typedef struct fulcrum_bpf_prog_load_attr {
    uint32_t prog_type;
    uint32_t insn_cnt;
    uint64_t insns;
    uint64_t license;
    uint32_t log_level;
    uint32_t log_size;
    uint64_t log_buf;
    uint32_t kern_version;
    uint32_t prog_flags;
    char prog_name[16];
    uint32_t prog_ifindex;
    uint32_t expected_attach_type;
} fulcrum_bpf_prog_load_attr;

/// The BPF_LINK_CREATE part of `union bpf_attr` with its tcx member (relative fd/id, expected revision).
typedef struct fulcrum_bpf_link_create_attr {
    uint32_t prog_fd;
    uint32_t target_ifindex;
    uint32_t attach_type;
    uint32_t flags;
    uint32_t relative_fd;
    uint32_t pad;
    uint64_t expected_revision;
} fulcrum_bpf_link_create_attr;

_Static_assert(sizeof(fulcrum_bpf_prog_load_attr) == 72, "bpf_attr prog load layout");
_Static_assert(sizeof(fulcrum_bpf_link_create_attr) == 32, "bpf_attr link create layout");

/// Loads `count` 8-byte instructions as a SCHED_CLS program named `name` (up to 15 characters) for tcx ingress;
/// on a verifier rejection its log goes to `log` (`log_size` bytes, may be NULL/0). Returns the program fd
/// (close-on-exec) or -errno.
static inline int fulcrum_bpf_load_sched_cls(
    const uint64_t *insns, uint32_t count, const char *license, const char *name, char *log, uint32_t log_size) {
    fulcrum_bpf_prog_load_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = fulcrum_BPF_PROG_TYPE_SCHED_CLS;
    attr.insn_cnt = count;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.license = (uint64_t)(uintptr_t)license;
    if (log != NULL && log_size > 0) {
        log[0] = 0;
        attr.log_level = 1;
        attr.log_size = log_size;
        attr.log_buf = (uint64_t)(uintptr_t)log;
    }
    if (name != NULL) strncpy(attr.prog_name, name, sizeof(attr.prog_name) - 1);
    attr.expected_attach_type = fulcrum_BPF_TCX_INGRESS;
    long fd = syscall(SYS_bpf, fulcrum_BPF_PROG_LOAD, &attr, sizeof(attr));
    return fd < 0 ? -errno : (int)fd;
}

/// Attaches program `prog_fd` to the tcx ingress hook of interface `ifindex` (after the programs already there)
/// with a BPF link; closing the returned link fd detaches it. Returns the link fd or -errno.
static inline int fulcrum_bpf_tcx_ingress_attach(int prog_fd, int ifindex) {
    fulcrum_bpf_link_create_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_fd = (uint32_t)prog_fd;
    attr.target_ifindex = (uint32_t)ifindex;
    attr.attach_type = fulcrum_BPF_TCX_INGRESS;
    long fd = syscall(SYS_bpf, fulcrum_BPF_LINK_CREATE, &attr, sizeof(attr));
    return fd < 0 ? -errno : (int)fd;
}
