/* isle-exec: the guest's last step before the bundle's process (static, no libc NSS): it applies
 * the OCI spec inside the guest, as Kata's agent does with its libcontainer.
 *
 * Why a static C helper in the initramfs and not a runtime in the guest: it is ~800 KB, needs no
 * rootfs of its own, and does the whole spec in one fork+exec (under TCG every exec costs ms); the
 * host side (runtime/vm/spec.py) does everything that needs Python or libseccomp -- it validates
 * the spec and compiles the seccomp filter to BPF with isle's own runtime/seccomp code -- and
 * hands the result over as options. Namespaces: the VM gives the container its own kernel,
 * network, hostname and IPC; inside the guest the container's process gets a mount and a pid
 * namespace of its own (-N), so that container root cannot reach the guest's files or processes
 * (the guest init, its control port): ROOT is bound on itself, gets a /proc of its own pid
 * namespace, and becomes the root by pivot_root with the guest's root detached (the guest's root
 * is a bind mount of its initramfs, not the kernel's rootfs, which pivot_root cannot leave:
 * init.sh), as runc does on a host. With -U/-V a user namespace with
 * those maps (C:H:N,... as uid_map/gid_map lines) is made first and owns the others. An exec'd
 * process joins that process's user, pid and mount namespaces (-J, the file -N wrote). Both
 * fork: the parent stays in the guest, forwards signals sent to it and exits as the child did;
 * with -A it writes "started" to FD (the guest's control port) once the child is in its root.
 * Without -N/-J the process is only chrooted into ROOT: the guest's job scripts always give one;
 * bench/vm_bench.py's floor (in a guest) and tests/security/test_vm_guest_paths.py (on the host)
 * run it so.
 *
 *   isle-exec [-r ROOT] [-N PIDFILE [-A FD] [-U MAPS -V MAPS] | -J PIDFILE]
 *             [-t TTY] [-z ROWS:COLS] [-w CWD] [-u UID] [-g GID] [-G G1,G2] [-l RES:SOFT:HARD]... [-n]
 *             [-c BND,EFF,PRM,INH,AMB] [-s FLAGS:BASE64 [-W FILE] | -S FILE] [-m UMASK]
 *             [-o OOM_SCORE_ADJ]
 *             [-d] [-k PATH:TYPE:MAJ:MIN:MODE:UID:GID]... [-y KEY=VALUE]... [-D DOMAIN]
 *             [-M PATH]... [-R PATH]... [-O] [-P PROPAGATION] [-e K=V]... -- PROG ARGS...
 *
 * Before pivot_root (or chroot) to ROOT: -t binds TTY (the process's terminal) on ROOT/dev/console
 * and the stdio that is that terminal is reopened there once in the root; -z sets the size of
 * the terminal on stdin; -d makes, in ROOT/dev (the spec's tmpfs the guest mounted there, not
 * its devtmpfs, which holds the guest's disk and control ports), the default devices (null zero
 * full random urandom tty), the -k devices and the symlinks fd stdin stdout stderr ptmx (core if
 * /proc/kcore exists); -y writes /proc/sys/KEY, -D sets the
 * domain name, -M masks PATH (/dev/null bound over a file, a read-only tmpfs over a directory), -R
 * makes PATH read-only, -O the root, -P sets the root's propagation (shared, slave, private,
 * unbindable: on the root and the mounts under it); -o writes oom_score_adj. In the root: the
 * seccomp program (-s: struct sock_filter[], base64; FLAGS for seccomp(2), hex; -W FILE keeps a
 * copy there before anything else, -S FILE loads that copy: the container's process saves it,
 * exec'd ones load it; a missing FILE fails the exec, never runs it unfiltered) is loaded before
 * the uid changes
 * unless -n (it may need CAP_SYS_ADMIN), else last before exec; -c drops the bounding set, changes
 * uid keeping capabilities, then sets effective/permitted/inheritable and raises ambient (hex
 * masks); -m sets the umask. Every signal is at its default and none blocked at exec: the guest
 * shell starts it in the background, which ignores SIGINT and SIGQUIT, and a process cannot trap
 * a signal it was started with ignored. Exit 127 if PROG is missing, 126 if it cannot run, 125 for
 * any other failure, each with a message on stderr naming what failed. Only fds 0, 1 and 2 reach
 * PROG: the guest shell's others (its control port to the host) are closed on exec.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXV 128

static void die(const char *what, const char *arg) {
    fprintf(stderr, "isle-exec: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    exit(125);
}

static void bad(const char *what, const char *arg) { errno = EINVAL; die(what, arg); }

/* ROOT + PATH with PATH resolved inside ROOT, as the container will see it: its symlinks are
 * followed within ROOT (an absolute one from ROOT) and '..' stops at ROOT, so no link the image
 * holds leads the guest's root to make a device, a mask or a mount outside the container's root.
 * Nothing runs in ROOT yet while this runs (the container's process starts after). */
static char *at(const char *root, const char *path) {
    char rest[2 * PATH_MAX], cur[PATH_MAX] = "", full[3 * PATH_MAX], link[PATH_MAX];
    int links = 0;
    if (snprintf(rest, sizeof rest, "%s", path) >= (int)sizeof rest) bad("path too long", path);
    for (char *r = rest; *r;) {
        while (*r == '/') r++;
        if (!*r) break;
        size_t n = strcspn(r, "/");
        char comp[NAME_MAX + 1];
        if (n > NAME_MAX) bad("name too long", path);
        memcpy(comp, r, n);
        comp[n] = 0;
        r += n;
        if (strcmp(comp, ".") == 0) continue;
        if (strcmp(comp, "..") == 0) {
            char *s = strrchr(cur, '/');
            if (s) *s = 0;
            continue;
        }
        snprintf(full, sizeof full, "%s%s/%s", root, cur, comp);
        ssize_t ln = readlink(full, link, sizeof link - 1);
        if (ln >= 0) {
            char next[2 * PATH_MAX];
            if (++links > 40) bad("too many levels of symbolic links", path);
            link[ln] = 0;
            if (snprintf(next, sizeof next, "%s/%s", link, r) >= (int)sizeof next)
                bad("path too long", path);
            memcpy(rest, next, sizeof rest);
            r = rest;
            if (link[0] == '/') cur[0] = 0;
        } else {
            size_t l = strlen(cur);
            if (l + n + 2 > sizeof cur) bad("path too long", path);
            cur[l] = '/';
            memcpy(cur + l + 1, comp, n + 1);
        }
    }
    char *p = malloc(strlen(root) + strlen(cur) + 2);
    if (!p) die("out of memory", NULL);
    sprintf(p, "%s%s", root, cur[0] ? cur : "/");
    return p;
}

static void mkdirs(char *path, mode_t mode) {  /* mkdir -p */
    for (char *s = path + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(path, mode) != 0 && errno != EEXIST) die("mkdir", path);
        *s = '/';
    }
    if (mkdir(path, mode) != 0 && errno != EEXIST) die("mkdir", path);
}

/* ROOT/dev (the spec's tmpfs, or the rootfs's directory): default devices, the spec's, symlinks */
static void setup_dev(const char *root, char **devs, int ndevs) {
    char *tmp = at(root, "/dev");
    mkdirs(tmp, 0755);
    static const struct { const char *name; unsigned maj, min; } DEFAULT[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9},
        {"tty", 5, 0},
    };
    for (size_t i = 0; i < sizeof DEFAULT / sizeof DEFAULT[0]; i++) {
        char *p = at(tmp, DEFAULT[i].name);
        if (mknod(p, S_IFCHR | 0666, makedev(DEFAULT[i].maj, DEFAULT[i].min)) != 0 && errno != EEXIST)
            die("mknod", p);
        free(p);
    }
    for (int i = 0; i < ndevs; i++) {  /* PATH:TYPE:MAJ:MIN:MODE:UID:GID (PATH under /dev) */
        char path[512], type;
        unsigned maj, min, mode;
        long uid, gid;
        if (sscanf(devs[i], "%511[^:]:%c:%u:%u:%o:%ld:%ld", path, &type, &maj, &min, &mode, &uid,
                   &gid) != 7 || strncmp(path, "/dev/", 5) != 0)
            bad("bad device", devs[i]);
        mode_t kind = type == 'b' ? S_IFBLK : type == 'p' ? S_IFIFO : S_IFCHR;
        char *p = at(tmp, path + 4);
        char *slash = strrchr(p, '/');
        *slash = 0; mkdirs(p, 0755); *slash = '/';
        unlink(p);
        if (mknod(p, kind | (mode & 07777), makedev(maj, min)) != 0) die("mknod", path);
        if (chown(p, (uid_t)uid, (gid_t)gid) != 0) die("chown", path);
        if (chmod(p, mode & 07777) != 0) die("chmod", path);
        free(p);
    }
    static const char *LINKS[][2] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"}, {"/proc/kcore", "core"},
    };
    for (size_t i = 0; i < sizeof LINKS / sizeof LINKS[0]; i++) {
        if (strcmp(LINKS[i][1], "core") == 0 && access("/proc/kcore", F_OK) != 0) continue;
        char *p = at(tmp, LINKS[i][1]);
        if (symlink(LINKS[i][0], p) != 0 && errno != EEXIST) die("symlink", p);
        free(p);
    }
    free(tmp);
}

static void write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open", path);
    size_t n = strlen(value);
    if (write(fd, value, n) != (ssize_t)n) die("write", path);
    close(fd);
}

static void mask(const char *root, const char *path) {
    char *p = at(root, path);
    struct stat st;
    if (lstat(p, &st) != 0) {  /* nothing there: nothing to hide */
        if (errno != ENOENT && errno != ENOTDIR) die("stat", p);
    } else if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", p, "tmpfs", MS_RDONLY, "size=0") != 0) die("mask", path);
    } else if (mount("/dev/null", p, NULL, MS_BIND, NULL) != 0) {
        die("mask", path);
    }
    free(p);
}

static unsigned long vfs_flags(const char *p) {  /* a mount's flags, to keep on a remount */
    struct statvfs sv;
    if (statvfs(p, &sv) != 0) die("statvfs", p);
    unsigned long f = 0;
    if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

static void readonly(const char *root, const char *path, int bind) {
    char *p = path ? at(root, path) : strdup(root);
    if (bind && mount(p, p, NULL, MS_BIND | MS_REC, NULL) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) { free(p); return; }
        die("bind", p);
    }
    if (mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | vfs_flags(p), NULL) != 0)
        die("remount read-only", p);
    free(p);
}

/* -N and -J: the parent stays in the guest's namespaces and supervises the container's process:
 * signals sent to it by a process (the guest shell's kill) go on to the child, the child's end is
 * its exit status (128 + SIGNAL when killed, as the shell reports it). Signals from the terminal
 * (si_code > 0) reach the child directly: it shares the session and process group. */
static volatile pid_t child_pid;

static void forward(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    if (si->si_code <= 0 && child_pid > 0) kill(child_pid, sig);
}

static void forward_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = forward;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD) sigaction(sig, &sa, NULL);
}

static int supervise(pid_t c) {  /* reaps everything reparented here (subreaper), returns c's end */
    child_pid = c;
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) die("wait", NULL);
        if (w == c) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
}

static void xwrite(int fd, const void *b, size_t n, const char *what) {
    if (write(fd, b, n) != (ssize_t)n) die("write", what);
}

static void write_map(pid_t pid, const char *file, const char *spec) {  /* "C:H:N,C:H:N" */
    char path[64], buf[4096];
    size_t n = 0;
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    for (const char *s = spec; *s && n < sizeof buf - 2; s++) {
        buf[n++] = *s == ':' ? ' ' : *s == ',' ? '\n' : *s;
    }
    buf[n++] = '\n';
    buf[n] = 0;
    write_file(path, buf);
}

/* -N: the container's process in a mount and pid namespace of its own (a user namespace too when
 * uid/gid maps are given, made first so that it owns the others, as runc does). Returns in the
 * container's process (pid 1 of its namespace); the parent supervises it and exits. With a user
 * namespace a middle process (M) unshares it, waits for the parent to write its maps, unshares
 * the rest and forks the container's process, whose pid it hands up before it exits (the parent,
 * a subreaper, inherits it); without one the parent forks the container's process itself. `ready` is written by the child once it has pivoted: only
 * then does PIDFILE name it (an exec joining earlier would join the guest's root). */
static int ready_fd = -1;
static int announce_fd = -1;  /* -A FD: "started" written there once the child is in its root */

static void spawn(const char *pidfile, const char *uidmap, const char *gidmap) {
    int up[2], down[2], rd[2];
    if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC) || pipe2(rd, O_CLOEXEC)) die("pipe", NULL);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) die("subreaper", NULL);
    forward_signals();
    pid_t c = 0, m = 0;
    if (!uidmap) {  /* no user namespace: no middle process (every fork counts under TCG) */
        if (unshare(CLONE_NEWPID) != 0) die("unshare", "pid namespace");
        c = fork();
        if (c < 0) die("fork", NULL);
        if (c == 0) {
            if (unshare(CLONE_NEWNS) != 0) die("unshare", "mount namespace");
            close(up[0]); close(up[1]); close(down[0]); close(down[1]); close(rd[0]);
            ready_fd = rd[1];
            return;
        }
    } else if ((m = fork()) < 0) {
        die("fork", NULL);
    } else if (m == 0) {
        close(up[0]); close(down[1]); close(rd[0]);
        char b;  /* (uidmap is set here: the branch above has none) */
        if (unshare(CLONE_NEWUSER) != 0) die("unshare", "user namespace");
        xwrite(up[1], "u", 1, "sync");
        if (read(down[0], &b, 1) != 1) _exit(125);  /* the parent said why */
        if (unshare(CLONE_NEWNS | CLONE_NEWPID) != 0) die("unshare", "mount and pid namespaces");
        pid_t c = fork();
        if (c < 0) die("fork", NULL);
        if (c == 0) {
            close(up[1]); close(down[0]);
            ready_fd = rd[1];
            return;
        }
        xwrite(up[1], &c, sizeof c, "sync");
        _exit(0);
    }
    close(up[1]); close(down[0]); close(rd[1]);
    char b;
    if (m > 0) {
        if (read(up[0], &b, 1) == 1) {
            write_map(m, "uid_map", uidmap);
            write_map(m, "gid_map", gidmap ? gidmap : uidmap);
            xwrite(down[1], "m", 1, "sync");
        }
        if (read(up[0], &c, sizeof c) != sizeof c) c = 0;
        if (c <= 0) { int st; waitpid(m, &st, 0); exit(125); }  /* M said why on stderr */
    }
    close(up[0]); close(down[1]);
    child_pid = c;
    if (read(rd[0], &b, 1) == 1) {  /* pivoted: execs may join it now */
        char tmp[512], num[32];
        snprintf(tmp, sizeof tmp, "%s.tmp", pidfile);
        snprintf(num, sizeof num, "%d\n", (int)c);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) die("open", tmp);
        xwrite(fd, num, strlen(num), tmp);
        close(fd);
        if (rename(tmp, pidfile) != 0) die("rename", tmp);
    }
    close(rd[0]);
    /* as soon as the child is in its root, or has failed before: the guest shell need not poll
     * (a fork+exec per poll under TCG) and a failed start still gets its "started" then "exit" */
    if (announce_fd >= 0 && write(announce_fd, "started\n", 8) != 8) die("write", "started");
    exit(supervise(c));
}

/* the container's side of -N, ROOT being the guest's view of its root: a private copy of the
 * mount table, ROOT bound on itself (a mount this namespace owns, which pivot_root needs), a
 * /proc of its own pid namespace over the guest's, then (after masks and read-only paths, done
 * by the caller on the copy) pivot_root into it with the guest's root detached: no path, '..'
 * or chroot trick leads back to the guest's files */
static void enter_root(const char *root) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make / private", NULL);
    if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind", root);
    char *proc = at(root, "/proc");
    struct statfs sf;
    if (statfs(proc, &sf) == 0 && sf.f_type == 0x9fa0 /* PROC_SUPER_MAGIC */ &&
        mount("proc", proc, "proc", vfs_flags(proc), NULL) != 0)
        die("mount", proc);
    free(proc);
}

/* -t TTY: the process's terminal (the guest's virtconsole) bound on ROOT/dev/console, as runc binds
 * the pty there, so that the container's /dev has a node for it */
static void bind_console(const char *root, const char *tty, int create) {
    char *p = at(root, "/dev/console");
    if (create) {  /* as the guest's root, before any user namespace */
        int fd = open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) die("create", p);
        if (fd >= 0) close(fd);
    } else if (mount(tty, p, NULL, MS_BIND, NULL) != 0) {
        die("bind the terminal on", p);
    }
    free(p);
}

/* after the root changed: stdio that is the terminal reopened by its path in the container's
 * /dev, so that ttyname() (readlink of /proc/self/fd/N) names a file the container has */
static void reopen_console(void) {
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return;
    for (int i = 0; i < 3; i++)
        if (isatty(i) && dup2(fd, i) < 0) die("dup2", "/dev/console");
    close(fd);
}

static void pivot(const char *root) {
    if (chdir(root) != 0) die("chdir", root);
    if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root", root);
    if (umount2(".", MNT_DETACH) != 0) die("detach the guest's root", NULL);
    if (chdir("/") != 0) die("chdir", "/");
}

/* -J: an exec'd process joins the container's user (if it has one), pid and mount namespaces;
 * its root becomes the container's. The parent supervises the forked child, as with -N. */
static void join(const char *pidfile) {
    int fd = -1;
    for (int n = 0; n < 3000 && (fd = open(pidfile, O_RDONLY | O_CLOEXEC)) < 0; n++)
        usleep(1000);  /* the container's process is still starting */
    if (fd < 0) die("open", pidfile);
    char buf[32] = {0};
    if (read(fd, buf, sizeof buf - 1) <= 0) die("read", pidfile);
    close(fd);
    int pid = atoi(buf);
    static const struct { const char *name; int type; } NS[] = {
        {"user", CLONE_NEWUSER}, {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS},
    };
    int fds[3];
    for (int k = 0; k < 3; k++) {  /* all opened first: /proc is the container's once in its ns */
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/ns/%s", pid, NS[k].name);
        if ((fds[k] = open(p, O_RDONLY | O_CLOEXEC)) < 0) die("the container's namespace", p);
    }
    struct stat mine, theirs;
    if (fstat(fds[0], &theirs) == 0 && stat("/proc/self/ns/user", &mine) == 0 &&
        mine.st_ino != theirs.st_ino && setns(fds[0], CLONE_NEWUSER) != 0)
        die("join", "user namespace");
    if (setns(fds[1], CLONE_NEWPID) != 0) die("join", "pid namespace");
    if (setns(fds[2], CLONE_NEWNS) != 0) die("join", "mount namespace");
    for (int k = 0; k < 3; k++) close(fds[k]);
    forward_signals();
    pid_t c = fork();
    if (c < 0) die("fork", NULL);
    if (c == 0) return;
    exit(supervise(c));
}

static int b64(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static void seccomp_load(const char *arg) {  /* FLAGS:BASE64 of struct sock_filter[] */
    char *end;
    unsigned long flags = strtoul(arg, &end, 16);
    if (*end != ':') bad("bad seccomp", "(want FLAGS:BASE64)");
    const char *s = end + 1;
    size_t n = strlen(s);
    unsigned char *buf = malloc(n);
    size_t len = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        int v = b64((unsigned char)s[i]);
        if (v < 0) bad("bad seccomp base64", NULL);
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) { bits -= 8; buf[len++] = (unsigned char)(acc >> bits); }
    }
    if (len == 0 || len % sizeof(struct sock_filter)) bad("bad seccomp program length", NULL);
    struct sock_fprog prog = { (unsigned short)(len / sizeof(struct sock_filter)),
                               (struct sock_filter *)buf };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) < 0) die("seccomp", NULL);
}

/* -W: the container's process keeps its program (FLAGS:BASE64) in the guest's own root, outside
 * the container's, so that every exec'd process gets the same filter (-S) without the host
 * sending ~13 KB per exec (the guest shell reads a control line a byte at a time under TCG) */
static void seccomp_save(const char *path, const char *arg) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) die("open", tmp);
    size_t n = strlen(arg);
    if (write(fd, arg, n) != (ssize_t)n || close(fd) != 0) die("write", tmp);
    if (rename(tmp, path) != 0) die("rename", tmp);
}

static char *seccomp_read(const char *path) {  /* fails closed: no saved program, no exec */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) die("seccomp program of the container", path);
    struct stat st;
    if (fstat(fd, &st) != 0) die("stat", path);
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) die("out of memory", NULL);
    ssize_t got = read(fd, buf, (size_t)st.st_size);
    if (got != st.st_size) die("read", path);
    buf[got] = 0;
    close(fd);
    return buf;
}

/* The guest shell's fds (its control port to the host's monitor, fd 3) must not reach the
 * container's processes: only 0, 1 and 2 do, as with runc without --preserve-fds */
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
static void cloexec_from(int first) {
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
    struct rlimit rl;
    long top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (long)rl.rlim_cur : 65536;
    for (long fd = first; fd < top; fd++) fcntl((int)fd, F_SETFD, FD_CLOEXEC);
}

static int cap_last(void) {
    int last = 40;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
    if (f) { if (fscanf(f, "%d", &last) != 1) last = 40; fclose(f); }
    return last;
}

int main(int argc, char **argv) {
    const char *root = NULL, *cwd = "/", *domain = NULL, *oom = NULL;
    const char *seccomp = NULL, *prop = NULL, *sc_save = NULL, *sc_file = NULL;
    const char *new_ns = NULL, *join_ns = NULL, *uidmap = NULL, *gidmap = NULL, *tty = NULL;
    struct winsize winsz = {0};
    long uid = -1, gid = -1, umask_v = -1;
    int nnp = 0, dev = 0, nenv = 0, ngroups = 0, set_groups = 0, roroot = 0, have_caps = 0;
    int ndevs = 0, nsysctl = 0, nmask = 0, nro = 0;
    uint64_t caps[5] = {0};  /* bounding, effective, permitted, inheritable, ambient */
    char **env = calloc((size_t)argc + 1, sizeof(char *));
    char *devs[MAXV], *sysctls[MAXV], *masked[MAXV], *ros[MAXV];
    gid_t groups[64];
    int i = 1;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (a[0] != '-' || !a[1] || a[2]) bad("bad option", a);
        if (a[1] == 'n') { nnp = 1; continue; }
        if (a[1] == 'O') { roroot = 1; continue; }
        if (a[1] == 'd') { dev = 1; continue; }
        if (i + 1 >= argc) bad("missing value for", a);
        char *v = argv[++i];
        switch (a[1]) {
        case 'r': root = v; break;
        case 'w': cwd = v; break;
        case 'u': uid = strtol(v, NULL, 10); break;
        case 'g': gid = strtol(v, NULL, 10); break;
        case 'e': env[nenv++] = v; break;
        case 'G': {
            set_groups = 1;
            for (char *t = strtok(v, ","); t && ngroups < 64; t = strtok(NULL, ","))
                groups[ngroups++] = (gid_t)strtoul(t, NULL, 10);
            break;
        }
        case 'l': {
            int res; unsigned long long soft, hard;
            if (sscanf(v, "%d:%llu:%llu", &res, &soft, &hard) != 3) bad("bad rlimit", v);
            struct rlimit rl = { (rlim_t)soft, (rlim_t)hard };
            if (setrlimit(res, &rl) != 0) die("setrlimit", v);
            break;
        }
        case 'c':
            if (sscanf(v, "%lx,%lx,%lx,%lx,%lx", &caps[0], &caps[1], &caps[2], &caps[3], &caps[4]) != 5)
                bad("bad capabilities", v);
            have_caps = 1;
            break;
        case 's': seccomp = v; break;
        case 'W': sc_save = v; break;
        case 'S': sc_file = v; break;
        case 'm': umask_v = strtol(v, NULL, 8); break;
        case 'o': oom = v; break;
        case 'D': domain = v; break;
        case 'P': prop = v; break;
        case 'k': if (ndevs < MAXV) devs[ndevs++] = v; break;
        case 'y': if (nsysctl < MAXV) sysctls[nsysctl++] = v; break;
        case 'M': if (nmask < MAXV) masked[nmask++] = v; break;
        case 'R': if (nro < MAXV) ros[nro++] = v; break;
        case 'N': new_ns = v; break;
        case 'A': announce_fd = atoi(v); break;
        case 't': tty = v; break;
        case 'z':
            if (sscanf(v, "%hu:%hu", &winsz.ws_row, &winsz.ws_col) != 2) bad("bad size", v);
            break;
        case 'J': join_ns = v; break;
        case 'U': uidmap = v; break;
        case 'V': gidmap = v; break;
        default: bad("unknown option", a);
        }
    }
    if (i >= argc) bad("no program given", NULL);
    if (sc_file && !seccomp) seccomp = seccomp_read(sc_file);
    if (sc_save && seccomp) seccomp_save(sc_save, seccomp);
    if (join_ns) { join(join_ns); root = NULL; }  /* the container's root is ours now */
    if (new_ns && !root) bad("-N needs", "-r ROOT");
    if (uidmap && !new_ns) bad("-U needs", "-N PIDFILE");
    umask(0);
    if (dev) setup_dev(root ? root : "", devs, ndevs);
    for (int k = 0; k < nsysctl; k++) {
        char *eq = strchr(sysctls[k], '=');
        if (!eq) bad("bad sysctl", sysctls[k]);
        *eq = 0;
        char path[512];
        snprintf(path, sizeof path, "/proc/sys/%s", sysctls[k]);
        for (char *c = path + 10; *c; c++) if (*c == '.') *c = '/';
        write_file(path, eq + 1);
    }
    if (domain && setdomainname(domain, strlen(domain)) != 0) die("setdomainname", domain);
    if (oom) write_file("/proc/self/oom_score_adj", oom);
    if (tty && root) bind_console(root, tty, 1);
    if (new_ns) {
        spawn(new_ns, uidmap, gidmap);  /* returns in the container's process only */
        enter_root(root);
    }
    if (tty && root) bind_console(root, tty, 0);
    for (int k = 0; k < nmask; k++) mask(root ? root : "", masked[k]);
    for (int k = 0; k < nro; k++) readonly(root ? root : "", ros[k], 1);
    if (roroot && root) readonly(root, NULL, 0);
    if (new_ns) {
        pivot(root);
        xwrite(ready_fd, "r", 1, "sync");
        close(ready_fd);
    }
    if (prop && root) {  /* linux.rootfsPropagation, on the root and every mount under it */
        unsigned long f = strstr(prop, "shared") ? MS_SHARED : strstr(prop, "slave") ? MS_SLAVE
                        : strstr(prop, "unbindable") ? MS_UNBINDABLE : MS_PRIVATE;
        if (mount(NULL, new_ns ? "/" : root, NULL, MS_REC | f, NULL) != 0)
            die("rootfs propagation", prop);
    }
    if (root && !new_ns && (chdir(root) != 0 || chroot(".") != 0)) die("chroot", root);
    if (tty && root) reopen_console();
    /* -z: the terminal's size before the program looks (the tty is stdin; a resize set from the
     * guest shell would not last: the last close of the tty resets it) */
    if (winsz.ws_row && isatty(0) && ioctl(0, TIOCSWINSZ, &winsz) != 0) die("set the size", NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    if (seccomp && !nnp) seccomp_load(seccomp);
    if (have_caps) {
        int last = cap_last();
        for (int c = 0; c <= last; c++)
            if (!(caps[0] >> c & 1) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
                die("drop bounding capability", NULL);
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) die("keepcaps", NULL);
    }
    if (set_groups && setgroups((size_t)ngroups, groups) != 0) die("setgroups", NULL);
    if (gid >= 0 && setgid((gid_t)gid) != 0) die("setgid", NULL);
    if (uid >= 0 && setuid((uid_t)uid) != 0) die("setuid", NULL);
    if (have_caps) {
        struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct d[2];
        for (int w = 0; w < 2; w++) {
            d[w].effective = (uint32_t)(caps[1] >> (32 * w));
            d[w].permitted = (uint32_t)(caps[2] >> (32 * w));
            d[w].inheritable = (uint32_t)(caps[3] >> (32 * w));
        }
        if (syscall(SYS_capset, &h, d) != 0) die("capset", NULL);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
            die("clear ambient capabilities", NULL);
        for (int c = 0; c < 64; c++)
            if ((caps[4] >> c & 1) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0)
                die("raise ambient capability", NULL);
    }
    if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs", NULL);
    if (chdir(cwd) != 0) die("chdir", cwd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(umask_v >= 0 ? (mode_t)umask_v : 022);
    environ = env;
    cloexec_from(3);  /* before a filter that might deny close_range */
    if (seccomp && nnp) seccomp_load(seccomp);
    execvp(argv[i], &argv[i]);
    int e = errno;
    fprintf(stderr, "isle-exec: exec %s: %s\n", argv[i], strerror(e));
    return (e == ENOENT || e == ENOTDIR) ? 127 : 126;
}
