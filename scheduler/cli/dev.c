/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kiln dev`: the embedded default. A scheduler and one or more nodes in this
 * one process (nodes join over inproc), no config needed: the built-in dev
 * config has tenants dev, acme and globex. With the demo (the default),
 * several tenants' agents make realistic tool calls at once -- a git repo,
 * a small C program with a bug, a failing build, grep, an edit that fixes
 * it, a passing build, a commit, python, a timeout -- and a summary says
 * what ran, where, and how fast. With --no-demo the cluster keeps running
 * on the default local address, so `kiln run -- echo hi` from another
 * terminal just works, until Ctrl-C.
 */
#include "cli.h"

#include "kiln_sched.h"
#include "kl_clock.h"
#include "kl_hist.h"
#include "kl_log.h"
#include "kl_proto.h"
#include "member.h"
#include "node.h"
#include "sched_config.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEV_NODES_URL   "inproc://kiln-dev-nodes"
#define DEV_CLIENTS_URL "inproc://kiln-dev-clients"
#define DEV_MAX_NODES   8

static volatile sig_atomic_t dev_stop;

static void
on_signal(int sig)
{
	dev_stop = 1;
}

typedef struct dev_opts {
	int nodes, warm, agents;
	bool demo;
	const char *client_url, *node_url;
} dev_opts;

/* ---- the demo's agents ---- */

enum { T_BASH, T_EXEC, T_READ, T_WRITE, T_EDIT, T_GLOB, T_GREP, T_NTOOLS };
static const char *const tool_names[T_NTOOLS] = {"bash", "exec", "read", "write",
                                                 "edit", "glob", "grep"};

typedef struct agent {
	pthread_t th;
	const char *tenant, *token;
	int idx;
	char url[128];
	char session[80], node[128];
	int calls, errors, expected_errors;
	uint64_t wall_ns;
	kl_hist hist[T_NTOOLS];
	int ncalls[T_NTOOLS];
	char failure[512];
} agent;

static pthread_mutex_t print_mu = PTHREAD_MUTEX_INITIALIZER;

static const char main_c[] =
        "#include <stdio.h>\n"
        "#include <stdlib.h>\n"
        "\n"
        "int\n"
        "main(int argc, char **argv)\n"
        "{\n"
        "\tlong sum = 0;\n"
        "\tfor (int i = 1; i < argc - 1; i++) /* bug: skips the last argument */\n"
        "\t\tsum += strtol(argv[i], NULL, 10);\n"
        "\tprintf(\"%ld\\n\", sum);\n"
        "\treturn 0;\n"
        "}\n";
static const char makefile[] = "sum: main.c\n\tcc -O2 -Wall -o sum main.c\n";

static void
note(agent *a, int tool, const char *what, const Kiln__ToolResult *r, uint64_t ns)
{
	char out[64] = "";
	if (r && r->output.len) {
		size_t n = 0;
		for (size_t i = 0; i < r->output.len && n < sizeof out - 4; i++) {
			char c = (char)r->output.data[i];
			out[n++] = c == '\n' || c == '\t' ? ' ' : c;
		}
		if (r->output.len > n)
			strcpy(out + n, "...");
		else
			out[n] = 0;
	}
	pthread_mutex_lock(&print_mu);
	printf("  %-7s agent-%d  %-5s %-44.44s -> %s%s%s (%.1f ms)\n", a->tenant, a->idx,
	       tool_names[tool], what,
	       !r            ? "FAILED"
	       : r->code     ? kl_code_name(r->code)
	       : r->is_error ? "error"
	                     : "ok",
	       *out ? ": " : "", out, (double)ns / 1e6);
	pthread_mutex_unlock(&print_mu);
}

/* One tool call: time it, record it, keep the result for the caller. */
static Kiln__ToolResult *
step(agent *a, kiln_client *k, int tool, Kiln__ToolCall *tc, const char *what, bool expect_ok)
{
	Kiln__ToolResult *r = NULL;
	tc->session_id = a->session;
	uint64_t t0 = kl_now_ns();
	int rc = kiln_call(k, tc, &r);
	uint64_t ns = kl_now_ns() - t0;
	a->calls++;
	a->ncalls[tool]++;
	kl_hist_record(&a->hist[tool], ns);
	if (rc < 0) {
		a->errors++;
		snprintf(a->failure, sizeof a->failure, "%s %.60s: %.300s", tool_names[tool], what,
		         kiln_last_error()->message);
		note(a, tool, what, NULL, ns);
		return NULL;
	}
	if (r->code != KILN__CODE__OK || r->is_error) {
		if (expect_ok) {
			a->errors++;
			snprintf(a->failure, sizeof a->failure, "%s %s: %s %.200s",
			         tool_names[tool], what, kl_code_name(r->code), r->message);
		} else {
			a->expected_errors++;
		}
	}
	if (!*a->node)
		snprintf(a->node, sizeof a->node, "%s", r->node_id);
	note(a, tool, what, r, ns);
	return r;
}

static void
bash(agent *a, kiln_client *k, const char *cmd, uint32_t timeout, bool expect_ok)
{
	Kiln__BashInput in = KILN__BASH_INPUT__INIT;
	in.command = (char *)cmd;
	in.timeout_ms = timeout;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &in;
	kiln_result_free(step(a, k, T_BASH, &tc, cmd, expect_ok));
}

static void
write_file(agent *a, kiln_client *k, const char *path, const char *text)
{
	Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
	in.file_path = (char *)path;
	in.content.data = (uint8_t *)text;
	in.content.len = strlen(text);
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_WRITE;
	tc.write = &in;
	kiln_result_free(step(a, k, T_WRITE, &tc, path, true));
}

static void
other_tools(agent *a, kiln_client *k)
{
	Kiln__GrepInput gi = KILN__GREP_INPUT__INIT;
	gi.pattern = "argc - 1";
	gi.path = "proj";
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_GREP;
	tc.grep = &gi;
	kiln_result_free(step(a, k, T_GREP, &tc, "grep 'argc - 1' proj", true));

	Kiln__EditInput ei = KILN__EDIT_INPUT__INIT;
	ei.file_path = "proj/main.c";
	ei.old_string = "i < argc - 1; i++) /* bug: skips the last argument */";
	ei.new_string = "i < argc; i++)";
	Kiln__ToolCall te = KILN__TOOL_CALL__INIT;
	te.tool_case = KILN__TOOL_CALL__TOOL_EDIT;
	te.edit = &ei;
	kiln_result_free(step(a, k, T_EDIT, &te, "edit proj/main.c: fix the loop", true));

	Kiln__ReadInput ri = KILN__READ_INPUT__INIT;
	int64_t range[2] = {7, 9};
	ri.file_path = "proj/main.c";
	ri.n_view_range = 2;
	ri.view_range = range;
	Kiln__ToolCall tr = KILN__TOOL_CALL__INIT;
	tr.tool_case = KILN__TOOL_CALL__TOOL_READ;
	tr.read = &ri;
	kiln_result_free(step(a, k, T_READ, &tr, "read proj/main.c lines 7-9", true));

	Kiln__GlobInput gl = KILN__GLOB_INPUT__INIT;
	gl.pattern = "**/*.c";
	Kiln__ToolCall tg = KILN__TOOL_CALL__INIT;
	tg.tool_case = KILN__TOOL_CALL__TOOL_GLOB;
	tg.glob = &gl;
	kiln_result_free(step(a, k, T_GLOB, &tg, "glob **/*.c", true));
}

static void *
agent_main(void *arg)
{
	agent *a = arg;
	kiln_client *k;
	char err[256];
	for (int i = 0; i < T_NTOOLS; i++)
		kl_hist_init(&a->hist[i]);
	uint64_t t0 = kl_now_ns();
	if (kiln_connect(a->url, a->token, &k, err, sizeof err) < 0) {
		snprintf(a->failure, sizeof a->failure, "connect: %s", err);
		a->errors++;
		return NULL;
	}
	char *sid = NULL;
	if (kiln_session_open(k, NULL, NULL, &sid, err, sizeof err) < 0) {
		snprintf(a->failure, sizeof a->failure, "open: %s", err);
		a->errors++;
		kiln_close(k);
		return NULL;
	}
	snprintf(a->session, sizeof a->session, "%s", sid);
	free(sid);
	bash(a, k,
	     "git init -q proj && cd proj && git config user.email agent@example.com && "
	     "git config user.name agent && pwd",
	     0, true);
	write_file(a, k, "proj/main.c", main_c);
	write_file(a, k, "proj/Makefile", makefile);
	bash(a, k, "make -s && ./sum 1 2 3", 0, true); /* prints 3: the bug */
	other_tools(a, k);
	bash(a, k,
	     "make -s && ./sum 1 2 3 && git add -A && git commit -qm 'sum: add every argument' && "
	     "git log --oneline | wc -l",
	     0, true);
	const char *argv[] = {"python3", "-c",
	                      "import sys; print(sys.version.split()[0], sum(range(10)))", NULL};
	Kiln__ExecInput xi = KILN__EXEC_INPUT__INIT;
	xi.argv = (char **)argv;
	xi.n_argv = 3;
	Kiln__ToolCall tx = KILN__TOOL_CALL__INIT;
	tx.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tx.exec = &xi;
	kiln_result_free(step(a, k, T_EXEC, &tx, "exec python3 -c ...", true));
	/* A runaway command: the timeout kills it and the session lives on. */
	bash(a, k, "echo working; sleep 30", 300, false);
	bash(a, k, "cat /proc/1/cmdline | tr '\\0' ' '; hostname; id -u", 0, true);
	kiln_session_close(k, a->session);
	kiln_close(k);
	a->wall_ns = kl_now_ns() - t0;
	return NULL;
}

static int
run_demo(const dev_opts *o, const char *url)
{
	static const struct {
		const char *tenant, *token;
	} tenants[] = {{"dev", "kiln-dev-token"},
	               {"acme", "kiln-dev-acme"},
	               {"globex", "kiln-dev-globex"}};
	int n = o->agents;
	agent *ag = calloc((size_t)n, sizeof *ag);
	printf("\nkiln dev: demo: %d agents of %d tenants work at once\n\n", n, 3);
	uint64_t t0 = kl_now_ns();
	for (int i = 0; i < n; i++) {
		ag[i].tenant = tenants[i % 3].tenant;
		ag[i].token = tenants[i % 3].token;
		ag[i].idx = i / 3 + 1;
		snprintf(ag[i].url, sizeof ag[i].url, "%s", url);
		pthread_create(&ag[i].th, NULL, agent_main, &ag[i]);
	}
	for (int i = 0; i < n; i++)
		pthread_join(ag[i].th, NULL);
	double wall = (double)(kl_now_ns() - t0) / 1e9;
	int calls = 0, errors = 0;
	kl_hist all[T_NTOOLS];
	int counts[T_NTOOLS] = {0};
	for (int t = 0; t < T_NTOOLS; t++)
		kl_hist_init(&all[t]);
	printf("\nkiln dev: summary\n\n  %-8s %-8s %-20s %-10s %6s %7s %9s\n", "tenant", "agent",
	       "session", "node", "calls", "errors", "time");
	for (int i = 0; i < n; i++) {
		agent *a = &ag[i];
		printf("  %-8s agent-%-2d %-20s %-10s %6d %7d %8.2fs\n", a->tenant, a->idx,
		       a->session, a->node, a->calls, a->errors, (double)a->wall_ns / 1e9);
		if (a->failure[0])
			printf("           ! %s\n", a->failure);
		calls += a->calls;
		errors += a->errors;
		for (int t = 0; t < T_NTOOLS; t++) {
			kl_hist_merge(&all[t], &a->hist[t]);
			counts[t] += a->ncalls[t];
		}
	}
	printf("\n  %-6s %6s %10s %10s %10s\n", "tool", "calls", "p50", "p99", "max");
	for (int t = 0; t < T_NTOOLS; t++)
		if (counts[t])
			printf("  %-6s %6d %8.2fms %8.2fms %8.2fms\n", tool_names[t], counts[t],
			       (double)kl_hist_percentile(&all[t], 50) / 1e6,
			       (double)kl_hist_percentile(&all[t], 99) / 1e6,
			       (double)all[t].max / 1e6);
	printf("\n  %d calls in %.2f s (%.1f calls/s) by %d agents; %d unexpected errors\n", calls,
	       wall, calls / wall, n, errors);
	printf("  (each agent's 300 ms timeout on `sleep 30` is expected: the call is killed,\n"
	       "   its partial output returned, and the session keeps working)\n");
	free(ag);
	fflush(stdout);
	return errors ? 1 : 0;
}

/* ---- the cluster ---- */

typedef struct dev_cluster {
	sched *s;
	node *nodes[DEV_MAX_NODES];
	node_member *members[DEV_MAX_NODES];
	int n;
} dev_cluster;

static int
start_nodes(dev_cluster *dc, const dev_opts *o, FILE *err)
{
	char e[512];
	for (int i = 0; i < o->nodes; i++) {
		node_config cfg;
		node_config_defaults(&cfg);
		char *name = kl_xasprintf("dev-%d", i);
		cfg.name = name;
		cfg.move_self = false; /* several nodes share this process */
		/* The embedded default runs anywhere: where memory/pids limits cannot be
		 * enforced it says so at start and every result carries
		 * limits_enforced=false. A standalone kiln-node refuses instead. */
		cfg.allow_unenforced_limits = true;
		cfg.templates[0].target = (uint32_t)o->warm;
		cfg.shutdown_grace_ms = 3000;
		if (node_new(&cfg, &dc->nodes[i], e, sizeof e) < 0) {
			fprintf(err, "kiln dev: node %s: %s\n", name, e);
			free(name);
			return -1;
		}
		if (i == 0)
			fprintf(err, "kiln dev: sandbox limits %s\n",
			        node_limits_text(dc->nodes[i]));
		node_start(dc->nodes[i]);
		node_member_cfg mc = {DEV_NODES_URL, "kiln-dev-join", 0, NULL, 0};
		if (node_member_start(dc->nodes[i], &mc, &dc->members[i], e, sizeof e) < 0) {
			fprintf(err, "kiln dev: node %s: %s\n", name, e);
			free(name);
			return -1;
		}
		dc->n++;
		free(name); /* node_new copied the name */
	}
	for (int t = 0; t < 400; t++) {
		int ready = 0;
		for (int i = 0; i < dc->n; i++)
			ready += node_member_registered(dc->members[i]);
		if (ready == dc->n)
			return 0;
		usleep(10000);
	}
	fprintf(err, "kiln dev: nodes did not register with the embedded scheduler\n");
	return -1;
}

static void
stop_cluster(dev_cluster *dc)
{
	/* What follows is routine: keep the terminal for warnings and errors. */
	if (kl_log_level > KL_WARN)
		kl_log_level = KL_WARN;
	if (dc->s)
		sched_stop(dc->s);
	for (int i = 0; i < dc->n; i++)
		node_stop(dc->nodes[i]);
	for (int i = 0; i < dc->n; i++) {
		node_member_stop(dc->members[i]);
		node_free(dc->nodes[i]);
	}
	sched_free(dc->s);
}

static int
dev_opt(cli *cl, void *ctx, int key, const char *val)
{
	dev_opts *o = ctx;
	switch (key) {
	case 'n':
		o->nodes = atoi(val);
		if (o->nodes < 1 || o->nodes > DEV_MAX_NODES) {
			fprintf(cl->err, "kiln dev: --nodes wants 1-%d\n", DEV_MAX_NODES);
			return CLI_EXIT_USAGE;
		}
		return 0;
	case 'w':
		o->warm = atoi(val);
		return 0;
	case 'a':
		o->agents = atoi(val);
		if (o->agents < 1 || o->agents > 64) {
			fprintf(cl->err, "kiln dev: --agents wants 1-64\n");
			return CLI_EXIT_USAGE;
		}
		return 0;
	case 'D':
		o->demo = false;
		return 0;
	case 'l':
		o->client_url = val;
		return 0;
	case 'L':
		o->node_url = val;
		return 0;
	}
	return CLI_EXIT_USAGE;
}

static void
dev_usage(FILE *f)
{
	fprintf(f,
	        "usage: kiln dev [--nodes N] [--warm N] [--agents N] [--no-demo]\n"
	        "                [--listen URL] [--node-listen URL]\n"
	        "\n"
	        "A whole kiln cluster in this process: a scheduler and N nodes (default 2).\n"
	        "Without --no-demo, several tenants' agents make real tool calls and a\n"
	        "summary follows. With --no-demo the cluster serves clients on --listen\n"
	        "(default %s; tenant dev, token kiln-dev-token) and nodes\n"
	        "on --node-listen (default tcp://127.0.0.1:7070, join token kiln-dev-join)\n"
	        "until Ctrl-C. Tenants: dev, acme (kiln-dev-acme), globex (kiln-dev-globex);\n"
	        "admin token kiln-dev-admin.\n",
	        KILN_DEFAULT_URL);
}

static int
cmd_dev(cli *cl, int argc, char **argv)
{
	static const cli_opt opts[] = {
	        {"nodes", 'n', true},    {"warm", 'w', true},   {"agents", 'a', true},
	        {"no-demo", 'D', false}, {"listen", 'l', true}, {"node-listen", 'L', true},
	        {NULL, 0, false},
	};
	dev_opts o = {2, 4, 6, true, KILN_DEFAULT_URL, "tcp://127.0.0.1:7070"};
	char **pos = NULL;
	int npos = 0;
	int r = cli_parse(cl, "dev", argc, argv, opts, 0, dev_opt, &o, &pos, &npos);
	free(pos);
	if (r == CLI_HELP) {
		dev_usage(cl->out);
		return 0;
	}
	if (r)
		return r;
	if (geteuid() != 0) {
		fprintf(cl->err, "kiln dev: sandboxes need root (user namespaces with id maps, "
		                 "cgroups); run it as root\n");
		return CLI_EXIT_NOPERM;
	}
	sched_config cfg;
	char err[512];
	sched_config_init(&cfg);
	sched_config_dev(&cfg);
	snprintf(cfg.client_url, sizeof cfg.client_url, "%s", o.client_url);
	snprintf(cfg.node_url, sizeof cfg.node_url, "%s", o.node_url);
	dev_cluster dc = {0};
	signal(SIGPIPE, SIG_IGN);
	if (sched_new(&cfg, DEV_NODES_URL, DEV_CLIENTS_URL, &dc.s, err, sizeof err) < 0) {
		fprintf(cl->err, "kiln dev: %s\n", err);
		if (strstr(err, "listen"))
			fprintf(cl->err, "kiln dev: is another kiln dev running? Stop it, or pass "
			                 "--listen/--node-listen with free ports\n");
		sched_config_fini(&cfg);
		return CLI_EXIT_UNAVAILABLE;
	}
	int rc = start_nodes(&dc, &o, cl->err) < 0 ? CLI_EXIT_SOFTWARE : 0;
	if (!rc)
		fprintf(cl->err,
		        "kiln dev: %d nodes ready; clients: %s (tenant dev, token "
		        "kiln-dev-token)\n",
		        dc.n, o.client_url);
	if (!rc && o.demo) {
		rc = run_demo(&o, DEV_CLIENTS_URL);
	} else if (!rc) {
		fprintf(cl->err, "kiln dev: try `kiln run -- echo hi` or `kiln status` in another "
		                 "terminal; Ctrl-C stops the cluster\n");
		struct sigaction sa = {.sa_handler = on_signal};
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		while (!dev_stop)
			pause();
		fprintf(cl->err, "\nkiln dev: stopping\n");
	}
	stop_cluster(&dc);
	sched_config_fini(&cfg);
	return rc;
}

CLI_COMMAND(dev, "run a whole cluster in this process (demo, or --no-demo to serve)", cmd_dev)
