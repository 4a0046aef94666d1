/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench's shared types. The program is split by concern: targets
 * (bench_target.c: which cluster is driven and how it is started and
 * stopped), workloads (bench_workload.c: built-in agent profiles;
 * bench_trace.c: JSON-lines traces), the load driver (bench_driver.c:
 * agents, intended send times, asynchronous calls), metrics
 * (bench_metrics.c: log-linear histograms per tool and per tenant, error
 * kinds, node utilization), the phases built on the driver (bench_sweep.c:
 * capacity sweep and sizing, scaling, fairness), baselines measured in the
 * same run (bench_baseline.c), and output (bench_report.c: table, JSON, the
 * JSON checker; bench_html.c: the HTML report and its SVG charts).
 *
 * Threading: the main thread runs phases one after the other. During a load
 * phase the driver's sender thread, nng's callback threads and a sampler
 * thread share one bench_driver, guarded by its mutex. Everything else is
 * single-threaded.
 */
#ifndef KILN_BENCH_H
#define KILN_BENCH_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "kiln.h"
#include "kl_hist.h"

#define BENCH_MAX_TENANTS 16
#define BENCH_MAX_NODES   8
#define BENCH_MAX_KINDS   32
#define BENCH_MAX_RUNS    64

/* Set by SIGINT/SIGTERM: every loop stops at its next check. */
extern volatile sig_atomic_t bench_interrupted;
/* The progress line goes to stderr unless this is false. */
extern bool bench_progress;

/* ---- tools ---- */

enum bench_tool { BT_BASH, BT_EXEC, BT_READ, BT_WRITE, BT_EDIT, BT_GLOB, BT_GREP, BT_NTOOLS };
extern const char *const bench_tool_names[BT_NTOOLS];
/* The tool for a name, or -1. */
int bench_tool_of(const char *name);

/* ---- tenants and targets (bench_target.c) ---- */

typedef struct bench_tenant {
	char name[64];
	char token[256];
	uint32_t rate;         /* calls/s quota; 0: none or unknown */
	uint32_t max_inflight; /* 0: unknown */
	uint32_t max_sessions; /* 0: unknown */
} bench_tenant;

typedef enum bench_target_kind {
	TARGET_DEV,      /* `kiln dev --no-demo`, started by the benchmark (the default) */
	TARGET_PROCS,    /* kiln-scheduler + N kiln-node processes, started by the benchmark */
	TARGET_EXTERNAL, /* a scheduler someone else runs */
	TARGET_TUNNEL,   /* dev + kiln-gateway; each run through kiln-plane-sim (bench_tunnel.c) */
} bench_target_kind;

typedef struct bench_target bench_target;

/*
 * A target is a way to reach a cluster. Adding one (the tunnel through the
 * control-plane simulator) is a new ops table: start fills the outputs of
 * bench_target, stop undoes start. Both run on the main thread.
 */
typedef struct bench_target_ops {
	const char *name;
	int (*start)(bench_target *t, char *err, size_t errlen);
	void (*stop)(bench_target *t);
} bench_target_ops;

struct bench_target {
	const bench_target_ops *ops;
	bench_target_kind kind;
	/* inputs */
	char bindir[1024];      /* where kiln, kiln-scheduler and kiln-node are */
	int nodes;              /* nodes: threads of one `kiln dev`, or node processes */
	int warm;               /* warm sandboxes per node */
	bool pin;               /* pin node processes to CPUs (procs) */
	bool direct;            /* procs: node 0 also serves direct calls */
	char external_url[256]; /* external: the scheduler's client URL */
	bool verbose;           /* keep the cluster's logs on stderr */
	/* outputs */
	char client_url[256];
	char admin_token[256];
	char direct_url[256]; /* node 0's direct listener, or "" */
	int ntenants;
	bench_tenant tenants[BENCH_MAX_TENANTS];
	int npids;
	pid_t pids[1 + BENCH_MAX_NODES]; /* [0]: kiln dev or kiln-scheduler; then nodes */
	int node_pid0;                   /* index of the first node process in pids, or -1 */
	char dir[256];                   /* temporary directory: config, tokens, logs */
	pid_t gw_pid;                    /* tunnel: kiln-gateway, or 0 */
	int plane_port;                  /* tunnel: where kiln-plane-sim listens for it */
	char desc[256];                  /* one line for the report */
	bool started;
};

/* Prepare t for kind (no processes yet). bindir: the directory of kiln-bench. */
void bench_target_init(bench_target *t, bench_target_kind kind, const char *bindir);
/* Start the target and wait until it serves clients with every node ready.
 * 0, or -errno with a message in err. */
int bench_target_start(bench_target *t, char *err, size_t errlen);
/* Stop every process the target started and remove its directory. Idempotent. */
void bench_target_stop(bench_target *t);
/* The tenant named name, or NULL. */
const bench_tenant *bench_target_tenant(const bench_target *t, const char *name);
/* Kill every child process still registered (atexit and signal paths). */
void bench_children_kill_all(void);
/* A free TCP port on 127.0.0.1 (bound and released: a small race remains). */
int bench_free_port(void);
/* Spawn argv (registered: killed at exit) with stdout and stderr to log
 * (NULL: inherit), pinned to cpu (-1: not). The pid, or -errno. */
pid_t bench_spawn(char *const *argv, const char *log, int cpu);
/* -1 while child p runs; once it exited (reaped here), its exit status, or
 * 128 + the signal that killed it. */
int bench_child_exited(pid_t p);
/* SIGTERM, then SIGKILL after timeout_ms; reaps it. */
void bench_stop_pid(pid_t p, int timeout_ms);
/* CPU time (user+system, in seconds) of process pid so far; -1 when it is gone. */
double bench_proc_cpu_s(pid_t pid);

/* ---- workloads (bench_workload.c, bench_trace.c) ---- */

typedef struct bench_step {
	enum bench_tool tool;
	char *text;  /* bash: command; read/write/edit/glob/grep: file_path or pattern */
	char *text2; /* write: content; edit: old_string; glob/grep: path */
	char *text3; /* edit: new_string */
	char **argv; /* exec: NULL-terminated */
	int argc;
	int64_t range[2]; /* read: view_range when nrange == 2 */
	int nrange;
	bool replace_all;
	bool flip;           /* edit: swap old and new on every other cycle */
	uint32_t think_ms;   /* the gap before this call in --replay mode */
	uint32_t timeout_ms; /* bash/exec timeout; 0: the tool's default */
} bench_step;

/* One agent's behaviour: setup calls (not measured), then steps, cycled. */
typedef struct bench_script {
	char name[64];
	char tenant[64]; /* traces may name a tenant; "" = assigned round-robin */
	bench_step *setup;
	int nsetup;
	bench_step *steps;
	int nsteps;
} bench_script;

typedef struct bench_workload {
	char name[256]; /* the profile name, or "trace:PATH" */
	bench_script *scripts;
	int nscripts;
} bench_workload;

/* Storage for one encoded call: bench_step_call points tc into it. */
typedef struct bench_call_buf {
	Kiln__BashInput bash;
	Kiln__ExecInput exec;
	Kiln__ReadInput read;
	Kiln__WriteInput write;
	Kiln__EditInput edit;
	Kiln__GlobInput glob;
	Kiln__GrepInput grep;
	int64_t range[2];
} bench_call_buf;

/* The names of the built-in profiles, NULL-terminated, and one line on each. */
extern const char *const bench_profile_names[];
extern const char *const bench_profile_help[];
int bench_workload_profile(const char *name, bench_workload *w, char *err, size_t errlen);
int bench_workload_trace(const char *path, bench_workload *w, char *err, size_t errlen);
void bench_workload_free(bench_workload *w);
/* Fill tc for step s at the agent's cycle (edits flip on odd cycles). tc
 * points into buf and into s; both must outlive tc's use. */
void bench_step_call(const bench_step *s, uint64_t cycle, bench_call_buf *buf, Kiln__ToolCall *tc);

/* ---- metrics (bench_metrics.c) ---- */

typedef struct bench_counts {
	uint64_t sent;    /* calls handed to libkiln with an intended time in the window */
	uint64_t results; /* a ToolResult came back (whatever its code) */
	uint64_t errors;  /* no result: refused by the scheduler, or no answer */
	uint64_t ok;      /* results with code OK, no tool error and exit code 0 */
} bench_counts;

typedef struct bench_kind {
	char name[48];
	uint64_t n;
} bench_kind;

typedef struct bench_node_stat {
	char id[128];
	uint64_t calls;                 /* results that named this node */
	uint32_t slots;                 /* from kiln_status */
	double running_sum;             /* sum over status samples of `running` */
	uint32_t samples;               /* status samples that saw this node */
	uint64_t done_first, done_last; /* calls_done at the first and last sample */
	double cpu_s;                   /* node process CPU during the window; -1: unknown */
} bench_node_stat;

typedef struct bench_metrics {
	kl_hist all;
	kl_hist tool[BT_NTOOLS];
	kl_hist tenant[BENCH_MAX_TENANTS];
	kl_hist lag;     /* actual send - intended send */
	kl_hist service; /* result - actual send: what the latency would be with CO */
	bench_counts total;
	bench_counts tools[BT_NTOOLS];
	bench_counts tenants[BENCH_MAX_TENANTS];
	int nkinds;
	bench_kind kinds[BENCH_MAX_KINDS]; /* errors by kind */
	int ncodes;
	bench_kind codes[BENCH_MAX_KINDS]; /* results by code (OK, TOOL_ERROR, exit!=0 ...) */
	uint64_t unsent_due;  /* due in the window, never sent before the drain ended */
	uint64_t tool_cpu_us; /* cpu_usec of every result */
	/* sessions opened for this run's agents */
	uint64_t opens, opens_warm, opens_cold, opens_failed;
	kl_hist open_lat;
	/* nodes */
	int nnodes;
	bench_node_stat nodes[BENCH_MAX_NODES * 2];
	double sched_cpu_s; /* scheduler (or kiln dev) process CPU in the window; -1: unknown */
	char proc0[24];     /* what sched_cpu_s measured: "kiln-scheduler" or "kiln dev" */
	double self_cpu_s;  /* kiln-bench itself (the clients) in the window; -1: unknown */
	double gw_cpu_s;    /* tunnel: kiln-gateway's CPU in the window; -1: unknown */
	double sim_cpu_s;   /* tunnel: kiln-plane-sim's (the clients'); -1: unknown */
	/* machine */
	double host_busy; /* share of all CPUs busy in the window, 0..1; -1: unknown */
	double load1;     /* load average at the end */
	double window_s;  /* the measured window */
} bench_metrics;

bench_metrics *bench_metrics_new(void);
void bench_metrics_free(bench_metrics *m);
/* Add n to the kind named name (creates it; the last slot collects overflow). */
void bench_kind_add(bench_kind *v, int *nv, const char *name, uint64_t n);
bench_node_stat *bench_metrics_node(bench_metrics *m, const char *id);
/* Percentile in microseconds. */
double bench_us(const kl_hist *h, double p);
/* /proc/stat busy and total jiffies. */
void bench_cpu_sample(uint64_t *busy, uint64_t *total);
double bench_load1(void);

/* ---- the load driver (bench_driver.c) ---- */

typedef struct bench_agent bench_agent;

/* The agents of a run: sessions opened, setup done, ready to be driven. */
typedef struct bench_agents {
	int n;
	bench_agent *v;
	int ntenants;
	kiln_client *clients[BENCH_MAX_TENANTS]; /* one per tenant (its token) */
	const bench_tenant *tenants[BENCH_MAX_TENANTS];
	/* what opening them cost */
	uint64_t opens, opens_warm, opens_cold, opens_failed;
	kl_hist open_lat;
	struct drv *drv; /* the last run's driver (private to bench_driver.c) */
} bench_agents;

typedef struct bench_agents_cfg {
	const bench_workload *w;
	int ntenants;
	const bench_tenant *tenants[BENCH_MAX_TENANTS];
	int agents_per_tenant[BENCH_MAX_TENANTS];
	uint32_t call_timeout_ms;
	uint64_t seed;
} bench_agents_cfg;

/* Connect, open one session per agent and run each script's setup.
 * Agents whose session fails to open are left out (counted in opens_failed);
 * fails only when no agent at all could start. */
int bench_agents_open(bench_agents *ag, const bench_target *t, const bench_agents_cfg *cfg,
                      char *err, size_t errlen);
/* Close the sessions and the clients. Accepts a zeroed struct. */
void bench_agents_close(bench_agents *ag);

typedef struct bench_load {
	const char *label; /* for the progress line */
	double rate;       /* open loop: calls/s offered by all agents together */
	double tenant_rate[BENCH_MAX_TENANTS]; /* > 0: this tenant's own rate instead */
	/* This tenant's agents send on time even while their calls are in flight
	 * (the scheduler queues them per session): a flood, not an agent. */
	bool pipelined[BENCH_MAX_TENANTS];
	bool closed;       /* closed loop: every agent sends again as soon as it has a result */
	bool replay;       /* intended times from the steps' think_ms */
	double duration_s; /* the measured window */
	double warmup_s;   /* driven but not measured, before the window */
	double drain_s;    /* after the window: how long due calls may still be sent */
	uint64_t seed;
} bench_load;

/* Drive the agents with load L and fill m. Returns 0, or -EINTR when
 * interrupted (m then holds what was measured). t is used for status
 * samples (admin token) and process CPU. */
int bench_drive(bench_agents *ag, const bench_target *t, const bench_load *L, bench_metrics *m);

/* ---- results and phases ---- */

typedef struct bench_run {
	char name[64];
	char phase[16]; /* main | sweep | scaling | fairness */
	bench_load load;
	int agents, ntenants;
	char tenant_names[BENCH_MAX_TENANTS][64];
	int nodes;
	bench_metrics *m;
	bool pass;       /* sweep: within the SLO */
	bool via_tunnel; /* latencies measured by kiln-plane-sim at the plane's side */
} bench_run;

typedef struct bench_row {
	char section[16];
	char metric[96];
	char unit[8];
	double kiln, base, ratio; /* NaN: not applicable */
	char base_what[48];
	char target[24];
	int verdict; /* 0 info, 1 pass, 2 miss */
} bench_row;

typedef struct bench_place_row {
	int nodes;
	double per_s;
	uint64_t n;
} bench_place_row;

typedef struct bench_opts bench_opts;

typedef struct bench_results {
	int nruns;
	bench_run runs[BENCH_MAX_RUNS];
	int main_run; /* index or -1 */
	/* sweep */
	bool swept;
	double slo_ms;
	int sweep_first, sweep_last; /* run indices */
	double capacity;             /* highest offered rate within the SLO, calls/s; 0: none */
	double capacity_tput;        /* achieved throughput there */
	int capacity_run;
	int sweep_nodes;
	double per_node;
	char sizing[1024];
	double size_agents, size_cpm, size_nodes, size_nodes_headroom;
	/* baselines */
	int nrows;
	bench_row rows[48];
	/* scaling */
	int nscaling;
	int scaling_runs[8];
	/* fairness */
	bool fair;
	int fair_base, fair_flood;
	char flood_tenant[64];
	double flood_rate, flood_quota;
	/* placement */
	int nplace;
	bench_place_row place[8];
	/* context */
	char target_desc[256];
	char workload[256];
	double load_before[3], load_after[3];
	uint64_t started_unix_ms;
	double wall_s;
	bool interrupted;
} bench_results;

struct bench_opts {
	bench_target_kind target;
	char bindir[1024];
	const char *scheduler_url;
	const char *admin_token;
	int ext_ntenants;
	bench_tenant ext_tenants[BENCH_MAX_TENANTS];
	int nodes, node_procs, warm;
	bool pin, verbose;
	/* workload */
	const char *profile, *trace;
	int tenants, agents;
	/* load */
	double rate, duration_s, warmup_s, drain_s;
	bool closed, replay;
	uint32_t call_timeout_ms;
	uint64_t seed;
	/* phases */
	bool main_run, sweep, baselines, scaling, fairness, placement, smoke;
	double slo_ms, sweep_start, sweep_factor, sweep_max, sweep_step_s;
	int sweep_refine;
	double size_agents, size_cpm, headroom;
	int baseline_iters;
	double baseline_tput_s;
	int scaling_counts[8], nscaling;
	double scaling_s;
	const char *flood_tenant;
	double flood_factor, fair_rate, fair_s;
	/* output */
	const char *json, *html, *svg_dir;
};

/* bench_sweep.c */
int bench_phase_main(bench_results *R, const bench_opts *o, bench_target *t,
                     const bench_workload *w);
int bench_phase_sweep(bench_results *R, const bench_opts *o, bench_target *t,
                      const bench_workload *w);
int bench_phase_scaling(bench_results *R, const bench_opts *o, const bench_workload *w);
int bench_phase_fairness(bench_results *R, const bench_opts *o, bench_target *t,
                         const bench_workload *w);
/* A new run slot (NULL when full). */
bench_run *bench_run_add(bench_results *R, const char *name, const char *phase);
/* Fill run bookkeeping from agents and load. */
void bench_run_describe(bench_run *r, const bench_agents *ag, const bench_load *L, int nodes);

/* bench_tunnel.c: the tunnel target's gateway (after its kiln dev is up) and
 * its main run, a trace through kiln-plane-sim. */
int bench_tunnel_gateway_start(bench_target *t, char *err, size_t errlen);
int bench_phase_tunnel(bench_results *R, const bench_opts *o, bench_target *t,
                       const bench_workload *w);

/* bench_baseline.c */
int bench_phase_baselines(bench_results *R, const bench_opts *o);
int bench_phase_placement(bench_results *R, const bench_opts *o);
void bench_add_row(bench_results *R, const char *section, const char *metric, const char *unit,
                   double kiln, double base, const char *base_what, double ratio,
                   const char *target, int verdict);

/* bench_report.c */
void bench_print_table(const bench_results *R, FILE *f);
int bench_write_json(const bench_results *R, const bench_opts *o, const char *path, char *err,
                     size_t errlen);
/* Validate a result file: well-formed, and every count adds up. Prints what
 * is wrong to f. 0 when valid, -1 otherwise. */
int bench_check_json(const char *path, FILE *f);

/* bench_html.c */
int bench_write_html(const bench_results *R, const char *path, char *err, size_t errlen);
/* Write the charts as standalone SVG files into dir. */
int bench_write_svgs(const bench_results *R, const char *dir, char *err, size_t errlen);

#endif
