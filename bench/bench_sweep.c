/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The phases built on the load driver. main: one run at the offered rate
 * (or closed loop). sweep: the offered load rises geometrically until p99
 * passes the SLO (or throughput falls behind, or errors appear), then a few
 * bisection steps narrow the knee; the highest passing rate divided by the
 * number of nodes is the capacity per node, and the sizing line scales it
 * to the operator's agents. scaling: the same workload closed-loop against
 * 1, 2 and 4 node processes on this machine. fairness: one tenant floods at
 * a multiple of its rate quota while the others run as before; their p99 is
 * compared with a run without the flood.
 */
#include "bench.h"

#include "kl_util.h"

#include <errno.h>
#include <math.h>
#include <string.h>

bench_run *
bench_run_add(bench_results *R, const char *name, const char *phase)
{
	if (R->nruns >= BENCH_MAX_RUNS)
		return NULL;
	bench_run *r = &R->runs[R->nruns++];
	memset(r, 0, sizeof *r);
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->phase, sizeof r->phase, "%s", phase);
	return r;
}

void
bench_run_describe(bench_run *r, const bench_agents *ag, const bench_load *L, int nodes)
{
	r->load = *L;
	r->load.label = NULL;
	r->agents = ag->n;
	r->ntenants = ag->ntenants;
	for (int i = 0; i < ag->ntenants; i++)
		snprintf(r->tenant_names[i], sizeof r->tenant_names[i], "%s", ag->tenants[i]->name);
	r->nodes = nodes;
	bench_metrics *m = r->m;
	m->opens = ag->opens;
	m->opens_warm = ag->opens_warm;
	m->opens_cold = ag->opens_cold;
	m->opens_failed = ag->opens_failed;
	kl_hist_merge(&m->open_lat, &ag->open_lat);
}

/* Agents for the first n tenants of t, per_tenant each (capped by quotas). */
static int
open_agents(bench_agents *ag, const bench_target *t, const bench_opts *o, const bench_workload *w,
            int ntenants, int per_tenant, char *err, size_t errlen)
{
	bench_agents_cfg cfg = {.w = w, .call_timeout_ms = o->call_timeout_ms, .seed = o->seed};
	if (ntenants > t->ntenants) {
		snprintf(err, errlen, "%d tenants asked, the target has %d", ntenants, t->ntenants);
		return -EINVAL;
	}
	cfg.ntenants = ntenants;
	for (int i = 0; i < ntenants; i++) {
		cfg.tenants[i] = &t->tenants[i];
		int n = per_tenant;
		if (t->tenants[i].max_sessions && (uint32_t)n > t->tenants[i].max_sessions)
			n = (int)t->tenants[i].max_sessions;
		cfg.agents_per_tenant[i] = n;
	}
	return bench_agents_open(ag, t, &cfg, err, errlen);
}

static bench_load
load_of(const bench_opts *o, const char *label)
{
	bench_load L = {.label = label,
	                .rate = o->rate,
	                .closed = o->closed,
	                .replay = o->replay,
	                .duration_s = o->duration_s,
	                .warmup_s = o->warmup_s,
	                .drain_s = o->drain_s,
	                .seed = o->seed};
	return L;
}

int
bench_phase_main(bench_results *R, const bench_opts *o, bench_target *t, const bench_workload *w)
{
	char err[512];
	bench_agents ag;
	int r = open_agents(&ag, t, o, w, o->tenants, o->agents, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "kiln-bench: main run: %s\n", err);
		return r;
	}
	bench_run *run = bench_run_add(R, "main", "main");
	bench_load L = load_of(o, "main");
	run->m = bench_metrics_new();
	r = bench_drive(&ag, t, &L, run->m);
	bench_run_describe(run, &ag, &L, t->nodes);
	bench_agents_close(&ag);
	R->main_run = R->nruns - 1;
	return r;
}

/* ---- sweep ---- */

static double
step_tput(const bench_run *r)
{
	return r->m->window_s > 0 ? (double)r->m->total.results / r->m->window_s : 0;
}

static bool
step_pass(const bench_run *r, double slo_ms, char *why, size_t n)
{
	const bench_metrics *m = r->m;
	double p99 = bench_us(&m->all, 99) / 1000;
	double sent = (double)m->total.sent;
	/* Keeping up is judged by the calls themselves, not by the results/s of
	 * a short window (a Poisson count over 5 s varies by a few percent):
	 * every call due in the window was sent, and came back in time. */
	if (!m->total.results)
		snprintf(why, n, "no result");
	else if (p99 > slo_ms)
		snprintf(why, n, "p99 %.1f ms > SLO %.0f ms", p99, slo_ms);
	else if ((double)m->total.errors > 0.01 * sent)
		snprintf(why, n, "errors %.1f%%", 100.0 * (double)m->total.errors / sent);
	else if ((double)m->unsent_due > 0.01 * sent)
		snprintf(why, n, "%llu calls never sent", (unsigned long long)m->unsent_due);
	else {
		snprintf(why, n, "p99 %.1f ms", p99);
		return true;
	}
	return false;
}

static int
sweep_step(bench_results *R, const bench_opts *o, bench_target *t, bench_agents *ag, double rate,
           bool *pass)
{
	char name[64], why[96];
	snprintf(name, sizeof name, "sweep-%.0f", rate);
	bench_run *run = bench_run_add(R, name, "sweep");
	if (!run)
		return -ENOSPC;
	bench_load L = load_of(o, name);
	L.rate = rate;
	L.closed = L.replay = false;
	L.duration_s = o->sweep_step_s;
	L.warmup_s = o->sweep_step_s >= 4 ? 1 : 0.5;
	L.drain_s = o->sweep_step_s;
	run->m = bench_metrics_new();
	int r = bench_drive(ag, t, &L, run->m);
	bench_run_describe(run, ag, &L, t->nodes);
	run->pass = *pass = r == 0 && step_pass(run, o->slo_ms, why, sizeof why);
	if (bench_progress)
		fprintf(stderr, "kiln-bench: sweep %.0f calls/s: %s (%s)\n", rate,
		        run->pass ? "within the SLO" : "past the SLO", why);
	return r;
}

static void
sizing(bench_results *R, const bench_opts *o, const bench_target *t, const bench_workload *w)
{
	double demand = o->size_agents * o->size_cpm / 60.0;
	R->size_agents = o->size_agents;
	R->size_cpm = o->size_cpm;
	if (R->per_node <= 0) {
		snprintf(R->sizing, sizeof R->sizing,
		         "no sizing: no offered load met p99 under %.0f ms (lower --sweep-start)",
		         o->slo_ms);
		return;
	}
	R->size_nodes = ceil(demand / R->per_node);
	R->size_nodes_headroom = ceil(demand / (R->per_node * (1 - o->headroom)));
	snprintf(R->sizing, sizeof R->sizing,
	         "For %.0f agents at %.0f calls/min each (%.1f calls/s) with p99 under %.0f ms: "
	         "%.0f node%s like this one (%.0f with %.0f%% headroom); measured %.1f calls/s "
	         "per node at the SLO (%.120s workload; %.200s)",
	         o->size_agents, o->size_cpm, demand, o->slo_ms, R->size_nodes,
	         R->size_nodes == 1 ? "" : "s", R->size_nodes_headroom, o->headroom * 100,
	         R->per_node, w->name, t->desc);
}

int
bench_phase_sweep(bench_results *R, const bench_opts *o, bench_target *t, const bench_workload *w)
{
	char err[512];
	bench_agents ag;
	int r = open_agents(&ag, t, o, w, o->tenants, o->agents, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "kiln-bench: sweep: %s\n", err);
		return r;
	}
	R->swept = true;
	R->slo_ms = o->slo_ms;
	R->sweep_first = R->nruns;
	R->capacity_run = -1;
	R->sweep_nodes = t->nodes;
	double lo = 0, hi = 0;
	bool pass = false;
	for (double rate = o->sweep_start; rate <= o->sweep_max * 1.0001 && r == 0;
	     rate *= o->sweep_factor) {
		r = sweep_step(R, o, t, &ag, rate, &pass);
		if (r == 0 && pass) {
			lo = rate;
			R->capacity_run = R->nruns - 1;
		} else {
			hi = rate;
			break;
		}
	}
	for (int i = 0; r == 0 && lo > 0 && hi > 0 && i < o->sweep_refine; i++) {
		double mid = sqrt(lo * hi);
		if (mid / lo < 1.05)
			break;
		r = sweep_step(R, o, t, &ag, mid, &pass);
		if (r == 0 && pass) {
			lo = mid;
			R->capacity_run = R->nruns - 1;
		} else {
			hi = mid;
		}
	}
	R->sweep_last = R->nruns - 1;
	bench_agents_close(&ag);
	R->capacity = lo;
	if (R->capacity_run >= 0)
		R->capacity_tput = step_tput(&R->runs[R->capacity_run]);
	/* Per node from the offered rate that met the SLO: the results/s of one
	 * window is that rate plus Poisson noise. */
	R->per_node = lo > 0 ? lo / (t->nodes ? t->nodes : 1) : 0;
	sizing(R, o, t, w);
	return r;
}

/* ---- scaling ---- */

int
bench_phase_scaling(bench_results *R, const bench_opts *o, const bench_workload *w)
{
	int r = 0;
	for (int i = 0; i < o->nscaling && r == 0 && !bench_interrupted; i++) {
		int n = o->scaling_counts[i];
		char err[512], name[64];
		bench_target t;
		bench_target_init(&t, TARGET_PROCS, o->bindir);
		t.nodes = n;
		t.warm = o->warm;
		t.pin = o->pin;
		t.verbose = o->verbose;
		if (bench_progress)
			fprintf(stderr,
			        "kiln-bench: scaling: starting kiln-scheduler + %d kiln-node\n", n);
		if ((r = bench_target_start(&t, err, sizeof err)) < 0) {
			fprintf(stderr, "kiln-bench: scaling with %d nodes: %s\n", n, err);
			break;
		}
		bench_agents ag;
		if ((r = open_agents(&ag, &t, o, w, 1, o->agents, err, sizeof err)) < 0) {
			fprintf(stderr, "kiln-bench: scaling with %d nodes: %s\n", n, err);
			bench_target_stop(&t);
			break;
		}
		snprintf(name, sizeof name, "scaling-%d", n);
		bench_run *run = bench_run_add(R, name, "scaling");
		bench_load L = load_of(o, name);
		L.closed = true;
		L.replay = false;
		L.duration_s = o->scaling_s;
		L.warmup_s = 1;
		L.drain_s = 5;
		run->m = bench_metrics_new();
		r = bench_drive(&ag, &t, &L, run->m);
		bench_run_describe(run, &ag, &L, n);
		R->scaling_runs[R->nscaling++] = R->nruns - 1;
		bench_agents_close(&ag);
		bench_target_stop(&t);
	}
	return r;
}

/* ---- fairness ---- */

static int
fair_run(bench_results *R, const bench_opts *o, bench_target *t, bench_agents *ag, const char *name,
         int flood, double flood_rate)
{
	bench_run *run = bench_run_add(R, name, "fairness");
	if (!run)
		return -ENOSPC;
	bench_load L = load_of(o, name);
	L.closed = L.replay = false;
	L.duration_s = o->fair_s;
	L.warmup_s = 1;
	L.drain_s = 5;
	for (int i = 0; i < ag->ntenants; i++)
		L.tenant_rate[i] = o->fair_rate;
	if (flood >= 0) {
		L.tenant_rate[flood] = flood_rate;
		L.pipelined[flood] = true;
	}
	L.rate = 0;
	for (int i = 0; i < ag->ntenants; i++)
		L.rate += L.tenant_rate[i];
	run->m = bench_metrics_new();
	int r = bench_drive(ag, t, &L, run->m);
	bench_run_describe(run, ag, &L, t->nodes);
	return r;
}

int
bench_phase_fairness(bench_results *R, const bench_opts *o, bench_target *t,
                     const bench_workload *w)
{
	char err[512];
	int nt = t->ntenants < 3 ? t->ntenants : 3;
	int flood = -1;
	for (int i = 0; i < nt; i++)
		if (o->flood_tenant ? !strcmp(t->tenants[i].name, o->flood_tenant)
		                    : t->tenants[i].rate > 0)
			flood = i;
	if (nt < 2 || flood < 0 || !t->tenants[flood].rate) {
		fprintf(stderr,
		        "kiln-bench: fairness: needs two tenants or more, one of them (%s) "
		        "with a rate quota; this target has %d\n",
		        o->flood_tenant ? o->flood_tenant : "any", t->ntenants);
		return -EINVAL;
	}
	bench_agents ag;
	int per = o->agents < 8 ? o->agents : 8;
	int r = open_agents(&ag, t, o, w, nt, per, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "kiln-bench: fairness: %s\n", err);
		return r;
	}
	R->fair = true;
	snprintf(R->flood_tenant, sizeof R->flood_tenant, "%s", t->tenants[flood].name);
	R->flood_quota = t->tenants[flood].rate;
	R->flood_rate = R->flood_quota * o->flood_factor;
	r = fair_run(R, o, t, &ag, "fair-baseline", -1, 0);
	R->fair_base = R->nruns - 1;
	if (r == 0) {
		r = fair_run(R, o, t, &ag, "fair-flood", flood, R->flood_rate);
		R->fair_flood = R->nruns - 1;
	} else {
		R->fair = false;
	}
	bench_agents_close(&ag);
	return r;
}
