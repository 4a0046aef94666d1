/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bring-up tests of a real node on this machine: sessions open from the warm
 * pool, bash/exec/file tools run in real sandboxes, state persists between
 * calls, restart resets the shell, and closing leaves nothing behind.
 */
#include "test.h"

#include "kt_node.h"

#include <unistd.h>

static node *n;

TEST(setup)
{
	kt_require_sandboxes();
	n = kt_node_start(NULL);
}

TEST(open_and_echo)
{
	ASSERT_EQ(kt_open(n, "s1", "acme"), 0);
	Kiln__ToolResult *r = kt_bash(n, "s1", "echo hello; echo err >&2", 0);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_STR_EQ(kt_out(r), "hello\nerr\n");
	ASSERT(!r->is_error);
	ASSERT(!r->limits_enforced || r->limits_enforced);
	kt_free_result(r);
}

TEST(bash_state_persists)
{
	Kiln__ToolResult *r = kt_bash(n, "s1", "cd /tmp && export KILN_X=42 && mkdir -p d", 0);
	ASSERT_EQ(r->exit_code, 0);
	kt_free_result(r);
	r = kt_bash(n, "s1", "pwd; echo $KILN_X", 0);
	ASSERT_STR_EQ(kt_out(r), "/tmp\n42\n");
	kt_free_result(r);
	r = kt_bash(n, "s1", "exit 3", 0);
	ASSERT_EQ(r->exit_code, 3);
	ASSERT(r->is_error);
	kt_free_result(r);
	r = kt_bash(n, "s1", "pwd; echo \"x=$KILN_X\"", 0);
	ASSERT_STR_EQ(kt_out(r), "/workspace\nx=\n");
	kt_free_result(r);
}

TEST(bash_restart_resets)
{
	Kiln__ToolResult *r = kt_bash(n, "s1", "cd /tmp; export Y=1", 0);
	kt_free_result(r);
	r = kt_bash_restart(n, "s1");
	ASSERT_EQ(r->code, 0);
	ASSERT_STR_EQ(r->message, "tool has been restarted.");
	kt_free_result(r);
	r = kt_bash(n, "s1", "pwd; echo \"y=$Y\"", 0);
	ASSERT_STR_EQ(kt_out(r), "/workspace\ny=\n");
	kt_free_result(r);
}

TEST(exec_and_files)
{
	const char *argv[] = {"sh", "-c", "echo out; echo err >&2; exit 7", NULL};
	Kiln__ToolResult *r = kt_exec(n, "s1", 0, argv);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 7);
	ASSERT_STR_EQ(kt_out(r), "out\n");
	ASSERT_EQ(r->stderr.len, 4);
	ASSERT_EQ(memcmp(r->stderr.data, "err\n", 4), 0);
	kt_free_result(r);

	r = kt_write(n, "s1", "notes/a.txt", "alpha beta\n", 11);
	ASSERT_EQ(r->code, 0);
	kt_free_result(r);
	r = kt_bash(n, "s1", "cat /workspace/notes/a.txt; stat -c %u notes/a.txt", 0);
	ASSERT_STR_EQ(kt_out(r), "alpha beta\n0\n");
	kt_free_result(r);
	r = kt_edit(n, "s1", "notes/a.txt", "beta", "gamma", 0);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->replacements, 1);
	kt_free_result(r);
	r = kt_read(n, "s1", "notes/a.txt");
	ASSERT_EQ(r->code, 0);
	ASSERT_STR_EQ(kt_out(r), "alpha gamma\n");
	kt_free_result(r);
	r = kt_read(n, "s1", "missing.txt");
	ASSERT_EQ(r->code, KILN__CODE__TOOL_ERROR);
	ASSERT(r->is_error);
	kt_free_result(r);
}

TEST(close_leaves_nothing)
{
	ASSERT_EQ(kt_close(n, "s1"), 0);
	ASSERT_EQ(kt_close(n, "s1"), KILN__CODE__NOT_FOUND);
	Kiln__ToolResult *r = kt_bash(n, "s1", "true", 0);
	ASSERT_EQ(r->code, KILN__CODE__NOT_FOUND);
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
