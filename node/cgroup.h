/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's cgroup v2 subtree. Discovery (which v2 mount, which controllers
 * the node's delegated root offers) uses libcgroup where it can and
 * /proc/self/{mountinfo,cgroup}; everything on the hot path is plain
 * *at() syscalls on directory fds (crun/systemd style). cgroup v1 is never
 * touched and no mount is ever changed.
 *
 * Layout under the delegated root (the cgroup the node starts in, or
 * --cgroup-root):
 *
 *   kiln-<node>/                   node_cg_open creates it (cleaning leftovers)
 *       daemon/                    the node process itself (no-internal-process rule)
 *       pool/                      inits of idle pre-warmed sandboxes
 *       tenants/<tenant>/          tenant aggregate
 *           <session>/             session limits (memory.max, pids.max, cpu.max)
 *               init/              the sandbox's init
 *               shell/             the persistent bash and its jobs
 *               job-<n>/           one leaf per running exec call
 *
 * Functions return 0 (or a positive value where stated) or -errno, and are
 * called from the node's loop thread unless stated otherwise.
 */
#ifndef NODE_CGROUP_H
#define NODE_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum {
	CG_CTRL_CPU = 1 << 0,
	CG_CTRL_MEMORY = 1 << 1,
	CG_CTRL_PIDS = 1 << 2,
	CG_CTRL_IO = 1 << 3,
};

typedef struct cg_discovery {
	char mount[PATH_MAX]; /* cgroup2 mount point, e.g. /sys/fs/cgroup/unified */
	char self[PATH_MAX];  /* our cgroup relative to the mount, e.g. "/" */
	unsigned available;   /* CG_CTRL_* listed in <mount><self>/cgroup.controllers */
	unsigned v1_bound;    /* CG_CTRL_* bound to a v1 hierarchy (hybrid host) */
	bool kill_supported;  /* cgroup.kill exists (kernel >= 5.14) */
} cg_discovery;

/* Find the v2 mount and what it offers. root_override: an absolute cgroupfs
 * path to use as the delegated root instead of our own cgroup (NULL: ours).
 * Errors: -ENOENT (no cgroup2 mount: "cgroup v2 is required", or the override
 * does not exist), -EINVAL (the override is not inside a cgroup2 mount),
 * -EACCES. Uses libcgroup (global state): call once, from the main thread. */
int cg_discover(const char *root_override, cg_discovery *d);
/* "memory pids cpu" style text of a CG_CTRL_* mask (static buffer per call site ok);
 * "" for 0. Returns buf. */
const char *cg_ctrl_names(unsigned mask, char *buf, size_t len);

typedef struct node_cg {
	int rootfd;          /* kiln-<node>/ */
	int daemonfd;        /* kiln-<node>/daemon */
	int poolfd;          /* kiln-<node>/pool */
	int tenantsfd;       /* kiln-<node>/tenants */
	unsigned enabled;    /* controllers enabled down to the session level */
	char path[PATH_MAX]; /* absolute path of kiln-<node>/ */
	/* private to cgroup.c: what cg_tree_destroy must undo */
	int parentfd;        /* the delegated root */
	unsigned root_added; /* controllers we turned on in the root's subtree_control */
	bool moved;          /* the caller was moved into daemon/ */
} node_cg;

/* Create (or reclaim) kiln-<name>/ under the delegated root: if it exists
 * from a crashed run, every process in it is killed (cgroup.kill) and the old
 * tree removed first; then daemon/, pool/, tenants/ are created and the wanted
 * controllers (want & d->available) are enabled in subtree_control along the
 * path. If move_self, the calling process moves into daemon/. Returns the
 * number of leftover cgroups removed (>= 0) or -errno.
 *
 * Order: the caller moves into daemon/ BEFORE controllers are enabled, because
 * a non-root cgroup with processes cannot enable controllers for its children
 * (no internal processes rule). Controllers are enabled one by one and
 * cg->enabled says which made it: it can be a subset of want & d->available
 * (e.g. other processes share the delegated root), and callers must compare
 * it with what they need and report the difference. -EBUSY if the caller
 * already sits inside kiln-<name>/ (destroy it first). */
int cg_tree_open(const cg_discovery *d, const char *name, unsigned want, bool move_self,
                 node_cg *cg);
/* Kill everything under kiln-<name>/ and remove the tree (node shutdown).
 * Moves the caller back to the delegated root first if it sits in daemon/
 * (after removing pool/ and tenants/ and, when the delegated root is not the
 * hierarchy's root, turning off the controllers cg_tree_open turned on there,
 * which the no internal processes rule requires). If that move fails, the
 * tree is left in place (killing it would kill the caller) and -errno is
 * returned; a later cg_tree_open reclaims it. Accepts NULL and a destroyed cg. */
int cg_tree_destroy(node_cg *cg);

/* mkdir parentfd/name (EEXIST is fine) and return an O_RDONLY|O_DIRECTORY fd.
 * If uid != (uid_t)-1, chown the new cgroup's cgroup.procs (and cgroup.threads)
 * to uid:gid so a process of that user may clone into it (CLONE_INTO_CGROUP
 * checks write access to the target's and the common ancestor's cgroup.procs).
 * If ctrl != 0, also enable those controllers in the new cgroup's
 * subtree_control (for non-leaf cgroups). */
int cg_mkdir(int parentfd, const char *name, uid_t uid, gid_t gid, unsigned ctrl, int *ret_fd);
/* rmdir parentfd/name. -EBUSY while processes remain (retry later). */
int cg_rmdir(int parentfd, const char *name);
/* Recursively kill and remove parentfd/name and everything below it, retrying
 * EBUSY for up to timeout_ms. Blocking: for shutdown and crash cleanup only.
 * Returns the number of cgroups removed (0 if name did not exist) or -errno
 * (-EBUSY when the timeout expired). */
int cg_remove_tree(int parentfd, const char *name, int timeout_ms);
/* Write "1" to cgroup.kill (SIGKILL to every process in the subtree). Falls
 * back to reading cgroup.procs and kill(2) when cgroup.kill is missing. */
int cg_kill(int dirfd);
/* The fallback on its own: SIGKILL every pid listed in cgroup.procs of the
 * cgroup and its descendants, repeated until none is listed (-EBUSY after
 * about 2 s). Blocking; exposed for kernels before 5.14 and for tests. */
int cg_kill_procs(int dirfd);
/* 1 if cgroup.events says populated 1, 0 if not, or -errno. */
int cg_populated(int dirfd);
/* Move pid (the whole thread group; 0: the caller) into the cgroup (write to
 * cgroup.procs). */
int cg_move(int dirfd, pid_t pid);

typedef struct cg_stats {
	uint64_t cpu_usec;        /* cpu.stat usage_usec (always available on v2) */
	uint64_t mem_peak;        /* memory.peak, 0 if the controller is off */
	uint64_t oom_kills;       /* memory.events oom_kill (of this cgroup and below) */
	uint64_t ooms;            /* memory.events oom */
	uint64_t pids_max_events; /* pids.events max: forks refused by pids.max */
	uint64_t nr_throttled;    /* cpu.stat nr_throttled */
	uint64_t throttled_usec;  /* cpu.stat throttled_usec */
} cg_stats;
/* Read what exists; missing files leave fields 0. */
int cg_read_stats(int dirfd, cg_stats *st);

typedef struct cg_limits {
	uint64_t memory_bytes;   /* 0: no limit (memory.max max); swap.max is set to 0 */
	uint32_t pids;           /* 0: no limit */
	uint32_t cpu_millicores; /* 0: no limit; else cpu.max "<q> 100000" */
} cg_limits;
/* Write the limits the enabled controllers allow (mask: which controllers are
 * enabled for this cgroup). Returns -EOPNOTSUPP if a non-zero limit needs a
 * controller that is not in mask (checked before anything is written). A zero
 * limit writes "max" when the controller is in mask. cpu quotas below the
 * kernel's 1 ms minimum (under 10 millicores) are raised to 1000 us. */
int cg_set_limits(int dirfd, unsigned mask, const cg_limits *l);
/* cpu.weight = 100 x weight, clamped to the kernel's 1..10000 (the default
 * 100 is weight 1). Needs the cpu controller enabled for dirfd's cgroup. */
int cg_set_weight(int dirfd, uint32_t weight);

#endif
