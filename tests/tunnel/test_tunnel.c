/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The egress tunnel end to end, with real processes only: kiln-scheduler and
 * kiln-node (tests/cluster/kt_cluster.h), kiln-gateway with a generated
 * config, kiln-plane-sim as the remote control plane, certificates made by
 * scripts/tunnel-certs, the MCP reference server and the official MCP client
 * SDK from npm (tests/mcp), and a test host in a network namespace this test
 * creates. Each TEST proves one part of the acceptance list:
 *
 *   tls_refusals   a wrong CA, a wrong server_name, a client certificate from
 *                  the wrong CA, no client certificate: refused, with the
 *                  gateway (or the client) saying why; nothing connects
 *   sim_trace_errors  the simulator refuses a bad trace, naming the line
 *   tunnel_calls   the tunnel comes up with a client certificate; sessions,
 *                  bash (persistent shell), write/read/edit, exec, one-shot
 *                  calls and errors run end to end, results checked; a token
 *                  smuggled into a request does not change the tenant
 *   sim_restart    kill -9 of the simulator with calls in flight; restarted
 *                  with its state file, it gets RESUME listing them, every
 *                  result arrives once per plane id, a request lost with the
 *                  connection is re-sent, and the node ran every call once
 *   sim_dedupe     unacknowledged results come again after a reconnect,
 *                  flagged as redeliveries; equal copies are not duplicates,
 *                  a differing one is; acknowledged ones are dropped
 *   mcp            initialize, tools/list, tools/call and SSE (streamed
 *                  progress, the standalone GET stream) through the tunnel;
 *                  an unknown route answers 502
 *   egress         a sandbox reaches an allowed host in a netns; a denied
 *                  host and SSRF targets get 403 and audit records; `kiln
 *                  audit verify` passes, then catches a tampered byte
 *
 * The gateway runs with backoff_min_ms = 200 and backoff_max_ms = 1000 (the
 * defaults are 1 s and 60 s) so reconnects do not dominate the run time.
 * Set KILN_KEEP_LOGS=1 to keep the logs (the directory is printed).
 */
#include "gw_tls.h"
#include "kl_clock.h"
#include "kl_util.h"
#include "kt_cluster.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef KILN_SOURCE_DIR
#error "KILN_SOURCE_DIR must be defined"
#endif

#define WWW_TEXT "hello from the test host\n"

static struct {
	bool up;
	kt_cluster c;
	char certs[512];
	uint16_t plane_port, tls_port, route_port, badroute_port, mcp_port, egress_port;
	char gw_cfg[512], gw_log[512], audit[512];
	pid_t gw, everything, www;
	int x; /* the test host is 10.200.x.2 */
	char netns[32], veth[16], host_ip[32];
} T;

/* ---- small helpers ---- */

static uint16_t
free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof a;
	ASSERT_EQ(bind(s, (struct sockaddr *)&a, sizeof a), 0);
	ASSERT_EQ(getsockname(s, (struct sockaddr *)&a, &sl), 0);
	close(s);
	return ntohs(a.sin_port);
}

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		KT_FAIL("%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
}

/* The whole file (NUL-terminated), "" if it does not exist. Caller frees. */
static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;
	if (!f)
		return kl_xstrdup("");
	FILE *m = open_memstream(&buf, &len);
	char chunk[65536];
	size_t k;
	while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
		fwrite(chunk, 1, k, m);
	fclose(f);
	fclose(m);
	return buf;
}

static int
count_in(const char *path, const char *needle)
{
	char *s = slurp(path);
	int n = 0;
	for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	free(s);
	return n;
}

/* Wait until path contains needle at least n times. */
static bool
wait_for(const char *path, const char *needle, int n, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 100) {
		if (count_in(path, needle) >= n)
			return true;
		usleep(100000);
	}
	return false;
}

static bool
port_open(const char *ip, uint16_t port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &a.sin_addr);
	bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
	close(s);
	return ok;
}

static void
wait_port(const char *ip, uint16_t port, int timeout_ms, const char *what)
{
	for (int t = 0; t < timeout_ms; t += 100) {
		if (port_open(ip, port))
			return;
		usleep(100000);
	}
	KT_FAIL("%s did not listen on %s:%u within %d ms", what, ip, port, timeout_ms);
}

/* SIGTERM, wait, SIGKILL after timeout_ms; returns the wait status. */
static int
stop_pid(pid_t *p, int timeout_ms)
{
	if (*p <= 0)
		return 0;
	kill(*p, SIGTERM);
	int st = kt_wait_pid(*p, timeout_ms);
	if (st == -1) {
		kill(*p, SIGKILL);
		st = kt_wait_pid(*p, 5000);
	}
	*p = 0;
	return st;
}

static json_t *
load_json(const char *path)
{
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	if (!j)
		KT_FAIL("%s: %s", path, je.text);
	return j;
}

static long long
jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v))
		KT_FAIL("no integer \"%s\" in %s", key, json_dumps(o, JSON_COMPACT));
	return json_integer_value(v);
}

static char *
path_in(const char *name)
{
	return kl_xasprintf("%s/%s", T.c.dir, name);
}

/* Run argv to completion; stdout and stderr into *out (caller frees). */
static int
run_capture(const char *const *argv, char **out, int timeout_ms)
{
	char *log = path_in("run.out");
	unlink(log);
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	pid_t p = fork();
	if (p == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fd);
	int st = kt_wait_pid(p, timeout_ms);
	if (st == -1) {
		kill(p, SIGKILL);
		kt_wait_pid(p, 5000);
		KT_FAIL("%s did not finish within %d ms", argv[0], timeout_ms);
	}
	*out = slurp(log);
	free(log);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- the network namespace with the egress test host ---- */

static void
netns_remove(const char *ns, const char *veth)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "ip netns del %s 2>/dev/null; ip link del %s 2>/dev/null; true",
	         ns, veth);
	if (system(cmd) != 0)
		fprintf(stderr, "note: could not remove %s\n", ns);
}

/* Namespaces left by earlier runs of this test whose process is gone (an
 * aborted run cannot clean up after itself): removed by name. */
static void
netns_sweep(void)
{
	FILE *f = popen("ls /run/netns 2>/dev/null", "r");
	char name[128];
	while (f && fgets(name, sizeof name, f)) {
		int pid;
		name[strcspn(name, "\n")] = 0;
		if (sscanf(name, "kt-eg-%d", &pid) != 1 || (kill(pid, 0) == 0 || errno != ESRCH))
			continue;
		char veth[32];
		snprintf(veth, sizeof veth, "kteg%dh", pid);
		netns_remove(name, veth);
	}
	if (f)
		pclose(f);
}

/* A 10.200.X.0/30 no interface of the host uses yet (another run of this
 * test may hold one), starting from one picked by our pid. */
static int
free_subnet(void)
{
	for (int i = 0; i < 250; i++) {
		int x = 1 + (getpid() + i) % 250;
		char cmd[128], line[256];
		snprintf(cmd, sizeof cmd, "ip -4 -o addr show to 10.200.%d.0/30 2>/dev/null", x);
		FILE *f = popen(cmd, "r");
		bool used = f && fgets(line, sizeof line, f);
		if (f)
			pclose(f);
		if (!used)
			return x;
	}
	KT_FAIL("every 10.200.X.0/30 is in use on this host");
}

static void
cleanup(void)
{
	stop_pid(&T.www, 5000);
	stop_pid(&T.everything, 5000);
	stop_pid(&T.gw, 20000);
	if (T.netns[0])
		netns_remove(T.netns, T.veth);
	T.netns[0] = 0;
}

static void
on_abort(int sig)
{
	/* A failed assertion aborts: the children die with us (PDEATHSIG), the
	 * namespace would not. */
	if (T.netns[0])
		netns_remove(T.netns, T.veth);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- the gateway ---- */

/* A gateway config. ca/cert/key are file names in the certs directory (cert
 * NULL: no cert_file line); server_name NULL: none. main adds the egress
 * listener, the audit log, the route and the egress policy. */
static void
gw_config(const char *path, uint16_t plane_port, const char *ca, const char *cert, const char *key,
          const char *server_name, bool main)
{
	FILE *f = fopen(path, "w");
	ASSERT(f != NULL);
	fprintf(f, "[gateway]\ncontrol_plane = 127.0.0.1:%u\n", plane_port);
	if (server_name)
		fprintf(f, "server_name = %s\n", server_name);
	fprintf(f, "ca_file = %s/%s\n", T.certs, ca);
	if (cert)
		fprintf(f, "cert_file = %s/%s\n", T.certs, cert);
	fprintf(f, "key_file = %s/%s\n", T.certs, key);
	fprintf(f, "scheduler = %s\nbackoff_min_ms = 200\nbackoff_max_ms = 1000\n", T.c.client_url);
	if (main)
		fprintf(f,
		        "egress_listen = 127.0.0.1:%u\n"
		        "join_token = " KT_JOIN "\n"
		        "audit_log = %s\n"
		        "audit_fsync = every\n",
		        T.egress_port, T.audit);
	fprintf(f, "[identity acme]\ntoken = " KT_ALPHA "\n");
	if (main)
		fprintf(f,
		        "[route everything]\n"
		        "upstream = 127.0.0.1:%u\n"
		        "[egress alpha]\n"
		        "allow = %s/32:8080\n"
		        "deny = blocked.example\n",
		        T.mcp_port, T.host_ip);
	fclose(f);
}

static pid_t
gw_spawn(const char *cfg, const char *log)
{
	char exe[4200];
	snprintf(exe, sizeof exe, "%s/kiln-gateway", T.c.bindir);
	const char *argv[] = {exe, "--config", cfg, "--log", "debug", NULL};
	return kt_spawn(argv, log);
}

/* The gateway the tunnel tests share (started once). */
static void
main_gateway(void)
{
	if (T.gw > 0)
		return;
	T.gw = gw_spawn(T.gw_cfg, T.gw_log);
	wait_port("127.0.0.1", T.egress_port, 20000, "kiln-gateway's egress listener");
}

/* ---- the simulator ---- */

static pid_t
sim_spawn(uint16_t port, const char *log, const char *const *extra)
{
	char exe[4200], listen[64], cert[600], key[600], ca[600];
	snprintf(exe, sizeof exe, "%s/kiln-plane-sim", T.c.bindir);
	snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
	snprintf(cert, sizeof cert, "%s/plane.crt", T.certs);
	snprintf(key, sizeof key, "%s/plane.key", T.certs);
	snprintf(ca, sizeof ca, "%s/gw-ca.crt", T.certs);
	const char *argv[40] = {exe, "--listen",    listen, "--cert", cert,    "--key",
	                        key, "--client-ca", ca,     "--log",  "debug", NULL};
	int n = 11;
	for (int i = 0; extra && extra[i] && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	return kt_spawn(argv, log);
}

/* ---- setup, once ---- */

static void
setup(void)
{
	if (T.up)
		return;
	if (geteuid() != 0)
		KT_SKIP("needs root: sandboxes, a network namespace and a veth pair");
	char mods[600];
	snprintf(mods, sizeof mods,
	         "%s/tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
	         KILN_SOURCE_DIR);
	if (access(mods, R_OK) != 0)
		KT_FAIL("%s is missing: run scripts/setup (it installs tests/mcp with npm ci)",
		        mods);
	signal(SIGABRT, on_abort);
	atexit(cleanup);
	netns_sweep();
	kt_cluster_init(&T.c, NULL);
	kt_cluster_start_sched(&T.c);
	T.plane_port = free_port();
	T.tls_port = free_port();
	T.route_port = free_port();
	T.badroute_port = free_port();
	T.mcp_port = free_port();
	T.egress_port = free_port();
	T.x = free_subnet();
	snprintf(T.host_ip, sizeof T.host_ip, "10.200.%d.2", T.x);
	snprintf(T.certs, sizeof T.certs, "%s/certs", T.c.dir);
	char cmd[1200];
	snprintf(cmd, sizeof cmd, "bash %s/scripts/tunnel-certs %s plane.test acme >/dev/null",
	         KILN_SOURCE_DIR, T.certs);
	if (system(cmd) != 0)
		KT_FAIL("scripts/tunnel-certs failed (is openssl installed?)");
	snprintf(T.gw_cfg, sizeof T.gw_cfg, "%s/gateway.ini", T.c.dir);
	snprintf(T.gw_log, sizeof T.gw_log, "%s/gateway.log", T.c.dir);
	snprintf(T.audit, sizeof T.audit, "%s/audit.log", T.c.dir);
	gw_config(T.gw_cfg, T.plane_port, "plane-ca.crt", "gw.crt", "gw.key", "plane.test", true);
	char egress[64];
	snprintf(egress, sizeof egress, "127.0.0.1:%u", T.egress_port);
	const char *extra[] = {"--egress", egress, NULL};
	kt_cluster_add_node(&T.c, extra);
	T.up = true;
}

/* ---- tls_refusals ---- */

/* A gateway with a bad config: it must say why in its log and never connect. */
static void
refused(const char *name, const char *ca, const char *cert, const char *key,
        const char *server_name, const char *const *says)
{
	char *cfg = kl_xasprintf("%s/gw-%s.ini", T.c.dir, name);
	char *log = kl_xasprintf("%s/gw-%s.log", T.c.dir, name);
	gw_config(cfg, T.tls_port, ca, cert, key, server_name, false);
	pid_t p = gw_spawn(cfg, log);
	/* Two attempts, both refused the same way: not a race with start-up. */
	if (!wait_for(log, says[0], 2, 30000))
		KT_FAIL("gateway %s: its log never said \"%s\":\n%s", name, says[0], slurp(log));
	stop_pid(&p, 15000);
	char *text = slurp(log);
	for (int i = 1; says[i]; i++)
		ASSERT_CONTAINS(text, says[i]);
	ASSERT_NOT_CONTAINS(text, "tunnel up");
	free(text);
	free(cfg);
	free(log);
}

TEST(tls_refusals)
{
	setup();
	char *log = path_in("sim-tls.log"), *summary = path_in("sim-tls-summary.json");
	const char *extra[] = {"--summary", summary, NULL};
	pid_t sim = sim_spawn(T.tls_port, log, extra);
	wait_port("127.0.0.1", T.tls_port, 20000, "kiln-plane-sim");

	/* The gateway does not trust the plane: its CA is not ca_file. */
	const char *wrong_ca[] = {"the control plane's certificate is not signed by ca_file",
	                          "certificate verify failed", NULL};
	refused("wrong-ca", "wrong-ca.crt", "gw.crt", "gw.key", "plane.test", wrong_ca);
	/* The plane's certificate is for plane.test, not the name the gateway checks. */
	const char *wrong_host[] = {"hostname mismatch): check server_name", NULL};
	refused("wrong-host", "plane-ca.crt", "gw.crt", "gw.key", "wrong.test", wrong_host);
	/* The plane does not trust the gateway: its client certificate has another CA. */
	const char *wrong_client[] = {"refused our client certificate",
	                              "check that cert_file is signed by the CA the control plane "
	                              "trusts",
	                              "unknown ca", NULL};
	refused("wrong-client", "plane-ca.crt", "wrong-gw.crt", "wrong-gw.key", "plane.test",
	        wrong_client);

	/* No client certificate, 1: the gateway will not even start without one. */
	char *cfg = path_in("gw-no-cert.ini"), *out;
	gw_config(cfg, T.tls_port, "plane-ca.crt", NULL, "gw.key", "plane.test", false);
	char exe[4200];
	snprintf(exe, sizeof exe, "%s/kiln-gateway", T.c.bindir);
	const char *argv[] = {exe, "--config", cfg, NULL};
	ASSERT_EQ(run_capture(argv, &out, 20000), 2);
	ASSERT_CONTAINS(out, "needs ca_file (the control plane's CA), cert_file and key_file");
	free(out);
	free(cfg);

	/* No client certificate, 2: a TLS client that presents none is refused by the
	 * plane, and the dial says so. */
	char ca[600], err[1024];
	snprintf(ca, sizeof ca, "%s/plane-ca.crt", T.certs);
	gw_tls_dial_cfg dc = {.host = "127.0.0.1",
	                      .port = T.tls_port,
	                      .server_name = "plane.test",
	                      .ca_file = ca,
	                      .timeout_ms = 10000};
	SSL_CTX *ctx = gw_tls_client_ctx(&dc, err, sizeof err);
	ASSERT(ctx != NULL);
	SSL *ssl = NULL;
	int fd = -1;
	ASSERT_LT(gw_tls_dial(ctx, &dc, &ssl, &fd, err, sizeof err), 0);
	ASSERT_CONTAINS(err, "refused our client certificate");
	ASSERT_CONTAINS(err, "certificate required");
	SSL_CTX_free(ctx);

	ASSERT_EQ(WEXITSTATUS(stop_pid(&sim, 15000)), 0);
	char *text = slurp(log);
	ASSERT_CONTAINS(text, "peer did not return a certificate");
	ASSERT_CONTAINS(text, "a gateway needs a client certificate signed by");
	ASSERT_NOT_CONTAINS(text, "gateway connected");
	free(text);
	json_t *s = load_json(summary);
	ASSERT_EQ(jint(s, "connections"), 0);
	ASSERT_GE(jint(s, "tls_refused"), 4);
	json_decref(s);
	free(log);
	free(summary);
}

/* ---- sim_trace_errors ---- */

/* kiln-plane-sim refuses a bad trace (or another trace's state) at start,
 * naming the line: exit 2, before any gateway is involved. */
static void
sim_refuses(const char *trace, const char *state, const char *says)
{
	char *tpath = path_in("bad.jsonl"), exe[4200], listen[64], cert[600], key[600], ca[600];
	write_text(tpath, trace);
	snprintf(exe, sizeof exe, "%s/kiln-plane-sim", T.c.bindir);
	snprintf(listen, sizeof listen, "127.0.0.1:%u", free_port());
	snprintf(cert, sizeof cert, "%s/plane.crt", T.certs);
	snprintf(key, sizeof key, "%s/plane.key", T.certs);
	snprintf(ca, sizeof ca, "%s/gw-ca.crt", T.certs);
	const char *argv[] = {exe,    "--listen",
	                      listen, "--cert",
	                      cert,   "--key",
	                      key,    "--client-ca",
	                      ca,     "--identity",
	                      "acme", "--trace",
	                      tpath,  state ? "--state" : NULL,
	                      state,  NULL};
	char *out;
	ASSERT_EQ(run_capture(argv, &out, 30000), 2);
	ASSERT_CONTAINS(out, says);
	free(out);
	free(tpath);
}

TEST(sim_trace_errors)
{
	setup();
	sim_refuses("{\"op\":\"open\",\"as\":\"a\"}\n"
	            "{\"op\":\"call\",\"session\":\"$b\",\"tool\":\"bash\",\"input\":{"
	            "\"command\":\"true\"}}\n",
	            NULL, "trace line 2: session \"$b\" is not opened (\"as\") on an earlier line");
	sim_refuses("# a comment\n\n{\"op\":\"call\",\"tool\":\"bash\",\"input\":{}}\n", NULL,
	            "trace line 3: input.command is required");
	sim_refuses("{\"op\":\"call\",\"tool\":\"rm\",\"input\":{}}\n", NULL,
	            "trace line 1: unknown tool \"rm\"");
	sim_refuses("{\"op\":\"open\"}\n{\"op\":\"close\"\n", NULL, "line 2:");
	/* A state file written for another trace. */
	char *state = path_in("other-state.json");
	write_text(state, "{\"format\":\"kiln-plane-sim-state\",\"version\":1,\"trace_digest\":"
	                  "\"00\",\"nops\":1,\"nonce\":\"01\",\"ops\":[]}\n");
	sim_refuses("{\"op\":\"open\"}\n", state, "it belongs to another trace");
	free(state);
}

/* ---- tunnel_calls ---- */

/* Run a trace through the main gateway; returns the simulator's exit status. */
static int
run_trace(const char *name, const char *trace)
{
	char *tpath = kl_xasprintf("%s/%s.jsonl", T.c.dir, name);
	char *state = kl_xasprintf("%s/%s-state.json", T.c.dir, name);
	char *summary = kl_xasprintf("%s/%s-summary.json", T.c.dir, name);
	char *results = kl_xasprintf("%s/%s-results.jsonl", T.c.dir, name);
	char *log = kl_xasprintf("%s/%s-sim.log", T.c.dir, name);
	write_text(tpath, trace);
	const char *extra[] = {"--trace",   tpath,   "--identity",       "acme",
	                       "--state",   state,   "--summary",        summary,
	                       "--results", results, "--exit-when-done", NULL};
	main_gateway();
	pid_t sim = sim_spawn(T.plane_port, log, extra);
	int st = kt_wait_pid(sim, 180000);
	if (st == -1) {
		kill(sim, SIGKILL);
		KT_FAIL("the simulator did not finish %s within 180 s (logs in %s)", name, T.c.dir);
	}
	free(tpath);
	free(state);
	free(summary);
	free(results);
	free(log);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The results file as an array, one object per trace op. */
static json_t *
load_results(const char *name)
{
	char *path = kl_xasprintf("%s/%s-results.jsonl", T.c.dir, name);
	char *text = slurp(path);
	json_t *a = json_array();
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		json_error_t je;
		json_t *j = json_loads(line, 0, &je);
		if (!j)
			KT_FAIL("%s: %s", path, je.text);
		json_array_append_new(a, j);
	}
	free(text);
	free(path);
	return a;
}

static json_t *
result_of(json_t *results, int i)
{
	return json_object_get(json_array_get(results, (size_t)i), "result");
}

static const char *
rstr(json_t *results, int i, const char *key)
{
	const char *s = json_string_value(json_object_get(result_of(results, i), key));
	return s ? s : "(none)";
}

static const char calls_trace[] =
        "{\"op\":\"open\",\"as\":\"s1\",\"expect\":{\"code\":\"OK\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"bash\",\"input\":{\"command\":\"echo "
        "hello; echo $((6*7))\"},\"expect\":{\"code\":\"OK\",\"exit_code\":0,\"output\":"
        "\"hello\\n42\\n\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"bash\",\"input\":{\"command\":\"cd "
        "/tmp && export KT_VAR=kept\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"bash\",\"input\":{\"command\":\"pwd; "
        "echo $KT_VAR\"},\"expect\":{\"output\":\"/tmp\\nkept\\n\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"write\",\"input\":{\"file_path\":"
        "\"/workspace/notes.txt\",\"content\":\"line one\\nline two\\n\"},\"expect\":{\"code\":"
        "\"OK\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"read\",\"input\":{\"file_path\":"
        "\"/workspace/notes.txt\"},\"expect\":{\"output_contains\":\"line two\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"edit\",\"input\":{\"file_path\":"
        "\"/workspace/notes.txt\",\"old_string\":\"two\",\"new_string\":\"2\"},\"expect\":{"
        "\"code\":\"OK\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"exec\",\"input\":{\"argv\":[\"cat\","
        "\"/workspace/notes.txt\"]},\"expect\":{\"output\":\"line one\\nline 2\\n\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"bash\",\"input\":{\"command\":\"exit "
        "3\"},\"expect\":{\"exit_code\":3}}\n"
        "{\"op\":\"call\",\"tool\":\"bash\",\"input\":{\"command\":\"echo oneshot\"},\"expect\":"
        "{\"output\":\"oneshot\\n\"}}\n"
        "{\"op\":\"call\",\"identity\":\"nobody\",\"tool\":\"bash\",\"input\":{\"command\":"
        "\"true\"},\"expect\":{\"code\":\"PERMISSION_DENIED\"}}\n"
        "{\"op\":\"close\",\"session\":\"$s1\",\"expect\":{\"code\":\"OK\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s1\",\"tool\":\"bash\",\"input\":{\"command\":"
        "\"true\"}}\n"
        /* Another tenant's token inside the request: ignored, the identity decides. */
        "{\"op\":\"open\",\"as\":\"s2\",\"token\":\"" KT_BETA "\",\"expect\":{\"code\":"
        "\"OK\"}}\n"
        "{\"op\":\"close\",\"session\":\"$s2\",\"expect\":{\"code\":\"OK\"}}\n";
#define CALLS_OPS 15

TEST(tunnel_calls)
{
	setup();
	ASSERT_EQ(run_trace("calls", calls_trace), 0);
	/* The tunnel came up with the client certificate, and the plane saw it. */
	char tunnel_up[128];
	snprintf(tunnel_up, sizeof tunnel_up,
	         "tunnel up to 127.0.0.1:%u (TLS 1.3, client certificate)", T.plane_port);
	ASSERT_GE(count_in(T.gw_log, tunnel_up), 1);
	char *simlog = path_in("calls-sim.log");
	ASSERT_GE(count_in(simlog, "(client certificate CN=acme, TLS 1.3)"), 1);
	free(simlog);

	char *sp = path_in("calls-summary.json");
	json_t *s = load_json(sp);
	ASSERT(json_is_true(json_object_get(s, "complete")));
	ASSERT_EQ(jint(s, "ops"), CALLS_OPS);
	ASSERT_EQ(jint(s, "results"), CALLS_OPS);
	ASSERT_EQ(jint(s, "duplicates"), 0);
	ASSERT_EQ(jint(s, "expect_failed"), 0);
	json_t *errors = json_object_get(s, "errors");
	ASSERT_EQ(json_object_size(errors), 2);
	ASSERT_EQ(jint(errors, "PERMISSION_DENIED"), 1);
	/* The scheduler's answer for a closed session, passed through: NOT_FOUND, or
	 * UNAVAILABLE while a freshly started scheduler still learns its sessions. */
	ASSERT_EQ(json_integer_value(json_object_get(errors, "NOT_FOUND")) +
	                  json_integer_value(json_object_get(errors, "UNAVAILABLE")),
	          1);
	json_decref(s);
	free(sp);

	/* The same facts, read from the results rather than the simulator's checker. */
	json_t *r = load_results("calls");
	ASSERT_EQ(json_array_size(r), CALLS_OPS);
	ASSERT_STR_EQ(rstr(r, 0, "code"), "OK");
	ASSERT_EQ(strncmp(rstr(r, 0, "session_id"), "s-", 2), 0);
	ASSERT_STR_EQ(rstr(r, 1, "output"), "hello\n42\n");
	ASSERT_STR_EQ(rstr(r, 3, "output"), "/tmp\nkept\n");
	ASSERT_STR_EQ(rstr(r, 5, "output"), "line one\nline two\n");
	ASSERT_STR_EQ(rstr(r, 7, "output"), "line one\nline 2\n");
	ASSERT_EQ(json_integer_value(json_object_get(result_of(r, 8), "exit_code")), 3);
	ASSERT_STR_EQ(rstr(r, 9, "output"), "oneshot\n");
	ASSERT_CONTAINS(rstr(r, 10, "message"), "identity 'nobody' is not configured");
	ASSERT_STR_EQ(rstr(r, 11, "code"), "OK");
	ASSERT_CONTAINS(rstr(r, 12, "message"), "session s-");
	json_t *s2 = json_object_get(result_of(r, 13), "session");
	ASSERT_STR_EQ(json_string_value(json_object_get(s2, "tenant")), "alpha");
	/* The plane's id is the client job id the scheduler saw. */
	ASSERT_STR_EQ(rstr(r, 1, "job_id"),
	              json_string_value(json_object_get(json_array_get(r, 1), "plane_id")));
	json_decref(r);
}

/* ---- sim_restart ---- */

/* Three sessions sleep in parallel; the simulator is killed while they do. */
static const char restart_trace[] =
        "{\"op\":\"open\",\"as\":\"a\"}\n"
        "{\"op\":\"open\",\"as\":\"b\"}\n"
        "{\"op\":\"open\",\"as\":\"c\"}\n"
        "{\"op\":\"call\",\"session\":\"$a\",\"tool\":\"bash\",\"input\":{\"command\":\"sleep 8; "
        "echo a-slept\"},\"expect\":{\"output\":\"a-slept\\n\"}}\n"
        "{\"op\":\"call\",\"session\":\"$b\",\"tool\":\"bash\",\"input\":{\"command\":\"sleep 8; "
        "echo b-slept\"},\"expect\":{\"output\":\"b-slept\\n\"}}\n"
        "{\"op\":\"call\",\"session\":\"$c\",\"tool\":\"bash\",\"input\":{\"command\":\"sleep 8; "
        "echo c-slept\"},\"expect\":{\"output\":\"c-slept\\n\"}}\n"
        "{\"op\":\"call\",\"tool\":\"bash\",\"input\":{\"command\":\"echo quick\"},\"expect\":{"
        "\"output\":\"quick\\n\"}}\n"
        "{\"op\":\"call\",\"session\":\"$a\",\"tool\":\"bash\",\"input\":{\"command\":\"echo "
        "a-after\"},\"expect\":{\"output\":\"a-after\\n\"}}\n"
        "{\"op\":\"close\",\"session\":\"$a\",\"expect\":{\"code\":\"OK\"}}\n"
        "{\"op\":\"close\",\"session\":\"$b\",\"expect\":{\"code\":\"OK\"}}\n"
        "{\"op\":\"close\",\"session\":\"$c\",\"expect\":{\"code\":\"OK\"}}\n";
#define RESTART_OPS   11
#define RESTART_CALLS 5
#define LOST_OP       7 /* "a-after": waits behind a's sleep, so it is unsent at the kill */

/* Pretend LOST_OP left just before the kill and died in the socket buffer: the
 * state says "sent", the gateway never saw it. RESUME will not list it, so the
 * restarted simulator must send it again, with the same plane id. */
static void
lose_one_request(const char *state_path)
{
	json_t *st = load_json(state_path), *ops = json_object_get(st, "ops"), *o;
	size_t i;
	json_array_foreach(ops, i, o) if (jint(o, "i") == LOST_OP) KT_FAIL(
	        "op %d already has progress at the kill: %s", LOST_OP, json_dumps(o, JSON_COMPACT));
	o = json_pack("{s:i, s:s, s:i, s:i, s:I, s:i}", "i", LOST_OP, "state", "sent", "sends", 1,
	              "results", 0, "first_sent_ms", (json_int_t)time(NULL) * 1000, "done_ms", 0);
	json_array_append_new(ops, o);
	ASSERT_EQ(json_dump_file(st, state_path, JSON_COMPACT), 0);
	json_decref(st);
}

static bool
listed(json_t *resume, const char *plane_id)
{
	json_t *v;
	size_t i;
	json_array_foreach(json_object_get(resume, "in_flight_ids"), i,
	                   v) if (!strcmp(json_string_value(v), plane_id)) return true;
	json_array_foreach(json_object_get(resume, "unacked_ids"), i,
	                   v) if (!strcmp(json_string_value(v), plane_id)) return true;
	return false;
}

TEST(sim_restart)
{
	setup();
	main_gateway();
	int distinct0, starts0 = kt_cluster_log_count(&T.c, 0, " start tool=");
	kt_cluster_max_runs_per_job(&T.c, &distinct0);
	char *tpath = path_in("restart.jsonl"), *state = path_in("restart-state.json");
	char *summary = path_in("restart-summary.json"),
	     *results = path_in("restart-results.jsonl");
	char *log = path_in("restart-sim.log");
	write_text(tpath, restart_trace);
	const char *extra[] = {"--trace",   tpath,   "--identity",       "acme",
	                       "--state",   state,   "--summary",        summary,
	                       "--results", results, "--exit-when-done", NULL};
	pid_t sim = sim_spawn(T.plane_port, log, extra);
	/* The three sleeps and the quick one-shot call have started on the node. */
	for (int t = 0; kt_cluster_log_count(&T.c, 0, " start tool=") < starts0 + 4; t += 50) {
		if (t > 60000)
			KT_FAIL("the calls did not start within 60 s (logs in %s)", T.c.dir);
		usleep(50000);
	}
	ASSERT_EQ(kill(sim, SIGKILL), 0);
	ASSERT(kt_wait_pid(sim, 10000) != -1);
	int resumes_before = count_in(log, "resume: epoch=");
	lose_one_request(state);

	sim = sim_spawn(T.plane_port, log, extra);
	int st = kt_wait_pid(sim, 180000);
	if (st == -1) {
		kill(sim, SIGKILL);
		KT_FAIL("the restarted simulator did not finish (logs in %s)", T.c.dir);
	}
	ASSERT_EQ(WEXITSTATUS(st), 0);

	json_t *s = load_json(summary);
	ASSERT(json_is_true(json_object_get(s, "complete")));
	ASSERT_EQ(jint(s, "results"), RESTART_OPS); /* every plane id answered, once */
	ASSERT_EQ(jint(s, "duplicates"), 0);
	ASSERT_EQ(jint(s, "expect_failed"), 0);
	ASSERT_EQ(json_object_size(json_object_get(s, "errors")), 0);
	ASSERT_EQ(jint(s, "resent"), 1); /* the lost one, and only it */
	ASSERT_GE(jint(s, "redelivered"), 1);
	/* The restarted run's first RESUME: the sleeps were still running. */
	json_t *resumes = json_object_get(s, "resumes");
	ASSERT_GT(json_array_size(resumes), (size_t)resumes_before);
	json_t *rs = json_array_get(resumes, (size_t)resumes_before);
	ASSERT_GE(jint(rs, "in_flight"), 1);
	ASSERT_EQ(jint(rs, "resend"), 1);

	json_t *r = load_results("restart");
	ASSERT_EQ(json_array_size(r), RESTART_OPS);
	for (int i = 3; i <= 5; i++) { /* the sleeps: listed, never sent again */
		json_t *o = json_array_get(r, (size_t)i);
		ASSERT(listed(rs, json_string_value(json_object_get(o, "plane_id"))));
		ASSERT_EQ(jint(o, "sends"), 1);
		ASSERT_EQ(jint(o, "results"), 1);
	}
	json_t *lost = json_array_get(r, LOST_OP);
	ASSERT(!listed(rs, json_string_value(json_object_get(lost, "plane_id"))));
	ASSERT_EQ(jint(lost, "sends"), 2);
	ASSERT_EQ(jint(lost, "results"), 1);
	ASSERT_STR_EQ(rstr(r, LOST_OP, "output"), "a-after\n");
	json_decref(r);
	json_decref(s);

	/* The node ran each of the trace's calls exactly once. */
	int distinct;
	ASSERT_EQ(kt_cluster_log_count(&T.c, 0, " start tool="), starts0 + RESTART_CALLS);
	ASSERT_EQ(kt_cluster_max_runs_per_job(&T.c, &distinct), 1);
	ASSERT_EQ(distinct, distinct0 + RESTART_CALLS);
	/* The gateway reconnected and said what it still had. */
	ASSERT_GE(count_in(T.gw_log, "calls still running"), 2);
	free(tpath);
	free(state);
	free(summary);
	free(results);
	free(log);
}

/* ---- sim_dedupe ---- */

static const char dedupe_trace[] =
        "{\"op\":\"open\",\"as\":\"s\"}\n"
        "{\"op\":\"call\",\"session\":\"$s\",\"tool\":\"bash\",\"input\":{\"command\":\"echo "
        "one\"}}\n"
        "{\"op\":\"call\",\"session\":\"$s\",\"tool\":\"bash\",\"input\":{\"command\":\"echo "
        "two\"}}\n"
        "{\"op\":\"call\",\"tool\":\"bash\",\"input\":{\"command\":\"echo three\"}}\n"
        "{\"op\":\"close\",\"session\":\"$s\"}\n";
#define DEDUPE_OPS 5

/* Wait until the running simulator's summary has key >= want. */
static json_t *
wait_summary(const char *path, const char *key, long long want, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 100) {
		json_t *s = json_load_file(path, 0, NULL);
		if (s && json_integer_value(json_object_get(s, key)) >= want)
			return s;
		json_decref(s);
		usleep(100000);
	}
	KT_FAIL("%s never reached %s >= %lld:\n%s", path, key, want, slurp(path));
}

static json_t *
last_resume(json_t *summary)
{
	json_t *r = json_object_get(summary, "resumes");
	ASSERT_GT(json_array_size(r), 0);
	return json_array_get(r, json_array_size(r) - 1);
}

/* Results the plane does not acknowledge stay with the gateway and come again
 * on the next connection, marked as redeliveries: the same content is not a
 * duplicate, different content is (the state file's copy of one result is
 * altered to stand in for a gateway that answered twice differently). */
TEST(sim_dedupe)
{
	setup();
	main_gateway();
	int starts0 = kt_cluster_log_count(&T.c, 0, " start tool=");
	char *tpath = path_in("dedupe.jsonl"), *state = path_in("dedupe-state.json");
	char *summary = path_in("dedupe-summary.json"), *log = path_in("dedupe-sim.log");
	write_text(tpath, dedupe_trace);
	const char *noack[] = {"--trace", tpath,       "--identity", "acme",     "--state",
	                       state,     "--summary", summary,      "--no-ack", "--exit-when-done",
	                       NULL};
	pid_t sim = sim_spawn(T.plane_port, log, noack);
	int st = kt_wait_pid(sim, 120000);
	ASSERT(st != -1);
	ASSERT_EQ(WEXITSTATUS(st), 0);
	json_t *s = load_json(summary);
	ASSERT_EQ(jint(s, "results"), DEDUPE_OPS);
	ASSERT_EQ(jint(s, "acks"), 0);
	json_decref(s);

	json_t *stj = load_json(state), *o;
	size_t i;
	json_array_foreach(json_object_get(stj, "ops"), i, o) if (jint(o, "i") == 2)
	        json_object_set_new(o, "digest",
	                            json_string("0000000000000000000000000000000000"
	                                        "000000000000000000000000000000"));
	ASSERT_EQ(json_dump_file(stj, state, JSON_COMPACT), 0);
	json_decref(stj);

	/* Run 2 acknowledges: everything comes again, one result "differs". */
	const char *ack[] = {"--trace", tpath,       "--identity", "acme", "--state",
	                     state,     "--summary", summary,      NULL};
	sim = sim_spawn(T.plane_port, log, ack);
	s = wait_summary(summary, "acks", DEDUPE_OPS, 60000);
	json_t *rs = last_resume(s);
	ASSERT_EQ(jint(rs, "unacked"), DEDUPE_OPS);
	ASSERT_EQ(jint(rs, "in_flight"), 0);
	ASSERT_EQ(jint(rs, "resend"), 0);
	ASSERT_EQ(jint(s, "redelivered"), DEDUPE_OPS);
	ASSERT_EQ(jint(s, "repeat_results"), DEDUPE_OPS - 1);
	ASSERT_EQ(jint(s, "duplicates"), 1);
	ASSERT_EQ(jint(s, "sent"), DEDUPE_OPS); /* nothing was asked twice */
	json_decref(s);
	ASSERT_EQ(WEXITSTATUS(stop_pid(&sim, 15000)), 1); /* a duplicate: exit 1 */
	ASSERT_EQ(count_in(log, "answered twice with different content"), 1);

	/* Run 3: the acknowledged results are gone from the gateway. */
	int resumes = count_in(log, "resume: epoch=");
	sim = sim_spawn(T.plane_port, log, ack);
	if (!wait_for(log, "resume: epoch=", resumes + 1, 30000))
		KT_FAIL("the gateway did not reconnect (logs in %s)", T.c.dir);
	stop_pid(&sim, 15000);
	s = load_json(summary);
	ASSERT_EQ(jint(last_resume(s), "unacked"), 0);
	json_decref(s);
	ASSERT_EQ(kt_cluster_log_count(&T.c, 0, " start tool="), starts0 + 3);
	free(tpath);
	free(state);
	free(summary);
	free(log);
}

/* ---- gateway_kill ---- */

/* Session a sleeps through the kill; b's quick call is finished but not
 * acknowledged (--no-ack) when the gateway dies; the rest is due after the
 * restart. */
static const char gwkill_trace[] =
        "{\"op\":\"open\",\"as\":\"a\"}\n"
        "{\"op\":\"open\",\"as\":\"b\"}\n"
        "{\"op\":\"call\",\"session\":\"$a\",\"tool\":\"bash\",\"input\":{\"command\":\"sleep 6; "
        "echo a-slept\"}}\n"
        "{\"op\":\"call\",\"session\":\"$b\",\"tool\":\"bash\",\"input\":{\"command\":\"echo "
        "b-quick\"},\"expect\":{\"output\":\"b-quick\\n\"}}\n"
        "{\"at_ms\":12000,\"op\":\"call\",\"session\":\"$b\",\"tool\":\"bash\",\"input\":{"
        "\"command\":\"echo b-after\"},\"expect\":{\"output\":\"b-after\\n\"}}\n"
        "{\"at_ms\":12000,\"op\":\"close\",\"session\":\"$a\",\"expect\":{\"code\":\"OK\"}}\n"
        "{\"at_ms\":12000,\"op\":\"close\",\"session\":\"$b\",\"expect\":{\"code\":\"OK\"}}\n";
#define GWKILL_OPS   7
#define GWKILL_SLEEP 2 /* in flight at the kill */
#define GWKILL_QUICK 3 /* finished, unacknowledged at the kill */
#define GWKILL_AFTER 4

/* A copy of the non-main gateway config with extra [gateway] lines. */
static void
gw_config_extra(const char *path, uint16_t port, const char *extra)
{
	gw_config(path, port, "plane-ca.crt", "gw.crt", "gw.key", "plane.test", false);
	char *text = slurp(path), *id = strstr(text, "[identity ");
	ASSERT(id != NULL);
	FILE *f = fopen(path, "w");
	ASSERT(f != NULL);
	fprintf(f, "%.*s%s\n%s", (int)(id - text), text, extra, id);
	fclose(f);
	free(text);
}

/* kill -9 of the gateway mid-run, with its journal (journal = 1) or without.
 * Returns the simulator's summary; *results gets its results. */
static json_t *
gateway_kill_run(const char *name, bool journal, json_t **results)
{
	uint16_t port = free_port();
	char *cfg = kl_xasprintf("%s/gw-%s.ini", T.c.dir, name);
	char *gwlog = kl_xasprintf("%s/gw-%s.log", T.c.dir, name);
	char *jline =
	        kl_xasprintf("journal = %s/gw-%s.journal\njournal_fsync = every", T.c.dir, name);
	gw_config_extra(cfg, port, journal ? jline : "");
	char *tpath = kl_xasprintf("%s/%s.jsonl", T.c.dir, name);
	char *state = kl_xasprintf("%s/%s-state.json", T.c.dir, name);
	char *summary = kl_xasprintf("%s/%s-summary.json", T.c.dir, name);
	char *res = kl_xasprintf("%s/%s-results.jsonl", T.c.dir, name);
	char *log = kl_xasprintf("%s/%s-sim.log", T.c.dir, name);
	write_text(tpath, gwkill_trace);
	const char *extra[] = {"--trace",   tpath, "--identity", "acme",
	                       "--state",   state, "--summary",  summary,
	                       "--results", res,   "--no-ack",   "--exit-when-done",
	                       NULL};
	int starts0 = kt_cluster_log_count(&T.c, 0, " start tool=");
	pid_t sim = sim_spawn(port, log, extra);
	pid_t gw = gw_spawn(cfg, gwlog);
	/* The sleep and the quick call started; the quick one's result (and both
	 * opens') reached the plane. */
	json_t *s = wait_summary(summary, "results", 3, 60000);
	json_decref(s);
	for (int t = 0; kt_cluster_log_count(&T.c, 0, " start tool=") < starts0 + 2; t += 50) {
		if (t > 60000)
			KT_FAIL("the calls did not start within 60 s (logs in %s)", T.c.dir);
		usleep(50000);
	}
	ASSERT_EQ(kill(gw, SIGKILL), 0);
	ASSERT(kt_wait_pid(gw, 10000) != -1);
	fprintf(stderr, "gateway (%s journal) killed with the sleep running\n",
	        journal ? "with a" : "without a");
	gw = gw_spawn(cfg, gwlog);
	int st = kt_wait_pid(sim, 120000);
	if (st == -1) {
		kill(sim, SIGKILL);
		KT_FAIL("the simulator did not finish after the gateway's restart (logs in %s)",
		        T.c.dir);
	}
	ASSERT_EQ(WEXITSTATUS(st), 0); /* no duplicate, every expectation held */
	stop_pid(&gw, 20000);
	s = load_json(summary);
	*results = load_results(name);
	ASSERT_EQ(json_array_size(*results), GWKILL_OPS);
	/* Each call ran at most once: the sleep, the quick call and b-after. */
	int distinct;
	ASSERT_EQ(kt_cluster_log_count(&T.c, 0, " start tool="), starts0 + 3);
	ASSERT_EQ(kt_cluster_max_runs_per_job(&T.c, &distinct), 1);
	ASSERT_STR_EQ(rstr(*results, GWKILL_AFTER, "output"), "b-after\n");
	ASSERT_EQ(jint(json_array_get(*results, GWKILL_SLEEP), "sends"), 1);
	free(cfg);
	free(gwlog);
	free(jline);
	free(tpath);
	free(state);
	free(summary);
	free(res);
	free(log);
	return s;
}

/* kill -9 of the gateway while a call runs. With its journal it comes back
 * as the same tunnel session: the finished, unacknowledged result is
 * delivered again, the call that was running is answered NODE_LOST (its
 * outcome is unknown to the gateway) and never submitted again. Without a
 * journal it comes back as a new session, and the plane treats everything
 * it had sent and not heard back about as NODE_LOST. Either way nothing runs
 * twice and later calls on the same sessions work. */
TEST(gateway_kill)
{
	setup();
	json_t *r, *s = gateway_kill_run("gwkill-journal", true, &r);
	ASSERT_EQ(jint(s, "duplicates"), 0);
	ASSERT_EQ(jint(s, "gateway_lost"), 0);
	ASSERT_EQ(jint(s, "resent"), 0);
	ASSERT_STR_EQ(rstr(r, GWKILL_SLEEP, "code"), "NODE_LOST");
	ASSERT_CONTAINS(rstr(r, GWKILL_SLEEP, "message"), "the gateway restarted");
	ASSERT_STR_EQ(rstr(r, GWKILL_QUICK, "output"), "b-quick\n");
	/* The restarted gateway resumed the session and listed what it had. */
	json_t *rs = last_resume(s);
	ASSERT_GE(jint(rs, "unacked"), 4); /* the opens, the quick call, the lost sleep */
	ASSERT_EQ(jint(rs, "in_flight"), 0);
	ASSERT_GE(jint(s, "redelivered"), 4);
	json_decref(r);
	json_decref(s);

	s = gateway_kill_run("gwkill-nojournal", false, &r);
	ASSERT_EQ(jint(s, "duplicates"), 0);
	ASSERT_EQ(jint(s, "gateway_lost"), 1); /* the sleep */
	ASSERT_EQ(jint(s, "resent"), 0);
	ASSERT_STR_EQ(rstr(r, GWKILL_SLEEP, "code"), "NODE_LOST");
	ASSERT_CONTAINS(rstr(r, GWKILL_SLEEP, "message"), "new session");
	ASSERT_STR_EQ(rstr(r, GWKILL_QUICK, "output"), "b-quick\n");
	json_decref(r);
	json_decref(s);
}

/* ---- gateway_kill_loaded ---- */

enum { LK_SESS = 6, LK_CALLS = 12 };

/* Six sessions, each with twelve calls spread over 20 s that append their
 * number to the session's log.txt; at 32 s each session's log is read, at
 * 34 s the sessions close. */
static char *
loaded_trace(unsigned seed)
{
	size_t cap = 1 << 16, n = 0;
	char *t = kl_xmalloc(cap);
	for (int k = 0; k < LK_SESS; k++)
		n += (size_t)snprintf(t + n, cap - n, "{\"op\":\"open\",\"as\":\"s%d\"}\n", k);
	for (int c = 0; c < LK_CALLS; c++)
		for (int k = 0; k < LK_SESS; k++) {
			unsigned at = 1000 + (unsigned)c * 1600 +
			              (seed = seed * 1103515245u + 12345u) % 1500;
			n += (size_t)snprintf(
			        t + n, cap - n,
			        "{\"at_ms\":%u,\"op\":\"call\",\"session\":\"$s%d\","
			        "\"tool\":\"bash\",\"input\":{\"command\":\"echo c%d >> "
			        "log.txt; sleep 0.%u; echo done-%d-%d\"}}\n",
			        at, k, c, (seed >> 8) % 10, k, c);
		}
	for (int k = 0; k < LK_SESS; k++)
		n += (size_t)snprintf(
		        t + n, cap - n,
		        "{\"at_ms\":32000,\"op\":\"call\",\"session\":\"$s%d\","
		        "\"tool\":\"bash\",\"input\":{\"command\":\"cat log.txt\"}}\n",
		        k);
	for (int k = 0; k < LK_SESS; k++)
		n += (size_t)snprintf(t + n, cap - n,
		                      "{\"at_ms\":34000,\"op\":\"close\",\"session\":\"$s%d\","
		                      "\"expect\":{\"code\":\"OK\"}}\n",
		                      k);
	return t;
}

/* The gateway (with its journal) killed with kill -9 twice, at seeded random
 * moments of a loaded run through the tunnel, and restarted after a random
 * pause. Every call is answered exactly once, OK or NODE_LOST; nothing runs
 * twice; every call answered OK left its line in the session's log exactly
 * once, and no call left it twice. */
TEST(gateway_kill_loaded)
{
	setup();
	const char *env = getenv("KILN_FAULTS_SEED");
	unsigned seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)(time(NULL) ^ getpid());
	fprintf(stderr, "seed %u (KILN_FAULTS_SEED reproduces it)\n", seed);
	const char *name = "gwkill-loaded";
	uint16_t port = free_port();
	char *cfg = kl_xasprintf("%s/gw-%s.ini", T.c.dir, name);
	char *gwlog = kl_xasprintf("%s/gw-%s.log", T.c.dir, name);
	char *jline = kl_xasprintf("journal = %s/gw-%s.journal", T.c.dir, name);
	gw_config_extra(cfg, port, jline);
	char *tpath = kl_xasprintf("%s/%s.jsonl", T.c.dir, name);
	char *summary = kl_xasprintf("%s/%s-summary.json", T.c.dir, name);
	char *res = kl_xasprintf("%s/%s-results.jsonl", T.c.dir, name);
	char *log = kl_xasprintf("%s/%s-sim.log", T.c.dir, name);
	char *trace = loaded_trace(seed);
	write_text(tpath, trace);
	free(trace);
	const char *extra[] = {"--trace",   tpath, "--identity",       "acme", "--summary", summary,
	                       "--results", res,   "--exit-when-done", NULL};
	int starts0 = kt_cluster_log_count(&T.c, 0, " start tool=");
	int distinct0;
	kt_cluster_max_runs_per_job(&T.c, &distinct0);
	pid_t sim = sim_spawn(port, log, extra);
	pid_t gw = gw_spawn(cfg, gwlog);
	uint64_t t0 = kl_now_ms();
	unsigned r = seed;
	for (int k = 0; k < 2; k++) {
		/* kill k in [2 s, 11 s) or [11 s, 20 s), down 100-2000 ms */
		r = r * 1103515245u + 12345u;
		uint64_t at = t0 + 2000 + (uint64_t)k * 9000 + (r >> 4) % 9000;
		r = r * 1103515245u + 12345u;
		unsigned down = 100 + (r >> 4) % 1900;
		while (kl_now_ms() < at)
			usleep(20000);
		ASSERT_EQ(kill(gw, SIGKILL), 0);
		ASSERT(kt_wait_pid(gw, 10000) != -1);
		fprintf(stderr,
		        "[%5.1f s] kill -9 of the gateway (%d calls started so far); back in %u "
		        "ms\n",
		        (kl_now_ms() - t0) / 1000.0,
		        kt_cluster_log_count(&T.c, 0, " start tool=") - starts0, down);
		usleep(down * 1000);
		gw = gw_spawn(cfg, gwlog);
	}
	int st = kt_wait_pid(sim, 180000);
	if (st == -1) {
		kill(sim, SIGKILL);
		KT_FAIL("the simulator did not finish (logs in %s)", T.c.dir);
	}
	ASSERT_EQ(WEXITSTATUS(st), 0);
	stop_pid(&gw, 20000);
	json_t *s = load_json(summary);
	ASSERT(json_is_true(json_object_get(s, "complete")));
	ASSERT_EQ(jint(s, "duplicates"), 0);
	ASSERT_EQ(jint(s, "gateway_lost"), 0); /* the journal resumes the session */
	json_t *rr = load_results(name);
	const int first_call = LK_SESS, first_cat = LK_SESS + LK_SESS * LK_CALLS;
	ASSERT_EQ(json_array_size(rr), (size_t)(first_cat + 2 * LK_SESS));
	int ok = 0, lost = 0;
	for (int k = 0; k < LK_SESS; k++) {
		/* The session's log: each line at most once. */
		ASSERT_STR_EQ(rstr(rr, first_cat + k, "code"), "OK");
		const char *logtxt = rstr(rr, first_cat + k, "output");
		for (int c = 0; c < LK_CALLS; c++) {
			int i = first_call + c * LK_SESS + k;
			char line[16], want[32];
			snprintf(line, sizeof line, "c%d\n", c);
			int n = 0;
			for (const char *q = logtxt; (q = strstr(q, line)); q++)
				n += q == logtxt || q[-1] == '\n';
			ASSERT_LE(n, 1);
			const char *code = rstr(rr, i, "code");
			if (!strcmp(code, "OK")) {
				snprintf(want, sizeof want, "done-%d-%d\n", k, c);
				ASSERT_STR_EQ(rstr(rr, i, "output"), want);
				ASSERT_EQ(n, 1); /* an acknowledged effect is there */
				ok++;
			} else {
				if (strcmp(code, "NODE_LOST"))
					KT_FAIL("call %d: %s: %s", i, code, rstr(rr, i, "message"));
				lost++;
			}
		}
	}
	int distinct;
	ASSERT_EQ(kt_cluster_max_runs_per_job(&T.c, &distinct), 1);
	int starts = kt_cluster_log_count(&T.c, 0, " start tool=") - starts0;
	fprintf(stderr,
	        "%d calls: %d OK, %d NODE_LOST (running when the gateway died); %d started on the "
	        "node, none twice; resumes %zu, redelivered %lld\n",
	        LK_SESS * LK_CALLS, ok, lost, starts,
	        json_array_size(json_object_get(s, "resumes")), jint(s, "redelivered"));
	ASSERT_LE(starts, LK_SESS * LK_CALLS + LK_SESS);
	ASSERT_GE(ok, LK_SESS * LK_CALLS / 2);
	json_decref(rr);
	json_decref(s);
	free(cfg);
	free(gwlog);
	free(jline);
	free(tpath);
	free(summary);
	free(res);
	free(log);
}

/* ---- mcp ---- */

TEST(mcp)
{
	setup();
	main_gateway();
	/* The MCP reference server in streamable HTTP mode (it logs on stdout too). */
	char *elog = path_in("everything.log");
	char *sh = kl_xasprintf("PORT=%u exec node %s/tests/mcp/node_modules/@modelcontextprotocol/"
	                        "server-everything/dist/index.js streamableHttp >>%s 2>&1",
	                        T.mcp_port, KILN_SOURCE_DIR, elog);
	const char *ev[] = {"/bin/sh", "-c", sh, NULL};
	T.everything = kt_spawn(ev, NULL);
	free(sh);
	wait_port("127.0.0.1", T.mcp_port, 60000, "server-everything");

	char r1[64], r2[64], *log = path_in("mcp-sim.log"), *summary = path_in("mcp-summary.json");
	snprintf(r1, sizeof r1, "everything=%u", T.route_port);
	snprintf(r2, sizeof r2, "nosuch=%u", T.badroute_port);
	const char *extra[] = {"--route", r1, "--route", r2, "--summary", summary, NULL};
	pid_t sim = sim_spawn(T.plane_port, log, extra);
	if (!wait_for(log, "resume: epoch=", 1, 30000))
		KT_FAIL("the gateway did not connect to the simulator (logs in %s)", T.c.dir);

	/* The real MCP client, through the simulator's route port and the tunnel. */
	char url[128], script[600], mcpdir[600], *out;
	snprintf(url, sizeof url, "http://127.0.0.1:%u/mcp", T.route_port);
	snprintf(script, sizeof script, "%s/tests/tunnel/mcp_client.mjs", KILN_SOURCE_DIR);
	snprintf(mcpdir, sizeof mcpdir, "%s/tests/mcp", KILN_SOURCE_DIR);
	const char *client[] = {"node", script, url, mcpdir, NULL};
	int rc = run_capture(client, &out, 120000);
	char *line = strstr(out, "{\"ok\":");
	if (!line)
		KT_FAIL("mcp_client.mjs printed no verdict (exit %d):\n%s", rc, out);
	json_error_t je;
	json_t *v = json_loads(line, JSON_DISABLE_EOF_CHECK, &je);
	ASSERT(v != NULL);
	if (rc != 0 || !json_is_true(json_object_get(v, "ok")))
		KT_FAIL("the MCP client failed (exit %d): %s", rc, line);
	json_t *steps = json_object_get(v, "steps");
	ASSERT_GT(strlen(json_string_value(
	                         json_object_get(json_object_get(steps, "initialize"), "session"))
	                         ?: ""),
	          0);
	ASSERT(json_is_true(json_object_get(json_object_get(steps, "tools_list"), "has_echo")));
	ASSERT_STR_EQ(
	        json_string_value(json_object_get(json_object_get(steps, "tools_call"), "text")),
	        "Echo: through the kiln tunnel");
	json_t *sse = json_object_get(steps, "sse_progress");
	ASSERT_GE(jint(sse, "count"), 2);
	/* Streamed as they happened (0.5 s apart), not held back until the result. */
	ASSERT_GE(jint(sse, "spread_ms"), 300);
	ASSERT_GE(jint(json_object_get(steps, "sse_standalone"), "messages"), 1);
	json_decref(v);
	free(out);

	/* A route the gateway does not have: refused, and the local client is told. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(T.badroute_port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	static const char req[] = "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	ASSERT_EQ(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)sizeof req - 1);
	char resp[2048];
	size_t got = 0;
	ssize_t k;
	while (got < sizeof resp - 1 && (k = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0)
		got += (size_t)k;
	resp[got] = 0;
	close(fd);
	ASSERT_EQ(strncmp(resp, "HTTP/1.1 502", 12), 0);
	ASSERT_CONTAINS(resp, "unknown MCP route 'nosuch'");

	ASSERT_EQ(WEXITSTATUS(stop_pid(&sim, 15000)), 0);
	json_t *s = load_json(summary);
	json_t *mcp = json_object_get(s, "mcp");
	ASSERT_GE(jint(mcp, "connections"), 3);
	ASSERT_GT(jint(mcp, "bytes_down"), 0);
	json_decref(s);
	stop_pid(&T.everything, 10000);
	free(log);
	free(summary);
	free(elog);
}

/* ---- egress ---- */

static void
netns_setup(void)
{
	snprintf(T.netns, sizeof T.netns, "kt-eg-%d", (int)getpid());
	snprintf(T.veth, sizeof T.veth, "kteg%dh", (int)getpid());
	netns_remove(T.netns, T.veth);
	char cmd[1024];
	snprintf(
	        cmd, sizeof cmd,
	        "set -e; ip netns add %1$s; ip link add %2$s type veth peer name kteg%3$dn netns "
	        "%1$s; ip addr add 10.200.%4$d.1/30 dev %2$s; ip link set %2$s up; "
	        "ip -n %1$s addr add 10.200.%4$d.2/30 dev kteg%3$dn; ip -n %1$s link set kteg%3$dn "
	        "up; ip -n %1$s link set lo up",
	        T.netns, T.veth, (int)getpid(), T.x);
	if (system(cmd) != 0)
		KT_FAIL("could not create the network namespace %s with a veth pair", T.netns);
	char *www = path_in("www"), *file = path_in("www/hello.txt"), *log = path_in("www.log");
	mkdir(www, 0755);
	write_text(file, WWW_TEXT);
	char *sh = kl_xasprintf("exec ip netns exec %s /usr/bin/python3 -m http.server 8080 --bind "
	                        "%s --directory %s >>%s 2>&1",
	                        T.netns, T.host_ip, www, log);
	const char *argv[] = {"/bin/sh", "-c", sh, NULL};
	T.www = kt_spawn(argv, NULL);
	wait_port(T.host_ip, 8080, 30000, "the test host's HTTP server");
	free(sh);
	free(www);
	free(file);
	free(log);
}

static Kiln__ToolResult *
sandbox(kiln_client *k, const char *session, const char *cmd)
{
	Kiln__ToolResult *r;
	if (kiln_bash(k, session, cmd, 60000, &r) < 0)
		KT_FAIL("bash %s: %s", cmd, kiln_last_error()->message);
	return r;
}

/* curl through the sandbox's proxy, no NO_PROXY exceptions: "CODE\nBODY". */
static void
expect_403(kiln_client *k, const char *session, const char *url, const char *reason)
{
	char *cmd =
	        kl_xasprintf("env -u NO_PROXY -u no_proxy curl -s -m 20 -x http://127.0.0.1:3128 "
	                     "-o /tmp/body -w '%%{http_code}\\n' '%s'; cat /tmp/body",
	                     url);
	Kiln__ToolResult *r = sandbox(k, session, cmd);
	char *out = kl_xstrndup((const char *)r->output.data, r->output.len);
	if (strncmp(out, "403\n", 4) || !strstr(out, reason))
		KT_FAIL("%s: expected a 403 naming \"%s\", got: %s", url, reason, out);
	free(out);
	free(cmd);
	kiln_result_free(r);
}

TEST(egress)
{
	setup();
	if (access("/usr/bin/curl", X_OK) || access("/usr/bin/python3", X_OK))
		KT_FAIL("the egress test runs /usr/bin/curl in sandboxes and /usr/bin/python3 as "
		        "the "
		        "test host: run scripts/setup");
	main_gateway();
	netns_setup();
	kiln_client *k = kt_cluster_client(&T.c, KT_ALPHA);
	char *sid, err[256];
	ASSERT_EQ(kiln_session_open(k, NULL, NULL, &sid, err, sizeof err), 0);

	/* Allowed: the test host, by the explicit allow CIDR inside 10/8. */
	char *cmd = kl_xasprintf("curl -sS -m 20 http://%s:8080/hello.txt", T.host_ip);
	Kiln__ToolResult *r = sandbox(k, sid, cmd);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_EQ(r->output.len, strlen(WWW_TEXT));
	ASSERT_EQ(memcmp(r->output.data, WWW_TEXT, r->output.len), 0);
	kiln_result_free(r);
	free(cmd);

	/* Denied by the policy, and the SSRF classics. */
	char url[128];
	expect_403(k, sid, "http://blocked.example/", "deny list: blocked.example");
	snprintf(url, sizeof url, "http://%s:8081/", T.host_ip); /* the host, another port */
	expect_403(k, sid, url, "built-in deny: private address");
	expect_403(k, sid, "http://127.0.0.1:8080/", "built-in deny: loopback address 127.0.0.1");
	expect_403(k, sid, "http://169.254.169.254/latest/meta-data/",
	           "built-in deny: metadata address 169.254.169.254");
	expect_403(k, sid, "http://10.0.0.1/", "built-in deny: private address 10.0.0.1");
	expect_403(k, sid, "http://[::ffff:127.0.0.1]:8080/",
	           "IPv4-mapped address ::ffff:127.0.0.1");
	expect_403(k, sid, "http://localhost:8080/", "built-in deny: loopback address 127.0.0.1");
	ASSERT_EQ(kiln_session_close(k, sid), 0);
	free(sid);
	kiln_close(k);

	/* One audit record per decision (the allowed one when its connection closed). */
	char allow[160];
	snprintf(allow, sizeof allow, "\"addr\":\"%s\",\"port\":8080,\"decision\":\"allow\"",
	         T.host_ip);
	if (!wait_for(T.audit, allow, 1, 10000))
		KT_FAIL("no allow record in %s:\n%s", T.audit, slurp(T.audit));
	ASSERT_EQ(count_in(T.audit, "\"host\":\"blocked.example\",\"addr\":null,\"port\":80,"
	                            "\"decision\":\"deny\""),
	          1);
	const char *ssrf[] = {"\"host\":\"127.0.0.1\"", "\"host\":\"169.254.169.254\"",
	                      "\"host\":\"10.0.0.1\"",  "\"host\":\"[::ffff:127.0.0.1]\"",
	                      "\"host\":\"localhost\"", NULL};
	for (int i = 0; ssrf[i]; i++)
		ASSERT_EQ(count_in(T.audit, ssrf[i]), 1);
	ASSERT_EQ(count_in(T.audit, "\"decision\":\"deny\""), 7);

	/* The chain verifies; then one changed byte in the middle breaks it. */
	char exe[4200], *out;
	snprintf(exe, sizeof exe, "%s/kiln", T.c.bindir);
	const char *verify[] = {exe, "audit", "verify", T.audit, NULL};
	ASSERT_EQ(run_capture(verify, &out, 30000), 0);
	ASSERT_CONTAINS(out, "intact, 9 records (genesis 1, egress 8)");
	free(out);
	ASSERT_EQ(WEXITSTATUS(stop_pid(&T.gw, 30000)), 0); /* the log is final */
	char *text = slurp(T.audit);
	char *p = text;
	for (int line = 1; line < 5; line++)
		p = strchr(p, '\n') + 1;
	char *port = strstr(p, "\"port\":");
	ASSERT(port != NULL && port < strchr(p, '\n'));
	port[7] = port[7] == '9' ? '8' : '9'; /* line 5: its port, one digit */
	write_text(T.audit, text);
	free(text);
	ASSERT_EQ(run_capture(verify, &out, 30000), 1);
	ASSERT_CONTAINS(out, "NOT INTACT: line 5: its content does not match its hash");
	free(out);
	cleanup();
}

int
main(int argc, char **argv)
{
	int r = kt_run(argc, argv);
	cleanup();
	if (T.up)
		kt_cluster_stop(&T.c);
	return r;
}
