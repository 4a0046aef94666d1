/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for scheduler/tenants.c: token authentication (right, wrong,
 * empty, prefix and over-long tokens), the token bucket and its retry-after
 * on a fake clock, and session limits against a tenant's caps and defaults.
 */
#include "test.h"

#include "sched_config.h"
#include "tenants.h"

#include "kl_util.h"

#include <errno.h>

static const char config_text[] = "[scheduler]\n"
                                  "join_token = join-token\n"
                                  "admin_token = admin-token\n"
                                  "[tenant acme]\n"
                                  "token = acme-token\n"
                                  "rate = 10\n"
                                  "burst = 3\n"
                                  "max_memory = 2G\n"
                                  "max_pids = 1024\n"
                                  "max_cpu = 2\n"
                                  "max_timeout = 10m\n"
                                  "default_memory = 512M\n"
                                  "default_timeout = 2m\n"
                                  "[tenant acme2]\n"
                                  "token = acme-token2\n"
                                  "rate = 0\n"
                                  "[tenant globex]\n"
                                  "token = globex-token\n";

static sched_config cfg;
static sched_tenants tt;

static void
setup(void)
{
	char err[256];
	if (sched_config_load_string(config_text, &cfg, err, sizeof err) < 0)
		KT_FAIL("config: %s", err);
	ASSERT_EQ(sched_tenants_init(&tt, &cfg), 0);
	ASSERT_EQ(tt.n, 3);
}

static void
teardown(void)
{
	sched_tenants_fini(&tt);
	ASSERT(!tt.v);
	sched_tenants_fini(&tt);
	sched_config_fini(&cfg);
}

/* ---- authentication ---- */

TEST(auth)
{
	setup();
	sched_tenant *acme = sched_tenants_find(&tt, "acme");
	sched_tenant *acme2 = sched_tenants_find(&tt, "acme2");
	sched_tenant *globex = sched_tenants_find(&tt, "globex");
	ASSERT(acme && acme2 && globex);
	ASSERT_EQ(acme->idx, 0);
	ASSERT_EQ(globex->idx, 2);
	ASSERT(acme->cfg == &cfg.tenants[0]);

	ASSERT(sched_tenants_auth(&tt, "acme-token") == acme);
	ASSERT(sched_tenants_auth(&tt, "acme-token2") == acme2);
	ASSERT(sched_tenants_auth(&tt, "globex-token") == globex);
	/* Wrong, empty, missing, prefix, extension, case. */
	static const char *bad[] = {
	        "",
	        "x",
	        "acme",
	        "acme-toke",
	        "acme-token3",
	        "acme-token ",
	        " acme-token",
	        "ACME-TOKEN",
	        "acme-token\n",
	        "globex-tokem",
	        "join-token",
	        "admin-token",
	        "globex-toke",
	        "acme-tokem",
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(bad); i++)
		if (sched_tenants_auth(&tt, bad[i]))
			KT_FAIL("token '%s' authenticated", bad[i]);
	ASSERT(!sched_tenants_auth(&tt, NULL));
	/* Longer than any token can be: refused, not truncated to a match. */
	char longer[600];
	memset(longer, 'a', sizeof longer);
	memcpy(longer, "acme-token", 10);
	longer[sizeof longer - 1] = 0;
	ASSERT(!sched_tenants_auth(&tt, longer));
	longer[10] = 0;
	ASSERT(sched_tenants_auth(&tt, longer) == acme);

	ASSERT(!sched_tenants_find(&tt, "acm"));
	ASSERT(!sched_tenants_find(&tt, "ACME"));
	ASSERT(!sched_tenants_find(&tt, NULL));
	teardown();
}

TEST(auth_longest_token)
{
	/* A 255-character token matches itself and nothing one character off. */
	sched_config c;
	sched_config_init(&c);
	c.ntenants = 1;
	c.tenants = kl_xcalloc(1, sizeof(*c.tenants));
	strcpy(c.tenants[0].name, "t");
	memset(c.tenants[0].token, 'z', 255);
	sched_tenants t;
	ASSERT_EQ(sched_tenants_init(&t, &c), 0);
	char tok[300];
	memset(tok, 'z', sizeof tok);
	tok[255] = 0;
	ASSERT(sched_tenants_auth(&t, tok) == &t.v[0]);
	tok[254] = 0;
	ASSERT(!sched_tenants_auth(&t, tok));
	tok[254] = 'z';
	tok[255] = 'z';
	tok[256] = 0;
	ASSERT(!sched_tenants_auth(&t, tok));
	sched_tenants_fini(&t);
	sched_config_fini(&c);
}

TEST(init_rejects_unusable_tokens)
{
	/* Whole-buffer comparison needs zero padding; a hand-built config with
	 * junk after the NUL (or no token) is refused rather than never matching. */
	sched_config c;
	sched_config_init(&c);
	c.ntenants = 2;
	c.tenants = kl_xcalloc(2, sizeof(*c.tenants));
	strcpy(c.tenants[0].token, "good");
	strcpy(c.tenants[1].token, "also-good");
	sched_tenants t = {0};
	ASSERT_EQ(sched_tenants_init(&t, &c), 0);
	sched_tenants_fini(&t);
	c.tenants[1].token[100] = 'j';
	ASSERT_EQ(sched_tenants_init(&t, &c), -EINVAL);
	ASSERT(!t.v);
	memset(c.tenants[1].token, 0, sizeof c.tenants[1].token);
	ASSERT_EQ(sched_tenants_init(&t, &c), -EINVAL);
	memset(c.tenants[1].token, 'x', sizeof c.tenants[1].token);
	ASSERT_EQ(sched_tenants_init(&t, &c), -EINVAL);
	sched_config_fini(&c);
}

/* ---- rate ---- */

#define MS(x) ((uint64_t)(x)*1000000ull)

TEST(rate_bucket_and_retry_after)
{
	setup();
	sched_tenant *acme = sched_tenants_find(&tt, "acme"); /* rate 10/s, burst 3 */
	uint64_t t0 = MS(5000);
	uint32_t ra = 0;
	/* The bucket starts full: a burst of 3 passes at once. */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(sched_tenant_take(acme, t0, &ra), 0);
	ASSERT_EQ(sched_tenant_take(acme, t0, &ra), -EAGAIN);
	ASSERT_EQ(ra, 100);
	ra = 0;
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(40), &ra), -EAGAIN);
	ASSERT_EQ(ra, 60);
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(99), &ra), -EAGAIN);
	ASSERT_EQ(ra, 1);
	/* Sub-millisecond waits still say 1, never 0. */
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(99) + 999999, &ra), -EAGAIN);
	ASSERT_EQ(ra, 1);
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(100), &ra), 0);
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(100), &ra), -EAGAIN);
	ASSERT_EQ(ra, 100);
	/* 0.6 + 0.3 + 0.1 tokens is 0.9999999999999999 in doubles: waiting the
	 * advertised 10 ms must still get in. */
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(160), &ra), -EAGAIN);
	ASSERT_EQ(ra, 40);
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(190), &ra), -EAGAIN);
	ASSERT_EQ(ra, 10);
	ASSERT_EQ(sched_tenant_take(acme, t0 + MS(200), &ra), 0);
	/* A long pause refills only up to the burst. */
	uint64_t t1 = t0 + MS(60000);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(sched_tenant_take(acme, t1, &ra), 0);
	ASSERT_EQ(sched_tenant_take(acme, t1, &ra), -EAGAIN);
	/* A clock that steps back neither refills nor breaks the next refill. */
	ASSERT_EQ(sched_tenant_take(acme, t1 - MS(10000), &ra), -EAGAIN);
	ASSERT_EQ(ra, 100);
	ASSERT_EQ(sched_tenant_take(acme, t1 + MS(100), &ra), 0);
	/* The output is written only on failure; NULL is allowed. */
	ra = 777;
	ASSERT_EQ(sched_tenant_take(acme, t1 + MS(300), &ra), 0);
	ASSERT_EQ(ra, 777);
	ASSERT_EQ(sched_tenant_take(acme, t1 + MS(300), NULL), 0);
	ASSERT_EQ(sched_tenant_take(acme, t1 + MS(300), NULL), -EAGAIN);
	teardown();
}

TEST(rate_unlimited)
{
	setup();
	sched_tenant *t = sched_tenants_find(&tt, "acme2"); /* rate 0 */
	uint32_t ra = 0;
	for (int i = 0; i < 100000; i++)
		ASSERT_EQ(sched_tenant_take(t, MS(1), &ra), 0);
	teardown();
}

/* Waiting exactly retry_after_ms always gets in, whatever the rate (floating
 * point must not leave the bucket a hair short), and the long-run rate is the
 * configured one. */
TEST(rate_retry_after_is_honest)
{
	static const uint32_t rates[] = {1, 3, 7, 10, 33, 100, 333, 999, 1000, 1001, 4096, 100000};
	for (size_t k = 0; k < KL_ARRAY_SIZE(rates); k++) {
		sched_tenant_cfg tc = {.rate = rates[k], .burst = 1};
		strcpy(tc.name, "r");
		sched_tenant t = {.cfg = &tc, .tokens = 1};
		uint64_t now = MS(1000), rnd = 88172645463325252ull;
		uint32_t ra;
		ASSERT_EQ(sched_tenant_take(&t, now, &ra), 0);
		uint64_t admitted = 1;
		for (int i = 0; i < 2000; i++) {
			/* Arrive at odd nanoseconds so the bucket holds odd fractions. */
			rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
			now += rnd % MS(1000 / rates[k] + 1);
			int r = sched_tenant_take(&t, now, &ra);
			if (r == 0) {
				admitted++;
				continue;
			}
			ASSERT_EQ(r, -EAGAIN);
			ASSERT_GE(ra, 1);
			/* Never a wildly long wait: at most one token's time, rounded up. */
			ASSERT_LE(ra, 1000 / rates[k] + 1);
			now += MS(ra);
			if (sched_tenant_take(&t, now, &ra) != 0)
				KT_FAIL("rate %u: refused after waiting retry_after", rates[k]);
			admitted++;
		}
		/* Calls were admitted no faster than the rate allows (+ the burst). */
		double secs = (double)(now - MS(1000)) / 1e9;
		ASSERT_LE(admitted, (uint64_t)(secs * rates[k]) + 2);
	}
}

TEST(rate_long_run)
{
	/* 10 s of a call every ms against 200/s with burst 50: 50 + 2000 admitted. */
	sched_tenant_cfg tc = {.rate = 200, .burst = 50};
	sched_tenant t = {.cfg = &tc, .tokens = 50};
	uint64_t ok = 0;
	for (uint64_t ms = 0; ms < 10000; ms++)
		ok += sched_tenant_take(&t, MS(ms + 1), NULL) == 0;
	ASSERT_GE(ok, 2049);
	ASSERT_LE(ok, 2051);
}

/* ---- limits ---- */

TEST(limits_defaults_and_caps)
{
	setup();
	sched_tenant *acme = sched_tenants_find(&tt, "acme");
	Kiln__Limits out;
	char err[256] = "";
	/* Nothing asked: defaults where set, else the cap (never 0 under a cap). */
	ASSERT_EQ(sched_tenant_limits(acme, NULL, &out, err, sizeof err), 0);
	ASSERT_EQ(out.memory_bytes, 512ull << 20);
	ASSERT_EQ(out.call_timeout_ms, 120000);
	ASSERT_EQ(out.pids, 1024);
	ASSERT_EQ(out.cpu_millicores, 2000);
	ASSERT_EQ(out.workspace_bytes, 0);
	ASSERT_EQ(out.output_bytes, 0);
	ASSERT_EQ(out.idle_ttl_ms, 0);
	ASSERT(out.base.descriptor == &kiln__limits__descriptor);
	ASSERT_STR_EQ(err, "");

	/* Asked within the caps: kept as asked, zeros filled. */
	Kiln__Limits req = KILN__LIMITS__INIT;
	req.memory_bytes = 2ull << 30; /* exactly the max */
	req.pids = 10;
	req.workspace_bytes = 8ull << 30; /* no cap */
	req.idle_ttl_ms = 5000;
	ASSERT_EQ(sched_tenant_limits(acme, &req, &out, err, sizeof err), 0);
	ASSERT_EQ(out.memory_bytes, 2ull << 30);
	ASSERT_EQ(out.pids, 10);
	ASSERT_EQ(out.cpu_millicores, 2000);
	ASSERT_EQ(out.workspace_bytes, 8ull << 30);
	ASSERT_EQ(out.call_timeout_ms, 120000);
	ASSERT_EQ(out.idle_ttl_ms, 5000);
	teardown();
}

static void
expect_denied(const sched_tenant *t, const Kiln__Limits *req, const char *msg)
{
	Kiln__Limits out = KILN__LIMITS__INIT;
	out.pids = 4242;
	char err[256] = "";
	ASSERT_EQ(sched_tenant_limits(t, req, &out, err, sizeof err), -EPERM);
	ASSERT_STR_EQ(err, msg);
	ASSERT_EQ(out.pids, 4242); /* untouched */
	ASSERT_EQ(out.memory_bytes, 0);
	ASSERT_EQ(sched_tenant_limits(t, req, &out, NULL, 0), -EPERM);
}

TEST(limits_over_the_cap)
{
	setup();
	sched_tenant *acme = sched_tenants_find(&tt, "acme");
	Kiln__Limits req = KILN__LIMITS__INIT;
	req.memory_bytes = 4ull << 30;
	expect_denied(acme, &req, "memory 4 GiB exceeds tenant acme's max 2 GiB");
	req.memory_bytes = (2ull << 30) + 1;
	expect_denied(acme, &req, "memory 2147483649 bytes exceeds tenant acme's max 2 GiB");
	req = (Kiln__Limits)KILN__LIMITS__INIT;
	req.pids = 1025;
	expect_denied(acme, &req, "pids 1025 exceeds tenant acme's max 1024");
	req = (Kiln__Limits)KILN__LIMITS__INIT;
	req.cpu_millicores = 2500;
	expect_denied(acme, &req, "cpu 2500m exceeds tenant acme's max 2000m");
	req = (Kiln__Limits)KILN__LIMITS__INIT;
	req.call_timeout_ms = 15 * 60 * 1000;
	expect_denied(acme, &req, "timeout 15m exceeds tenant acme's max 10m");
	/* The first offending field in Limits order is named. */
	req.memory_bytes = 3ull << 30;
	expect_denied(acme, &req, "memory 3 GiB exceeds tenant acme's max 2 GiB");
	teardown();
}

TEST(limits_without_caps)
{
	setup();
	sched_tenant *g = sched_tenants_find(&tt, "globex");
	Kiln__Limits req = KILN__LIMITS__INIT, out;
	req.memory_bytes = 1ull << 40;
	req.cpu_millicores = 64000;
	ASSERT_EQ(sched_tenant_limits(g, &req, &out, NULL, 0), 0);
	ASSERT_EQ(out.memory_bytes, 1ull << 40);
	ASSERT_EQ(out.cpu_millicores, 64000);
	/* 0 stays 0: the node's template default applies. */
	ASSERT_EQ(out.pids, 0);
	ASSERT_EQ(out.call_timeout_ms, 0);
	teardown();
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
