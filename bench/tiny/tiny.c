/*
 * steward-tiny: the smallest service there is, for the benchmarks. Linked static without a C
 * library (-nostdlib): its whole start-up is the kernel's exec, so what a benchmark measures is
 * the spawn path, not the service.
 *
 *   steward-tiny          write "x\n" to fd 1 and exit 0        (inetd style: fd 1 is the client)
 *   steward-tiny accept   accept one connection on fd 3, write "x\n" to it, exit 0   (lazy)
 *   steward-tiny fd3      write "x\n" to fd 3 and exit 0        (accept mode without stdio=socket)
 *   steward-tiny pause    wait for a signal                      (a service that stays)
 *   steward-tiny notify   send READY=1 to $NOTIFY_SOCKET, write the CLOCK_MONOTONIC time it
 *                         was sent (ns) to fd 1, wait for a signal
 *   steward-tiny stamp    write the CLOCK_MONOTONIC time (ns) to fd 1, wait for a signal
 *   steward-tiny sleep-exit MS     sleep MS milliseconds, exit 0      (a setup task)
 *   steward-tiny sleep-notify MS   sleep MS milliseconds, then as `notify`
 *   steward-tiny ping N [US]   send READY=1, then N times WATCHDOG=1 (US microseconds apart),
 *                         then STATUS=pinged, to $NOTIFY_SOCKET; wait for a signal
 *
 * x86_64 Linux only.
 */

static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#define SYS_write 1
#define SYS_pause 34
#define SYS_nanosleep 35
#define SYS_socket 41
#define SYS_accept 43
#define SYS_sendto 44
#define SYS_connect 42
#define SYS_clock_gettime 228
#define SYS_exit_group 231

struct timespec_k {
    long sec, nsec;
};

static void pause_forever(void) {
    for (;;) sys3(SYS_pause, 0, 0, 0);
}

static long now_ns(void) {
    struct timespec_k t;
    sys3(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, (long)&t, 0);
    return t.sec * 1000000000L + t.nsec;
}

/* Writes `n` in decimal and a newline to fd 1. */
static void write_number(long n) {
    char buf[24];
    int i = sizeof buf;
    buf[--i] = '\n';
    do {
        buf[--i] = '0' + n % 10;
        n /= 10;
    } while (n > 0 && i > 0);
    sys3(SYS_write, 1, (long)(buf + i), sizeof buf - i);
}

static long number(const char *s) {
    long n = 0;
    while (*s >= '0' && *s <= '9') n = n * 10 + (*s++ - '0');
    return n;
}

static void sleep_ms(long ms) {
    struct timespec_k t = {ms / 1000, (ms % 1000) * 1000000L};
    sys3(SYS_nanosleep, (long)&t, 0, 0);
}

/* The value of NAME= in the environment, or 0. */
static const char *getenv_k(const char **envp, const char *name) {
    for (; *envp; envp++) {
        const char *e = *envp, *n = name;
        while (*n && *e == *n) {
            e++;
            n++;
        }
        if (!*n && *e == '=') return e + 1;
    }
    return 0;
}

/* A datagram socket connected to $NOTIFY_SOCKET. */
static long notify_socket(const char **envp) {
    struct {
        unsigned short family;
        char path[108];
    } addr = {1 /* AF_UNIX */, {0}};
    const char *path = getenv_k(envp, "NOTIFY_SOCKET");
    int len = 0;
    while (path && path[len] && len < 107) {
        addr.path[len] = path[len];
        len++;
    }
    long fd = sys3(SYS_socket, 1 /* AF_UNIX */, 2 /* SOCK_DGRAM */, 0);
    sys3(SYS_connect, fd, (long)&addr, 2 + len + 1);
    return fd;
}

static void say(long fd, const char *text) {
    int len = 0;
    while (text[len]) len++;
    sys6(SYS_sendto, fd, (long)text, len, 0, 0, 0);
}

/* READY=1 to $NOTIFY_SOCKET, then the time it was sent on fd 1, then stay. */
static void notify(const char **envp) {
    long fd = notify_socket(envp);
    long sent = now_ns();
    say(fd, "READY=1");
    write_number(sent);
    pause_forever();
}

/* READY=1, N pings (a pause of US microseconds after each), STATUS=pinged. */
static void ping(const char **envp, long n, long us) {
    long fd = notify_socket(envp);
    struct timespec_k t = {0, us * 1000L};
    say(fd, "READY=1");
    for (long i = 0; i < n; i++) {
        say(fd, "WATCHDOG=1");
        if (us) sys3(SYS_nanosleep, (long)&t, 0, 0);
    }
    say(fd, "STATUS=pinged");
    pause_forever();
}

static void finish(long fd) {
    sys3(SYS_write, fd, (long)"x\n", 2);
    sys3(SYS_exit_group, 0, 0, 0);
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

__attribute__((used)) static void start(long *sp) {
    long argc = sp[0];
    const char *mode = argc > 1 ? (const char *)sp[2] : "";
    const char *arg = argc > 2 ? (const char *)sp[3] : "0";
    const char **envp = (const char **)(sp + argc + 2);
    if (same(mode, "notify")) {
        notify(envp);
    } else if (same(mode, "ping")) {
        ping(envp, number(arg), argc > 3 ? number((const char *)sp[4]) : 0);
    } else if (same(mode, "sleep-notify")) {
        sleep_ms(number(arg));
        notify(envp);
    } else if (same(mode, "stamp")) {
        write_number(now_ns());
        pause_forever();
    } else if (same(mode, "sleep-exit")) {
        sleep_ms(number(arg));
        sys3(SYS_exit_group, 0, 0, 0);
    } else if (same(mode, "accept")) {
        long conn = sys3(SYS_accept, 3, 0, 0);
        finish(conn < 0 ? 1 : conn);
    } else if (same(mode, "fd3")) {
        finish(3);
    } else if (same(mode, "pause")) {
        pause_forever();
    }
    finish(1);
}

/* The kernel enters here with the stack pointer at argc; align it and call start(sp). */
__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start\n"
        "  hlt\n");
