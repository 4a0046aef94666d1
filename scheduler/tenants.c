/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tenant table, token-bucket rate admission and session limit checks. Token
 * comparison is constant-time across the whole table so that response timing
 * cannot be used to guess a token byte by byte or to learn which tenant a
 * near miss belongs to. The bucket is kept in floating point; a small epsilon
 * (a billionth of a token) lets a caller that waits exactly the advertised
 * retry-after get in despite rounding.
 */
#include "tenants.h"

#include "kl_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#define NSEC_PER_SEC  1000000000.0
#define NSEC_PER_MSEC 1000000.0
#define BUCKET_EPS    1e-9

int
sched_tenants_init(sched_tenants *t, const sched_config *c)
{
	if (c->ntenants < 0)
		return -EINVAL;
	uint32_t n = (uint32_t)c->ntenants;
	/* auth compares whole buffers: a token must be set and padded with zeros. */
	for (uint32_t i = 0; i < n; i++) {
		const char *tok = c->tenants[i].token;
		size_t len = strnlen(tok, sizeof c->tenants[i].token);
		if (!len || len == sizeof c->tenants[i].token)
			return -EINVAL;
		for (size_t j = len; j < sizeof c->tenants[i].token; j++)
			if (tok[j])
				return -EINVAL;
	}
	sched_tenant *v = kl_xcalloc(n, sizeof(*v));
	for (uint32_t i = 0; i < n; i++) {
		v[i].cfg = &c->tenants[i];
		v[i].idx = i;
		v[i].tokens = KL_MAX(c->tenants[i].burst, 1u);
	}
	t->v = v;
	t->n = n;
	return 0;
}

void
sched_tenants_fini(sched_tenants *t)
{
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

sched_tenant *
sched_tenants_auth(sched_tenants *t, const char *token)
{
	/* Padded to the configured tokens' buffer size, so every comparison has
	 * the same length whatever the tokens' lengths are. */
	char cand[sizeof(((sched_tenant_cfg *)0)->token)] = {0};
	if (!token || !*token || kl_strlcpy(cand, token, sizeof cand) >= sizeof cand)
		return NULL;
	uintptr_t found = 0;
	for (uint32_t i = 0; i < t->n; i++) {
		const char *mine = t->v[i].cfg->token;
		uintptr_t mask = -(uintptr_t)kl_consttime_eq(cand, sizeof cand, mine, sizeof cand);
		found = (found & ~mask) | ((uintptr_t)&t->v[i] & mask);
	}
	explicit_bzero(cand, sizeof cand);
	return (sched_tenant *)found;
}

sched_tenant *
sched_tenants_find(sched_tenants *t, const char *name)
{
	for (uint32_t i = 0; name && i < t->n; i++)
		if (!strcmp(t->v[i].cfg->name, name))
			return &t->v[i];
	return NULL;
}

int
sched_tenant_take(sched_tenant *t, uint64_t now_ns, uint32_t *retry_after_ms)
{
	uint32_t rate = t->cfg->rate;
	if (!rate)
		return 0;
	double cap = KL_MAX(t->cfg->burst, 1u);
	/* A clock that steps back must neither refill nor move the mark back. */
	if (now_ns > t->tokens_ns) {
		double add = (double)(now_ns - t->tokens_ns) * rate / NSEC_PER_SEC;
		t->tokens = KL_MIN(cap, t->tokens + add);
		t->tokens_ns = now_ns;
	}
	if (t->tokens >= 1.0 - BUCKET_EPS) {
		t->tokens = KL_MAX(0.0, t->tokens - 1.0);
		return 0;
	}
	/* Aim at half the slack admission grants: rounding in either computation
	 * is far below it, so the wait is enough and not a millisecond more. */
	double wait_ns = (1.0 - BUCKET_EPS / 2 - t->tokens) * NSEC_PER_SEC / rate;
	double ms = ceil(wait_ns / NSEC_PER_MSEC);
	if (retry_after_ms)
		*retry_after_ms = ms < 1 ? 1 : ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
	return -EAGAIN;
}

enum unit { U_BYTES, U_MS, U_MILLICORES, U_COUNT };

struct limit_field {
	const char *name;
	uint16_t off;
	uint8_t width;
	enum unit unit;
};

#define LF(n, f, u)                                                             \
	{                                                                       \
		n, offsetof(Kiln__Limits, f), sizeof(((Kiln__Limits *)0)->f), u \
	}

static const struct limit_field limit_fields[] = {
        LF("memory", memory_bytes, U_BYTES),       /* memory.max */
        LF("pids", pids, U_COUNT),                 /* pids.max */
        LF("cpu", cpu_millicores, U_MILLICORES),   /* cpu.max */
        LF("workspace", workspace_bytes, U_BYTES), /* the /workspace tmpfs */
        LF("timeout", call_timeout_ms, U_MS),      /* a call's default timeout */
        LF("output", output_bytes, U_BYTES),       /* per output stream */
        LF("idle_ttl", idle_ttl_ms, U_MS),         /* session idle TTL */
};

static uint64_t
get_limit(const Kiln__Limits *l, const struct limit_field *f)
{
	const char *p = (const char *)l + f->off;
	if (f->width == 4) {
		uint32_t v;
		memcpy(&v, p, sizeof v);
		return v;
	}
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static void
set_limit(Kiln__Limits *l, const struct limit_field *f, uint64_t v)
{
	char *p = (char *)l + f->off;
	if (f->width == 4) {
		uint32_t w = (uint32_t)v;
		memcpy(p, &w, sizeof w);
	} else {
		memcpy(p, &v, sizeof v);
	}
}

static void
fmt_unit(enum unit u, uint64_t v, char *buf, size_t n)
{
	if (u == U_BYTES)
		sched_fmt_size(v, buf, n);
	else if (u == U_MS)
		sched_fmt_duration(v, buf, n);
	else if (u == U_MILLICORES)
		sched_fmt_cpu(v, buf, n);
	else
		snprintf(buf, n, "%" PRIu64, v);
}

int
sched_tenant_limits(const sched_tenant *t, const Kiln__Limits *req, Kiln__Limits *out, char *err,
                    size_t errlen)
{
	const sched_tenant_cfg *c = t->cfg;
	Kiln__Limits res = KILN__LIMITS__INIT;
	for (size_t i = 0; i < KL_ARRAY_SIZE(limit_fields); i++) {
		const struct limit_field *f = &limit_fields[i];
		uint64_t want = req ? get_limit(req, f) : 0, max = get_limit(&c->max, f);
		if (max && want > max) {
			if (err && errlen) {
				char a[64], b[64];
				fmt_unit(f->unit, want, a, sizeof a);
				fmt_unit(f->unit, max, b, sizeof b);
				snprintf(err, errlen, "%s %s exceeds tenant %s's max %s", f->name,
				         a, c->name, b);
			}
			return -EPERM;
		}
		if (!want)
			want = get_limit(&c->defaults, f);
		if (!want || (max && want > max))
			want = max;
		set_limit(&res, f, want);
	}
	*out = res;
	return 0;
}
