/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cluster-side secrets and the scheduler's audit log, with real processes:
 * a secret referenced by a session's environment reaches the sandbox, is
 * scrubbed from every output before it leaves the scheduler, and is refused
 * to tenants that may not use it; every call and admin action lands in the
 * hash-chained audit log, which `kiln audit verify` accepts and which fails
 * verification once a record is changed.
 */
#include "test.h"

#include "kl_util.h"
#include "kt_cluster.h"
#include "kt_node.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#define SECRET "ghp_Kiln-Secret-Value-0123456789"

static kt_cluster cl;
static char audit[512];

TEST(setup)
{
	kt_require_sandboxes();
	char extra[1024];
	/* kt_cluster_init's temp dir is not known yet: the audit path uses our pid. */
	snprintf(audit, sizeof audit, "/tmp/kiln-audit-%d.log", (int)getpid());
	unlink(audit);
	snprintf(extra, sizeof extra,
	         "[secret github]\nvalue = " SECRET "\ntenants = alpha\n"
	         "[scheduler]\naudit_log = %s\naudit_fsync = every\n",
	         audit);
	kt_cluster_init(&cl, extra);
	kt_cluster_start_sched(&cl);
	const char *warm[] = {"--warm", "2", NULL};
	kt_cluster_add_node(&cl, warm);
}

TEST(secret_is_injected_and_scrubbed)
{
	kiln_client *k = kt_cluster_client(&cl, KT_ALPHA);
	Kiln__SessionOpen__EnvEntry e = KILN__SESSION_OPEN__ENV_ENTRY__INIT, *ev[] = {&e};
	e.key = "GH_TOKEN";
	e.value = "kiln-secret:github";
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.n_env = 1;
	o.env = ev;
	Kiln__SessionOpened *op;
	ASSERT_EQ(kiln_session_open_full(k, &o, &op), 0);
	char *sid = strdup(op->session->session_id);
	kiln_opened_free(op);
	Kiln__ToolResult *r;
	/* The value is really there: its length and a digest computed inside. */
	ASSERT_EQ(kiln_bash(k, sid,
	                    "echo ${#GH_TOKEN}; printf %s \"$GH_TOKEN\" | sha256sum | cut -c1-8", 0,
	                    &r),
	          0);
	ASSERT_EQ(r->code, 0);
	char want[64];
	snprintf(want, sizeof want, "%zu\n", strlen(SECRET));
	ASSERT(r->output.len > strlen(want) && !memcmp(r->output.data, want, strlen(want)));
	kiln_result_free(r);
	/* ...but it never comes out: stdout, stderr (merged in bash) and a file read. */
	ASSERT_EQ(kiln_bash(k, sid,
	                    "echo \"token=$GH_TOKEN\"; echo \"$GH_TOKEN\" >&2; "
	                    "echo -n \"$GH_TOKEN\" > t.txt",
	                    0, &r),
	          0);
	char *out = strndup((char *)r->output.data, r->output.len);
	ASSERT_NOT_CONTAINS(out, SECRET);
	ASSERT_CONTAINS(out, "token=[secret:github]");
	free(out);
	kiln_result_free(r);
	ASSERT_EQ(kiln_read(k, sid, "t.txt", 0, 0, &r), 0);
	out = strndup((char *)r->output.data, r->output.len);
	ASSERT_STR_EQ(out, "[secret:github]");
	free(out);
	kiln_result_free(r);
	/* An exec call's own environment can reference it too. */
	Kiln__ExecInput__EnvEntry xe = KILN__EXEC_INPUT__ENV_ENTRY__INIT, *xv[] = {&xe};
	xe.key = "T";
	xe.value = "kiln-secret:github";
	const char *argv[] = {"sh", "-c", "echo $T", NULL};
	Kiln__ExecInput xi = KILN__EXEC_INPUT__INIT;
	xi.argv = (char **)argv;
	xi.n_argv = 3;
	xi.env = xv;
	xi.n_env = 1;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc.exec = &xi;
	ASSERT_EQ(kiln_call(k, &tc, &r), 0);
	out = strndup((char *)r->output.data, r->output.len);
	ASSERT_STR_EQ(out, "[secret:github]\n");
	free(out);
	kiln_result_free(r);
	ASSERT_EQ(kiln_session_close(k, sid), 0);
	free(sid);
	kiln_close(k);
}

TEST(secret_refused_to_other_tenants)
{
	kiln_client *k = kt_cluster_client(&cl, KT_BETA);
	Kiln__SessionOpen__EnvEntry e = KILN__SESSION_OPEN__ENV_ENTRY__INIT, *ev[] = {&e};
	e.key = "GH_TOKEN";
	e.value = "kiln-secret:github";
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.n_env = 1;
	o.env = ev;
	Kiln__SessionOpened *op;
	ASSERT_LT(kiln_session_open_full(k, &o, &op), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__PERMISSION_DENIED);
	ASSERT_CONTAINS(kiln_last_error()->message, "not available to tenant beta");
	/* An unknown secret looks the same (names are not disclosed). */
	e.value = "kiln-secret:nope";
	ASSERT_LT(kiln_session_open_full(k, &o, &op), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__PERMISSION_DENIED);
	kiln_close(k);
}

static int
run_verify(const char *path, char *out, size_t len)
{
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "'%s/kiln' audit verify '%s' 2>&1", cl.bindir, path);
	FILE *f = popen(cmd, "r");
	size_t n = fread(out, 1, len - 1, f);
	out[n] = 0;
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(audit_log_records_and_verifies)
{
	kiln_client *adm = kt_cluster_client(&cl, KT_ADMIN);
	ASSERT_EQ(kiln_node_admin(adm, cl.names[0], "drain"), 0);
	kiln_close(adm);
	char *text;
	size_t len;
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, audit, 16 << 20, &text, &len), 0);
	ASSERT_CONTAINS(text, "\"type\":\"tool_call\"");
	ASSERT_CONTAINS(text, "\"tenant\":\"alpha\"");
	ASSERT_CONTAINS(text, "\"node drain\"");
	ASSERT_NOT_CONTAINS(text, SECRET);
	free(text);
	char out[4096];
	ASSERT_EQ(run_verify(audit, out, sizeof out), 0);
	/* Change one byte of a middle record: verification fails and names it. */
	char copy[600];
	snprintf(copy, sizeof copy, "%s.tampered", audit);
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, audit, 16 << 20, &text, &len), 0);
	char *p = strstr(text, "\"tenant\":\"alpha\"");
	ASSERT(p != NULL);
	p[11] = 'A'; /* alpha -> Alpha */
	int fd = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ASSERT_EQ(kl_write_all(fd, text, len), 0);
	close(fd);
	free(text);
	ASSERT_EQ(run_verify(copy, out, sizeof out), 1);
	ASSERT_CONTAINS(out, "line");
	unlink(copy);
}

TEST(teardown)
{
	kt_cluster_stop(&cl);
	unlink(audit);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
