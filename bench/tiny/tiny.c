/*
 * steward-tiny: the smallest service there is, for the benchmarks. Linked static without a C
 * library (-nostdlib): its whole start-up is the kernel's exec, so what a benchmark measures is
 * the spawn path, not the service.
 *
 *   steward-tiny          write "x\n" to fd 1 and exit 0        (inetd style: fd 1 is the client)
 *   steward-tiny accept   accept one connection on fd 3, write "x\n" to it, exit 0   (lazy)
 *   steward-tiny fd3      write "x\n" to fd 3 and exit 0        (accept mode without stdio=socket)
 *   steward-tiny pause    wait for a signal                      (a service that stays)
 *
 * x86_64 Linux only.
 */

static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

#define SYS_write 1
#define SYS_pause 34
#define SYS_accept 43
#define SYS_exit_group 231

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
    if (same(mode, "accept")) {
        long conn = sys3(SYS_accept, 3, 0, 0);
        finish(conn < 0 ? 1 : conn);
    } else if (same(mode, "fd3")) {
        finish(3);
    } else if (same(mode, "pause")) {
        for (;;) sys3(SYS_pause, 0, 0, 0);
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
