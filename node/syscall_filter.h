/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The seccomp filters every tool process runs under, compiled once by the
 * node with libseccomp and shipped to each sandbox init as raw BPF (init is a
 * static binary and does not link libseccomp). Default allow; the denied
 * calls return EPERM (ENOSYS for io_uring and clone3, so programs fall back
 * gracefully), and foreign architectures (x32, i386) are killed.
 */
#ifndef NODE_SYSCALL_FILTER_H
#define NODE_SYSCALL_FILTER_H

#include <stddef.h>
#include <stdint.h>

/* The sandbox filter. Init installs it on itself before its first spawn, so
 * every tool process inherits it without compiling it again (a 100-instruction
 * filter costs ~0.3 ms per seccomp() call on the development VM). It allows
 * what init still needs: clone3 (CLONE_INTO_CGROUP exists only there) and
 * unshare(CLONE_NEWCGROUP) exactly. *ret is a malloc'ed struct sock_filter[]
 * of *ret_len bytes. */
int node_seccomp_build(uint8_t **ret, size_t *ret_len);
/* The child filter each tool process adds after dropping its capabilities: it
 * denies clone3 (ENOSYS, libc falls back to clone, whose flags the sandbox
 * filter can check). Tiny, so cheap to install per spawn. */
int node_seccomp_build_child(uint8_t **ret, size_t *ret_len);

/* The names of the syscalls the filter denies outright (for docs and tests). */
extern const char *const node_seccomp_denied[];

#endif
