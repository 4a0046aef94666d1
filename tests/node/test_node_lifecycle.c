/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-node as a real process: SIGTERM stops it gracefully (running calls
 * are cancelled after the grace period, every sandbox is destroyed, exit 0,
 * nothing left behind), and after a kill -9 the sandboxes die with their
 * control sockets and the next start with the same name removes the cgroups
 * the crashed run left. Processes are counted over every kiln sandbox uid,
 * so this test runs alone (RUN_SERIAL).
 */
#include "test.h"

#include "kl_clock.h"
#include "kl_proto.h"
#include "kt_node.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static char bindir[4096], url[256], name[64];
static const unsigned uid_lo = 1u << 28, uid_hi = (1u << 28) + (256u << 16);

static const char *
cgroup_mount(void)
{
	return access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0 ? "/sys/fs/cgroup/unified"
	                                                                : "/sys/fs/cgroup";
}

static pid_t
start_node(const char *grace)
{
	char exe[4200];
	snprintf(exe, sizeof exe, "%s/kiln-node", bindir);
	char *argv[] = {
	        exe,          "--listen",    url,      "--name", name, "--allow-unenforced-limits",
	        "--grace-ms", (char *)grace, "--warm", "1",      NULL};
	pid_t p;
	ASSERT_EQ(posix_spawn(&p, exe, NULL, NULL, argv, environ), 0);
	return p;
}

static nng_socket
connect_node(void)
{
	nng_socket s;
	ASSERT_EQ(nng_req0_open(&s), 0);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 20000);
	for (int i = 0; i < 100; i++) {
		if (nng_dial(s, url, NULL, 0) == 0)
			return s;
		usleep(50000);
	}
	KT_FAIL("cannot reach kiln-node at %s", url);
}

static void
send_work(nng_socket s, Kiln__NodeWork *w)
{
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_WORK;
	e.node_work = w;
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode(&e, &buf, &len), 0);
	ASSERT_EQ(nng_send(s, buf, len, 0), 0);
	free(buf);
}

static Kiln__NodeReply *
recv_reply(nng_socket s, int *err)
{
	void *buf;
	size_t len;
	*err = nng_recv(s, &buf, &len, NNG_FLAG_ALLOC);
	if (*err)
		return NULL;
	Kiln__Envelope *e = NULL;
	ASSERT_EQ(kl_env_decode(buf, len, KL_MAX_MSG, &e, NULL), 0);
	nng_free(buf, len);
	ASSERT_EQ(e->msg_case, KILN__ENVELOPE__MSG_NODE_REPLY);
	Kiln__NodeReply *r = e->node_reply;
	e->node_reply = NULL;
	e->msg_case = KILN__ENVELOPE__MSG__NOT_SET;
	kiln__envelope__free_unpacked(e, NULL);
	return r;
}

static void
open_session(nng_socket s, const char *sid)
{
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.session_id = (char *)sid;
	o.tenant = "t";
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = &o;
	send_work(s, &w);
	int err;
	Kiln__NodeReply *r = recv_reply(s, &err);
	ASSERT(r);
	ASSERT_EQ(r->opened->code, 0);
	kiln__node_reply__free_unpacked(r, NULL);
}

static void
send_bash(nng_socket s, const char *sid, const char *cmd)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = (char *)cmd;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.job_id = 7;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = &tc;
	send_work(s, &w);
}

static int
wait_exit(pid_t p, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		int st;
		if (waitpid(p, &st, WNOHANG) == p)
			return st;
		usleep(10000);
	}
	return -1;
}

TEST(setup)
{
	kt_require_sandboxes();
	ssize_t k = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
	ASSERT_GT(k, 0);
	bindir[k] = 0;
	*strrchr(bindir, '/') = 0;
	snprintf(url, sizeof url, "ipc:///tmp/kiln-test-life-%d.sock", (int)getpid());
	snprintf(name, sizeof name, "kt-life-%d", (int)getpid());
}

TEST(sigterm_is_graceful)
{
	char tree[512];
	snprintf(tree, sizeof tree, "%s/kiln-%s", cgroup_mount(), name);
	pid_t p = start_node("500");
	nng_socket s = connect_node();
	open_session(s, "g1");
	send_bash(s, "g1", "echo started; sleep 100");
	usleep(300000);
	ASSERT_EQ(access(tree, F_OK), 0);
	uint64_t t0 = kl_now_ms();
	kill(p, SIGTERM);
	/* The running call is cancelled once the grace period is over. */
	int err;
	Kiln__NodeReply *r = recv_reply(s, &err);
	ASSERT(r);
	ASSERT_EQ(r->reply_case, KILN__NODE_REPLY__REPLY_RESULT);
	ASSERT_EQ(r->result->code, KILN__CODE__CANCELLED);
	ASSERT_EQ(r->result->output.len, 8);
	ASSERT_EQ(memcmp(r->result->output.data, "started\n", 8), 0);
	kiln__node_reply__free_unpacked(r, NULL);
	int st = wait_exit(p, 10000);
	ASSERT(st != -1);
	ASSERT(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	ASSERT_LT(kl_now_ms() - t0, 5000);
	nng_close(s);
	ASSERT_EQ(kt_count_uid_procs(uid_lo, uid_hi), 0);
	ASSERT_EQ(access(tree, F_OK), -1);
}

TEST(crash_leftovers_are_cleaned_on_restart)
{
	char tree[512];
	snprintf(tree, sizeof tree, "%s/kiln-%s", cgroup_mount(), name);
	pid_t p = start_node("500");
	nng_socket s = connect_node();
	open_session(s, "c1");
	send_bash(s, "c1", "sleep 1000 & sleep 1000 & echo bg");
	int err;
	Kiln__NodeReply *r = recv_reply(s, &err);
	ASSERT(r);
	kiln__node_reply__free_unpacked(r, NULL);
	int before = kt_count_uid_procs(uid_lo, uid_hi);
	ASSERT_GE(before, 3);
	kill(p, SIGKILL);
	ASSERT(wait_exit(p, 5000) != -1);
	nng_close(s);
	/* Each init exits when its control socket closes; its pid namespace
	 * takes every sandbox process with it. */
	int left = before;
	for (int i = 0; i < 200 && left; i++) {
		usleep(10000);
		left = kt_count_uid_procs(uid_lo, uid_hi);
	}
	ASSERT_EQ(left, 0);
	/* The crashed run's cgroups are still there: the next start removes them. */
	ASSERT_EQ(access(tree, F_OK), 0);
	p = start_node("500");
	s = connect_node();
	open_session(s, "c2");
	kill(p, SIGTERM);
	int st = wait_exit(p, 10000);
	ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	nng_close(s);
	ASSERT_EQ(access(tree, F_OK), -1);
	ASSERT_EQ(kt_count_uid_procs(uid_lo, uid_hi), 0);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
