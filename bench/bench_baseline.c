/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Baselines, measured in the same run on the same machine and reported as
 * ratios (../shared/DESIGN.md, "Performance targets"). A cluster of
 * kiln-scheduler and one kiln-node is started whose node also serves direct
 * calls (kiln-node --listen), so the same node answers both paths. One call
 * at a time, interleaved per iteration so that noise lands on every side:
 * a bare posix_spawn+waitpid of `true`, `exec true` in an open session
 * through the scheduler and straight to the node, `read` of a 4 KiB file
 * against a spawned `cat`; then new session + first call against a cold
 * bubblewrap sandbox; then throughput: 16 spawn loops against
 * `exec true` closed-loop through the whole path. Also the scheduler's
 * placement microbenchmark: sched_place() itself over N fake nodes.
 */
#include "bench.h"

#include "kiln_sched.h"
#include "kl_clock.h"
#include "kl_log.h"
#include "kl_proto.h"
#include "kl_util.h"
#include "sched_bench.h"
#include "sched_config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { V_INFO = 0, V_PASS = 1, V_MISS = 2 };

void
bench_add_row(bench_results *R, const char *section, const char *metric, const char *unit,
              double kiln, double base, const char *base_what, double ratio, const char *target,
              int verdict)
{
	if (R->nrows >= (int)KL_ARRAY_SIZE(R->rows))
		return;
	bench_row *r = &R->rows[R->nrows++];
	snprintf(r->section, sizeof r->section, "%s", section);
	snprintf(r->metric, sizeof r->metric, "%s", metric);
	snprintf(r->unit, sizeof r->unit, "%s", unit);
	snprintf(r->base_what, sizeof r->base_what, "%s", base_what ? base_what : "");
	snprintf(r->target, sizeof r->target, "%s", target ? target : "");
	r->kiln = kiln;
	r->base = base;
	r->ratio = ratio;
	r->verdict = verdict;
}

/* ---- host-side baselines ---- */

/* clang-format off */
static const char *const bwrap_argv[] = {
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

/* posix_spawn argv, optionally with stdout on a pipe read to EOF; wait.
 * Returns the elapsed ns, or 0 on failure. */
static uint64_t
spawn_wait(const char *path, const char *const *argv, bool read_out)
{
	int p[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	uint64_t t0 = kl_now_ns();
	if (read_out) {
		if (pipe2(p, O_CLOEXEC) < 0)
			return 0;
		posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	}
	pid_t pid;
	int r = posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (read_out)
		close(p[1]);
	if (r != 0) {
		if (read_out)
			close(p[0]);
		return 0;
	}
	if (read_out) {
		char buf[8192];
		while (read(p[0], buf, sizeof buf) > 0)
			;
		close(p[0]);
	}
	int st;
	waitpid(pid, &st, 0);
	uint64_t ns = kl_now_ns() - t0;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? ns : 0;
}

/* ---- straight to the node: NodeWork over nng REQ ---- */

typedef struct direct {
	nng_socket sock;
	bool open;
} direct;

static int
direct_open(direct *d, const char *url)
{
	if (nng_req0_open(&d->sock) != 0)
		return -ENOMEM;
	nng_socket_set_ms(d->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(d->sock, NNG_OPT_RECVTIMEO, 30000);
	nng_socket_set_size(d->sock, NNG_OPT_RECVMAXSZ, KL_MAX_MSG);
	if (nng_dial(d->sock, url, NULL, 0) != 0) {
		nng_close(d->sock);
		return -ECONNREFUSED;
	}
	d->open = true;
	return 0;
}

static void
direct_close(direct *d)
{
	if (d->open)
		nng_close(d->sock);
	d->open = false;
}

/* One NodeWork, its NodeReply in *ret (free with kiln__envelope__free_unpacked). */
static int
direct_do(direct *d, Kiln__NodeWork *w, Kiln__Envelope **ret)
{
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_WORK;
	e.node_work = w;
	uint8_t *buf;
	size_t len;
	if (kl_env_encode(&e, &buf, &len) < 0)
		return -EMSGSIZE;
	int r = nng_send(d->sock, buf, len, 0);
	free(buf);
	if (r != 0)
		return -EIO;
	void *in;
	size_t inlen;
	if (nng_recv(d->sock, &in, &inlen, NNG_FLAG_ALLOC) != 0)
		return -EIO;
	Kiln__Envelope *re = NULL;
	uint32_t ver;
	r = kl_env_decode(in, inlen, KL_MAX_MSG, &re, &ver);
	nng_free(in, inlen);
	if (r < 0)
		return r;
	if (re->msg_case != KILN__ENVELOPE__MSG_NODE_REPLY) {
		kiln__envelope__free_unpacked(re, NULL);
		return -EPROTO;
	}
	*ret = re;
	return 0;
}

static int
direct_session(direct *d, const char *id)
{
	Kiln__SessionOpen so = KILN__SESSION_OPEN__INIT;
	so.session_id = (char *)id;
	so.tenant = "dev";
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = &so;
	Kiln__Envelope *re;
	int r = direct_do(d, &w, &re);
	if (r < 0)
		return r;
	Kiln__NodeReply *nr = re->node_reply;
	r = nr->reply_case == KILN__NODE_REPLY__REPLY_OPENED && nr->opened->code == KILN__CODE__OK
	            ? 0
	            : -EIO;
	kiln__envelope__free_unpacked(re, NULL);
	return r;
}

static char *true_argv[] = {"true", NULL};
#define BASE_FILE "/etc/os-release" /* in the base rootfs of every sandbox */
#define GAP_US    2000

static uint64_t
direct_exec_true(direct *d, const char *session)
{
	Kiln__ExecInput xi = KILN__EXEC_INPUT__INIT;
	xi.argv = true_argv;
	xi.n_argv = 1;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)session;
	tc.job_id = kiln_job_id_new();
	tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc.exec = &xi;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = &tc;
	Kiln__Envelope *re;
	uint64_t t0 = kl_now_ns();
	if (direct_do(d, &w, &re) < 0)
		return 0;
	uint64_t ns = kl_now_ns() - t0;
	Kiln__NodeReply *nr = re->node_reply;
	bool ok = nr->reply_case == KILN__NODE_REPLY__REPLY_RESULT &&
	          nr->result->code == KILN__CODE__OK && nr->result->exit_code == 0;
	kiln__envelope__free_unpacked(re, NULL);
	return ok ? ns : 0;
}

/* read of a file of the base rootfs (the same in every session). */
static uint64_t
direct_read(direct *d, const char *session, const char *path)
{
	Kiln__ReadInput ri = KILN__READ_INPUT__INIT;
	ri.file_path = (char *)path;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)session;
	tc.job_id = kiln_job_id_new();
	tc.tool_case = KILN__TOOL_CALL__TOOL_READ;
	tc.read = &ri;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = &tc;
	Kiln__Envelope *re;
	uint64_t t0 = kl_now_ns();
	if (direct_do(d, &w, &re) < 0)
		return 0;
	uint64_t ns = kl_now_ns() - t0;
	Kiln__NodeReply *nr = re->node_reply;
	bool ok = nr->reply_case == KILN__NODE_REPLY__REPLY_RESULT &&
	          nr->result->code == KILN__CODE__OK && !nr->result->is_error;
	kiln__envelope__free_unpacked(re, NULL);
	return ok ? ns : 0;
}

static void
direct_session_close(direct *d, const char *id)
{
	Kiln__SessionClose sc = KILN__SESSION_CLOSE__INIT;
	sc.session_id = (char *)id;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CLOSE;
	w.close = &sc;
	Kiln__Envelope *re;
	if (direct_do(d, &w, &re) == 0)
		kiln__envelope__free_unpacked(re, NULL);
}

/* ---- through the scheduler ---- */

static uint64_t
sched_exec_true(kiln_client *k, const char *session)
{
	Kiln__ToolResult *r = NULL;
	const char *argv[] = {"true", NULL};
	uint64_t t0 = kl_now_ns();
	int rc = kiln_exec(k, session, argv, 0, &r);
	uint64_t ns = kl_now_ns() - t0;
	bool ok = rc == 0 && r->code == KILN__CODE__OK && r->exit_code == 0;
	kiln_result_free(r);
	return ok ? ns : 0;
}

static uint64_t
sched_read(kiln_client *k, const char *session, const char *path)
{
	Kiln__ToolResult *r = NULL;
	uint64_t t0 = kl_now_ns();
	int rc = kiln_read(k, session, path, 0, 0, &r);
	uint64_t ns = kl_now_ns() - t0;
	bool ok = rc == 0 && r->code == KILN__CODE__OK && !r->is_error;
	kiln_result_free(r);
	return ok ? ns : 0;
}

/* A call the scheduler answers itself (a session that does not exist): one
 * client <-> scheduler round trip, the hop the scheduler adds. */
static uint64_t
sched_only(kiln_client *k)
{
	Kiln__ToolResult *r = NULL;
	uint64_t t0 = kl_now_ns();
	int rc = kiln_read(k, "s-no-such-session", "x", 0, 0, &r);
	uint64_t ns = kl_now_ns() - t0;
	bool ok = rc < 0 && kiln_last_error()->code == KILN__CODE__NOT_FOUND;
	kiln_result_free(r);
	return ok ? ns : 0;
}

/* ---- the transport's floor: nng REQ/REP echo on loopback tcp ---- */

typedef struct echo {
	nng_socket rep, req;
	pthread_t th;
	bool up;
} echo;

static void *
echo_main(void *arg)
{
	echo *e = arg;
	for (;;) {
		nng_msg *m;
		if (nng_recvmsg(e->rep, &m, 0) != 0)
			return NULL;
		if (nng_sendmsg(e->rep, m, 0) != 0)
			nng_msg_free(m);
	}
}

static int
echo_start(echo *e)
{
	char url[64];
	snprintf(url, sizeof url, "tcp://127.0.0.1:%d", bench_free_port());
	if (nng_rep0_open(&e->rep) != 0)
		return -ENOMEM;
	if (nng_listen(e->rep, url, NULL, 0) != 0 || nng_req0_open(&e->req) != 0) {
		nng_close(e->rep);
		return -EADDRINUSE;
	}
	nng_socket_set_ms(e->req, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(e->req, NNG_OPT_RECVTIMEO, 10000);
	if (nng_dial(e->req, url, NULL, 0) != 0) {
		nng_close(e->req);
		nng_close(e->rep);
		return -ECONNREFUSED;
	}
	pthread_create(&e->th, NULL, echo_main, e);
	e->up = true;
	return 0;
}

/* One 200-byte request and its echo. */
static uint64_t
echo_rtt(echo *e)
{
	char b[200] = {0}, *in;
	size_t n;
	uint64_t t0 = kl_now_ns();
	if (nng_send(e->req, b, sizeof b, 0) != 0 || nng_recv(e->req, &in, &n, NNG_FLAG_ALLOC))
		return 0;
	uint64_t ns = kl_now_ns() - t0;
	nng_free(in, n);
	return ns;
}

static void
echo_stop(echo *e)
{
	if (!e->up)
		return;
	nng_close(e->req);
	nng_close(e->rep); /* ends echo_main's recv */
	pthread_join(e->th, NULL);
	e->up = false;
}

static void
rec(kl_hist *h, uint64_t ns, int *fails)
{
	if (ns)
		kl_hist_record(h, ns);
	else
		(*fails)++;
}

/* ---- throughput ---- */

typedef struct spawner {
	pthread_t th;
	uint64_t until, n;
} spawner;

static void *
spawner_main(void *arg)
{
	spawner *s = arg;
	const char *argv[] = {"/bin/true", NULL};
	while (kl_now_ns() < s->until && !bench_interrupted)
		s->n += spawn_wait("/bin/true", argv, false) != 0;
	return NULL;
}

static double
spawn_throughput(int threads, double seconds)
{
	spawner s[16];
	if (threads > 16)
		threads = 16;
	uint64_t t0 = kl_now_ns();
	for (int i = 0; i < threads; i++) {
		s[i] = (spawner){.until = t0 + (uint64_t)(seconds * 1e9)};
		pthread_create(&s[i].th, NULL, spawner_main, &s[i]);
	}
	uint64_t n = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(s[i].th, NULL);
		n += s[i].n;
	}
	return (double)n / ((double)(kl_now_ns() - t0) / 1e9);
}

typedef struct dthread {
	pthread_t th;
	const char *url;
	pthread_barrier_t *ready; /* sessions open before the clock starts */
	const uint64_t *until;
	uint64_t n;
	int idx;
} dthread;

static void *
direct_tput_main(void *arg)
{
	dthread *t = arg;
	direct d = {0};
	char sid[64];
	snprintf(sid, sizeof sid, "bench-tput-%d-%d", (int)getpid(), t->idx);
	bool ok = direct_open(&d, t->url) == 0 && direct_session(&d, sid) == 0;
	pthread_barrier_wait(t->ready);
	pthread_barrier_wait(t->ready); /* the main thread has set *until */
	while (ok && kl_now_ns() < *t->until && !bench_interrupted)
		t->n += direct_exec_true(&d, sid) != 0;
	if (ok)
		direct_session_close(&d, sid);
	direct_close(&d);
	return NULL;
}

static double
direct_throughput(const char *url, int threads, double seconds)
{
	dthread t[64];
	pthread_barrier_t ready;
	uint64_t until = 0;
	pthread_barrier_init(&ready, NULL, (unsigned)threads + 1);
	for (int i = 0; i < threads; i++) {
		t[i] = (dthread){.url = url, .ready = &ready, .until = &until, .idx = i};
		pthread_create(&t[i].th, NULL, direct_tput_main, &t[i]);
	}
	pthread_barrier_wait(&ready);
	uint64_t t0 = kl_now_ns();
	until = t0 + (uint64_t)(seconds * 1e9);
	pthread_barrier_wait(&ready);
	uint64_t n = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i].th, NULL);
		n += t[i].n;
	}
	pthread_barrier_destroy(&ready);
	return (double)n / ((double)(kl_now_ns() - t0) / 1e9);
}

/* `exec true` closed loop through the scheduler, with the benchmark's driver. */
static double
sched_throughput(bench_target *t, const bench_opts *o, int agents, double seconds)
{
	bench_workload w;
	char err[256];
	if (bench_workload_profile("true", &w, err, sizeof err) < 0)
		return 0;
	bench_agents_cfg cfg = {.w = &w, .ntenants = 1, .call_timeout_ms = o->call_timeout_ms};
	cfg.tenants[0] = &t->tenants[0];
	cfg.agents_per_tenant[0] = agents;
	bench_agents ag;
	double tput = 0;
	if (bench_agents_open(&ag, t, &cfg, err, sizeof err) == 0) {
		bench_metrics *m = bench_metrics_new();
		bench_load L = {.label = "baseline throughput",
		                .closed = true,
		                .duration_s = seconds,
		                .warmup_s = 0.5,
		                .drain_s = 5};
		if (bench_drive(&ag, t, &L, m) == 0)
			tput = (double)m->total.ok / m->window_s;
		bench_agents_close(&ag);
		bench_metrics_free(m);
	}
	bench_workload_free(&w);
	return tput;
}

/* ---- the phase ---- */

typedef struct bhists {
	kl_hist spawn, sched, direct, cat, read, session, bwrap, only, echo, sread, dread;
	int fails;
} bhists;

static void
warm_loop(bhists *h, kiln_client *k, const char *ss, direct *d, const char *ds, const char *catfile,
          echo *ec, int iters)
{
	const char *true_av[] = {"/bin/true", NULL};
	const char *cat_av[] = {"/bin/cat", catfile, NULL};
	for (int i = -20; i < iters && !bench_interrupted; i++) {
		/* Each measurement starts GAP_US after the previous one ended, so
		 * that the node's cleanup after an exec (reaping, the job leaf's
		 * removal) does not land in the next call's time. */
		uint64_t a = spawn_wait("/bin/true", true_av, false);
		usleep(GAP_US);
		uint64_t b = sched_exec_true(k, ss);
		usleep(GAP_US);
		uint64_t c = direct_exec_true(d, ds);
		usleep(GAP_US);
		uint64_t e = spawn_wait("/bin/cat", cat_av, true);
		usleep(GAP_US);
		uint64_t f = sched_read(k, ss, "bench/file.txt");
		usleep(GAP_US);
		uint64_t g = sched_only(k);
		usleep(GAP_US);
		uint64_t sr = sched_read(k, ss, BASE_FILE);
		usleep(GAP_US);
		uint64_t dr = direct_read(d, ds, BASE_FILE);
		usleep(GAP_US);
		uint64_t x = ec->up ? echo_rtt(ec) : 0;
		usleep(GAP_US);
		if (i < 0)
			continue; /* warm-up */
		rec(&h->spawn, a, &h->fails);
		rec(&h->sched, b, &h->fails);
		rec(&h->direct, c, &h->fails);
		rec(&h->cat, e, &h->fails);
		rec(&h->read, f, &h->fails);
		rec(&h->only, g, &h->fails);
		rec(&h->sread, sr, &h->fails);
		rec(&h->dread, dr, &h->fails);
		if (ec->up)
			rec(&h->echo, x, &h->fails);
	}
}

static void
session_loop(bhists *h, kiln_client *k, bool have_bwrap, int iters)
{
	for (int i = -3; i < iters && !bench_interrupted; i++) {
		char *sid = NULL;
		char err[256];
		uint64_t t0 = kl_now_ns();
		uint64_t ns = 0;
		if (kiln_session_open(k, NULL, NULL, &sid, err, sizeof err) == 0) {
			uint64_t x = sched_exec_true(k, sid);
			ns = x ? kl_now_ns() - t0 : 0;
			kiln_session_close(k, sid);
			free(sid);
		}
		uint64_t b = have_bwrap ? spawn_wait("/usr/bin/bwrap", bwrap_argv, false) : 0;
		if (i >= 0) {
			rec(&h->session, ns, &h->fails);
			if (have_bwrap)
				rec(&h->bwrap, b, &h->fails);
		}
		usleep(10000); /* let the pool refill, so every open finds a warm sandbox */
	}
}

static int
prepare(kiln_client *k, const char *session, char *catfile, size_t n)
{
	char text[4096];
	for (size_t i = 0; i < sizeof text; i++)
		text[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
	Kiln__ToolResult *r = NULL;
	int rc = kiln_write(k, session, "bench/file.txt", text, sizeof text, &r);
	bool ok = rc == 0 && r->code == KILN__CODE__OK;
	kiln_result_free(r);
	snprintf(catfile, n, "/tmp/kiln-bench-cat-%d.txt", (int)getpid());
	int fd = open(catfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	ok = ok && write(fd, text, sizeof text) == (ssize_t)sizeof text;
	close(fd);
	return ok ? 0 : -EIO;
}

static void
warm_rows(bench_results *R, bhists *h)
{
	double s50 = bench_us(&h->spawn, 50), s99 = bench_us(&h->spawn, 99);
	double k50 = bench_us(&h->sched, 50), k99 = bench_us(&h->sched, 99);
	double d50 = bench_us(&h->direct, 50), d99 = bench_us(&h->direct, 99);
	bench_add_row(R, "warm", "exec true p50, through the scheduler", "us", k50, s50,
	              "posix_spawn+wait", k50 / s50, "<= 1.3x", k50 / s50 <= 1.3 ? V_PASS : V_MISS);
	bench_add_row(R, "warm", "exec true p99, through the scheduler", "us", k99, s99,
	              "posix_spawn+wait", k99 / s99, "< 3x", k99 / s99 < 3 ? V_PASS : V_MISS);
	bench_add_row(R, "warm", "exec true p50, straight to the node", "us", d50, s50,
	              "posix_spawn+wait", d50 / s50, "", V_INFO);
	bench_add_row(R, "warm", "exec true p99, straight to the node", "us", d99, s99,
	              "posix_spawn+wait", d99 / s99, "", V_INFO);
	bench_add_row(R, "scheduler", "added latency p50 (scheduler - direct)", "us", k50 - d50,
	              NAN, "", NAN, "< 100 us", k50 - d50 < 100 ? V_PASS : V_MISS);
	bench_add_row(R, "scheduler", "added latency p99 (scheduler - direct)", "us", k99 - d99,
	              NAN, "", NAN, "", V_INFO);
	/* The same for a call whose own cost is small and steady: the
	 * difference of two exec medians carries the spawn's noise. */
	double sr50 = bench_us(&h->sread, 50), dr50 = bench_us(&h->dread, 50);
	bench_add_row(R, "scheduler", "added latency p50, read of a small file", "us", sr50 - dr50,
	              NAN, "", NAN, "< 100 us", sr50 - dr50 < 100 ? V_PASS : V_MISS);
	bench_add_row(R, "scheduler", "read p50 through the scheduler / straight to the node", "us",
	              sr50, dr50, "straight to the node", sr50 / dr50, "", V_INFO);
	/* What the added latency is made of: the extra hop, measured alone. */
	double o50 = bench_us(&h->only, 50), e50 = bench_us(&h->echo, 50);
	bench_add_row(R, "scheduler", "round trip p50 of a call it answers itself", "us", o50, e50,
	              "nng req/rep echo", e50 > 0 ? o50 / e50 : NAN, "", V_INFO);
	if (h->echo.count)
		bench_add_row(R, "transport", "nng req/rep echo p50, 200 B, loopback tcp", "us",
		              e50, NAN, "", NAN, "", V_INFO);
	double c50 = bench_us(&h->cat, 50), r50 = bench_us(&h->read, 50);
	bench_add_row(R, "file", "read 4 KiB p50, through the scheduler", "us", r50, c50,
	              "spawned cat", c50 / r50, ">= 20x", c50 / r50 >= 20 ? V_PASS : V_MISS);
}

static void
session_rows(bench_results *R, bhists *h, bool have_bwrap)
{
	double k50 = bench_us(&h->session, 50), k99 = bench_us(&h->session, 99);
	if (!have_bwrap) {
		bench_add_row(R, "session", "new session + first exec p50 (no bwrap installed)",
		              "us", k50, NAN, "", NAN, "", V_INFO);
		return;
	}
	double b50 = bench_us(&h->bwrap, 50), b99 = bench_us(&h->bwrap, 99);
	bench_add_row(R, "session", "new session + first exec p50", "us", k50, b50,
	              "cold bwrap true", b50 / k50, ">= 5x faster",
	              b50 / k50 >= 5 ? V_PASS : V_MISS);
	bench_add_row(R, "session", "new session + first exec p99", "us", k99, b99,
	              "cold bwrap true", b99 / k99, "", V_INFO);
}

static void
tput_rows(bench_results *R, double spawn, double via, double straight)
{
	bench_add_row(R, "throughput", "exec true calls/s, whole path (closed loop)", "/s", via,
	              spawn, "16 spawn loops", via / spawn, ">= 70%",
	              via / spawn >= 0.7 ? V_PASS : V_MISS);
	bench_add_row(R, "throughput", "exec true calls/s, straight to the node", "/s", straight,
	              spawn, "16 spawn loops", straight / spawn, "", V_INFO);
}

int
bench_phase_baselines(bench_results *R, const bench_opts *o)
{
	char err[512], catfile[128] = "", dsid[64];
	bench_target t;
	bench_target_init(&t, TARGET_PROCS, o->bindir);
	t.nodes = 1;
	t.warm = o->warm > 8 ? o->warm : 8;
	t.direct = true;
	t.pin = false;
	t.verbose = o->verbose;
	if (bench_progress)
		fprintf(stderr,
		        "kiln-bench: baselines: starting kiln-scheduler + 1 kiln-node (also "
		        "serving direct calls)\n");
	int r = bench_target_start(&t, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "kiln-bench: baselines: %s\n", err);
		return r;
	}
	kiln_client *k = NULL;
	direct d = {0};
	char *ss = NULL;
	bhists *h = kl_xcalloc(1, sizeof *h);
	kl_hist *all[] = {&h->spawn, &h->sched, &h->direct, &h->cat,   &h->read, &h->session,
	                  &h->bwrap, &h->only,  &h->echo,   &h->sread, &h->dread};
	echo ec = {0};
	if (echo_start(&ec) < 0)
		fprintf(stderr, "kiln-bench: baselines: the nng echo baseline did not start\n");
	for (size_t i = 0; i < KL_ARRAY_SIZE(all); i++)
		kl_hist_init(all[i]);
	snprintf(dsid, sizeof dsid, "bench-direct-%d", (int)getpid());
	if ((r = kiln_connect(t.client_url, t.tenants[0].token, &k, err, sizeof err)) < 0 ||
	    (r = kiln_session_open(k, NULL, NULL, &ss, err, sizeof err)) < 0 ||
	    (r = direct_open(&d, t.direct_url)) < 0 || (r = direct_session(&d, dsid)) < 0 ||
	    (r = prepare(k, ss, catfile, sizeof catfile)) < 0) {
		fprintf(stderr, "kiln-bench: baselines: setup failed: %s\n",
		        *err ? err : strerror(-r));
		goto out;
	}
	if (bench_progress)
		fprintf(stderr, "kiln-bench: baselines: %d warm calls of each kind, interleaved\n",
		        o->baseline_iters);
	warm_loop(h, k, ss, &d, dsid, catfile, &ec, o->baseline_iters);
	bool have_bwrap = access("/usr/bin/bwrap", X_OK) == 0;
	session_loop(h, k, have_bwrap, o->baseline_iters / 3 > 10 ? o->baseline_iters / 3 : 10);
	if (bench_progress)
		fprintf(stderr,
		        "kiln-bench: baselines: new sessions, then throughput (%.0f s each)\n",
		        o->baseline_tput_s);
	/* 16 of each, as many as the kiln side keeps in flight: on a busy
	 * machine fewer spawn loops leave the CPUs idle between spawns. */
	double sp = spawn_throughput(16, o->baseline_tput_s);
	double st = sched_throughput(&t, o, 16, o->baseline_tput_s);
	double dt = direct_throughput(t.direct_url, 16, o->baseline_tput_s);
	warm_rows(R, h);
	session_rows(R, h, have_bwrap);
	tput_rows(R, sp, st, dt);
	if (h->fails)
		fprintf(stderr, "kiln-bench: baselines: %d measurements failed and were left out\n",
		        h->fails);
	r = bench_interrupted ? -EINTR : 0;
out:
	if (d.open)
		direct_session_close(&d, dsid);
	direct_close(&d);
	if (ss)
		kiln_session_close(k, ss);
	free(ss);
	kiln_close(k);
	if (*catfile)
		unlink(catfile);
	free(h);
	echo_stop(&ec);
	bench_target_stop(&t);
	return r;
}

/* ---- placement microbenchmark ---- */

int
bench_phase_placement(bench_results *R, const bench_opts *o)
{
	static const int counts[] = {1, 10, 100, 1000};
	sched_config cfg;
	char err[512];
	sched *s = NULL;
	int saved = kl_log_level;
	kl_log_level = KL_WARN;
	sched_config_init(&cfg);
	sched_config_dev(&cfg);
	cfg.node_url[0] = 0;
	cfg.client_url[0] = 0;
	cfg.dead_after_ms = 3600 * 1000; /* fake nodes never send heartbeats */
	int r = sched_new(&cfg, NULL, NULL, &s, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "kiln-bench: placement: %s\n", err);
		sched_config_fini(&cfg);
		kl_log_level = saved;
		return r;
	}
	uint64_t rng = 0x2545f4914f6cdd1dull;
	int have = 0;
	double secs = o->smoke ? 0.05 : 0.5;
	for (size_t c = 0; c < KL_ARRAY_SIZE(counts) && !bench_interrupted; c++) {
		for (; have < counts[c]; have++) {
			char id[32];
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			snprintf(id, sizeof id, "fake-%d", have);
			sched_bench_add_node(s, id, (uint32_t)(rng % 9),
			                     (uint32_t)(rng >> 40) % 512, 1024);
		}
		uint64_t n = 0, t0 = kl_now_ns(), until = t0 + (uint64_t)(secs * 1e9);
		while (kl_now_ns() < until)
			for (int i = 0; i < 1000; i++)
				n += sched_bench_place(s, "") == 0;
		double el = (double)(kl_now_ns() - t0) / 1e9;
		bench_place_row *pr = &R->place[R->nplace++];
		pr->nodes = counts[c];
		pr->n = n;
		pr->per_s = (double)n / el;
	}
	sched_stop(s);
	sched_free(s);
	sched_config_fini(&cfg);
	kl_log_level = saved;
	return bench_interrupted ? -EINTR : 0;
}
