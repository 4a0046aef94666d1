/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Output: the human-readable table at the end of a run, the JSON result file
 * (jansson; the schema is documented in bench/README.md), and the checker
 * for it (--check-json), which the CI smoke test runs: the file must parse,
 * and every count must add up (sent = results + errors, in total, per tool
 * and per tenant; errors by kind sum to errors; result codes sum to
 * results). The checker never looks at a time.
 */
#include "bench.h"

#include "kl_util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define SCHEMA 1

static const char *
fmt_us(double us, char *buf, size_t n)
{
	if (isnan(us))
		snprintf(buf, n, "-");
	else if (us < 1000)
		snprintf(buf, n, "%.0fus", us);
	else if (us < 1e6)
		snprintf(buf, n, "%.2fms", us / 1000);
	else
		snprintf(buf, n, "%.2fs", us / 1e6);
	return buf;
}

static void
lat_row(FILE *f, const char *name, const bench_counts *c, const kl_hist *h)
{
	char a[16], b[16], d[16], e[16], g[16];
	fprintf(f, "  %-10s %8llu %8llu %7llu %8llu %9s %9s %9s %9s %9s\n", name,
	        (unsigned long long)c->sent, (unsigned long long)c->results,
	        (unsigned long long)c->errors, (unsigned long long)c->ok,
	        fmt_us(bench_us(h, 50), a, sizeof a), fmt_us(bench_us(h, 90), b, sizeof b),
	        fmt_us(bench_us(h, 99), d, sizeof d), fmt_us(bench_us(h, 99.9), e, sizeof e),
	        fmt_us((double)h->max / 1000, g, sizeof g));
}

static const char *
mode_of(const bench_load *L, char *buf, size_t n)
{
	if (L->closed)
		snprintf(buf, n, "closed loop");
	else if (L->replay)
		snprintf(buf, n, "replay (think times from the steps)");
	else
		snprintf(buf, n, "open loop, %.1f calls/s offered (Poisson)", L->rate);
	return buf;
}

static double
tput(const bench_run *r)
{
	return r->m->window_s > 0 ? (double)r->m->total.results / r->m->window_s : 0;
}

static void
print_run(const bench_run *r, FILE *f)
{
	const bench_metrics *m = r->m;
	char mode[96], a[16], b[16];
	fprintf(f, "\n== %s: %s, %.1f s measured, %d agents of %d tenant%s, %d node%s ==\n",
	        r->name, mode_of(&r->load, mode, sizeof mode), m->window_s, r->agents, r->ntenants,
	        r->ntenants == 1 ? "" : "s", r->nodes, r->nodes == 1 ? "" : "s");
	fprintf(f,
	        "  sent %llu = results %llu + errors %llu; ok %llu; throughput %.1f results/s; "
	        "due but never sent %llu\n",
	        (unsigned long long)m->total.sent, (unsigned long long)m->total.results,
	        (unsigned long long)m->total.errors, (unsigned long long)m->total.ok, tput(r),
	        (unsigned long long)m->unsent_due);
	fprintf(f, "  %-10s %8s %8s %7s %8s %9s %9s %9s %9s %9s\n", "tool", "sent", "results",
	        "errors", "ok", "p50", "p90", "p99", "p99.9", "max");
	lat_row(f, "all", &m->total, &m->all);
	for (int i = 0; i < BT_NTOOLS; i++)
		if (m->tools[i].sent)
			lat_row(f, bench_tool_names[i], &m->tools[i], &m->tool[i]);
	for (int i = 0; i < r->ntenants; i++) {
		char name[72];
		snprintf(name, sizeof name, "t:%s", r->tenant_names[i]);
		lat_row(f, name, &m->tenants[i], &m->tenant[i]);
	}
	if (r->via_tunnel)
		fprintf(f, "  through the tunnel: latencies measured by kiln-plane-sim at the "
		           "plane's side (tunnel, gateway and cluster included)\n");
	fprintf(f,
	        "  latency is from each call's intended send time; wait before the send (agent "
	        "busy, or sender late) p99 %s; from the actual send p99 %s\n",
	        fmt_us(bench_us(&m->lag, 99), a, sizeof a),
	        fmt_us(bench_us(&m->service, 99), b, sizeof b));
	if (m->nkinds) {
		fprintf(f, "  errors by kind:");
		for (int i = 0; i < m->nkinds; i++)
			fprintf(f, " %s %llu", m->kinds[i].name, (unsigned long long)m->kinds[i].n);
		fprintf(f, "\n");
	}
	fprintf(f, "  result codes:");
	for (int i = 0; i < m->ncodes; i++)
		fprintf(f, " %s %llu", m->codes[i].name, (unsigned long long)m->codes[i].n);
	fprintf(f,
	        "\n  sessions: %llu opened (%llu warm-pool hits, %llu cold starts, %llu failed), "
	        "open p50 %s p99 %s\n",
	        (unsigned long long)m->opens, (unsigned long long)m->opens_warm,
	        (unsigned long long)m->opens_cold, (unsigned long long)m->opens_failed,
	        fmt_us(bench_us(&m->open_lat, 50), a, sizeof a),
	        fmt_us(bench_us(&m->open_lat, 99), b, sizeof b));
	for (int i = 0; i < m->nnodes; i++) {
		const bench_node_stat *n = &m->nodes[i];
		fprintf(f, "  node %-12s %7llu calls (%4.1f%%)", n->id,
		        (unsigned long long)n->calls,
		        m->total.results ? 100.0 * (double)n->calls / (double)m->total.results : 0);
		if (n->samples && n->slots)
			fprintf(f, ", %.1f of %u slots busy on average (%.0f%%)",
			        n->running_sum / n->samples, n->slots,
			        100 * n->running_sum / n->samples / n->slots);
		if (n->cpu_s >= 0)
			fprintf(f, ", node process CPU %.0f%% of one core",
			        100 * n->cpu_s / m->window_s);
		fprintf(f, "\n");
	}
	fprintf(f, "  machine: all CPUs %.0f%% busy; tool processes used %.2f CPU-s",
	        m->host_busy >= 0 ? 100 * m->host_busy : NAN, (double)m->tool_cpu_us / 1e6);
	if (m->sched_cpu_s >= 0)
		fprintf(f, "; %s process %.0f%% of one core", m->proc0,
		        100 * m->sched_cpu_s / m->window_s);
	if (m->self_cpu_s >= 0)
		fprintf(f, "; kiln-bench %.0f%% of one core", 100 * m->self_cpu_s / m->window_s);
	if (m->gw_cpu_s >= 0)
		fprintf(f, "; kiln-gateway %.0f%% of one core", 100 * m->gw_cpu_s / m->window_s);
	if (m->sim_cpu_s >= 0)
		fprintf(f, "; kiln-plane-sim %.0f%% of one core", 100 * m->sim_cpu_s / m->window_s);
	fprintf(f, "; load average %.2f at the end\n", m->load1);
}

static void
print_sweep(const bench_results *R, FILE *f)
{
	char a[16], b[16];
	fprintf(f, "\n== sweep: offered load raised until p99 > %.0f ms ==\n", R->slo_ms);
	fprintf(f, "  %10s %10s %9s %9s %8s %8s  %s\n", "offered/s", "results/s", "p50", "p99",
	        "errors", "unsent", "within SLO");
	for (int i = R->sweep_first; i <= R->sweep_last && i < R->nruns; i++) {
		const bench_run *r = &R->runs[i];
		fprintf(f, "  %10.1f %10.1f %9s %9s %8llu %8llu  %s\n", r->load.rate, tput(r),
		        fmt_us(bench_us(&r->m->all, 50), a, sizeof a),
		        fmt_us(bench_us(&r->m->all, 99), b, sizeof b),
		        (unsigned long long)r->m->total.errors,
		        (unsigned long long)r->m->unsent_due, r->pass ? "yes" : "no");
	}
	if (R->capacity > 0)
		fprintf(f,
		        "  capacity: %.1f calls/s offered within the SLO (%.1f results/s) on %d "
		        "node%s: %.1f calls/s per node\n",
		        R->capacity, R->capacity_tput, R->sweep_nodes,
		        R->sweep_nodes == 1 ? "" : "s", R->per_node);
	fprintf(f, "  sizing: %s\n", R->sizing);
}

static void
print_rows(const bench_results *R, FILE *f)
{
	static const char *const verdicts[] = {"", "PASS", "MISS"};
	fprintf(f, "\n== baselines (same run, same machine) ==\n");
	fprintf(f, "  %-10s %-46s %12s %12s %-18s %8s %-12s %s\n", "section", "metric", "kiln",
	        "baseline", "baseline is", "ratio", "target", "result");
	for (int i = 0; i < R->nrows; i++) {
		const bench_row *r = &R->rows[i];
		char k[24], b[24], q[16];
		snprintf(k, sizeof k, "%.1f %s", r->kiln, r->unit);
		if (isnan(r->base))
			snprintf(b, sizeof b, "-");
		else
			snprintf(b, sizeof b, "%.1f %s", r->base, r->unit);
		if (isnan(r->ratio))
			snprintf(q, sizeof q, "-");
		else
			snprintf(q, sizeof q, "%.2fx", r->ratio);
		fprintf(f, "  %-10s %-46s %12s %12s %-18s %8s %-12s %s\n", r->section, r->metric, k,
		        b, r->base_what, q, r->target, verdicts[r->verdict]);
	}
}

static void
print_scaling(const bench_results *R, FILE *f)
{
	char a[16], b[16];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	fprintf(f,
	        "\n== scaling: closed loop against 1..N kiln-node processes on this machine ==\n");
	fprintf(f, "  %6s %10s %12s %9s %9s %10s\n", "nodes", "results/s", "per node/s", "p50",
	        "p99", "CPUs busy");
	double first = 0;
	for (int i = 0; i < R->nscaling; i++) {
		const bench_run *r = &R->runs[R->scaling_runs[i]];
		double t = tput(r);
		if (i == 0)
			first = t;
		fprintf(f, "  %6d %10.1f %12.1f %9s %9s %9.0f%%   (%.2fx of 1 node)\n", r->nodes, t,
		        t / r->nodes, fmt_us(bench_us(&r->m->all, 50), a, sizeof a),
		        fmt_us(bench_us(&r->m->all, 99), b, sizeof b),
		        r->m->host_busy >= 0 ? 100 * r->m->host_busy : NAN, first ? t / first : 0);
	}
	fprintf(f,
	        "  note: every node process, the scheduler and the benchmark share this machine's "
	        "%ld CPUs:\n  more node processes cannot add CPU; this shows the overhead and "
	        "balance of more nodes,\n  not the capacity of more machines.\n",
	        ncpu);
}

static void
print_fairness(const bench_results *R, FILE *f)
{
	const bench_run *b = &R->runs[R->fair_base], *x = &R->runs[R->fair_flood];
	char p[16], q[16];
	fprintf(f,
	        "\n== fairness: %s floods at %.0f calls/s (%.0fx its quota of %.0f/s); others at "
	        "%.0f/s ==\n",
	        R->flood_tenant, R->flood_rate, R->flood_rate / R->flood_quota, R->flood_quota,
	        b->load.tenant_rate[0]);
	fprintf(f, "  %-10s %14s %14s %8s %12s %12s\n", "tenant", "p99 no flood", "p99 flood",
	        "ratio", "errors", "results/s");
	for (int i = 0; i < b->ntenants; i++) {
		double p0 = bench_us(&b->m->tenant[i], 99), p1 = bench_us(&x->m->tenant[i], 99);
		fprintf(f, "  %-10s %14s %14s %7.2fx %12llu %12.1f%s\n", b->tenant_names[i],
		        fmt_us(p0, p, sizeof p), fmt_us(p1, q, sizeof q), p0 > 0 ? p1 / p0 : NAN,
		        (unsigned long long)x->m->tenants[i].errors,
		        (double)x->m->tenants[i].results / x->m->window_s,
		        strcmp(b->tenant_names[i], R->flood_tenant) ? "" : "  (the flood)");
	}
}

/* Failures other than quota refusals are not load: say so, and how to see why. */
static void
warnings(const bench_results *R, FILE *f)
{
	for (int i = 0; i < R->nruns; i++) {
		const bench_metrics *m = R->runs[i].m;
		uint64_t bad = 0;
		for (int k = 0; k < m->nkinds; k++)
			if (strcmp(m->kinds[k].name, "RESOURCE_EXHAUSTED"))
				bad += m->kinds[k].n;
		if (!bad || bad * 100 < m->total.sent)
			continue;
		fprintf(f, "\nwarning: run %s: %llu of %llu calls failed other than by a quota (",
		        R->runs[i].name, (unsigned long long)bad,
		        (unsigned long long)m->total.sent);
		for (int k = 0; k < m->nkinds; k++)
			fprintf(f, "%s%s %llu", k ? ", " : "", m->kinds[k].name,
			        (unsigned long long)m->kinds[k].n);
		fprintf(f, "): its latency describes a broken run, not capacity. Run again with "
		           "KILN_BENCH_KEEP=1 to keep the cluster's logs.\n");
	}
}

void
bench_print_table(const bench_results *R, FILE *f)
{
	fprintf(f,
	        "\nkiln-bench results: target %s; workload %s; %ld CPUs; load average %.2f %.2f "
	        "%.2f before, %.2f %.2f %.2f after\n",
	        R->target_desc, R->workload, sysconf(_SC_NPROCESSORS_ONLN), R->load_before[0],
	        R->load_before[1], R->load_before[2], R->load_after[0], R->load_after[1],
	        R->load_after[2]);
	for (int i = 0; i < R->nruns; i++)
		if (!strcmp(R->runs[i].phase, "main"))
			print_run(&R->runs[i], f);
	if (R->swept)
		print_sweep(R, f);
	if (R->nrows)
		print_rows(R, f);
	if (R->nscaling)
		print_scaling(R, f);
	if (R->fair)
		print_fairness(R, f);
	if (R->nplace) {
		fprintf(f,
		        "\n== placement: sched_place() over N registered nodes, one thread ==\n");
		for (int i = 0; i < R->nplace; i++)
			fprintf(f, "  %5d nodes: %10.0f placements/s (target 50,000/s: %s)\n",
			        R->place[i].nodes, R->place[i].per_s,
			        R->place[i].per_s >= 50000 ? "PASS" : "MISS");
	}
	warnings(R, f);
	if (R->interrupted)
		fprintf(f, "\n(interrupted: the results above are partial)\n");
}

/* ---- JSON ---- */

static json_t *
num(double v)
{
	return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

static json_t *
lat_json(const kl_hist *h)
{
	return json_pack("{s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "count", (json_int_t)h->count,
	                 "min_us", num(h->count ? (double)h->min / 1000 : 0), "p50_us",
	                 num(bench_us(h, 50)), "p90_us", num(bench_us(h, 90)), "p99_us",
	                 num(bench_us(h, 99)), "p999_us", num(bench_us(h, 99.9)), "max_us",
	                 num((double)h->max / 1000), "mean_us", num(kl_hist_mean(h) / 1000));
}

/* The CDF as [upper edge of a bucket in us, fraction at or below]. */
static json_t *
cdf_json(const kl_hist *h)
{
	json_t *a = json_array();
	uint64_t seen = 0;
	for (int i = 0; i < KL_HIST_BUCKETS && h->count; i++) {
		if (!h->b[i])
			continue;
		seen += h->b[i];
		json_array_append_new(a, json_pack("[f,f]", (double)kl_hist_bucket_high(i) / 1000,
		                                   (double)seen / (double)h->count));
	}
	return a;
}

static json_t *
counts_json(const bench_counts *c, const kl_hist *h, bool cdf)
{
	json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:o}", "sent", (json_int_t)c->sent, "results",
	                      (json_int_t)c->results, "errors", (json_int_t)c->errors, "ok",
	                      (json_int_t)c->ok, "latency_us", lat_json(h));
	if (cdf)
		json_object_set_new(o, "cdf", cdf_json(h));
	return o;
}

static json_t *
kinds_json(const bench_kind *v, int n)
{
	json_t *o = json_object();
	for (int i = 0; i < n; i++)
		json_object_set_new(o, v[i].name, json_integer((json_int_t)v[i].n));
	return o;
}

static json_t *
nodes_json(const bench_metrics *m)
{
	json_t *a = json_array();
	for (int i = 0; i < m->nnodes; i++) {
		const bench_node_stat *n = &m->nodes[i];
		double busy = n->samples && n->slots ? n->running_sum / n->samples / n->slots : NAN;
		json_array_append_new(
		        a,
		        json_pack("{s:s,s:I,s:o,s:i,s:o,s:o,s:o}", "id", n->id, "calls",
		                  (json_int_t)n->calls, "share",
		                  num(m->total.results ? (double)n->calls / (double)m->total.results
		                                       : NAN),
		                  "slots", (int)n->slots, "slots_busy_avg",
		                  num(n->samples ? n->running_sum / n->samples : NAN),
		                  "slot_utilization", num(busy), "process_cpu_cores",
		                  num(n->cpu_s >= 0 ? n->cpu_s / m->window_s : NAN)));
	}
	return a;
}

static json_t *
run_json(const bench_run *r)
{
	const bench_metrics *m = r->m;
	json_t *tools = json_object(), *tenants = json_object();
	for (int i = 0; i < BT_NTOOLS; i++)
		if (m->tools[i].sent)
			json_object_set_new(tools, bench_tool_names[i],
			                    counts_json(&m->tools[i], &m->tool[i], true));
	for (int i = 0; i < r->ntenants; i++)
		json_object_set_new(tenants, r->tenant_names[i],
		                    counts_json(&m->tenants[i], &m->tenant[i], false));
	const char *mode = r->load.closed ? "closed" : r->load.replay ? "replay" : "open";
	json_t *o = json_pack(
	        "{s:s,s:s,s:s,s:o,s:f,s:f,s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "name",
	        r->name, "phase", r->phase, "mode", mode, "offered_per_s",
	        num(r->load.closed || r->load.replay ? NAN : r->load.rate), "duration_s",
	        m->window_s, "warmup_s", r->load.warmup_s, "agents", r->agents, "tenant_count",
	        r->ntenants, "nodes", r->nodes, "sent", (json_int_t)m->total.sent, "results",
	        (json_int_t)m->total.results, "errors", (json_int_t)m->total.errors, "ok",
	        (json_int_t)m->total.ok, "unsent_due", (json_int_t)m->unsent_due,
	        "throughput_per_s", num(tput(r)), "latency_us", lat_json(&m->all), "send_lag_us",
	        lat_json(&m->lag), "service_us", lat_json(&m->service));
	json_object_set_new(o, "pass", json_boolean(r->pass));
	json_object_set_new(o, "measured_by",
	                    json_string(r->via_tunnel ? "kiln-plane-sim" : "kiln-bench"));
	json_object_set_new(o, "tools", tools);
	json_object_set_new(o, "tenants", tenants);
	json_object_set_new(o, "errors_by_kind", kinds_json(m->kinds, m->nkinds));
	json_object_set_new(o, "result_codes", kinds_json(m->codes, m->ncodes));
	json_object_set_new(
	        o, "sessions",
	        json_pack("{s:I,s:I,s:I,s:I,s:o}", "opened", (json_int_t)m->opens, "warm",
	                  (json_int_t)m->opens_warm, "cold", (json_int_t)m->opens_cold, "failed",
	                  (json_int_t)m->opens_failed, "open_latency_us", lat_json(&m->open_lat)));
	json_object_set_new(o, "nodes", nodes_json(m));
	json_object_set_new(o, "machine",
	                    json_pack("{s:o,s:o,s:f,s:s,s:o,s:o}", "cpus_busy", num(m->host_busy),
	                              "kiln_bench_cpu_cores",
	                              num(m->self_cpu_s >= 0 ? m->self_cpu_s / m->window_s : NAN),
	                              "tool_cpu_s", (double)m->tool_cpu_us / 1e6, "process",
	                              m->proc0, "process_cpu_cores",
	                              num(m->sched_cpu_s >= 0 ? m->sched_cpu_s / m->window_s : NAN),
	                              "load1", num(m->load1)));
	if (r->via_tunnel) {
		json_t *mach = json_object_get(o, "machine");
		json_object_set_new(mach, "gateway_cpu_cores",
		                    num(m->gw_cpu_s >= 0 ? m->gw_cpu_s / m->window_s : NAN));
		json_object_set_new(mach, "plane_sim_cpu_cores",
		                    num(m->sim_cpu_s >= 0 ? m->sim_cpu_s / m->window_s : NAN));
	}
	return o;
}

static json_t *
rows_json(const bench_results *R)
{
	static const char *const verdicts[] = {"info", "pass", "miss"};
	json_t *a = json_array();
	for (int i = 0; i < R->nrows; i++) {
		const bench_row *r = &R->rows[i];
		json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:o,s:o,s:s,s:o,s:s,s:s}",
		                                   "section", r->section, "metric", r->metric,
		                                   "unit", r->unit, "kiln", num(r->kiln),
		                                   "baseline", num(r->base), "baseline_is",
		                                   r->base_what, "ratio", num(r->ratio), "target",
		                                   r->target, "result", verdicts[r->verdict]));
	}
	return a;
}

static json_t *
host_json(const bench_results *R)
{
	struct utsname u;
	uname(&u);
	return json_pack("{s:i,s:s,s:s,s:[f,f,f],s:[f,f,f]}", "cpus",
	                 (int)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "machine",
	                 u.machine, "load_before", R->load_before[0], R->load_before[1],
	                 R->load_before[2], "load_after", R->load_after[0], R->load_after[1],
	                 R->load_after[2]);
}

static json_t *
options_json(const bench_opts *o)
{
	return json_pack("{s:s,s:i,s:i,s:f,s:b,s:b,s:f,s:f,s:f,s:f,s:I}", "workload",
	                 o->trace ? o->trace : o->profile, "tenants", o->tenants, "agents",
	                 o->agents, "rate", o->rate, "closed", o->closed, "replay", o->replay,
	                 "duration_s", o->duration_s, "warmup_s", o->warmup_s, "slo_ms", o->slo_ms,
	                 "headroom", o->headroom, "seed", (json_int_t)o->seed);
}

static void
phases_json(json_t *root, const bench_results *R)
{
	if (R->swept) {
		json_t *steps = json_array();
		for (int i = R->sweep_first; i <= R->sweep_last && i < R->nruns; i++)
			json_array_append_new(steps, json_string(R->runs[i].name));
		json_object_set_new(root, "sweep",
		                    json_pack("{s:f,s:o,s:o,s:o,s:i,s:o}", "slo_ms", R->slo_ms,
		                              "steps", steps, "capacity_offered_per_s",
		                              num(R->capacity), "capacity_results_per_s",
		                              num(R->capacity_tput), "nodes", R->sweep_nodes,
		                              "per_node_per_s", num(R->per_node)));
		json_object_set_new(root, "sizing",
		                    json_pack("{s:f,s:f,s:f,s:o,s:o,s:s}", "agents", R->size_agents,
		                              "calls_per_min", R->size_cpm, "slo_ms", R->slo_ms,
		                              "nodes", num(R->per_node > 0 ? R->size_nodes : NAN),
		                              "nodes_with_headroom",
		                              num(R->per_node > 0 ? R->size_nodes_headroom : NAN),
		                              "line", R->sizing));
	}
	if (R->nrows)
		json_object_set_new(root, "baselines", rows_json(R));
	if (R->nscaling) {
		json_t *a = json_array();
		for (int i = 0; i < R->nscaling; i++) {
			const bench_run *r = &R->runs[R->scaling_runs[i]];
			json_array_append_new(a, json_pack("{s:i,s:s,s:o}", "node_processes",
			                                   r->nodes, "run", r->name,
			                                   "results_per_s", num(tput(r))));
		}
		json_object_set_new(root, "scaling", a);
	}
	if (R->fair)
		json_object_set_new(root, "fairness",
		                    json_pack("{s:s,s:f,s:f,s:s,s:s}", "flood_tenant",
		                              R->flood_tenant, "flood_rate", R->flood_rate,
		                              "flood_quota", R->flood_quota, "baseline_run",
		                              R->runs[R->fair_base].name, "flood_run",
		                              R->runs[R->fair_flood].name));
	if (R->nplace) {
		json_t *a = json_array();
		for (int i = 0; i < R->nplace; i++)
			json_array_append_new(a,
			                      json_pack("{s:i,s:f,s:I}", "nodes", R->place[i].nodes,
			                                "placements_per_s", R->place[i].per_s,
			                                "placements", (json_int_t)R->place[i].n));
		json_object_set_new(root, "placement", a);
	}
}

int
bench_write_json(const bench_results *R, const bench_opts *o, const char *path, char *err,
                 size_t errlen)
{
	json_t *runs = json_array();
	for (int i = 0; i < R->nruns; i++)
		json_array_append_new(runs, run_json(&R->runs[i]));
	json_t *root =
	        json_pack("{s:s,s:s,s:i,s:I,s:f,s:b,s:s,s:s,s:o,s:o,s:o}", "tool", "kiln-bench",
	                  "version", KILN_VERSION, "schema", SCHEMA, "started_unix_ms",
	                  (json_int_t)R->started_unix_ms, "wall_s", R->wall_s, "interrupted",
	                  R->interrupted, "target", R->target_desc, "workload", R->workload, "host",
	                  host_json(R), "options", options_json(o), "runs", runs);
	phases_json(root, R);
	int r = json_dump_file(root, path, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
	json_decref(root);
	if (r < 0) {
		snprintf(err, errlen, "cannot write %s", path);
		return -EIO;
	}
	return 0;
}

/* ---- the checker ---- */

static int problems;

static void problem(FILE *f, const char *path, const char *fmt, ...) KL_PRINTF(3, 4);

static void
problem(FILE *f, const char *path, const char *fmt, ...)
{
	va_list ap;
	problems++;
	fprintf(f, "%s: ", path);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fprintf(f, "\n");
}

static long long
get_int(json_t *o, const char *key, const char *path, const char *where, FILE *f)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		problem(f, path, "%s: %s is missing or not a non-negative integer", where, key);
		return -1;
	}
	return json_integer_value(v);
}

/* sent == results + errors for one counts object; adds to the sums. */
static void
check_counts(json_t *o, const char *path, const char *where, long long sum[3], FILE *f)
{
	long long s = get_int(o, "sent", path, where, f), r = get_int(o, "results", path, where, f);
	long long e = get_int(o, "errors", path, where, f), ok = get_int(o, "ok", path, where, f);
	if (s < 0 || r < 0 || e < 0 || ok < 0)
		return;
	if (s != r + e)
		problem(f, path, "%s: sent %lld != results + errors %lld", where, s, r + e);
	if (ok > r)
		problem(f, path, "%s: ok %lld > results %lld", where, ok, r);
	if (!json_is_object(json_object_get(o, "latency_us")))
		problem(f, path, "%s: no latency_us", where);
	sum[0] += s;
	sum[1] += r;
	sum[2] += e;
}

static void
check_group(json_t *run, const char *key, const char *path, const char *rname, long long total[3],
            bool need_equal, FILE *f)
{
	json_t *g = json_object_get(run, key);
	char where[160];
	if (!json_is_object(g)) {
		problem(f, path, "run %s: %s is missing", rname, key);
		return;
	}
	long long sum[3] = {0, 0, 0};
	const char *k;
	json_t *v;
	json_object_foreach(g, k, v)
	{
		snprintf(where, sizeof where, "run %s %s %s", rname, key, k);
		check_counts(v, path, where, sum, f);
	}
	static const char *const names[] = {"sent", "results", "errors"};
	for (int i = 0; i < 3 && need_equal; i++)
		if (sum[i] != total[i])
			problem(f, path,
			        "run %s: %s summed over the group is %lld, the run says %lld",
			        rname, names[i], sum[i], total[i]);
}

static long long
sum_kinds(json_t *o)
{
	long long n = 0;
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) n += json_is_integer(v) ? json_integer_value(v) : 0;
	return n;
}

static void
check_run(json_t *run, size_t idx, const char *path, FILE *f)
{
	char rname[80];
	json_t *nm = json_object_get(run, "name");
	snprintf(rname, sizeof rname, "%s", json_is_string(nm) ? json_string_value(nm) : "?");
	if (!json_is_string(nm))
		problem(f, path, "run #%zu has no name", idx);
	long long total[3] = {0, 0, 0};
	char where[100];
	snprintf(where, sizeof where, "run %s", rname);
	check_counts(run, path, where, total, f);
	check_group(run, "tools", path, rname, total, true, f);
	/* Per tenant: equal too, every agent belongs to one tenant. */
	check_group(run, "tenants", path, rname, total, true, f);
	json_t *kinds = json_object_get(run, "errors_by_kind"),
	       *codes = json_object_get(run, "result_codes");
	if (!json_is_object(kinds) || sum_kinds(kinds) != total[2])
		problem(f, path, "run %s: errors_by_kind sum to %lld, errors are %lld", rname,
		        json_is_object(kinds) ? sum_kinds(kinds) : -1, total[2]);
	if (!json_is_object(codes) || sum_kinds(codes) != total[1])
		problem(f, path, "run %s: result_codes sum to %lld, results are %lld", rname,
		        json_is_object(codes) ? sum_kinds(codes) : -1, total[1]);
}

int
bench_check_json(const char *path, FILE *f)
{
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	problems = 0;
	if (!root) {
		fprintf(f, "%s: not well-formed JSON: line %d: %s\n", path, je.line, je.text);
		return -1;
	}
	json_t *runs = json_object_get(root, "runs");
	if (!json_is_object(root) || json_integer_value(json_object_get(root, "schema")) != SCHEMA)
		problem(f, path, "not a kiln-bench result (schema %lld, want %d)",
		        (long long)json_integer_value(json_object_get(root, "schema")), SCHEMA);
	if (!json_is_array(runs) || !json_array_size(runs))
		problem(f, path, "no runs");
	size_t i;
	json_t *run;
	long long sent = 0;
	json_array_foreach(runs, i, run)
	{
		if (!json_is_object(run)) {
			problem(f, path, "run #%zu is not an object", i);
			continue;
		}
		check_run(run, i, path, f);
		sent += json_integer_value(json_object_get(run, "sent"));
	}
	if (!problems)
		fprintf(f, "%s: well-formed; %zu run%s; %lld calls sent, every count adds up\n",
		        path, json_array_size(runs), json_array_size(runs) == 1 ? "" : "s", sent);
	json_decref(root);
	return problems ? -1 : 0;
}
