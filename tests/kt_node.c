/* SPDX-License-Identifier: Apache-2.0 */
/* Synchronous drivers for an in-process node (see kt_node.h). */
#include "kt_node.h"

#include "test.h"
#include "kl_proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int done;
	uint8_t *buf;
	size_t len;
};

static void
on_reply(void *arg, const Kiln__NodeReply *rep)
{
	struct waiter *w = arg;
	size_t len = kiln__node_reply__get_packed_size(rep);
	uint8_t *buf = malloc(len + 1);
	kiln__node_reply__pack(rep, buf);
	pthread_mutex_lock(&w->mu);
	w->buf = buf;
	w->len = len;
	w->done = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

Kiln__NodeReply *
kt_node_do(node *n, const Kiln__NodeWork *work)
{
	struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, 0};
	int r = node_submit(n, work, on_reply, &w);
	if (r < 0)
		KT_FAIL("node_submit: %s", strerror(-r));
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.mu);
	pthread_mutex_unlock(&w.mu);
	Kiln__NodeReply *rep = kiln__node_reply__unpack(NULL, w.len, w.buf);
	free(w.buf);
	ASSERT(rep != NULL);
	return rep;
}

void
kt_free_reply(Kiln__NodeReply *r)
{
	kiln__node_reply__free_unpacked(r, NULL);
}

void
kt_require_sandboxes(void)
{
	if (geteuid() != 0)
		KT_SKIP("sandbox tests need root (CI runs as root)");
	pid_t p = fork();
	if (p == 0)
		_exit(unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET) == 0 ? 0
		                                                                              : 1);
	int st;
	waitpid(p, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		KT_SKIP("the kernel refuses user/pid/mount/net namespaces here");
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0 &&
	    access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) != 0)
		KT_SKIP("no cgroup v2 hierarchy mounted");
}

node *
kt_node_start(node_config *cfg)
{
	node_config def;
	char err[512];
	node *n;
	if (!cfg) {
		node_config_defaults(&def);
		def.templates[0].target = 2;
		cfg = &def;
	}
	cfg->allow_unenforced_limits = true;
	cfg->shutdown_grace_ms = cfg->shutdown_grace_ms ? cfg->shutdown_grace_ms : 2000;
	if (node_new(cfg, &n, err, sizeof err) < 0)
		KT_FAIL("node_new: %s", err);
	if (node_start(n) < 0)
		KT_FAIL("node_start");
	return n;
}

void
kt_node_stop(node *n)
{
	node_stop(n);
	node_free(n);
}

int
kt_open_limits(node *n, const char *sid, const char *tenant, const Kiln__Limits *lim)
{
	Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
	o.session_id = (char *)sid;
	o.tenant = (char *)(tenant ? tenant : "t1");
	o.limits = (Kiln__Limits *)lim;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = &o;
	Kiln__NodeReply *r = kt_node_do(n, &w);
	ASSERT_EQ(r->reply_case, KILN__NODE_REPLY__REPLY_OPENED);
	int code = r->opened->code;
	if (code)
		fprintf(stderr, "open %s: %s: %s\n", sid, kl_code_name(code), r->opened->message);
	kt_free_reply(r);
	return code;
}

int
kt_open(node *n, const char *sid, const char *tenant)
{
	return kt_open_limits(n, sid, tenant, NULL);
}

int
kt_close(node *n, const char *sid)
{
	Kiln__SessionClose c = KILN__SESSION_CLOSE__INIT;
	c.session_id = (char *)sid;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CLOSE;
	w.close = &c;
	Kiln__NodeReply *r = kt_node_do(n, &w);
	ASSERT_EQ(r->reply_case, KILN__NODE_REPLY__REPLY_CLOSED);
	int code = r->closed->code;
	kt_free_reply(r);
	return code;
}

static uint64_t next_job = 1000;

Kiln__ToolResult *
kt_call(node *n, Kiln__ToolCall *tc)
{
	if (!tc->job_id)
		tc->job_id = __atomic_add_fetch(&next_job, 1, __ATOMIC_SEQ_CST);
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = tc;
	Kiln__NodeReply *r = kt_node_do(n, &w);
	ASSERT_EQ(r->reply_case, KILN__NODE_REPLY__REPLY_RESULT);
	Kiln__ToolResult *res = r->result;
	r->result = NULL;
	kt_free_reply(r);
	ASSERT_EQ(res->job_id, tc->job_id);
	/* NUL-terminate output for convenience (the buffer has room: repack). */
	uint8_t *o = malloc(res->output.len + 1);
	if (res->output.len)
		memcpy(o, res->output.data, res->output.len);
	o[res->output.len] = 0;
	free(res->output.data);
	res->output.data = o;
	return res;
}

const char *
kt_out(const Kiln__ToolResult *r)
{
	return r->output.data ? (const char *)r->output.data : "";
}

void
kt_free_result(Kiln__ToolResult *r)
{
	kiln__tool_result__free_unpacked(r, NULL);
}

Kiln__ToolResult *
kt_bash(node *n, const char *sid, const char *cmd, uint32_t timeout_ms)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.command = (char *)cmd;
	b.timeout_ms = timeout_ms;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	return kt_call(n, &tc);
}

Kiln__ToolResult *
kt_bash_restart(node *n, const char *sid)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	b.restart = 1;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &b;
	return kt_call(n, &tc);
}

Kiln__ToolResult *
kt_exec(node *n, const char *sid, uint32_t timeout_ms, const char *const *argv)
{
	Kiln__ExecInput e = KILN__EXEC_INPUT__INIT;
	size_t k = 0;
	while (argv[k])
		k++;
	e.n_argv = k;
	e.argv = (char **)argv;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.timeout_ms = timeout_ms;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc.exec = &e;
	return kt_call(n, &tc);
}

Kiln__ToolResult *
kt_read(node *n, const char *sid, const char *path)
{
	Kiln__ReadInput in = KILN__READ_INPUT__INIT;
	in.file_path = (char *)path;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_READ;
	tc.read = &in;
	return kt_call(n, &tc);
}

Kiln__ToolResult *
kt_write(node *n, const char *sid, const char *path, const void *data, size_t len)
{
	Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
	in.file_path = (char *)path;
	in.content.data = (uint8_t *)data;
	in.content.len = len;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_WRITE;
	tc.write = &in;
	return kt_call(n, &tc);
}

Kiln__ToolResult *
kt_edit(node *n, const char *sid, const char *path, const char *old, const char *new_, int all)
{
	Kiln__EditInput in = KILN__EDIT_INPUT__INIT;
	in.file_path = (char *)path;
	in.old_string = (char *)old;
	in.new_string = (char *)new_;
	in.replace_all = all;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = (char *)sid;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EDIT;
	tc.edit = &in;
	return kt_call(n, &tc);
}

/* ---- counting ---- */

int
kt_count_procs(void)
{
	DIR *d = opendir("/proc");
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] >= '0' && e->d_name[0] <= '9')
			n++;
	closedir(d);
	return n;
}

int
kt_count_uid_procs(unsigned lo, unsigned hi)
{
	DIR *d = opendir("/proc");
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		struct stat st;
		char p[300];
		snprintf(p, sizeof p, "/proc/%s", e->d_name);
		if (stat(p, &st) == 0 && st.st_uid >= lo && st.st_uid < hi)
			n++;
	}
	closedir(d);
	return n;
}

int
kt_count_mounts(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	int n = 0, c;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

int
kt_count_cgroups(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		char p[4096 + 256 + 2];
		if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
			continue;
		n += 1 + kt_count_cgroups(p);
	}
	closedir(d);
	return n;
}

long
kt_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6))
			v = atol(line + 6);
	fclose(f);
	return v;
}

int
kt_count_children(void)
{
	DIR *d = opendir("/proc");
	int n = 0;
	struct dirent *e;
	pid_t me = getpid();
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char p[300], buf[512];
		snprintf(p, sizeof p, "/proc/%s/stat", e->d_name);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		size_t k = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[k] = 0;
		char *rp = strrchr(buf, ')');
		int ppid = 0;
		if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == me)
			n++;
	}
	closedir(d);
	return n;
}
