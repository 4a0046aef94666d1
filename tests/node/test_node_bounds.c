/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's explicit bounds: its session limit, its limit on admitted calls
 * and per-session queue, an empty pool with cold starts disabled, and bad
 * input (unknown session, no tool, malformed ids) -- each a clear error code,
 * never unbounded growth, and the node keeps serving.
 */
#include "test.h"

#include "kt_node.h"

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static node *n;

TEST(setup)
{
	kt_require_sandboxes();
	node_config cfg;
	node_config_defaults(&cfg);
	cfg.max_sessions = 2;
	cfg.max_calls = 2;
	cfg.max_queue_per_session = 1;
	cfg.cold_start = false;
	cfg.templates[0].target = 1;
	n = kt_node_start(&cfg);
	/* Wait for the single warm sandbox. */
	for (int i = 0; i < 200; i++) {
		node_stats st;
		node_get_stats(n, &st);
		if (st.templates[0].warm == 1)
			break;
		usleep(10000);
	}
}

TEST(empty_pool_without_cold_start_fails_fast)
{
	ASSERT_EQ(kt_open(n, "b1", "t"), 0);
	/* The pool (target 1) is empty right after the claim. */
	ASSERT_EQ(kt_open(n, "b2", "t"), KILN__CODE__FAILED_PRECONDITION);
	/* The pool refills in the background (next tick): a retry succeeds. */
	int code = -1;
	for (int i = 0; i < 100 && code != 0; i++) {
		code = kt_open(n, "b2", "t");
		if (code)
			usleep(20000);
	}
	ASSERT_EQ(code, 0);
}

TEST(session_limit)
{
	usleep(200000); /* let the pool refill: the refusal must be the session limit */
	ASSERT_EQ(kt_open(n, "b3", "t"), KILN__CODE__RESOURCE_EXHAUSTED);
	/* Duplicate ids and hostile ids are refused too. */
	ASSERT_EQ(kt_open(n, "b1", "t"), KILN__CODE__FAILED_PRECONDITION);
	ASSERT_EQ(kt_open(n, "../../etc", "t"), KILN__CODE__INVALID_ARGUMENT);
	ASSERT_EQ(kt_open(n, "ok", "bad/tenant"), KILN__CODE__INVALID_ARGUMENT);
}

struct pending {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int done;
	int codes[8];
};

static void
on_reply(void *arg, const Kiln__NodeReply *rep)
{
	struct pending *p = arg;
	pthread_mutex_lock(&p->mu);
	p->codes[p->done++] = rep->result ? (int)rep->result->code : -1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->mu);
}

static void
submit_sleep(const char *sid, uint64_t job, struct pending *p)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = "sleep 0.5";
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.job_id = job;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = &tc;
	ASSERT_EQ(node_submit(n, &w, on_reply, p), 0);
}

TEST(call_limits)
{
	struct pending p = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};
	/* max_calls 2: two admitted (b1 running, b1 queued... the queue per session is
	 * 1), the third is refused at once. */
	submit_sleep("b1", 1, &p);
	submit_sleep("b1", 2, &p);
	submit_sleep("b2", 3, &p);
	pthread_mutex_lock(&p.mu);
	while (p.done < 3)
		pthread_cond_wait(&p.cond, &p.mu);
	pthread_mutex_unlock(&p.mu);
	int ok = 0, exhausted = 0;
	for (int i = 0; i < 3; i++) {
		ok += p.codes[i] == KILN__CODE__OK;
		exhausted += p.codes[i] == KILN__CODE__RESOURCE_EXHAUSTED;
	}
	ASSERT_EQ(ok, 2);
	ASSERT_EQ(exhausted, 1);
	/* The refusal came first, without waiting for the running calls. */
	ASSERT_EQ(p.codes[0], KILN__CODE__RESOURCE_EXHAUSTED);
}

TEST(bad_input)
{
	Kiln__ToolResult *r = kt_bash(n, "nope", "true", 0);
	ASSERT_EQ(r->code, KILN__CODE__NOT_FOUND);
	kt_free_result(r);
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = "b1";
	r = kt_call(n, &tc);
	ASSERT_EQ(r->code, KILN__CODE__INVALID_ARGUMENT);
	kt_free_result(r);
	r = kt_bash(n, "b1", "", 0);
	ASSERT_EQ(r->code, KILN__CODE__INVALID_ARGUMENT);
	kt_free_result(r);
	const char *argv[] = {"definitely-not-a-command", NULL};
	r = kt_exec(n, "b1", 0, argv);
	ASSERT_EQ(r->code, KILN__CODE__TOOL_ERROR);
	ASSERT_EQ(r->exit_code, 127);
	ASSERT_CONTAINS(r->message, "definitely-not-a-command");
	kt_free_result(r);
	/* Still serving. */
	r = kt_bash(n, "b1", "echo alive", 0);
	ASSERT_STR_EQ(kt_out(r), "alive\n");
	kt_free_result(r);
}

TEST(teardown)
{
	kt_node_stop(n);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
