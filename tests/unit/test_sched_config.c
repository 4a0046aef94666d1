/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for scheduler/sched_config.c: every key, the size, duration and
 * CPU syntax, each error message with its line number, token files, the
 * cross-checks (duplicates, missing tokens, defaults above caps) and the
 * embedded dev config.
 */
#include "test.h"

#include "sched_config.h"

#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static char errbuf[512];

/* Minimal valid prefix: the scheduler needs a join token, tenants a token. */
#define HEAD "[scheduler]\njoin_token = jt\n"

static int
load(const char *text, sched_config *c)
{
	errbuf[0] = 0;
	return sched_config_load_string(text, c, errbuf, sizeof errbuf);
}

/* The text must fail with exactly this message and leave the config untouched. */
static void
expect_err_at(const char *text, const char *msg, int srcline)
{
	sched_config c;
	memset(&c, 0x5a, sizeof c);
	int r = load(text, &c);
	if (r != -EINVAL || strcmp(errbuf, msg))
		KT_FAIL("(line %d) load: r=%d err=\"%s\", want -EINVAL \"%s\"", srcline, r, errbuf,
		        msg);
	const unsigned char *b = (const unsigned char *)&c;
	for (size_t i = 0; i < sizeof c; i++)
		if (b[i] != 0x5a)
			KT_FAIL("(line %d) config written on failure at byte %zu", srcline, i);
}
#define expect_err(text, msg) expect_err_at(text, msg, __LINE__)

static sched_tenant_cfg *
tenant(sched_config *c, const char *name)
{
	for (int i = 0; i < c->ntenants; i++)
		if (!strcmp(c->tenants[i].name, name))
			return &c->tenants[i];
	KT_FAIL("no tenant %s", name);
}

/* ---- values ---- */

TEST(sizes)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
	        {"0", 0},
	        {"512", 512},
	        {"1B", 1},
	        {"1K", 1024},
	        {"1k", 1024},
	        {"1KiB", 1024},
	        {"1kb", 1024},
	        {"4M", 4ull << 20},
	        {"2G", 2ull << 30},
	        {"2 GiB", 2ull << 30},
	        {"1.5G", 3ull << 29},
	        {"0.5K", 512},
	        {"4T", 4ull << 40},
	        {"007", 7},
	        {"18446744073709551615", UINT64_MAX},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(ok); i++) {
		uint64_t v = 12345;
		if (sched_parse_size(ok[i].s, &v) != 0 || v != ok[i].v)
			KT_FAIL("size '%s' -> %" PRIu64 ", want %" PRIu64, ok[i].s, v, ok[i].v);
	}
	static const struct {
		const char *s;
		int r;
	} bad[] = {
	        {"", -EINVAL},
	        {"G", -EINVAL},
	        {"-1", -EINVAL},
	        {"+1", -EINVAL},
	        {" 1", -EINVAL},
	        {"1X", -EINVAL},
	        {"2X", -EINVAL},
	        {"1.K", -EINVAL},
	        {".5K", -EINVAL},
	        {"1.1K", -EINVAL}, /* 1126.4 bytes */
	        {"0x10", -EINVAL},
	        {"1e3", -EINVAL},
	        {"1 2", -EINVAL},
	        {"1GG", -EINVAL},
	        {"1.0000000001G", -EINVAL},
	        {"18446744073709551616", -ERANGE},
	        {"99999999999999999999999", -ERANGE},
	        {"16777216T", -ERANGE},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(bad); i++) {
		uint64_t v = 12345;
		int r = sched_parse_size(bad[i].s, &v);
		if (r != bad[i].r || v != 12345)
			KT_FAIL("size '%s' -> r=%d v=%" PRIu64 ", want %d", bad[i].s, r, v,
			        bad[i].r);
	}
}

TEST(durations_and_cpu)
{
	static const struct {
		const char *s;
		uint64_t v;
	} dur[] = {
	        {"1500ms", 1500}, {"90s", 90000},  {"2m", 120000}, {"1h", 3600000}, {"30", 30000},
	        {"1.5s", 1500},   {"0.5m", 30000}, {"0", 0},       {"2M", 120000},  {"0ms", 0},
	};
	uint64_t v;
	for (size_t i = 0; i < KL_ARRAY_SIZE(dur); i++)
		if (sched_parse_duration_ms(dur[i].s, &v) != 0 || v != dur[i].v)
			KT_FAIL("duration '%s' -> %" PRIu64 ", want %" PRIu64, dur[i].s, v,
			        dur[i].v);
	static const char *dbad[] = {"", "s", "1d", "0.5ms", "1.0005s", "-1s", "1 h x", "1hr"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(dbad); i++)
		if (sched_parse_duration_ms(dbad[i], &v) != -EINVAL)
			KT_FAIL("duration '%s' accepted", dbad[i]);

	static const struct {
		const char *s;
		uint64_t v;
	} cpu[] = {{"2000m", 2000}, {"2", 2000}, {"0.5", 500}, {"250m", 250}, {"1.25", 1250}};
	for (size_t i = 0; i < KL_ARRAY_SIZE(cpu); i++)
		if (sched_parse_cpu(cpu[i].s, &v) != 0 || v != cpu[i].v)
			KT_FAIL("cpu '%s' -> %" PRIu64 ", want %" PRIu64, cpu[i].s, v, cpu[i].v);
	static const char *cbad[] = {"", "m", "1.2345", "0.5m", "2c", "-1"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(cbad); i++)
		if (sched_parse_cpu(cbad[i], &v) != -EINVAL)
			KT_FAIL("cpu '%s' accepted", cbad[i]);
}

TEST(formatting)
{
	char b[64];
	sched_fmt_size(4ull << 30, b, sizeof b);
	ASSERT_STR_EQ(b, "4 GiB");
	sched_fmt_size(3ull << 29, b, sizeof b);
	ASSERT_STR_EQ(b, "1536 MiB");
	sched_fmt_size(1, b, sizeof b);
	ASSERT_STR_EQ(b, "1 byte");
	sched_fmt_size(1000, b, sizeof b);
	ASSERT_STR_EQ(b, "1000 bytes");
	sched_fmt_size(2ull << 40, b, sizeof b);
	ASSERT_STR_EQ(b, "2 TiB");
	sched_fmt_duration(600000, b, sizeof b);
	ASSERT_STR_EQ(b, "10m");
	sched_fmt_duration(7200000, b, sizeof b);
	ASSERT_STR_EQ(b, "2h");
	sched_fmt_duration(90000, b, sizeof b);
	ASSERT_STR_EQ(b, "90s");
	sched_fmt_duration(1500, b, sizeof b);
	ASSERT_STR_EQ(b, "1500ms");
	sched_fmt_duration(0, b, sizeof b);
	ASSERT_STR_EQ(b, "0ms");
	sched_fmt_cpu(2500, b, sizeof b);
	ASSERT_STR_EQ(b, "2500m");
}

/* ---- loading ---- */

TEST(defaults)
{
	sched_config c;
	sched_config_init(&c);
	ASSERT_STR_EQ(c.node_url, "tcp://0.0.0.0:7070");
	ASSERT_STR_EQ(c.client_url, "tcp://127.0.0.1:7071");
	ASSERT_EQ(c.heartbeat_ms, 1000);
	ASSERT_EQ(c.dead_after_ms, 3000);
	ASSERT_EQ(c.poll_ms, 5000);
	ASSERT_EQ(c.max_queued, 100000);
	ASSERT_EQ(c.idle_ttl_ms, 30 * 60 * 1000);
	ASSERT_EQ(c.shutdown_grace_ms, 10000);
	ASSERT_EQ(c.ntenants, 0);
	ASSERT(!c.tenants);
	ASSERT(!c.dev);

	/* A file that sets only what it must keeps every default. */
	ASSERT_EQ(load(HEAD "[tenant a]\ntoken = ta\n", &c), 0);
	ASSERT_STR_EQ(c.join_token, "jt");
	ASSERT_STR_EQ(c.admin_token, "");
	ASSERT_EQ(c.heartbeat_ms, 1000);
	ASSERT_EQ(c.max_queued, 100000);
	ASSERT_EQ(c.ntenants, 1);
	sched_tenant_cfg *t = &c.tenants[0];
	ASSERT_STR_EQ(t->name, "a");
	ASSERT_STR_EQ(t->token, "ta");
	ASSERT_EQ(t->weight, 1);
	ASSERT_EQ(t->max_sessions, 100);
	ASSERT_EQ(t->max_inflight, 64);
	ASSERT_EQ(t->rate, 100);
	ASSERT_EQ(t->burst, 200);
	ASSERT_EQ(t->queue_limit, 256);
	ASSERT_EQ(t->max.memory_bytes, 0);
	ASSERT_EQ(t->max.call_timeout_ms, 0);
	ASSERT_EQ(t->defaults.memory_bytes, 0);
	ASSERT(!c.dev);
	sched_config_fini(&c);
	ASSERT_EQ(c.ntenants, 0);
	ASSERT(!c.tenants);
	sched_config_fini(&c); /* twice is fine */
}

TEST(every_key)
{
	static const char text[] = "; every key, in order\n"
	                           "[scheduler]\n"
	                           "node_url = tcp://10.0.0.1:7000\n"
	                           "client_url = ipc:///run/kiln/client.sock\n"
	                           "join_token = join-0123456789\n"
	                           "admin_token = admin-abcdef\n"
	                           "heartbeat = 500ms\n"
	                           "dead_after = 2s\n"
	                           "poll = 3s\n"
	                           "idle_ttl = 1h\n"
	                           "shutdown_grace = 0\n"
	                           "max_queued = 5000\n"
	                           "\n"
	                           "[tenant acme]\n"
	                           "token = acme-token_1.x~y+z/w=\n"
	                           "weight = 2\n"
	                           "max_sessions = 200\n"
	                           "max_inflight = 64\n"
	                           "rate = 200\n"
	                           "burst = 400\n"
	                           "queue = 300\n"
	                           "max_memory = 2G\n"
	                           "max_pids = 1024\n"
	                           "max_cpu = 2000m\n"
	                           "max_workspace = 4G\n"
	                           "max_timeout = 10m\n"
	                           "max_output = 4M\n"
	                           "max_idle_ttl = 2h\n"
	                           "default_memory = 512M\n"
	                           "default_pids = 256\n"
	                           "default_cpu = 0.5\n"
	                           "default_workspace = 1G\n"
	                           "default_timeout = 2m\n"
	                           "default_output = 1M\n"
	                           "default_idle_ttl = 30m\n"
	                           "[tenant globex]\n"
	                           "token = globex-token\n";
	sched_config c;
	ASSERT_EQ(load(text, &c), 0);
	ASSERT_STR_EQ(c.node_url, "tcp://10.0.0.1:7000");
	ASSERT_STR_EQ(c.client_url, "ipc:///run/kiln/client.sock");
	ASSERT_STR_EQ(c.join_token, "join-0123456789");
	ASSERT_STR_EQ(c.admin_token, "admin-abcdef");
	ASSERT_EQ(c.heartbeat_ms, 500);
	ASSERT_EQ(c.dead_after_ms, 2000);
	ASSERT_EQ(c.poll_ms, 3000);
	ASSERT_EQ(c.idle_ttl_ms, 3600000);
	ASSERT_EQ(c.shutdown_grace_ms, 0);
	ASSERT_EQ(c.max_queued, 5000);
	ASSERT_EQ(c.ntenants, 2);
	sched_tenant_cfg *t = tenant(&c, "acme");
	ASSERT_STR_EQ(t->token, "acme-token_1.x~y+z/w=");
	ASSERT_EQ(t->weight, 2);
	ASSERT_EQ(t->max_sessions, 200);
	ASSERT_EQ(t->max_inflight, 64);
	ASSERT_EQ(t->rate, 200);
	ASSERT_EQ(t->burst, 400);
	ASSERT_EQ(t->queue_limit, 300);
	ASSERT_EQ(t->max.memory_bytes, 2ull << 30);
	ASSERT_EQ(t->max.pids, 1024);
	ASSERT_EQ(t->max.cpu_millicores, 2000);
	ASSERT_EQ(t->max.workspace_bytes, 4ull << 30);
	ASSERT_EQ(t->max.call_timeout_ms, 600000);
	ASSERT_EQ(t->max.output_bytes, 4ull << 20);
	ASSERT_EQ(t->max.idle_ttl_ms, 7200000);
	ASSERT_EQ(t->defaults.memory_bytes, 512ull << 20);
	ASSERT_EQ(t->defaults.pids, 256);
	ASSERT_EQ(t->defaults.cpu_millicores, 500);
	ASSERT_EQ(t->defaults.workspace_bytes, 1ull << 30);
	ASSERT_EQ(t->defaults.call_timeout_ms, 120000);
	ASSERT_EQ(t->defaults.output_bytes, 1ull << 20);
	ASSERT_EQ(t->defaults.idle_ttl_ms, 1800000);
	/* The Limits messages stay valid protobuf-c messages. */
	ASSERT(t->max.base.descriptor == &kiln__limits__descriptor);
	ASSERT(t->defaults.base.descriptor == &kiln__limits__descriptor);
	t = tenant(&c, "globex");
	ASSERT_EQ(t->weight, 1);
	ASSERT_EQ(t->burst, 200);
	ASSERT(t->max.base.descriptor == &kiln__limits__descriptor);
	sched_config_fini(&c);
}

TEST(derived_burst_and_queue)
{
	sched_config c;
	ASSERT_EQ(load(HEAD "[tenant a]\ntoken = ta\nrate = 0\nmax_inflight = 10\n"
	                    "[tenant b]\ntoken = tb\nrate = 4000000000\nmax_inflight = 2000000000\n"
	                    "[tenant c]\ntoken = tc\nrate = 7\nburst = 1\nqueue = 3\n",
	               &c),
	          0);
	ASSERT_EQ(tenant(&c, "a")->rate, 0);
	ASSERT_EQ(tenant(&c, "a")->burst, 0);
	ASSERT_EQ(tenant(&c, "a")->queue_limit, 40);
	/* Saturates instead of wrapping. */
	ASSERT_EQ(tenant(&c, "b")->burst, UINT32_MAX);
	ASSERT_EQ(tenant(&c, "b")->queue_limit, UINT32_MAX);
	ASSERT_EQ(tenant(&c, "c")->burst, 1);
	ASSERT_EQ(tenant(&c, "c")->queue_limit, 3);
	sched_config_fini(&c);
}

TEST(syntax_tolerance)
{
	/* Comments (; and # lines, " ;" inline), blank lines, CRLF, blanks inside
	 * headers, name: value, and a comment longer than inih's line buffer. */
	char text[2048];
	char longc[400];
	memset(longc, 'x', sizeof longc - 1);
	longc[sizeof longc - 1] = 0;
	snprintf(text, sizeof text,
	         "# kiln\r\n"
	         "; %s\r\n"
	         "[ scheduler ]\r\n"
	         "join_token = jt ; inline comment\r\n"
	         "max_queued: 7\r\n"
	         "\r\n"
	         "   # indented comment\n"
	         "[tenant   spaced  ] ; the tenant\n"
	         "  token = ts\n"
	         "weight=3\n",
	         longc);
	sched_config c;
	ASSERT_EQ(load(text, &c), 0);
	ASSERT_STR_EQ(c.join_token, "jt");
	ASSERT_EQ(c.max_queued, 7);
	ASSERT_EQ(c.ntenants, 1);
	ASSERT_STR_EQ(c.tenants[0].name, "spaced");
	ASSERT_STR_EQ(c.tenants[0].token, "ts");
	ASSERT_EQ(c.tenants[0].weight, 3);
	sched_config_fini(&c);
}

TEST(long_tenant_names_stay_distinct)
{
	/* inih keeps only 49 bytes of a section name; two 63-character names that
	 * share 60 must still be two tenants with their own settings. */
	char a[64], b[64], text[1024];
	memset(a, 'n', 63);
	a[63] = 0;
	memcpy(b, a, 64);
	b[62] = 'm';
	snprintf(text, sizeof text,
	         HEAD "[tenant %s]\ntoken = t1\nweight = 3\n"
	              "[tenant %s]\ntoken = t2\nweight = 5\n",
	         a, b);
	sched_config c;
	ASSERT_EQ(load(text, &c), 0);
	ASSERT_EQ(c.ntenants, 2);
	ASSERT_EQ(tenant(&c, a)->weight, 3);
	ASSERT_EQ(tenant(&c, b)->weight, 5);
	sched_config_fini(&c);

	/* 64 characters is one too many. */
	char want[256];
	snprintf(text, sizeof text, HEAD "[tenant %sx]\ntoken = t1\n", a);
	snprintf(want, sizeof want,
	         "config line 3: tenant name '%sx': use 1-63 letters, digits, '.', '_' or '-', "
	         "starting with a letter or digit",
	         a);
	expect_err(text, want);
}

/* ---- errors, each with its line ---- */

TEST(error_values)
{
	expect_err(HEAD "[tenant acme]\n"
	                "token = t\n"
	                "weight = 2\n"
	                "max_sessions = 200\n"
	                "max_inflight = 64\n"
	                "rate = 200\n"
	                "burst = 400\n"
	                "queue = 256\n"
	                "# a comment\n"
	                "max_memory = 2X\n",
	           "config line 12: max_memory: not a size: '2X'");
	expect_err(HEAD "[tenant a]\ntoken = t\nweight = 0\n",
	           "config line 5: weight: '0' is too small (at least 1)");
	expect_err(HEAD "[tenant a]\ntoken = t\nweight = 1001\n",
	           "config line 5: weight: '1001' is too large (at most 1000)");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_sessions = -1\n",
	           "config line 5: max_sessions: must not be negative: '-1'");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_sessions = 4294967296\n",
	           "config line 5: max_sessions: '4294967296' is too large (at most 4294967295)");
	expect_err(HEAD "[tenant a]\ntoken = t\nrate = 99999999999999999999999\n",
	           "config line 5: rate: '99999999999999999999999' is too large (at most "
	           "4294967295)");
	expect_err(HEAD "[tenant a]\ntoken = t\nrate = 1.5\n",
	           "config line 5: rate: not a number: '1.5'");
	expect_err(HEAD "[tenant a]\ntoken = t\nrate = ten\n",
	           "config line 5: rate: not a number: 'ten'");
	expect_err(HEAD "[tenant a]\ntoken = t\nrate =\n", "config line 5: rate: not a number: ''");
	expect_err(HEAD "[tenant a]\ntoken = t\nweight = 2  # two\n",
	           "config line 5: weight: not a number: '2  # two'");
	expect_err(HEAD "[tenant a]\ntoken = t\nburst = 0\n",
	           "config line 5: burst: '0' is too small (at least 1)");
	expect_err(HEAD "[tenant a]\ntoken = t\nqueue = 0\n",
	           "config line 5: queue: '0' is too small (at least 1)");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_memory = 1.1K\n",
	           "config line 5: max_memory: '1.1K' is not a whole number of bytes");
	expect_err(
	        HEAD "[tenant a]\ntoken = t\nmax_memory = 16777216T\n",
	        "config line 5: max_memory: '16777216T' is too large (at most 18446744073709551615 "
	        "bytes)");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_timeout = 5y\n",
	           "config line 5: max_timeout: not a duration: '5y'");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_timeout = 0.1ms\n",
	           "config line 5: max_timeout: '0.1ms' is not a whole number of milliseconds");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_timeout = 2000h\n",
	           "config line 5: max_timeout: '2000h' is too large (at most 1193h)");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_cpu = 2 cores\n",
	           "config line 5: max_cpu: not a CPU amount: '2 cores'");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_cpu = 0.0001\n",
	           "config line 5: max_cpu: '0.0001' is not a whole number of millicores");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_pids = 10K\n",
	           "config line 5: max_pids: not a number: '10K'");
	expect_err("[scheduler]\nheartbeat = 0\n",
	           "config line 2: heartbeat: '0' is too small (at least 1ms)");
	expect_err("[scheduler]\nmax_queued = 0\n",
	           "config line 2: max_queued: '0' is too small (at least 1)");
	expect_err("[scheduler]\nnode_url = localhost:7070\n",
	           "config line 2: node_url: not a URL like tcp://host:port: 'localhost:7070'");
	expect_err("[scheduler]\nclient_url = tcp://\n",
	           "config line 2: client_url: not a URL like tcp://host:port: 'tcp://'");
	expect_err("[scheduler]\nclient_url = tcp://a b:1\n",
	           "config line 2: client_url: not a URL like tcp://host:port: 'tcp://a b:1'");
}

TEST(error_structure)
{
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_memroy = 2G\n",
	           "config line 5: max_memroy: unknown key in [tenant a]");
	expect_err("[scheduler]\nheartbeat_ms = 1000\n",
	           "config line 2: heartbeat_ms: unknown key in [scheduler]");
	expect_err(HEAD "\n[tenants acme]\ntoken = t\n",
	           "config line 4: unknown section [tenants acme] (expected [scheduler], [tenant "
	           "NAME] or [secret NAME])");
	/* An unknown section is an error even with nothing in it. */
	expect_err(HEAD "[shceduler]\n",
	           "config line 3: unknown section [shceduler] (expected [scheduler], [tenant "
	           "NAME] or [secret NAME])");
	expect_err("join_token = jt\n[scheduler]\n",
	           "config line 1: join_token: outside any section (put it under [scheduler] or "
	           "[tenant NAME])");
	expect_err(HEAD "[tenant a]\ntoken = t\nweight = 1\nweight = 2\n",
	           "config line 6: weight: set twice (first on line 5)");
	expect_err(HEAD "heartbeat = 1s\n[tenant a]\ntoken = t\n[scheduler]\nheartbeat = 2s\n",
	           "config line 7: heartbeat: set twice (first on line 3)");
	expect_err(HEAD "[tenant a]\ntoken = t\ntoken_file = /etc/x\n",
	           "config line 5: token_file: token was already set on line 4; use one");
	expect_err("[scheduler]\njoin_token = x\njoin_token_file = /nonexistent\n",
	           "config line 3: join_token_file: join_token was already set on line 2; use one");
	expect_err(HEAD "[tenant a]\ntoken = t\n[tenant b]\ntoken = u\n[tenant a]\ntoken = v\n",
	           "config line 7: duplicate tenant 'a' (first on line 3)");
	expect_err(HEAD "[tenant]\n", "config line 3: [tenant] needs a name: [tenant NAME]");
	expect_err(HEAD "[tenant a b]\n",
	           "config line 3: tenant name 'a b': use 1-63 letters, digits, '.', '_' or '-', "
	           "starting with a letter or digit");
	expect_err(HEAD "[tenant ../x]\n",
	           "config line 3: tenant name '../x': use 1-63 letters, digits, '.', '_' or '-', "
	           "starting with a letter or digit");
	expect_err(HEAD "[tenant a] b\n", "config line 3: unexpected text after ']'");
	/* Malformed lines, as inih sees them. */
	expect_err(HEAD "[tenant a]\ntoken = t\nweight 2\n",
	           "config line 5: expected [section], key = value or a comment");
	expect_err(HEAD "[tenant a\ntoken = t\n",
	           "config line 3: expected [section], key = value or a comment");
	/* An indented line is not a continuation of the previous value. */
	expect_err(HEAD "[tenant a]\ntoken = t\n    more\n",
	           "config line 5: expected [section], key = value or a comment");
	/* Whichever error comes first in the file is the one reported. */
	expect_err(HEAD "bogus\n[tenant a]\ntoken = t\nweight = x\n",
	           "config line 3: expected [section], key = value or a comment");
	expect_err(HEAD "[tenant a]\ntoken = t\nweight = x\nbogus\n",
	           "config line 5: weight: not a number: 'x'");
	expect_err(HEAD "[shceduler]\nbogus\n",
	           "config line 3: unknown section [shceduler] (expected [scheduler], [tenant "
	           "NAME] or [secret NAME])");
	/* inih's line buffer is 200 bytes: a longer line is refused, not split. */
	char text[512], val[300];
	memset(val, '7', sizeof val - 1);
	val[sizeof val - 1] = 0;
	snprintf(text, sizeof text, HEAD "[tenant a]\ntoken = t\nmax_sessions = %s\n", val);
	expect_err(text, "config line 5: line too long (at most 198 characters)");
}

TEST(error_cross_checks)
{
	expect_err(HEAD "[tenant a]\ntoken = t\n[tenant b]\nweight = 2\n[tenant c]\ntoken = u\n",
	           "config line 5: tenant b has no token (set token or token_file)");
	expect_err(HEAD "[tenant a]\ntoken = same\n[tenant b]\nweight = 2\ntoken = same\n",
	           "config line 7: tenant b: same token as tenant a");
	expect_err(HEAD "admin_token = adm\n[tenant a]\ntoken = adm\n",
	           "config line 5: tenant a: same token as the admin token");
	expect_err(HEAD "[tenant a]\ntoken = jt\n",
	           "config line 4: tenant a: same token as the join token");
	expect_err(HEAD "admin_token = jt\n",
	           "config line 3: the admin token must differ from the join token");
	expect_err("[tenant a]\ntoken = t\n",
	           "config: [scheduler] needs join_token or join_token_file: nodes must prove they "
	           "belong to the cluster");
	expect_err("", "config: [scheduler] needs join_token or join_token_file: nodes must "
	               "prove they belong to the cluster");
	expect_err(HEAD "heartbeat = 3s\n",
	           "config line 3: dead_after (3s) must be longer than heartbeat (3s)");
	expect_err(HEAD "dead_after = 500ms\nheartbeat = 100ms\nheartbeat = 1s\n",
	           "config line 5: heartbeat: set twice (first on line 4)");
	expect_err(HEAD "dead_after = 500ms\n",
	           "config line 3: dead_after (500ms) must be longer than heartbeat (1s)");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_memory = 2G\ndefault_memory = 4G\n",
	           "config line 6: default_memory 4 GiB exceeds max_memory 2 GiB");
	expect_err(HEAD "[tenant a]\ntoken = t\ndefault_timeout = 15m\nmax_timeout = 10m\n",
	           "config line 6: default_timeout 15m exceeds max_timeout 10m");
	expect_err(HEAD "[tenant a]\ntoken = t\nmax_cpu = 1\ndefault_cpu = 1500m\n",
	           "config line 6: default_cpu 1500m exceeds max_cpu 1000m");
	/* Equal is fine, and so is a default with no cap. */
	sched_config c;
	ASSERT_EQ(load(HEAD "[tenant a]\ntoken = t\nmax_pids = 10\ndefault_pids = 10\n"
	                    "default_memory = 64G\n",
	               &c),
	          0);
	sched_config_fini(&c);
}

TEST(error_tokens_inline)
{
	expect_err(HEAD "[tenant a]\ntoken =\n", "config line 4: token: the token is empty");
	expect_err(HEAD "[tenant a]\ntoken = \"quoted\"\n",
	           "config line 4: token: the token may contain only letters, digits and - . _ ~ + "
	           "/ =");
	expect_err(HEAD "[tenant a]\ntoken = two words\n",
	           "config line 4: token: the token may contain only letters, digits and - . _ ~ + "
	           "/ =");
	expect_err(
	        "[scheduler]\njoin_token = a;b\n",
	        "config line 2: join_token: the token may contain only letters, digits and - . _ "
	        "~ + / =");
	/* The error never echoes the secret. */
	ASSERT_NOT_CONTAINS(errbuf, "a;b");
}

/* ---- token files ---- */

static char tmpdir[64];

static void
put_file(const char *name, const void *data, size_t len, mode_t mode)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, data, len), (ssize_t)len);
	close(fd);
	chmod(path, mode);
}

static void
put(const char *name, const char *s)
{
	put_file(name, s, strlen(s), 0600);
}

static int
load_file(const char *name, sched_config *c)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	errbuf[0] = 0;
	return sched_config_load_file(path, c, errbuf, sizeof errbuf);
}

static void
cleanup_tmpdir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void
make_tmpdir(void)
{
	if (*tmpdir)
		return;
	strcpy(tmpdir, "/tmp/kiln-test-config-XXXXXX");
	ASSERT(mkdtemp(tmpdir));
	atexit(cleanup_tmpdir);
	char sub[128];
	snprintf(sub, sizeof sub, "%s/sub", tmpdir);
	ASSERT_EQ(mkdir(sub, 0700), 0);
}

TEST(token_files)
{
	make_tmpdir();
	put("join.token", "  join-from-file \n\n");
	put("acme.token", "acme-secret\r\n");
	put("sub/globex.token", "globex-secret");
	char text[1024];
	snprintf(text, sizeof text,
	         "[scheduler]\n"
	         "join_token_file = join.token\n"
	         "admin_token_file = %s/acme.token\n"
	         "[tenant globex]\n"
	         "token_file = sub/globex.token\n",
	         tmpdir);
	put("k1.conf", text);
	sched_config c;
	/* The admin token equals acme's file; no tenant uses it here. */
	ASSERT_EQ(load_file("k1.conf", &c), 0);
	ASSERT_STR_EQ(c.join_token, "join-from-file");
	ASSERT_STR_EQ(c.admin_token, "acme-secret");
	ASSERT_STR_EQ(c.tenants[0].token, "globex-secret");
	sched_config_fini(&c);

	/* Relative token_file paths are resolved from the config's directory,
	 * wherever the process runs. */
	put("sub/k2.conf", "[scheduler]\njoin_token_file = ../join.token\n"
	                   "[tenant g]\ntoken_file = globex.token\n");
	char cwd[4096];
	ASSERT(getcwd(cwd, sizeof cwd));
	ASSERT_EQ(chdir("/"), 0);
	int r = load_file("sub/k2.conf", &c);
	ASSERT_EQ(chdir(cwd), 0);
	ASSERT_EQ(r, 0);
	ASSERT_STR_EQ(c.join_token, "join-from-file");
	ASSERT_STR_EQ(c.tenants[0].token, "globex-secret");
	sched_config_fini(&c);

	/* A token read from a file counts for the duplicate check too. */
	put("k3.conf", "[scheduler]\njoin_token = j\n[tenant a]\ntoken = acme-secret\n"
	               "[tenant b]\ntoken_file = acme.token\n");
	ASSERT_EQ(load_file("k3.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 6: tenant b: same token as tenant a");
}

TEST(token_file_errors)
{
	make_tmpdir();
	char text[512], want[512];
	sched_config c;

	put("e1.conf", HEAD "[tenant a]\ntoken_file = missing.token\n");
	ASSERT_EQ(load_file("e1.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: cannot read 'missing.token': No such "
	                      "file or directory");

	put("empty.token", " \n\t\n");
	put("e2.conf", HEAD "[tenant a]\ntoken_file = empty.token\n");
	ASSERT_EQ(load_file("e2.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: the token in 'empty.token' is empty");

	put("two.token", "line-one\nline-two\n");
	put("e3.conf", HEAD "[tenant a]\ntoken_file = two.token\n");
	ASSERT_EQ(load_file("e3.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: the token in 'two.token' may contain "
	                      "only letters, digits and - . _ ~ + / =");

	put_file("nul.token", "ab\0cd", 5, 0600);
	put("e4.conf", HEAD "[tenant a]\ntoken_file = nul.token\n");
	ASSERT_EQ(load_file("e4.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: 'nul.token' contains a NUL byte");

	char big[5000];
	memset(big, 'a', sizeof big);
	put_file("big.token", big, sizeof big, 0600);
	put("e5.conf", HEAD "[tenant a]\ntoken_file = big.token\n");
	ASSERT_EQ(load_file("e5.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: 'big.token' is larger than 4096 bytes");

	put_file("long.token", big, 256, 0600);
	put("e6.conf", HEAD "[tenant a]\ntoken_file = long.token\n");
	ASSERT_EQ(load_file("e6.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: the token in 'long.token' is longer "
	                      "than 255 characters");
	/* 255 is the longest token. */
	put_file("ok.token", big, 255, 0600);
	put("e7.conf", HEAD "[tenant a]\ntoken_file = ok.token\n");
	ASSERT_EQ(load_file("e7.conf", &c), 0);
	ASSERT_EQ(strlen(c.tenants[0].token), 255);
	sched_config_fini(&c);

	put("e8.conf", HEAD "[tenant a]\ntoken_file =\n");
	ASSERT_EQ(load_file("e8.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 4: token_file: empty path");

	put("e9.conf", "[scheduler]\njoin_token_file = sub\n");
	ASSERT_EQ(load_file("e9.conf", &c), -EINVAL);
	ASSERT_STR_EQ(errbuf, "config line 2: join_token_file: cannot read 'sub': Is a directory");

	if (geteuid() != 0) {
		put_file("secret.token", "s3cret", 6, 0000);
		put("e10.conf", HEAD "[tenant a]\ntoken_file = secret.token\n");
		ASSERT_EQ(load_file("e10.conf", &c), -EINVAL);
		ASSERT_STR_EQ(errbuf, "config line 4: token_file: cannot read 'secret.token': "
		                      "Permission denied");
	}

	/* The config file itself. */
	ASSERT_EQ(load_file("no-such.conf", &c), -ENOENT);
	snprintf(want, sizeof want,
	         "config: cannot read '%s/no-such.conf': No such file or "
	         "directory",
	         tmpdir);
	ASSERT_STR_EQ(errbuf, want);
	put_file("nul.conf", HEAD "\0x", sizeof(HEAD) + 1, 0600);
	ASSERT_EQ(load_file("nul.conf", &c), -EINVAL);
	snprintf(want, sizeof want, "config: '%s/nul.conf' contains a NUL byte", tmpdir);
	ASSERT_STR_EQ(errbuf, want);
	/* Relative path with no directory: token files come from the cwd. */
	char cwd[4096];
	ASSERT(getcwd(cwd, sizeof cwd));
	ASSERT_EQ(chdir(tmpdir), 0);
	snprintf(text, sizeof text, HEAD "[tenant a]\ntoken_file = acme.token\n");
	put("acme.token", "acme-secret\n");
	put("rel.conf", text);
	errbuf[0] = 0;
	int r = sched_config_load_file("rel.conf", &c, errbuf, sizeof errbuf);
	ASSERT_EQ(chdir(cwd), 0);
	ASSERT_EQ(r, 0);
	ASSERT_STR_EQ(c.tenants[0].token, "acme-secret");
	sched_config_fini(&c);
	/* err may be NULL. */
	ASSERT_EQ(sched_config_load_string("bogus\n", &c, NULL, 0), -EINVAL);
}

TEST(docs_example_loads)
{
	/* The complete example in docs/config.md, with /etc/kiln/ pointing at
	 * token files made here. */
	make_tmpdir();
	put("join.token", "join-0123456789abcdef\n");
	put("admin.token", "admin-0123456789abcdef\n");
	put("acme.token", "acme-0123456789abcdef\n");
	put("globex.token", "globex-0123456789abcdef\n");
	char *doc;
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, KILN_SOURCE_DIR "/docs/config.md", 1 << 20, &doc, NULL),
	          0);
	char *start = strstr(doc, "```ini\n"), *end = start ? strstr(start, "\n```") : NULL;
	ASSERT(start && end);
	start += strlen("```ini\n");
	char text[8192] = "", *o = text;
	for (char *q = start; q <= end; q++) {
		if (!strncmp(q, "/etc/kiln/", 10)) {
			o += sprintf(o, "%s/", tmpdir);
			q += 9;
		} else {
			*o++ = *q;
		}
		ASSERT_LT(o - text, (long)sizeof text - 100);
	}
	free(doc);
	put("example.conf", text);
	sched_config c;
	if (load_file("example.conf", &c) != 0)
		KT_FAIL("docs/config.md example: %s", errbuf);
	ASSERT_STR_EQ(c.node_url, "tcp://0.0.0.0:7070");
	ASSERT_STR_EQ(c.join_token, "join-0123456789abcdef");
	ASSERT_STR_EQ(c.admin_token, "admin-0123456789abcdef");
	ASSERT_EQ(c.max_queued, 100000);
	ASSERT_EQ(c.ntenants, 2);
	sched_tenant_cfg *a = tenant(&c, "acme"), *g = tenant(&c, "globex");
	ASSERT_STR_EQ(a->token, "acme-0123456789abcdef");
	ASSERT_EQ(a->weight, 2);
	ASSERT_EQ(a->burst, 400);
	ASSERT_EQ(a->queue_limit, 256);
	ASSERT_EQ(a->max.memory_bytes, 2ull << 30);
	ASSERT_EQ(a->max.cpu_millicores, 2000);
	ASSERT_EQ(a->max.output_bytes, 4ull << 20);
	ASSERT_EQ(a->defaults.call_timeout_ms, 120000);
	ASSERT_EQ(g->max.cpu_millicores, 1000);
	ASSERT_EQ(g->weight, 1);
	ASSERT_EQ(g->burst, 200);
	sched_config_fini(&c);
}

/* ---- the dev config ---- */

TEST(dev_config)
{
	sched_config c;
	sched_config_dev(&c);
	ASSERT(c.dev);
	ASSERT_STR_EQ(c.join_token, "kiln-dev-join");
	ASSERT_STR_EQ(c.admin_token, "kiln-dev-admin");
	/* Well-known tokens: nodes only from this machine. */
	ASSERT_STR_EQ(c.node_url, "tcp://127.0.0.1:7070");
	ASSERT_STR_EQ(c.client_url, "tcp://127.0.0.1:7071");
	ASSERT_EQ(c.ntenants, 3);
	sched_tenant_cfg *d = tenant(&c, "dev"), *a = tenant(&c, "acme"), *g = tenant(&c, "globex");
	ASSERT_STR_EQ(d->token, "kiln-dev-token");
	ASSERT_EQ(d->weight, 1);
	ASSERT_EQ(d->rate, 0);
	ASSERT_GE(d->max_sessions, 1000);
	ASSERT_GE(d->max_inflight, 1024);
	ASSERT_EQ(d->max.memory_bytes, 0);
	ASSERT_STR_EQ(a->token, "kiln-dev-acme");
	ASSERT_EQ(a->weight, 2);
	ASSERT_EQ(a->max.memory_bytes, 2ull << 30);
	ASSERT_EQ(a->burst, 2 * a->rate);
	ASSERT_STR_EQ(g->token, "kiln-dev-globex");
	ASSERT_EQ(g->weight, 1);
	ASSERT_EQ(g->max.memory_bytes, 1ull << 30);
	sched_config_fini(&c);
	ASSERT(!c.dev);
	ASSERT_EQ(c.ntenants, 0);
}

TEST(loading_replaces_only_on_success)
{
	sched_config c;
	sched_config_dev(&c);
	sched_tenant_cfg *before = c.tenants;
	ASSERT_EQ(load(HEAD "[tenant a]\nweight = 0\n", &c), -EINVAL);
	ASSERT(c.tenants == before);
	ASSERT_EQ(c.ntenants, 3);
	ASSERT(c.dev);
	sched_config_fini(&c);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
