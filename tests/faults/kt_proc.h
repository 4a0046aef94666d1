/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Accounting of what a test's kiln processes hold, for the fault and soak
 * suites: memory (PSS from smaps_rollup, RSS from status) and open file
 * descriptors of a process, a node's host-uid range (found through the lock
 * file it holds open), the processes running under that range, the cgroups
 * under a node's kiln-<name> tree, and the mounts of the test's mount
 * namespace. Scoping everything to the test's own nodes keeps the counts
 * true on a host where other kiln nodes come and go. Any thread.
 */
#ifndef KT_PROC_H
#define KT_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/* The proportional set size of pid in KiB (smaps_rollup), or -1. */
long kt_proc_pss_kib(pid_t pid);
/* A "Key:" line of /proc/<pid>/status in KiB (e.g. "VmRSS:"), or -1. */
long kt_proc_status_kib(pid_t pid, const char *key);
/* Open file descriptors of pid, or -1 if it is gone. */
int kt_proc_fd_count(pid_t pid);
/* The host-uid range k of a kiln-node process (it holds
 * /run/kiln/uids-<k>.lock open), or -1. The range is [kt_uid_lo(k),
 * kt_uid_lo(k) + 65536). */
int kt_node_uid_range(pid_t pid);
unsigned kt_uid_lo(int k);
/* Processes whose real uid is in range k. When no process holds range k's
 * lock (try-locked here while counting, so no node can take it meanwhile),
 * *ret_free is set: nothing should run there. */
int kt_range_procs(int k, bool *ret_free);
/* The cgroup v2 mount (the unified one on hybrid hosts). */
const char *kt_cgroup_mount(void);
/* Cgroups of node `name`: kiln-<name> and everything under it, but for the
 * tenant aggregates (tenants/<tenant>, which a node keeps for its lifetime
 * once a tenant had a session there; their number goes to *ret_tenants if
 * not NULL); 0 when the tree does not exist. */
int kt_node_cgroups(const char *name, int *ret_tenants);
/* Node process pid (named name): processes in its current uid range (-1 if
 * it holds none) and cgroups in its tree (kt_node_cgroups). */
void kt_node_counts(pid_t pid, const char *name, int *procs, int *cgroups);
/* Mounts of this mount namespace, not counting network namespace files
 * under /run/netns (ip netns leaves /run/netns itself bound). */
int kt_mount_count(void);
/* Make this process's mounts private to it (a new mount namespace, no
 * propagation either way), so kt_mount_count sees only what the test and
 * the processes it starts do. Call before any thread exists. 0 or -errno. */
int kt_private_mounts(void);
/* The child pid has not exited (it is not reaped by this). */
bool kt_child_alive(pid_t pid);
/* Describe a wait status: "exit 0", "signal 9 (Killed)", ... */
const char *kt_wait_text(int status, char *buf, size_t len);
/* Median of n longs (sorts a copy). */
long kt_median(const long *v, int n);
/* True in the sanitizer build (the daemons are built the same way). */
bool kt_asan_build(void);
/* In the sanitizer build, give the daemons this process starts an ASan
 * quarantine of mb MiB (appended to ASAN_OPTIONS): the default keeps up to
 * 256 MiB of freed memory, which shows as growth in any memory measurement.
 * With a few MiB, use-after-free of recent frees is still caught; 0 turns
 * it off (memory then behaves as the allocator's own). Before any thread. */
void kt_asan_quarantine(int mb);

#endif
