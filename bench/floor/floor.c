/*
 * steward-floor: the least an accept server that spawns one process per connection can do, for
 * the benchmarks' floor rows. Not a tool: no options beyond what the experiments need, no error
 * recovery beyond exiting.
 *
 *   steward-floor spawn MIB SOCKET PROGRAM [ARG...]
 *   steward-floor fork  MIB SOCKET PROGRAM [ARG...]
 *   steward-floor lazy  MIB SOCKET PROGRAM [ARG...]
 *
 * Listens on the unix socket SOCKET (backlog 128); for each connection, starts PROGRAM with the
 * connection as its fds 0 and 1, closes its own copy and reaps whatever has exited (waitpid
 * WNOHANG), at most 64 children at a time, like the peers are configured. `spawn` starts it with
 * posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), no page tables copied); `fork` with fork and
 * execve in the child, the classic inetd way. Before listening it holds MIB MiB of touched
 * anonymous memory (0 for none): what a large server pays per fork.
 *
 * `lazy` is the floor of a lazy service instead: it waits (poll) until the listener is readable,
 * posix_spawns PROGRAM with the listener as its fd 3 and waits for it to exit; again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 64
#define BACKLOG 128

extern char **environ;

static void die(const char *what) {
    perror(what);
    exit(111);
}

static int live;

static void reap(int block) {
    while (live > 0) {
        pid_t pid = waitpid(-1, NULL, block ? 0 : WNOHANG);
        if (pid <= 0) {
            if (pid < 0 && errno == EINTR) continue;
            return;
        }
        live--;
        block = 0;
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: steward-floor spawn|fork|lazy MIB SOCKET PROGRAM [ARG...]\n");
        return 100;
    }
    int use_fork = strcmp(argv[1], "fork") == 0;
    int lazy = strcmp(argv[1], "lazy") == 0;
    if (!use_fork && !lazy && strcmp(argv[1], "spawn") != 0) die("mode must be spawn, fork or lazy");
    size_t bytes = (size_t)strtoul(argv[2], NULL, 10) << 20;
    if (bytes) {
        char *ballast = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ballast == MAP_FAILED) die("mmap");
        for (size_t i = 0; i < bytes; i += 4096) ballast[i] = 1;
    }
    char **child_argv = argv + 4;

    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[3]) >= sizeof addr.sun_path) die("socket path too long");
    strcpy(addr.sun_path, argv[3]);
    unlink(argv[3]);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, BACKLOG) < 0) die("listen");
    /* The client may be gone before the service writes: a write error, not our death. */
    signal(SIGPIPE, SIG_IGN);

    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    /* The children get SIGPIPE back at its default, as every peer gives them. */
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);

    while (lazy) {
        struct pollfd ready = {.fd = listener, .events = POLLIN};
        if (poll(&ready, 1, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        pid_t pid;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, listener, 3);
        int err = posix_spawn(&pid, child_argv[0], &actions, &attr, child_argv, environ);
        posix_spawn_file_actions_destroy(&actions);
        if (err) {
            errno = err;
            die("posix_spawn");
        }
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }

    for (;;) {
        if (live >= MAX_CHILDREN) reap(1);
        int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            die("accept4");
        }
        pid_t pid;
        if (use_fork) {
            pid = fork();
            if (pid == 0) {
                signal(SIGPIPE, SIG_DFL);
                dup2(conn, 0);
                dup2(conn, 1);
                execve(child_argv[0], child_argv, environ);
                _exit(127);
            }
            if (pid < 0) die("fork");
        } else {
            /* Built per connection: the connection's fd number is not always the same. */
            posix_spawn_file_actions_init(&actions);
            posix_spawn_file_actions_adddup2(&actions, conn, 0);
            posix_spawn_file_actions_adddup2(&actions, conn, 1);
            int err = posix_spawn(&pid, child_argv[0], &actions, &attr, child_argv, environ);
            posix_spawn_file_actions_destroy(&actions);
            if (err) {
                errno = err;
                die("posix_spawn");
            }
        }
        live++;
        close(conn);
        reap(0);
    }
}
