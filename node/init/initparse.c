/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing of KI_CONFIG and KI_SPAWN for the sandbox init (see initparse.h).
 * Everything is checked against the record's own length, never against the
 * buffer it sits in: init receives into a buffer larger than the message,
 * and stale bytes past a record must never be read as part of it.
 */
#include "initparse.h"

#include <errno.h>
#include <linux/filter.h>
#include <sys/resource.h>

static int
cfg_bad(const char **why, const char *what)
{
	*why = what;
	return -EINVAL;
}

int
ki_config_next(const uint8_t *msg, uint32_t len, uint32_t *off, struct ki_cfg_rec *rec,
               const char **why)
{
	memset(rec, 0, sizeof *rec);
	const struct ki_rec *r = ki_next(msg, len, off);
	if (!r)
		return *off == len ? 0 : cfg_bad(why, "malformed config message");
	const char *d = ki_data(r);
	rec->tag = r->tag;
	switch (r->tag) {
	case KT_SECCOMP:
	case KT_SECCOMP_CHILD:
		if (r->len % sizeof(struct sock_filter) || r->len == 0 ||
		    r->len / sizeof(struct sock_filter) > BPF_MAXINSNS)
			return cfg_bad(why, "malformed seccomp filter");
		rec->filter = d;
		rec->nfilter = (uint32_t)(r->len / sizeof(struct sock_filter));
		return 1;
	case KT_FILE: {
		size_t n1 = strnlen(d, r->len);
		if (n1 >= r->len)
			return cfg_bad(why, "malformed file record");
		rec->str = d;
		rec->str2 = d + n1 + 1;
		rec->len2 = r->len - (uint32_t)n1 - 1;
		return 1;
	}
	case KT_HOSTNAME:
	case KT_DIR:
	case KT_DEVICE:
	case KT_BIND_RO:
	case KT_SYMLINK:
		break;
	default:
		return cfg_bad(why, "unknown config record");
	}
	if (!ki_str_ok(r))
		return cfg_bad(why, "malformed config record");
	rec->str = d;
	if (r->tag == KT_BIND_RO || r->tag == KT_SYMLINK) {
		/* Two strings: the first must end before the record's last byte, or
		 * the second would start past the record (found by fuzz_init_msgs: a
		 * one-string KT_BIND_RO or KT_SYMLINK made init read the next
		 * record's bytes, or stale bytes past the message, as the path). */
		size_t n1 = strlen(d);
		if (n1 + 1 >= r->len)
			return cfg_bad(why, "malformed config record");
		rec->str2 = d + n1 + 1;
	}
	return 1;
}

/* Limits can only go down: raising a hard limit needs a capability in the
 * host's user namespace, which the sandbox does not have. */
static void
clamp_rlimit(struct ki_rlimit *l)
{
	struct rlimit cur;
	if (getrlimit((int)l->resource, &cur) == 0) {
		if (cur.rlim_max != RLIM_INFINITY && l->max > cur.rlim_max)
			l->max = cur.rlim_max;
		if (l->cur > l->max)
			l->cur = l->max;
	}
}

int
ki_parse_spawn(const uint8_t *msg, uint32_t len, const int *fds, int nfds, struct ki_spawn *sp)
{
	const struct ki_hdr *h = (const struct ki_hdr *)msg;
	int na = 0, ne = 0, nmap = 0;
	uint32_t off = sizeof(struct ki_hdr);
	const struct ki_rec *r;

	memset(sp, 0, sizeof *sp);
	sp->cwd = "/workspace";
	sp->cgfd = -1;
	sp->flags = h->a;
	sp->umask = (mode_t)(h->b & 0777);
	memcpy(sp->fds, fds, sizeof(int) * (size_t)nfds);
	sp->nfds = nfds;
	while ((r = ki_next(msg, len, &off))) {
		if (r->tag == KT_FDMAP) {
			if (r->len % 4 || r->len / 4 > KI_MAX_FDS)
				return -EINVAL;
			nmap = (int)(r->len / 4);
			memcpy(sp->map, ki_data(r), r->len);
			continue;
		}
		if (r->tag == KT_RLIMIT) {
			if (r->len != sizeof(struct ki_rlimit) || sp->nrl >= KI_SPAWN_MAX_RLIMITS)
				return -EINVAL;
			struct ki_rlimit *l = &sp->rl[sp->nrl++];
			memcpy(l, ki_data(r), sizeof *l);
			clamp_rlimit(l);
			continue;
		}
		if (!ki_str_ok(r))
			return -EINVAL;
		if (r->tag == KT_ARG && na < KI_SPAWN_MAX_ARGS)
			sp->argv[na++] = (char *)ki_data(r);
		else if (r->tag == KT_ENV && ne < KI_SPAWN_MAX_ARGS)
			sp->envp[ne++] = (char *)ki_data(r);
		else if (r->tag == KT_CWD)
			sp->cwd = ki_data(r);
		else
			return -E2BIG;
	}
	if (off != len || na == 0 || nmap != nfds)
		return -EINVAL;
	for (int i = 0; i < nfds; i++) {
		if (sp->map[i] == -1)
			sp->cgfd = fds[i];
		else if (sp->map[i] < 0 || sp->map[i] >= KI_SPAWN_MAX_FD)
			return -EINVAL;
	}
	return 0;
}
