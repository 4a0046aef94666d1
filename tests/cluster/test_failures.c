/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Failure semantics of a real cluster (scheduler + nodes as processes over
 * loopback TCP): kill -9 of a node mid-call (NODE_LOST within 3 s, other
 * nodes unaffected, one-shot calls queued for the dead node and never started
 * run elsewhere), kill -9 and restart of the scheduler (every session
 * recovered from the nodes' re-registration, tenant isolation intact, calls
 * in flight end "outcome unknown"), a stopped node that keeps its connection
 * open (lost by missed heartbeats, then rejoins), cancellation and deadlines
 * reaching the node, weighted fairness on a saturated node, and, across all
 * of it, no call ever executed twice (counted in the nodes' logs).
 */
#include "test.h"

#include "kl_clock.h"
#include "kl_proto.h"
#include "kl_util.h"
#include "kt_cluster.h"
#include "kt_node.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

/* The main cluster: n0..n2 ordinary nodes; V (two slots) and R hold the only
 * sandboxes of template "ft", V warm and R cold, so placement of "ft"
 * sessions is deterministic: V while it has warm sandboxes, R once V is gone. */
enum { N0, N1, N2, V, R, NNODES };
static kt_cluster cl;

#define START " start tool=" /* a node's log line for each call it executes */

TEST(setup)
{
	kt_require_sandboxes();
	kt_cluster_init(&cl, NULL);
	kt_cluster_start_sched(&cl);
	const char *plain[] = {"--warm", "4", "--refill-rate", "1000", NULL};
	const char *victim[] = {"--slots", "2", "--warm", "0", "--template", "ft:host:6", NULL};
	const char *rescue[] = {"--warm", "0", "--template", "ft:host:0", NULL};
	for (int i = N0; i <= N2; i++)
		kt_cluster_add_node(&cl, plain);
	ASSERT_EQ(kt_cluster_add_node(&cl, victim), V);
	ASSERT_EQ(kt_cluster_add_node(&cl, rescue), R);
}

/* ---- helpers ---- */

/* An asynchronous call and how it ended. */
typedef struct pending {
	bool done;
	int err;
	bool outcome_unknown;
	char msg[512];
	Kiln__ToolResult *res;
	uint64_t t_ms; /* kl_now_ms() when the answer arrived */
} pending;

static pthread_mutex_t pmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pcv = PTHREAD_COND_INITIALIZER;

static void
pending_cb(void *arg, int err, Kiln__ToolResult *res)
{
	pending *p = arg;
	const kiln_error *e = kiln_last_error();
	pthread_mutex_lock(&pmu);
	p->t_ms = kl_now_ms();
	p->err = err;
	p->res = res;
	if (err < 0) {
		p->outcome_unknown = e->outcome_unknown;
		kl_strlcpy(p->msg, e->message, sizeof p->msg);
	}
	p->done = true;
	pthread_cond_broadcast(&pcv);
	pthread_mutex_unlock(&pmu);
}

static void
call_async(kiln_client *k, const char *sid, const char *tmpl, const char *cmd, pending *p)
{
	memset(p, 0, sizeof *p);
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = (char *)cmd;
	b.timeout_ms = 120000;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.template_ = (char *)tmpl;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	if (kiln_call_async(k, &tc, pending_cb, p) < 0)
		KT_FAIL("call_async: %s", kiln_last_error()->message);
}

static bool
pending_done(pending *p)
{
	pthread_mutex_lock(&pmu);
	bool d = p->done;
	pthread_mutex_unlock(&pmu);
	return d;
}

static void
pending_wait(pending *p, int timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	pthread_mutex_lock(&pmu);
	while (!p->done)
		if (pthread_cond_timedwait(&pcv, &pmu, &ts) != 0)
			break;
	bool d = p->done;
	pthread_mutex_unlock(&pmu);
	if (!d)
		KT_FAIL("no answer within %d ms (logs in %s)", timeout_ms, cl.dir);
}

/* The result text as a C string (output is not NUL-terminated on the wire). */
static char *
out_of(const Kiln__ToolResult *r)
{
	static char buf[4096];
	size_t n = KL_MIN(r->output.len, sizeof buf - 1);
	memcpy(buf, r->output.data, n);
	buf[n] = 0;
	return buf;
}

/* Start lines in the logs of nodes [lo, hi]. */
static int
starts(kt_cluster *c, int lo, int hi)
{
	int n = 0;
	for (int i = lo; i <= hi; i++)
		n += kt_cluster_log_count(c, i, START);
	return n;
}

/* Wait until the nodes [lo, hi] logged at least `want` call starts. */
static void
wait_starts(kt_cluster *c, int lo, int hi, int want)
{
	for (int i = 0; i < 1000 && starts(c, lo, hi) < want; i++)
		usleep(20000);
	if (starts(c, lo, hi) < want)
		KT_FAIL("nodes %d..%d started %d calls, expected %d", lo, hi, starts(c, lo, hi),
		        want);
}

static Kiln__TenantStatus *
tenant_of(Kiln__StatusReply *st, const char *name)
{
	for (size_t i = 0; i < st->n_tenants; i++)
		if (!strcmp(st->tenants[i]->name, name))
			return st->tenants[i];
	KT_FAIL("no tenant %s in the status", name);
}

/* Open a session; returns its id and writes its node index to *ret_node. */
static char *
open_session(kiln_client *k, const char *tmpl, int *ret_node)
{
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.template_ = (char *)(tmpl ? tmpl : "");
	Kiln__SessionOpened *op;
	if (kiln_session_open_full(k, &o, &op) < 0)
		KT_FAIL("open: %s", kiln_last_error()->message);
	char *id = strdup(op->session->session_id);
	*ret_node = kt_cluster_node_index(&cl, op->session->node_id);
	ASSERT_GE(*ret_node, 0);
	kiln_opened_free(op);
	return id;
}

/* Open default sessions until one lands on node i (placement is random). */
static char *
open_on(kiln_client *k, int i)
{
	for (int tries = 0; tries < 300; tries++) {
		int at;
		char *id = open_session(k, NULL, &at);
		if (at == i)
			return id;
		ASSERT_EQ(kiln_session_close(k, id), 0);
		free(id);
	}
	KT_FAIL("no session landed on node %d in 300 opens", i);
}

/* One-shot sessions ("e-..." ids) that ran a call on some node of c and
 * were not closed there (yet). */
static int
oneshots_open(kt_cluster *c)
{
	char ids[256][40];
	int n = 0, open = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < c->nnodes; i++) {
			char path[512], line[4096], id[40];
			snprintf(path, sizeof path, "%s/node-%d.log", c->dir, i);
			FILE *f = fopen(path, "r");
			while (f && fgets(line, sizeof line, f)) {
				char *p = strstr(line, "session=e-");
				if (!p || sscanf(p + 8, "%39[^ ]", id) != 1)
					continue;
				for (int k = 0; k < n; k++)
					if (!strcmp(ids[k], id) && pass == 1 &&
					    strstr(p, " closing"))
						ids[k][0] = 0; /* closed */
				if (pass == 0 && strstr(p, START) && n < 256)
					kl_strlcpy(ids[n++], id, sizeof ids[n]);
			}
			if (f)
				fclose(f);
		}
	}
	for (int k = 0; k < n; k++)
		open += ids[k][0] != 0;
	return open;
}

static void
check_once(kt_cluster *c, const char *when)
{
	int distinct;
	int max = kt_cluster_max_runs_per_job(c, &distinct);
	fprintf(stderr, "%s: %d distinct jobs executed, at most %d time(s) each\n", when, distinct,
	        max);
	ASSERT_EQ(max, 1);
}

/* ---- 1. kill -9 of a node mid-call ---- */

TEST(node_kill_mid_call)
{
	enum { K = 4 }; /* one-shot calls queued for the victim */
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA), *b = kt_cluster_client(&cl, KT_BETA);
	char *other[6];
	pending oth[6], lng[2], one[K];
	/* Two sessions on each ordinary node. */
	for (int i = 0; i < 6; i++)
		other[i] = open_on(a, N0 + i / 2);
	/* Two long calls fill V's two slots. Their sessions are "ft" sessions:
	 * they go to V, the only node with warm "ft" sandboxes. */
	char *vs[2];
	int v_starts = kt_cluster_log_count(&cl, V, START);
	for (int i = 0; i < 2; i++) {
		int at;
		kt_cluster_wait_warm(&cl, V, "ft", 1, 10000);
		vs[i] = open_session(a, "ft", &at);
		ASSERT_EQ(at, V);
		call_async(a, vs[i], NULL, "sleep 60; echo never", &lng[i]);
	}
	wait_starts(&cl, V, V, v_starts + 2); /* V's slots are busy now */
	/* One-shot calls (no session): placement prefers V (warm "ft" minus
	 * opens under way, K < 6); its slots are busy, so they wait in the
	 * scheduler's queue for V, unstarted. */
	char cmds[K][32];
	kt_cluster_wait_warm(&cl, V, "ft", K + 1, 10000);
	for (int i = 0; i < K; i++) {
		snprintf(cmds[i], sizeof cmds[i], "echo oneshot-%d", i);
		call_async(b, "", "ft", cmds[i], &one[i]);
	}
	uint32_t queued = 0, inflight = 0;
	for (int i = 0; i < 250 && queued < K; i++) {
		Kiln__StatusReply *st = kt_cluster_status(&cl);
		queued = tenant_of(st, "beta")->queued;
		inflight = st->inflight;
		kiln_status_free(st);
		usleep(20000);
	}
	fprintf(stderr, "scheduler: beta has %u calls queued; %u calls running in the cluster\n",
	        queued, inflight);
	ASSERT_EQ(queued, K);
	ASSERT_EQ(inflight, 2); /* the long calls */
	usleep(1000000);
	for (int i = 0; i < K; i++)
		ASSERT(!pending_done(&one[i]));
	ASSERT_EQ(kt_cluster_log_count(&cl, V, START), v_starts + 2);
	/* Calls on the other nodes, in flight at the moment of the kill. */
	int o_starts = starts(&cl, N0, N2);
	for (int i = 0; i < 6; i++)
		call_async(a, other[i], NULL, "sleep 2; echo done", &oth[i]);
	wait_starts(&cl, N0, N2, o_starts + 6);
	for (int i = 0; i < 6; i++)
		ASSERT(!pending_done(&oth[i]));
	uint64_t t0 = kl_now_ms();
	kt_cluster_kill_node(&cl, V, SIGKILL);
	for (int i = 0; i < 2; i++) {
		pending_wait(&lng[i], 20000);
		uint64_t lost_ms = lng[i].t_ms - t0;
		ASSERT_EQ(lng[i].err, 0);
		fprintf(stderr, "kill -9 of %s: its call ended %s after %llu ms: %s\n", cl.names[V],
		        kl_code_name(lng[i].res->code), (unsigned long long)lost_ms,
		        lng[i].res->message);
		ASSERT_EQ(lng[i].res->code, KILN__CODE__NODE_LOST);
		ASSERT_LT(lost_ms, 3000);
		kiln_result_free(lng[i].res);
	}
	/* The unstarted one-shot calls ran elsewhere: on R, the other "ft" node. */
	for (int i = 0; i < K; i++) {
		pending_wait(&one[i], 60000);
		if (one[i].err < 0)
			KT_FAIL("one-shot %d: %s", i, one[i].msg);
		Kiln__ToolResult *r = one[i].res;
		fprintf(stderr,
		        "one-shot %d, queued for %s and never started there: %s on %s, %llu ms "
		        "after the kill, output %s",
		        i, cl.names[V], kl_code_name(r->code), r->node_id,
		        (unsigned long long)(one[i].t_ms - t0), out_of(r));
		ASSERT_EQ(r->code, KILN__CODE__OK);
		ASSERT_STR_EQ(r->node_id, cl.names[R]);
		ASSERT_GE(one[i].t_ms, t0);
		char want[40];
		snprintf(want, sizeof want, "%s\n", cmds[i] + 5);
		ASSERT_STR_EQ(out_of(r), want);
		kiln_result_free(r);
	}
	/* The other nodes' calls were not disturbed. */
	for (int i = 0; i < 6; i++) {
		pending_wait(&oth[i], 60000);
		if (oth[i].err < 0)
			KT_FAIL("call on node %d: %s", N0 + i / 2, oth[i].msg);
		ASSERT_EQ(oth[i].res->code, KILN__CODE__OK);
		ASSERT_STR_EQ(out_of(oth[i].res), "done\n");
		ASSERT_STR_EQ(oth[i].res->node_id, cl.names[N0 + i / 2]);
		kiln_result_free(oth[i].res);
	}
	fprintf(stderr, "6 calls in flight on %s, %s, %s at the kill completed OK\n", cl.names[N0],
	        cl.names[N1], cl.names[N2]);
	/* V started nothing but the long calls; the scheduler moved the queued
	 * one-shots (each is an ephemeral session) to R. */
	ASSERT_EQ(kt_cluster_log_count(&cl, V, START), v_starts + 2);
	char line[200];
	snprintf(line, sizeof line, "re-placed on %s", cl.names[R]);
	ASSERT_GE(kt_cluster_sched_log_count(&cl, line), K);
	/* The victim's sessions are gone with it. */
	Kiln__ToolResult *r;
	for (int i = 0; i < 2; i++) {
		ASSERT_LT(kiln_bash(a, vs[i], "true", 0, &r), 0);
		ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
		free(vs[i]);
	}
	for (int i = 0; i < 6; i++) {
		ASSERT_EQ(kiln_session_close(a, other[i]), 0);
		free(other[i]);
	}
	check_once(&cl, "after the node kill");
	/* Bring V back under the same name: the new run removes what the killed
	 * one left behind (cgroups), and later tests have all five nodes. */
	kt_cluster_restart_node(&cl, V);
	kt_cluster_wait_nodes(&cl, NNODES);
	kiln_close(a);
	kiln_close(b);
}

/* ---- 6. cancellation and deadlines reach the node ---- */

struct blocking_call {
	kiln_client *k;
	Kiln__ToolCall *tc;
	int rv;
	Kiln__ToolResult *res;
	uint64_t t_ms;
};

static void *
blocking_call_run(void *arg)
{
	struct blocking_call *bc = arg;
	bc->rv = kiln_call(bc->k, bc->tc, &bc->res);
	bc->t_ms = kl_now_ms();
	return NULL;
}

static const char *
bash_out(kiln_client *k, const char *sid, const char *cmd)
{
	Kiln__ToolResult *r;
	if (kiln_bash(k, sid, cmd, 0, &r) < 0)
		KT_FAIL("%s: %s", cmd, kiln_last_error()->message);
	ASSERT_EQ(r->code, KILN__CODE__OK);
	static char buf[4096];
	kl_strlcpy(buf, out_of(r), sizeof buf);
	kiln_result_free(r);
	return buf;
}

TEST(cancel_and_deadline)
{
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA);
	int at;
	char *sid = open_session(a, NULL, &at);
	/* pgrep sees the session's own processes (its pid namespace). */
	ASSERT_STR_EQ(bash_out(a, sid, "sleep 5 & pgrep -x sleep | wc -l; kill $!"), "1\n");
	/* Cancel a running `sleep 30` from another thread. */
	Kiln__BashInput bi = KILN__BASH_INPUT__INIT;
	bi.command = "sleep 30";
	bi.timeout_ms = 120000;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &bi;
	tc.job_id = kiln_job_id_new();
	struct blocking_call bc = {.k = a, .tc = &tc};
	int before = kt_cluster_log_count(&cl, at, START);
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, blocking_call_run, &bc), 0);
	wait_starts(&cl, at, at, before + 1);
	usleep(300000); /* let the shell start sleep */
	uint64_t t0 = kl_now_ms();
	ASSERT_EQ(kiln_cancel(a, tc.job_id), 0);
	pthread_join(th, NULL);
	if (bc.rv < 0)
		KT_FAIL("cancelled call: %s", kiln_last_error()->message);
	fprintf(stderr, "cancel: %s after %llu ms (%s)\n", kl_code_name(bc.res->code),
	        (unsigned long long)(bc.t_ms - t0), bc.res->message);
	ASSERT_EQ(bc.res->code, KILN__CODE__CANCELLED);
	ASSERT_LT(bc.t_ms - t0, 2000);
	kiln_result_free(bc.res);
	/* The process is gone, and the session still works. */
	ASSERT_STR_EQ(bash_out(a, sid, "pgrep -x sleep | wc -l"), "0\n");
	/* A deadline 500 ms ahead ends a `sleep 30` with DEADLINE_EXCEEDED. */
	tc.job_id = 0;
	tc.deadline_unix_ms = kl_wall_ms() + 500;
	t0 = kl_now_ms();
	Kiln__ToolResult *r;
	if (kiln_call(a, &tc, &r) < 0)
		KT_FAIL("deadline call: %s", kiln_last_error()->message);
	uint64_t dt = kl_now_ms() - t0;
	fprintf(stderr, "deadline 500 ms ahead: %s after %llu ms (%s)\n", kl_code_name(r->code),
	        (unsigned long long)dt, r->message);
	ASSERT_EQ(r->code, KILN__CODE__DEADLINE_EXCEEDED);
	ASSERT(r->timed_out);
	ASSERT_LT(dt, 3000);
	kiln_result_free(r);
	ASSERT_STR_EQ(bash_out(a, sid, "pgrep -x sleep | wc -l"), "0\n");
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	free(sid);
	kiln_close(a);
}

/* ---- 3. kill -9 of the scheduler, restart, every session recovered ---- */

TEST(scheduler_restart_recovers_sessions)
{
	enum { N = 30 };
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA), *b = kt_cluster_client(&cl, KT_BETA);
	char *ids[N], text[N][96];
	int where[N], per_node[NNODES] = {0};
	for (int i = 0; i < N; i++) {
		ids[i] = open_session(a, NULL, &where[i]);
		per_node[where[i]]++;
		snprintf(text[i], sizeof text[i], "session %d (%s) on %s", i, ids[i],
		         cl.names[where[i]]);
		Kiln__ToolResult *r;
		ASSERT_EQ(kiln_write(a, ids[i], "note.txt", text[i], strlen(text[i]), &r), 0);
		ASSERT_EQ(r->code, KILN__CODE__OK);
		kiln_result_free(r);
	}
	int used = 0;
	for (int i = 0; i < NNODES; i++) {
		fprintf(stderr, "%s holds %d of the %d sessions\n", cl.names[i], per_node[i], N);
		used += per_node[i] > 0;
	}
	ASSERT_GE(used, 3);
	/* Calls in flight at the kill: one in a session appends a line (a second
	 * execution would show as a second line), and a one-shot call. */
	int before = starts(&cl, 0, NNODES - 1);
	pending inf[2];
	call_async(a, ids[0], NULL, "sleep 3; echo ran >> runs.txt; echo ok", &inf[0]);
	call_async(a, "", NULL, "sleep 3; echo one-shot", &inf[1]);
	wait_starts(&cl, 0, NNODES - 1, before + 2);
	int regs = kt_cluster_sched_log_count(&cl, " registered: ");
	uint64_t t0 = kl_now_ms();
	kt_cluster_kill_sched(&cl, SIGKILL);
	for (int i = 0; i < 2; i++) {
		pending_wait(&inf[i], 20000);
		fprintf(stderr,
		        "%s call in flight at the scheduler's kill: err %d (%s), outcome_unknown "
		        "%d\n",
		        i ? "one-shot" : "session", inf[i].err, inf[i].msg, inf[i].outcome_unknown);
		ASSERT_LT(inf[i].err, 0);
		ASSERT(inf[i].outcome_unknown);
	}
	kt_cluster_start_sched(&cl);
	kt_cluster_wait_nodes(&cl, NNODES);
	fprintf(stderr, "scheduler back with %d nodes %llu ms after the kill (%d registrations)\n",
	        NNODES, (unsigned long long)(kl_now_ms() - t0),
	        kt_cluster_sched_log_count(&cl, " registered: ") - regs);
	/* Every session works for its tenant, on the node it was on. */
	for (int i = 0; i < N; i++) {
		Kiln__ToolResult *r;
		if (kiln_read(a, ids[i], "note.txt", 0, 0, &r) < 0)
			KT_FAIL("session %d after the restart: %s", i, kiln_last_error()->message);
		ASSERT_EQ(r->code, KILN__CODE__OK);
		ASSERT_STR_EQ(out_of(r), text[i]);
		ASSERT_STR_EQ(r->node_id, cl.names[where[i]]);
		kiln_result_free(r);
	}
	fprintf(stderr, "all %d sessions read back their file on their node\n", N);
	/* Tenant isolation survives the rebuild. For dead_after (3 s) after its
	 * start the scheduler answers any session it does not know, another
	 * tenant's included, UNAVAILABLE (its nodes may still be reporting
	 * sessions); NOT_FOUND once that window has passed. */
	for (uint64_t up = 0; up < 3000; usleep(50000)) {
		Kiln__StatusReply *st = kt_cluster_status(&cl);
		up = st->uptime_ms;
		kiln_status_free(st);
	}
	for (int i = 0; i < N; i++) {
		Kiln__ToolResult *r;
		ASSERT_LT(kiln_read(b, ids[i], "note.txt", 0, 0, &r), 0);
		ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
		ASSERT_NOT_CONTAINS(kiln_last_error()->message, text[i]);
	}
	ASSERT_LT(kiln_session_close(b, ids[1]), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	Kiln__SessionListReply *l;
	ASSERT_EQ(kiln_session_list(b, &l), 0);
	for (size_t j = 0; j < l->n_sessions; j++)
		for (int i = 0; i < N; i++)
			ASSERT(strcmp(l->sessions[j]->session_id, ids[i]) != 0);
	kiln_list_free(l);
	/* alpha sees its N sessions, no more: the one-shot call's session is not
	 * handed to the tenant as a session of its own. */
	ASSERT_EQ(kiln_session_list(a, &l), 0);
	fprintf(stderr, "alpha lists %zu sessions after the restart\n", l->n_sessions);
	ASSERT_EQ(l->n_sessions, N);
	kiln_list_free(l);
	/* ...and the node closed that session (killing the call if it still ran). */
	for (int i = 0; i < 500 && oneshots_open(&cl) > 0; i++)
		usleep(20000);
	ASSERT_EQ(oneshots_open(&cl), 0);
	/* The interrupted call ran once (it was started before the kill). */
	ASSERT_STR_EQ(bash_out(a, ids[0], "cat runs.txt"), "ran\n");
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(kiln_session_close(a, ids[i]), 0);
		free(ids[i]);
	}
	check_once(&cl, "after the scheduler restart");
	kiln_close(a);
	kiln_close(b);
}

/* ---- 5. a stopped node: connection open, heartbeats missing ---- */

struct opener {
	int n, nodes[4];
	char *ids[4];
};

/* Open "ft" sessions and call in each while V is stopped. */
static void *
opener_run(void *arg)
{
	struct opener *o = arg;
	kiln_client *k = kt_cluster_client(&cl, KT_BETA);
	for (int i = 0; i < o->n; i++) {
		int at;
		char *id = open_session(k, "ft", &at);
		Kiln__ToolResult *r;
		if (kiln_bash(k, id, "echo hi", 0, &r) < 0)
			KT_FAIL("call while a node is stopped: %s", kiln_last_error()->message);
		ASSERT_EQ(r->code, KILN__CODE__OK);
		ASSERT_STR_EQ(r->node_id, cl.names[at]);
		kiln_result_free(r);
		o->nodes[i] = at;
		ASSERT_EQ(kiln_session_close(k, id), 0);
		o->ids[i] = id;
	}
	kiln_close(k);
	return NULL;
}

/* The number after `key` in the last line of node i's log that has it. */
static long
log_last_number(kt_cluster *c, int i, const char *key)
{
	char path[512], line[4096];
	long v = -1;
	snprintf(path, sizeof path, "%s/node-%d.log", c->dir, i);
	FILE *f = fopen(path, "r");
	ASSERT(f != NULL);
	while (fgets(line, sizeof line, f)) {
		char *p = strstr(line, key);
		if (p)
			v = strtol(p + strlen(key), NULL, 10);
	}
	fclose(f);
	return v;
}

TEST(stopped_node_is_lost_then_rejoins)
{
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA);
	int at;
	kt_cluster_wait_warm(&cl, V, "ft", 2, 10000);
	char *sid = open_session(a, "ft", &at);
	ASSERT_EQ(at, V);
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_write(a, sid, "keep.txt", "kept", 4, &r), 0);
	kiln_result_free(r);
	int before = kt_cluster_log_count(&cl, V, START);
	pending p;
	call_async(a, sid, NULL, "sleep 8; echo late", &p);
	wait_starts(&cl, V, V, before + 1);
	char reg[200], replaced[200];
	snprintf(reg, sizeof reg, "node %s registered", cl.names[V]);
	snprintf(replaced, sizeof replaced, "re-placed on %s", cl.names[R]);
	int regs = kt_cluster_sched_log_count(&cl, reg);
	int moved = kt_cluster_sched_log_count(&cl, replaced);
	uint64_t t0 = kl_now_ms();
	kt_cluster_kill_node(&cl, V, SIGSTOP);
	/* Meanwhile another tenant opens "ft" sessions: the first goes to V
	 * (still warm and not yet known dead; its free slot's pull is parked, so
	 * the open is sent to the stopped process) and waits until V is declared
	 * lost, then is placed again on R. */
	struct opener op = {.n = 3};
	pthread_t th;
	ASSERT_EQ(pthread_create(&th, NULL, opener_run, &op), 0);
	pending_wait(&p, 20000);
	uint64_t lost_ms = p.t_ms - t0;
	ASSERT_EQ(p.err, 0);
	fprintf(stderr, "SIGSTOP of %s: its call ended %s after %llu ms: %s\n", cl.names[V],
	        kl_code_name(p.res->code), (unsigned long long)lost_ms, p.res->message);
	ASSERT_EQ(p.res->code, KILN__CODE__NODE_LOST);
	ASSERT_LE(lost_ms, 5000);
	kiln_result_free(p.res);
	pthread_join(th, NULL);
	for (int i = 0; i < op.n; i++) {
		fprintf(stderr, "\"ft\" session %s opened during the stop ran on %s\n", op.ids[i],
		        cl.names[op.nodes[i]]);
		ASSERT_EQ(op.nodes[i], R);
	}
	ASSERT_EQ(kt_cluster_sched_log_count(&cl, replaced), moved + 1);
	/* The scheduler dropped the node and its sessions. */
	Kiln__StatusReply *st = kt_cluster_status(&cl);
	ASSERT(kt_status_node(st, cl.names[V]) == NULL);
	kiln_status_free(st);
	ASSERT_LT(kiln_read(a, sid, "keep.txt", 0, 0, &r), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	/* SIGCONT: the node learns it was forgotten and registers again. */
	kt_cluster_kill_node(&cl, V, SIGCONT);
	for (int i = 0; i < 500 && kt_cluster_sched_log_count(&cl, reg) <= regs; i++)
		usleep(20000);
	ASSERT_GE(kt_cluster_sched_log_count(&cl, reg), regs + 1);
	kt_cluster_wait_nodes(&cl, NNODES);
	fprintf(stderr, "%s registered again %llu ms after the SIGSTOP\n", cl.names[V],
	        (unsigned long long)(kl_now_ms() - t0));
	/* Its sessions stay dropped: the scheduler closes what the node still
	 * holds (the interrupted call dies with its session), including the copy
	 * of the session that was placed again on R, if the late open reached
	 * the node. */
	char closing[200];
	snprintf(closing, sizeof closing, "session=%s closing", sid);
	for (int i = 0; i < 500 && kt_cluster_log_count(&cl, V, closing) == 0; i++)
		usleep(20000);
	ASSERT_EQ(kt_cluster_log_count(&cl, V, closing), 1);
	snprintf(closing, sizeof closing, "session=%s closing", op.ids[0]);
	fprintf(stderr, "the late open of %s reached %s: %s\n", op.ids[0], cl.names[V],
	        kt_cluster_log_count(&cl, V, closing) ? "yes, and its copy was closed" : "no");
	ASSERT_LT(kiln_read(a, sid, "keep.txt", 0, 0, &r), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	free(sid);
	for (int i = 0; i < op.n; i++)
		free(op.ids[i]);
	/* The cluster works, with the node in it. */
	kt_cluster_wait_warm(&cl, V, "ft", 1, 10000);
	sid = open_session(a, "ft", &at);
	ASSERT_EQ(at, V);
	ASSERT_STR_EQ(bash_out(a, sid, "echo back"), "back\n");
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	free(sid);
	/* Nothing is left on it: stopped now, it reports 0 sessions. */
	usleep(500000); /* let the last close land */
	int wst = kt_cluster_stop_node(&cl, V);
	long held = log_last_number(&cl, V, "running calls, ");
	fprintf(stderr, "%s stopped (wait status %#x) holding %ld sessions\n", cl.names[V], wst,
	        held);
	ASSERT_EQ(held, 0);
	check_once(&cl, "after the stopped node");
	kiln_close(a);
}

/* ---- 4. weighted fairness on a saturated node ---- */

enum {
	FSESS = 8,    /* sessions per tenant */
	FDEPTH = 2,   /* calls outstanding per session */
	FWINDOW = 40, /* alpha's calls in the measured window */
};

struct flood {
	kiln_client *k;
	char *sid;
	int tenant; /* 0 alpha, 1 beta */
};

static atomic_bool flooding;
static atomic_int fl_inflight, fl_errors;
static atomic_int fl_done[2];

static void flood_submit(struct flood *f);

static void
flood_cb(void *arg, int err, Kiln__ToolResult *res)
{
	struct flood *f = arg;
	if (err < 0 || res->code != KILN__CODE__OK) {
		fprintf(stderr, "flood call failed: %s\n",
		        err < 0 ? kiln_last_error()->message : res->message);
		atomic_fetch_add(&fl_errors, 1);
	} else {
		atomic_fetch_add(&fl_done[f->tenant], 1);
	}
	kiln_result_free(res);
	if (atomic_load(&flooding))
		flood_submit(f);
	atomic_fetch_sub(&fl_inflight, 1);
}

static void
flood_submit(struct flood *f)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = "sleep 0.1";
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = f->sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	atomic_fetch_add(&fl_inflight, 1);
	if (kiln_call_async(f->k, &tc, flood_cb, f) < 0) {
		atomic_fetch_sub(&fl_inflight, 1);
		atomic_fetch_add(&fl_errors, 1);
	}
}

static kt_cluster fc; /* one node with two slots */

/* Wait until both tenants have more calls queued than half their sessions. */
static void
wait_backlogged(kt_cluster *c)
{
	uint32_t qa = 0, qb = 0;
	for (int i = 0; i < 1500; i++) {
		Kiln__StatusReply *st = kt_cluster_status(c);
		qa = tenant_of(st, "alpha")->queued;
		qb = tenant_of(st, "beta")->queued;
		kiln_status_free(st);
		if (qa > FSESS / 2 && qb > FSESS / 2)
			break;
		usleep(20000);
	}
	fprintf(stderr, "backlog: alpha %u calls queued, beta %u\n", qa, qb);
	ASSERT_GT(qa, FSESS / 2);
	ASSERT_GT(qb, FSESS / 2);
}

TEST(weighted_fairness)
{
	kt_cluster_init(&fc, NULL);
	kt_cluster_start_sched(&fc);
	const char *one[] = {"--slots", "2", "--warm", "20", "--refill-rate", "1000", NULL};
	kt_cluster_add_node(&fc, one);
	kiln_client *k[2] = {kt_cluster_client(&fc, KT_ALPHA), kt_cluster_client(&fc, KT_BETA)};
	struct flood fl[2 * FSESS];
	for (int i = 0; i < 2 * FSESS; i++) {
		fl[i].tenant = i / FSESS;
		fl[i].k = k[fl[i].tenant];
		ASSERT_EQ(kiln_session_open(fl[i].k, NULL, NULL, &fl[i].sid, NULL, 0), 0);
	}
	atomic_store(&flooding, true);
	for (int d = 0; d < FDEPTH; d++)
		for (int i = 0; i < 2 * FSESS; i++)
			flood_submit(&fl[i]);
	/* Saturated: both tenants have calls waiting in the scheduler (the
	 * node's 2 slots are busy). The window is counted in calls, not time. */
	wait_backlogged(&fc);
	int a0 = atomic_load(&fl_done[0]), b0 = atomic_load(&fl_done[1]);
	uint64_t t0 = kl_now_ms();
	for (int i = 0; i < 18000 && atomic_load(&fl_done[0]) - a0 < FWINDOW; i++)
		usleep(10000);
	int a1 = atomic_load(&fl_done[0]), b1 = atomic_load(&fl_done[1]);
	uint64_t window_ms = kl_now_ms() - t0;
	wait_backlogged(&fc); /* still saturated at the end of the window */
	atomic_store(&flooding, false);
	for (int i = 0; i < 6000 && atomic_load(&fl_inflight) > 0; i++)
		usleep(10000);
	ASSERT_EQ(atomic_load(&fl_inflight), 0);
	int da = a1 - a0, db = b1 - b0;
	double ratio = da ? (double)db / da : 0;
	fprintf(stderr,
	        "saturated window (%llu ms): alpha (weight 1) %d calls, beta (weight 3) %d calls, "
	        "ratio %.2f\n",
	        (unsigned long long)window_ms, da, db, ratio);
	ASSERT_EQ(atomic_load(&fl_errors), 0);
	ASSERT_GE(da, FWINDOW);
	ASSERT(ratio >= 2.0 && ratio <= 4.5);
	for (int i = 0; i < 2 * FSESS; i++) {
		ASSERT_EQ(kiln_session_close(fl[i].k, fl[i].sid), 0);
		free(fl[i].sid);
	}
	kiln_close(k[0]);
	kiln_close(k[1]);
}

/* ---- 2. across everything: no call ran twice ---- */

TEST(no_call_ran_twice)
{
	int d1, d2;
	int m1 = kt_cluster_max_runs_per_job(&cl, &d1), m2 = kt_cluster_max_runs_per_job(&fc, &d2);
	fprintf(stderr,
	        "whole run: %d distinct jobs on the failure cluster (at most %d run each), %d on "
	        "the fairness cluster (at most %d run each)\n",
	        d1, m1, d2, m2);
	ASSERT_EQ(m1, 1);
	ASSERT_EQ(m2, 1);
	/* Every node meant to be running still is (none was killed by mistake). */
	kt_cluster *both[] = {&cl, &fc};
	for (int c = 0; c < 2; c++)
		for (int i = 0; i < both[c]->nnodes; i++)
			if (both[c]->nodes[i] > 0)
				ASSERT_EQ(waitpid(both[c]->nodes[i], NULL, WNOHANG), 0);
	ASSERT_GE(d1, 60);
	ASSERT_GE(d1 + d2, 150);
}

TEST(teardown)
{
	if (fc.dir[0]) /* prepared (not when a single test is run by name) */
		kt_cluster_stop(&fc);
	kt_cluster_stop(&cl);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
