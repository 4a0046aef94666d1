/* SPDX-License-Identifier: Apache-2.0 */
/*
 * clone3 with a child function on its own stack. glibc 2.36 has no public
 * clone3 wrapper, and the raw syscall cannot safely return into C code in a
 * child that shares the parent's memory (CLONE_VM): the child would run on,
 * and corrupt, the parent's stack. This trampoline starts the child directly
 * in fn(arg) on args->stack and exits with its return value, like glibc's
 * internal __clone3. Used with CLONE_VM|CLONE_VFORK for cheap spawns (no page
 * table copy: fork costs ~0.85 ms on the development VM), and with
 * CLONE_INTO_CGROUP / namespace flags.
 *
 * The child must only make raw system calls (it shares the parent's memory,
 * TLS and errno) and must end in execve or _exit: kl_sys_* below are the
 * async-signal-safe, errno-free calls it may use.
 */
#ifndef NODE_CLONE3_H
#define NODE_CLONE3_H

#include <linux/sched.h>
#include <stddef.h>
#include <stdint.h>

/* Returns the child's pid (or pidfd semantics per args), or -errno. */
long kl_clone3(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);

/* Raw syscalls returning -errno, never touching errno. */
long kl_syscall6(long n, long a, long b, long c, long d, long e, long f);
#define kl_sys0(n)             kl_syscall6((n), 0, 0, 0, 0, 0, 0)
#define kl_sys1(n, a)          kl_syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define kl_sys2(n, a, b)       kl_syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define kl_sys3(n, a, b, c)    kl_syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define kl_sys4(n, a, b, c, d) kl_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define kl_sys5(n, a, b, c, d, e) \
	kl_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

#endif
