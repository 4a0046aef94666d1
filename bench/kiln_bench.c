/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench: the capacity benchmark operators use to size a kiln cluster.
 * It starts (or reaches) a real cluster, drives it with tenants' agents
 * making tool calls at intended send times (open loop by default, closed
 * loop for peak throughput), measures latency from those intended times
 * into log-linear histograms, and answers: how many nodes like this one for
 * X agents at Y calls/min with p99 under Z ms. Around that: baselines in
 * the same run (bare spawn, cold bubblewrap, straight to the node), scaling
 * over 1, 2 and 4 node processes, a fairness run with one tenant flooding,
 * and the scheduler's placement microbenchmark. Output: a progress line, a
 * table, a JSON result file, an HTML report with SVG charts. This file is
 * the option parser and the order of the phases; bench.h maps the rest.
 */
#include "bench.h"

#include "kl_clock.h"
#include "kl_log.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

volatile sig_atomic_t bench_interrupted;
bool bench_progress = true;

static void
on_signal(int sig)
{
	if (bench_interrupted) {
		/* Second Ctrl-C: no more waiting. */
		bench_children_kill_all();
		_exit(130);
	}
	bench_interrupted = 1;
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: kiln-bench [options]\n"
	        "\n"
	        "The capacity benchmark: drives a real kiln cluster with tenants' agents making\n"
	        "tool calls, and answers how many nodes of this size a workload needs at a given\n"
	        "p99. Run it as root (the cluster's sandboxes need it). Latency is measured from\n"
	        "each call's intended send time, so an overloaded cluster cannot hide the calls\n"
	        "it delayed. By default: one open-loop run against a `kiln dev` it starts itself.\n"
	        "\n"
	        "Target (which cluster):\n"
	        "  --target dev|procs|external|tunnel\n"
	        "                        dev (default): spawn `kiln dev --no-demo` (found beside\n"
	        "                        kiln-bench) on free loopback ports; procs: spawn\n"
	        "                        kiln-scheduler + N kiln-node processes (config and\n"
	        "                        tokens in a temporary directory); external: a running\n"
	        "                        scheduler (--scheduler); tunnel: a kiln dev behind\n"
	        "                        kiln-gateway, driven through the egress tunnel by\n"
	        "                        kiln-plane-sim (the remote control plane) replaying\n"
	        "                        the workload as a trace: latencies are then measured\n"
	        "                        by the simulator at the plane's side (what a remote\n"
	        "                        agent platform sees, tunnel included); main run only\n"
	        "                        (open loop or --replay); certificates from\n"
	        "                        scripts/tunnel-certs (KILN_TUNNEL_CERTS overrides)\n"
	        "  --nodes N             nodes of the target: threads of kiln dev, or node\n"
	        "                        processes for procs (default 1)\n"
	        "  --nodes-procs N       shorthand for --target procs --nodes N\n"
	        "  --warm N              warm sandboxes kept per node (default 16)\n"
	        "  --pin                 procs: pin node process i to CPU i mod ncpu\n"
	        "  --scheduler URL       external: the scheduler's client URL (implies --target\n"
	        "                        external)\n"
	        "  --tenant NAME=TOKEN   external: a tenant to drive (repeatable; default dev\n"
	        "                        with kiln-dev-token)\n"
	        "  --admin-token TOKEN   external: admin token for status samples (nodes, slots)\n"
	        "  --bindir DIR          where kiln, kiln-scheduler and kiln-node are (default:\n"
	        "                        the directory of kiln-bench)\n"
	        "  --verbose             the cluster's logs on stderr instead of a temporary file\n"
	        "\n"
	        "Workload (what the agents do):\n"
	        "  --profile NAME        coding (default), shell, file or true:\n");
	for (int i = 0; bench_profile_names[i]; i++)
		fprintf(f, "                          %-7s %s\n", bench_profile_names[i],
		        bench_profile_help[i]);
	fprintf(f,
	        "  --trace FILE          agents' calls from a JSON-lines trace (format in\n"
	        "                        bench/README.md) instead of a profile\n"
	        "  --tenants N           tenants driven, the first N of dev, acme, globex\n"
	        "                        (default 1: dev, which has no quota)\n"
	        "  --agents M            agents (sessions) per tenant (default 32)\n"
	        "\n"
	        "Load:\n"
	        "  --rate R              offered load in calls/s, all agents together, Poisson\n"
	        "                        arrivals (default 20)\n"
	        "  --closed              closed loop: each agent calls again as soon as it has a\n"
	        "                        result (peak throughput; --rate is ignored)\n"
	        "  --replay              intended times from the steps' think_ms (the trace's own\n"
	        "                        pacing)\n"
	        "  --duration S          measured seconds (default 10)\n"
	        "  --warmup S            driven but unmeasured seconds before (default 2)\n"
	        "  --drain S             after the window, how long calls due in it may still be\n"
	        "                        sent (default 10); the rest count as unsent_due\n"
	        "  --call-timeout MS     a call with no answer after MS fails (default 60000)\n"
	        "  --seed N              random seed of the arrival times (default 1)\n"
	        "\n"
	        "Phases (the main run always runs unless --no-main):\n"
	        "  --no-main             skip the main run\n"
	        "  --sweep               raise the offered load until p99 passes the SLO; report\n"
	        "                        calls/s per node and the sizing line\n"
	        "  --slo-ms Z            the p99 SLO of the sweep and the sizing (default 1000)\n"
	        "  --sweep-start R       first offered load (default 10 calls/s)\n"
	        "  --sweep-factor F      each step multiplies the load by F (default 1.5)\n"
	        "  --sweep-max R         highest offered load tried (default 5000)\n"
	        "  --sweep-step S        measured seconds per step (default 5)\n"
	        "  --sweep-refine N      bisection steps at the knee (default 2)\n"
	        "  --size-agents X       sizing: agents to serve (default 1000)\n"
	        "  --size-calls-per-min Y  sizing: tool calls per agent per minute (default 6)\n"
	        "  --headroom H          sizing: spare capacity kept, 0..0.9 (default 0.3)\n"
	        "  --baselines           bare posix_spawn, cold bubblewrap, straight to the node\n"
	        "                        vs through the scheduler, spawned cat vs read, spawn\n"
	        "                        throughput vs the whole path (own 1-node cluster)\n"
	        "  --baseline-iterations N  calls per baseline loop (default 300)\n"
	        "  --baseline-seconds S  seconds per throughput baseline (default 3)\n"
	        "  --scaling[=LIST]      closed-loop runs against 1,2,4 (or LIST) kiln-node\n"
	        "                        processes on this machine\n"
	        "  --scaling-seconds S   measured seconds per scaling run (default 8)\n"
	        "  --fairness            one tenant floods at --flood-factor x its rate quota\n"
	        "                        while the others run at --fair-rate; compared with\n"
	        "                        no flood\n"
	        "  --flood-tenant NAME   the flooding tenant (default: the last one with a quota,\n"
	        "                        globex)\n"
	        "  --flood-factor F      flood at F times the quota (default 10)\n"
	        "  --fair-rate R         calls/s of each tenant otherwise (default 5)\n"
	        "  --fair-seconds S      measured seconds per fairness run (default 10)\n"
	        "  --placement           the scheduler's placement decision over 1..1000 fake\n"
	        "                        nodes (target 50,000/s)\n"
	        "  --all                 every phase above\n"
	        "  --smoke               a few seconds: tiny load on a kiln dev this starts, plus\n"
	        "                        the placement microbenchmark (for CI)\n"
	        "\n"
	        "Output:\n"
	        "  --json FILE           the results as JSON (schema in bench/README.md)\n"
	        "  --html FILE           an HTML report with SVG charts, no network needed\n"
	        "  --svg-dir DIR         the charts as standalone .svg files too\n"
	        "  --quiet               no progress line\n"
	        "  --check-json FILE     only check a result file: well-formed, and every count\n"
	        "                        adds up (sent = results + errors); exit 0 or 1\n"
	        "  -h, --help            this help\n"
	        "  --version             the version\n"
	        "\n"
	        "Exit status: 0 when every phase ran (targets met or not: numbers are for people,\n"
	        "never a gate), 1 when a phase could not run, 2 for a usage error, 130 when\n"
	        "interrupted (the results so far are still written). Ctrl-C stops the run and\n"
	        "every process it started; a second Ctrl-C stops at once.\n");
}

static void
defaults(bench_opts *o)
{
	memset(o, 0, sizeof *o);
	o->target = TARGET_DEV;
	o->nodes = 1;
	o->warm = 16;
	o->profile = "coding";
	o->tenants = 1;
	o->agents = 32;
	o->rate = 20;
	o->duration_s = 10;
	o->warmup_s = 2;
	o->drain_s = 10;
	o->call_timeout_ms = 60000;
	o->seed = 1;
	o->main_run = true;
	o->slo_ms = 1000;
	o->sweep_start = 10;
	o->sweep_factor = 1.5;
	o->sweep_max = 5000;
	o->sweep_step_s = 5;
	o->sweep_refine = 2;
	o->size_agents = 1000;
	o->size_cpm = 6;
	o->headroom = 0.3;
	o->baseline_iters = 300;
	o->baseline_tput_s = 3;
	o->scaling_counts[0] = 1;
	o->scaling_counts[1] = 2;
	o->scaling_counts[2] = 4;
	o->nscaling = 3;
	o->scaling_s = 8;
	o->flood_factor = 10;
	o->fair_rate = 5;
	o->fair_s = 10;
}

static void
smoke(bench_opts *o)
{
	o->target = TARGET_DEV;
	o->nodes = 1;
	o->warm = 2;
	o->tenants = 1;
	o->agents = 2;
	o->rate = 10;
	o->duration_s = 2;
	o->warmup_s = 0.5;
	o->drain_s = 3;
	o->call_timeout_ms = 30000;
	o->placement = true;
}

static int
num(const char *opt, const char *v, double lo, double hi, double *ret)
{
	char *end;
	errno = 0;
	double d = strtod(v, &end);
	if (errno || end == v || *end || d < lo || d > hi) {
		fprintf(stderr, "kiln-bench: %s wants a number from %g to %g, got '%s'\n", opt, lo,
		        hi, v);
		return -1;
	}
	*ret = d;
	return 0;
}

static int
inum(const char *opt, const char *v, int lo, int hi, int *ret)
{
	double d;
	if (num(opt, v, lo, hi, &d) < 0)
		return -1;
	if (d != (int)d) {
		fprintf(stderr, "kiln-bench: %s wants a whole number, got '%s'\n", opt, v);
		return -1;
	}
	*ret = (int)d;
	return 0;
}

static int
parse_list(const char *v, bench_opts *o)
{
	char buf[128];
	snprintf(buf, sizeof buf, "%s", v);
	o->nscaling = 0;
	for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->nscaling == 8 || inum("--scaling", tok, 1, BENCH_MAX_NODES,
		                             &o->scaling_counts[o->nscaling++]) < 0)
			return -1;
	}
	return o->nscaling ? 0 : -1;
}

static int
parse_tenant(const char *v, bench_opts *o)
{
	const char *eq = strchr(v, '=');
	if (!eq || eq == v || !eq[1] || o->ext_ntenants == BENCH_MAX_TENANTS ||
	    (size_t)(eq - v) >= sizeof o->ext_tenants[0].name) {
		fprintf(stderr, "kiln-bench: --tenant wants NAME=TOKEN (at most %d)\n",
		        BENCH_MAX_TENANTS);
		return -1;
	}
	bench_tenant *t = &o->ext_tenants[o->ext_ntenants++];
	memset(t, 0, sizeof *t);
	snprintf(t->name, sizeof t->name, "%.*s", (int)(eq - v), v);
	snprintf(t->token, sizeof t->token, "%s", eq + 1);
	return 0;
}

enum {
	O_TARGET = 256,
	O_NODES,
	O_NODE_PROCS,
	O_WARM,
	O_PIN,
	O_SCHED,
	O_TENANT,
	O_ADMIN,
	O_BINDIR,
	O_VERBOSE,
	O_PROFILE,
	O_TRACE,
	O_TENANTS,
	O_AGENTS,
	O_RATE,
	O_CLOSED,
	O_REPLAY,
	O_DURATION,
	O_WARMUP,
	O_DRAIN,
	O_CALL_TIMEOUT,
	O_SEED,
	O_NO_MAIN,
	O_SWEEP,
	O_SLO,
	O_SWEEP_START,
	O_SWEEP_FACTOR,
	O_SWEEP_MAX,
	O_SWEEP_STEP,
	O_SWEEP_REFINE,
	O_SIZE_AGENTS,
	O_SIZE_CPM,
	O_HEADROOM,
	O_BASELINES,
	O_BASE_ITERS,
	O_BASE_SECS,
	O_SCALING,
	O_SCALING_SECS,
	O_FAIRNESS,
	O_FLOOD_TENANT,
	O_FLOOD_FACTOR,
	O_FAIR_RATE,
	O_FAIR_SECS,
	O_PLACEMENT,
	O_ALL,
	O_SMOKE,
	O_JSON,
	O_HTML,
	O_SVG_DIR,
	O_QUIET,
	O_CHECK,
	O_VERSION,
};

static const struct option longopts[] = {
        {"target", 1, 0, O_TARGET},
        {"nodes", 1, 0, O_NODES},
        {"nodes-procs", 1, 0, O_NODE_PROCS},
        {"warm", 1, 0, O_WARM},
        {"pin", 0, 0, O_PIN},
        {"scheduler", 1, 0, O_SCHED},
        {"tenant", 1, 0, O_TENANT},
        {"admin-token", 1, 0, O_ADMIN},
        {"bindir", 1, 0, O_BINDIR},
        {"verbose", 0, 0, O_VERBOSE},
        {"profile", 1, 0, O_PROFILE},
        {"trace", 1, 0, O_TRACE},
        {"tenants", 1, 0, O_TENANTS},
        {"agents", 1, 0, O_AGENTS},
        {"rate", 1, 0, O_RATE},
        {"closed", 0, 0, O_CLOSED},
        {"replay", 0, 0, O_REPLAY},
        {"duration", 1, 0, O_DURATION},
        {"warmup", 1, 0, O_WARMUP},
        {"drain", 1, 0, O_DRAIN},
        {"call-timeout", 1, 0, O_CALL_TIMEOUT},
        {"seed", 1, 0, O_SEED},
        {"no-main", 0, 0, O_NO_MAIN},
        {"sweep", 0, 0, O_SWEEP},
        {"slo-ms", 1, 0, O_SLO},
        {"sweep-start", 1, 0, O_SWEEP_START},
        {"sweep-factor", 1, 0, O_SWEEP_FACTOR},
        {"sweep-max", 1, 0, O_SWEEP_MAX},
        {"sweep-step", 1, 0, O_SWEEP_STEP},
        {"sweep-refine", 1, 0, O_SWEEP_REFINE},
        {"size-agents", 1, 0, O_SIZE_AGENTS},
        {"size-calls-per-min", 1, 0, O_SIZE_CPM},
        {"headroom", 1, 0, O_HEADROOM},
        {"baselines", 0, 0, O_BASELINES},
        {"baseline-iterations", 1, 0, O_BASE_ITERS},
        {"baseline-seconds", 1, 0, O_BASE_SECS},
        {"scaling", 2, 0, O_SCALING},
        {"scaling-seconds", 1, 0, O_SCALING_SECS},
        {"fairness", 0, 0, O_FAIRNESS},
        {"flood-tenant", 1, 0, O_FLOOD_TENANT},
        {"flood-factor", 1, 0, O_FLOOD_FACTOR},
        {"fair-rate", 1, 0, O_FAIR_RATE},
        {"fair-seconds", 1, 0, O_FAIR_SECS},
        {"placement", 0, 0, O_PLACEMENT},
        {"all", 0, 0, O_ALL},
        {"smoke", 0, 0, O_SMOKE},
        {"json", 1, 0, O_JSON},
        {"html", 1, 0, O_HTML},
        {"svg-dir", 1, 0, O_SVG_DIR},
        {"quiet", 0, 0, O_QUIET},
        {"check-json", 1, 0, O_CHECK},
        {"help", 0, 0, 'h'},
        {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0},
};

static int
target_of(const char *v, bench_target_kind *k)
{
	static const char *const names[] = {"dev", "procs", "external", "tunnel"};
	for (int i = 0; i < 4; i++)
		if (!strcmp(v, names[i])) {
			*k = (bench_target_kind)i;
			return 0;
		}
	fprintf(stderr, "kiln-bench: --target wants dev, procs, external or tunnel, got '%s'\n", v);
	return -1;
}

/* One option; returns 0, -1 for a usage error, or 1 to exit 0 (help, version, check). */
static int
option(int c, const char *v, bench_opts *o, const char **check)
{
	double d;
	int i;
	switch (c) {
	case O_TARGET:
		return target_of(v, &o->target);
	case O_NODES:
		return inum("--nodes", v, 1, BENCH_MAX_NODES, &o->nodes);
	case O_NODE_PROCS:
		o->target = TARGET_PROCS;
		return inum("--nodes-procs", v, 1, BENCH_MAX_NODES, &o->nodes);
	case O_WARM:
		return inum("--warm", v, 0, 10000, &o->warm);
	case O_PIN:
		o->pin = true;
		return 0;
	case O_SCHED:
		o->target = TARGET_EXTERNAL;
		o->scheduler_url = v;
		return 0;
	case O_TENANT:
		return parse_tenant(v, o);
	case O_ADMIN:
		o->admin_token = v;
		return 0;
	case O_BINDIR:
		snprintf(o->bindir, sizeof o->bindir, "%s", v);
		return 0;
	case O_VERBOSE:
		o->verbose = true;
		return 0;
	case O_PROFILE:
		o->profile = v;
		return 0;
	case O_TRACE:
		o->trace = v;
		return 0;
	case O_TENANTS:
		return inum("--tenants", v, 1, BENCH_MAX_TENANTS, &o->tenants);
	case O_AGENTS:
		return inum("--agents", v, 1, 4096, &o->agents);
	case O_RATE:
		return num("--rate", v, 0.01, 1e6, &o->rate);
	case O_CLOSED:
		o->closed = true;
		return 0;
	case O_REPLAY:
		o->replay = true;
		return 0;
	case O_DURATION:
		return num("--duration", v, 0.1, 86400, &o->duration_s);
	case O_WARMUP:
		return num("--warmup", v, 0, 3600, &o->warmup_s);
	case O_DRAIN:
		return num("--drain", v, 0, 3600, &o->drain_s);
	case O_CALL_TIMEOUT:
		if (inum("--call-timeout", v, 1, 86400000, &i) < 0)
			return -1;
		o->call_timeout_ms = (uint32_t)i;
		return 0;
	case O_SEED:
		if (num("--seed", v, 0, 1e18, &d) < 0)
			return -1;
		o->seed = (uint64_t)d;
		return 0;
	case O_NO_MAIN:
		o->main_run = false;
		return 0;
	case O_SWEEP:
		o->sweep = true;
		return 0;
	case O_SLO:
		return num("--slo-ms", v, 0.01, 1e7, &o->slo_ms);
	case O_SWEEP_START:
		return num("--sweep-start", v, 0.01, 1e6, &o->sweep_start);
	case O_SWEEP_FACTOR:
		return num("--sweep-factor", v, 1.05, 10, &o->sweep_factor);
	case O_SWEEP_MAX:
		return num("--sweep-max", v, 0.01, 1e6, &o->sweep_max);
	case O_SWEEP_STEP:
		return num("--sweep-step", v, 0.5, 3600, &o->sweep_step_s);
	case O_SWEEP_REFINE:
		return inum("--sweep-refine", v, 0, 10, &o->sweep_refine);
	case O_SIZE_AGENTS:
		return num("--size-agents", v, 1, 1e9, &o->size_agents);
	case O_SIZE_CPM:
		return num("--size-calls-per-min", v, 0.001, 1e6, &o->size_cpm);
	case O_HEADROOM:
		return num("--headroom", v, 0, 0.9, &o->headroom);
	case O_BASELINES:
		o->baselines = true;
		return 0;
	case O_BASE_ITERS:
		return inum("--baseline-iterations", v, 10, 1000000, &o->baseline_iters);
	case O_BASE_SECS:
		return num("--baseline-seconds", v, 0.2, 3600, &o->baseline_tput_s);
	case O_SCALING:
		o->scaling = true;
		if (v && parse_list(v, o) < 0) {
			fprintf(stderr,
			        "kiln-bench: --scaling wants a list such as 1,2,4 (1 to %d)\n",
			        BENCH_MAX_NODES);
			return -1;
		}
		return 0;
	case O_SCALING_SECS:
		return num("--scaling-seconds", v, 0.5, 3600, &o->scaling_s);
	case O_FAIRNESS:
		o->fairness = true;
		return 0;
	case O_FLOOD_TENANT:
		o->flood_tenant = v;
		return 0;
	case O_FLOOD_FACTOR:
		return num("--flood-factor", v, 1, 1000, &o->flood_factor);
	case O_FAIR_RATE:
		return num("--fair-rate", v, 0.01, 1e6, &o->fair_rate);
	case O_FAIR_SECS:
		return num("--fair-seconds", v, 0.5, 3600, &o->fair_s);
	case O_PLACEMENT:
		o->placement = true;
		return 0;
	case O_ALL:
		o->sweep = o->baselines = o->scaling = o->fairness = o->placement = true;
		return 0;
	case O_SMOKE:
		o->smoke = true;
		return 0;
	case O_JSON:
		o->json = v;
		return 0;
	case O_HTML:
		o->html = v;
		return 0;
	case O_SVG_DIR:
		o->svg_dir = v;
		return 0;
	case O_QUIET:
		bench_progress = false;
		return 0;
	case O_CHECK:
		*check = v;
		return 0;
	case O_VERSION:
		printf("kiln-bench %s\n", KILN_VERSION);
		return 1;
	case 'h':
		usage(stdout);
		return 1;
	default:
		usage(stderr);
		return -1;
	}
}

static int
parse(int argc, char **argv, bench_opts *o, const char **check)
{
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int r = option(c, optarg, o, check);
		if (r)
			return r;
	}
	if (optind < argc) {
		fprintf(stderr, "kiln-bench: unexpected argument '%s' (see --help)\n",
		        argv[optind]);
		return -1;
	}
	if (o->smoke)
		smoke(o);
	if (o->closed && o->replay) {
		fprintf(stderr, "kiln-bench: --closed and --replay exclude each other\n");
		return -1;
	}
	if (o->target == TARGET_TUNNEL && (o->closed || o->sweep || o->fairness)) {
		fprintf(stderr, "kiln-bench: --target tunnel runs the main run only, open loop or "
		                "--replay (no --closed, --sweep or --fairness)\n");
		return -1;
	}
	if (o->target == TARGET_EXTERNAL && !o->scheduler_url) {
		fprintf(stderr, "kiln-bench: --target external needs --scheduler URL\n");
		return -1;
	}
	if (!o->bindir[0]) {
		ssize_t n = readlink("/proc/self/exe", o->bindir, sizeof o->bindir - 1);
		if (n > 0) {
			o->bindir[n] = 0;
			*strrchr(o->bindir, '/') = 0;
		} else {
			snprintf(o->bindir, sizeof o->bindir, ".");
		}
	}
	return 0;
}

/* ---- the run ---- */

static bool
needs_main_target(const bench_opts *o)
{
	return o->main_run || o->sweep || o->fairness;
}

static int
start_main_target(bench_target *t, const bench_opts *o)
{
	char err[512];
	bench_target_init(t, o->target, o->bindir);
	t->nodes = o->nodes;
	t->warm = o->warm;
	t->pin = o->pin;
	t->verbose = o->verbose;
	if (o->target == TARGET_EXTERNAL) {
		snprintf(t->external_url, sizeof t->external_url, "%s", o->scheduler_url);
		t->ntenants = o->ext_ntenants;
		memcpy(t->tenants, o->ext_tenants, sizeof o->ext_tenants);
		if (o->admin_token)
			snprintf(t->admin_token, sizeof t->admin_token, "%s", o->admin_token);
	}
	if (geteuid() != 0 && (o->target == TARGET_DEV || o->target == TARGET_PROCS))
		fprintf(stderr, "kiln-bench: not root: the cluster's sandboxes will likely fail "
		                "(run as root)\n");
	if (bench_progress)
		fprintf(stderr, "kiln-bench: starting the %s target\n", t->ops->name);
	int r = bench_target_start(t, err, sizeof err);
	if (r < 0)
		fprintf(stderr, "kiln-bench: %s\n", err);
	return r;
}

static int
run_phases(bench_results *R, const bench_opts *o, const bench_workload *w)
{
	int rc = 0, r;
	if (needs_main_target(o)) {
		bench_target t;
		if ((r = start_main_target(&t, o)) < 0)
			return r;
		snprintf(R->target_desc, sizeof R->target_desc, "%s", t.desc);
		if (o->main_run && o->target == TARGET_TUNNEL)
			r = bench_phase_tunnel(R, o, &t, w);
		else if (o->main_run)
			r = bench_phase_main(R, o, &t, w);
		else
			r = 0;
		if (r < 0)
			rc = r;
		if (o->sweep && !bench_interrupted && (r = bench_phase_sweep(R, o, &t, w)) < 0)
			rc = r;
		if (o->fairness && !bench_interrupted &&
		    (r = bench_phase_fairness(R, o, &t, w)) < 0)
			rc = r;
		bench_target_stop(&t);
	} else {
		snprintf(R->target_desc, sizeof R->target_desc, "(none: only own clusters)");
	}
	/* These start their own clusters, after the main one is gone. */
	if (o->baselines && !bench_interrupted && (r = bench_phase_baselines(R, o)) < 0)
		rc = r;
	if (o->scaling && !bench_interrupted && (r = bench_phase_scaling(R, o, w)) < 0)
		rc = r;
	if (o->placement && !bench_interrupted && (r = bench_phase_placement(R, o)) < 0)
		rc = r;
	return rc;
}

static int
write_outputs(const bench_results *R, const bench_opts *o)
{
	char err[512];
	int rc = 0;
	if (!R->nruns && !R->nrows && !R->nplace)
		return 0; /* nothing ran: the error was said already */
	bench_print_table(R, stdout);
	if (R->swept)
		printf("\n%s\n", R->sizing);
	fflush(stdout);
	if (o->json && bench_write_json(R, o, o->json, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-bench: %s\n", err);
		rc = -EIO;
	}
	if (o->html && bench_write_html(R, o->html, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-bench: %s\n", err);
		rc = -EIO;
	}
	if (o->svg_dir && bench_write_svgs(R, o->svg_dir, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-bench: %s\n", err);
		rc = -EIO;
	}
	return rc;
}

static void
free_results(bench_results *R)
{
	for (int i = 0; i < R->nruns; i++)
		bench_metrics_free(R->runs[i].m);
}

int
main(int argc, char **argv)
{
	bench_opts o;
	const char *check = NULL;
	defaults(&o);
	int r = parse(argc, argv, &o, &check);
	if (r)
		return r > 0 ? 0 : 2;
	if (check)
		return bench_check_json(check, stdout) == 0 ? 0 : 1;

	bench_workload w;
	char err[512];
	r = o.trace ? bench_workload_trace(o.trace, &w, err, sizeof err)
	            : bench_workload_profile(o.profile, &w, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "kiln-bench: %s\n", err);
		return 2;
	}
	if (kl_log_level > KL_WARN)
		kl_log_level = KL_WARN;
	atexit(bench_children_kill_all);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	bench_results *R = calloc(1, sizeof *R);
	if (!R)
		return 1;
	R->main_run = -1;
	R->capacity_run = -1;
	snprintf(R->workload, sizeof R->workload, "%s", w.name);
	getloadavg(R->load_before, 3);
	struct timeval tv;
	gettimeofday(&tv, NULL);
	R->started_unix_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	uint64_t t0 = kl_now_ns();

	r = run_phases(R, &o, &w);

	R->wall_s = (double)(kl_now_ns() - t0) / 1e9;
	R->interrupted = bench_interrupted;
	getloadavg(R->load_after, 3);
	int wr = write_outputs(R, &o);
	free_results(R);
	free(R);
	bench_workload_free(&w);
	if (bench_interrupted)
		return 130;
	return r < 0 || wr < 0 ? 1 : 0;
}
