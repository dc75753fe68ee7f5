/* isle-exec: the guest's last step before the bundle's process (static, no libc NSS).
 *
 *   isle-exec [-r ROOT] [-w CWD] [-u UID] [-g GID] [-G G1,G2] [-l RES:SOFT:HARD]... [-n]
 *             [-e K=V]... -- PROG ARGS...
 *
 * chroot to ROOT, set rlimits, groups, gid, uid, no_new_privs, chdir CWD, replace the environment
 * and execvp PROG (PATH taken from the new environment) with every signal at its default and none
 * blocked: the guest shell starts it in the background, which ignores SIGINT and SIGQUIT, and a
 * process cannot trap a signal it was started with ignored. Exit 127 if PROG is missing, 126 if it
 * cannot run, 125 for any other failure, each with a message on stderr naming what failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
    fprintf(stderr, "isle-exec: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    exit(125);
}

int main(int argc, char **argv) {
    const char *root = NULL, *cwd = "/";
    long uid = -1, gid = -1;
    int nnp = 0, nenv = 0, ngroups = 0, set_groups = 0;
    char **env = calloc((size_t)argc + 1, sizeof(char *));
    gid_t groups[64];
    int i = 1;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (a[0] != '-' || !a[1] || a[2]) { errno = EINVAL; die("bad option", a); }
        if (a[1] == 'n') { nnp = 1; continue; }
        if (i + 1 >= argc) { errno = EINVAL; die("missing value for", a); }
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
            if (sscanf(v, "%d:%llu:%llu", &res, &soft, &hard) != 3) { errno = EINVAL; die("bad rlimit", v); }
            struct rlimit rl = { (rlim_t)soft, (rlim_t)hard };
            if (setrlimit(res, &rl) != 0) die("setrlimit", v);
            break;
        }
        default: errno = EINVAL; die("unknown option", a);
        }
    }
    if (i >= argc) { errno = EINVAL; die("no program given", NULL); }
    if (root && (chdir(root) != 0 || chroot(".") != 0)) die("chroot", root);
    if (set_groups && setgroups((size_t)ngroups, groups) != 0) die("setgroups", NULL);
    if (gid >= 0 && setgid((gid_t)gid) != 0) die("setgid", NULL);
    if (uid >= 0 && setuid((uid_t)uid) != 0) die("setuid", NULL);
    if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs", NULL);
    if (chdir(cwd) != 0) die("chdir", cwd);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    environ = env;
    execvp(argv[i], &argv[i]);
    int e = errno;
    fprintf(stderr, "isle-exec: exec %s: %s\n", argv[i], strerror(e));
    return (e == ENOENT || e == ENOTDIR) ? 127 : 126;
}
