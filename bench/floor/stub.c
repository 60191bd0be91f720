/*
 * steward-floor-stub: an executor that does nothing but exec, for the two-exec floor row:
 * `steward-floor spawn 0 SOCKET steward-floor-stub PROGRAM [ARG...]` execs twice per connection,
 * as steward's split does (executor, then service), without any of the executor's work. Linked
 * static without a C library, like steward's executor: its start-up is the kernel's exec.
 *
 * `steward-floor-stub -w PROGRAM [ARG...]` is an idle executor that does nothing but wait: it
 * blocks reading fd 3 and execs PROGRAM once a byte comes (end of file: it exits 0), for the
 * pooled respawn floor, where the one message of a spawn replaces the executor's exec.
 *
 * x86_64 Linux only.
 */

#define SYS_read 0
#define SYS_close 3
#define SYS_execve 59
#define SYS_exit_group 231

static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

__attribute__((used)) static void start(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = (char **)(sp + argc + 2);
    if (argc > 2 && argv[1][0] == '-' && argv[1][1] == 'w' && argv[1][2] == 0) {
        char go;
        if (sys3(SYS_read, 3, (long)&go, 1) != 1) sys3(SYS_exit_group, 0, 0, 0);
        sys3(SYS_close, 3, 0, 0);
        argv += 1;
    }
    if (argc > 1) sys3(SYS_execve, (long)argv[1], (long)(argv + 1), (long)envp);
    sys3(SYS_exit_group, 127, 0, 0);
}

/* The kernel enters here with the stack pointer at argc; align it and call start(sp). */
__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start\n"
        "  hlt\n");
