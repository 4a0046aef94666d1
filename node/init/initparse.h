/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox init's parsing of what the node sends it: KI_CONFIG records
 * and KI_SPAWN requests (node/initproto.h). Split from init.c so that the
 * unit tests and the fuzz target (tests/fuzz/fuzz_init_msgs.c) run exactly
 * the code init runs. Pure: results point into the message, no global state,
 * no system call but getrlimit (the rlimit clamp). Libc only, like init,
 * which links it statically.
 */
#ifndef NODE_INIT_INITPARSE_H
#define NODE_INIT_INITPARSE_H

#include "../initproto.h"

#include <sys/types.h>

#define KI_SPAWN_MAX_ARGS    1023 /* argv and envp entries (each array is NULL-terminated) */
#define KI_SPAWN_MAX_RLIMITS 16
#define KI_SPAWN_MAX_FD      1000 /* target fd numbers are below this */

/* One validated KI_CONFIG record. Pointers are into the message. */
struct ki_cfg_rec {
	uint16_t tag;
	const char *str;    /* the (first) string: every tag but KT_SECCOMP */
	const char *str2;   /* KT_BIND_RO, KT_SYMLINK: the second string; KT_FILE: the content */
	uint32_t len2;      /* KT_FILE: content bytes */
	const void *filter; /* KT_SECCOMP: struct sock_filter[] (not aligned: copy it) */
	uint32_t nfilter;   /* KT_SECCOMP: instructions, 1..BPF_MAXINSNS */
};

/*
 * The next record of a KI_CONFIG message (msg: len bytes from the header on,
 * 8-byte aligned; *off starts at sizeof(struct ki_hdr)). Returns 1 with *rec
 * filled; 0 at the end of a well-formed message; -EINVAL for a malformed
 * record or message, with a static text in *why and the record's tag in
 * rec->tag (0 when the message itself is malformed).
 */
int ki_config_next(const uint8_t *msg, uint32_t len, uint32_t *off, struct ki_cfg_rec *rec,
                   const char **why);

/* A parsed KI_SPAWN, plus the fields init fills while spawning. */
struct ki_spawn {
	char *argv[KI_SPAWN_MAX_ARGS + 1]; /* NULL-terminated; into the message */
	char *envp[KI_SPAWN_MAX_ARGS + 1];
	const char *cwd;  /* "/workspace" unless KT_CWD says otherwise */
	const char *path; /* resolved executable (init) */
	struct ki_rlimit rl[KI_SPAWN_MAX_RLIMITS];
	int nrl;
	int fds[KI_MAX_FDS];     /* as received (SCM_RIGHTS), owned by the caller */
	int32_t map[KI_MAX_FDS]; /* target fd of each; -1: the job's cgroup dirfd */
	int nfds;
	int cgfd; /* -1 if none */
	int flags;
	mode_t umask;
	volatile int err, stage; /* written by init's vfork child, read after it */
};

/*
 * Parse KI_SPAWN message msg (len bytes, 8-byte aligned) that arrived with
 * nfds (<= KI_MAX_FDS) descriptors into *sp, which is zeroed first; fds and
 * nfds are recorded even on failure, so the caller can close them. Hard
 * rlimits are clamped to the caller's own (they can only go down), soft ones
 * to the hard. 0, or -EINVAL (malformed, no argv, fd map not matching the
 * fds or out of range) or -E2BIG (too many argv or env entries, or an
 * unknown record).
 */
int ki_parse_spawn(const uint8_t *msg, uint32_t len, const int *fds, int nfds, struct ki_spawn *sp);

#endif
