/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkiln's tool conveniences: each builds a ToolCall on the stack (nothing
 * is copied; kiln_call encodes it before returning) and runs it with
 * kiln_call. They exist so that a C program can run a command or touch a file
 * in a session without knowing the protobuf-c message layout.
 */
#include "kiln.h"

/* Fill the fields every call shares and run it. */
static int
run(kiln_client *c, const char *session, uint32_t timeout_ms, Kiln__ToolCall *tc,
    Kiln__ToolResult **ret)
{
	tc->session_id = (char *)(session ? session : "");
	tc->timeout_ms = timeout_ms;
	return kiln_call(c, tc, ret);
}

int
kiln_bash(kiln_client *c, const char *session, const char *command, uint32_t timeout_ms,
          Kiln__ToolResult **ret)
{
	Kiln__BashInput in = KILN__BASH_INPUT__INIT;
	in.command = (char *)command;
	in.timeout_ms = timeout_ms;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &in;
	return run(c, session, timeout_ms, &tc, ret);
}

int
kiln_bash_restart(kiln_client *c, const char *session, Kiln__ToolResult **ret)
{
	Kiln__BashInput in = KILN__BASH_INPUT__INIT;
	in.restart = true;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &in;
	return run(c, session, 0, &tc, ret);
}

int
kiln_exec(kiln_client *c, const char *session, const char *const *argv, uint32_t timeout_ms,
          Kiln__ToolResult **ret)
{
	Kiln__ExecInput in = KILN__EXEC_INPUT__INIT;
	size_t n = 0;
	while (argv && argv[n])
		n++;
	in.n_argv = n;
	in.argv = (char **)argv;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc.exec = &in;
	return run(c, session, timeout_ms, &tc, ret);
}

int
kiln_read(kiln_client *c, const char *session, const char *path, int64_t start, int64_t end,
          Kiln__ToolResult **ret)
{
	int64_t range[2] = {start, end};
	Kiln__ReadInput in = KILN__READ_INPUT__INIT;
	in.file_path = (char *)path;
	if (start != 0) {
		in.n_view_range = 2;
		in.view_range = range;
	}
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_READ;
	tc.read = &in;
	return run(c, session, 0, &tc, ret);
}

int
kiln_write(kiln_client *c, const char *session, const char *path, const void *data, size_t len,
           Kiln__ToolResult **ret)
{
	Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
	in.file_path = (char *)path;
	in.content.data = (uint8_t *)data;
	in.content.len = len;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_WRITE;
	tc.write = &in;
	return run(c, session, 0, &tc, ret);
}

int
kiln_edit(kiln_client *c, const char *session, const char *path, const char *old_string,
          const char *new_string, bool replace_all, Kiln__ToolResult **ret)
{
	Kiln__EditInput in = KILN__EDIT_INPUT__INIT;
	in.file_path = (char *)path;
	in.old_string = (char *)old_string;
	in.new_string = (char *)new_string;
	in.replace_all = replace_all;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EDIT;
	tc.edit = &in;
	return run(c, session, 0, &tc, ret);
}

int
kiln_glob(kiln_client *c, const char *session, const char *pattern, const char *path,
          Kiln__ToolResult **ret)
{
	Kiln__GlobInput in = KILN__GLOB_INPUT__INIT;
	in.pattern = (char *)pattern;
	in.path = (char *)(path ? path : "");
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_GLOB;
	tc.glob = &in;
	return run(c, session, 0, &tc, ret);
}

int
kiln_grep(kiln_client *c, const char *session, const char *pattern, const char *path,
          Kiln__ToolResult **ret)
{
	Kiln__GrepInput in = KILN__GREP_INPUT__INIT;
	in.pattern = (char *)pattern;
	in.path = (char *)(path ? path : "");
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_GREP;
	tc.grep = &in;
	return run(c, session, 0, &tc, ret);
}
