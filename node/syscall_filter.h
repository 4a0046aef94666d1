/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The seccomp filter every tool process runs under, compiled once by the
 * node with libseccomp and shipped to each sandbox init as raw BPF (init is a
 * static binary and does not link libseccomp). Default allow; the denied
 * calls return EPERM (ENOSYS for io_uring and clone3, so programs fall back
 * gracefully), and foreign architectures (x32, i386) are killed.
 */
#ifndef NODE_SYSCALL_FILTER_H
#define NODE_SYSCALL_FILTER_H

#include <stddef.h>
#include <stdint.h>

/* Build the filter. *ret is a malloc'ed struct sock_filter[] of *ret_len bytes. */
int node_seccomp_build(uint8_t **ret, size_t *ret_len);

/* The names of the syscalls the filter denies outright (for docs and tests). */
extern const char *const node_seccomp_denied[];

#endif
