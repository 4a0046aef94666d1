/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A delegated root the node does not have to itself, inside the guest kernel:
 * another process sits in the cgroup the node starts in (a wrapper shell in
 * the same systemd service, say). The no internal processes rule then keeps
 * every controller off below it, whatever cgroup.controllers offers. The node
 * must never claim limits it cannot enforce: either it refuses to start
 * (saying why), or it serves sessions whose limits really hold; with
 * allow_unenforced_limits it must serve sessions and say limits_enforced=false.
 *
 * This used to fail: node_new checked the controllers cgroup.controllers
 * offers, not what cg_tree_open managed to enable, and every open then failed
 * with INTERNAL. node_new now reconciles the two.
 */
#include "test.h"

#include "kt_node.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SVC "/sys/fs/cgroup/svc"

static pid_t other = -1;

static int
write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t k = write(fd, val, strlen(val));
	int e = errno;
	close(fd);
	return k == (ssize_t)strlen(val) ? 0 : -e;
}

static node *
start(bool allow_unenforced, char *err, size_t errlen)
{
	node_config cfg;
	node_config_defaults(&cfg);
	cfg.templates[0].target = 1;
	cfg.templates[0].memory_bytes = 64 << 20;
	cfg.allow_unenforced_limits = allow_unenforced;
	cfg.shutdown_grace_ms = 2000;
	node *n;
	if (node_new(&cfg, &n, err, errlen) < 0)
		return NULL;
	ASSERT_EQ(node_start(n), 0);
	return n;
}

TEST(setup)
{
	kt_require_sandboxes();
	if (access("/sys/fs/cgroup/cgroup.subtree_control", F_OK) != 0 ||
	    access("/sys/fs/cgroup/unified", F_OK) == 0)
		KT_SKIP("needs a pure cgroup v2 host where it may create /sys/fs/cgroup/svc: "
		        "run it inside the guest (scripts/guest/run)");
	ASSERT(mkdir(SVC, 0755) == 0 || errno == EEXIST);
	other = fork();
	if (other == 0) {
		pause();
		_exit(0);
	}
	char pid[24];
	snprintf(pid, sizeof pid, "%d", (int)other);
	ASSERT_EQ(write_file(SVC "/cgroup.procs", pid), 0);
	ASSERT_EQ(write_file(SVC "/cgroup.procs", "0"), 0);
}

TEST(never_claims_limits_it_cannot_enforce)
{
	char err[512] = "";
	node *n = start(false, err, sizeof err);
	if (!n) {
		fprintf(stderr, "refused to start: %s\n", err);
		ASSERT_CONTAINS(err, "memory");
		return;
	}
	node_stats st;
	node_get_stats(n, &st);
	fprintf(stderr, "started: %s\n", node_limits_text(n));
	ASSERT(st.limits_enforced);
	Kiln__Limits lim = KILN__LIMITS__INIT;
	lim.memory_bytes = 32 << 20;
	ASSERT_EQ(kt_open_limits(n, "s1", "t1", &lim), 0);
	Kiln__ToolResult *r = kt_bash(n, "s1", "kiln-hog mem 100", 60000);
	ASSERT(r->oom_killed);
	kt_free_result(r);
	kt_node_stop(n);
}

TEST(unenforced_limits_are_reported_and_sessions_served)
{
	char err[512] = "";
	node *n = start(true, err, sizeof err);
	if (!n)
		KT_FAIL("node_new with allow_unenforced_limits: %s", err);
	node_stats st;
	node_get_stats(n, &st);
	fprintf(stderr, "started: %s\n", node_limits_text(n));
	ASSERT_EQ(kt_open(n, "s2", "t1"), 0);
	Kiln__ToolResult *r = kt_bash(n, "s2", "kiln-hog mem 100", 60000);
	/* Either the limit held, or the result says it could not. */
	ASSERT(r->oom_killed || !r->limits_enforced);
	ASSERT_EQ(r->limits_enforced, st.limits_enforced);
	kt_free_result(r);
	kt_node_stop(n);
}

TEST(teardown)
{
	kill(other, SIGKILL);
	waitpid(other, NULL, 0);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
