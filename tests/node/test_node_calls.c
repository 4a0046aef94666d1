/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Call semantics on a real node: timeouts return promptly with partial output
 * and leave nothing running; output is capped to its tail while the node's
 * memory stays bounded; a call ends when its main process exits even if a
 * background child keeps the pipe; fork bombs and runaway background jobs
 * are gone at teardown; and a whole session's life leaves the host's
 * processes, mounts and cgroups exactly as before.
 */
#include "test.h"

#include "kl_clock.h"
#include "kt_node.h"

#include <stdio.h>
#include <unistd.h>

static node *n;
static int procs0, mounts0, cgroups0;
static const char *cgroot;
static unsigned uid_lo, uid_hi; /* this node's sandbox host ids */

static const char *
cgroup_mount(void)
{
	return access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0 ? "/sys/fs/cgroup/unified"
	                                                                : "/sys/fs/cgroup";
}

TEST(setup)
{
	kt_require_sandboxes();
	cgroot = cgroup_mount();
	procs0 = kt_count_procs();
	mounts0 = kt_count_mounts();
	cgroups0 = kt_count_cgroups(cgroot);
	n = kt_node_start(NULL);
	node_stats st;
	node_get_stats(n, &st);
	uid_lo = st.uid_base;
	uid_hi = st.uid_base + st.uid_count;
	ASSERT_GE(uid_lo, 1u << 28);
	ASSERT_EQ(kt_open(n, "calls", "t1"), 0);
}

TEST(bash_timeout_returns_partial_output)
{
	uint64_t t0 = kl_now_ms();
	Kiln__ToolResult *r = kt_bash(n, "calls", "echo before; sleep 100; echo after", 200);
	uint64_t took = kl_now_ms() - t0;
	ASSERT_EQ(r->code, KILN__CODE__DEADLINE_EXCEEDED);
	ASSERT(r->timed_out);
	ASSERT(r->is_error);
	ASSERT_STR_EQ(kt_out(r), "before\n");
	ASSERT_LT(took, 5000); /* prompt: not the 100 s sleep */
	kt_free_result(r);
	/* The shell was killed with its children: a fresh shell, no sleep left. */
	r = kt_bash(n, "calls", "pgrep -x sleep | wc -l; pwd", 0);
	ASSERT_EQ(r->code, 0);
	ASSERT_STR_EQ(kt_out(r), "0\n/workspace\n");
	kt_free_result(r);
}

TEST(exec_timeout_kills_the_job)
{
	const char *argv[] = {"sh", "-c", "echo partial; sleep 100 & sleep 100", NULL};
	uint64_t t0 = kl_now_ms();
	Kiln__ToolResult *r = kt_exec(n, "calls", 200, argv);
	ASSERT_LT(kl_now_ms() - t0, 5000);
	ASSERT_EQ(r->code, KILN__CODE__DEADLINE_EXCEEDED);
	ASSERT(r->timed_out);
	ASSERT_STR_EQ(kt_out(r), "partial\n");
	ASSERT_EQ(r->signal, 9);
	kt_free_result(r);
	r = kt_bash(n, "calls", "pgrep -x sleep | wc -l", 0);
	ASSERT_STR_EQ(kt_out(r), "0\n");
	kt_free_result(r);
}

TEST(call_ends_when_main_process_exits)
{
	/* A background child keeps stdout open for 100 s: the call must not wait. */
	const char *argv[] = {"sh", "-c", "sleep 100 & echo main-done", NULL};
	uint64_t t0 = kl_now_ms();
	Kiln__ToolResult *r = kt_exec(n, "calls", 60000, argv);
	ASSERT_LT(kl_now_ms() - t0, 5000);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_STR_EQ(kt_out(r), "main-done\n");
	kt_free_result(r);
	/* ...and its leftover was killed with the job's cgroup. */
	r = kt_bash(n, "calls", "pgrep -x sleep | wc -l", 0);
	ASSERT_STR_EQ(kt_out(r), "0\n");
	kt_free_result(r);
	/* The same holds for bash: a background job does not hold the call. */
	t0 = kl_now_ms();
	r = kt_bash(n, "calls", "sleep 100 & echo bg-started", 0);
	ASSERT_LT(kl_now_ms() - t0, 5000);
	ASSERT_STR_EQ(kt_out(r), "bg-started\n");
	kt_free_result(r);
	/* bash's background jobs persist between calls (they belong to the shell). */
	r = kt_bash(n, "calls", "jobs | wc -l", 0);
	ASSERT_STR_EQ(kt_out(r), "1\n");
	kt_free_result(r);
}

TEST(output_is_capped_and_memory_bounded)
{
	long rss0 = kt_rss_kib();
	Kiln__ToolResult *r = kt_bash(n, "calls", "yes | head -c 100000000; echo; echo END", 60000);
	ASSERT_EQ(r->code, 0);
	ASSERT(r->truncated);
	ASSERT_EQ(r->output_total, 100000000 + 5);
	ASSERT_LE(r->output.len, (100 << 10) + 32);
	ASSERT(strncmp(kt_out(r), "[output truncated]\n", 19) == 0);
	ASSERT(strstr(kt_out(r), "y\ny\n\nEND\n") != NULL);
	kt_free_result(r);
	const char *argv[] = {"sh", "-c", "yes | head -c 100000000", NULL};
	r = kt_exec(n, "calls", 60000, argv);
	ASSERT_EQ(r->code, 0);
	ASSERT(r->truncated);
	ASSERT_EQ(r->output_total, 100000000);
	ASSERT_EQ(r->output.len, 1 << 20);
	kt_free_result(r);
	long grew = kt_rss_kib() - rss0;
	fprintf(stderr, "rss grew by %ld KiB after 200 MB of output\n", grew);
	ASSERT_LT(grew, 32 << 10);
}

TEST(fork_bomb_is_contained_and_removed)
{
	ASSERT_EQ(kt_open(n, "other", "t2"), 0);
	/* RLIMIT_NPROC per sandbox user bounds it even without the pids controller;
	 * the timeout kills the shell's whole cgroup. */
	Kiln__ToolResult *r = kt_bash(n, "calls", "b() { b | b & }; b 2>/dev/null; wait", 2000);
	ASSERT_EQ(r->code, KILN__CODE__DEADLINE_EXCEEDED);
	kt_free_result(r);
	/* Other sessions were never starved. */
	r = kt_bash(n, "other", "echo fine", 0);
	ASSERT_STR_EQ(kt_out(r), "fine\n");
	kt_free_result(r);
	/* The bombed session recovers once init has reaped the killed processes. */
	int ok = 0;
	for (int i = 0; i < 50 && !ok; i++) {
		r = kt_bash(n, "calls", "echo ok", 0);
		ok = r->code == 0 && !strcmp(kt_out(r), "ok\n");
		kt_free_result(r);
		if (!ok)
			usleep(100000);
	}
	ASSERT(ok);
	r = kt_bash(n, "calls", "sleep 1000 & sleep 1000 & echo ok", 0);
	ASSERT_STR_EQ(kt_out(r), "ok\n");
	kt_free_result(r);
	ASSERT_GT(kt_count_uid_procs(uid_lo, uid_hi), 4);
	ASSERT_EQ(kt_close(n, "calls"), 0);
	ASSERT_EQ(kt_close(n, "other"), 0);
	/* Teardown is cgroup.kill + the pid namespace: nothing of the sessions
	 * remains; only the pool's idle inits (target 2) are left. */
	for (int i = 0; i < 100 && kt_count_uid_procs(uid_lo, uid_hi) > 2; i++)
		usleep(20000);
	ASSERT_LE(kt_count_uid_procs(uid_lo, uid_hi), 2);
}

TEST(teardown_leaves_host_as_before)
{
	node_stats st;
	node_get_stats(n, &st);
	char tree[512];
	snprintf(tree, sizeof tree, "%s/kiln-%s", cgroot, st.name);
	ASSERT_EQ(access(tree, F_OK), 0);
	kt_node_stop(n);
	for (int i = 0; i < 100 && (kt_count_uid_procs(uid_lo, uid_hi) || kt_count_children()); i++)
		usleep(20000);
	/* Counted against the baseline taken before the node started. Other
	 * processes on the machine may come and go, so processes are counted by
	 * what could be ours: sandbox users and our own children. */
	ASSERT_EQ(kt_count_uid_procs(uid_lo, uid_hi), 0);
	ASSERT_EQ(kt_count_children(), 0);
	ASSERT_EQ(kt_count_mounts(), mounts0);
	/* The node's whole cgroup tree is gone (other tests' nodes may add their
	 * own trees meanwhile, so the host-wide count is not compared). */
	ASSERT_EQ(access(tree, F_OK), -1);
	ASSERT_EQ(kt_count_cgroups(tree), 0);
	(void)procs0;
	(void)cgroups0;
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
