/* TCP echo server and round-trip client for bench/l4 (compiled by the bench into its temp dir).
 *
 *   echo server HOST PORT
 *       single-threaded epoll echo: writes back every byte it reads.
 *   echo client HOST PORT CONNS SECONDS MSG_BYTES
 *       opens CONNS connections; on each, sends MSG_BYTES, waits for all of them back, repeats, for
 *       SECONDS. Prints one JSON line: round trips, round trips/s, p50/p99 latency in µs, errors.
 *
 * Written in C so that neither end is the bottleneck when measuring a proxy in between.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXEV 256
#define BUFSZ 65536

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static struct sockaddr_in addr_of(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "echo: bad IPv4 address %s\n", host);
        exit(2);
    }
    return a;
}

/* ------------------------------------------------------------------------------------- server */

typedef struct {
    int fd;
    char *pending; /* bytes read but not yet written back */
    size_t off, len;
} sconn;

static int server(const char *host, int port) {
    struct sockaddr_in a = addr_of(host, port);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static char buf[BUFSZ];
    struct epoll_event evs[MAXEV];
    for (;;) {
        int n = epoll_wait(ep, evs, MAXEV, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            sconn *c = evs[i].data.ptr;
            if (c == NULL) {
                for (int k = 0; k < 1024; k++) { /* bounded accept burst */
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    sconn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int closed = 0;
            if (c->len > c->off) { /* flush what is pending first */
                ssize_t w = write(c->fd, c->pending + c->off, c->len - c->off);
                if (w < 0 && errno != EAGAIN) closed = 1;
                else if (w > 0) c->off += (size_t)w;
                if (!closed && c->off == c->len) {
                    c->off = c->len = 0;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                }
            } else {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r == 0 || (r < 0 && errno != EAGAIN)) closed = 1;
                else if (r > 0) {
                    ssize_t w = write(c->fd, buf, (size_t)r);
                    if (w < 0 && errno != EAGAIN) closed = 1;
                    else {
                        if (w < 0) w = 0;
                        if (w < r) { /* keep the rest, wait until writable */
                            c->pending = realloc(c->pending, (size_t)(r - w));
                            memcpy(c->pending, buf + w, (size_t)(r - w));
                            c->off = 0;
                            c->len = (size_t)(r - w);
                            struct epoll_event cev = {.events = EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
                            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                        }
                    }
                }
            }
            if (closed) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c->pending);
                free(c);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------- client */

#define HMAX 1000000 /* µs histogram up to 1 s, then one overflow bucket */
static uint32_t hist[HMAX + 1];

typedef struct {
    int fd;
    size_t got;
    double t0;
} cconn;

static double pct(uint64_t total, double p) {
    if (total == 0) return -1;
    uint64_t want = (uint64_t)(p * (double)total + 0.5), acc = 0;
    if (want < 1) want = 1;
    for (int i = 0; i <= HMAX; i++) {
        acc += hist[i];
        if (acc >= want) return i;
    }
    return HMAX;
}

static int client(const char *host, int port, int conns, double seconds, int msg) {
    struct sockaddr_in a = addr_of(host, port);
    char *out = malloc((size_t)msg), in[BUFSZ];
    memset(out, 'x', (size_t)msg);
    int ep = epoll_create1(0);
    cconn *cs = calloc((size_t)conns, sizeof *cs);
    int one = 1;
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    uint64_t rts = 0, errors = 0;
    int live = conns;
    double start = now_s(), end = start + seconds;
    for (int i = 0; i < conns; i++) {
        cs[i].t0 = now_s();
        if (write(cs[i].fd, out, (size_t)msg) != msg) die("first write");
    }
    struct epoll_event evs[MAXEV];
    double t = start;
    while (live > 0 && (t = now_s()) < end) {
        int n = epoll_wait(ep, evs, MAXEV, 100);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            cconn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            ssize_t r = read(c->fd, in, sizeof in);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) { /* peer closed or error: this connection is lost */
                errors++;
                live--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                continue;
            }
            c->got += (size_t)r;
            if (c->got >= (size_t)msg) {
                double t1 = now_s();
                long us = (long)((t1 - c->t0) * 1e6);
                hist[us < HMAX ? us : HMAX]++;
                rts++;
                c->got = 0;
                c->t0 = t1;
                if (t1 < end && write(c->fd, out, (size_t)msg) != msg) { /* small message: fits */
                    errors++;
                }
            }
        }
    }
    double elapsed = now_s() - start;
    printf("{\"round_trips\": %llu, \"seconds\": %.3f, \"rt_per_s\": %.1f, \"p50_us\": %.0f, "
           "\"p99_us\": %.0f, \"errors\": %llu, \"live_conns\": %d, \"conns\": %d, \"msg_bytes\": %d}\n",
           (unsigned long long)rts, elapsed, rts / elapsed, pct(rts, 0.50), pct(rts, 0.99),
           (unsigned long long)errors, live, conns, msg);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "server") == 0) return server(argv[2], atoi(argv[3]));
    if (argc == 7 && strcmp(argv[1], "client") == 0) {
        int conns = atoi(argv[4]), msg = atoi(argv[6]);
        double secs = atof(argv[5]);
        if (conns < 1 || conns > 10000 || msg < 1 || msg > 16384 || secs <= 0 || secs > 3600) {
            fprintf(stderr, "echo: conns 1..10000, msg 1..16384 bytes, seconds 0..3600\n");
            return 2;
        }
        return client(argv[2], atoi(argv[3]), conns, secs, msg);
    }
    fprintf(stderr, "usage: echo server HOST PORT | echo client HOST PORT CONNS SECONDS MSG_BYTES\n");
    return 2;
}
