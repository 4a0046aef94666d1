/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The load driver. Each agent is one session making one call at a time, as
 * a real agent does. Every call has an intended send time fixed in advance:
 * open loop, the previous call's intended time plus an exponential gap
 * (Poisson arrivals at the agent's share of the offered rate); replay, plus
 * the step's think_ms; closed loop, the moment the previous result came
 * back. A sender thread keeps the idle agents in a heap ordered by intended
 * time and starts each call with kiln_call_async when its time comes; if
 * the agent's previous call is still running, the call goes out as soon as
 * that one returns. Latency is always measured from the intended time, so a
 * slow cluster cannot hide the calls it delayed (no coordinated omission,
 * as in wrk2). Calls due in the window are still sent after it ends, for
 * at most drain_s; the ones that never went out are counted as unsent_due.
 * Results arrive on nng threads and are recorded under the driver's mutex.
 * A sampler thread prints the progress line and samples kiln_status, the
 * cluster processes' CPU time and /proc/stat at the window's edges.
 */
#include "bench.h"

#include "kl_clock.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct bench_agent {
	int idx, tenant;
	kiln_client *k;
	char session[96];
	const bench_script *sc;
	uint64_t step;        /* index of the next step (the cycle is step / nsteps) */
	uint64_t next_ns;     /* intended send time of the next call */
	uint64_t intended_ns; /* of the last call sent */
	bool pipelined;       /* sends on time even with calls in flight (a flood) */
	uint64_t rng;
	double gap_ns; /* open loop: mean gap between this agent's calls */
	struct drv *d;
};

/* One call in flight: what its result is measured against. */
typedef struct bench_call {
	bench_agent *a;
	uint64_t intended_ns, sent_ns;
	int tool;
	bool measured;
} bench_call;

typedef struct drv {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bench_agents *ag;
	const bench_target *t;
	const bench_load *L;
	bench_metrics *m;
	bench_agent **heap;
	int nheap;
	uint64_t t0_ns, win_ns, end_ns, drain_ns;
	uint32_t inflight;
	bool finished; /* the sender is done: the sampler stops */
	/* sampler */
	pthread_t sampler;
	uint64_t busy0, total0;
	double cpu0[1 + BENCH_MAX_NODES], self0;
	bool began, ended;
} drv;

/* ---- randomness and the heap ---- */

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static double
exp_gap(bench_agent *a)
{
	double u = ((double)(rnd(&a->rng) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
	return -log(u) * a->gap_ns;
}

static void
heap_push(drv *d, bench_agent *a)
{
	int i = d->nheap++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (d->heap[p]->next_ns <= a->next_ns)
			break;
		d->heap[i] = d->heap[p];
		i = p;
	}
	d->heap[i] = a;
}

static bench_agent *
heap_pop(drv *d)
{
	bench_agent *top = d->heap[0], *last = d->heap[--d->nheap];
	int i = 0;
	for (;;) {
		int c = 2 * i + 1;
		if (c >= d->nheap)
			break;
		if (c + 1 < d->nheap && d->heap[c + 1]->next_ns < d->heap[c]->next_ns)
			c++;
		if (last->next_ns <= d->heap[c]->next_ns)
			break;
		d->heap[i] = d->heap[c];
		i = c;
	}
	if (d->nheap)
		d->heap[i] = last;
	return top;
}

/* ---- recording ---- */

static void
count(drv *d, const bench_call *c0, int what)
{
	bench_counts *c[3] = {&d->m->total, &d->m->tools[c0->tool], &d->m->tenants[c0->a->tenant]};
	for (int i = 0; i < 3; i++) {
		if (what == 0)
			c[i]->sent++;
		else if (what == 1)
			c[i]->results++;
		else if (what == 2)
			c[i]->errors++;
		else
			c[i]->ok++;
	}
}

static void
error_kind(int err, const kiln_error *ke, const char *prefix, char *out, size_t n)
{
	if (ke && ke->code >= 0) {
		snprintf(out, n, "%s%s", prefix, kl_code_name(ke->code));
		return;
	}
	const char *e = strerrorname_np(-err);
	snprintf(out, n, "%sNO_ANSWER:%s", prefix, e ? e : "?");
}

static void
record_result(drv *d, const bench_call *c, uint64_t now, const Kiln__ToolResult *r)
{
	bench_metrics *m = d->m;
	uint64_t lat = now - c->intended_ns;
	kl_hist_record(&m->all, lat);
	kl_hist_record(&m->tool[c->tool], lat);
	kl_hist_record(&m->tenant[c->a->tenant], lat);
	kl_hist_record(&m->service, now - c->sent_ns);
	count(d, c, 1);
	const char *code = r->code == KILN__CODE__OK ? (r->is_error         ? "OK_IS_ERROR"
	                                                : r->exit_code != 0 ? "EXIT_NONZERO"
	                                                                    : "OK")
	                                             : kl_code_name(r->code);
	if (!strcmp(code, "OK"))
		count(d, c, 3);
	bench_kind_add(m->codes, &m->ncodes, code, 1);
	m->tool_cpu_us += r->cpu_usec;
	bench_node_stat *ns = bench_metrics_node(m, *r->node_id ? r->node_id : "?");
	if (ns)
		ns->calls++;
}

/* Schedule the agent's next call: when its call is over, or (pipelined)
 * as soon as it was sent. Under the lock. */
static void
advance(drv *d, bench_agent *a, uint64_t now)
{
	a->step++;
	const bench_load *L = d->L;
	if (L->closed)
		a->next_ns = now;
	else if (L->replay)
		a->next_ns = a->intended_ns +
		             (uint64_t)a->sc->steps[a->step % (uint64_t)a->sc->nsteps].think_ms *
		                     1000000ull;
	else
		a->next_ns = a->intended_ns + (uint64_t)exp_gap(a);
	heap_push(d, a);
	pthread_cond_signal(&d->cv);
}

/* A call is over (result or error). Under the lock; frees c. */
static void
finish(drv *d, bench_call *c, uint64_t now, const char *kind, const Kiln__ToolResult *res)
{
	if (c->measured) {
		if (kind) {
			count(d, c, 2);
			bench_kind_add(d->m->kinds, &d->m->nkinds, kind, 1);
		} else {
			record_result(d, c, now, res);
		}
	}
	d->inflight--;
	if (!c->a->pipelined)
		advance(d, c->a, now);
	else
		pthread_cond_signal(&d->cv);
	free(c);
}

static void
on_result(void *arg, int err, Kiln__ToolResult *res)
{
	bench_call *c = arg;
	drv *d = c->a->d;
	uint64_t now = kl_now_ns();
	char kind[48] = "";
	if (err < 0)
		error_kind(err, kiln_last_error(), "", kind, sizeof kind);
	pthread_mutex_lock(&d->mu);
	finish(d, c, now, err < 0 ? kind : NULL, res);
	pthread_mutex_unlock(&d->mu);
	kiln_result_free(res);
}

/* ---- the sampler: progress line, status, CPU ---- */

static void
sample_cpu(drv *d, bool end)
{
	const bench_target *t = d->t;
	uint64_t busy, total;
	bench_cpu_sample(&busy, &total);
	double self = bench_proc_cpu_s(getpid());
	if (!end)
		d->self0 = self;
	else if (self >= 0 && d->self0 >= 0)
		d->m->self_cpu_s = self - d->self0;
	for (int i = 0; i < t->npids && i <= BENCH_MAX_NODES; i++) {
		double c = t->pids[i] > 0 ? bench_proc_cpu_s(t->pids[i]) : -1;
		if (!end) {
			d->cpu0[i] = c;
			continue;
		}
		double dc = c >= 0 && d->cpu0[i] >= 0 ? c - d->cpu0[i] : -1;
		if (i == 0) {
			d->m->sched_cpu_s = dc;
			snprintf(d->m->proc0, sizeof d->m->proc0, "%s",
			         t->kind == TARGET_DEV ? "kiln dev" : "kiln-scheduler");
			continue;
		}
		char name[32];
		snprintf(name, sizeof name, "bench-n%d", i - t->node_pid0);
		bench_node_stat *ns = bench_metrics_node(d->m, name);
		if (ns)
			ns->cpu_s = dc;
	}
	if (!end) {
		d->busy0 = busy;
		d->total0 = total;
	} else if (total > d->total0) {
		d->m->host_busy = (double)(busy - d->busy0) / (double)(total - d->total0);
	}
}

static void
sample_status(drv *d, kiln_client *k)
{
	Kiln__StatusReply *st;
	if (!k || kiln_status(k, &st) < 0)
		return;
	pthread_mutex_lock(&d->mu);
	for (size_t i = 0; i < st->n_nodes; i++) {
		Kiln__NodeStatus *n = st->nodes[i];
		bench_node_stat *ns = bench_metrics_node(d->m, n->node_id);
		if (!ns)
			continue;
		ns->slots = n->slots;
		ns->running_sum += n->running;
		if (!ns->samples++)
			ns->done_first = n->calls_done;
		ns->done_last = n->calls_done;
	}
	pthread_mutex_unlock(&d->mu);
	kiln_status_free(st);
}

static void
progress(drv *d, uint64_t now, bool last)
{
	const bench_load *L = d->L;
	pthread_mutex_lock(&d->mu);
	bench_counts c = d->m->total;
	double p50 = bench_us(&d->m->all, 50) / 1000, p99 = bench_us(&d->m->all, 99) / 1000;
	uint32_t inflight = d->inflight;
	pthread_mutex_unlock(&d->mu);
	double t = ((double)now - (double)d->win_ns) / 1e9;
	char offered[32];
	if (L->closed)
		snprintf(offered, sizeof offered, "closed loop");
	else if (L->replay)
		snprintf(offered, sizeof offered, "replay");
	else
		snprintf(offered, sizeof offered, "offered %.0f/s", L->rate);
	bool tty = isatty(2);
	char when[48];
	if (t < 0)
		snprintf(when, sizeof when, "warm-up, %.1f s to go", -t);
	else
		snprintf(when, sizeof when, "%.1f/%.0f s", t, L->duration_s);
	fprintf(stderr,
	        "%s[%s] %s %s | sent %llu results %llu errors %llu | in flight %u | "
	        "p50 %.2f ms p99 %.2f ms%s",
	        tty ? "\r\033[K" : "", L->label, when, offered, (unsigned long long)c.sent,
	        (unsigned long long)c.results, (unsigned long long)c.errors, inflight, p50, p99,
	        tty && !last ? "" : "\n");
}

static void *
sampler_main(void *arg)
{
	drv *d = arg;
	kiln_client *k = NULL;
	char err[256];
	const char *tok = *d->t->admin_token ? d->t->admin_token : d->ag->tenants[0]->token;
	if (kiln_connect(d->t->client_url, tok, &k, err, sizeof err) == 0)
		kiln_set_timeout(k, 2000);
	uint64_t next_print = d->t0_ns, next_status = d->win_ns;
	bool tty = isatty(2);
	for (;;) {
		pthread_mutex_lock(&d->mu);
		bool fin = d->finished;
		pthread_mutex_unlock(&d->mu);
		if (fin)
			break;
		uint64_t now = kl_now_ns();
		if (!d->began && now >= d->win_ns) {
			sample_cpu(d, false);
			d->began = true;
		}
		if (d->began && !d->ended && now >= d->end_ns) {
			sample_cpu(d, true);
			d->ended = true;
		}
		if (d->began && !d->ended && now >= next_status) {
			sample_status(d, k);
			next_status = now + 1000000000ull;
		}
		if (bench_progress && now >= next_print) {
			progress(d, now, false);
			next_print = now + (tty ? 1000000000ull : 5000000000ull);
		}
		usleep(20000);
	}
	if (!d->ended && d->began) {
		sample_cpu(d, true);
		d->ended = true;
	}
	if (bench_progress)
		progress(d, kl_now_ns(), true);
	kiln_close(k);
	return NULL;
}

/* ---- the sender ---- */

static void
wait_until(drv *d, uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
	pthread_cond_timedwait(&d->cv, &d->mu, &ts);
}

/* The next agent whose call is due, or NULL when the run is over. Locked. */
static bench_agent *
next_due(drv *d)
{
	for (;;) {
		uint64_t now = kl_now_ns();
		bench_agent *top = d->nheap ? d->heap[0] : NULL;
		bool sendable = top && top->next_ns < d->end_ns && now < d->drain_ns;
		if (bench_interrupted)
			return NULL;
		if (sendable && top->next_ns <= now)
			return heap_pop(d);
		if (sendable)
			wait_until(d, top->next_ns);
		else if (!d->inflight)
			return NULL;
		else
			wait_until(d, now + 50000000ull);
	}
}

static void
send_one(drv *d, bench_agent *a)
{
	const bench_step *s = &a->sc->steps[a->step % (uint64_t)a->sc->nsteps];
	uint64_t now = kl_now_ns();
	bench_call *c = kl_xcalloc(1, sizeof *c);
	c->a = a;
	c->intended_ns = a->intended_ns = a->next_ns;
	c->sent_ns = now;
	c->tool = (int)s->tool;
	c->measured = c->intended_ns >= d->win_ns && c->intended_ns < d->end_ns;
	if (c->measured) {
		count(d, c, 0);
		kl_hist_record(&d->m->lag, now - c->intended_ns);
	}
	d->inflight++;
	uint64_t cycle = a->step / (uint64_t)a->sc->nsteps;
	if (a->pipelined)
		advance(d, a, now); /* the next call does not wait for this one */
	pthread_mutex_unlock(&d->mu);

	/* From here on an agent that is not pipelined is ours alone until its
	 * result; a pipelined one may be sent again by this thread only. */
	bench_call_buf buf;
	Kiln__ToolCall tc;
	bench_step_call(s, cycle, &buf, &tc);
	tc.session_id = a->session;
	int rc = kiln_call_async(a->k, &tc, on_result, c);

	pthread_mutex_lock(&d->mu);
	if (rc < 0) {
		char kind[48];
		error_kind(rc, kiln_last_error(), "SEND:", kind, sizeof kind);
		finish(d, c, kl_now_ns(), kind, NULL);
	}
}

static drv *
drv_new(bench_agents *ag, const bench_target *t, const bench_load *L, bench_metrics *m)
{
	drv *d = kl_xcalloc(1, sizeof *d);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&d->mu, NULL);
	d->ag = ag;
	d->t = t;
	d->L = L;
	d->m = m;
	d->heap = kl_xcalloc((size_t)ag->n + 1, sizeof *d->heap);
	return d;
}

static void
drv_free(drv *d)
{
	if (!d)
		return;
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	free(d->heap);
	free(d);
}

/* Each agent's first intended time and mean gap. */
static void
schedule_agents(drv *d, const bench_load *L)
{
	bench_agents *ag = d->ag;
	int per_tenant[BENCH_MAX_TENANTS] = {0};
	for (int i = 0; i < ag->n; i++)
		per_tenant[ag->v[i].tenant]++;
	for (int i = 0; i < ag->n; i++) {
		bench_agent *a = &ag->v[i];
		a->d = d;
		a->pipelined = !L->closed && L->pipelined[a->tenant];
		a->rng = (L->seed ? L->seed : 0x9e3779b97f4a7c15ull) ^ ((uint64_t)(i + 1) << 20);
		double rate = L->tenant_rate[a->tenant] > 0
		                      ? L->tenant_rate[a->tenant] / per_tenant[a->tenant]
		                      : L->rate / ag->n;
		a->gap_ns = rate > 0 ? 1e9 / rate : 1e12;
		if (L->closed)
			a->next_ns = d->t0_ns + (uint64_t)i * 100000ull; /* 0.1 ms apart */
		else if (L->replay)
			a->next_ns =
			        d->t0_ns +
			        (uint64_t)a->sc->steps[a->step % (uint64_t)a->sc->nsteps].think_ms *
			                1000000ull;
		else
			a->next_ns = d->t0_ns + (uint64_t)exp_gap(a);
		heap_push(d, a);
	}
}

/* Calls that were due in the window but never went out (drain ended). */
static uint64_t
count_unsent(drv *d)
{
	uint64_t n = 0;
	for (int i = 0; i < d->nheap; i++) {
		bench_agent *a = d->heap[i];
		uint64_t t = a->next_ns, step = a->step;
		for (int k = 0; t < d->end_ns && k < 10000000; k++) {
			n += t >= d->win_ns;
			step++;
			if (d->L->closed)
				break; /* a closed loop has nothing due beyond its next call */
			t += d->L->replay ? (uint64_t)a->sc->steps[step % (uint64_t)a->sc->nsteps]
			                                    .think_ms *
			                            1000000ull
			                  : (uint64_t)exp_gap(a);
			if (d->L->replay && !a->sc->steps[step % (uint64_t)a->sc->nsteps].think_ms)
				break;
		}
	}
	return n;
}

int
bench_drive(bench_agents *ag, const bench_target *t, const bench_load *L, bench_metrics *m)
{
	/* The previous run's driver: every one of its callbacks has returned. */
	drv_free(ag->drv);
	drv *d = ag->drv = drv_new(ag, t, L, m);
	d->t0_ns = kl_now_ns() + 20000000ull;
	d->win_ns = d->t0_ns + (uint64_t)(L->warmup_s * 1e9);
	d->end_ns = d->win_ns + (uint64_t)(L->duration_s * 1e9);
	d->drain_ns = d->end_ns + (uint64_t)(L->drain_s * 1e9);
	m->window_s = L->duration_s;
	pthread_mutex_lock(&d->mu);
	schedule_agents(d, L);
	pthread_mutex_unlock(&d->mu);
	pthread_create(&d->sampler, NULL, sampler_main, d);

	pthread_mutex_lock(&d->mu);
	bench_agent *a;
	while ((a = next_due(d)))
		send_one(d, a);
	/* Interrupted: give the calls in flight a moment; bench_agents_close
	 * cancels the rest and their callbacks still find this driver. */
	for (int i = 0; d->inflight && i < 30; i++)
		wait_until(d, kl_now_ns() + 100000000ull);
	if (!bench_interrupted) {
		m->unsent_due = count_unsent(d);
	} else {
		uint64_t now = kl_now_ns(), stop = now < d->end_ns ? now : d->end_ns;
		m->window_s = stop > d->win_ns ? (double)(stop - d->win_ns) / 1e9 : 0;
	}
	d->finished = true;
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->sampler, NULL);
	m->load1 = bench_load1();
	return bench_interrupted ? -EINTR : 0;
}

/* ---- agents: sessions and setup ---- */

typedef struct opener {
	bench_agents *ag;
	const bench_agents_cfg *cfg;
	const bench_target *t;
	atomic_int next;
	pthread_mutex_t mu;
	bool closing;
	int warned;
} opener;

static void
run_setup(opener *op, bench_agent *a)
{
	for (int i = 0; i < a->sc->nsetup && !bench_interrupted; i++) {
		bench_call_buf buf;
		Kiln__ToolCall tc;
		bench_step_call(&a->sc->setup[i], 0, &buf, &tc);
		tc.session_id = a->session;
		Kiln__ToolResult *r = NULL;
		int rc = kiln_call(a->k, &tc, &r);
		bool bad = rc < 0 || r->code != KILN__CODE__OK || r->is_error || r->exit_code;
		pthread_mutex_lock(&op->mu);
		if (bad && op->warned++ < 3)
			fprintf(stderr, "kiln-bench: agent %d setup call %d failed: %s %.200s\n",
			        a->idx, i,
			        rc < 0 ? kiln_last_error()->message : kl_code_name(r->code),
			        rc < 0          ? ""
			        : r->message[0] ? r->message
			                        : (char *)r->output.data);
		pthread_mutex_unlock(&op->mu);
		kiln_result_free(r);
	}
}

static void
open_one(opener *op, bench_agent *a)
{
	Kiln__SessionOpen so = KILN__SESSION_OPEN__INIT;
	Kiln__SessionOpened *o = NULL;
	uint64_t t0 = kl_now_ns();
	int rc = kiln_session_open_full(a->k, &so, &o);
	uint64_t ns = kl_now_ns() - t0;
	pthread_mutex_lock(&op->mu);
	if (rc < 0) {
		op->ag->opens_failed++;
		if (op->warned++ < 3)
			fprintf(stderr,
			        "kiln-bench: agent %d (tenant %s): session open failed: %s\n",
			        a->idx, op->ag->tenants[a->tenant]->name,
			        kiln_last_error()->message);
		a->session[0] = 0;
	} else {
		op->ag->opens++;
		if (o->warm)
			op->ag->opens_warm++;
		else
			op->ag->opens_cold++;
		kl_hist_record(&op->ag->open_lat, ns);
		snprintf(a->session, sizeof a->session, "%s", o->session->session_id);
	}
	pthread_mutex_unlock(&op->mu);
	kiln_opened_free(o);
	if (rc == 0)
		run_setup(op, a);
}

static void *
opener_main(void *arg)
{
	opener *op = arg;
	int i;
	while ((i = atomic_fetch_add(&op->next, 1)) < op->ag->n && !bench_interrupted) {
		bench_agent *a = &op->ag->v[i];
		if (op->closing) {
			if (a->session[0])
				kiln_session_close(a->k, a->session);
			a->session[0] = 0;
		} else {
			open_one(op, a);
		}
	}
	return NULL;
}

static void
run_openers(opener *op)
{
	pthread_t th[8];
	int n = op->ag->n < 8 ? op->ag->n : 8;
	atomic_store(&op->next, 0);
	for (int i = 0; i < n; i++)
		pthread_create(&th[i], NULL, opener_main, op);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
}

/* The script for the j-th agent of tenant tname: scripts pinned to the
 * tenant or to none, cycled. */
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
		if (!w->scripts[i].tenant[0] || !strcmp(w->scripts[i].tenant, tname))
			if (want-- == 0)
				return &w->scripts[i];
	return &w->scripts[0];
}

int
bench_agents_open(bench_agents *ag, const bench_target *t, const bench_agents_cfg *cfg, char *err,
                  size_t errlen)
{
	memset(ag, 0, sizeof *ag);
	kl_hist_init(&ag->open_lat);
	ag->ntenants = cfg->ntenants;
	int total = 0;
	for (int i = 0; i < cfg->ntenants; i++) {
		ag->tenants[i] = cfg->tenants[i];
		total += cfg->agents_per_tenant[i];
		int r = kiln_connect(t->client_url, cfg->tenants[i]->token, &ag->clients[i], err,
		                     errlen);
		if (r < 0) {
			bench_agents_close(ag);
			return r;
		}
		kiln_set_timeout(ag->clients[i], cfg->call_timeout_ms);
	}
	ag->v = kl_xcalloc((size_t)total + 1, sizeof *ag->v);
	for (int i = 0; i < cfg->ntenants; i++)
		for (int j = 0; j < cfg->agents_per_tenant[i]; j++) {
			bench_agent *a = &ag->v[ag->n];
			a->idx = ag->n++;
			a->tenant = i;
			a->k = ag->clients[i];
			a->sc = pick_script(cfg->w, cfg->tenants[i]->name, j);
		}
	opener op = {.ag = ag, .cfg = cfg, .t = t};
	pthread_mutex_init(&op.mu, NULL);
	run_openers(&op);
	pthread_mutex_destroy(&op.mu);
	/* Keep only the agents that have a session. */
	int k = 0;
	for (int i = 0; i < ag->n; i++)
		if (ag->v[i].session[0]) {
			ag->v[k] = ag->v[i];
			ag->v[k].idx = k;
			k++;
		}
	ag->n = k;
	if (bench_interrupted) {
		snprintf(err, errlen, "interrupted");
		bench_agents_close(ag);
		return -EINTR;
	}
	if (!ag->n) {
		snprintf(err, errlen, "no agent could open a session (%llu failed)",
		         (unsigned long long)ag->opens_failed);
		bench_agents_close(ag);
		return -EIO;
	}
	return 0;
}

void
bench_agents_close(bench_agents *ag)
{
	if (ag->v && !bench_interrupted) {
		opener op = {.ag = ag, .closing = true};
		pthread_mutex_init(&op.mu, NULL);
		run_openers(&op);
		pthread_mutex_destroy(&op.mu);
	}
	/* Fails what is still in flight (their callbacks run now, with the driver alive). */
	for (int i = 0; i < ag->ntenants; i++)
		kiln_close(ag->clients[i]);
	drv_free(ag->drv);
	free(ag->v);
	memset(ag, 0, sizeof *ag);
}
