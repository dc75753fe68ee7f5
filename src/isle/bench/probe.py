"""The in-instance probe of `isle bench`: one small static C program run the same way at every
level (native, container, sandbox, microVM), so each level runs the same machine code.

    isle-probe cpu N              the compute kernel: N rounds of an integer hash (ms; the
                                  fastest of 5 slices x 5)
    isle-probe sys N              getpid, open+close, stat latency (ns per call, median of 5)
    isle-probe surface            notable syscalls tried with invalid arguments: reachable when
                                  the kernel answers other than ENOSYS/EPERM; caps, kernel
    isle-probe rr-server PORT     TCP echo server (one connection at a time)
    isle-probe rr-client IP PORT N   N 64-byte request/response round trips (us, median)

Output is `key=value` lines. It is compiled once with the host's gcc (-static) and cached under
the isle root by the hash of its source.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["SOURCE", "build"]

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

static double now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y;
}
static double med(double *v, int n) { qsort(v, n, sizeof *v, cmp); return v[n / 2]; }

static int cpu(long n) {
    /* 5 slices of n/5 rounds: the fastest slice x 5 (a neighbour's burst on a shared host
       lengthens some slices, never shortens one) */
    unsigned long h = 1469598103934665603UL;
    double best = 1e300, total = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n / 5; i++) {
            for (int k = 0; k < 1000; k++) {
                h ^= (unsigned long)(i * 1000 + k);
                h *= 1099511628211UL;
            }
        }
        double t = now_ns() - t0;
        total += t;
        if (t < best) best = t;
    }
    printf("cpu_ms=%.3f\ncpu_total_ms=%.3f\ncpu_hash=%lu\n", best * 5 / 1e6, total / 1e6, h % 1000);
    return 0;
}

static int sys(long n) {
    double g[5], o[5], s[5]; struct stat st;
    for (int r = 0; r < 5; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) syscall(SYS_getpid);
        g[r] = (now_ns() - t0) / n;
        t0 = now_ns();
        for (long i = 0; i < n / 4; i++) {
            int fd = open("/", O_RDONLY | O_CLOEXEC);
            if (fd >= 0) close(fd);
        }
        o[r] = (now_ns() - t0) / (n / 4);
        t0 = now_ns();
        for (long i = 0; i < n / 4; i++) stat("/", &st);
        s[r] = (now_ns() - t0) / (n / 4);
    }
    printf("getpid_ns=%.1f\nopen_close_ns=%.1f\nstat_ns=%.1f\n", med(g, 5), med(o, 5), med(s, 5));
    return 0;
}

struct probe { const char *name; long nr; long a, b, c, d, e; };

static int surface(void) {
    /* each with arguments the kernel must reject (bad fd, NULL, bad flags): never acts */
    struct probe p[] = {
        {"mount", SYS_mount, 0, 0, 0, 0, 0},
        {"umount2", SYS_umount2, 0, -1, 0, 0, 0},
        {"pivot_root", SYS_pivot_root, 0, 0, 0, 0, 0},
        {"setns", SYS_setns, -1, 0, 0, 0, 0},
        {"keyctl", SYS_keyctl, -1, 0, 0, 0, 0},
        {"add_key", SYS_add_key, 0, 0, 0, 0, 0},
        {"bpf", SYS_bpf, -1, 0, 0, 0, 0},
        {"perf_event_open", SYS_perf_event_open, 0, -1, -1, -1, -1},
        {"ptrace", SYS_ptrace, -1, 0, 0, 0, 0},
        {"kexec_load", SYS_kexec_load, 0, -1, 0, -1, 0},
        {"init_module", SYS_init_module, 0, 0, 0, 0, 0},
        {"finit_module", SYS_finit_module, -1, 0, -1, 0, 0},
        {"delete_module", SYS_delete_module, 0, -1, 0, 0, 0},
        {"swapon", SYS_swapon, 0, -1, 0, 0, 0},
        {"reboot", SYS_reboot, 0, 0, 0, 0, 0},
        {"open_by_handle_at", SYS_open_by_handle_at, -1, 0, -1, 0, 0},
        {"name_to_handle_at", SYS_name_to_handle_at, -1, 0, 0, 0, -1},
        {"clock_settime", SYS_clock_settime, -1, 0, 0, 0, 0},
        {"syslog", SYS_syslog, -1, 0, -1, 0, 0},
        {"quotactl", SYS_quotactl, -1, 0, 0, 0, 0},
        {"iopl", SYS_iopl, 99, 0, 0, 0, 0},
        {"io_uring_setup", SYS_io_uring_setup, 0, 0, 0, 0, 0},
        {"userfaultfd", SYS_userfaultfd, -1, 0, 0, 0, 0},
        {"fsopen", SYS_fsopen, 0, -1, 0, 0, 0},
        {"move_mount", SYS_move_mount, -1, 0, -1, 0, -1},
        {"open_tree", SYS_open_tree, -1, 0, -1, 0, 0},
        {"unshare", SYS_unshare, -1, 0, 0, 0, 0},
        {"personality", SYS_personality, 0xffffffffL, 0, 0, 0, 0},
        {"mknodat", SYS_mknodat, -1, 0, 0, 0, 0},
        {"chroot", SYS_chroot, 0, 0, 0, 0, 0},
    };
    int n = sizeof p / sizeof p[0], ok = 0;
    char blocked[2048] = "";
    for (int i = 0; i < n; i++) {
        errno = 0;
        long r = syscall(p[i].nr, p[i].a, p[i].b, p[i].c, p[i].d, p[i].e);
        if (r >= 0) { if (p[i].nr == SYS_userfaultfd) close((int)r); ok++; continue; }
        if (errno == ENOSYS || errno == EPERM) {
            if (blocked[0]) strcat(blocked, ",");
            strcat(blocked, p[i].name);
        } else ok++;
    }
    printf("syscalls_tried=%d\nsyscalls_reachable=%d\nsyscalls_blocked=%s\n", n, ok, blocked);
    struct utsname u; uname(&u);
    printf("kernel=%s\n", u.release);
    FILE *f = fopen("/proc/self/status", "r"); char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "CapEff:", 7) || !strncmp(line, "Seccomp:", 8)
                || !strncmp(line, "NoNewPrivs:", 11)) {
            char *c = strchr(line, ':'); *c = 0; char *v = c + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0; printf("%s=%s\n", line, v);
        }
    }
    if (f) fclose(f);
    return 0;
}

static int rr_server(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(s, (void *)&a, sizeof a) || listen(s, 8)) { perror("bind"); return 1; }
    printf("listening=%d\n", port); fflush(stdout);
    for (;;) {
        int c = accept(s, 0, 0); char b[64];
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (;;) {
            ssize_t k = recv(c, b, sizeof b, MSG_WAITALL);
            if (k <= 0 || send(c, b, k, 0) != k) break;
        }
        close(c);
    }
}

static int rr_client(const char *ip, int port, long n) {
    int s = -1, one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    for (int t = 0; t < 100; t++) {
        s = socket(AF_INET, SOCK_STREAM, 0);
        if (!connect(s, (void *)&a, sizeof a)) break;
        close(s); s = -1; usleep(100000);
    }
    if (s < 0) { perror("connect"); return 1; }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double *v = malloc(n * sizeof *v); char b[64] = {1};
    for (long i = 0; i < n; i++) {
        double t0 = now_ns();
        if (send(s, b, sizeof b, 0) != sizeof b || recv(s, b, sizeof b, MSG_WAITALL) != sizeof b) {
            perror("rr");
            return 1;
        }
        v[i] = (now_ns() - t0) / 1e3;
    }
    printf("rr_us=%.1f\n", med(v, n));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "cpu")) return cpu(atol(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "sys")) return sys(atol(argv[2]));
    if (argc >= 2 && !strcmp(argv[1], "surface")) return surface();
    if (argc >= 3 && !strcmp(argv[1], "rr-server")) return rr_server(atoi(argv[2]));
    if (argc >= 5 && !strcmp(argv[1], "rr-client"))
        return rr_client(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr,
            "usage: isle-probe cpu N | sys N | surface | rr-server PORT | rr-client IP PORT N\n");
    return 2;
}
"""


def build(dest_dir: str) -> str:
    """Compile the probe (static) into dest_dir once per source hash; its path."""
    from isle.errors import Unsupported
    from isle.sys import proc

    h = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    out = os.path.join(dest_dir, f"isle-probe-{h}")
    if os.access(out, os.X_OK):
        return out
    cc = proc.which("gcc") or proc.which("cc")
    if cc is None:
        raise Unsupported("isle bench compiles its probe with gcc: apt-get install gcc libc6-dev")
    os.makedirs(dest_dir, exist_ok=True)
    src = os.path.join(dest_dir, f"probe-{h}.c")
    with open(src, "w") as f:
        f.write(SOURCE)
    tmp = f"{out}.{os.getpid()}"
    proc.run([cc, "-O2", "-static", "-o", tmp, src], timeout=120)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out
