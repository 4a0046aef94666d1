/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_init_msgs: the sandbox init's side of the control socket
 * (node/init/initparse.c, the code kiln-sandbox-init links). Input: one byte
 * giving how many descriptors "arrived" with the datagram (0..KI_MAX_FDS),
 * then the datagram. Like init, a datagram whose header does not give its
 * exact length is dropped; past that check (the header's len is then set,
 * as the node always does) the message is parsed both as KI_CONFIG and as
 * KI_SPAWN, because init trusts neither to be what the header says.
 *
 * Invariants:
 *  - config: every record lies inside the message; strings end in NUL
 *    inside their record (both strings of a two-string record); file
 *    content and seccomp filters stay inside the record; the walk ends
 *    exactly at the message's end or reports it malformed;
 *  - spawn: argv is non-empty, every argv/env/cwd string lies NUL-terminated
 *    inside the message, the fd map matches the descriptors and only names
 *    fds below 1000 (or -1, the cgroup), the umask has only permission bits,
 *    soft rlimits never exceed hard ones;
 *  - round trips: what parsed, rebuilt with the node's builder (ki_put and
 *    friends, as pool.c and call.c build these messages), parses to the
 *    same result.
 */
#include "fuzz.h"

#include "initparse.h"

#include <errno.h>
#include <linux/filter.h>
#include <sys/resource.h>

static uint8_t rebuilt[KI_MAX_MSG] __attribute__((aligned(8)));

/* [p, p + n) inside the record that spans [lo, hi) of msg. */
static int
inside(const uint8_t *msg, uint32_t lo, uint32_t hi, const void *p, size_t n)
{
	const uint8_t *q = p;
	return q >= msg + lo && q <= msg + hi && n <= (size_t)(msg + hi - q);
}

/* A NUL-terminated string that starts and ends inside [lo, hi). */
static int
str_inside(const uint8_t *msg, uint32_t lo, uint32_t hi, const char *s)
{
	return inside(msg, lo, hi, s, 1) && memchr(s, 0, (size_t)(msg + hi - (const uint8_t *)s));
}

#define MAX_RECS 4096

struct cfg_walk {
	struct ki_cfg_rec rec[MAX_RECS];
	int n;
	int end; /* 0: clean end; -EINVAL: malformed */
};

static void
config_walk(const uint8_t *msg, uint32_t len, struct cfg_walk *w)
{
	uint32_t off = sizeof(struct ki_hdr), prev = off;
	const char *why = NULL;
	int k;
	w->n = 0;
	while ((k = ki_config_next(msg, len, &off, &w->rec[w->n], &why)) > 0) {
		const struct ki_cfg_rec *c = &w->rec[w->n];
		uint32_t lo = prev + (uint32_t)sizeof(struct ki_rec);
		FZ_CHECK(off > prev && off <= len && off % 8 == 0, "offset %u after %u (len %u)",
		         off, prev, len);
		if (c->filter) { /* KT_SECCOMP and its kin */
			FZ_CHECK(c->nfilter >= 1 && c->nfilter <= BPF_MAXINSNS, "%u insns",
			         c->nfilter);
			FZ_CHECK(inside(msg, lo, off, c->filter,
			                c->nfilter * sizeof(struct sock_filter)),
			         "filter outside its record");
		} else {
			FZ_CHECK(str_inside(msg, lo, off, c->str), "tag %u: string outside",
			         c->tag);
		}
		if (c->tag == KT_FILE)
			FZ_CHECK(inside(msg, lo, off, c->str2, c->len2), "file content outside");
		if (c->tag == KT_BIND_RO || c->tag == KT_SYMLINK)
			FZ_CHECK(str_inside(msg, lo, off, c->str2),
			         "tag %u: second string outside its record", c->tag);
		prev = off;
		if (++w->n == MAX_RECS)
			break;
	}
	w->end = k;
	FZ_CHECK(k >= 0 || (why && *why), "malformed without a reason");
	FZ_CHECK(k != 0 || off == len, "clean end at %u of %u", off, len);
}

static void
config_rebuild_check(const uint8_t *msg, const struct cfg_walk *w)
{
	if (w->end != 0 || w->n == MAX_RECS)
		return;
	ki_buf b;
	ki_begin(&b, rebuilt, sizeof rebuilt, KI_CONFIG, ((const struct ki_hdr *)msg)->id);
	for (int i = 0; i < w->n; i++) {
		const struct ki_cfg_rec *c = &w->rec[i];
		if (c->filter)
			ki_put(&b, c->tag, c->filter, c->nfilter * sizeof(struct sock_filter), NULL,
			       0);
		else if (c->tag == KT_FILE)
			ki_put(&b, c->tag, c->str, (uint32_t)strlen(c->str) + 1, c->str2, c->len2);
		else if (c->tag == KT_BIND_RO || c->tag == KT_SYMLINK)
			ki_put_str2(&b, c->tag, c->str, c->str2);
		else
			ki_put_str(&b, c->tag, c->str);
	}
	uint32_t len = ki_end(&b);
	FZ_CHECK(!b.overflow, "rebuilt config overflows");
	static struct cfg_walk w2;
	config_walk(rebuilt, len, &w2);
	FZ_CHECK(w2.end == 0 && w2.n == w->n, "rebuilt config: %d records, end %d (was %d)", w2.n,
	         w2.end, w->n);
	for (int i = 0; i < w->n; i++) {
		const struct ki_cfg_rec *a = &w->rec[i], *c = &w2.rec[i];
		FZ_CHECK(a->tag == c->tag && a->len2 == c->len2 && a->nfilter == c->nfilter,
		         "record %d differs", i);
		if (a->str)
			FZ_CHECK(!strcmp(a->str, c->str), "record %d string differs", i);
		if (a->tag == KT_FILE)
			FZ_CHECK(!memcmp(a->str2, c->str2, a->len2), "record %d content differs",
			         i);
		else if (a->str2)
			FZ_CHECK(!strcmp(a->str2, c->str2), "record %d second string differs", i);
		if (a->filter)
			FZ_CHECK(!memcmp(a->filter, c->filter,
			                 a->nfilter * sizeof(struct sock_filter)),
			         "record %d filter differs", i);
	}
}

static void
spawn_check(const uint8_t *msg, uint32_t len, const int *fds, int nfds, const struct ki_spawn *sp)
{
	int na = 0;
	for (; sp->argv[na]; na++)
		FZ_CHECK(str_inside(msg, sizeof(struct ki_hdr), len, sp->argv[na]), "argv[%d]", na);
	FZ_CHECK(na >= 1 && na <= KI_SPAWN_MAX_ARGS, "%d args", na);
	for (int i = 0; sp->envp[i]; i++)
		FZ_CHECK(i < KI_SPAWN_MAX_ARGS &&
		                 str_inside(msg, sizeof(struct ki_hdr), len, sp->envp[i]),
		         "envp[%d]", i);
	FZ_CHECK(!strcmp(sp->cwd, "/workspace") ||
	                 str_inside(msg, sizeof(struct ki_hdr), len, sp->cwd),
	         "cwd outside");
	FZ_CHECK((sp->umask & ~0777u) == 0, "umask %o", (unsigned)sp->umask);
	FZ_CHECK(sp->nfds == nfds && sp->nrl >= 0 && sp->nrl <= KI_SPAWN_MAX_RLIMITS, "counts");
	int cg = -1;
	for (int i = 0; i < nfds; i++) {
		FZ_CHECK(sp->fds[i] == fds[i], "fd %d changed", i);
		FZ_CHECK(sp->map[i] == -1 || (sp->map[i] >= 0 && sp->map[i] < KI_SPAWN_MAX_FD),
		         "fd %d maps to %d", i, sp->map[i]);
		if (sp->map[i] == -1)
			cg = fds[i];
	}
	FZ_CHECK(sp->cgfd == cg, "cgroup fd %d, expected %d", sp->cgfd, cg);
	for (int i = 0; i < sp->nrl; i++)
		if (sp->rl[i].resource < RLIM_NLIMITS)
			FZ_CHECK(sp->rl[i].cur <= sp->rl[i].max, "rlimit %u: soft over hard",
			         sp->rl[i].resource);
}

static void
spawn_rebuild_check(const uint8_t *msg, const int *fds, int nfds, const struct ki_spawn *sp)
{
	const struct ki_hdr *h = (const struct ki_hdr *)msg;
	ki_buf b;
	ki_begin(&b, rebuilt, sizeof rebuilt, KI_SPAWN, h->id);
	ki_hdr(&b)->a = h->a;
	ki_hdr(&b)->b = h->b;
	for (int i = 0; sp->argv[i]; i++)
		ki_put_str(&b, KT_ARG, sp->argv[i]);
	for (int i = 0; sp->envp[i]; i++)
		ki_put_str(&b, KT_ENV, sp->envp[i]);
	/* Only a KT_CWD that came in goes back: the rebuilt message is then no
	 * longer than the original, so it fits wherever that did. */
	if (sp->cwd >= (const char *)msg && sp->cwd < (const char *)msg + h->len)
		ki_put_str(&b, KT_CWD, sp->cwd);
	for (int i = 0; i < sp->nrl; i++)
		ki_put(&b, KT_RLIMIT, &sp->rl[i], sizeof sp->rl[i], NULL, 0);
	if (nfds)
		ki_put(&b, KT_FDMAP, sp->map, (uint32_t)(sizeof(int32_t) * (size_t)nfds), NULL, 0);
	uint32_t len = ki_end(&b);
	FZ_CHECK(!b.overflow, "rebuilt spawn overflows");
	static struct ki_spawn sp2;
	int r = ki_parse_spawn(rebuilt, len, fds, nfds, &sp2);
	FZ_CHECK(r == 0, "rebuilt spawn refused: %d", r);
	int i;
	for (i = 0; sp->argv[i]; i++)
		FZ_CHECK(sp2.argv[i] && !strcmp(sp->argv[i], sp2.argv[i]), "argv[%d]", i);
	FZ_CHECK(!sp2.argv[i], "extra argv");
	for (i = 0; sp->envp[i]; i++)
		FZ_CHECK(sp2.envp[i] && !strcmp(sp->envp[i], sp2.envp[i]), "envp[%d]", i);
	FZ_CHECK(!sp2.envp[i], "extra envp");
	FZ_CHECK(!strcmp(sp->cwd, sp2.cwd), "cwd");
	FZ_CHECK(sp->nrl == sp2.nrl && !memcmp(sp->rl, sp2.rl, sizeof sp->rl), "rlimits");
	FZ_CHECK(!memcmp(sp->map, sp2.map, sizeof(int32_t) * (size_t)nfds), "fd map");
	FZ_CHECK(sp->cgfd == sp2.cgfd && sp->flags == sp2.flags && sp->umask == sp2.umask,
	         "header fields");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cfg_walk w;
	static struct ki_spawn sp;
	fz_reader in = {data, size};
	int nfds = fz_u8(&in) % (KI_MAX_FDS + 1);
	int fds[KI_MAX_FDS];
	for (int i = 0; i < KI_MAX_FDS; i++)
		fds[i] = 100 + i;
	if (in.n > KI_MAX_MSG)
		in.n = KI_MAX_MSG; /* init's receive buffer: longer datagrams never arrive */
	size_t n;
	uint8_t *msg = fz_rest(&in, &n); /* malloc: 16-byte aligned, exact size */
	uint32_t len = (uint32_t)n;
	struct ki_hdr h0;
	memset(&h0, 0, sizeof h0);
	memcpy(&h0, msg, n < sizeof h0 ? n : sizeof h0);
	int ok = ki_msg_ok(msg, n);
	FZ_CHECK(ok == (n >= sizeof h0 && h0.len == n), "ki_msg_ok %d", ok);
	if (n < sizeof h0) {
		free(msg);
		return 0;
	}
	((struct ki_hdr *)msg)->len = len;

	config_walk(msg, len, &w);
	config_rebuild_check(msg, &w);

	int r = ki_parse_spawn(msg, len, fds, nfds, &sp);
	FZ_CHECK(r == 0 || r == -EINVAL || r == -E2BIG, "spawn parse returned %d", r);
	FZ_CHECK(sp.nfds == nfds, "fds not recorded for closing");
	if (r == 0) {
		spawn_check(msg, len, fds, nfds, &sp);
		spawn_rebuild_check(msg, fds, nfds, &sp);
	}
	free(msg);
	return 0;
}
