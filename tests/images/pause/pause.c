/*
 * dockershim-py test pause (sandbox) program, a stand-in for registry.k8s.io/pause.
 * Built static by tests/env/setup.sh: gcc -static -O2 -s -o pause pause.c
 *
 *  - blocks in pause() forever;
 *  - exits 0 on SIGINT / SIGTERM;
 *  - reaps every exited child on SIGCHLD (it is PID 1 of the sandbox's PID namespace
 *    when the pod shares one, and orphans get reparented to it);
 *  - "-v" prints a version and exits 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10-dspy"

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

int main(int argc, char **argv) {
    struct sigaction sa;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        printf("pause.c %s\n", VERSION);
        return 0;
    }
    if (getpid() != 1)
        fprintf(stderr, "Warning: pause should be the first process\n");

    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return 1;
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return 2;

    for (;;)
        pause();
    return 42; /* not reached */
}
