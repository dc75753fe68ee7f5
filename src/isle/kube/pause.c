/* isle's pause: the process that holds a pod sandbox's namespaces open.
 * Written for isle (no code taken from elsewhere). Built static: `gcc -static -O2 -o pause pause.c`.
 * Exits 0 on SIGINT/SIGTERM; as PID 1 of a shared PID namespace it reaps every orphan. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    struct sigaction sa;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("isle-pause 1.0");
        return 0;
    }
    if (getpid() != 1)
        fputs("isle-pause: not PID 1: orphans of this namespace go elsewhere\n", stderr);
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return 1;
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return 2;
    for (;;)
        pause();
    return 42;
}
