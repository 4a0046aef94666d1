/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Faults under load, on a real cluster (kiln-scheduler and kiln-node
 * processes): a randomized, seeded schedule of kill -9s of nodes and of the
 * scheduler (each restarted) while several tenants' sessions and one-shot
 * calls stream in; a node whose link is cut (its own network namespace, a
 * veth pair taken down) and restored; a full workspace; file descriptors
 * exhausted inside a sandbox and in the node itself; a client that stops
 * reading its replies. Throughout, the survivors never crash, every call
 * gets exactly one answer, no call runs twice, every acknowledged effect is
 * there afterwards, and once things settle the test's nodes hold the same
 * cgroups and processes as before, and the mount table is as it was.
 *
 * KILN_FAULTS_SEED fixes the schedule (the seed is printed either way);
 * KILN_FAULTS_SECONDS sets the loaded run's length (default 40).
 */
#include "test.h"

#include "kl_clock.h"
#include "kl_proto.h"
#include "kl_util.h"
#include "kt_cluster.h"
#include "kt_node.h"
#include "kt_proc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Nodes of the loaded run; the link-cut and fd-limit nodes join later. */
enum { N0, N1, N2, NHOST };
static kt_cluster cl;
static int mounts0 = -1; /* mounts before anything started */
static bool private_mounts;

/* The idle state of each loaded-run node: processes in its uid range (its
 * warm sandboxes' inits) and cgroups in its tree. */
static int idle_procs[NHOST], idle_cgroups[NHOST];
/* Every uid range a node of this test held (ranges change across restarts). */
static int ranges[64], nranges;

/* The link-cut network: namespace kfl<pid>, veth kfl<pid>h (host side, 10.213.X.1)
 * and kfl<pid>n (inside, 10.213.X.2). */
static bool have_netns;
static char netns[32], veth_h[16], veth_n[16], host_ip[32], ns_ip[32];
static char no_netns_why[256];

static void
note_range(pid_t pid)
{
	int k = kt_node_uid_range(pid);
	if (k < 0)
		return;
	for (int i = 0; i < nranges; i++)
		if (ranges[i] == k)
			return;
	if (nranges < (int)KL_ARRAY_SIZE(ranges))
		ranges[nranges++] = k;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the scheduler: listening for nodes on every address when a node
 * sits behind the veth pair (a local connection to the host side's own
 * address dies with that link), on loopback otherwise ---- */

static void
start_sched(kt_cluster *c)
{
	char exe[4200], cfg[512], log[512], url[64];
	snprintf(exe, sizeof exe, "%s/kiln-scheduler", c->bindir);
	snprintf(cfg, sizeof cfg, "%s/kiln.ini", c->dir);
	snprintf(log, sizeof log, "%s/scheduler.log", c->dir);
	if (have_netns)
		snprintf(url, sizeof url, "tcp://0.0.0.0:%d", c->node_port);
	else
		kl_strlcpy(url, c->node_url, sizeof url);
	const char *argv[] = {exe, "--config", cfg, "--node-url", url, "--log", "debug", NULL};
	c->sched = kt_spawn(argv, log);
	for (int i = 0; i < 1200; i++) {
		kiln_client *k;
		char err[256];
		if (kiln_connect(c->client_url, KT_ADMIN, &k, err, sizeof err) == 0) {
			kiln_close(k);
			return;
		}
		if (!kt_child_alive(c->sched))
			KT_FAIL("the scheduler exited at start (see %s)", log);
		usleep(25000);
	}
	KT_FAIL("the scheduler did not come up on %s (see %s)", c->client_url, log);
}

/* Wait (up to timeout_ms) until node i is back to its idle counts. */
static void
wait_idle(int i, int timeout_ms)
{
	int p = -1, g = -1;
	for (int t = 0; t < timeout_ms / 100; t++) {
		kt_node_counts(cl.nodes[i], cl.names[i], &p, &g);
		if (p == idle_procs[i] && g == idle_cgroups[i])
			return;
		usleep(100000);
	}
	KT_FAIL("node %s: %d processes and %d cgroups, idle was %d and %d (logs in %s)",
	        cl.names[i], p, g, idle_procs[i], idle_cgroups[i], cl.dir);
}

/* ---- the link-cut network ---- */

static void
netns_remove_stale(void)
{
	/* By name: kfl<pid> of runs whose process is gone (a crashed run). */
	DIR *d = opendir("/run/netns");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid;
		if (sscanf(e->d_name, "kfl%d", &pid) != 1 || (pid != getpid() && kill(pid, 0) == 0))
			continue;
		sh("ip netns del %s 2>/dev/null", e->d_name);
		sh("ip link del %sh 2>/dev/null", e->d_name);
	}
	if (d)
		closedir(d);
}

static void
netns_down(void)
{
	if (!netns[0])
		return;
	sh("ip netns del %s 2>/dev/null", netns);
	sh("ip link del %s 2>/dev/null", veth_h); /* gone with its peer, normally */
}

static void
netns_up(void)
{
	netns_remove_stale();
	if (access("/usr/sbin/ip", X_OK) != 0 && access("/sbin/ip", X_OK) != 0 &&
	    access("/usr/bin/ip", X_OK) != 0) {
		snprintf(no_netns_why, sizeof no_netns_why, "no `ip` command (iproute2)");
		return;
	}
	if (sh("command -v nsenter >/dev/null") != 0) {
		snprintf(no_netns_why, sizeof no_netns_why, "no `nsenter` command (util-linux)");
		return;
	}
	int x = 16 + getpid() % 224;
	snprintf(netns, sizeof netns, "kfl%d", (int)getpid());
	snprintf(veth_h, sizeof veth_h, "kfl%dh", (int)getpid());
	snprintf(veth_n, sizeof veth_n, "kfl%dn", (int)getpid());
	snprintf(host_ip, sizeof host_ip, "10.213.%d.1", x);
	snprintf(ns_ip, sizeof ns_ip, "10.213.%d.2", x);
	int r = sh("ip netns add %s && ip link add %s type veth peer name %s && "
	           "ip link set %s netns %s && ip addr add %s/30 dev %s && ip link set %s up && "
	           "ip -n %s addr add %s/30 dev %s && ip -n %s link set %s up && "
	           "ip -n %s link set lo up",
	           netns, veth_h, veth_n, veth_n, netns, host_ip, veth_h, veth_h, netns, ns_ip,
	           veth_n, netns, veth_n, netns);
	if (r != 0) {
		snprintf(no_netns_why, sizeof no_netns_why,
		         "creating network namespace %s with a veth pair failed (%d)", netns, r);
		netns_down();
		return;
	}
	have_netns = true;
	fprintf(stderr, "link-cut network: %s %s (host) <-> %s %s (in %s)\n", veth_h, host_ip,
	        veth_n, ns_ip, netns);
}

TEST(setup)
{
	kt_require_sandboxes();
	mounts0 = kt_mount_count();
	fprintf(stderr, "mounts of the test's mount namespace (%s): %d\n",
	        private_mounts ? "private" : "the host's", mounts0);
	netns_up();
	kt_cluster_init(&cl, NULL);
	start_sched(&cl);
	const char *plain[] = {"--warm", "3", "--refill-rate", "1000", NULL};
	for (int i = N0; i < NHOST; i++)
		kt_cluster_add_node(&cl, plain);
	for (int i = N0; i < NHOST; i++) {
		kt_cluster_wait_warm(&cl, i, "default", 3, 30000);
		note_range(cl.nodes[i]);
	}
	/* Idle: steady counts (the pool is full, nothing else runs). */
	for (int i = N0; i < NHOST; i++) {
		int p, g, p2 = -2, g2 = -2;
		for (int t = 0; t < 100; t++) {
			kt_node_counts(cl.nodes[i], cl.names[i], &p, &g);
			usleep(200000);
			kt_node_counts(cl.nodes[i], cl.names[i], &p2, &g2);
			if (p == p2 && g == g2)
				break;
		}
		ASSERT_EQ(p, p2);
		ASSERT_EQ(g, g2);
		ASSERT_GE(p, 3);
		idle_procs[i] = p;
		idle_cgroups[i] = g;
		fprintf(stderr, "%s idle: %d processes in uid range %d, %d cgroups\n", cl.names[i],
		        p, kt_node_uid_range(cl.nodes[i]), g);
	}
}

/* ---- asynchronous calls that count their answers ---- */

enum outcome {
	O_OK,          /* a result, code OK */
	O_TOOL_ERROR,  /* a result, the tool failed */
	O_NODE_LOST,   /* a result: the node died mid-call */
	O_UNAVAILABLE, /* a result: its session was dropped before it ran */
	O_NOT_FOUND,   /* refused: no such session (lost with its node) */
	O_REFUSED,     /* refused: UNAVAILABLE (no node, shutting down) */
	O_EXHAUSTED,   /* refused: RESOURCE_EXHAUSTED */
	O_UNKNOWN,     /* no answer, the request went out: outcome unknown */
	O_NOT_SENT,    /* no answer, the request never left */
	O_OTHER,
	O_N
};
static const char *const oname[O_N] = {"ok",        "tool_error", "node_lost", "unavailable",
                                       "not_found", "refused",    "exhausted", "outcome_unknown",
                                       "not_sent",  "other"};

typedef struct rec {
	int answers; /* under pmu */
	int err, code;
	bool unknown;
	char msg[200];
	Kiln__ToolResult *res;
} rec;

#define MAX_RECS 40000
static rec *recs;
static atomic_int nrecs;
static pthread_mutex_t pmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pcv = PTHREAD_COND_INITIALIZER;

static void
rec_cb(void *arg, int err, Kiln__ToolResult *res)
{
	rec *r = arg;
	const kiln_error *e = kiln_last_error();
	pthread_mutex_lock(&pmu);
	if (++r->answers == 1) {
		r->err = err;
		r->res = res;
		r->code = err < 0 ? e->code : (int)res->code;
		if (err < 0) {
			r->unknown = e->outcome_unknown;
			kl_strlcpy(r->msg, e->message, sizeof r->msg);
		}
		res = NULL;
	}
	pthread_cond_broadcast(&pcv);
	pthread_mutex_unlock(&pmu);
	kiln_result_free(res); /* a second answer: counted, checked at the end */
}

static int
classify(const rec *r)
{
	if (r->err == 0)
		switch (r->code) {
		case KILN__CODE__OK:
			return O_OK;
		case KILN__CODE__TOOL_ERROR:
			return O_TOOL_ERROR;
		case KILN__CODE__NODE_LOST:
			return O_NODE_LOST;
		case KILN__CODE__UNAVAILABLE:
			return O_UNAVAILABLE;
		default:
			return O_OTHER;
		}
	switch (r->code) {
	case KILN_NO_ANSWER:
		return r->unknown ? O_UNKNOWN : O_NOT_SENT;
	case KILN__CODE__NOT_FOUND:
		return O_NOT_FOUND;
	case KILN__CODE__UNAVAILABLE:
		return O_REFUSED;
	case KILN__CODE__RESOURCE_EXHAUSTED:
		return O_EXHAUSTED;
	default:
		return O_OTHER;
	}
}

/* Send tc and wait for its one answer (failing the test after 180 s). */
static rec *
call(kiln_client *k, Kiln__ToolCall *tc)
{
	int i = atomic_fetch_add(&nrecs, 1);
	if (i >= MAX_RECS)
		return NULL;
	rec *r = &recs[i];
	if (kiln_call_async(k, tc, rec_cb, r) < 0) {
		/* Refused locally: no callback; this return is its one answer. */
		const kiln_error *e = kiln_last_error();
		pthread_mutex_lock(&pmu);
		r->answers = 1;
		r->err = e->err;
		r->code = e->code;
		r->unknown = e->outcome_unknown;
		kl_strlcpy(r->msg, e->message, sizeof r->msg);
		pthread_mutex_unlock(&pmu);
		return r;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 180;
	pthread_mutex_lock(&pmu);
	while (r->answers == 0)
		if (pthread_cond_timedwait(&pcv, &pmu, &ts) != 0)
			break;
	int a = r->answers;
	pthread_mutex_unlock(&pmu);
	if (a == 0)
		KT_FAIL("a call got no answer in 180 s (logs in %s)", cl.dir);
	return r;
}

static char *
out_of(const rec *r, char *buf, size_t len)
{
	size_t n = r->res ? KL_MIN(r->res->output.len, len - 1) : 0;
	if (n)
		memcpy(buf, r->res->output.data, n);
	buf[n] = 0;
	return buf;
}

static rec *
bash(kiln_client *k, const char *sid, const char *cmd)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = (char *)cmd;
	b.timeout_ms = 120000;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)(sid ? sid : "");
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	return call(k, &tc);
}

/* ---- 1. the loaded run under a randomized kill schedule ---- */

enum mark_state { M_OK, M_MAYBE, M_NOT_RUN };

typedef struct tally {
	atomic_int calls[O_N], opens_ok, opens_failed[O_N], sessions_checked, mismatches;
	atomic_int abandoned_not_found;
} tally;
static tally ty;
static atomic_bool loading;
static uint64_t seed;

/* Sessions given up after NOT_FOUND, checked afterwards against the list. */
static pthread_mutex_t ab_mu = PTHREAD_MUTEX_INITIALIZER;
static char *abandoned[4096];
static int nabandoned;

typedef struct worker {
	int id;
	kiln_client *k;
	const char *tenant;
	unsigned rnd;
	int seq;
	pthread_t th;
} worker;

static unsigned
rnd(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static int
note(rec *r, const char *want)
{
	int o = classify(r);
	atomic_fetch_add(&ty.calls[o], 1);
	if (o == O_OTHER)
		fprintf(stderr, "unexpected answer: err %d code %s: %s\n", r->err,
		        r->code >= 0 ? kl_code_name(r->code) : "none",
		        r->err ? r->msg : r->res->message);
	if (o == O_OK && want) {
		char out[256];
		if (strcmp(out_of(r, out, sizeof out), want)) {
			atomic_fetch_add(&ty.mismatches, 1);
			fprintf(stderr,
			        "result inconsistent with its call: want \"%s\", got \"%s\"\n",
			        want, out);
		}
	}
	return o;
}

/* Check a session's runs.txt against what its calls were told. */
static void
check_runs(const char *sid, const char *text, char marks[][32], const int *state, int n)
{
	int seen[16] = {0};
	char copy[4096];
	kl_strlcpy(copy, text, sizeof copy);
	for (char *save, *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		int j;
		for (j = 0; j < n && strcmp(marks[j], l); j++)
			;
		if (j == n)
			KT_FAIL("session %s: runs.txt has a line no call wrote: \"%s\"", sid, l);
		seen[j]++;
	}
	for (int j = 0; j < n; j++) {
		bool ok = state[j] == M_OK      ? seen[j] == 1
		          : state[j] == M_MAYBE ? seen[j] <= 1
		                                : seen[j] == 0;
		if (!ok)
			KT_FAIL("session %s: mark %s (%s) appears %d times in runs.txt", sid,
			        marks[j],
			        state[j] == M_OK      ? "acknowledged"
			        : state[j] == M_MAYBE ? "maybe run"
			                              : "not run",
			        seen[j]);
	}
	atomic_fetch_add(&ty.sessions_checked, 1);
}

static void
session_flow(worker *w)
{
	char *sid = NULL, err[256];
	if (kiln_session_open(w->k, NULL, NULL, &sid, err, sizeof err) < 0) {
		rec r = {.err = kiln_last_error()->err,
		         .code = kiln_last_error()->code,
		         .unknown = kiln_last_error()->outcome_unknown};
		atomic_fetch_add(&ty.opens_failed[classify(&r)], 1);
		return;
	}
	atomic_fetch_add(&ty.opens_ok, 1);
	char marks[16][32], want[48], cmd[160];
	int state[16], nm = 0;
	bool alive = true, wrote_ok = false;
	char last_write[32] = "";
	int steps = 3 + (int)(rnd(&w->rnd) % 5);
	for (int i = 0; i < steps && alive && nm < 16; i++) {
		rec *r;
		char m[32];
		snprintf(m, sizeof m, "w%d-%d", w->id, w->seq++);
		snprintf(want, sizeof want, "%s\n", m);
		int kind = i == 0 ? 0 : (int)(rnd(&w->rnd) % 4);
		if (kind == 0) { /* bash, appending its mark: each run leaves one line */
			snprintf(cmd, sizeof cmd, "sleep 0.%u; echo %s >> runs.txt; echo %s",
			         rnd(&w->rnd) % 4, m, m);
			r = bash(w->k, sid, cmd);
		} else if (kind == 1) {
			const char *argv[] = {"sh", "-c", cmd, NULL};
			snprintf(cmd, sizeof cmd, "echo %s", m);
			Kiln__ExecInput e = KILN__EXEC_INPUT__INIT;
			e.n_argv = 3;
			e.argv = (char **)argv;
			Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
			tc.session_id = sid;
			tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
			tc.exec = &e;
			r = call(w->k, &tc);
		} else if (kind == 2 || !wrote_ok) {
			Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
			in.file_path = "f.txt";
			in.content.data = (uint8_t *)want;
			in.content.len = strlen(want);
			Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
			tc.session_id = sid;
			tc.tool_case = KILN__TOOL_CALL__TOOL_WRITE;
			tc.write = &in;
			r = call(w->k, &tc);
			kind = 2;
		} else {
			Kiln__ReadInput in = KILN__READ_INPUT__INIT;
			in.file_path = "f.txt";
			Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
			tc.session_id = sid;
			tc.tool_case = KILN__TOOL_CALL__TOOL_READ;
			tc.read = &in;
			r = call(w->k, &tc);
		}
		if (!r)
			break;
		/* An acknowledged write is what a later read returns. */
		int o = note(r, kind == 2 ? NULL : kind == 3 ? last_write : want);
		if (kind == 2)
			wrote_ok = o == O_OK;
		if (kind == 2 && o == O_OK)
			kl_strlcpy(last_write, want, sizeof last_write);
		if (kind == 2 && o != O_OK)
			wrote_ok = false; /* it may have run: the file's content is unknown */
		if (kind == 0) {
			kl_strlcpy(marks[nm], m, sizeof marks[nm]);
			state[nm++] = o == O_OK                            ? M_OK
			              : o == O_NODE_LOST || o == O_UNKNOWN ? M_MAYBE
			                                                   : M_NOT_RUN;
		}
		if (o == O_NODE_LOST || o == O_UNAVAILABLE)
			alive = false; /* the session went with its node */
		if (o == O_NOT_FOUND) {
			alive = false;
			pthread_mutex_lock(&ab_mu);
			if (nabandoned < (int)KL_ARRAY_SIZE(abandoned))
				abandoned[nabandoned++] = strdup(sid);
			pthread_mutex_unlock(&ab_mu);
			atomic_fetch_add(&ty.abandoned_not_found, 1);
		}
		if (r->res)
			kiln_result_free(r->res);
		r->res = NULL;
	}
	if (alive) {
		rec *r = bash(w->k, sid, "cat runs.txt 2>/dev/null; true");
		if (r && note(r, NULL) == O_OK) {
			char out[4096];
			check_runs(sid, out_of(r, out, sizeof out), marks, state, nm);
		}
		if (r && r->res) {
			kiln_result_free(r->res);
			r->res = NULL;
		}
		kiln_session_close(w->k, sid); /* may fail: swept afterwards */
	}
	free(sid);
}

static void
oneshot_flow(worker *w)
{
	char m[32], want[48], cmd[64];
	snprintf(m, sizeof m, "w%d-%d", w->id, w->seq++);
	snprintf(want, sizeof want, "%s\n", m);
	snprintf(cmd, sizeof cmd, "sleep 0.%u; echo %s", rnd(&w->rnd) % 3, m);
	rec *r = bash(w->k, NULL, cmd);
	if (!r)
		return;
	note(r, want);
	if (r->res)
		kiln_result_free(r->res);
	r->res = NULL;
}

static void *
worker_run(void *arg)
{
	worker *w = arg;
	while (atomic_load(&loading) && atomic_load(&nrecs) < MAX_RECS - 64) {
		if (rnd(&w->rnd) % 10 < 6)
			session_flow(w);
		else
			oneshot_flow(w);
		usleep(1000 * (rnd(&w->rnd) % 30));
	}
	return NULL;
}

/* The ms to wait, uniform in [lo, hi]. */
static unsigned
pick(unsigned *s, unsigned lo, unsigned hi)
{
	return lo + rnd(s) % (hi - lo + 1);
}

/* kill -9 of pid, which must still be running (a survivor that crashed
 * earlier would show here); returns once it is reaped. */
static void
kill9(pid_t pid, const char *what)
{
	char buf[64];
	if (!kt_child_alive(pid))
		KT_FAIL("%s (pid %d) died before its kill (logs in %s)", what, (int)pid, cl.dir);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	int st = kt_wait_pid(pid, 20000);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		KT_FAIL("%s ended with %s, not the kill", what, kt_wait_text(st, buf, sizeof buf));
}

static void
check_survivors(const char *when)
{
	if (!kt_child_alive(cl.sched))
		KT_FAIL("%s: the scheduler is gone (logs in %s)", when, cl.dir);
	for (int i = N0; i < NHOST; i++)
		if (cl.nodes[i] > 0 && !kt_child_alive(cl.nodes[i]))
			KT_FAIL("%s: node %s is gone (logs in %s)", when, cl.names[i], cl.dir);
}

/* The sessions the scheduler lists for alpha and beta (the admin token may
 * not list sessions). */
static Kiln__SessionListReply *
list_sessions(kiln_client *k)
{
	Kiln__SessionListReply *l;
	if (kiln_session_list(k, &l) < 0)
		KT_FAIL("list: %s", kiln_last_error()->message);
	return l;
}

static bool
listed(kiln_client *a, kiln_client *b, const char *sid)
{
	bool found = false;
	kiln_client *ks[] = {a, b};
	for (int t = 0; t < 2; t++) {
		Kiln__SessionListReply *l = list_sessions(ks[t]);
		for (size_t j = 0; j < l->n_sessions; j++)
			found |= !strcmp(l->sessions[j]->session_id, sid);
		kiln_list_free(l);
	}
	return found;
}

/* Close every session the scheduler still lists (calls whose close went
 * out with a killed scheduler, opens whose answer was lost). */
static int
sweep_sessions(kiln_client *a, kiln_client *b)
{
	kiln_client *ks[] = {a, b};
	int n = 0;
	for (int t = 0; t < 2; t++) {
		Kiln__SessionListReply *l = list_sessions(ks[t]);
		for (size_t j = 0; j < l->n_sessions; j++)
			n += kiln_session_close(ks[t], l->sessions[j]->session_id) == 0;
		kiln_list_free(l);
	}
	return n;
}

TEST(loaded_run_with_kills)
{
	const char *env = getenv("KILN_FAULTS_SEED");
	seed = env ? strtoull(env, NULL, 0) : (kl_wall_ms() ^ (uint64_t)getpid() << 20);
	env = getenv("KILN_FAULTS_SECONDS");
	int seconds = env ? atoi(env) : 40;
	fprintf(stderr, "fault schedule seed %llu (KILN_FAULTS_SEED=%llu reproduces it), %d s\n",
	        (unsigned long long)seed, (unsigned long long)seed, seconds);
	unsigned s = (unsigned)seed;
	kiln_client *ka = kt_cluster_client(&cl, KT_ALPHA), *kb = kt_cluster_client(&cl, KT_BETA);
	enum { W = 6 };
	worker w[W];
	atomic_store(&loading, true);
	for (int i = 0; i < W; i++) {
		w[i] = (worker){.id = i, .k = i % 2 ? kb : ka, .rnd = (unsigned)(seed >> 7) + i};
		w[i].tenant = i % 2 ? "beta" : "alpha";
		ASSERT_EQ(pthread_create(&w[i].th, NULL, worker_run, &w[i]), 0);
	}
	/* The schedule: node kills and scheduler kills in a seeded order, at
	 * seeded moments, spread over the run. */
	enum { EV_NODE, EV_SCHED };
	int evs[8] = {EV_NODE, EV_NODE, EV_NODE, EV_SCHED, EV_SCHED};
	int nev = 5;
	for (int i = nev - 1; i > 0; i--) {
		int j = (int)(rnd(&s) % (unsigned)(i + 1)), t = evs[i];
		evs[i] = evs[j];
		evs[j] = t;
	}
	uint64_t t0 = kl_now_ms(), span = (uint64_t)seconds * 1000 / (uint64_t)(nev + 1);
	int node_kills = 0, sched_kills = 0;
	for (int e = 0; e < nev; e++) {
		/* Each event at a random moment of its slot of the run. */
		uint64_t at =
		        t0 + span * (uint64_t)e + pick(&s, (unsigned)span / 3, (unsigned)span);
		while (kl_now_ms() < at)
			usleep(50000);
		check_survivors("before a kill");
		uint64_t tk = kl_now_ms();
		if (evs[e] == EV_NODE) {
			int i = (int)(rnd(&s) % NHOST);
			unsigned down = pick(&s, 100, 2500);
			note_range(cl.nodes[i]);
			kill9(cl.nodes[i], cl.names[i]);
			cl.nodes[i] = 0;
			fprintf(stderr,
			        "[%6.1f s] kill -9 %s (%d calls so far); restart in %u ms\n",
			        (tk - t0) / 1000.0, cl.names[i], atomic_load(&nrecs), down);
			usleep(down * 1000);
			kt_cluster_restart_node(&cl, i);
			node_kills++;
		} else {
			unsigned down = pick(&s, 100, 2000);
			kill9(cl.sched, "the scheduler");
			cl.sched = 0;
			fprintf(stderr,
			        "[%6.1f s] kill -9 the scheduler (%d calls so far); restart in %u "
			        "ms\n",
			        (tk - t0) / 1000.0, atomic_load(&nrecs), down);
			usleep(down * 1000);
			start_sched(&cl);
			sched_kills++;
		}
		kt_cluster_wait_nodes(&cl, NHOST);
		for (int i = N0; i < NHOST; i++)
			note_range(cl.nodes[i]);
		fprintf(stderr, "[%6.1f s] all %d nodes ready again\n", (kl_now_ms() - t0) / 1000.0,
		        NHOST);
	}
	while (kl_now_ms() < t0 + (uint64_t)seconds * 1000)
		usleep(50000);
	atomic_store(&loading, false);
	for (int i = 0; i < W; i++)
		pthread_join(w[i].th, NULL);
	check_survivors("after the run");
	usleep(1000000); /* a late second answer would show now */
	int n = atomic_load(&nrecs), answered_once = 0, twice = 0;
	pthread_mutex_lock(&pmu);
	for (int i = 0; i < n && i < MAX_RECS; i++) {
		answered_once += recs[i].answers == 1;
		twice += recs[i].answers > 1;
		kiln_result_free(recs[i].res);
		recs[i].res = NULL;
	}
	pthread_mutex_unlock(&pmu);
	n = KL_MIN(n, MAX_RECS);
	fprintf(stderr,
	        "loaded run: %d node kills, %d scheduler kills; %d calls, %d answered exactly "
	        "once, %d more than once\n",
	        node_kills, sched_kills, n, answered_once, twice);
	for (int o = 0; o < O_N; o++)
		fprintf(stderr, "  calls %-16s %6d   opens failed %-16s %4d\n", oname[o],
		        atomic_load(&ty.calls[o]), oname[o], atomic_load(&ty.opens_failed[o]));
	fprintf(stderr,
	        "  sessions opened %d, runs.txt checked in %d; results inconsistent with their "
	        "call: %d\n",
	        atomic_load(&ty.opens_ok), atomic_load(&ty.sessions_checked),
	        atomic_load(&ty.mismatches));
	ASSERT_EQ(answered_once, n);
	ASSERT_EQ(twice, 0);
	ASSERT_EQ(atomic_load(&ty.mismatches), 0);
	ASSERT_EQ(atomic_load(&ty.calls[O_OTHER]), 0);
	ASSERT_EQ(atomic_load(&ty.opens_failed[O_OTHER]), 0);
	ASSERT_GE(atomic_load(&ty.calls[O_OK]), 100);
	ASSERT_GE(atomic_load(&ty.sessions_checked), 10);
	int distinct, max = kt_cluster_max_runs_per_job(&cl, &distinct);
	fprintf(stderr, "  %d distinct jobs executed on the nodes, at most %d time(s) each\n",
	        distinct, max);
	ASSERT_EQ(max, 1);
	/* OK results are results of jobs that ran. */
	ASSERT_GE(distinct, atomic_load(&ty.calls[O_OK]));
	/* Sessions abandoned after NOT_FOUND that the scheduler still lists:
	 * it answered NOT_FOUND for a session it later adopted again. */
	int back = 0;
	for (int i = 0; i < nabandoned; i++) {
		if (listed(ka, kb, abandoned[i])) {
			back++;
			fprintf(stderr, "  session %s answered NOT_FOUND, yet still exists\n",
			        abandoned[i]);
		}
		free(abandoned[i]);
	}
	fprintf(stderr, "  %d sessions given up after NOT_FOUND, %d of them still listed\n",
	        nabandoned, back);
	ASSERT_EQ(back, 0);
	/* The cluster works on every node, and then holds what it held idle. */
	int swept = sweep_sessions(ka, kb);
	fprintf(stderr, "  closed %d sessions left open by lost answers\n", swept);
	for (int i = N0; i < NHOST; i++) {
		kt_cluster_wait_warm(&cl, i, "default", 3, 30000);
		wait_idle(i, 60000);
	}
	for (int k = 0; k < nranges; k++) {
		bool free_;
		int p = kt_range_procs(ranges[k], &free_);
		if (free_)
			ASSERT_EQ(p, 0); /* a killed node's orphans were reclaimed */
	}
	fprintf(stderr, "after recovery: every node back to its idle processes and cgroups; "
	                "no process left in a released uid range\n");
	kiln_close(ka);
	kiln_close(kb);
}

/* ---- helpers for the single-fault tests ---- */

/* Open a session (limits may be NULL) on node `want` (-1: anywhere);
 * returns its id and node index. */
static char *
open_on(kiln_client *k, const char *tmpl, const Kiln__Limits *lim, int want, int *ret_node)
{
	for (int tries = 0; tries < 200; tries++) {
		Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
		o.template_ = (char *)(tmpl ? tmpl : "");
		o.limits = (Kiln__Limits *)lim;
		Kiln__SessionOpened *op;
		if (kiln_session_open_full(k, &o, &op) < 0)
			KT_FAIL("open: %s", kiln_last_error()->message);
		char *id = strdup(op->session->session_id);
		int at = kt_cluster_node_index(&cl, op->session->node_id);
		kiln_opened_free(op);
		if (want < 0 || at == want) {
			*ret_node = at;
			return id;
		}
		ASSERT_EQ(kiln_session_close(k, id), 0);
		free(id);
	}
	KT_FAIL("no session landed on node %d in 200 opens", want);
}

/* Run a bash command that must succeed; its output (static buffer). */
static const char *
bash_ok(kiln_client *k, const char *sid, const char *cmd)
{
	static char buf[8192];
	Kiln__ToolResult *r;
	if (kiln_bash(k, sid, cmd, 0, &r) < 0)
		KT_FAIL("%s: %s", cmd, kiln_last_error()->message);
	if (r->code != KILN__CODE__OK)
		KT_FAIL("%s: %s: %s", cmd, kl_code_name(r->code), r->message);
	size_t n = KL_MIN(r->output.len, sizeof buf - 1);
	if (n)
		memcpy(buf, r->output.data, n);
	buf[n] = 0;
	kiln_result_free(r);
	return buf;
}

/* Start a bash call; rec_wait waits for its answer. */
static rec *
bash_async(kiln_client *k, const char *sid, const char *cmd)
{
	int i = atomic_fetch_add(&nrecs, 1);
	ASSERT_LT(i, MAX_RECS);
	rec *r = &recs[i];
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = (char *)cmd;
	b.timeout_ms = 120000;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	if (kiln_call_async(k, &tc, rec_cb, r) < 0)
		KT_FAIL("call_async: %s", kiln_last_error()->message);
	return r;
}

static uint64_t
rec_wait(rec *r, int timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	pthread_mutex_lock(&pmu);
	while (r->answers == 0)
		if (pthread_cond_timedwait(&pcv, &pmu, &ts) != 0)
			break;
	int a = r->answers;
	pthread_mutex_unlock(&pmu);
	if (!a)
		KT_FAIL("no answer within %d ms (logs in %s)", timeout_ms, cl.dir);
	return kl_now_ms();
}

static int
starts_on(int i)
{
	return kt_cluster_log_count(&cl, i, " start tool=");
}

static void
wait_starts_on(int i, int want)
{
	for (int t = 0; t < 1500 && starts_on(i) < want; t++)
		usleep(20000);
	ASSERT_GE(starts_on(i), want);
}

/* ---- 2. a full workspace ---- */

TEST(full_workspace)
{
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA), *b = kt_cluster_client(&cl, KT_BETA);
	Kiln__Limits lim = KILN__LIMITS__INIT;
	lim.workspace_bytes = 2u << 20;
	int at, at2;
	char *sid = open_on(a, NULL, &lim, -1, &at);
	char *other = open_on(b, NULL, NULL, at, &at2);
	ASSERT_STR_EQ(bash_ok(b, other, "echo before > o.txt; cat o.txt"), "before\n");
	/* 3 MiB into a 2 MiB workspace: ENOSPC inside, as on any full disk. */
	const char *out = bash_ok(a, sid,
	                          "head -c 3M /dev/zero > big; echo rc=$?; "
	                          "df -k /workspace | tail -1 | awk '{print $2}'");
	fprintf(stderr, "3 MiB into a 2 MiB workspace: %s", out);
	ASSERT_CONTAINS(out, "No space left on device");
	ASSERT_CONTAINS(out, "rc=1");
	ASSERT_CONTAINS(out, "\n2048\n");
	/* The write tool on the full workspace: a clear error. */
	static char blob[512 << 10];
	memset(blob, 'x', sizeof blob);
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_write(a, sid, "more.bin", blob, sizeof blob, &r), 0);
	fprintf(stderr, "write tool on the full workspace: %s: %s\n", kl_code_name(r->code),
	        r->message);
	ASSERT_EQ(r->code, KILN__CODE__TOOL_ERROR);
	ASSERT(r->is_error);
	ASSERT(strcasestr(r->message, "no space left on device") != NULL);
	kiln_result_free(r);
	/* It left nothing behind (no partial file, no temporary). */
	ASSERT_STR_EQ(bash_ok(a, sid, "ls -A"), "big\n");
	/* The node and the session's neighbour carry on. */
	ASSERT(kt_child_alive(cl.nodes[at]));
	ASSERT_STR_EQ(bash_ok(b, other, "cat o.txt; echo after >> o.txt; wc -l < o.txt"),
	              "before\n2\n");
	/* Space freed: the session works again. */
	ASSERT_STR_EQ(bash_ok(a, sid, "rm big; echo freed"), "freed\n");
	ASSERT_EQ(kiln_write(a, sid, "more.bin", blob, sizeof blob, &r), 0);
	ASSERT_EQ(r->code, KILN__CODE__OK);
	kiln_result_free(r);
	ASSERT_STR_EQ(bash_ok(a, sid, "wc -c < more.bin; head -c 1M /dev/zero > again && echo ok"),
	              "524288\nok\n");
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	ASSERT_EQ(kiln_session_close(b, other), 0);
	free(sid);
	free(other);
	kiln_close(a);
	kiln_close(b);
}

/* ---- 3. file descriptors exhausted: in a sandbox, and in the node ---- */

TEST(fds_exhausted_in_a_sandbox)
{
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA);
	int at;
	char *sid = open_on(a, NULL, NULL, -1, &at);
	pid_t np = cl.nodes[at];
	ASSERT_STR_EQ(bash_ok(a, sid, "echo warm"), "warm\n"); /* the shell's pipes exist */
	kt_cluster_wait_warm(&cl, at, "default", 3, 30000);    /* the pool has refilled */
	int fds0 = kt_proc_fd_count(np);
	/* A child of the shell opens until EMFILE at the soft limit, raises
	 * it to the hard limit, opens on until EMFILE again, and cannot go
	 * past the hard limit. */
	const char *out = bash_ok(
	        a, sid,
	        "bash -c 'n=0; while exec {fd}</dev/null; do n=$((n+1)); done 2>err; "
	        "echo soft=$(ulimit -Sn) hard=$(ulimit -Hn) opened=$n; tail -1 err; "
	        "ulimit -n $(ulimit -Hn) && while exec {fd}</dev/null; do n=$((n+1)); done 2>err; "
	        "echo raised opened=$n; tail -1 err; ulimit -n $(( $(ulimit -Hn) + 1 )) 2>&1 "
	        "| sed s/.*ulimit:/ulimit:/'");
	fprintf(stderr, "fd exhaustion in a sandbox:\n%s", out);
	/* Hard limits are only lowered: 65536, or the node's own if lower. */
	struct rlimit nl;
	ASSERT_EQ(prlimit(np, RLIMIT_NOFILE, NULL, &nl), 0);
	long hard = KL_MIN((long)nl.rlim_max, 65536L);
	char want[64];
	snprintf(want, sizeof want, "soft=4096 hard=%ld opened=", hard);
	ASSERT_CONTAINS(out, want);
	ASSERT_CONTAINS(out, "Too many open files");
	ASSERT_CONTAINS(out, "cannot modify limit");
	int opened = 0, raised = 0;
	ASSERT(sscanf(strstr(out, "opened="), "opened=%d", &opened) == 1);
	ASSERT(sscanf(strstr(out, "raised opened="), "raised opened=%d", &raised) == 1);
	ASSERT_GT(opened, 4000);
	ASSERT_LT(opened, 4096);
	ASSERT_GT(raised, hard - 100);
	ASSERT_LT(raised, hard);
	/* Contained: the node's own descriptors did not move, and it serves. */
	ASSERT_STR_EQ(bash_ok(a, sid, "rm err; echo fine"), "fine\n");
	kt_cluster_wait_warm(&cl, at, "default", 3, 30000);
	int fds1 = kt_proc_fd_count(np);
	fprintf(stderr, "node %s holds %d fds (%d before)\n", cl.names[at], fds1, fds0);
	ASSERT_LE(fds1, fds0 + 4);
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	free(sid);
	kiln_close(a);
}

TEST(fds_exhausted_in_the_node)
{
	/* A node of its own, the only one with templates "fdt" (one kept warm)
	 * and "fdc" (cold starts only). */
	const char *extra[] = {"--warm",        "0",          "--template",
	                       "fdt:host:1",    "--template", "fdc:host:0",
	                       "--refill-rate", "50",         NULL};
	int F = kt_cluster_add_node(&cl, extra);
	pid_t np = cl.nodes[F];
	note_range(np);
	kt_cluster_wait_warm(&cl, F, "fdt", 1, 30000);
	usleep(300000);
	int fds0 = kt_proc_fd_count(np);
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA);
	kiln_set_timeout(a, 60000); /* a node that never answers fails the test, not hangs it */
	/* Not one descriptor free: a cold start cannot even begin, and the open
	 * that waits for it is answered. */
	struct rlimit lim = {(rlim_t)fds0, 256};
	ASSERT_EQ(prlimit(np, RLIMIT_NOFILE, &lim, NULL), 0);
	Kiln__SessionOpen co = KILN__SESSION_OPEN__INIT;
	co.template_ = "fdc";
	Kiln__SessionOpened *cop;
	uint64_t t0 = kl_now_ms();
	ASSERT_LT(kiln_session_open_full(a, &co, &cop), 0);
	fprintf(stderr, "cold start on a node without a free descriptor: refused in %llu ms: %s\n",
	        (unsigned long long)(kl_now_ms() - t0), kiln_last_error()->message);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__INTERNAL);
	ASSERT_CONTAINS(kiln_last_error()->message, "Too many open files");
	ASSERT(kt_child_alive(np));
	/* 256 descriptors: a few dozen sessions exhaust them. */
	lim.rlim_cur = 256;
	ASSERT_EQ(prlimit(np, RLIMIT_NOFILE, &lim, NULL), 0);
	char *ids[256];
	int n = 0, refused = 0;
	char why[512] = "";
	while (n < 240) {
		Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
		o.template_ = "fdt";
		Kiln__SessionOpened *op;
		if (kiln_session_open_full(a, &o, &op) < 0) {
			const kiln_error *e = kiln_last_error();
			kl_strlcpy(why, e->message, sizeof why);
			fprintf(stderr, "  open refused: %s\n", why);
			ASSERT(e->code == KILN__CODE__RESOURCE_EXHAUSTED ||
			       e->code == KILN__CODE__INTERNAL ||
			       e->code == KILN__CODE__UNAVAILABLE);
			if (++refused >= 3)
				break;
			continue;
		}
		ids[n++] = strdup(op->session->session_id);
		kiln_opened_free(op);
	}
	int fds1 = kt_proc_fd_count(np);
	fprintf(stderr,
	        "node limited to 256 fds (%d open before): %d sessions opened, then refused: %s; "
	        "it holds %d fds\n",
	        fds0, n, why, fds1);
	ASSERT_GE(refused, 1);
	ASSERT_GE(n, 5);
	ASSERT(strcasestr(why, "open files") || strcasestr(why, "descriptor"));
	ASSERT(kt_child_alive(np));
	/* The sessions it holds still answer, or fail cleanly. */
	int ok = 0, failed = 0;
	for (int i = 0; i < n; i++) {
		Kiln__ToolResult *r = NULL;
		if (kiln_bash(a, ids[i], "echo alive", 0, &r) == 0 && r->code == KILN__CODE__OK &&
		    r->output.len == 6 && !memcmp(r->output.data, "alive\n", 6)) {
			ok++;
		} else {
			if (!failed++)
				fprintf(stderr,
				        "  a call at the limit: %s: %s (%zu bytes of output)\n",
				        r ? kl_code_name(r->code) : "refused",
				        r ? r->message : kiln_last_error()->message,
				        r ? r->output.len : 0);
			/* A clean failure says why; it is no tool outcome (OK, exit 127). */
			ASSERT(r != NULL);
			ASSERT(r->code == KILN__CODE__INTERNAL ||
			       r->code == KILN__CODE__RESOURCE_EXHAUSTED);
			ASSERT(strcasestr(r->message, "open files") != NULL);
		}
		kiln_result_free(r);
	}
	fprintf(stderr, "  calls in its %d sessions at the limit: %d ok, %d failed cleanly\n", n,
	        ok, failed);
	ASSERT(kt_child_alive(np));
	/* Closing three quarters of them gives the node room again (the
	 * remaining ones' shells need descriptors too). */
	for (int i = n / 4; i < n; i++) {
		ASSERT_EQ(kiln_session_close(a, ids[i]), 0);
		free(ids[i]);
	}
	n /= 4;
	char *sid = NULL;
	for (int t = 0; t < 100 && !sid; t++) {
		Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
		o.template_ = "fdt";
		Kiln__SessionOpened *op;
		if (kiln_session_open_full(a, &o, &op) == 0) {
			sid = strdup(op->session->session_id);
			kiln_opened_free(op);
		} else {
			usleep(100000);
		}
	}
	ASSERT(sid != NULL);
	ASSERT_STR_EQ(bash_ok(a, sid, "echo recovered"), "recovered\n");
	for (int i = 0; i < n; i++)
		ASSERT_STR_EQ(bash_ok(a, ids[i], "echo ok"), "ok\n");
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	free(sid);
	for (int i = 0; i < n; i++) {
		ASSERT_EQ(kiln_session_close(a, ids[i]), 0);
		free(ids[i]);
	}
	kt_cluster_wait_warm(&cl, F, "fdt", 1, 30000);
	int fds2 = -1;
	for (int t = 0; t < 100 && (fds2 = kt_proc_fd_count(np)) > fds0 + 4; t++)
		usleep(100000);
	fprintf(stderr, "  every session closed: the node holds %d fds (%d before)\n", fds2, fds0);
	ASSERT_LE(fds2, fds0 + 4);
	char buf[64];
	int wst = kt_cluster_stop_node(&cl, F);
	fprintf(stderr, "%s stopped: %s\n", cl.names[F], kt_wait_text(wst, buf, sizeof buf));
	ASSERT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	kiln_close(a);
}

/* ---- 4. a client that stops reading ---- */

/* A raw SP (nng's TCP wire) REQ peer with a tiny receive buffer: it sends
 * requests and never reads a reply, as a stuck or malicious client would. */
static int
sp_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_GE(fd, 0);
	int small = 4096;
	ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
	struct timeval tv = {10, 0};
	ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
	ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	static const uint8_t hello[8] = {0, 'S', 'P', 0, 0, 48 /* REQ v0 */, 0, 0};
	ASSERT_EQ(write(fd, hello, sizeof hello), (ssize_t)sizeof hello);
	uint8_t peer[8];
	size_t got = 0;
	while (got < sizeof peer) {
		ssize_t k = read(fd, peer + got, sizeof peer - got);
		ASSERT_GT(k, 0);
		got += (size_t)k;
	}
	ASSERT_EQ(peer[5], 49); /* REP v0 */
	return fd;
}

/* An exec call of sh -c cmd (exec keeps 1 MiB of stdout and of stderr). */
static bool
sp_call(int fd, uint32_t id, const char *token, const char *cmd)
{
	const char *argv[] = {"sh", "-c", cmd, NULL};
	Kiln__ExecInput ex = KILN__EXEC_INPUT__INIT;
	ex.n_argv = 3;
	ex.argv = (char **)argv;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = "";
	tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc.exec = &ex;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.token = (char *)token;
	req.request_id = id;
	req.op_case = KILN__CLIENT_REQUEST__OP_CALL;
	req.call = &tc;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REQUEST;
	e.client_request = &req;
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode(&e, &buf, &len), 0);
	/* 64-bit big-endian length, then the REQ header (the request id with
	 * its top bit set), then the body. */
	uint8_t hdr[12];
	uint64_t total = len + 4;
	for (int i = 0; i < 8; i++)
		hdr[i] = (uint8_t)(total >> (56 - 8 * i));
	uint32_t rid = id | 0x80000000u;
	for (int i = 0; i < 4; i++)
		hdr[8 + i] = (uint8_t)(rid >> (24 - 8 * i));
	/* false when the scheduler closed the connection (EPIPE, ECONNRESET) */
	bool ok = send(fd, hdr, sizeof hdr, MSG_NOSIGNAL) == (ssize_t)sizeof hdr &&
	          send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len;
	if (!ok && errno != EPIPE && errno != ECONNRESET)
		KT_FAIL("sending to the scheduler: %s", strerror(errno));
	free(buf);
	return ok;
}

/* The peer closed the connection (replies may still sit unread in ours). */
static bool
sp_closed(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Nothing of tenant name queued or running. */
static bool
tenant_idle(const char *name)
{
	Kiln__StatusReply *st = kt_cluster_status(&cl);
	bool idle = false;
	for (size_t i = 0; i < st->n_tenants; i++)
		if (!strcmp(st->tenants[i]->name, name))
			idle = !st->tenants[i]->inflight && !st->tenants[i]->queued;
	kiln_status_free(st);
	return idle;
}

static uint64_t
tenant_done(const char *name)
{
	Kiln__StatusReply *st = kt_cluster_status(&cl);
	uint64_t d = 0;
	for (size_t i = 0; i < st->n_tenants; i++)
		if (!strcmp(st->tenants[i]->name, name))
			d = st->tenants[i]->calls_done;
	kiln_status_free(st);
	return d;
}

TEST(client_that_stops_reading)
{
	/* R one-shot calls of 2 MB of output each (1 MB on stdout, 1 MB on
	 * stderr), in batches, none of whose replies is read: 320 MB in all.
	 * When the scheduler drops the connection, the client dials again and
	 * goes on, as a stuck client's library or an attacker would. */
	enum { R = 160, BATCH = 16 };
	pid_t sp = cl.sched;
	kiln_client *b = kt_cluster_client(&cl, KT_BETA);
	ASSERT_STR_EQ(bash_ok(b, NULL, "echo warm"), "warm\n");
	long rss0 = kt_proc_status_kib(sp, "VmRSS:"), peak = rss0;
	int closed0 = kt_cluster_sched_log_count(&cl, "closing client connection");
	uint64_t done0 = tenant_done("alpha"), t0 = kl_now_ms();
	int fd = sp_connect(cl.client_port), dials = 1;
	for (uint32_t i = 1; i <= R; i++) {
		while (sp_closed(fd) || !sp_call(fd, i, KT_ALPHA,
		                                 "head -c 1000000 /dev/zero | tr '\\0' x; "
		                                 "head -c 1000000 /dev/zero | tr '\\0' y >&2")) {
			close(fd); /* dropped by the scheduler: dial again */
			fd = sp_connect(cl.client_port);
			dials++;
		}
		if (i % BATCH)
			continue;
		/* Wait for the batch (requests that were on their way when the
		 * connection closed never arrive: alpha simply goes idle). */
		for (int idle = 0; idle < 3 && kl_now_ms() < t0 + 300000; usleep(100000)) {
			peak = KL_MAX(peak, kt_proc_status_kib(sp, "VmRSS:"));
			idle = tenant_idle("alpha") ? idle + 1 : 0;
		}
		ASSERT(tenant_idle("alpha"));
		peak = KL_MAX(peak, kt_proc_status_kib(sp, "VmRSS:"));
	}
	uint64_t ran = tenant_done("alpha") - done0;
	uint64_t t1 = kl_now_ms();
	long rss1 = kt_proc_status_kib(sp, "VmRSS:");
	/* Meanwhile, everyone else is served. */
	for (int i = 0; i < 10; i++)
		ASSERT_STR_EQ(bash_ok(b, NULL, "echo other"), "other\n");
	int closed = kt_cluster_sched_log_count(&cl, "closing client connection") - closed0;
	fprintf(stderr,
	        "a client sent %d calls of 2 MB output over %d connections and read nothing: %llu "
	        "ran, in %llu ms; the scheduler closed %d connections at 64 MiB unread; its "
	        "VmRSS %ld KiB before, peak %ld KiB (+%ld KiB), %ld KiB after; 10 calls of "
	        "another tenant then took %llu ms\n",
	        R, dials, (unsigned long long)ran, (unsigned long long)(t1 - t0), closed, rss0,
	        peak, peak - rss0, rss1, (unsigned long long)(kl_now_ms() - t1));
	ASSERT(kt_child_alive(sp));
	/* Bounded: 64 MiB of unread replies per connection, then it is closed
	 * and what waited for it freed; not the 320 MB sent. (VmRSS also holds
	 * messages on their way, and allocator slack.) */
	ASSERT_GE(closed, 3);
	ASSERT_EQ(dials, closed + 1);
	ASSERT_GE(ran, R - (uint64_t)closed * BATCH);
	ASSERT_LT(peak - rss0, 160 << 10);
	close(fd);
	usleep(1000000);
	ASSERT(kt_child_alive(sp));
	ASSERT_STR_EQ(bash_ok(b, NULL, "echo after"), "after\n");
	fprintf(stderr, "  after it went away: scheduler VmRSS %ld KiB\n",
	        kt_proc_status_kib(sp, "VmRSS:"));
	kiln_close(b);
}

/* ---- 5. a node's link cut, then restored ---- */

/* Start a node inside the link-cut namespace, dialing the scheduler through
 * the veth pair; it joins the cluster's node table (logs, job counts). */
static int
add_netns_node(const char *const *extra)
{
	int i = cl.nnodes++;
	snprintf(cl.names[i], sizeof cl.names[i], "kt%d-cut", (int)getpid());
	char exe[4200], tok[512], url[64], log[512], nsarg[64];
	snprintf(exe, sizeof exe, "%s/kiln-node", cl.bindir);
	snprintf(tok, sizeof tok, "%s/join.token", cl.dir);
	snprintf(url, sizeof url, "tcp://%s:%d", host_ip, cl.node_port);
	snprintf(log, sizeof log, "%s/node-%d.log", cl.dir, i);
	snprintf(nsarg, sizeof nsarg, "--net=/run/netns/%s", netns);
	const char *argv[40] = {"/usr/bin/nsenter",
	                        nsarg,
	                        exe,
	                        "--scheduler",
	                        url,
	                        "--token-file",
	                        tok,
	                        "--name",
	                        cl.names[i],
	                        "--log",
	                        "debug",
	                        "--grace-ms",
	                        "1000",
	                        "--allow-unenforced-limits"};
	int n = 14;
	for (int k = 0; extra && extra[k] && n < 38; k++)
		argv[n++] = extra[k];
	argv[n] = NULL;
	if (access(argv[0], X_OK) != 0)
		argv[0] = "/bin/nsenter";
	cl.nodes[i] = kt_spawn(argv, log);
	kt_cluster_wait_nodes(&cl, NHOST + 1);
	note_range(cl.nodes[i]);
	return i;
}

TEST(link_cut_then_restored)
{
	if (!have_netns) {
		fprintf(stderr, "NOT RUN: link cut: %s\n", no_netns_why);
		return;
	}
	const char *extra[] = {"--warm", "0", "--template", "cut:host:2", NULL};
	int X = add_netns_node(extra);
	kt_cluster_wait_warm(&cl, X, "cut", 2, 30000);
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA);
	int at;
	char *sid = open_on(a, "cut", NULL, -1, &at);
	ASSERT_EQ(at, X); /* the only node with template "cut" */
	ASSERT_STR_EQ(bash_ok(a, sid, "echo kept > keep.txt; cat keep.txt"), "kept\n");
	int before = starts_on(X);
	rec *lng = bash_async(a, sid, "sleep 30; echo late");
	wait_starts_on(X, before + 1);
	rec *queued = bash_async(a, sid, "echo queued"); /* waits behind it */
	usleep(200000);
	char reg[200];
	snprintf(reg, sizeof reg, "node %s registered", cl.names[X]);
	int regs = kt_cluster_sched_log_count(&cl, reg);
	uint64_t t0 = kl_now_ms();
	ASSERT_EQ(sh("ip link set %s down", veth_h), 0);
	uint64_t t1 = rec_wait(lng, 30000);
	ASSERT_EQ(lng->err, 0);
	fprintf(stderr, "link of %s cut: its running call ended %s after %llu ms: %s\n",
	        cl.names[X], kl_code_name(lng->res->code), (unsigned long long)(t1 - t0),
	        lng->res->message);
	ASSERT_EQ(lng->res->code, KILN__CODE__NODE_LOST);
	ASSERT_LT(t1 - t0, 8000); /* dead_after is 3 s */
	rec_wait(queued, 10000);
	fprintf(stderr, "  the call queued behind it: %s: %s\n",
	        queued->err ? "refused" : kl_code_name(queued->res->code),
	        queued->err ? queued->msg : queued->res->message);
	ASSERT_EQ(queued->err, 0);
	ASSERT_EQ(queued->res->code, KILN__CODE__UNAVAILABLE); /* it never ran */
	Kiln__StatusReply *st = kt_cluster_status(&cl);
	ASSERT(kt_status_node(st, cl.names[X]) == NULL);
	kiln_status_free(st);
	Kiln__ToolResult *r;
	ASSERT_LT(kiln_read(a, sid, "keep.txt", 0, 0, &r), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	/* The rest of the cluster carries on. */
	ASSERT_STR_EQ(bash_ok(a, NULL, "echo still"), "still\n");
	while (kl_now_ms() < t0 + 6000)
		usleep(50000);
	ASSERT(kt_child_alive(cl.nodes[X]));
	uint64_t t2 = kl_now_ms();
	ASSERT_EQ(sh("ip link set %s up", veth_h), 0);
	for (int i = 0; i < 3000 && kt_cluster_sched_log_count(&cl, reg) <= regs; i++)
		usleep(20000);
	ASSERT_GT(kt_cluster_sched_log_count(&cl, reg), regs);
	kt_cluster_wait_nodes(&cl, NHOST + 1);
	fprintf(stderr, "link restored after %llu ms down: %s registered again %llu ms later\n",
	        (unsigned long long)(t2 - t0), cl.names[X], (unsigned long long)(kl_now_ms() - t2));
	/* The scheduler had dropped its session: the node closes its copy (and
	 * the sleep with it) rather than have it live twice. */
	char closing[200];
	snprintf(closing, sizeof closing, "session=%s closing", sid);
	for (int i = 0; i < 1500 && kt_cluster_log_count(&cl, X, closing) == 0; i++)
		usleep(20000);
	ASSERT_EQ(kt_cluster_log_count(&cl, X, closing), 1);
	ASSERT_LT(kiln_read(a, sid, "keep.txt", 0, 0, &r), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	free(sid);
	/* It serves again. */
	kt_cluster_wait_warm(&cl, X, "cut", 1, 30000);
	sid = open_on(a, "cut", NULL, -1, &at);
	ASSERT_EQ(at, X);
	ASSERT_STR_EQ(bash_ok(a, sid, "echo back"), "back\n");
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	free(sid);
	kiln_result_free(lng->res);
	kiln_result_free(queued->res);
	lng->res = queued->res = NULL;
	/* Nothing of the cut session is left on it: only its warm pool. */
	kt_cluster_wait_warm(&cl, X, "cut", 2, 30000);
	int k = kt_node_uid_range(cl.nodes[X]), p = -1;
	for (int i = 0; i < 300 && (p = kt_range_procs(k, NULL)) != 2; i++)
		usleep(100000);
	ASSERT_EQ(p, 2);
	int g = -1; /* kiln-<name>, daemon, pool, tenants: session cgroups go shortly */
	for (int i = 0; i < 300 && (g = kt_node_cgroups(cl.names[X], NULL)) != 4; i++)
		usleep(100000);
	ASSERT_EQ(g, 4);
	char buf[64];
	int wst = kt_cluster_stop_node(&cl, X);
	fprintf(stderr, "%s stopped: %s\n", cl.names[X], kt_wait_text(wst, buf, sizeof buf));
	ASSERT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	netns_down();
	kiln_close(a);
}

/* ---- the end: graceful stops exit 0 (in the ASan build that includes
 * LeakSanitizer's verdict), and nothing of the test is left ---- */

TEST(teardown_back_to_baseline)
{
	char buf[64];
	for (int i = 0; i < cl.nnodes; i++) {
		if (cl.nodes[i] <= 0)
			continue;
		note_range(cl.nodes[i]);
		int st = kt_cluster_stop_node(&cl, i);
		fprintf(stderr, "%s stopped: %s\n", cl.names[i], kt_wait_text(st, buf, sizeof buf));
		ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	ASSERT_EQ(kill(cl.sched, SIGTERM), 0);
	int st = kt_wait_pid(cl.sched, 30000);
	fprintf(stderr, "the scheduler stopped: %s\n", kt_wait_text(st, buf, sizeof buf));
	ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	cl.sched = 0;
	for (int i = 0; i < cl.nnodes; i++)
		ASSERT_EQ(kt_node_cgroups(cl.names[i], NULL), 0);
	for (int k = 0; k < nranges; k++) {
		bool free_;
		int p = kt_range_procs(ranges[k], &free_);
		if (free_)
			ASSERT_EQ(p, 0);
	}
	ASSERT_EQ(kt_count_children(), 0);
	netns_down();
	int m = kt_mount_count();
	fprintf(stderr,
	        "after the stop: no cgroup tree of the test's %d nodes, no process in the %d uid "
	        "ranges they held, no child; %d mounts (%d before)\n",
	        cl.nnodes, nranges, m, mounts0);
	ASSERT_EQ(m, mounts0);
	kt_cluster_stop(&cl); /* the temporary directory */
}

int
main(int argc, char **argv)
{
	/* Before any thread: a mount namespace of our own, so the mount count
	 * is the test's (other work on the host mounts and unmounts too). */
	if (geteuid() == 0 && kt_private_mounts() == 0)
		private_mounts = true;
	kt_asan_quarantine(16); /* the scheduler's memory is measured */
	recs = calloc(MAX_RECS, sizeof *recs);
	int r = kt_run(argc, argv);
	netns_down();
	free(recs);
	return r;
}
