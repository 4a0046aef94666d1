/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tunnel target: the workload reaches the cluster the way a remote agent
 * platform's does, through the egress tunnel. Next to the `kiln dev` that the
 * dev target starts, this starts kiln-gateway (a generated config, one
 * identity per tenant, certificates from scripts/tunnel-certs) and, per run,
 * kiln-plane-sim, which plays the control plane. The run is a trace in the
 * simulator's format (docs/tunnel-sim.md) generated from kiln-bench's own
 * workload: a first trace opens one session per agent and runs the scripts'
 * setup calls; a second one holds the measured calls on those sessions, at
 * intended times drawn exactly as the load driver draws them (Poisson at the
 * agent's share of --rate, or the steps' think_ms with --replay), then the
 * closes. The simulator runs each trace to completion (its clock starting at
 * the gateway's first RESUME, so the connection's set-up is not counted) and
 * writes one JSON line per operation with when it was due, first sent and
 * answered, in wall-clock microseconds; those lines become the run's
 * bench_metrics, so the usual table, JSON and HTML come out. The latencies
 * are therefore measured by the simulator at the plane's side: what a remote
 * agent platform sees, tunnel and gateway included. An agent still makes one
 * call at a time: the simulator runs a session's operations in trace order.
 */
#include "bench.h"

#include "kl_clock.h"
#include "kl_util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KILN_SOURCE_DIR
#error "KILN_SOURCE_DIR must be defined (scripts/tunnel-certs)"
#endif

#define PLANE_NAME "plane.test"
#define SIM_LOG    "warn"

/* ---- the gateway ---- */

static int
write_gateway_ini(const bench_target *t, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "we");
	if (!f) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -errno;
	}
	/* Quick reconnects: every simulator run is a new connection. Results are
	 * kept until acknowledged, so max_results bounds nothing here. */
	fprintf(f,
	        "[gateway]\ncontrol_plane = 127.0.0.1:%d\nserver_name = " PLANE_NAME "\n"
	        "ca_file = %s/certs/plane-ca.crt\ncert_file = %s/certs/gw.crt\n"
	        "key_file = %s/certs/gw.key\nscheduler = %s\n"
	        "backoff_min_ms = 100\nbackoff_max_ms = 500\nmax_results = 100000\n",
	        t->plane_port, t->dir, t->dir, t->dir, t->client_url);
	for (int i = 0; i < t->ntenants; i++) /* plane identity NAME acts as tenant NAME */
		fprintf(f, "[identity %s]\ntoken = %s\n", t->tenants[i].name, t->tenants[i].token);
	return fclose(f) == 0 ? 0 : -EIO;
}

int
bench_tunnel_gateway_start(bench_target *t, char *err, size_t errlen)
{
	char cmd[1400], exe[1200], ini[300], log[300];
	const char *script = getenv("KILN_TUNNEL_CERTS");
	snprintf(exe, sizeof exe, "%s/kiln-gateway", t->bindir);
	for (int i = 0; i < 2; i++) {
		snprintf(cmd, sizeof cmd, "%s/%s", t->bindir,
		         i ? "kiln-plane-sim" : "kiln-gateway");
		if (access(cmd, X_OK) < 0) {
			snprintf(err, errlen,
			         "%s not found: build it (cmake --build ... --target %s)", cmd,
			         i ? "kiln-plane-sim" : "kiln-gateway");
			return -ENOENT;
		}
	}
	snprintf(cmd, sizeof cmd, "bash '%s' '%s/certs' " PLANE_NAME " >/dev/null",
	         script ? script : KILN_SOURCE_DIR "/scripts/tunnel-certs", t->dir);
	if (system(cmd) != 0) {
		snprintf(err, errlen,
		         "%s failed (is openssl installed? KILN_TUNNEL_CERTS names another script)",
		         cmd);
		return -EIO;
	}
	t->plane_port = bench_free_port();
	snprintf(ini, sizeof ini, "%s/gateway.ini", t->dir);
	snprintf(log, sizeof log, "%s/gateway.log", t->dir);
	int r = write_gateway_ini(t, ini, err, errlen);
	if (r < 0)
		return r;
	char *argv[] = {exe, "--config", ini, "--log", "warn", NULL};
	pid_t p = bench_spawn(argv, t->verbose ? NULL : log, -1);
	if (p < 0) {
		snprintf(err, errlen, "spawn %.300s: %s", exe, strerror((int)-p));
		return (int)p;
	}
	t->gw_pid = p;
	usleep(200000);
	if (bench_child_exited(p) >= 0) {
		t->gw_pid = 0;
		snprintf(err, errlen, "kiln-gateway exited at start (its log: %s)", log);
		return -ECHILD;
	}
	return 0;
}

/* ---- the traces ---- */

/* One trace operation, as kiln-bench knows it. */
typedef struct top {
	int agent;
	int tool; /* -1: open or close */
	bool measured;
	uint64_t at_ms;
} top;

typedef struct tagent {
	int tenant;
	const bench_script *sc;
	char session[96];
	uint64_t rng;
	double gap_ms;
	uint64_t step;
	uint64_t next_ms;
} tagent;

typedef struct tplan {
	int n;
	tagent *a;
	int ntenants;
	const bench_tenant *tenants[BENCH_MAX_TENANTS];
	top *ops;
	int nops, cap;
	json_t **lines;
} tplan;

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static double
exp_gap(tagent *a)
{
	double u = ((double)(rnd(&a->rng) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
	return -log(u) * a->gap_ms;
}

/* The tool input of step s at the agent's cycle (edits flip on odd cycles),
 * as bench_step_call builds it for libkiln. */
static json_t *
step_input(const bench_step *s, uint64_t cycle, json_t *op)
{
	json_t *in = json_object();
	switch (s->tool) {
	case BT_BASH:
		json_object_set_new(in, "command", json_string(s->text));
		if (s->timeout_ms)
			json_object_set_new(in, "timeout_ms", json_integer(s->timeout_ms));
		break;
	case BT_EXEC: {
		json_t *argv = json_array();
		for (int i = 0; i < s->argc; i++)
			json_array_append_new(argv, json_string(s->argv[i]));
		json_object_set_new(in, "argv", argv);
		if (s->timeout_ms)
			json_object_set_new(op, "timeout_ms", json_integer(s->timeout_ms));
		break;
	}
	case BT_READ:
		json_object_set_new(in, "file_path", json_string(s->text));
		if (s->nrange == 2)
			json_object_set_new(in, "view_range",
			                    json_pack("[I,I]", (json_int_t)s->range[0],
			                              (json_int_t)s->range[1]));
		break;
	case BT_WRITE:
		json_object_set_new(in, "file_path", json_string(s->text));
		json_object_set_new(in, "content", json_string(s->text2 ? s->text2 : ""));
		break;
	case BT_EDIT: {
		bool swap = s->flip && (cycle & 1);
		json_object_set_new(in, "file_path", json_string(s->text));
		json_object_set_new(in, "old_string", json_string(swap ? s->text3 : s->text2));
		json_object_set_new(in, "new_string", json_string(swap ? s->text2 : s->text3));
		json_object_set_new(in, "replace_all", json_boolean(s->replace_all));
		break;
	}
	default: /* glob, grep */
		json_object_set_new(in, "pattern", json_string(s->text));
		if (s->text2)
			json_object_set_new(in, "path", json_string(s->text2));
		break;
	}
	return in;
}

static void
plan_add(tplan *p, json_t *line, int agent, int tool, uint64_t at_ms, bool measured)
{
	if (p->nops == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 256;
		p->ops = kl_xrealloc(p->ops, sizeof *p->ops * (size_t)p->cap);
		p->lines = kl_xrealloc(p->lines, sizeof *p->lines * (size_t)p->cap);
	}
	p->ops[p->nops] = (top){.agent = agent, .tool = tool, .measured = measured, .at_ms = at_ms};
	p->lines[p->nops++] = line;
}

static void
plan_reset(tplan *p)
{
	for (int i = 0; i < p->nops; i++)
		json_decref(p->lines[i]);
	p->nops = 0;
}

static json_t *
call_line(tplan *p, int i, const bench_step *s, uint64_t cycle, uint64_t at_ms)
{
	json_t *op = json_pack("{s:s,s:s,s:s,s:s}", "op", "call", "identity",
	                       p->tenants[p->a[i].tenant]->name, "session", p->a[i].session, "tool",
	                       bench_tool_names[s->tool]);
	json_object_set_new(op, "input", step_input(s, cycle, op));
	if (at_ms)
		json_object_set_new(op, "at_ms", json_integer((json_int_t)at_ms));
	return op;
}

/* Trace 1: an open per agent ($aN), then its setup calls on it. */
static void
plan_setup(tplan *p)
{
	plan_reset(p);
	for (int i = 0; i < p->n; i++) {
		char as[16];
		snprintf(as, sizeof as, "a%d", i);
		plan_add(p,
		         json_pack("{s:s,s:s,s:s}", "op", "open", "identity",
		                   p->tenants[p->a[i].tenant]->name, "as", as),
		         i, -1, 0, false);
		snprintf(p->a[i].session, sizeof p->a[i].session, "$a%d", i);
		for (int k = 0; k < p->a[i].sc->nsetup; k++)
			plan_add(p, call_line(p, i, &p->a[i].sc->setup[k], 0, 0), i, -1, 0, false);
	}
}

static int
cmp_op_time(const void *a, const void *b)
{
	const top *x = *(const top *const *)a, *y = *(const top *const *)b;
	if (x->at_ms != y->at_ms)
		return x->at_ms < y->at_ms ? -1 : 1;
	return x < y ? -1 : x > y; /* stable: an agent's calls keep their order */
}

/* Trace 2: every agent's calls with intended times before the window's
 * end, drawn as bench_driver.c draws them, then one close per agent. The
 * lines are sorted by time (an agent's own order is kept). */
static void
plan_load(tplan *p, const bench_load *L)
{
	uint64_t win = (uint64_t)(L->warmup_s * 1000), end = win + (uint64_t)(L->duration_s * 1000);
	plan_reset(p);
	for (int i = 0; i < p->n; i++) {
		tagent *a = &p->a[i];
		const bench_script *sc = a->sc;
		a->rng = (L->seed ? L->seed : 0x9e3779b97f4a7c15ull) ^ ((uint64_t)(i + 1) << 20);
		a->gap_ms = L->rate > 0 ? 1000.0 * p->n / L->rate : 1e9;
		a->step = 0;
		a->next_ms = L->replay ? sc->steps[0].think_ms : 20 + (uint64_t)exp_gap(a);
		while (a->next_ms < end) {
			const bench_step *s = &sc->steps[a->step % (uint64_t)sc->nsteps];
			uint64_t cycle = a->step / (uint64_t)sc->nsteps;
			plan_add(p, call_line(p, i, s, cycle, a->next_ms), i, (int)s->tool,
			         a->next_ms, a->next_ms >= win);
			a->step++;
			uint64_t think = sc->steps[a->step % (uint64_t)sc->nsteps].think_ms;
			if (L->replay && !think && a->step % (uint64_t)sc->nsteps == 0)
				break; /* a trace with no pacing: one pass */
			a->next_ms += L->replay ? think : (uint64_t)exp_gap(a);
		}
	}
	/* Sort by intended time, carrying the lines along. */
	top **idx = kl_xcalloc((size_t)p->nops + 1, sizeof *idx);
	for (int i = 0; i < p->nops; i++)
		idx[i] = &p->ops[i];
	qsort(idx, (size_t)p->nops, sizeof *idx, cmp_op_time);
	top *ops = kl_xcalloc((size_t)p->cap + 1, sizeof *ops);
	json_t **lines = kl_xcalloc((size_t)p->cap + 1, sizeof *lines);
	for (int i = 0; i < p->nops; i++) {
		ops[i] = *idx[i];
		lines[i] = p->lines[idx[i] - p->ops];
	}
	free(idx);
	free(p->ops);
	free(p->lines);
	p->ops = ops;
	p->lines = lines;
	for (int i = 0; i < p->n; i++)
		plan_add(p,
		         json_pack("{s:s,s:s,s:s,s:I}", "op", "close", "identity",
		                   p->tenants[p->a[i].tenant]->name, "session", p->a[i].session,
		                   "at_ms", (json_int_t)end),
		         i, -1, end, false);
}

static int
plan_write(const tplan *p, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "we");
	if (!f) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < p->nops; i++) {
		char *s = json_dumps(p->lines[i], JSON_COMPACT);
		fprintf(f, "%s\n", s ? s : "{}");
		free(s);
	}
	return fclose(f) == 0 ? 0 : -EIO;
}

/* ---- running the simulator ---- */

typedef struct simrun {
	char trace[300], results[300], summary[300], log[300];
	double wall_s, cpu_s, gw_cpu_s, dev_cpu_s, host_busy;
	int status; /* exit status, or -1 if it had to be stopped */
} simrun;

/* Run kiln-plane-sim on path until it is done, or for at most limit_s. */
static int
run_sim(bench_target *t, const char *name, int max_inflight, double limit_s, simrun *sr, char *err,
        size_t errlen)
{
	char exe[1200], listen[32], cert[300], key[300], ca[300], inflight[16];
	snprintf(exe, sizeof exe, "%s/kiln-plane-sim", t->bindir);
	snprintf(listen, sizeof listen, "127.0.0.1:%d", t->plane_port);
	snprintf(cert, sizeof cert, "%s/certs/plane.crt", t->dir);
	snprintf(key, sizeof key, "%s/certs/plane.key", t->dir);
	snprintf(ca, sizeof ca, "%s/certs/gw-ca.crt", t->dir);
	snprintf(inflight, sizeof inflight, "%d", max_inflight);
	snprintf(sr->results, sizeof sr->results, "%s/%s-results.jsonl", t->dir, name);
	snprintf(sr->summary, sizeof sr->summary, "%s/%s-summary.json", t->dir, name);
	snprintf(sr->log, sizeof sr->log, "%s/%s-sim.log", t->dir, name);
	char *argv[] = {exe,
	                "--listen",
	                listen,
	                "--cert",
	                cert,
	                "--key",
	                key,
	                "--client-ca",
	                ca,
	                "--trace",
	                sr->trace,
	                "--results",
	                sr->results,
	                "--summary",
	                sr->summary,
	                "--max-inflight",
	                inflight,
	                "--exit-when-done",
	                "--start-on-connect",
	                "--log",
	                SIM_LOG,
	                NULL};
	uint64_t busy0, total0, busy1, total1, t0 = kl_now_ns();
	double gw0 = bench_proc_cpu_s(t->gw_pid), dev0 = bench_proc_cpu_s(t->pids[0]);
	bench_cpu_sample(&busy0, &total0);
	pid_t p = bench_spawn(argv, t->verbose ? NULL : sr->log, -1);
	if (p < 0) {
		snprintf(err, errlen, "spawn %.300s: %s", exe, strerror((int)-p));
		return (int)p;
	}
	int st = -1;
	double cpu = -1;
	while (!bench_interrupted && (double)(kl_now_ns() - t0) / 1e9 < limit_s) {
		double c = bench_proc_cpu_s(p);
		if (c >= 0)
			cpu = c; /* the last reading before it exits */
		if ((st = bench_child_exited(p)) >= 0)
			break;
		usleep(20000);
	}
	if (st == -1) /* too slow or interrupted: SIGTERM writes its results */
		bench_stop_pid(p, 10000);
	bench_cpu_sample(&busy1, &total1);
	sr->wall_s = (double)(kl_now_ns() - t0) / 1e9;
	sr->cpu_s = cpu;
	sr->gw_cpu_s = gw0 >= 0 ? bench_proc_cpu_s(t->gw_pid) - gw0 : -1;
	sr->dev_cpu_s = dev0 >= 0 ? bench_proc_cpu_s(t->pids[0]) - dev0 : -1;
	sr->host_busy = total1 > total0 ? (double)(busy1 - busy0) / (double)(total1 - total0) : -1;
	sr->status = st;
	if (st > 0 && st != 1) { /* 1: expectations or duplicates, still a run */
		snprintf(err, errlen, "kiln-plane-sim exited with status %d (log: %s)", st,
		         sr->log);
		return -EIO;
	}
	return 0;
}

/* The results file as an array indexed by trace line - 1. */
static json_t *
load_results(const char *path, int nops, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "the simulator wrote no results (%s)", path);
		return NULL;
	}
	json_t *a = json_array();
	for (int i = 0; i < nops; i++)
		json_array_append_new(a, json_null());
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		json_t *ln = json_object_get(j, "line");
		int k = json_is_integer(ln) ? (int)json_integer_value(ln) - 1 : -1;
		if (k >= 0 && k < nops)
			json_array_set(a, (size_t)k, j);
		json_decref(j);
	}
	free(line);
	fclose(f);
	return a;
}

static uint64_t
jus(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
	                                                       : 0;
}

static const char *
jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

/* ---- results into bench_metrics ---- */

static void
count(bench_metrics *m, int tool, int tenant, int what)
{
	bench_counts *c[3] = {&m->total, &m->tools[tool], &m->tenants[tenant]};
	for (int i = 0; i < 3; i++) {
		uint64_t *v = what == 0   ? &c[i]->sent
		              : what == 1 ? &c[i]->results
		              : what == 2 ? &c[i]->errors
		                          : &c[i]->ok;
		(*v)++;
	}
}

/* One measured call's line: counted as bench_driver.c counts a call. */
static void
import_call(bench_metrics *m, const top *op, int tenant, json_t *line)
{
	const char *state = jstr(line, "state");
	uint64_t due = jus(line, "due_us"), sent = jus(line, "sent_us"),
	         done = jus(line, "done_us");
	json_t *res = json_object_get(line, "result");
	if (!line || !strcmp(state, "wait") || !sent) {
		m->unsent_due++; /* never left the plane before it stopped */
		return;
	}
	count(m, op->tool, tenant, 0);
	kl_hist_record(&m->lag, sent > due ? (sent - due) * 1000 : 0);
	if (strcmp(state, "done") || !res) {
		count(m, op->tool, tenant, 2);
		bench_kind_add(m->kinds, &m->nkinds, "NO_ANSWER:TIMEOUT", 1);
		return;
	}
	const char *code = jstr(res, "code");
	if (!json_object_get(res, "exit_code") || !done) { /* refused: not a ToolResult */
		char kind[48];
		snprintf(kind, sizeof kind, "%s%s",
		         json_is_true(json_object_get(res, "local")) ? "LOCAL:" : "",
		         *code ? code : "?");
		count(m, op->tool, tenant, 2);
		bench_kind_add(m->kinds, &m->nkinds, kind, 1);
		return;
	}
	uint64_t lat = done > due ? (done - due) * 1000 : 0;
	kl_hist_record(&m->all, lat);
	kl_hist_record(&m->tool[op->tool], lat);
	kl_hist_record(&m->tenant[tenant], lat);
	kl_hist_record(&m->service, done > sent ? (done - sent) * 1000 : 0);
	count(m, op->tool, tenant, 1);
	bool ok = !strcmp(code, "OK");
	const char *name =
	        ok ? (json_is_true(json_object_get(res, "is_error"))          ? "OK_IS_ERROR"
	              : json_integer_value(json_object_get(res, "exit_code")) ? "EXIT_NONZERO"
	                                                                      : "OK")
	           : code;
	if (!strcmp(name, "OK"))
		count(m, op->tool, tenant, 3);
	bench_kind_add(m->codes, &m->ncodes, name, 1);
	m->tool_cpu_us += jus(res, "cpu_usec");
	bench_node_stat *ns =
	        bench_metrics_node(m, *jstr(res, "node_id") ? jstr(res, "node_id") : "?");
	if (ns)
		ns->calls++;
}

/* The setup trace's opens: session ids, warm or cold, open latency. Agents
 * whose session did not open are dropped. */
static int
import_opens(tplan *p, json_t *res, bench_metrics *m, char *err, size_t errlen)
{
	int k = 0, warned = 0;
	for (int i = 0; i < p->nops; i++) {
		if (p->ops[i].tool != -1 || !json_is_object(p->lines[i]) ||
		    strcmp(jstr(p->lines[i], "op"), "open"))
			continue;
		tagent *a = &p->a[p->ops[i].agent];
		json_t *line = json_array_get(res, (size_t)i), *r = json_object_get(line, "result");
		const char *sid = jstr(r, "session_id");
		if (strcmp(jstr(r, "code"), "OK") || !*sid) {
			m->opens_failed++;
			a->session[0] = 0;
			if (warned++ < 3)
				fprintf(stderr, "kiln-bench: tunnel: session open failed: %s %s\n",
				        jstr(r, "code"), jstr(r, "message"));
			continue;
		}
		m->opens++;
		if (json_is_true(json_object_get(r, "warm")))
			m->opens_warm++;
		else
			m->opens_cold++;
		uint64_t s = jus(line, "sent_us"), d = jus(line, "done_us");
		if (d > s)
			kl_hist_record(&m->open_lat, (d - s) * 1000);
		snprintf(a->session, sizeof a->session, "%s", sid);
	}
	for (int i = 0; i < p->n; i++)
		if (p->a[i].session[0])
			p->a[k++] = p->a[i];
	p->n = k;
	if (!k) {
		snprintf(err, errlen, "no agent could open a session through the tunnel");
		return -EIO;
	}
	return 0;
}

/* ---- the phase ---- */

static const bench_script *
pick_script(const bench_workload *w, const char *tname, int j)
{
	int n = 0;
	for (int i = 0; i < w->nscripts; i++)
		n += !w->scripts[i].tenant[0] || !strcmp(w->scripts[i].tenant, tname);
	if (!n)
		return &w->scripts[j % w->nscripts];
	int want = j % n;
	for (int i = 0; i < w->nscripts; i++)
		if ((!w->scripts[i].tenant[0] || !strcmp(w->scripts[i].tenant, tname)) && !want--)
			return &w->scripts[i];
	return &w->scripts[0];
}

static int
plan_agents(tplan *p, const bench_opts *o, const bench_target *t, const bench_workload *w,
            char *err, size_t errlen)
{
	if (o->tenants > t->ntenants) {
		snprintf(err, errlen, "%d tenants asked, the target has %d", o->tenants,
		         t->ntenants);
		return -EINVAL;
	}
	p->ntenants = o->tenants;
	p->a = kl_xcalloc((size_t)o->tenants * (size_t)o->agents + 1, sizeof *p->a);
	for (int i = 0; i < o->tenants; i++) {
		p->tenants[i] = &t->tenants[i];
		int n = o->agents;
		if (t->tenants[i].max_sessions && (uint32_t)n > t->tenants[i].max_sessions)
			n = (int)t->tenants[i].max_sessions;
		for (int j = 0; j < n; j++)
			p->a[p->n++] =
			        (tagent){.tenant = i, .sc = pick_script(w, t->tenants[i].name, j)};
	}
	return 0;
}

static void
plan_free(tplan *p)
{
	plan_reset(p);
	free(p->ops);
	free(p->lines);
	free(p->a);
}

/* Run trace p (written to name.jsonl) through the simulator; its results. */
static json_t *
run_plan(bench_target *t, tplan *p, const char *name, double limit_s, simrun *sr, char *err,
         size_t errlen)
{
	snprintf(sr->trace, sizeof sr->trace, "%s/%s.jsonl", t->dir, name);
	if (plan_write(p, sr->trace, err, errlen) < 0 ||
	    run_sim(t, name, 2 * p->n + 16, limit_s, sr, err, errlen) < 0)
		return NULL;
	return load_results(sr->results, p->nops, err, errlen);
}

static void
import_load(tplan *p, json_t *res, bench_metrics *m, const simrun *sr, const bench_load *L)
{
	for (int i = 0; i < p->nops; i++)
		if (p->ops[i].measured && p->ops[i].tool >= 0)
			import_call(m, &p->ops[i], p->a[p->ops[i].agent].tenant,
			            json_array_get(res, (size_t)i));
	/* CPU shares over the simulator's whole run (connection, drain and closes
	 * included), scaled to the measured window so the report's "% of one
	 * core" (cpu / window) reads as the average rate. */
	double scale = sr->wall_s > 0 ? L->duration_s / sr->wall_s : 0;
	m->host_busy = sr->host_busy;
	m->sched_cpu_s = sr->dev_cpu_s >= 0 ? sr->dev_cpu_s * scale : -1;
	snprintf(m->proc0, sizeof m->proc0, "kiln dev");
	m->gw_cpu_s = sr->gw_cpu_s >= 0 ? sr->gw_cpu_s * scale : -1;
	m->sim_cpu_s = sr->cpu_s >= 0 ? sr->cpu_s * scale : -1;
	m->window_s = L->duration_s;
	m->load1 = bench_load1();
}

static void
describe_run(bench_run *run, const tplan *p, const bench_load *L, int nodes)
{
	run->load = *L;
	run->load.label = NULL;
	run->agents = p->n;
	run->ntenants = p->ntenants;
	for (int i = 0; i < p->ntenants; i++)
		snprintf(run->tenant_names[i], sizeof run->tenant_names[i], "%s",
		         p->tenants[i]->name);
	run->nodes = nodes;
	run->via_tunnel = true;
}

int
bench_phase_tunnel(bench_results *R, const bench_opts *o, bench_target *t, const bench_workload *w)
{
	char err[512];
	tplan p = {0};
	simrun sr = {0};
	json_t *res = NULL;
	bench_run *run = bench_run_add(R, "main", "main");
	if (!run)
		return -ENOSPC;
	run->m = bench_metrics_new();
	bench_load L = {.rate = o->rate,
	                .replay = o->replay,
	                .duration_s = o->duration_s,
	                .warmup_s = o->warmup_s,
	                .drain_s = o->drain_s,
	                .seed = o->seed};
	int r = plan_agents(&p, o, t, w, err, sizeof err);
	if (r == 0) {
		plan_setup(&p);
		if (bench_progress)
			fprintf(stderr,
			        "kiln-bench: tunnel: opening %d sessions (and their setup) "
			        "through kiln-plane-sim\n",
			        p.n);
		res = run_plan(t, &p, "setup", 120 + 2.0 * p.nops, &sr, err, sizeof err);
		r = !res ? -EIO : import_opens(&p, res, run->m, err, sizeof err);
		json_decref(res);
	}
	if (r == 0 && !bench_interrupted) {
		plan_load(&p, &L);
		if (bench_progress)
			fprintf(stderr,
			        "kiln-bench: tunnel: %d calls of %d agents (%.0f s warm-up, %.0f s "
			        "measured) through kiln-plane-sim\n",
			        p.nops - p.n, p.n, L.warmup_s, L.duration_s);
		res = run_plan(t, &p, "load", 30 + L.warmup_s + L.duration_s + L.drain_s, &sr, err,
		               sizeof err);
		if (!res)
			r = -EIO;
		else
			import_load(&p, res, run->m, &sr, &L);
		json_decref(res);
	}
	describe_run(run, &p, &L, t->nodes);
	R->main_run = R->nruns - 1;
	if (r < 0)
		fprintf(stderr, "kiln-bench: tunnel run: %s (KILN_BENCH_KEEP=1 keeps the logs)\n",
		        err);
	plan_free(&p);
	return bench_interrupted ? -EINTR : r;
}
