/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the kiln CLI without a cluster: the value syntax (limits,
 * sizes, durations, CPUs, ranges), the option parser, the mapping of results
 * and failures to output and exit codes, the JSON and table renderings, and
 * the whole tool run against a port where nothing listens.
 */
#include "test.h"

#include "cli.h"
#include "kl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* A cli whose output goes to memory. */
typedef struct cap {
	cli cl;
	char *out, *err;
	size_t outlen, errlen;
} cap;

static void
cap_init(cap *c)
{
	memset(c, 0, sizeof(*c));
	c->cl.out = open_memstream(&c->out, &c->outlen);
	c->cl.err = open_memstream(&c->err, &c->errlen);
	c->cl.url = KILN_DEFAULT_URL;
}

/* Flush so out/err hold everything written so far. */
static void
cap_sync(cap *c)
{
	fflush(c->cl.out);
	fflush(c->cl.err);
}

static void
cap_fini(cap *c)
{
	fclose(c->cl.out);
	fclose(c->cl.err);
	free(c->out);
	free(c->err);
	cli_fini(&c->cl);
}

/* Run the whole tool with argv (NULL-terminated) and capture what it prints. */
static int
run_cli(cap *c, char **argv)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	cap_init(c);
	int rv = cli_main(argc, argv, c->cl.out, c->cl.err);
	cap_sync(c);
	return rv;
}

/* A loopback TCP port where nothing listens (bound, then closed). */
static int
closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* ---- value syntax ---- */

TEST(limits_syntax)
{
	Kiln__Limits l = KILN__LIMITS__INIT;
	char err[256] = "";
	ASSERT_EQ(
	        cli_parse_limits("memory=512M,pids=100,cpu=1500m,timeout=30s", &l, err, sizeof err),
	        0);
	ASSERT_EQ(l.memory_bytes, 512ull << 20);
	ASSERT_EQ(l.pids, 100);
	ASSERT_EQ(l.cpu_millicores, 1500);
	ASSERT_EQ(l.call_timeout_ms, 30000);
	ASSERT_EQ(l.workspace_bytes, 0);
	/* Merged into what is there; later values win. */
	ASSERT_EQ(cli_parse_limits("workspace=1G,output=64KiB,idle=10m,cpu=2,pids=7", &l, err,
	                           sizeof err),
	          0);
	ASSERT_EQ(l.workspace_bytes, 1ull << 30);
	ASSERT_EQ(l.output_bytes, 64 << 10);
	ASSERT_EQ(l.idle_ttl_ms, 600000);
	ASSERT_EQ(l.cpu_millicores, 2000);
	ASSERT_EQ(l.pids, 7);
	ASSERT_EQ(l.memory_bytes, 512ull << 20);
}

TEST(limits_errors)
{
	Kiln__Limits l = KILN__LIMITS__INIT;
	char err[256];
	ASSERT_EQ(cli_parse_limits("memory=512M,disk=1G", &l, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "unknown limit 'disk'");
	ASSERT_CONTAINS(err, "known: memory, pids, cpu");
	ASSERT_EQ(cli_parse_limits("memory", &l, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "not key=value");
	ASSERT_EQ(cli_parse_limits("memory=", &l, err, sizeof err), -EINVAL);
	ASSERT_EQ(cli_parse_limits("memory=lots", &l, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "memory=lots: bad value; expected a size");
	ASSERT_EQ(cli_parse_limits("pids=1.5", &l, err, sizeof err), -EINVAL);
	ASSERT_EQ(cli_parse_limits("pids=4294967296", &l, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "out of range");
	ASSERT_EQ(cli_parse_limits("timeout=50d", &l, err, sizeof err), -EINVAL);
	ASSERT_EQ(cli_parse_limits("cpu=1500k", &l, err, sizeof err), -EINVAL);
}

TEST(sizes)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
	        {"0", 0},
	        {"4096", 4096},
	        {"1k", 1024},
	        {"1K", 1024},
	        {"1KiB", 1024},
	        {"1kb", 1024},
	        {"512M", 512ull << 20},
	        {"512m", 512ull << 20},
	        {"1.5G", 3ull << 29},
	        {"2T", 2ull << 40},
	        {".5k", 512},
	        {"100B", 100},
	        {"16777215T", 16777215ull << 40},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(ok); i++) {
		uint64_t v = 1;
		if (cli_parse_size(ok[i].s, &v) != 0 || v != ok[i].v)
			KT_FAIL("size %s: got %" PRIu64 ", want %" PRIu64, ok[i].s, v, ok[i].v);
	}
	uint64_t v = 7;
	static const char *const bad[] = {"", "M", "-1", "1X", "1 M", "1MM", "1.5.5", "1e3"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(bad); i++)
		if (cli_parse_size(bad[i], &v) != -EINVAL)
			KT_FAIL("size '%s' accepted", bad[i]);
	ASSERT_EQ(cli_parse_size("16777216T", &v), -ERANGE);
	ASSERT_EQ(cli_parse_size("99999999999999999999", &v), -ERANGE);
	ASSERT_EQ(v, 7); /* outputs only on success */
}

TEST(durations_and_cpus)
{
	uint32_t v;
	ASSERT_EQ(cli_parse_duration_ms("1500", &v), 0);
	ASSERT_EQ(v, 1500);
	ASSERT_EQ(cli_parse_duration_ms("1500ms", &v), 0);
	ASSERT_EQ(v, 1500);
	ASSERT_EQ(cli_parse_duration_ms("30s", &v), 0);
	ASSERT_EQ(v, 30000);
	ASSERT_EQ(cli_parse_duration_ms("1.5s", &v), 0);
	ASSERT_EQ(v, 1500);
	ASSERT_EQ(cli_parse_duration_ms("2m", &v), 0);
	ASSERT_EQ(v, 120000);
	ASSERT_EQ(cli_parse_duration_ms("2min", &v), 0);
	ASSERT_EQ(v, 120000);
	ASSERT_EQ(cli_parse_duration_ms("1h", &v), 0);
	ASSERT_EQ(v, 3600000);
	ASSERT_EQ(cli_parse_duration_ms("5x", &v), -EINVAL);
	ASSERT_EQ(cli_parse_duration_ms("s", &v), -EINVAL);
	ASSERT_EQ(cli_parse_duration_ms("-5s", &v), -EINVAL);
	ASSERT_EQ(cli_parse_duration_ms("1200h", &v), -ERANGE);
	ASSERT_EQ(cli_parse_millicores("1500m", &v), 0);
	ASSERT_EQ(v, 1500);
	ASSERT_EQ(cli_parse_millicores("1.5", &v), 0);
	ASSERT_EQ(v, 1500);
	ASSERT_EQ(cli_parse_millicores("2", &v), 0);
	ASSERT_EQ(v, 2000);
	ASSERT_EQ(cli_parse_millicores("0.25", &v), 0);
	ASSERT_EQ(v, 250);
	ASSERT_EQ(cli_parse_millicores("2cpu", &v), -EINVAL);
}

TEST(ranges)
{
	int64_t a = 0, b = 0;
	ASSERT_EQ(cli_parse_range("10:20", &a, &b), 0);
	ASSERT_EQ(a, 10);
	ASSERT_EQ(b, 20);
	ASSERT_EQ(cli_parse_range("5:", &a, &b), 0);
	ASSERT_EQ(a, 5);
	ASSERT_EQ(b, 0);
	ASSERT_EQ(cli_parse_range("5:-1", &a, &b), 0);
	ASSERT_EQ(b, -1);
	ASSERT_EQ(cli_parse_range("7", &a, &b), 0);
	ASSERT_EQ(a, 7);
	ASSERT_EQ(b, 7);
	ASSERT_EQ(cli_parse_range("0:5", &a, &b), -EINVAL);
	ASSERT_EQ(cli_parse_range(":5", &a, &b), -EINVAL);
	ASSERT_EQ(cli_parse_range("1:x", &a, &b), -EINVAL);
	ASSERT_EQ(cli_parse_range("1-5", &a, &b), -EINVAL);
}

/* ---- option parser ---- */

struct seen {
	int n;
	int keys[8];
	const char *vals[8];
};

static int
record(cli *cl, void *ctx, int key, const char *val)
{
	struct seen *s = ctx;
	s->keys[s->n] = key;
	s->vals[s->n++] = val;
	return 0;
}

static const cli_opt test_opts[] = {
        {"timeout", 't', true}, {"all", 300, false}, {"limit", 'l', true}, {NULL, 0, false}};

TEST(parser_stops_at_command)
{
	cap c;
	cap_init(&c);
	char *argv[] = {"run", "-t", "5s", "--json", "echo", "-n", "--all", "hi", NULL};
	struct seen s = {0};
	char **pos;
	int npos;
	ASSERT_EQ(cli_parse(&c.cl, "run", 8, argv, test_opts, 0, record, &s, &pos, &npos), 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_EQ(s.keys[0], 't');
	ASSERT_STR_EQ(s.vals[0], "5s");
	ASSERT(c.cl.json);
	ASSERT_EQ(npos, 4);
	ASSERT_STR_EQ(pos[0], "echo");
	ASSERT_STR_EQ(pos[1], "-n");
	ASSERT_STR_EQ(pos[2], "--all");
	ASSERT_STR_EQ(pos[3], "hi");
	free(pos);
	cap_fini(&c);
}

TEST(parser_options_around_session)
{
	cap c;
	cap_init(&c);
	/* exec: options before and after SESSION, the command verbatim after it. */
	char *argv[] = {"exec",        "--limit=memory=1G", "S1", "--timeout", "30s",
	                "--scheduler", "ipc:///x",          "ls", "-la",       NULL};
	struct seen s = {0};
	char **pos;
	int npos;
	ASSERT_EQ(cli_parse(&c.cl, "exec", 9, argv, test_opts, 1, record, &s, &pos, &npos), 0);
	ASSERT_EQ(s.n, 2);
	ASSERT_EQ(s.keys[0], 'l');
	ASSERT_STR_EQ(s.vals[0], "memory=1G");
	ASSERT_EQ(s.keys[1], 't');
	ASSERT_STR_EQ(c.cl.url, "ipc:///x");
	ASSERT_EQ(npos, 3);
	ASSERT_STR_EQ(pos[0], "S1");
	ASSERT_STR_EQ(pos[1], "ls");
	ASSERT_STR_EQ(pos[2], "-la");
	free(pos);

	/* "--" ends options; "-" is a positional; -tVALUE works. */
	char *argv2[] = {"read", "-t1s", "-", "--", "--all", NULL};
	memset(&s, 0, sizeof s);
	ASSERT_EQ(cli_parse(&c.cl, "read", 5, argv2, test_opts, -1, record, &s, &pos, &npos), 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.vals[0], "1s");
	ASSERT_EQ(npos, 2);
	ASSERT_STR_EQ(pos[0], "-");
	ASSERT_STR_EQ(pos[1], "--all");
	free(pos);
	cap_fini(&c);
}

TEST(parser_errors_and_help)
{
	cap c;
	cap_init(&c);
	struct seen s = {0};
	char **pos = NULL;
	int npos;
	char *a1[] = {"glob", "--bogus", NULL};
	ASSERT_EQ(cli_parse(&c.cl, "glob", 2, a1, test_opts, -1, record, &s, &pos, &npos),
	          CLI_EXIT_USAGE);
	char *a2[] = {"glob", "--timeout", NULL};
	ASSERT_EQ(cli_parse(&c.cl, "glob", 2, a2, test_opts, -1, record, &s, &pos, &npos),
	          CLI_EXIT_USAGE);
	char *a3[] = {"glob", "--all=yes", NULL};
	ASSERT_EQ(cli_parse(&c.cl, "glob", 2, a3, test_opts, -1, record, &s, &pos, &npos),
	          CLI_EXIT_USAGE);
	char *a4[] = {"glob", "x", "--help", NULL};
	ASSERT_EQ(cli_parse(&c.cl, "glob", 3, a4, test_opts, -1, record, &s, &pos, &npos),
	          CLI_HELP);
	char *a5[] = {"glob", "-h", NULL};
	ASSERT_EQ(cli_parse(&c.cl, "glob", 2, a5, test_opts, -1, record, &s, &pos, &npos),
	          CLI_HELP);
	ASSERT(pos == NULL);
	cap_sync(&c);
	ASSERT_CONTAINS(c.err, "kiln glob: unknown option '--bogus' (see `kiln glob --help`)");
	ASSERT_CONTAINS(c.err, "option --timeout needs a value");
	ASSERT_CONTAINS(c.err, "option --all takes no value");
	cap_fini(&c);
}

TEST(token_resolution)
{
	unsetenv("KILN_TOKEN");
	unsetenv("KILN_TOKEN_FILE");
	cap c;
	cap_init(&c);
	ASSERT_EQ(cli_resolve_token(&c.cl), 0);
	ASSERT_STR_EQ(c.cl.token, CLI_DEV_TOKEN);
	setenv("KILN_TOKEN", "from-env", 1);
	c.cl.token = NULL;
	ASSERT_EQ(cli_resolve_token(&c.cl), 0);
	ASSERT_STR_EQ(c.cl.token, "from-env");
	ASSERT_STR_EQ(c.cl.token_from, "KILN_TOKEN");
	/* A file beats the environment; trailing newlines go. */
	char path[] = "/tmp/kiln-test-token-XXXXXX";
	int fd = mkstemp(path);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "s3cret\n\n", 8), 8);
	close(fd);
	c.cl.token = NULL;
	c.cl.token_file = path;
	ASSERT_EQ(cli_resolve_token(&c.cl), 0);
	ASSERT_STR_EQ(c.cl.token, "s3cret");
	/* Both on the command line: refused. */
	c.cl.token = "x";
	ASSERT_EQ(cli_resolve_token(&c.cl), CLI_EXIT_USAGE);
	c.cl.token = NULL;
	c.cl.token_file = "/nonexistent/token";
	ASSERT_EQ(cli_resolve_token(&c.cl), CLI_EXIT_NOTFOUND);
	cap_sync(&c);
	ASSERT_CONTAINS(c.err, "give either --token or --token-file");
	ASSERT_CONTAINS(c.err, "cannot read the token file /nonexistent/token");
	unlink(path);
	unsetenv("KILN_TOKEN");
	cap_fini(&c);
}

/* ---- results and exit codes ---- */

static Kiln__ToolResult
result(int code, int exit_code, int sig)
{
	Kiln__ToolResult r = KILN__TOOL_RESULT__INIT;
	r.code = code;
	r.exit_code = exit_code;
	r.signal = sig;
	r.is_error = code != KILN__CODE__OK || exit_code != 0;
	return r;
}

TEST(exit_codes_of_results)
{
	Kiln__ToolResult r = result(KILN__CODE__OK, 0, 0);
	ASSERT_EQ(cli_result_exit(&r, true), 0);
	r = result(KILN__CODE__OK, 3, 0);
	ASSERT_EQ(cli_result_exit(&r, true), 3);
	r = result(KILN__CODE__TOOL_ERROR, 127, 0);
	ASSERT_EQ(cli_result_exit(&r, true), 127);
	r = result(KILN__CODE__OK, -1, 9);
	ASSERT_EQ(cli_result_exit(&r, true), 137);
	r = result(KILN__CODE__OK, -1, 15);
	ASSERT_EQ(cli_result_exit(&r, true), 143);
	r = result(KILN__CODE__OK, -1, 0);
	ASSERT_EQ(cli_result_exit(&r, true), CLI_EXIT_SOFTWARE);
	r = result(KILN__CODE__DEADLINE_EXCEEDED, -1, 9);
	ASSERT_EQ(cli_result_exit(&r, true), 124);
	r = result(KILN__CODE__CANCELLED, -1, 9);
	ASSERT_EQ(cli_result_exit(&r, true), 130);
	r = result(KILN__CODE__NODE_LOST, -1, 0);
	ASSERT_EQ(cli_result_exit(&r, true), CLI_EXIT_IOERR);
	r = result(KILN__CODE__RESOURCE_EXHAUSTED, -1, 0);
	ASSERT_EQ(cli_result_exit(&r, true), CLI_EXIT_TEMPFAIL);
	r = result(KILN__CODE__UNAUTHENTICATED, -1, 0);
	ASSERT_EQ(cli_result_exit(&r, true), CLI_EXIT_NOPERM);
	r = result(KILN__CODE__NOT_FOUND, -1, 0);
	ASSERT_EQ(cli_result_exit(&r, false), CLI_EXIT_NOTFOUND);
	r = result(KILN__CODE__INVALID_ARGUMENT, 0, 0);
	ASSERT_EQ(cli_result_exit(&r, false), CLI_EXIT_DATAERR);
	r = result(KILN__CODE__INTERNAL, 0, 0);
	ASSERT_EQ(cli_result_exit(&r, false), CLI_EXIT_SOFTWARE);
	/* File tools: OK is 0, a tool error 1, whatever exit_code says. */
	r = result(KILN__CODE__OK, 0, 0);
	ASSERT_EQ(cli_result_exit(&r, false), 0);
	r = result(KILN__CODE__TOOL_ERROR, 0, 0);
	ASSERT_EQ(cli_result_exit(&r, false), 1);
}

TEST(exit_codes_of_errors)
{
	kiln_error e = {.err = -ECONNREFUSED, .code = KILN_NO_ANSWER};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_UNAVAILABLE);
	e = (kiln_error){.err = -ECONNRESET, .code = KILN_NO_ANSWER, .outcome_unknown = true};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_IOERR);
	e = (kiln_error){.err = -ETIMEDOUT, .code = KILN_NO_ANSWER, .outcome_unknown = true};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_IOERR);
	e = (kiln_error){.err = -ENOTCONN, .code = KILN_NO_ANSWER};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_UNAVAILABLE);
	e = (kiln_error){.err = -EINVAL, .code = KILN_NO_ANSWER};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_USAGE);
	e = (kiln_error){.err = -EPROTO, .code = KILN_NO_ANSWER};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_PROTOCOL);
	e = (kiln_error){.err = -EKEYREJECTED, .code = KILN__CODE__UNAUTHENTICATED};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_NOPERM);
	e = (kiln_error){.err = -EAGAIN, .code = KILN__CODE__RESOURCE_EXHAUSTED};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_TEMPFAIL);
	e = (kiln_error){.err = -ENOENT, .code = KILN__CODE__NOT_FOUND};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_NOTFOUND);
	e = (kiln_error){.err = -EBUSY, .code = KILN__CODE__UNAVAILABLE};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_UNAVAILABLE);
	e = (kiln_error){.err = -EPROTO, .code = KILN__CODE__VERSION_MISMATCH};
	ASSERT_EQ(cli_error_exit(&e), CLI_EXIT_PROTOCOL);
}

TEST(result_passthrough)
{
	cap c;
	cap_init(&c);
	Kiln__ToolResult r = result(KILN__CODE__OK, 3, 0);
	r.output.data = (uint8_t *)"out\n";
	r.output.len = 4;
	r.stderr.data = (uint8_t *)"err\n";
	r.stderr.len = 4;
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), 3);
	cap_sync(&c);
	ASSERT_STR_EQ(c.out, "out\n");
	ASSERT_STR_EQ(c.err, "err\n"); /* a plain non-zero exit needs no note */
	cap_fini(&c);
}

TEST(result_notes)
{
	cap c;
	cap_init(&c);
	Kiln__ToolResult r = result(KILN__CODE__DEADLINE_EXCEEDED, -1, 9);
	r.message = "timed out after 500 ms";
	r.output.data = (uint8_t *)"partial";
	r.output.len = 7;
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), 124);
	r = result(KILN__CODE__OK, -1, 9);
	r.oom_killed = true;
	r.message = "killed by the out-of-memory killer (memory limit 33554432 bytes)";
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_BASH), 137);
	r = result(KILN__CODE__OK, -1, 15);
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), 143);
	r = result(KILN__CODE__TOOL_ERROR, 127, 0);
	r.message = "nosuchcmd: No such file or directory";
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), 127);
	r = result(KILN__CODE__OK, 0, 0);
	r.truncated = true;
	r.output.data = (uint8_t *)"tail";
	r.output.len = 4;
	r.output_total = 1000;
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), 0);
	cap_sync(&c);
	ASSERT_STR_EQ(c.out, "partialtail");
	ASSERT_CONTAINS(c.err, "kiln: timed out after 500 ms (partial output above)\n");
	ASSERT_CONTAINS(c.err, "kiln: killed by the out-of-memory killer (memory limit");
	ASSERT_CONTAINS(c.err, "kiln: the command was killed by signal 15 (SIGTERM)\n");
	ASSERT_CONTAINS(c.err, "kiln: nosuchcmd: No such file or directory\n");
	ASSERT_CONTAINS(c.err, "kiln: output truncated: kept the last 4 of 1000 bytes of stdout");
	cap_fini(&c);
}

TEST(result_file_tools)
{
	cap c;
	cap_init(&c);
	Kiln__ToolResult r = result(KILN__CODE__OK, 0, 0);
	r.message = "wrote 12 bytes to a.txt";
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_WRITE), 0);
	r = result(KILN__CODE__OK, 0, 0);
	r.output.data = (uint8_t *)"text\n";
	r.output.len = 5;
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_READ), 0);
	r = result(KILN__CODE__TOOL_ERROR, 0, 0);
	r.message = "read: nope.txt: no such file or directory";
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_READ), 1);
	cap_sync(&c);
	ASSERT_STR_EQ(c.out, "wrote 12 bytes to a.txt\ntext\n");
	ASSERT_STR_EQ(c.err, "kiln: read: nope.txt: no such file or directory\n");
	cap_fini(&c);
}

TEST(result_refused_by_cluster)
{
	/* A scheduler may put admission errors into the result: they read like failures. */
	cap c;
	cap_init(&c);
	c.cl.token = CLI_DEV_TOKEN;
	c.cl.token_from = "the default dev token";
	Kiln__ToolResult r = result(KILN__CODE__RESOURCE_EXHAUSTED, -1, 0);
	r.message = "tenant dev has 64 calls in flight (max 64)";
	r.retry_after_ms = 250;
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), CLI_EXIT_TEMPFAIL);
	r = result(KILN__CODE__UNAUTHENTICATED, -1, 0);
	r.message = "token refused";
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), CLI_EXIT_NOPERM);
	r = result(KILN__CODE__NODE_LOST, -1, 0);
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_BASH), CLI_EXIT_IOERR);
	cap_sync(&c);
	ASSERT_CONTAINS(c.err, "kiln: the cluster is at capacity (RESOURCE_EXHAUSTED): tenant dev "
	                       "has 64 calls in flight (max 64). Retry after 250 ms.\n");
	ASSERT_CONTAINS(c.err, "the scheduler refused the token (UNAUTHENTICATED): token refused. "
	                       "The token came from the default dev token.");
	ASSERT_CONTAINS(c.err, "--token-file FILE or KILN_TOKEN");
	ASSERT_CONTAINS(c.err, "accepted only by `kiln dev`");
	ASSERT_CONTAINS(c.err, "the node was lost");
	ASSERT_CONTAINS(c.err, "outcome is unknown");
	cap_fini(&c);
}

TEST(hints_not_repeated)
{
	/* The scheduler's own advice is not repeated; a code-only message keeps the code. */
	cap c;
	cap_init(&c);
	kiln_error e = {
	        .err = -EAGAIN, .code = KILN__CODE__RESOURCE_EXHAUSTED, .retry_after_ms = 891};
	snprintf(e.message, sizeof e.message, "RESOURCE_EXHAUSTED: over its rate; retry in 891 ms");
	ASSERT_EQ(cli_fail(&c.cl, &e, CLI_CTX_CALL), CLI_EXIT_TEMPFAIL);
	e = (kiln_error){.err = -ENOENT, .code = KILN__CODE__NOT_FOUND};
	snprintf(e.message, sizeof e.message, "NOT_FOUND: no node n9.");
	ASSERT_EQ(cli_fail(&c.cl, &e, CLI_CTX_NODE), CLI_EXIT_NOTFOUND);
	e = (kiln_error){.err = -EACCES, .code = KILN__CODE__PERMISSION_DENIED};
	snprintf(e.message, sizeof e.message, "PERMISSION_DENIED: needs the admin token");
	ASSERT_EQ(cli_fail(&c.cl, &e, CLI_CTX_NODE), CLI_EXIT_NOPERM);
	cap_sync(&c);
	ASSERT_STR_EQ(c.err,
	              "kiln: the cluster is at capacity (RESOURCE_EXHAUSTED): over its "
	              "rate; retry in 891 ms.\n"
	              "kiln: NOT_FOUND: no node n9. `kiln status` lists the nodes.\n"
	              "kiln: permission denied (PERMISSION_DENIED): needs the admin token.\n");
	cap_fini(&c);
}

/* ---- JSON ---- */

TEST(base64_vectors)
{
	/* RFC 4648, section 10. */
	static const char *const v[][2] = {{"", ""},
	                                   {"f", "Zg=="},
	                                   {"fo", "Zm8="},
	                                   {"foo", "Zm9v"},
	                                   {"foob", "Zm9vYg=="},
	                                   {"fooba", "Zm9vYmE="},
	                                   {"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < KL_ARRAY_SIZE(v); i++) {
		char *s = cli_base64(v[i][0], strlen(v[i][0]));
		ASSERT_STR_EQ(s, v[i][1]);
		free(s);
	}
}

TEST(json_result)
{
	Kiln__ToolResult r = result(KILN__CODE__TOOL_ERROR, 2, 0);
	r.job_id = 18446744073709551615ull;
	r.output.data = (uint8_t *)"h\xc3\xa9llo\n";
	r.output.len = 7;
	r.stderr.data = (uint8_t *)"\xff\xfe\x00x";
	r.stderr.len = 4;
	r.node_id = "node-1";
	r.duration_us = 1234;
	json_t *j = cli_json_result(&r);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "job_id")), "18446744073709551615");
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "code")), "TOOL_ERROR");
	ASSERT_EQ(json_integer_value(json_object_get(j, "exit_code")), 2);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "output")), "h\xc3\xa9llo\n");
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "output_encoding")), "utf-8");
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "stderr")), "//4AeA==");
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "stderr_encoding")), "base64");
	ASSERT(json_is_true(json_object_get(j, "is_error")));
	ASSERT_EQ(json_integer_value(json_object_get(j, "duration_us")), 1234);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "node_id")), "node-1");
	json_decref(j);

	/* --json prints the object instead of the bytes; the exit code is the same. */
	cap c;
	cap_init(&c);
	c.cl.json = true;
	r.stderr.len = 0;
	ASSERT_EQ(cli_result_print(&c.cl, &r, KILN__TOOL_CALL__TOOL_EXEC), 2);
	cap_sync(&c);
	json_error_t je;
	json_t *back = json_loads(c.out, 0, &je);
	ASSERT(back != NULL);
	ASSERT_STR_EQ(json_string_value(json_object_get(back, "output")), "h\xc3\xa9llo\n");
	ASSERT_STR_EQ(c.err, "");
	json_decref(back);
	cap_fini(&c);
}

/* Regression (fuzz_envelope): text from the wire that is not valid UTF-8 lost
 * its JSON field, since jansson refuses such strings; it is kept, with U+FFFD. */
TEST(json_invalid_utf8_text_kept)
{
	Kiln__ToolResult r = result(KILN__CODE__INVALID_ARGUMENT, -1, 0);
	r.message = "unknown template 'a.t\x88\x82'";
	r.node_id = "\xc0\xafnode\xed\xa0\x80\xf4\x90\x80\x80";
	json_t *j = cli_json_result(&r);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "message")),
	              "unknown template 'a.t\xef\xbf\xbd\xef\xbf\xbd'");
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "node_id")),
	              "\xef\xbf\xbd\xef\xbf\xbdnode\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	              "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	json_decref(j);

	Kiln__NodeStatus__LabelsEntry lab = KILN__NODE_STATUS__LABELS_ENTRY__INIT;
	Kiln__NodeStatus__LabelsEntry *labs[] = {&lab};
	lab.key = "zone\xff";
	lab.value = "eu\xfe";
	Kiln__NodeStatus node = KILN__NODE_STATUS__INIT;
	Kiln__NodeStatus *nodes[] = {&node};
	node.node_id = "n";
	node.state = "ready";
	node.n_labels = 1;
	node.labels = labs;
	Kiln__StatusReply s = KILN__STATUS_REPLY__INIT;
	s.scheduler = "s";
	s.n_nodes = 1;
	s.nodes = nodes;
	j = cli_json_status(&s);
	json_t *l = json_object_get(json_array_get(json_object_get(j, "nodes"), 0), "labels");
	ASSERT_STR_EQ(json_string_value(json_object_get(l, "zone\xef\xbf\xbd")), "eu\xef\xbf\xbd");
	json_decref(j);

	kiln_error e = {.err = -EINVAL, .code = KILN__CODE__INVALID_ARGUMENT};
	snprintf(e.message, sizeof e.message, "bad \xff");
	j = cli_json_error(&e, 65);
	ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
	              "bad \xef\xbf\xbd");
	json_decref(j);
}

/* A status reply with one node and one tenant, all on the stack. */
struct status_fixture {
	Kiln__TemplateInfo tpl;
	Kiln__TemplateInfo *tpls[1];
	Kiln__NodeStatus node;
	Kiln__NodeStatus *nodes[1];
	Kiln__TenantStatus tenant;
	Kiln__TenantStatus *tenants[1];
	Kiln__StatusReply s;
};

static void
status_fixture(struct status_fixture *f)
{
	Kiln__TemplateInfo tpl = KILN__TEMPLATE_INFO__INIT;
	Kiln__NodeStatus node = KILN__NODE_STATUS__INIT;
	Kiln__TenantStatus tenant = KILN__TENANT_STATUS__INIT;
	Kiln__StatusReply s = KILN__STATUS_REPLY__INIT;
	f->tpl = tpl;
	f->tpl.name = "default";
	f->tpl.warm = 4;
	f->tpl.target = 8;
	f->tpl.creating = 2;
	f->tpls[0] = &f->tpl;
	f->node = node;
	f->node.node_id = "node-a";
	f->node.state = "ready";
	f->node.slots = 16;
	f->node.running = 3;
	f->node.sessions = 5;
	f->node.n_templates = 1;
	f->node.templates = f->tpls;
	f->node.last_heartbeat_ms_ago = 400;
	f->node.calls_done = 1200;
	f->nodes[0] = &f->node;
	f->tenant = tenant;
	f->tenant.name = "dev";
	f->tenant.weight = 1;
	f->tenant.sessions = 5;
	f->tenant.max_sessions = 100;
	f->tenant.inflight = 3;
	f->tenant.max_inflight = 64;
	f->tenant.calls_done = 1200;
	f->tenant.rejected = 7;
	f->tenants[0] = &f->tenant;
	f->s = s;
	f->s.n_nodes = 1;
	f->s.nodes = f->nodes;
	f->s.n_tenants = 1;
	f->s.tenants = f->tenants;
	f->s.sessions = 5;
	f->s.inflight = 3;
	f->s.placements = 4321;
	f->s.scheduler = "kiln-scheduler 0.1.0";
	f->s.uptime_ms = 3723000;
}

TEST(status_rendering)
{
	struct status_fixture f;
	status_fixture(&f);
	json_t *j = cli_json_status(&f.s);
	json_t *n = json_array_get(json_object_get(j, "nodes"), 0);
	ASSERT_STR_EQ(json_string_value(json_object_get(n, "state")), "ready");
	ASSERT_EQ(json_integer_value(json_object_get(n, "slots")), 16);
	json_t *t = json_array_get(json_object_get(n, "templates"), 0);
	ASSERT_EQ(json_integer_value(json_object_get(t, "warm")), 4);
	json_t *tn = json_array_get(json_object_get(j, "tenants"), 0);
	ASSERT_EQ(json_integer_value(json_object_get(tn, "max_inflight")), 64);
	ASSERT_EQ(json_integer_value(json_object_get(tn, "rejected")), 7);
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(j, "totals"), "placements")),
	          4321);
	json_decref(j);

	cap c;
	cap_init(&c);
	cli_status_print(&c.cl, &f.s);
	cap_sync(&c);
	ASSERT_CONTAINS(c.out, "scheduler kiln-scheduler 0.1.0, up 1h02m\n");
	ASSERT_CONTAINS(c.out, "1 node (1 ready), 5 sessions, 3 inflight, 0 queued, 4321 "
	                       "placements\n");
	ASSERT_CONTAINS(c.out, "NODE    STATE  SLOTS  RUNNING  SESSIONS  WARM/TARGET");
	ASSERT_CONTAINS(c.out,
	                "node-a  ready  16     3        5         default 4/8 (+2)  0.4s ago");
	ASSERT_CONTAINS(c.out, "NOT enforced");
	ASSERT_CONTAINS(c.out, "TENANT  WEIGHT  SESSIONS  INFLIGHT  QUEUED  DONE  REJECTED\n");
	ASSERT_CONTAINS(c.out, "dev     1       5/100     3/64      0       1200  7\n");
	cap_fini(&c);
}

TEST(sessions_rendering)
{
	Kiln__SessionInfo si = KILN__SESSION_INFO__INIT;
	si.session_id = "s-1";
	si.tenant = "dev";
	si.node_id = "node-a";
	si.created_unix_ms = 1000000;
	si.last_used_unix_ms = 1290000;
	si.calls = 9;
	Kiln__SessionInfo *list[] = {&si};
	Kiln__SessionListReply l = KILN__SESSION_LIST_REPLY__INIT;
	l.n_sessions = 1;
	l.sessions = list;
	cap c;
	cap_init(&c);
	cli_sessions_print(&c.cl, &l, 1300000);
	l.n_sessions = 0;
	cli_sessions_print(&c.cl, &l, 1300000);
	cap_sync(&c);
	ASSERT_STR_EQ(c.out, "SESSION  TENANT  TEMPLATE  NODE    AGE  IDLE  CALLS\n"
	                     "s-1      dev     default   node-a  5m   10s   9\n");
	ASSERT_STR_EQ(c.err, "kiln: no open sessions\n");
	l.n_sessions = 1;
	json_t *j = cli_json_sessions(&l);
	json_t *s0 = json_array_get(json_object_get(j, "sessions"), 0);
	ASSERT_STR_EQ(json_string_value(json_object_get(s0, "session_id")), "s-1");
	ASSERT_EQ(json_integer_value(json_object_get(s0, "calls")), 9);
	ASSERT_EQ(
	        json_integer_value(json_object_get(json_object_get(s0, "limits"), "memory_bytes")),
	        0);
	json_decref(j);
	cap_fini(&c);
}

/* ---- the whole tool ---- */

TEST(no_scheduler)
{
	unsetenv("KILN_SCHEDULER");
	unsetenv("KILN_TOKEN");
	char url[64];
	snprintf(url, sizeof url, "tcp://127.0.0.1:%d", closed_port());
	char *argv[] = {"kiln", "--scheduler", url, "run", "--", "echo", "hi", NULL};
	cap c;
	ASSERT_EQ(run_cli(&c, argv), CLI_EXIT_UNAVAILABLE);
	char want[512];
	snprintf(want, sizeof want,
	         "kiln: no scheduler at %s (connection refused). Start a local cluster with "
	         "`kiln dev --no-demo`, or point --scheduler / KILN_SCHEDULER at one.\n",
	         url);
	ASSERT_STR_EQ(c.err, want);
	ASSERT_STR_EQ(c.out, "");
	cap_fini(&c);

	/* The same through the environment, for another command, with --json after it. */
	setenv("KILN_SCHEDULER", url, 1);
	char *argv2[] = {"kiln", "status", "--json", NULL};
	ASSERT_EQ(run_cli(&c, argv2), CLI_EXIT_UNAVAILABLE);
	ASSERT_STR_EQ(c.err, want);
	json_error_t je;
	json_t *j = json_loads(c.out, 0, &je);
	ASSERT(j != NULL);
	json_t *e = json_object_get(j, "error");
	ASSERT_STR_EQ(json_string_value(json_object_get(e, "errno")), "ECONNREFUSED");
	ASSERT_EQ(json_integer_value(json_object_get(e, "exit_code")), CLI_EXIT_UNAVAILABLE);
	ASSERT(json_is_false(json_object_get(e, "outcome_unknown")));
	json_decref(j);
	unsetenv("KILN_SCHEDULER");
	cap_fini(&c);
}

TEST(usage_errors)
{
	cap c;
	char *a1[] = {"kiln", NULL};
	ASSERT_EQ(run_cli(&c, a1), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "usage: kiln [GLOBAL OPTIONS] COMMAND");
	cap_fini(&c);
	char *a2[] = {"kiln", "frobnicate", NULL};
	ASSERT_EQ(run_cli(&c, a2), CLI_EXIT_USAGE);
	ASSERT_STR_EQ(c.err, "kiln: no command 'frobnicate' (see `kiln --help`)\n");
	cap_fini(&c);
	char *a3[] = {"kiln", "run", "--limit", "memory=5X", "--", "true", NULL};
	ASSERT_EQ(run_cli(&c, a3), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "kiln run: --limit: memory=5X: bad value");
	cap_fini(&c);
	char *a4[] = {"kiln", "run", NULL};
	ASSERT_EQ(run_cli(&c, a4), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "kiln run: no command given");
	cap_fini(&c);
	char *a5[] = {"kiln", "bash", "S", "--restart", "ls", NULL};
	ASSERT_EQ(run_cli(&c, a5), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "--restart takes no command");
	cap_fini(&c);
	char *a6[] = {"kiln", "exec", "", "ls", NULL};
	ASSERT_EQ(run_cli(&c, a6), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "empty session id");
	cap_fini(&c);
	char *a7[] = {"kiln", "read", "S", "f", "--range", "0:3", NULL};
	ASSERT_EQ(run_cli(&c, a7), CLI_EXIT_USAGE);
	cap_fini(&c);
	char *a8[] = {"kiln", "session", "reopen", NULL};
	ASSERT_EQ(run_cli(&c, a8), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "expected open, close or list, not 'reopen'");
	cap_fini(&c);
	char *a9[] = {"kiln", "cancel", "zero", NULL};
	ASSERT_EQ(run_cli(&c, a9), CLI_EXIT_USAGE);
	cap_fini(&c);
	char *a10[] = {"kiln", "--scheduler", "bogus://x", "status", NULL};
	ASSERT_EQ(run_cli(&c, a10), CLI_EXIT_USAGE);
	ASSERT_CONTAINS(c.err, "unsupported transport in 'bogus://x'");
	cap_fini(&c);
}

TEST(help_for_every_command)
{
	cap c;
	for (const cli_cmd *cmd = cli_builtin_cmds; cmd->name; cmd++) {
		char *argv[] = {"kiln", (char *)cmd->name, "--help", NULL};
		ASSERT_EQ(run_cli(&c, argv), 0);
		ASSERT_CONTAINS(c.out, "usage: kiln ");
		ASSERT_CONTAINS(c.out, cmd->name);
		ASSERT_STR_EQ(c.err, "");
		cap_fini(&c);
	}
	char *argv[] = {"kiln", "help", "run", NULL};
	ASSERT_EQ(run_cli(&c, argv), 0);
	ASSERT_CONTAINS(c.out, "usage: kiln run");
	cap_fini(&c);
}

static int
cmd_extra(cli *cl, int argc, char **argv)
{
	fprintf(cl->out, "extra %d %s\n", argc, argc > 1 ? argv[1] : "");
	return 42;
}

CLI_COMMAND(extra, "a command registered from another file", cmd_extra)

TEST(registered_commands)
{
	ASSERT(cli_find("extra") != NULL);
	ASSERT(cli_find("run") != NULL);
	ASSERT(cli_find("nope") == NULL);
	cap c;
	char *argv[] = {"kiln", "--json", "extra", "arg", NULL};
	ASSERT_EQ(run_cli(&c, argv), 42);
	ASSERT_STR_EQ(c.out, "extra 2 arg\n");
	cap_fini(&c);
	char *argv2[] = {"kiln", "--help", NULL};
	ASSERT_EQ(run_cli(&c, argv2), 0);
	ASSERT_CONTAINS(c.out, "  extra     a command registered from another file\n");
	cap_fini(&c);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
