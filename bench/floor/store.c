/*
 * steward-floor-store: the least a supervisor with an fd store can do across a restart of its
 * service, for the fdstore benchmark's floor row. Not a tool: no options beyond what the
 * experiment needs, no error recovery beyond exiting.
 *
 *   steward-floor-store NOTIFY CONTROL PROGRAM [ARG...]
 *
 * Binds the datagram socket NOTIFY (the service's NOTIFY_SOCKET) and the stream socket
 * CONTROL, starts PROGRAM, and keeps the fds it stores (FDSTORE=1 with FDNAME=, removed by
 * FDSTOREREMOVE=1). Each connection to CONTROL is one restart: SIGTERM, waitpid, what the
 * service sent before it exited read, PROGRAM started again with the stored fds as its fds 3,
 * 4, … (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), and one byte back once it has sent READY=1.
 * PROGRAM is started with fork + execve: this process is a few hundred KiB, so its fork copies
 * next to nothing, and the child must know its own pid for LISTEN_PID before it execs.
 * SIGTERM stops the service, then this.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_STORED 256
#define NAME_MAX_LEN 255

extern char **environ;

static void die(const char *what) {
    perror(what);
    exit(111);
}

static struct {
    int fd;
    char name[NAME_MAX_LEN + 1];
} stored[MAX_STORED];
static int nstored;

static volatile sig_atomic_t stopping;

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static int bound(int type, const char *path) {
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) die("socket path too long");
    strcpy(addr.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (type == SOCK_STREAM && listen(fd, 8) < 0) die("listen");
    return fd;
}

/* The value of KEY= on its own line of the message, copied into out; 0 if absent. */
static int field(const char *msg, const char *key, char *out, size_t size) {
    size_t len = strlen(key);
    for (const char *line = msg; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0) {
        if (strncmp(line, key, len) == 0) {
            const char *end = strchr(line, '\n');
            size_t n = end ? (size_t)(end - line) - len : strlen(line) - len;
            if (n >= size) n = size - 1;
            memcpy(out, line + len, n);
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

/* Reads one notify message (blocking or not); returns 1 if it was READY=1, -1 if there was none. */
static int notified(int notify, int flags) {
    char buf[4096];
    union {
        char space[CMSG_SPACE(sizeof(int) * 253)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
    ssize_t n = recvmsg(notify, &msg, MSG_CMSG_CLOEXEC | flags);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return -1;
        die("recvmsg");
    }
    buf[n] = 0;
    int fds[253];
    int nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds + nfds, CMSG_DATA(c), count * sizeof(int));
            nfds += count;
        }
    }
    char name[NAME_MAX_LEN + 1] = "stored";
    field(buf, "FDNAME=", name, sizeof name);
    if (strstr(buf, "FDSTORE=1")) {
        for (int i = 0; i < nfds; i++) {
            if (nstored == MAX_STORED) die("fd store full");
            stored[nstored].fd = fds[i];
            strcpy(stored[nstored].name, name);
            nstored++;
        }
        nfds = 0;
    }
    for (int i = 0; i < nfds; i++) close(fds[i]);
    if (strstr(buf, "FDSTOREREMOVE=1")) {
        int kept = 0;
        for (int i = 0; i < nstored; i++) {
            if (strcmp(stored[i].name, name) == 0) {
                close(stored[i].fd);
            } else {
                stored[kept++] = stored[i];
            }
        }
        nstored = kept;
    }
    return strncmp(buf, "READY=1", 7) == 0 || strstr(buf, "\nREADY=1") ? 1 : 0;
}

static pid_t start(char **argv, const char *notify_path) {
    /* Built before the fork: the child only formats its pid. */
    static char names[MAX_STORED * (NAME_MAX_LEN + 1) + 16];
    static char fds_var[32], notify_var[128];
    strcpy(names, "LISTEN_FDNAMES=");
    for (int i = 0; i < nstored; i++) {
        if (i) strcat(names, ":");
        strcat(names, stored[i].name);
    }
    snprintf(fds_var, sizeof fds_var, "LISTEN_FDS=%d", nstored);
    snprintf(notify_var, sizeof notify_var, "NOTIFY_SOCKET=%s", notify_path);
    int count = 0;
    while (environ[count]) count++;
    char **envp = calloc(count + 5, sizeof *envp);
    if (!envp) die("calloc");
    int e = 0;
    for (int i = 0; i < count; i++) {
        if (strncmp(environ[i], "LISTEN_", 7) && strncmp(environ[i], "NOTIFY_SOCKET=", 14)) envp[e++] = environ[i];
    }
    char pid_var[32];
    envp[e++] = pid_var;
    envp[e++] = fds_var;
    envp[e++] = names;
    envp[e++] = notify_var;
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        snprintf(pid_var, sizeof pid_var, "LISTEN_PID=%d", getpid());
        /* Above every target first, so that no dup2 overwrites an fd still to be moved. */
        int high[MAX_STORED];
        for (int i = 0; i < nstored; i++) {
            high[i] = fcntl(stored[i].fd, F_DUPFD_CLOEXEC, 3 + nstored);
            if (high[i] < 0) _exit(111);
        }
        for (int i = 0; i < nstored; i++) {
            if (dup2(high[i], 3 + i) < 0) _exit(111);
        }
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(SIGTERM, &dfl, NULL);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    free(envp);
    return pid;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: steward-floor-store NOTIFY CONTROL PROGRAM [ARG...]\n");
        return 100;
    }
    struct sigaction term = {.sa_handler = on_term};
    sigaction(SIGTERM, &term, NULL);
    int notify = bound(SOCK_DGRAM, argv[1]);
    int control = bound(SOCK_STREAM, argv[2]);
    char **program = argv + 3;
    pid_t child = start(program, argv[1]);
    int waiting = -1; /* the control connection waiting for READY=1 */
    while (!stopping) {
        struct pollfd fds[2] = {{.fd = notify, .events = POLLIN}, {.fd = control, .events = POLLIN}};
        if (poll(fds, waiting < 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (fds[0].revents && notified(notify, MSG_DONTWAIT) == 1 && waiting >= 0) {
            if (write(waiting, "k", 1) < 0) { /* the benchmark went away: nothing to tell */
            }
            close(waiting);
            waiting = -1;
        }
        if (waiting < 0 && fds[1].revents) {
            waiting = accept4(control, NULL, NULL, SOCK_CLOEXEC);
            if (waiting < 0) continue;
            kill(child, SIGTERM);
            while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
            }
            while (notified(notify, MSG_DONTWAIT) >= 0) {
            }
            child = start(program, argv[1]);
        }
    }
    kill(child, SIGTERM);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
    return 0;
}
