/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_config: the scheduler's configuration file (scheduler/sched_config.c,
 * the format in docs/config.md). The input is the file's text (a NUL ends
 * it, as the file loader refuses NUL bytes before parsing).
 *
 * Invariants:
 *  - a refused file leaves the caller's config untouched and says why, in a
 *    message that starts with "config";
 *  - an accepted one holds everything the loader promises: URLs and tokens
 *    of the allowed shape, a join token, distinct tokens across roles and
 *    tenants, valid and unique tenant names, weights in range, dead_after
 *    longer than heartbeat, defaults within caps;
 *  - the tenant table builds from it, each tenant's token authenticates as
 *    that tenant and the join and admin tokens as no tenant;
 *  - loading is deterministic (the same text gives the same config);
 *  - the unit formatters and parsers round-trip: a size, duration or CPU
 *    amount taken from the input, formatted as the loader's messages show it,
 *    parses back to the same value.
 */
#include "fuzz.h"

#include "sched_config.h"
#include "tenants.h"

#include <ctype.h>
#include <errno.h>

static int
token_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > SCHED_TOKEN_MAX)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-._~+/=", *s))
			return 0;
	return 1;
}

static int
name_ok(const char *s)
{
	size_t n = strnlen(s, 64);
	if (!n || n > SCHED_TENANT_NAME_MAX || !isalnum((unsigned char)s[0]))
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return 0;
	return 1;
}

static int
url_ok(const char *s)
{
	const char *sep = strstr(s, "://");
	if (!sep || sep == s || !sep[3] || strnlen(s, 256) > 255)
		return 0;
	for (; *s; s++)
		if (!isgraph((unsigned char)*s))
			return 0;
	return 1;
}

/* Field k of a Limits (they are all uint32 or uint64), in proto order. */
static uint64_t
lim(const Kiln__Limits *l, int k)
{
	const uint64_t v[] = {
	        l->memory_bytes,    l->pids,         l->cpu_millicores, l->workspace_bytes,
	        l->call_timeout_ms, l->output_bytes, l->idle_ttl_ms};
	return v[k];
}

static void
accepted_check(const sched_config *c)
{
	FZ_CHECK(url_ok(c->node_url) && url_ok(c->client_url), "urls '%s' '%s'", c->node_url,
	         c->client_url);
	FZ_CHECK(token_ok(c->join_token), "join token '%s'", c->join_token);
	FZ_CHECK(!*c->admin_token ||
	                 (token_ok(c->admin_token) && strcmp(c->admin_token, c->join_token)),
	         "admin token '%s'", c->admin_token);
	FZ_CHECK(c->heartbeat_ms >= 1 && c->dead_after_ms > c->heartbeat_ms && c->poll_ms >= 1 &&
	                 c->idle_ttl_ms >= 1 && c->max_queued >= 1,
	         "timers %u %u %u %u", c->heartbeat_ms, c->dead_after_ms, c->poll_ms,
	         c->idle_ttl_ms);
	FZ_CHECK(c->ntenants >= 0 && (!c->ntenants || c->tenants), "%d tenants", c->ntenants);
	for (int i = 0; i < c->ntenants; i++) {
		const sched_tenant_cfg *t = &c->tenants[i];
		FZ_CHECK(name_ok(t->name), "tenant name '%.64s'", t->name);
		FZ_CHECK(token_ok(t->token) && strcmp(t->token, c->join_token) &&
		                 strcmp(t->token, c->admin_token),
		         "tenant %s token", t->name);
		FZ_CHECK(t->weight >= 1 && t->weight <= SCHED_WEIGHT_MAX && t->max_sessions >= 1 &&
		                 t->max_inflight >= 1 && (t->burst >= 1 || !t->rate) &&
		                 t->queue_limit >= 1,
		         "tenant %s numbers", t->name);
		for (int j = 0; j < i; j++)
			FZ_CHECK(strcmp(t->name, c->tenants[j].name) &&
			                 strcmp(t->token, c->tenants[j].token),
			         "tenants %s and %s share a name or token", t->name,
			         c->tenants[j].name);
		for (int k = 0; k < 7; k++)
			if (lim(&t->defaults, k) && lim(&t->max, k))
				FZ_CHECK(lim(&t->defaults, k) <= lim(&t->max, k),
				         "tenant %s: default %d over its cap", t->name, k);
	}
	sched_tenants tt;
	FZ_CHECK(sched_tenants_init(&tt, c) == 0, "tenant table refused");
	for (int i = 0; i < c->ntenants; i++)
		FZ_CHECK(sched_tenants_auth(&tt, c->tenants[i].token) == &tt.v[i],
		         "tenant %s's token does not authenticate it", c->tenants[i].name);
	FZ_CHECK(!sched_tenants_auth(&tt, c->join_token), "join token authenticates a tenant");
	FZ_CHECK(!sched_tenants_auth(&tt, ""), "empty token authenticates");
	sched_tenants_fini(&tt);
}

static void
same_config(const sched_config *a, const sched_config *b)
{
	FZ_CHECK(!strcmp(a->node_url, b->node_url) && !strcmp(a->join_token, b->join_token) &&
	                 !strcmp(a->admin_token, b->admin_token) &&
	                 a->heartbeat_ms == b->heartbeat_ms && a->poll_ms == b->poll_ms &&
	                 a->ntenants == b->ntenants,
	         "second load differs");
	for (int i = 0; i < a->ntenants; i++)
		FZ_CHECK(!memcmp(&a->tenants[i], &b->tenants[i], sizeof a->tenants[i]),
		         "tenant %d differs on a second load", i);
}

/* fmt then parse gives the value back, for every unit family. */
static void
units_check(uint64_t v)
{
	char buf[64];
	uint64_t back = ~v;
	sched_fmt_size(v, buf, sizeof buf);
	/* "N bytes" is for messages only; the number is what a file would say. */
	char *unit = strstr(buf, " byte");
	if (unit)
		*unit = 0;
	FZ_CHECK(sched_parse_size(buf, &back) == 0 && back == v, "size %llu -> '%s' -> %llu",
	         (unsigned long long)v, buf, (unsigned long long)back);
	sched_fmt_duration(v, buf, sizeof buf);
	FZ_CHECK(sched_parse_duration_ms(buf, &back) == 0 && back == v,
	         "duration %llu -> '%s' -> %llu", (unsigned long long)v, buf,
	         (unsigned long long)back);
	sched_fmt_cpu(v, buf, sizeof buf);
	FZ_CHECK(sched_parse_cpu(buf, &back) == 0 && back == v, "cpu %llu -> '%s' -> %llu",
	         (unsigned long long)v, buf, (unsigned long long)back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_reader in = {data, size};
	uint64_t v = 0;
	if (size)
		memcpy(&v, data, size < 8 ? size : 8);
	units_check(v);
	units_check(v >> (v & 63));

	char *text = fz_str(&in, NULL);
	sched_config c, sentinel;
	memset(&c, 0x5a, sizeof c);
	memcpy(&sentinel, &c, sizeof c);
	char err[512] = "";
	int r = sched_config_load_string(text, &c, err, sizeof err);
	FZ_CHECK(r == 0 || r == -EINVAL, "load returned %d", r);
	if (r < 0) {
		FZ_CHECK(!strncmp(err, "config", 6), "error '%s'", err);
		FZ_CHECK(!memcmp(&c, &sentinel, sizeof c), "refused load changed the config");
		free(text);
		return 0;
	}
	accepted_check(&c);
	sched_config c2;
	FZ_CHECK(sched_config_load_string(text, &c2, err, sizeof err) == 0, "second load: %s", err);
	same_config(&c, &c2);
	sched_config_fini(&c2);
	sched_config_fini(&c);
	free(text);
	return 0;
}
