/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control protocol between the node and a sandbox's init (pid 1), over a
 * SOCK_SEQPACKET socketpair: one message per datagram, a fixed header
 * followed by TLV records; file descriptors travel as SCM_RIGHTS. Both sides
 * are built from this header, so there is no version negotiation: a node
 * always execs the init it was built with.
 *
 *   node -> init   KI_CONFIG   mount plan, hostname, seccomp filter, sizes
 *   init -> node   KI_READY    namespaces, mounts and pivot_root done (+ the egress
 *                              proxy's listening sockets)
 *   init -> node   KI_ERROR    setup failed (errno in a, text payload); init exits
 *   node -> init   KI_SPAWN    start a process (argv, env, cwd, rlimits, fds)
 *   init -> node   KI_SPAWNED  id, pid (inside the sandbox)
 *   init -> node   KI_SPAWN_FAILED id, errno, stage, text
 *   init -> node   KI_EXITED   id, pid, wait status, rusage
 *   node -> init   KI_RESIZE   remount /workspace with a new size (claim time)
 *   node -> init   KI_PING     liveness check; init answers KI_PONG (same id)
 *   init -> node   KI_OK / KI_FAIL  answers to RESIZE (same id)
 */
#ifndef NODE_INITPROTO_H
#define NODE_INITPROTO_H

#include <stdint.h>
#include <string.h>

#define KI_MAX_MSG 65536 /* largest datagram either side sends */
#define KI_MAX_FDS 8     /* most fds in one KI_SPAWN */

enum ki_type {
	KI_CONFIG = 1,
	KI_READY,
	KI_ERROR,
	KI_SPAWN,
	KI_SPAWNED,
	KI_SPAWN_FAILED,
	KI_EXITED,
	KI_RESIZE,
	KI_PING,
	KI_PONG,
	KI_OK,
	KI_FAIL,
};

struct ki_hdr {
	uint32_t type;
	uint32_t len; /* header + records */
	uint64_t id;
	int32_t a, b, c, d;
	uint64_t x, y;
};

/* TLV records after the header; each record is padded to 8 bytes. */
enum ki_tag {
	KT_HOSTNAME = 1, /* string */
	KT_BIND_RO,      /* "src\0dst": read-only recursive bind of a host path */
	KT_SYMLINK,      /* "target\0dst" */
	KT_FILE,         /* "dst\0content" (content to the record's end) */
	KT_DIR,          /* "dst" */
	KT_SECCOMP, /* struct sock_filter[]: init installs it on itself before its first spawn */
	KT_ARG,     /* one argv string (in order) */
	KT_ENV,     /* one "K=V" string */
	KT_CWD,     /* string */
	KT_RLIMIT,  /* struct ki_rlimit */
	KT_FDMAP,   /* int32[] target fd number of each SCM_RIGHTS fd; -1 = the cgroup dirfd */
	KT_DEVICE,  /* "name": bind /dev/name from the host */
	KT_TEXT,    /* human-readable detail of an error */
	KT_SECCOMP_CHILD, /* struct sock_filter[]: added by each tool process after its caps drop */
};

struct ki_rlimit {
	uint32_t resource;
	uint32_t pad;
	uint64_t cur, max;
};

struct ki_rec {
	uint16_t tag;
	uint16_t pad;
	uint32_t len; /* payload bytes, excluding this header and padding */
};

/* KI_CONFIG: x = workspace bytes, y = /tmp bytes, a = workspace inodes (0: default). */
/* KI_READY:  a = init's pid, b = KI_PROXY_* bits: the egress proxy's listening sockets
 * that travel with it as SCM_RIGHTS, in bit order (docs/egress-node.md); an optional
 * KT_TEXT says why one is missing. init keeps no copy: the node serves them. */
#define KI_PROXY_TCP  1 /* TCP on 127.0.0.1:KI_PROXY_PORT in the sandbox's netns */
#define KI_PROXY_UNIX 2 /* unix stream socket at KI_PROXY_PATH in the sandbox's root */
#define KI_PROXY_PORT 3128
#define KI_PROXY_DIR  "/run/kiln"
#define KI_PROXY_PATH "/run/kiln/proxy.sock"
/* KI_SPAWN:  a = KI_SPAWN_* flags, b = umask. */
#define KI_SPAWN_CGROUPNS 1 /* unshare a cgroup namespace rooted at the job's cgroup */
/* KI_SPAWN_FAILED: a = errno, b = stage (KI_STAGE_*). */
enum ki_stage {
	KI_STAGE_RESOLVE = 1, /* PATH lookup of argv[0] */
	KI_STAGE_CLONE,       /* clone3 into the cgroup */
	KI_STAGE_SETUP,       /* fds, cwd, rlimits, caps, seccomp */
	KI_STAGE_EXEC,
};
/* KI_EXITED: a = pid, b = wait status (as waitpid), x = user usec, y = system usec,
 * c = maxrss KiB. */

/* ---- building and walking records (both sides) ---- */

typedef struct ki_buf {
	uint8_t *p;
	uint32_t len, cap;
	int overflow;
} ki_buf;

static inline void
ki_begin(ki_buf *b, uint8_t *mem, uint32_t cap, uint32_t type, uint64_t id)
{
	b->p = mem;
	b->cap = cap;
	b->len = sizeof(struct ki_hdr);
	b->overflow = 0;
	struct ki_hdr *h = (struct ki_hdr *)mem;
	memset(h, 0, sizeof *h);
	h->type = type;
	h->id = id;
}

static inline struct ki_hdr *
ki_hdr(ki_buf *b)
{
	return (struct ki_hdr *)b->p;
}

static inline void
ki_put(ki_buf *b, uint16_t tag, const void *a, uint32_t alen, const void *c, uint32_t clen)
{
	uint32_t plen = alen + clen, need = (uint32_t)sizeof(struct ki_rec) + ((plen + 7u) & ~7u);
	if (b->overflow || b->len + need > b->cap) {
		b->overflow = 1;
		return;
	}
	struct ki_rec *r = (struct ki_rec *)(b->p + b->len);
	r->tag = tag;
	r->pad = 0;
	r->len = plen;
	uint8_t *d = (uint8_t *)(r + 1);
	if (alen)
		memcpy(d, a, alen);
	if (clen)
		memcpy(d + alen, c, clen);
	memset(d + plen, 0, ((plen + 7u) & ~7u) - plen);
	b->len += need;
}

static inline void
ki_put_str(ki_buf *b, uint16_t tag, const char *s)
{
	ki_put(b, tag, s, (uint32_t)strlen(s) + 1, NULL, 0);
}

/* Two NUL-terminated strings in one record ("src\0dst\0"). */
static inline void
ki_put_str2(ki_buf *b, uint16_t tag, const char *s1, const char *s2)
{
	ki_put(b, tag, s1, (uint32_t)strlen(s1) + 1, s2, (uint32_t)strlen(s2) + 1);
}

static inline uint32_t
ki_end(ki_buf *b)
{
	ki_hdr(b)->len = b->len;
	return b->len;
}

/* Iterate records: off starts at sizeof(struct ki_hdr). Returns NULL at the
 * end or on a malformed record (a record must fit in len). */
static inline const struct ki_rec *
ki_next(const uint8_t *msg, uint32_t len, uint32_t *off)
{
	if (*off + sizeof(struct ki_rec) > len)
		return NULL;
	const struct ki_rec *r = (const struct ki_rec *)(msg + *off);
	uint64_t need = sizeof(struct ki_rec) + (((uint64_t)r->len + 7u) & ~7ull);
	if (*off + need > len)
		return NULL;
	*off += (uint32_t)need;
	return r;
}

static inline const char *
ki_data(const struct ki_rec *r)
{
	return (const char *)(r + 1);
}

/* A string record is valid if it ends in NUL. For two-string records, the
 * second starts after the first NUL. */
static inline int
ki_str_ok(const struct ki_rec *r)
{
	return r->len > 0 && ki_data(r)[r->len - 1] == 0;
}

/* A received datagram of n bytes (msg 8-byte aligned) is a message: a whole
 * header whose len says exactly what arrived (a truncated one does not). */
static inline int
ki_msg_ok(const uint8_t *msg, size_t n)
{
	return n >= sizeof(struct ki_hdr) && ((const struct ki_hdr *)msg)->len == n;
}

/* The detail text of a KI_ERROR or KI_SPAWN_FAILED message (a checked
 * message of len bytes): its first record when that is a NUL-terminated
 * KT_TEXT, else fallback. Points into msg. */
static inline const char *
ki_text(const uint8_t *msg, uint32_t len, const char *fallback)
{
	uint32_t off = sizeof(struct ki_hdr);
	const struct ki_rec *r = ki_next(msg, len, &off);
	return r && r->tag == KT_TEXT && ki_str_ok(r) ? ki_data(r) : fallback;
}

#endif
