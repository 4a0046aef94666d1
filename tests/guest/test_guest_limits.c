/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Real limit enforcement, inside the guest kernel (scripts/guest/run boots it;
 * docs/guest.md): a session's memory.max OOM-kills a memory hog and the result
 * says oom_killed; pids.max (with RLIMIT_NPROC) contains fork loops and fork
 * bombs; cpu.max holds a spinner to its quota while an unlimited one gets the
 * CPU; a tenant's aggregate memory cap holds across its sessions; the node and
 * the other sessions carry on; every result says limits_enforced=true.
 *
 * Only meaningful where the node's cgroup v2 subtree has the memory and pids
 * controllers: elsewhere (hybrid hosts, where v1 owns them) it exits 77.
 * Measurements are printed as `GUEST-METRIC key=value` lines for docs/guest.md.
 */
#include "test.h"

#include "kl_clock.h"
#include "kl_proto.h"
#include "kt_node.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/klog.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1ull << 20)
/* How far memory.peak may pass memory.max: see memory_hog_is_oom_killed. */
#define PEAK_SLACK (4 * MIB)

static node *n;
static char tree[512]; /* /sys/fs/cgroup/kiln-<node> */

/* ---- cgroup files of the node's tree ---- */

/* <tree>/<rel>/<file> into buf; "" when it cannot be read. */
static const char *
cg_file(const char *rel, const char *file, char *buf, size_t len)
{
	char p[1024];
	snprintf(p, sizeof p, "%s/%s/%s", tree, rel, file);
	buf[0] = 0;
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return buf;
	ssize_t k = read(fd, buf, len - 1);
	close(fd);
	buf[k > 0 ? k : 0] = 0;
	return buf;
}

/* A single number (memory.current) or a key of a flat-keyed file
 * (memory.events); -1 when missing. */
static long long
cg_num(const char *rel, const char *file, const char *key)
{
	char buf[4096];
	cg_file(rel, file, buf, sizeof buf);
	if (!key)
		return buf[0] ? atoll(buf) : -1;
	size_t kl = strlen(key);
	for (char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, key, kl) && p[kl] == ' ')
			return atoll(p + kl + 1);
	return -1;
}

/* Does the kernel log hold needle? (root in the guest may read it) */
static int
kmsg_has(const char *needle)
{
	int len = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	if (len <= 0)
		return 0;
	char *buf = malloc((size_t)len + 1);
	int k = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, len);
	buf[k > 0 ? k : 0] = 0;
	int found = strstr(buf, needle) != NULL;
	free(buf);
	return found;
}

/* ---- sessions and calls: every reply must say limits_enforced ---- */

static void
open_session_agg(const char *sid, const char *tenant, uint64_t mem, uint32_t pids, uint32_t cpu,
                 uint64_t tenant_mem)
{
	Kiln__Limits lim = KILN__LIMITS__INIT, agg = KILN__LIMITS__INIT;
	lim.memory_bytes = mem;
	lim.pids = pids;
	lim.cpu_millicores = cpu;
	agg.memory_bytes = tenant_mem;
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.session_id = (char *)sid;
	o.tenant = (char *)tenant;
	o.limits = &lim;
	if (tenant_mem)
		o.tenant_limits = &agg;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = &o;
	Kiln__NodeReply *r = kt_node_do(n, &w);
	ASSERT_EQ(r->reply_case, KILN__NODE_REPLY__REPLY_OPENED);
	if (r->opened->code)
		fprintf(stderr, "open %s: %s\n", sid, r->opened->message);
	ASSERT_EQ(r->opened->code, 0);
	ASSERT(r->opened->limits_enforced);
	kt_free_reply(r);
}

static void
open_session(const char *sid, const char *tenant, uint64_t mem, uint32_t pids, uint32_t cpu)
{
	open_session_agg(sid, tenant, mem, pids, cpu, 0);
}

static Kiln__ToolResult *
run_exec(const char *sid, uint32_t timeout_ms, const char *const *argv)
{
	Kiln__ToolResult *r = kt_exec(n, sid, timeout_ms, argv);
	ASSERT(r->limits_enforced);
	return r;
}

static Kiln__ToolResult *
run_bash(const char *sid, const char *cmd, uint32_t timeout_ms)
{
	Kiln__ToolResult *r = kt_bash(n, sid, cmd, timeout_ms);
	ASSERT(r->limits_enforced);
	return r;
}

/* `echo <word>` in a session answers; retried while init reaps a bomb. */
static void
assert_serves(const char *sid, const char *word)
{
	char cmd[64], want[64];
	snprintf(cmd, sizeof cmd, "echo %s", word);
	snprintf(want, sizeof want, "%s\n", word);
	int ok = 0;
	for (int i = 0; i < 50 && !ok; i++) {
		Kiln__ToolResult *r = run_bash(sid, cmd, 10000);
		ok = r->code == 0 && !strcmp(kt_out(r), want) && !r->oom_killed;
		if (!ok)
			fprintf(stderr, "%s: %s code=%d oom=%d out=%s\n", sid, cmd, r->code,
			        r->oom_killed, kt_out(r));
		kt_free_result(r);
		if (!ok)
			usleep(100000);
	}
	ASSERT(ok);
}

static void
session_rel(const char *tenant, const char *sid, char *buf, size_t len)
{
	snprintf(buf, len, "tenants/%s/%s", tenant, sid);
}

/* ---- setup ---- */

/* Our cgroup's controllers: the node needs memory and pids there. */
static int
have_limit_controllers(void)
{
	char line[512], path[1024], buf[256] = "";
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return 0;
	path[0] = 0;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(path, sizeof path, "/sys/fs/cgroup%s/cgroup.controllers",
			         strcmp(line + 3, "/") ? line + 3 : "");
		}
	fclose(f);
	int fd = path[0] ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0)
		return 0;
	ssize_t k = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[k > 0 ? k : 0] = 0;
	return strstr(buf, "memory") && strstr(buf, "pids");
}

TEST(setup)
{
	kt_require_sandboxes();
	if (!have_limit_controllers())
		KT_SKIP("the memory and pids controllers are not available to this cgroup "
		        "(cgroup v1 holds them on a hybrid host): these tests run inside the "
		        "guest kernel, through scripts/guest/run (ctest -L guest)");
	node_config cfg;
	node_config_defaults(&cfg);
	node_template_cfg *t = &cfg.templates[0];
	t->target = 2;
	/* The guest has 768 MiB: keep every default far below it, so only a
	 * cgroup (never the global OOM killer) stops a hog. */
	t->memory_bytes = 256 * MIB;
	t->pids = 256;
	t->workspace_bytes = 64 * MIB;
	t->tmp_bytes = 64 * MIB;
	n = kt_node_start(&cfg);
	node_stats st;
	node_get_stats(n, &st);
	fprintf(stderr, "node %s: %s\n", st.name, node_limits_text(n));
	ASSERT(st.limits_enforced);
	ASSERT_EQ(st.enforced_ctrl & 7u, 7u); /* cpu, memory, pids */
	snprintf(tree, sizeof tree, "/sys/fs/cgroup/kiln-%s", st.name);
	char buf[256];
	const char *sc = cg_file("tenants", "cgroup.subtree_control", buf, sizeof buf);
	fprintf(stderr, "tenants/cgroup.subtree_control: %s", sc);
	ASSERT_CONTAINS(sc, "memory");
	ASSERT_CONTAINS(sc, "pids");
	ASSERT_CONTAINS(sc, "cpu");

	open_session("mem", "t1", 64 * MIB, 0, 0);
	open_session("pids", "t1", 0, 32, 0);
	open_session("cpu", "t1", 0, 0, 200);
	open_session("free", "t2", 0, 0, 0);
}

TEST(limits_are_written)
{
	char rel[256], buf[128];
	session_rel("t1", "mem", rel, sizeof rel);
	ASSERT_EQ(cg_num(rel, "memory.max", NULL), (long long)(64 * MIB));
	ASSERT_EQ(cg_num(rel, "memory.swap.max", NULL), 0);
	ASSERT_EQ(cg_num(rel, "pids.max", NULL), 256); /* the template's default */
	ASSERT_STR_EQ(cg_file(rel, "cpu.max", buf, sizeof buf), "max 100000\n");
	session_rel("t1", "pids", rel, sizeof rel);
	ASSERT_EQ(cg_num(rel, "pids.max", NULL), 32);
	ASSERT_EQ(cg_num(rel, "memory.max", NULL), (long long)(256 * MIB));
	session_rel("t1", "cpu", rel, sizeof rel);
	ASSERT_STR_EQ(cg_file(rel, "cpu.max", buf, sizeof buf), "20000 100000\n");
	/* Job leaves inherit the controllers, so their stats are their own. */
	ASSERT_CONTAINS(cg_file(rel, "cgroup.subtree_control", buf, sizeof buf), "memory");
}

/* ---- memory.max ---- */

TEST(memory_hog_is_oom_killed)
{
	char rel[256];
	session_rel("t1", "mem", rel, sizeof rel);
	const char *argv[] = {"kiln-hog", "mem", "200", NULL};
	Kiln__ToolResult *r = run_exec("mem", 60000, argv);
	fprintf(stderr, "exec hog: code=%d exit=%d signal=%d oom=%d peak=%llu msg=\"%s\" out=%s",
	        r->code, r->exit_code, r->signal, r->oom_killed,
	        (unsigned long long)r->peak_memory_bytes, r->message, kt_out(r));
	ASSERT(r->oom_killed);
	ASSERT_EQ(r->code, KILN__CODE__OK); /* the call ran; its process was killed */
	ASSERT(r->is_error);
	ASSERT_EQ(r->exit_code, -1);
	ASSERT_EQ(r->signal, 9);
	ASSERT_CONTAINS(r->message, "out-of-memory");
	ASSERT_NOT_CONTAINS(kt_out(r), "mem done");
	/* The kernel lets a task it is killing charge past the limit so it
	 * can exit (a forced charge, up to a 2 MiB huge page): memory.peak
	 * may exceed memory.max by that much. */
	ASSERT_LE(r->peak_memory_bytes, 64 * MIB + PEAK_SLACK);
	ASSERT_GE(r->peak_memory_bytes, 32 * MIB);
	/* The session's own limit fired (oom), not the global OOM killer
	 * (which counts oom_kill without oom). */
	long long oom = cg_num(rel, "memory.events", "oom");
	long long kills = cg_num(rel, "memory.events", "oom_kill");
	fprintf(stderr, "GUEST-METRIC oom_exec_peak_bytes=%llu session_oom=%lld oom_kill=%lld\n",
	        (unsigned long long)r->peak_memory_bytes, oom, kills);
	ASSERT_GE(oom, 1);
	ASSERT_GE(kills, 1);
	kt_free_result(r);

	/* The session carries on, and its next result is clean. */
	const char *echo[] = {"echo", "still-here", NULL};
	r = run_exec("mem", 10000, echo);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT(!r->oom_killed);
	ASSERT_STR_EQ(kt_out(r), "still-here\n");
	kt_free_result(r);
	assert_serves("free", "other-session-fine");
}

TEST(bash_memory_hog_is_oom_killed)
{
	Kiln__ToolResult *r = run_bash("mem", "kiln-hog mem 200", 60000);
	fprintf(stderr, "bash hog: code=%d exit=%d oom=%d peak=%llu msg=\"%s\"\n", r->code,
	        r->exit_code, r->oom_killed, (unsigned long long)r->peak_memory_bytes, r->message);
	ASSERT(r->oom_killed);
	ASSERT_EQ(r->exit_code, 137); /* the shell survives and reports 128+SIGKILL */
	ASSERT(r->is_error);
	ASSERT_CONTAINS(r->message, "out-of-memory");
	ASSERT_LE(r->peak_memory_bytes, 64 * MIB + PEAK_SLACK);
	kt_free_result(r);
	/* The same shell runs the next command, and that result says no OOM:
	 * the kill belongs to the call that caused it. */
	r = run_bash("mem", "echo after-oom", 10000);
	/* memory.peak of the shell's leaf covers the shell's life (6.1
	 * cannot reset it), so this is the hog's peak again. */
	fprintf(stderr, "GUEST-METRIC bash_after_oom peak=%llu cpu_usec=%llu\n",
	        (unsigned long long)r->peak_memory_bytes, (unsigned long long)r->cpu_usec);
	ASSERT_EQ(r->code, 0);
	ASSERT_STR_EQ(kt_out(r), "after-oom\n");
	ASSERT(!r->oom_killed);
	ASSERT(!r->is_error);
	kt_free_result(r);
}

/* ---- pids.max ---- */

struct sampler {
	pthread_t th;
	char rel[256];
	volatile int stop;
	long long max;
};

static void *
sample_pids(void *arg)
{
	struct sampler *s = arg;
	while (!s->stop) {
		long long v = cg_num(s->rel, "pids.current", NULL);
		if (v > s->max)
			s->max = v;
		usleep(500);
	}
	return NULL;
}

static void
sampler_start(struct sampler *s, const char *rel)
{
	memset(s, 0, sizeof *s);
	snprintf(s->rel, sizeof s->rel, "%s", rel);
	ASSERT_EQ(pthread_create(&s->th, NULL, sample_pids, s), 0);
}

static long long
sampler_stop(struct sampler *s)
{
	s->stop = 1;
	pthread_join(s->th, NULL);
	return s->max;
}

TEST(fork_loop_is_contained)
{
	char rel[256];
	struct sampler smp;
	session_rel("t1", "pids", rel, sizeof rel);
	long long ev0 = cg_num(rel, "pids.events", "max");
	sampler_start(&smp, rel);
	const char *argv[] = {"kiln-hog", "forks", "1000", NULL};
	Kiln__ToolResult *r = run_exec("pids", 60000, argv);
	long long peak = sampler_stop(&smp);
	long long ev = cg_num(rel, "pids.events", "max");
	long long kpeak = cg_num(rel, "pids.peak", NULL); /* kernel >= 6.9 only */
	fprintf(stderr,
	        "GUEST-METRIC fork_loop out=\"%.*s\" sampled_pids_max=%lld pids_peak=%lld "
	        "pids_events_max=%lld->%lld\n",
	        (int)strcspn(kt_out(r), "\n"), kt_out(r), peak, kpeak, ev0, ev);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "errno=EAGAIN");
	int forks = atoi(kt_out(r) + strlen("forks "));
	ASSERT_GT(forks, 10);
	ASSERT_LT(forks, 32);
	ASSERT_LE(peak, 32);
	ASSERT_LE(kpeak, 32);
	kt_free_result(r);
}

TEST(fork_bomb_is_contained)
{
	char rel[256];
	struct sampler smp;
	session_rel("t1", "pids", rel, sizeof rel);
	sampler_start(&smp, rel);
	uint64_t t0 = kl_now_ms();
	/* A bomb that keeps trying: only the timeout ends it, and the timeout's
	 * kill must work while the session has no pid to spare. */
	Kiln__ToolResult *r =
	        run_bash("pids", "b() { b | b & }; while :; do b 2>/dev/null; done", 3000);
	uint64_t took = kl_now_ms() - t0;
	long long peak = sampler_stop(&smp);
	fprintf(stderr,
	        "GUEST-METRIC fork_bomb code=%s took_ms=%llu sampled_pids_max=%lld "
	        "pids_events_max=%lld\n",
	        kl_code_name(r->code), (unsigned long long)took, peak,
	        cg_num(rel, "pids.events", "max"));
	ASSERT_EQ(r->code, KILN__CODE__DEADLINE_EXCEEDED);
	ASSERT(r->timed_out);
	ASSERT_LT(took, 15000);
	ASSERT_LE(peak, 32);
	kt_free_result(r);
	/* Nobody else was starved, and the bombed session recovers. */
	assert_serves("free", "unaffected");
	assert_serves("pids", "recovered");
}

/* Tool processes get RLIMIT_NPROC = pids too, and the kernel checks it before
 * pids.max, so the forks above were refused by the rlimit. Spawns by the
 * sandbox's init carry no such rlimit: when the session is full, pids.max is
 * what refuses the next call's process, and the result must say so. */
TEST(full_session_refuses_spawns_by_pids_max)
{
	char rel[256];
	session_rel("t1", "pids", rel, sizeof rel);
	long long ev0 = cg_num(rel, "pids.events", "max");
	Kiln__ToolResult *r = run_bash("pids", "kiln-hog forks 1000 60000 &", 10000);
	ASSERT_EQ(r->code, 0);
	kt_free_result(r);
	long long cur = 0;
	for (int i = 0; i < 200 && cur < 32; i++) {
		usleep(20000);
		cur = cg_num(rel, "pids.current", NULL);
	}
	ASSERT_EQ(cur, 32);
	const char *argv[] = {"echo", "never", NULL};
	r = run_exec("pids", 10000, argv);
	long long ev = cg_num(rel, "pids.events", "max");
	fprintf(stderr,
	        "GUEST-METRIC pids_full_spawn code=%s exit=%d msg=\"%s\" "
	        "pids_events_max=%lld->%lld\n",
	        kl_code_name(r->code), r->exit_code, r->message, ev0, ev);
	ASSERT_EQ(r->code, KILN__CODE__TOOL_ERROR);
	ASSERT_EQ(r->exit_code, 126);
	ASSERT(r->is_error);
	ASSERT_CONTAINS(r->message, "process limit, pids 32");
	ASSERT_NOT_CONTAINS(kt_out(r), "never");
	/* pids.max refused it. 6.1 counts pids.events max only in the cgroup
	 * the task was forked into (the job leaf, removed with the call), not
	 * in the session (later kernels count it up the tree too): its kernel
	 * log names the leaf. */
	char leaf[600];
	snprintf(leaf, sizeof leaf, "fork rejected by pids controller in %s/%s/job-",
	         strstr(tree, "/kiln-"), rel);
	ASSERT(ev > ev0 || kmsg_has(leaf));
	kt_free_result(r);
	/* Restarting the shell kills it and its background hog: pids return. */
	r = kt_bash_restart(n, "pids");
	ASSERT_EQ(r->code, 0);
	kt_free_result(r);
	assert_serves("pids", "pids-back");
}

/* ---- cpu.max ---- */

/* Spin for ms in a session: the job's cgroup CPU time (the result's
 * cpu_usec) over the spinner's own wall time, the share of one CPU it got. */
static double
spin_share(const char *sid, int ms, long long *ret_wall)
{
	char arg[16];
	snprintf(arg, sizeof arg, "%d", ms);
	const char *argv[] = {"kiln-hog", "spin", arg, NULL};
	Kiln__ToolResult *r = run_exec(sid, 60000, argv);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 0);
	const char *w = strstr(kt_out(r), "wall_us=");
	ASSERT(w != NULL);
	long long wall = atoll(w + 8);
	ASSERT_GE(wall, (long long)ms * 1000);
	double share = (double)r->cpu_usec / (double)wall;
	fprintf(stderr, "GUEST-METRIC cpu_share session=%s cpu_usec=%llu wall_us=%lld share=%.3f\n",
	        sid, (unsigned long long)r->cpu_usec, wall, share);
	kt_free_result(r);
	*ret_wall = wall;
	return share;
}

TEST(cpu_quota_holds)
{
	char rel[256];
	long long wall, wall_free;
	session_rel("t1", "cpu", rel, sizeof rel);
	long long per0 = cg_num(rel, "cpu.stat", "nr_periods");
	long long thr0 = cg_num(rel, "cpu.stat", "nr_throttled");
	long long use0 = cg_num(rel, "cpu.stat", "usage_usec");
	double limited = spin_share("cpu", 3000, &wall);
	long long per = cg_num(rel, "cpu.stat", "nr_periods") - per0;
	long long thr = cg_num(rel, "cpu.stat", "nr_throttled") - thr0;
	long long use = cg_num(rel, "cpu.stat", "usage_usec") - use0;
	double use_per = per > 0 ? (double)use / (double)per : -1.0;
	fprintf(stderr,
	        "GUEST-METRIC cpu_stat periods=%lld throttled=%lld usage_usec=%lld "
	        "usage_per_period_usec=%.0f\n",
	        per, thr, use, use_per);
	double unlimited = spin_share("free", 3000, &wall_free);
	/* 200 millicores is 20 ms per 100 ms period. The kernel's own books
	 * first: per period of cpu.max, the session used its quota (the
	 * scheduler notices an exhausted quota at a tick, 4 ms with Debian's
	 * HZ=250, so a period may run over by that) and it was throttled. */
	ASSERT_GE(per, 20);
	ASSERT_GE(thr, per / 2);
	ASSERT_LE(use_per, 25000);
	ASSERT_GE(use_per, 10000); /* ...but it did get its quota */
	/* Then against the wall clock: measured 0.205-0.244 of one CPU. That
	 * holds when the guest's clocks agree, i.e. the period timer fired about
	 * once per 100 ms of the spinner's wall time. A host that starves qemu
	 * breaks that (seen once under a load average of 10: 78 throttled
	 * periods in 3.1 s of wall time, a share of 0.52, yet at most 20.6 ms
	 * per period); then only the kernel's books above are checked. */
	long long want = wall / 100000;
	if (per * 5 >= want * 4 && per * 4 <= want * 5)
		ASSERT_LE(limited * 1000, 300);
	else
		fprintf(stderr,
		        "guest clocks disagree (%lld periods in %lld us of wall time): "
		        "the wall-clock share is not checked\n",
		        per, wall);
	ASSERT_GE(limited * 1000, 100);
	ASSERT_GE(unlimited * 1000, 700); /* the only runnable task on the guest's CPU */
}

/* ---- tenant aggregate ---- */

struct bg_call {
	pthread_t th;
	const char *sid;
	const char *const *argv;
	Kiln__ToolResult *r;
};

static void *
bg_exec(void *arg)
{
	struct bg_call *b = arg;
	b->r = kt_exec(n, b->sid, 60000, b->argv);
	return NULL;
}

TEST(tenant_aggregate_memory_holds)
{
	/* Each session alone may use 96 MiB; the tenant together 128 MiB. */
	/* The tenant's aggregate comes with the open (SessionOpen.tenant_limits, from
	 * the scheduler's aggregate_memory), and the node writes it to the tenant's
	 * cgroup. */
	open_session_agg("agg-a", "agg", 96 * MIB, 0, 0, 128 * MIB);
	open_session_agg("agg-b", "agg", 96 * MIB, 0, 0, 128 * MIB);
	ASSERT_EQ(cg_num("tenants/agg", "memory.max", NULL), (long long)(128 * MIB));
	const char *hold[] = {"kiln-hog", "mem", "80", "8000", NULL};
	struct bg_call a = {.sid = "agg-a", .argv = hold};
	ASSERT_EQ(pthread_create(&a.th, NULL, bg_exec, &a), 0);
	long long cur = 0;
	for (int i = 0; i < 600 && cur < (long long)(78 * MIB); i++) {
		usleep(50000);
		cur = cg_num("tenants/agg", "memory.current", NULL);
	}
	ASSERT_GE(cur, (long long)(78 * MIB));
	const char *grow[] = {"kiln-hog", "mem", "80", NULL};
	Kiln__ToolResult *b = run_exec("agg-b", 60000, grow);
	pthread_join(a.th, NULL);
	ASSERT(a.r->limits_enforced);
	long long peak = cg_num("tenants/agg", "memory.peak", NULL);
	long long oom = cg_num("tenants/agg", "memory.events", "oom");
	fprintf(stderr,
	        "GUEST-METRIC tenant_aggregate a_oom=%d a_peak=%llu b_oom=%d b_peak=%llu "
	        "tenant_peak=%lld tenant_oom=%lld a_session_oom=%lld b_session_oom=%lld\n",
	        a.r->oom_killed, (unsigned long long)a.r->peak_memory_bytes, b->oom_killed,
	        (unsigned long long)b->peak_memory_bytes, peak, oom,
	        cg_num("tenants/agg/agg-a", "memory.events", "oom"),
	        cg_num("tenants/agg/agg-b", "memory.events", "oom"));
	fprintf(stderr, "tenant_aggregate messages: a=\"%s\" b=\"%s\"\n", a.r->message, b->message);
	/* Together they wanted 160 MiB: the tenant's cap fired, not a session's,
	 * and exactly one of the two was killed and says so. */
	ASSERT_EQ(a.r->oom_killed + b->oom_killed, 1);
	ASSERT_LE(peak, (long long)(128 * MIB + PEAK_SLACK)); /* see memory_hog_is_oom_killed */
	ASSERT_GE(oom, 1);
	ASSERT_EQ(cg_num("tenants/agg/agg-a", "memory.events", "oom"), 0);
	ASSERT_EQ(cg_num("tenants/agg/agg-b", "memory.events", "oom"), 0);
	kt_free_result(a.r);
	kt_free_result(b);
	assert_serves("agg-a", "a-fine");
	assert_serves("agg-b", "b-fine");
	assert_serves("free", "other-tenant-fine");
}

/* ---- tenant weights ---- */

/* A session of a tenant with the scheduler's weight for it
 * (SessionOpen.tenant_weight). */
static void
open_session_w(const char *sid, const char *tenant, uint32_t weight)
{
	Kiln__Limits lim = KILN__LIMITS__INIT;
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.session_id = (char *)sid;
	o.tenant = (char *)tenant;
	o.limits = &lim;
	o.tenant_weight = weight;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = &o;
	Kiln__NodeReply *r = kt_node_do(n, &w);
	ASSERT_EQ(r->reply_case, KILN__NODE_REPLY__REPLY_OPENED);
	ASSERT_EQ(r->opened->code, 0);
	kt_free_reply(r);
}

/* Two tenants, weights 1 and 3, each spinning on the guest's one CPU at the
 * same time: the kernel shares it 1:3 between their cgroups (cpu.weight 100
 * and 300), whatever each tenant runs. This is how a flooding tenant is kept
 * from slowing the others' calls on a busy node, beyond the scheduler's
 * weighted queues (which order dispatch but do not share a CPU). */
TEST(tenant_weights_share_the_cpu)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) != 1)
		KT_FAIL("the guest has %ld CPUs; this test needs the 1 it boots with",
		        sysconf(_SC_NPROCESSORS_ONLN));
	open_session_w("wt-light", "wlight", 1);
	open_session_w("wt-heavy", "wheavy", 3);
	ASSERT_EQ(cg_num("tenants/wlight", "cpu.weight", NULL), 100);
	ASSERT_EQ(cg_num("tenants/wheavy", "cpu.weight", NULL), 300);
	const char *spin[] = {"kiln-hog", "spin", "4000", NULL};
	struct bg_call a = {.sid = "wt-light", .argv = spin}, b = {.sid = "wt-heavy", .argv = spin};
	ASSERT_EQ(pthread_create(&a.th, NULL, bg_exec, &a), 0);
	ASSERT_EQ(pthread_create(&b.th, NULL, bg_exec, &b), 0);
	pthread_join(a.th, NULL);
	pthread_join(b.th, NULL);
	ASSERT_EQ(a.r->code, 0);
	ASSERT_EQ(b.r->code, 0);
	double ratio = (double)b.r->cpu_usec / (double)(a.r->cpu_usec ? a.r->cpu_usec : 1);
	fprintf(stderr,
	        "GUEST-METRIC tenant_weights light_cpu_usec=%llu heavy_cpu_usec=%llu "
	        "ratio=%.2f (weights 1:3)\n",
	        (unsigned long long)a.r->cpu_usec, (unsigned long long)b.r->cpu_usec, ratio);
	/* 3 while both spin; each also spins alone for the moments the other
	 * is starting or ending, which pulls the ratio towards 1. */
	ASSERT_GE(ratio, 2.0);
	ASSERT_LE(ratio, 4.5);
	kt_free_result(a.r);
	kt_free_result(b.r);
	/* Without a weight the default stays: 100. */
	ASSERT_EQ(cg_num("tenants/t1", "cpu.weight", NULL), 100);
	ASSERT_EQ(kt_close(n, "wt-light"), 0);
	ASSERT_EQ(kt_close(n, "wt-heavy"), 0);
}

/* ---- Debian 12's kernel itself ---- */

/* The bash tool ends a call when the status pipe says the command finished,
 * then drains what is left in the output pipe without waiting. On 6.1 a pipe
 * refuses preadv2(RWF_NOWAIT) (EOPNOTSUPP; newer kernels accept it), so output
 * still in the pipe at that moment must be drained another way, or it slips
 * into the next call's output. */
TEST(bash_output_is_complete)
{
	/* A spinner competing for the guest's one CPU makes the race likely:
	 * the status read completes before the output read's worker runs. */
	Kiln__ToolResult *r = run_bash("mem", "kiln-hog spin 120000 >/dev/null &", 10000);
	kt_free_result(r);
	int bad = 0;
	for (int i = 0; i < 200; i++) {
		char cmd[64], want[64];
		snprintf(cmd, sizeof cmd, "pwd; echo \"i=%d\"", i);
		snprintf(want, sizeof want, "/workspace\ni=%d\n", i);
		r = run_bash("free", cmd, 10000);
		ASSERT_EQ(r->code, 0);
		if (strcmp(kt_out(r), want)) {
			if (bad++ < 5)
				fprintf(stderr, "call %d: \"%s\"\n", i, kt_out(r));
		}
		kt_free_result(r);
	}
	fprintf(stderr, "GUEST-METRIC bash_incomplete_outputs=%d/200\n", bad);
	r = kt_bash_restart(n, "mem");
	kt_free_result(r);
	ASSERT_EQ(bad, 0);
	r = run_bash("free", "seq 1 3000", 10000);
	ASSERT_EQ(r->output_total, 13893);
	ASSERT(strstr(kt_out(r), "\n2999\n3000\n") != NULL);
	kt_free_result(r);
}

/* ---- the node carries on ---- */

TEST(node_carries_on_and_cleans_up)
{
	open_session("late", "t3", 32 * MIB, 16, 100);
	assert_serves("late", "late-fine");
	const char *names[] = {"mem", "pids", "cpu", "free", "agg-a", "agg-b", "late"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		ASSERT_EQ(kt_close(n, names[i]), 0);
	ASSERT_EQ(node_session_count(n), 0);
	kt_node_stop(n);
	ASSERT_EQ(access(tree, F_OK), -1);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
