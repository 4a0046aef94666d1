/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench-node: the node micro-benchmark. It drives an in-process node
 * (libkiln_node, the code kiln-node ships) synchronously, one request at a
 * time, and measures the node's acceptance criteria against baselines taken
 * in the same run on the same machine: a warm exec in an open session
 * against a bare posix_spawn+waitpid, a new session's first call against a
 * cold bubblewrap sandbox, the file tools against a spawned cat, the pool's
 * refill rate, and the host memory an idle warm sandbox costs. Baselines are
 * interleaved with the kiln measurements, one of each per iteration, so that
 * noise from the rest of the machine lands on both. It prints a table (and
 * JSON on request) and exits 0 whether targets are met or missed: targets
 * are for people reading the numbers, never a pass/fail gate (see
 * bench/README.md for the method).
 */
#include "kl_clock.h"
#include "kl_hist.h"
#include "kl_log.h"
#include "kl_proto.h"
#include "node.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum {
	SEC_WARM = 1 << 0,
	SEC_SESSION = 1 << 1,
	SEC_FILE = 1 << 2,
	SEC_REFILL = 1 << 3,
	SEC_MEMORY = 1 << 4,
	SEC_ALL = (1 << 5) - 1,
};

static const char *const section_names[] = {"warm", "session", "file", "refill", "memory"};

typedef struct bench_opts {
	int iterations;    /* warm calls and file-tool calls */
	int sessions;      /* new-session iterations (warm pool and cold) */
	int warmup;        /* unmeasured iterations before each measured loop */
	int pool_target;   /* warm pool of the node used for warm/session/file */
	int refill_target; /* pool target of the refill/memory node */
	int max_creating;  /* refill/memory node: sandboxes created at once */
	int file_size;
	unsigned only;
	const char *json;
	const char *init;
	bool verbose;
} bench_opts;

static bench_opts opt;

static void
opts_defaults(bench_opts *o)
{
	memset(o, 0, sizeof *o);
	o->iterations = 500;
	o->sessions = 100;
	o->warmup = 20;
	o->pool_target = 8;
	o->refill_target = 200;
	o->max_creating = 16;
	o->file_size = 4096;
	o->only = SEC_ALL;
}

/* ---- results ---- */

enum { V_INFO = -1, V_MISS = 0, V_PASS = 1 };

typedef struct row {
	char section[16];
	char metric[64];
	char unit[8]; /* us, x, /s, KiB, n */
	double kiln;
	double base;  /* NAN: no baseline */
	double ratio; /* NAN: no ratio */
	char target[24];
	int verdict;
} row;

typedef struct series {
	char section[16];
	char name[64];
	kl_hist *h; /* nanoseconds */
} series;

#define MAX_ROWS   128
#define MAX_SERIES 32

static row rows[MAX_ROWS];
static int nrows;
static series all_series[MAX_SERIES];
static int nseries;
static int errors; /* failed calls and setup failures: the exit status */

static void
add_row(const char *sec, const char *metric, const char *unit, double kiln, double base,
        double ratio, const char *target, int verdict)
{
	if (nrows == MAX_ROWS)
		return;
	row *r = &rows[nrows++];
	kl_strlcpy(r->section, sec, sizeof r->section);
	kl_strlcpy(r->metric, metric, sizeof r->metric);
	kl_strlcpy(r->unit, unit, sizeof r->unit);
	r->kiln = kiln;
	r->base = base;
	r->ratio = ratio;
	kl_strlcpy(r->target, target ? target : "", sizeof r->target);
	r->verdict = verdict;
}

static void
info_row(const char *sec, const char *metric, const char *unit, double v)
{
	add_row(sec, metric, unit, v, NAN, NAN, NULL, V_INFO);
}

static kl_hist *
series_new(const char *sec, const char *name)
{
	static kl_hist spare; /* past MAX_SERIES: recorded but not reported */
	if (nseries == MAX_SERIES)
		return &spare;
	series *s = &all_series[nseries++];
	kl_strlcpy(s->section, sec, sizeof s->section);
	kl_strlcpy(s->name, name, sizeof s->name);
	s->h = kl_xmalloc(sizeof *s->h);
	kl_hist_init(s->h);
	return s->h;
}

static double
pct_us(const kl_hist *h, double p)
{
	return (double)kl_hist_percentile(h, p) / 1000.0;
}

static void fail(const char *fmt, ...) KL_PRINTF(1, 2);

static void
fail(const char *fmt, ...)
{
	va_list ap;
	if (errors++ >= 10)
		return;
	va_start(ap, fmt);
	fputs("kiln-bench-node: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- the host: how busy the rest of the machine was ---- */

/* Busy and total jiffies of all CPUs from /proc/stat's first line. */
static void
cpu_jiffies(uint64_t *busy, uint64_t *total)
{
	unsigned long long v[8] = {0};
	*busy = *total = 0;
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return;
	int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
	               &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	for (int i = 0; i < k; i++)
		*total += v[i];
	*busy = *total - v[3] - v[4]; /* minus idle and iowait */
}

static double
tv_s(struct timeval t)
{
	return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

/* CPU time of this process and its reaped descendants (sandbox inits,
 * their tool processes, the baselines' children). */
static double
self_cpu_s(void)
{
	struct rusage a, c;
	getrusage(RUSAGE_SELF, &a);
	getrusage(RUSAGE_CHILDREN, &c);
	return tv_s(a.ru_utime) + tv_s(a.ru_stime) + tv_s(c.ru_utime) + tv_s(c.ru_stime);
}

typedef struct host_mark {
	uint64_t busy, total;
	double self_s;
	double load1;
} host_mark;

static host_mark mark_start, mark_end; /* around all sections */

static void
host_mark_now(host_mark *m)
{
	cpu_jiffies(&m->busy, &m->total);
	m->self_s = self_cpu_s();
	m->load1 = 0;
	FILE *f = fopen("/proc/loadavg", "re");
	if (f) {
		if (fscanf(f, "%lf", &m->load1) != 1)
			m->load1 = 0;
		fclose(f);
	}
}

/* The share of all CPUs used by everything but this benchmark between two
 * marks: a noise indicator. It also counts kernel threads working for us
 * (deferred namespace teardown, RCU), so a quiet host shows a few percent. */
static double
host_other_share(const host_mark *a, const host_mark *b)
{
	double hz = (double)sysconf(_SC_CLK_TCK);
	double cap = (double)(b->total - a->total) / hz;
	double other = (double)(b->busy - a->busy) / hz - (b->self_s - a->self_s);
	return cap > 0 && other > 0 ? other / cap : 0;
}

/* ---- driving the node synchronously ---- */

/* What a reply said; copied on the loop thread, read after the wait. */
typedef struct reply {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool done;
	int code, exit_code;
	bool warm;
	uint64_t claim_us, duration_us, queue_us;
	size_t out_len;
	char msg[160];
} reply;

static void
on_reply(void *arg, const Kiln__NodeReply *rep)
{
	reply *r = arg;
	const char *msg = NULL;
	pthread_mutex_lock(&r->mu);
	if (rep->reply_case == KILN__NODE_REPLY__REPLY_RESULT) {
		const Kiln__ToolResult *t = rep->result;
		r->code = t->code;
		r->exit_code = t->exit_code;
		r->duration_us = t->duration_us;
		r->queue_us = t->queue_us;
		r->out_len = t->output.len;
		msg = t->message;
	} else if (rep->reply_case == KILN__NODE_REPLY__REPLY_OPENED) {
		r->code = rep->opened->code;
		r->warm = rep->opened->warm;
		r->claim_us = rep->opened->claim_us;
		msg = rep->opened->message;
	} else if (rep->reply_case == KILN__NODE_REPLY__REPLY_CLOSED) {
		r->code = rep->closed->code;
		msg = rep->closed->message;
	} else {
		r->code = KILN__CODE__INTERNAL;
	}
	kl_strlcpy(r->msg, msg ? msg : "", sizeof r->msg);
	r->done = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

/* Submit one NodeWork and wait for its reply; false (and counted as an
 * error) unless the reply says OK with exit code 0. */
static bool
node_do(node *n, const Kiln__NodeWork *w, reply *r, const char *what)
{
	memset(r, 0, sizeof *r);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	int e = node_submit(n, w, on_reply, r);
	if (e == 0) {
		pthread_mutex_lock(&r->mu);
		while (!r->done)
			pthread_cond_wait(&r->cond, &r->mu);
		pthread_mutex_unlock(&r->mu);
	} else {
		r->code = KILN__CODE__INTERNAL;
		snprintf(r->msg, sizeof r->msg, "node_submit: %s", strerror(-e));
	}
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	if (r->code == KILN__CODE__OK && r->exit_code == 0)
		return true;
	fail("%s: %s (exit code %d): %s", what, kl_code_name(r->code), r->exit_code, r->msg);
	return false;
}

static bool
session_open(node *n, const char *sid, reply *r)
{
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.session_id = (char *)sid;
	o.tenant = (char *)"bench";
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = &o;
	return node_do(n, &w, r, "open");
}

static bool
session_close(node *n, const char *sid)
{
	reply r;
	Kiln__SessionClose c = KILN__SESSION_CLOSE__INIT;
	c.session_id = (char *)sid;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CLOSE;
	w.close = &c;
	return node_do(n, &w, &r, "close");
}

static bool
tool_call(node *n, const char *sid, Kiln__ToolCall *tc, reply *r, const char *what)
{
	static uint64_t next_job = 1;
	tc->job_id = next_job++;
	tc->session_id = (char *)sid;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = tc;
	return node_do(n, &w, r, what);
}

static bool
call_exec(node *n, const char *sid, const char *path, reply *r)
{
	char *argv[] = {(char *)path};
	Kiln__ExecInput e = KILN__EXEC_INPUT__INIT;
	e.n_argv = 1;
	e.argv = argv;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc.exec = &e;
	return tool_call(n, sid, &tc, r, "exec");
}

static bool
call_bash(node *n, const char *sid, const char *cmd, reply *r)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = (char *)cmd;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	return tool_call(n, sid, &tc, r, "bash");
}

static bool
call_read(node *n, const char *sid, const char *path, reply *r)
{
	Kiln__ReadInput in = KILN__READ_INPUT__INIT;
	in.file_path = (char *)path;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_READ;
	tc.read = &in;
	return tool_call(n, sid, &tc, r, "read");
}

static bool
call_write(node *n, const char *sid, const char *path, const char *data, size_t len, reply *r)
{
	Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
	in.file_path = (char *)path;
	in.content.data = (uint8_t *)data;
	in.content.len = len;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_WRITE;
	tc.write = &in;
	return tool_call(n, sid, &tc, r, "write");
}

static bool
call_edit(node *n, const char *sid, const char *path, const char *old, const char *new_, reply *r)
{
	Kiln__EditInput in = KILN__EDIT_INPUT__INIT;
	in.file_path = (char *)path;
	in.old_string = (char *)old;
	in.new_string = (char *)new_;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EDIT;
	tc.edit = &in;
	return tool_call(n, sid, &tc, r, "edit");
}

/* A node as the benchmark wants it: unenforced limits accepted (hybrid
 * cgroup hosts), one "default" template with the given pool target. */
static node *
bench_node(uint32_t target, uint32_t refill_per_s, uint32_t burst, uint32_t max_creating)
{
	node_config c;
	node_config_defaults(&c);
	c.allow_unenforced_limits = true;
	c.init_path = opt.init;
	c.shutdown_grace_ms = 2000;
	c.templates[0].target = target;
	if (refill_per_s)
		c.refill_per_s = refill_per_s;
	if (burst)
		c.refill_burst = burst;
	if (max_creating)
		c.max_creating = max_creating;
	char err[512];
	node *n;
	if (node_new(&c, &n, err, sizeof err) < 0) {
		fail("node_new: %s", err);
		return NULL;
	}
	return n;
}

static void
bench_node_free(node *n)
{
	if (!n)
		return;
	node_stop(n);
	node_free(n);
}

/* Wait until the default pool holds want idle sandboxes. The node publishes
 * its stats on every 50 ms tick, so this returns up to one tick late. */
static bool
wait_warm(node *n, uint32_t want, int timeout_ms)
{
	uint64_t end = kl_now_ms() + (uint64_t)timeout_ms;
	node_stats st;
	for (;;) {
		node_get_stats(n, &st);
		if (st.templates[0].warm >= want)
			return true;
		if (kl_now_ms() >= end) {
			fail("the pool did not refill to %u within %d ms (warm %u, creating %u)",
			     want, timeout_ms, st.templates[0].warm, st.templates[0].creating);
			return false;
		}
		usleep(1000);
	}
}

/* ---- baselines ---- */

/* posix_spawn + waitpid in this process: elapsed ns, 0 on failure. */
static uint64_t
spawn_wait(const char *path, char *const argv[])
{
	uint64_t t0 = kl_now_ns();
	pid_t pid;
	int st = 0;
	int e = posix_spawn(&pid, path, NULL, NULL, argv, environ);
	if (e) {
		fail("posix_spawn %s: %s", path, strerror(e));
		return 0;
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	uint64_t dt = kl_now_ns() - t0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fail("%s exited with status 0x%x", path, st);
		return 0;
	}
	return dt;
}

/* posix_spawn /bin/cat file with stdout on a pipe, read it all, wait. */
static uint64_t
spawn_cat(const char *file, size_t *ret_len)
{
	static char buf[65536];
	char *const argv[] = {(char *)"cat", (char *)file, NULL};
	uint64_t t0 = kl_now_ns();
	int p[2], st = 0;
	pid_t pid;
	if (pipe2(p, O_CLOEXEC) < 0) {
		fail("pipe2: %s", strerror(errno));
		return 0;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	int e = posix_spawn(&pid, "/bin/cat", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	size_t total = 0;
	ssize_t k;
	while (e == 0 && ((k = read(p[0], buf, sizeof buf)) > 0 || (k < 0 && errno == EINTR)))
		total += k > 0 ? (size_t)k : 0;
	close(p[0]);
	if (e) {
		fail("posix_spawn /bin/cat: %s", strerror(e));
		return 0;
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	uint64_t dt = kl_now_ns() - t0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fail("cat exited with status 0x%x", st);
		return 0;
	}
	*ret_len = total;
	return dt;
}

/* The cold-sandbox baseline: bubblewrap with every namespace unshared and a
 * root built from the host's /usr, as a sandbox per call would be. */
/* clang-format off */
static char *const bwrap_argv[] = {
	"bwrap", "--unshare-all", "--die-with-parent",
	"--ro-bind", "/usr", "/usr",
	"--symlink", "usr/lib", "/lib",
	"--symlink", "usr/lib64", "/lib64",
	"--symlink", "usr/bin", "/bin",
	"--symlink", "usr/sbin", "/sbin",
	"--proc", "/proc",
	"--dev", "/dev",
	"--tmpfs", "/tmp",
	"/bin/true", NULL,
};
/* clang-format on */

static const char *
bwrap_path(void)
{
	static const char *const cand[] = {"/usr/bin/bwrap", "/usr/local/bin/bwrap", NULL};
	for (int i = 0; cand[i]; i++)
		if (access(cand[i], X_OK) == 0)
			return cand[i];
	return NULL;
}

static void
record(kl_hist *h, uint64_t ns)
{
	if (ns)
		kl_hist_record(h, ns);
}

/* ---- 1. warm call latency ---- */

static void
warm_rows(kl_hist *hk, kl_hist *hb, kl_hist *hs, kl_hist *hd, kl_hist *ho)
{
	double k50 = pct_us(hk, 50), b50 = pct_us(hb, 50);
	double k99 = pct_us(hk, 99), b99 = pct_us(hb, 99);
	double r50 = k50 / b50, r99 = k99 / b99;
	add_row("warm", "exec /bin/true p50 (vs bare spawn)", "us", k50, b50, r50, "<= 1.3x",
	        r50 <= 1.3 ? V_PASS : V_MISS);
	add_row("warm", "exec /bin/true p99 (vs bare spawn)", "us", k99, b99, r99, "< 3x",
	        r99 < 3 ? V_PASS : V_MISS);
	add_row("warm", "bash /bin/true p50 (vs bare spawn)", "us", pct_us(hs, 50), b50,
	        pct_us(hs, 50) / b50, NULL, V_INFO);
	add_row("warm", "bash /bin/true p99 (vs bare spawn)", "us", pct_us(hs, 99), b99,
	        pct_us(hs, 99) / b99, NULL, V_INFO);
	info_row("warm", "exec p50: node-side (start to result)", "us", pct_us(hd, 50));
	info_row("warm", "exec p50: submit/reply overhead", "us", pct_us(ho, 50));
}

static void
bench_warm(node *n)
{
	const char *sid = "bench-warm";
	char *const true_argv[] = {(char *)"true", NULL};
	reply r, rs;
	if (!session_open(n, sid, &r))
		return;
	kl_hist *hk = series_new("warm", "exec /bin/true (kiln)");
	kl_hist *hb = series_new("warm", "posix_spawn+waitpid /bin/true");
	kl_hist *hs = series_new("warm", "bash /bin/true (kiln)");
	kl_hist *hd = series_new("warm", "exec: node-side duration");
	kl_hist *ho = series_new("warm", "exec: round trip - node-side");
	for (int i = -opt.warmup; i < opt.iterations; i++) {
		uint64_t t0 = kl_now_ns();
		bool ok = call_exec(n, sid, "/bin/true", &r);
		uint64_t t1 = kl_now_ns();
		uint64_t tb = spawn_wait("/bin/true", true_argv);
		uint64_t t2 = kl_now_ns();
		bool oks = call_bash(n, sid, "/bin/true", &rs);
		uint64_t t3 = kl_now_ns();
		if (i < 0)
			continue;
		uint64_t side = (r.duration_us + r.queue_us) * 1000;
		if (ok) {
			kl_hist_record(hk, t1 - t0);
			kl_hist_record(hd, side);
			kl_hist_record(ho, t1 - t0 > side ? t1 - t0 - side : 0);
		}
		record(hb, tb);
		if (oks)
			kl_hist_record(hs, t3 - t2);
	}
	session_close(n, sid);
	if (hk->count && hb->count && hs->count)
		warm_rows(hk, hb, hs, hd, ho);
}

/* ---- 2. new session + first call ---- */

typedef struct session_hists {
	kl_hist *open, *first, *total;
	kl_hist *claim; /* node-side: open received to reply (SessionOpened.claim_us) */
} session_hists;

/* Open a session, exec /bin/true in it (timed), close it (not timed). */
static void
session_iteration(node *n, const char *sid, const session_hists *h, bool want_warm, bool measure)
{
	reply r;
	uint64_t t0 = kl_now_ns();
	if (!session_open(n, sid, &r))
		return;
	uint64_t t1 = kl_now_ns(), claim_us = r.claim_us;
	if (r.warm != want_warm)
		fail("session %s: expected a %s claim, got a %s one", sid,
		     want_warm ? "warm" : "cold", r.warm ? "warm" : "cold");
	bool ok = call_exec(n, sid, "/bin/true", &r);
	uint64_t t2 = kl_now_ns();
	session_close(n, sid);
	if (!ok || !measure)
		return;
	kl_hist_record(h->claim, claim_us * 1000);
	kl_hist_record(h->open, t1 - t0);
	kl_hist_record(h->first, t2 - t1);
	kl_hist_record(h->total, t2 - t0);
}

static void
session_rows(const session_hists *w, const session_hists *d, const session_hists *c,
             const kl_hist *hb)
{
	double b50 = pct_us(hb, 50), b99 = pct_us(hb, 99);
	if (w && w->total->count) {
		double k50 = pct_us(w->total, 50), r = b50 / k50;
		add_row("session", "open+exec p50, warm pool (vs bwrap)", "us", k50, b50, r,
		        ">= 5x", r >= 5 ? V_PASS : V_MISS);
		add_row("session", "open+exec p99, warm pool (vs bwrap)", "us",
		        pct_us(w->total, 99), b99, b99 / pct_us(w->total, 99), NULL, V_INFO);
		info_row("session", "warm: open p50", "us", pct_us(w->open, 50));
		info_row("session", "warm: open p50, node-side claim", "us", pct_us(w->claim, 50));
		info_row("session", "warm: first exec p50", "us", pct_us(w->first, 50));
	}
	if (d && d->total->count) {
		double k50 = pct_us(d->total, 50);
		add_row("session", "open+exec p50, exec after refill (vs bwrap)", "us", k50, b50,
		        b50 / k50, NULL, V_INFO);
		info_row("session", "after refill: first exec p50", "us", pct_us(d->first, 50));
	}
	if (c && c->total->count) {
		double k50 = pct_us(c->total, 50);
		add_row("session", "open+exec p50, cold/pool empty (vs bwrap)", "us", k50, b50,
		        b50 / k50, NULL, V_INFO);
		add_row("session", "open+exec p99, cold/pool empty (vs bwrap)", "us",
		        pct_us(c->total, 99), b99, b99 / pct_us(c->total, 99), NULL, V_INFO);
		info_row("session", "cold: open p50 (sandbox creation)", "us", pct_us(c->open, 50));
		info_row("session", "cold: first exec p50", "us", pct_us(c->first, 50));
	}
}

/* Warm variant on node n (pool target opt.pool_target), waiting for a full
 * pool before each iteration, with one bwrap run per iteration (also after
 * the refill, so neither side overlaps the pool's background work). */
static void
bench_session_warm(node *n, const char *bwrap, session_hists *h, kl_hist *hb)
{
	char sid[64];
	for (int i = -3; i < opt.sessions; i++) {
		snprintf(sid, sizeof sid, "bench-s%d", i + 3);
		if (!wait_warm(n, (uint32_t)opt.pool_target, 10000))
			return;
		session_iteration(n, sid, h, true, i >= 0);
		if (!wait_warm(n, (uint32_t)opt.pool_target, 10000))
			return;
		usleep(5000); /* let the closed sandbox's teardown finish */
		uint64_t tb = bwrap ? spawn_wait(bwrap, bwrap_argv) : 0;
		if (i >= 0)
			record(hb, tb);
	}
}

/* Diagnostic variant: claim from a full pool, then wait until the pool has
 * replaced the claimed sandbox before the first exec, so that the exec does
 * not share the CPUs (and the loop) with the replacement's creation. */
static void
bench_session_settled(node *n, session_hists *h)
{
	char sid[64];
	reply r;
	for (int i = 0; i < opt.sessions; i++) {
		snprintf(sid, sizeof sid, "bench-d%d", i);
		if (!wait_warm(n, (uint32_t)opt.pool_target, 10000))
			return;
		uint64_t t0 = kl_now_ns();
		if (!session_open(n, sid, &r))
			return;
		uint64_t t1 = kl_now_ns(), claim_us = r.claim_us;
		bool ok = wait_warm(n, (uint32_t)opt.pool_target, 10000);
		usleep(5000);
		uint64_t t2 = kl_now_ns();
		ok = call_exec(n, sid, "/bin/true", &r) && ok;
		uint64_t t3 = kl_now_ns();
		session_close(n, sid);
		usleep(5000);
		if (!ok)
			continue;
		kl_hist_record(h->claim, claim_us * 1000);
		kl_hist_record(h->open, t1 - t0);
		kl_hist_record(h->first, t3 - t2);
		kl_hist_record(h->total, t1 - t0 + t3 - t2);
	}
}

/* Cold variant: a node with an empty pool (target 0), so every open creates
 * its sandbox on demand (cold_start). */
static void
bench_session_cold(session_hists *h)
{
	char sid[64];
	node *n = bench_node(0, 0, 0, 0);
	if (!n || node_start(n) < 0) {
		bench_node_free(n);
		return;
	}
	for (int i = -3; i < opt.sessions; i++) {
		snprintf(sid, sizeof sid, "bench-c%d", i + 3);
		session_iteration(n, sid, h, false, i >= 0);
		usleep(5000);
	}
	bench_node_free(n);
}

static void
bench_session(node *n)
{
	const char *bwrap = bwrap_path();
	if (!bwrap)
		fail("bwrap not found (scripts/setup installs bubblewrap): no cold-sandbox "
		     "baseline");
	kl_hist *hb = series_new("session", "bwrap /bin/true (cold sandbox)");
	session_hists w = {series_new("session", "warm: open (claim)"),
	                   series_new("session", "warm: first exec"),
	                   series_new("session", "warm: open + first exec (kiln)"),
	                   series_new("session", "warm: node-side claim")};
	session_hists d = {series_new("session", "settled: open (claim)"),
	                   series_new("session", "settled: first exec, refill done"),
	                   series_new("session", "settled: open + first exec"),
	                   series_new("session", "settled: node-side claim")};
	session_hists c = {series_new("session", "cold: open (create + claim)"),
	                   series_new("session", "cold: first exec"),
	                   series_new("session", "cold: open + first exec (kiln)"),
	                   series_new("session", "cold: node-side open")};
	bench_session_warm(n, bwrap, &w, hb);
	bench_session_settled(n, &d);
	bench_session_cold(&c);
	if (hb->count)
		session_rows(&w, &d, &c, hb);
}

/* ---- 3. file tools ---- */

/* size bytes of 64-byte lines; line 9 (line 1 of a small file) carries MARKER-0. */
static char *
make_content(size_t size)
{
	char *b = kl_xmalloc(size + 1);
	for (size_t i = 0; i < size; i++)
		b[i] = (i % 64 == 63) ? '\n' : (char)('a' + (i / 64 + i) % 26);
	size_t line = size >= 9 * 64 ? 8 : 0;
	if (size >= 16)
		memcpy(b + line * 64, "MARKER-0", 8);
	b[size] = 0;
	return b;
}

static void
file_rows(kl_hist *const hk[3], kl_hist *const hd[3], const kl_hist *hc)
{
	static const char *const names[3] = {"read", "write", "edit"};
	double c50 = pct_us(hc, 50), c99 = pct_us(hc, 99);
	char m[64];
	for (int t = 0; t < 3; t++) {
		if (!hk[t]->count)
			continue;
		double k50 = pct_us(hk[t], 50), r = c50 / k50;
		snprintf(m, sizeof m, "%s %d B p50 (vs spawned cat)", names[t], opt.file_size);
		add_row("file", m, "us", k50, c50, r, ">= 20x", r >= 20 ? V_PASS : V_MISS);
		snprintf(m, sizeof m, "%s %d B p99 (vs spawned cat)", names[t], opt.file_size);
		add_row("file", m, "us", pct_us(hk[t], 99), c99, c99 / pct_us(hk[t], 99), NULL,
		        V_INFO);
		snprintf(m, sizeof m, "%s p50: node-side (start to result)", names[t]);
		info_row("file", m, "us", pct_us(hd[t], 50));
	}
}

static bool
host_file(const char *content, size_t len, char *dir, char *path, size_t pathlen)
{
	strcpy(dir, "/tmp/kiln-bench-XXXXXX");
	if (!mkdtemp(dir)) {
		fail("mkdtemp: %s", strerror(errno));
		return false;
	}
	snprintf(path, pathlen, "%s/bench.txt", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || kl_write_all(fd, content, len) < 0) {
		fail("writing %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	close(fd);
	return true;
}

/* One file-tool call: its round trip into hk, the node-side part (call
 * start to result, plus queueing) into hd. */
static void
file_record(bool ok, const reply *r, uint64_t t0, uint64_t t1, kl_hist *hk, kl_hist *hd)
{
	if (!ok)
		return;
	kl_hist_record(hk, t1 - t0);
	kl_hist_record(hd, (r->duration_us + r->queue_us) * 1000);
}

static void
file_loop(node *n, const char *sid, const char *content, const char *host_path,
          kl_hist *const hk[3], kl_hist *const hd[3], kl_hist *hc)
{
	size_t len = (size_t)opt.file_size, catlen = 0;
	reply r[3];
	for (int i = -opt.warmup; i < opt.iterations; i++) {
		uint64_t t[4];
		bool ok[3];
		t[0] = kl_now_ns();
		ok[1] = call_write(n, sid, "bench.txt", content, len, &r[1]);
		t[1] = kl_now_ns();
		ok[0] = call_read(n, sid, "bench.txt", &r[0]);
		t[2] = kl_now_ns();
		if (ok[0] && r[0].out_len < len) {
			fail("read returned %zu bytes of text for a %zu-byte file", r[0].out_len,
			     len);
			ok[0] = false;
		}
		ok[2] = call_edit(n, sid, "bench.txt", "MARKER-0", "MARKER-1", &r[2]);
		t[3] = kl_now_ns();
		uint64_t tc = spawn_cat(host_path, &catlen);
		if (tc && catlen != len)
			fail("cat read %zu bytes, expected %zu", catlen, len);
		if (i < 0)
			continue;
		file_record(ok[0], &r[0], t[1], t[2], hk[0], hd[0]);
		file_record(ok[1], &r[1], t[0], t[1], hk[1], hd[1]);
		file_record(ok[2], &r[2], t[2], t[3], hk[2], hd[2]);
		record(hc, tc);
	}
}

static void
bench_file(node *n)
{
	const char *sid = "bench-file";
	char dir[64], path[128];
	reply r;
	char *content = make_content((size_t)opt.file_size);
	if (!host_file(content, (size_t)opt.file_size, dir, path, sizeof path)) {
		free(content);
		return;
	}
	kl_hist *hk[3] = {series_new("file", "read (kiln)"), series_new("file", "write (kiln)"),
	                  series_new("file", "edit (kiln)")};
	kl_hist *hd[3] = {series_new("file", "read: node-side duration"),
	                  series_new("file", "write: node-side duration"),
	                  series_new("file", "edit: node-side duration")};
	kl_hist *hc = series_new("file", "posix_spawn cat + read pipe");
	if (session_open(n, sid, &r)) {
		file_loop(n, sid, content, path, hk, hd, hc);
		session_close(n, sid);
	}
	if (hc->count)
		file_rows(hk, hd, hc);
	unlink(path);
	rmdir(dir);
	free(content);
}

/* ---- 4 and 5. pool refill rate, memory per idle sandbox ---- */

typedef struct meminfo {
	long avail, free, slab, sunreclaim, kstack, pagetables, shmem, anon, percpu;
} meminfo;

static void
meminfo_read(meminfo *m)
{
	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
	        {"MemAvailable:", offsetof(meminfo, avail)},
	        {"MemFree:", offsetof(meminfo, free)},
	        {"Slab:", offsetof(meminfo, slab)},
	        {"SUnreclaim:", offsetof(meminfo, sunreclaim)},
	        {"KernelStack:", offsetof(meminfo, kstack)},
	        {"PageTables:", offsetof(meminfo, pagetables)},
	        {"Shmem:", offsetof(meminfo, shmem)},
	        {"AnonPages:", offsetof(meminfo, anon)},
	        {"Percpu:", offsetof(meminfo, percpu)},
	};
	char line[256];
	memset(m, 0, sizeof *m);
	FILE *f = fopen("/proc/meminfo", "re");
	if (!f)
		return;
	while (fgets(line, sizeof line, f))
		for (size_t i = 0; i < KL_ARRAY_SIZE(keys); i++)
			if (!strncmp(line, keys[i].key, strlen(keys[i].key)))
				*(long *)((char *)m + keys[i].off) =
				        atol(line + strlen(keys[i].key));
	fclose(f);
}

static int
cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return x < y ? -1 : x > y;
}

/* The median of 5 samples 100 ms apart, field by field (KiB). */
static void
meminfo_sample(meminfo *m)
{
	enum { K = 5, F = sizeof(meminfo) / sizeof(long) };
	long v[F][K];
	for (int k = 0; k < K; k++) {
		meminfo s;
		meminfo_read(&s);
		for (int f = 0; f < F; f++)
			v[f][k] = ((long *)&s)[f];
		if (k + 1 < K)
			usleep(100000);
	}
	for (int f = 0; f < F; f++) {
		qsort(v[f], K, sizeof(long), cmp_long);
		((long *)m)[f] = v[f][K / 2];
	}
}

static long
status_kib(const char *path, const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, strlen(key)))
			v = atol(line + strlen(key));
	fclose(f);
	return v;
}

/* kiln-<name>/pool/cgroup.procs of the node we run: the node moved this
 * process into kiln-<name>/daemon (move_self), so our own cgroup v2 path
 * names the tree; the mount point comes from mountinfo. */
static bool
pool_procs_path(char *out, size_t outlen)
{
	char line[4096], rel[2048] = "", mnt[2048] = "";
	FILE *f = fopen("/proc/self/cgroup", "re");
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = 0;
			kl_strlcpy(rel, line + 3, sizeof rel);
		}
	if (f)
		fclose(f);
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof line, f)) {
		char *sep = strstr(line, " - cgroup2 ");
		char point[2048];
		if (sep && sscanf(line, "%*s %*s %*s %*s %2047s", point) == 1)
			kl_strlcpy(mnt, point, sizeof mnt);
	}
	if (f)
		fclose(f);
	char *d = strrchr(rel, '/');
	if (!*mnt || !d || strcmp(d, "/daemon") != 0)
		return false;
	*d = 0;
	int k = snprintf(out, outlen, "%s%s/pool/cgroup.procs", strcmp(mnt, "/") ? mnt : "", rel);
	return k > 0 && (size_t)k < outlen;
}

/* Sum Rss and Pss (KiB) of the idle sandboxes' inits. Returns how many. */
static int
pool_pss(long *ret_rss, long *ret_pss)
{
	char path[4096], p[64];
	long rss = 0, pss = 0;
	int count = 0, pid;
	if (!pool_procs_path(path, sizeof path))
		return -1;
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	while (fscanf(f, "%d", &pid) == 1) {
		snprintf(p, sizeof p, "/proc/%d/smaps_rollup", pid);
		long r = status_kib(p, "Rss:"), s = status_kib(p, "Pss:");
		if (r < 0 || s < 0)
			continue;
		rss += r;
		pss += s;
		count++;
	}
	fclose(f);
	*ret_rss = rss;
	*ret_pss = pss;
	return count;
}

typedef struct refill_result {
	double full_s; /* node_start to warm == target */
	double steady; /* sandboxes/s between 10% and 90% of the target */
	double busy;   /* host CPU busy while filling, 0..1 of all CPUs */
	node_stats st;
	bool ok;
} refill_result;

static void
measure_refill(node *n, uint32_t target, refill_result *res)
{
	uint64_t t0 = kl_now_ns(), t10 = 0, t90 = 0, end = t0 + 300 * 1000000000ull;
	uint32_t w10 = 0, w90 = 0;
	uint64_t b0, j0, b1, j1;
	memset(res, 0, sizeof *res);
	cpu_jiffies(&b0, &j0);
	if (node_start(n) < 0) {
		fail("node_start failed");
		return;
	}
	for (;;) {
		uint64_t now = kl_now_ns();
		node_get_stats(n, &res->st);
		uint32_t w = res->st.templates[0].warm;
		if (!t10 && w * 10 >= target)
			t10 = now, w10 = w;
		if (!t90 && w * 10 >= target * 9)
			t90 = now, w90 = w;
		if (w >= target) {
			res->full_s = (double)(now - t0) / 1e9;
			res->ok = true;
			break;
		}
		if (now > end) {
			fail("the pool reached only %u of %u sandboxes in 300 s", w, target);
			return;
		}
		usleep(2000);
	}
	cpu_jiffies(&b1, &j1);
	res->busy = j1 > j0 ? (double)(b1 - b0) / (double)(j1 - j0) : 0;
	if (t90 > t10 && w90 > w10)
		res->steady = (double)(w90 - w10) / ((double)(t90 - t10) / 1e9);
}

static void
refill_rows(const refill_result *rr, uint32_t target)
{
	char m[64];
	double rate = target / rr->full_s;
	snprintf(m, sizeof m, "refill 0 -> %u warm sandboxes", target);
	add_row("refill", m, "/s", rate, NAN, NAN, ">= 200/s", rate >= 200 ? V_PASS : V_MISS);
	info_row("refill", "refill rate between 10% and 90%", "/s", rr->steady);
	info_row("refill", "time to fill the pool", "ms", rr->full_s * 1000);
	info_row("refill", "mean creation time (clone to READY)", "ms", rr->st.create_ms_avg);
	info_row("refill", "host CPU busy while filling", "%", rr->busy * 100);
	info_row("refill", "config: max_creating", "n", opt.max_creating);
	info_row("refill", "config: refill_per_s (burst = target)", "n", 10000);
	info_row("refill", "creation failures", "n", (double)rr->st.create_failures);
}

static void
memory_rows(const meminfo *a, const meminfo *b, long rss_delta, uint32_t target)
{
	double n = target;
	double per = (double)(a->avail - b->avail) / n;
	add_row("memory", "MemAvailable drop per idle sandbox", "KiB", per, NAN, NAN, "<= 1024 KiB",
	        per <= 1024 ? V_PASS : V_MISS);
	info_row("memory", "MemFree drop per idle sandbox", "KiB", (double)(a->free - b->free) / n);
	long sum = (b->slab - a->slab) + (b->percpu - a->percpu) + (b->kstack - a->kstack) +
	           (b->pagetables - a->pagetables) + (b->shmem - a->shmem) + (b->anon - a->anon);
	info_row("memory", "sum of the categories below", "KiB", (double)sum / n);
	info_row("memory", "  of which Slab", "KiB", (double)(b->slab - a->slab) / n);
	info_row("memory", "  of which unreclaimable Slab", "KiB",
	         (double)(b->sunreclaim - a->sunreclaim) / n);
	info_row("memory", "  of which Percpu", "KiB", (double)(b->percpu - a->percpu) / n);
	info_row("memory", "  of which KernelStack", "KiB", (double)(b->kstack - a->kstack) / n);
	info_row("memory", "  of which PageTables", "KiB",
	         (double)(b->pagetables - a->pagetables) / n);
	info_row("memory", "  of which Shmem (tmpfs)", "KiB", (double)(b->shmem - a->shmem) / n);
	info_row("memory", "  of which AnonPages", "KiB", (double)(b->anon - a->anon) / n);
	info_row("memory", "node process VmRSS growth per sandbox", "KiB", (double)rss_delta / n);
	long rss, pss;
	int k = pool_pss(&rss, &pss);
	if (k <= 0) {
		fail("cannot list the pool's init processes (kiln-<name>/pool/cgroup.procs)");
		return;
	}
	info_row("memory", "idle inits found in pool cgroup", "n", k);
	info_row("memory", "init Pss per idle sandbox", "KiB", (double)pss / k);
	info_row("memory", "init Rss per idle sandbox", "KiB", (double)rss / k);
}

static void
bench_pool(void)
{
	uint32_t target = (uint32_t)opt.refill_target;
	node *n = bench_node(target, 10000, target, (uint32_t)opt.max_creating);
	if (!n)
		return;
	meminfo before, after;
	refill_result rr;
	if (opt.only & SEC_MEMORY)
		meminfo_sample(&before);
	long rss0 = status_kib("/proc/self/status", "VmRSS:");
	measure_refill(n, target, &rr);
	if (rr.ok && (opt.only & SEC_REFILL))
		refill_rows(&rr, target);
	if (rr.ok && (opt.only & SEC_MEMORY)) {
		sleep(1); /* let deferred frees (RCU, workqueues) settle */
		meminfo_sample(&after);
		long rss1 = status_kib("/proc/self/status", "VmRSS:");
		memory_rows(&before, &after, rss1 - rss0, target);
	}
	bench_node_free(n);
}

/* ---- output ---- */

static void
fmt_val(char *buf, size_t len, double v, const char *unit)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else if (!strcmp(unit, "us") && v >= 1000)
		snprintf(buf, len, "%.2f ms", v / 1000);
	else if (!strcmp(unit, "us"))
		snprintf(buf, len, "%.1f us", v);
	else if (!strcmp(unit, "n"))
		snprintf(buf, len, "%.0f", v);
	else if (!strcmp(unit, "/s"))
		snprintf(buf, len, "%.0f/s", v);
	else
		snprintf(buf, len, "%.1f %s", v, unit);
}

static void
print_table(void)
{
	static const char *const verdicts[] = {"MISS", "PASS"};
	char k[32], b[32], r[32];
	printf("\n%-8s %-44s %11s %11s %8s %12s %s\n", "section", "metric", "kiln", "baseline",
	       "ratio", "target", "result");
	for (int i = 0; i < nrows; i++) {
		const row *w = &rows[i];
		fmt_val(k, sizeof k, w->kiln, w->unit);
		fmt_val(b, sizeof b, w->base, w->unit);
		if (isnan(w->ratio))
			snprintf(r, sizeof r, "-");
		else
			snprintf(r, sizeof r, "%.2fx", w->ratio);
		printf("%-8s %-44s %11s %11s %8s %12s %s\n", w->section, w->metric, k, b, r,
		       *w->target ? w->target : "-", w->verdict < 0 ? "" : verdicts[w->verdict]);
	}
}

static void
print_latencies(void)
{
	printf("\nlatency in us%-42s %6s %9s %9s %9s %9s %9s %9s\n", "", "n", "p50", "p90", "p99",
	       "p99.9", "max", "mean");
	for (int i = 0; i < nseries; i++) {
		const kl_hist *h = all_series[i].h;
		if (!h->count)
			continue;
		printf("%-8s %-46s %6llu %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n",
		       all_series[i].section, all_series[i].name, (unsigned long long)h->count,
		       pct_us(h, 50), pct_us(h, 90), pct_us(h, 99), pct_us(h, 99.9),
		       (double)h->max / 1000, kl_hist_mean(h) / 1000);
	}
}

static void
json_num(FILE *f, const char *key, double v, const char *after)
{
	if (isnan(v) || isinf(v))
		fprintf(f, "\"%s\": null%s", key, after);
	else
		fprintf(f, "\"%s\": %.3f%s", key, v, after);
}

static void
json_host(FILE *f)
{
	struct utsname u;
	uname(&u);
	fprintf(f, "  \"host\": {\"kernel\": \"%s\", \"cpus\": %ld, \"mem_total_kib\": %ld},\n",
	        u.release, sysconf(_SC_NPROCESSORS_ONLN), status_kib("/proc/meminfo", "MemTotal:"));
	fprintf(f,
	        "  \"config\": {\"iterations\": %d, \"sessions\": %d, \"warmup\": %d, "
	        "\"pool_target\": %d, \"refill_target\": %d, \"max_creating\": %d, "
	        "\"refill_per_s\": 10000, \"file_size\": %d},\n",
	        opt.iterations, opt.sessions, opt.warmup, opt.pool_target, opt.refill_target,
	        opt.max_creating, opt.file_size);
}

static int
write_json(const char *path)
{
	FILE *f = fopen(path, "we");
	if (!f) {
		fprintf(stderr, "kiln-bench-node: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(f, "{\n  \"benchmark\": \"kiln-bench-node\",\n");
	json_host(f);
	fprintf(f,
	        "  \"noise\": {\"other_cpu_share\": %.3f, \"load1_start\": %.2f, "
	        "\"load1_end\": %.2f},\n",
	        host_other_share(&mark_start, &mark_end), mark_start.load1, mark_end.load1);
	fprintf(f, "  \"errors\": %d,\n  \"results\": [\n", errors);
	for (int i = 0; i < nrows; i++) {
		const row *r = &rows[i];
		fprintf(f, "    {\"section\": \"%s\", \"metric\": \"%s\", \"unit\": \"%s\", ",
		        r->section, r->metric, r->unit);
		json_num(f, "kiln", r->kiln, ", ");
		json_num(f, "baseline", r->base, ", ");
		json_num(f, "ratio", r->ratio, ", ");
		fprintf(f, "\"target\": %s%s%s, \"pass\": %s}%s\n", *r->target ? "\"" : "",
		        *r->target ? r->target : "null", *r->target ? "\"" : "",
		        r->verdict < 0 ? "null"
		        : r->verdict   ? "true"
		                       : "false",
		        i + 1 < nrows ? "," : "");
	}
	fprintf(f, "  ],\n  \"latencies_us\": [\n");
	for (int i = 0; i < nseries; i++) {
		const kl_hist *h = all_series[i].h;
		fprintf(f, "    {\"section\": \"%s\", \"name\": \"%s\", \"count\": %llu, ",
		        all_series[i].section, all_series[i].name, (unsigned long long)h->count);
		json_num(f, "p50", pct_us(h, 50), ", ");
		json_num(f, "p90", pct_us(h, 90), ", ");
		json_num(f, "p99", pct_us(h, 99), ", ");
		json_num(f, "p999", pct_us(h, 99.9), ", ");
		json_num(f, "max", (double)h->max / 1000, ", ");
		json_num(f, "mean", kl_hist_mean(h) / 1000, "");
		fprintf(f, "}%s\n", i + 1 < nseries ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	return fclose(f) == 0 ? 0 : -1;
}

/* ---- options ---- */

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: kiln-bench-node [options]\n"
	        "Node micro-benchmark: kiln against baselines measured in the same run.\n"
	        "Runs as root (user, pid, mount and net namespaces; cgroup v2).\n"
	        "\n"
	        "Sections (all by default):\n"
	        "  warm     exec /bin/true (and bash /bin/true) in an open session\n"
	        "           vs posix_spawn+waitpid of /bin/true here; target p50 <= 1.3x, p99 < "
	        "3x\n"
	        "  session  open a session + first exec vs a cold bwrap --unshare-all sandbox;\n"
	        "           target >= 5x faster. Variants: warm pool (the target), warm pool\n"
	        "           with the exec delayed until the pool has refilled (diagnostic),\n"
	        "           empty pool (every open creates its sandbox)\n"
	        "  file     read, write, edit of a small file vs a spawned cat; target >= 20x\n"
	        "  refill   time for an empty pool to reach --refill-target; target >= 200/s\n"
	        "  memory   MemAvailable drop per idle sandbox once the pool is full;\n"
	        "           target <= 1 MiB\n"
	        "\n"
	        "Options:\n"
	        "  -n, --iterations N     measured warm calls and file-tool calls (default 500)\n"
	        "  -s, --sessions N       measured new sessions, per variant (default 100)\n"
	        "  -w, --warmup N         unmeasured iterations before each loop (default 20)\n"
	        "  -p, --pool-target N    warm pool of the warm/session/file node (default 8)\n"
	        "  -r, --refill-target N  pool target of the refill/memory node (default 200)\n"
	        "  -c, --max-creating N   refill/memory node: sandboxes created at once (default "
	        "16)\n"
	        "  -f, --file-size BYTES  file size for the file tools (default 4096)\n"
	        "  -o, --only LIST        comma-separated sections to run (default all)\n"
	        "  -j, --json FILE        also write the results as JSON to FILE\n"
	        "  -i, --init PATH        kiln-sandbox-init (default: beside this program)\n"
	        "  -v, --verbose          the node's info log on stderr\n"
	        "  -h, --help             this text\n"
	        "\n"
	        "Exit status: 0 when every measurement ran (targets met or not), 1 when calls\n"
	        "or setup failed, 2 on bad usage, 77 when not run as root.\n");
}

static int
parse_only(const char *s, unsigned *ret)
{
	unsigned mask = 0;
	char buf[256];
	kl_strlcpy(buf, s, sizeof buf);
	for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < KL_ARRAY_SIZE(section_names); i++)
			if (!strcmp(t, section_names[i]))
				break;
		if (!strcmp(t, "all"))
			mask |= SEC_ALL;
		else if (i == KL_ARRAY_SIZE(section_names))
			return -EINVAL;
		else
			mask |= 1u << i;
	}
	*ret = mask;
	return mask ? 0 : -EINVAL;
}

static int
parse_int(const char *s, int lo, int hi, int *ret)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

/* Apply one option (optarg); -ENOENT for an unknown one, -EINVAL for a bad value. */
static int
parse_opt(int c)
{
	static const struct {
		int c;
		int *dst;
		int lo, hi;
	} ints[] = {
	        {'n', &opt.iterations, 1, 10000000},  {'s', &opt.sessions, 1, 1000000},
	        {'w', &opt.warmup, 0, 1000000},       {'p', &opt.pool_target, 1, 1000},
	        {'r', &opt.refill_target, 1, 60000},  {'c', &opt.max_creating, 1, 4096},
	        {'f', &opt.file_size, 16, 256 << 10},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(ints); i++)
		if (ints[i].c == c)
			return parse_int(optarg, ints[i].lo, ints[i].hi, ints[i].dst);
	switch (c) {
	case 'o':
		return parse_only(optarg, &opt.only);
	case 'j':
		opt.json = optarg;
		return 0;
	case 'i':
		opt.init = optarg;
		return 0;
	case 'v':
		opt.verbose = true;
		return 0;
	case 'h':
		usage(stdout);
		exit(0);
	default:
		return -ENOENT;
	}
}

static int
parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
	        {"iterations", required_argument, NULL, 'n'},
	        {"sessions", required_argument, NULL, 's'},
	        {"warmup", required_argument, NULL, 'w'},
	        {"pool-target", required_argument, NULL, 'p'},
	        {"refill-target", required_argument, NULL, 'r'},
	        {"max-creating", required_argument, NULL, 'c'},
	        {"file-size", required_argument, NULL, 'f'},
	        {"only", required_argument, NULL, 'o'},
	        {"json", required_argument, NULL, 'j'},
	        {"init", required_argument, NULL, 'i'},
	        {"verbose", no_argument, NULL, 'v'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	int c, r = 0;
	while ((c = getopt_long(argc, argv, "n:s:w:p:r:c:f:o:j:i:vh", lo, NULL)) != -1) {
		r = parse_opt(c);
		if (r == -ENOENT)
			return -EINVAL;
		if (r < 0) {
			fprintf(stderr, "kiln-bench-node: bad value for -%c: %s\n", c, optarg);
			return r;
		}
	}
	return optind == argc ? 0 : -EINVAL;
}

static void
print_header(void)
{
	struct utsname u;
	uname(&u);
	printf("kiln-bench-node: %ld CPUs, kernel %s, %ld MiB RAM\n", sysconf(_SC_NPROCESSORS_ONLN),
	       u.release, status_kib("/proc/meminfo", "MemTotal:") / 1024);
	printf("iterations=%d sessions=%d warmup=%d pool-target=%d refill-target=%d "
	       "max-creating=%d file-size=%d\n",
	       opt.iterations, opt.sessions, opt.warmup, opt.pool_target, opt.refill_target,
	       opt.max_creating, opt.file_size);
	fflush(stdout);
}

static void
print_noise(void)
{
	double other = host_other_share(&mark_start, &mark_end);
	printf("\nhost: other processes used %.1f%% of the CPUs during the run; load average "
	       "%.2f at start, %.2f at end%s\n",
	       other * 100, mark_start.load1, mark_end.load1,
	       other > 0.10 ? " (a busy host: expect noisy numbers, run again when quiet)" : "");
}

static void
progress(const char *what)
{
	fprintf(stderr, "kiln-bench-node: %s...\n", what);
}

static void
run_sections(void)
{
	if (opt.only & (SEC_WARM | SEC_SESSION | SEC_FILE)) {
		node *n = bench_node((uint32_t)opt.pool_target, 0, 0, 0);
		if (n && node_start(n) == 0 && wait_warm(n, (uint32_t)opt.pool_target, 30000)) {
			printf("node: %s\n", node_limits_text(n));
			fflush(stdout);
			if (opt.only & SEC_WARM) {
				progress("warm calls");
				bench_warm(n);
			}
			if (opt.only & SEC_FILE) {
				progress("file tools");
				bench_file(n);
			}
			if (opt.only & SEC_SESSION) {
				progress("new sessions");
				bench_session(n);
			}
		}
		bench_node_free(n);
	}
	if (opt.only & (SEC_REFILL | SEC_MEMORY)) {
		progress("pool refill and memory");
		bench_pool();
	}
}

int
main(int argc, char **argv)
{
	opts_defaults(&opt);
	if (parse_args(argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "kiln-bench-node: needs root (namespaces and cgroups)\n");
		return 77;
	}
	kl_log_level = opt.verbose ? KL_INFO : KL_WARN;
	print_header();
	host_mark_now(&mark_start);
	run_sections();
	host_mark_now(&mark_end);
	print_table();
	print_latencies();
	print_noise();
	if (opt.json && write_json(opt.json) < 0)
		errors++;
	if (errors)
		fprintf(stderr, "kiln-bench-node: %d errors (see above)\n", errors);
	return errors ? 1 : 0;
}
