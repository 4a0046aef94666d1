/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-fuzz-seeds: writes the seed corpora of the fuzz targets into
 * DIR/<target>/ (tests/fuzz/corpus in the repository): a valid Envelope of
 * every kind with realistic contents, the init messages the node builds
 * (KI_CONFIG like pool.c, KI_SPAWN like call.c) and those init answers with,
 * scheduler configs (docs/config.md's example, the dev config, typical
 * mistakes), and inputs for the file tools' helpers and the CLI's parsers in
 * the byte layouts their targets read. Deterministic: rerun it after a proto
 * or format change and commit what changed.
 *
 *     kiln-fuzz-seeds tests/fuzz/corpus
 */
#include "initparse.h"
#include "kl_proto.h"

#include <errno.h>
#include <linux/filter.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>

static const char *outdir;

static void
put(const char *target, const char *name, const void *data, size_t len)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", outdir, target);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* ---- envelopes ---- */

static void
put_env(const char *name, Kiln__Envelope *e)
{
	uint8_t *b;
	size_t n;
	if (kl_env_encode(e, &b, &n) < 0)
		exit(1);
	put("fuzz_envelope", name, b, n);
	free(b);
}

static Kiln__Limits lim = KILN__LIMITS__INIT;
static Kiln__ToolResult result = KILN__TOOL_RESULT__INIT;
static Kiln__SessionInfo sinfo = KILN__SESSION_INFO__INIT;
static Kiln__TemplateInfo tinfo = KILN__TEMPLATE_INFO__INIT;
static Kiln__SessionOpen sopen = KILN__SESSION_OPEN__INIT;
static Kiln__SessionOpened sopened = KILN__SESSION_OPENED__INIT;
static Kiln__SessionClose sclose = KILN__SESSION_CLOSE__INIT;
static Kiln__SessionClosed sclosed = KILN__SESSION_CLOSED__INIT;
static Kiln__Cancel cancel = KILN__CANCEL__INIT;

static void
fill_common(void)
{
	static Kiln__ExecInput__EnvEntry env1 = KILN__EXEC_INPUT__ENV_ENTRY__INIT;
	static Kiln__ExecInput__EnvEntry *envv[] = {&env1};
	lim.memory_bytes = 512u << 20;
	lim.pids = 256;
	lim.cpu_millicores = 1500;
	lim.workspace_bytes = 1u << 30;
	lim.call_timeout_ms = 30000;
	lim.output_bytes = 1u << 20;
	lim.idle_ttl_ms = 600000;
	result.job_id = 7;
	result.code = KILN__CODE__OK;
	result.message = "wrote 5 bytes to a.txt";
	result.exit_code = 0;
	result.output.data = (uint8_t *)"hello\n";
	result.output.len = 6;
	result.stderr.data = (uint8_t *)"\xff\xfe binary";
	result.stderr.len = 9;
	result.output_total = 6;
	result.stderr_total = 9;
	result.duration_us = 1234;
	result.cpu_usec = 800;
	result.peak_memory_bytes = 4u << 20;
	result.limits_enforced = 1;
	result.node_id = "node-a";
	result.queue_us = 12;
	sinfo.session_id = "s-0123456789abcdef";
	sinfo.tenant = "acme";
	sinfo.template_ = "default";
	sinfo.limits = &lim;
	sinfo.node_id = "node-a";
	sinfo.created_unix_ms = 1700000000000ull;
	sinfo.last_used_unix_ms = 1700000005000ull;
	sinfo.calls = 3;
	tinfo.name = "default";
	tinfo.warm = 4;
	tinfo.target = 8;
	tinfo.creating = 1;
	tinfo.defaults = &lim;
	sopen.session_id = "s-0123456789abcdef";
	sopen.tenant = "acme";
	sopen.template_ = "default";
	sopen.limits = &lim;
	env1.key = "LANG";
	env1.value = "C.UTF-8";
	sopen.n_env = 1;
	sopen.env = (Kiln__SessionOpen__EnvEntry **)envv;
	sopened.code = KILN__CODE__OK;
	sopened.session = &sinfo;
	sopened.limits_enforced = 1;
	sopened.warm = 1;
	sopened.claim_us = 150;
	sclose.session_id = "s-0123456789abcdef";
	sclosed.session_id = "s-0123456789abcdef";
	sclosed.message = "session closed";
	cancel.job_id = 7;
}

/* One ToolCall per tool kind, in call[]. */
static Kiln__ToolCall call[8];

static void
fill_calls(void)
{
	static Kiln__BashInput bash = KILN__BASH_INPUT__INIT;
	static Kiln__ExecInput exec = KILN__EXEC_INPUT__INIT;
	static Kiln__ReadInput read = KILN__READ_INPUT__INIT;
	static Kiln__WriteInput write = KILN__WRITE_INPUT__INIT;
	static Kiln__EditInput edit = KILN__EDIT_INPUT__INIT;
	static Kiln__GlobInput glob = KILN__GLOB_INPUT__INIT;
	static Kiln__GrepInput grep = KILN__GREP_INPUT__INIT;
	static Kiln__EditorInput editor = KILN__EDITOR_INPUT__INIT;
	static char *argv[] = {"python3", "-c", "print(1)"};
	static Kiln__ExecInput__EnvEntry env1 = KILN__EXEC_INPUT__ENV_ENTRY__INIT;
	static Kiln__ExecInput__EnvEntry *envv[] = {&env1};
	static int64_t range[] = {2, 10};
	bash.command = "ls -la /workspace && echo done";
	bash.timeout_ms = 5000;
	exec.n_argv = 3;
	exec.argv = argv;
	env1.key = "PYTHONUNBUFFERED";
	env1.value = "1";
	exec.n_env = 1;
	exec.env = envv;
	exec.cwd = "/workspace/src";
	exec.stdin.data = (uint8_t *)"input\n";
	exec.stdin.len = 6;
	read.file_path = "src/main.c";
	read.n_view_range = 2;
	read.view_range = range;
	write.file_path = "/workspace/a.txt";
	write.content.data = (uint8_t *)"hello";
	write.content.len = 5;
	edit.file_path = "a.txt";
	edit.old_string = "hello";
	edit.new_string = "goodbye";
	edit.replace_all = 1;
	glob.pattern = "**/*.{c,h}";
	glob.path = "src";
	grep.pattern = "(?i)fn\\s+\\w+\\(";
	grep.path = ".";
	editor.command = "str_replace";
	editor.path = "/workspace/a.txt";
	editor.old_str = "a";
	editor.new_str = "b";
	editor.has_new_str = 1;
	editor.n_view_range = 2;
	editor.view_range = range;
	editor.insert_line = 3;
	editor.insert_text = "line\n";
	editor.max_characters = 16000;
	for (int i = 0; i < 8; i++) {
		call[i] = (Kiln__ToolCall)KILN__TOOL_CALL__INIT;
		call[i].job_id = 100 + (uint64_t)i;
		call[i].session_id = "s-0123456789abcdef";
		call[i].timeout_ms = 10000;
	}
	call[0].tool_case = KILN__TOOL_CALL__TOOL_BASH, call[0].bash = &bash;
	call[1].tool_case = KILN__TOOL_CALL__TOOL_EXEC, call[1].exec = &exec;
	/* A one-shot call: no session, a template and limits. */
	call[1].session_id = "", call[1].template_ = "python", call[1].limits = &lim;
	call[2].tool_case = KILN__TOOL_CALL__TOOL_READ, call[2].read = &read;
	call[3].tool_case = KILN__TOOL_CALL__TOOL_WRITE, call[3].write = &write;
	call[4].tool_case = KILN__TOOL_CALL__TOOL_EDIT, call[4].edit = &edit;
	call[5].tool_case = KILN__TOOL_CALL__TOOL_GLOB, call[5].glob = &glob;
	call[6].tool_case = KILN__TOOL_CALL__TOOL_GREP, call[6].grep = &grep;
	call[7].tool_case = KILN__TOOL_CALL__TOOL_EDITOR, call[7].editor = &editor;
}

static void
client_requests(void)
{
	static const char *const tool[] = {"bash", "exec", "read", "write",
	                                   "edit", "glob", "grep", "editor"};
	Kiln__StatusRequest st = KILN__STATUS_REQUEST__INIT;
	Kiln__NodeAdmin adm = KILN__NODE_ADMIN__INIT;
	Kiln__SessionList sl = KILN__SESSION_LIST__INIT;
	Kiln__ClientRequest cr = KILN__CLIENT_REQUEST__INIT;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	char name[64];
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REQUEST;
	e.client_request = &cr;
	cr.token = "kiln-dev-acme";
	cr.request_id = 1;
	cr.op_case = KILN__CLIENT_REQUEST__OP_OPEN, cr.open = &sopen;
	put_env("client_open", &e);
	cr.token = "kiln-dev-token";
	cr.op_case = KILN__CLIENT_REQUEST__OP_CLOSE, cr.close = &sclose;
	put_env("client_close", &e);
	for (int i = 0; i < 8; i++) {
		cr.op_case = KILN__CLIENT_REQUEST__OP_CALL, cr.call = &call[i];
		snprintf(name, sizeof name, "client_call_%s", tool[i]);
		put_env(name, &e);
	}
	cr.op_case = KILN__CLIENT_REQUEST__OP_CANCEL, cr.cancel = &cancel;
	put_env("client_cancel", &e);
	cr.token = "kiln-dev-admin";
	cr.op_case = KILN__CLIENT_REQUEST__OP_STATUS, cr.status = &st;
	put_env("client_status", &e);
	adm.node_id = "node-a";
	adm.action = "drain";
	cr.op_case = KILN__CLIENT_REQUEST__OP_NODE_ADMIN, cr.node_admin = &adm;
	put_env("client_node_admin", &e);
	cr.token = "not-a-token";
	cr.op_case = KILN__CLIENT_REQUEST__OP_LIST, cr.list = &sl;
	put_env("client_list_bad_token", &e);
	/* Another protocol version: refused before the body is parsed. */
	uint8_t *b;
	size_t n;
	if (kl_env_encode_as(&e, 2, &b, &n) < 0)
		exit(1);
	put("fuzz_envelope", "version_2", b, n);
	free(b);
}

static void
client_replies(void)
{
	Kiln__NodeStatus ns = KILN__NODE_STATUS__INIT;
	Kiln__TenantStatus ts = KILN__TENANT_STATUS__INIT;
	Kiln__StatusReply st = KILN__STATUS_REPLY__INIT;
	Kiln__SessionListReply sl = KILN__SESSION_LIST_REPLY__INIT;
	Kiln__ErrorReply er = KILN__ERROR_REPLY__INIT;
	Kiln__NodeStatus__LabelsEntry lab = KILN__NODE_STATUS__LABELS_ENTRY__INIT;
	Kiln__NodeStatus__LabelsEntry *labv[] = {&lab};
	Kiln__TemplateInfo *tv[] = {&tinfo};
	Kiln__NodeStatus *nv[] = {&ns};
	Kiln__TenantStatus *tsv[] = {&ts};
	Kiln__SessionInfo *sv[] = {&sinfo};
	Kiln__ClientReply cr = KILN__CLIENT_REPLY__INIT;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REPLY;
	e.client_reply = &cr;
	cr.request_id = 1;
	cr.reply_case = KILN__CLIENT_REPLY__REPLY_OPENED, cr.opened = &sopened;
	put_env("reply_opened", &e);
	cr.reply_case = KILN__CLIENT_REPLY__REPLY_CLOSED, cr.closed = &sclosed;
	put_env("reply_closed", &e);
	cr.reply_case = KILN__CLIENT_REPLY__REPLY_RESULT, cr.result = &result;
	put_env("reply_result", &e);
	ns.node_id = "node-a";
	ns.state = "ready";
	ns.slots = 16;
	ns.running = 2;
	ns.sessions = 5;
	ns.n_templates = 1;
	ns.templates = tv;
	lab.key = "zone";
	lab.value = "eu-1";
	ns.n_labels = 1;
	ns.labels = labv;
	ns.last_heartbeat_ms_ago = 420;
	ns.limits_enforced = 1;
	ns.calls_done = 99;
	ts.name = "acme";
	ts.weight = 2;
	ts.sessions = 5;
	ts.max_sessions = 100;
	ts.inflight = 2;
	ts.max_inflight = 32;
	ts.calls_done = 99;
	st.n_nodes = 1;
	st.nodes = nv;
	st.n_tenants = 1;
	st.tenants = tsv;
	st.sessions = 5;
	st.inflight = 2;
	st.placements = 40;
	st.scheduler = "kiln-scheduler 0.1.0";
	st.uptime_ms = 3600000;
	cr.reply_case = KILN__CLIENT_REPLY__REPLY_STATUS, cr.status = &st;
	put_env("reply_status", &e);
	sl.n_sessions = 1;
	sl.sessions = sv;
	cr.reply_case = KILN__CLIENT_REPLY__REPLY_LIST, cr.list = &sl;
	put_env("reply_list", &e);
	er.code = KILN__CODE__RESOURCE_EXHAUSTED;
	er.message = "tenant acme: 32 calls in flight (max_inflight)";
	er.retry_after_ms = 250;
	cr.reply_case = KILN__CLIENT_REPLY__REPLY_ERROR, cr.error = &er;
	put_env("reply_error", &e);
	Kiln__Envelope ee = KILN__ENVELOPE__INIT;
	ee.msg_case = KILN__ENVELOPE__MSG_ERROR;
	ee.error = &er;
	put_env("error", &ee);
}

static void
node_messages(void)
{
	Kiln__NodeRegister reg = KILN__NODE_REGISTER__INIT;
	Kiln__NodeRegistered regd = KILN__NODE_REGISTERED__INIT;
	Kiln__Heartbeat hb = KILN__HEARTBEAT__INIT;
	Kiln__HeartbeatAck ack = KILN__HEARTBEAT_ACK__INIT;
	Kiln__WorkRequest wr = KILN__WORK_REQUEST__INIT;
	Kiln__WorkAssign wa = KILN__WORK_ASSIGN__INIT;
	Kiln__NodeWork w1 = KILN__NODE_WORK__INIT, w2 = KILN__NODE_WORK__INIT;
	Kiln__NodeReply done = KILN__NODE_REPLY__INIT;
	Kiln__NodeRegister__LabelsEntry lab = KILN__NODE_REGISTER__LABELS_ENTRY__INIT;
	Kiln__NodeRegister__LabelsEntry *labv[] = {&lab};
	Kiln__TemplateInfo *tv[] = {&tinfo};
	Kiln__SessionInfo *sv[] = {&sinfo};
	Kiln__NodeWork *ctl[] = {&w1, &w2};
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	reg.node_id = "node-a";
	reg.token = "kiln-dev-join";
	reg.slots = 16;
	reg.max_sessions = 1000;
	reg.n_templates = 1;
	reg.templates = tv;
	lab.key = "zone";
	lab.value = "eu-1";
	reg.n_labels = 1;
	reg.labels = labv;
	reg.n_sessions = 1;
	reg.sessions = sv;
	reg.incarnation = 0x1234567890ull;
	reg.limits_enforced = 1;
	reg.software = "kiln-node 0.1.0";
	e.msg_case = KILN__ENVELOPE__MSG_NODE_REGISTER, e.node_register = &reg;
	put_env("node_register", &e);
	regd.heartbeat_ms = 1000;
	regd.dead_after_ms = 3000;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_REGISTERED, e.node_registered = &regd;
	put_env("node_registered", &e);
	hb.node_id = "node-a";
	hb.incarnation = reg.incarnation;
	hb.n_templates = 1;
	hb.templates = tv;
	hb.running = 2;
	hb.sessions = 5;
	hb.free_slots = 14;
	e.msg_case = KILN__ENVELOPE__MSG_HEARTBEAT, e.heartbeat = &hb;
	put_env("heartbeat", &e);
	w1.work_case = KILN__NODE_WORK__WORK_CANCEL, w1.cancel = &cancel;
	w2.work_case = KILN__NODE_WORK__WORK_CLOSE, w2.close = &sclose;
	ack.n_control = 2;
	ack.control = ctl;
	e.msg_case = KILN__ENVELOPE__MSG_HEARTBEAT_ACK, e.heartbeat_ack = &ack;
	put_env("heartbeat_ack", &e);
	done.reply_case = KILN__NODE_REPLY__REPLY_RESULT, done.result = &result;
	wr.node_id = "node-a";
	wr.incarnation = reg.incarnation;
	wr.done = &done;
	wr.want_work = 1;
	e.msg_case = KILN__ENVELOPE__MSG_WORK_REQUEST, e.work_request = &wr;
	put_env("work_request", &e);
	w1.work_case = KILN__NODE_WORK__WORK_CALL, w1.call = &call[0];
	wa.work = &w1;
	e.msg_case = KILN__ENVELOPE__MSG_WORK_ASSIGN, e.work_assign = &wa;
	put_env("work_assign_call", &e);
	w1.work_case = KILN__NODE_WORK__WORK_OPEN, w1.open = &sopen;
	put_env("work_assign_open", &e);
	/* Straight to a node (kiln-node --listen) and its answers. */
	e.msg_case = KILN__ENVELOPE__MSG_NODE_WORK, e.node_work = &w1;
	put_env("node_work_open", &e);
	w1.work_case = KILN__NODE_WORK__WORK_CALL, w1.call = &call[7];
	put_env("node_work_call_editor", &e);
	w1.work_case = KILN__NODE_WORK__WORK_CANCEL, w1.cancel = &cancel;
	put_env("node_work_cancel", &e);
	e.msg_case = KILN__ENVELOPE__MSG_NODE_REPLY, e.node_reply = &done;
	put_env("node_reply_result", &e);
	done.reply_case = KILN__NODE_REPLY__REPLY_OPENED, done.opened = &sopened;
	put_env("node_reply_opened", &e);
	done.reply_case = KILN__NODE_REPLY__REPLY_CLOSED, done.closed = &sclosed;
	put_env("node_reply_closed", &e);
}

/* ---- init messages ---- */

static uint8_t mem[KI_MAX_MSG] __attribute__((aligned(8)));

/* fuzz_init_msgs reads a descriptor count first. */
static void
put_init(const char *target, const char *name, int nfds, ki_buf *m)
{
	uint32_t n = ki_end(m);
	if (m->overflow)
		exit(1);
	static uint8_t out[KI_MAX_MSG + 1];
	size_t off = 0;
	if (nfds >= 0)
		out[off++] = (uint8_t)nfds;
	memcpy(out + off, m->p, n);
	put(target, name, out, off + n);
}

static void
init_messages(void)
{
	ki_buf m;
	/* A mount plan as pool.c builds it for the "host" root. */
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_hdr(&m)->x = 1ull << 30;
	ki_hdr(&m)->y = 256ull << 20;
	ki_hdr(&m)->a = 65536;
	ki_put_str(&m, KT_HOSTNAME, "sandbox");
	static const char *const ro[] = {"usr", "bin", "lib", "lib64", "sbin", NULL};
	char src[64];
	for (int i = 0; ro[i]; i++) {
		snprintf(src, sizeof src, "/%s", ro[i]);
		ki_put_str2(&m, KT_BIND_RO, src, ro[i]);
	}
	ki_put_str(&m, KT_DIR, "etc");
	static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
	                             "user:x:1000:1000::/workspace:/bin/bash\n";
	ki_put(&m, KT_FILE, "etc/passwd", sizeof "etc/passwd", passwd, sizeof passwd - 1);
	ki_put(&m, KT_FILE, "etc/empty", sizeof "etc/empty", "", 0);
	ki_put_str(&m, KT_DIR, "var");
	ki_put_str2(&m, KT_SYMLINK, "../tmp", "var/tmp");
	ki_put_str(&m, KT_DEVICE, "null");
	ki_put_str(&m, KT_DEVICE, "urandom");
	struct sock_filter f[] = {
	        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4),
	        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xc000003e, 1, 0),
	        BPF_STMT(BPF_RET | BPF_K, 0),
	        BPF_STMT(BPF_RET | BPF_K, 0x7fff0000),
	};
	ki_put(&m, KT_SECCOMP, f, sizeof f, NULL, 0);
	put_init("fuzz_init_msgs", "config_host", 0, &m);

	/* A tool process as call.c spawns one: stdin, stdout, stderr and the cgroup. */
	ki_begin(&m, mem, sizeof mem, KI_SPAWN, 42);
	ki_hdr(&m)->a = KI_SPAWN_CGROUPNS;
	ki_hdr(&m)->b = 022;
	ki_put_str(&m, KT_ARG, "/bin/bash");
	ki_put_str(&m, KT_ARG, "-c");
	ki_put_str(&m, KT_ARG, "echo hi");
	ki_put_str(&m, KT_ENV, "PATH=/usr/local/bin:/usr/bin:/bin");
	ki_put_str(&m, KT_ENV, "HOME=/workspace");
	ki_put_str(&m, KT_CWD, "/workspace/src");
	struct ki_rlimit rl[] = {
	        {RLIMIT_NPROC, 0, 4096, 4096},
	        {RLIMIT_NOFILE, 0, 4096, 65536},
	        {RLIMIT_CORE, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof rl / sizeof rl[0]; i++)
		ki_put(&m, KT_RLIMIT, &rl[i], sizeof rl[i], NULL, 0);
	int32_t map[] = {0, 1, 2, -1};
	ki_put(&m, KT_FDMAP, map, sizeof map, NULL, 0);
	put_init("fuzz_init_msgs", "spawn_exec", 4, &m);
	/* The session's shell: no cwd, no fds beyond the map. */
	ki_begin(&m, mem, sizeof mem, KI_SPAWN, 43);
	ki_put_str(&m, KT_ARG, "bash");
	ki_put_str(&m, KT_ENV, "TERM=dumb");
	put_init("fuzz_init_msgs", "spawn_min", 0, &m);

	/* What init answers with (fuzz_node_ctl: no descriptor count). */
	ki_begin(&m, mem, sizeof mem, KI_READY, 0);
	ki_hdr(&m)->a = 1;
	put_init("fuzz_node_ctl", "ready", -1, &m);
	ki_begin(&m, mem, sizeof mem, KI_ERROR, 0);
	ki_hdr(&m)->a = ENOENT;
	ki_put(&m, KT_TEXT, "bind source /opt/x: No such file or directory",
	       sizeof "bind source /opt/x: No such file or directory" - 1, "", 1);
	put_init("fuzz_node_ctl", "error", -1, &m);
	ki_begin(&m, mem, sizeof mem, KI_SPAWNED, 42);
	ki_hdr(&m)->a = 17;
	put_init("fuzz_node_ctl", "spawned", -1, &m);
	ki_begin(&m, mem, sizeof mem, KI_SPAWN_FAILED, 42);
	ki_hdr(&m)->a = ENOENT;
	ki_hdr(&m)->b = KI_STAGE_RESOLVE;
	ki_put(&m, KT_TEXT, "pyhton3", 7, "", 1);
	put_init("fuzz_node_ctl", "spawn_failed", -1, &m);
	ki_begin(&m, mem, sizeof mem, KI_EXITED, 42);
	ki_hdr(&m)->a = 17;
	ki_hdr(&m)->b = 1 << 8;
	ki_hdr(&m)->c = 2048;
	ki_hdr(&m)->x = 1500;
	ki_hdr(&m)->y = 300;
	put_init("fuzz_node_ctl", "exited", -1, &m);
	ki_begin(&m, mem, sizeof mem, KI_PONG, 9);
	put_init("fuzz_node_ctl", "pong", -1, &m);
	ki_begin(&m, mem, sizeof mem, KI_FAIL, 10);
	ki_hdr(&m)->a = EINVAL;
	ki_put(&m, KT_TEXT, "remount /workspace", 18, "", 1);
	put_init("fuzz_node_ctl", "resize_failed", -1, &m);
}

/* ---- text inputs ---- */

static void
put_str(const char *target, const char *name, const char *s)
{
	put(target, name, s, strlen(s));
}

/* A selector byte, then NUL-separated fields (fuzz.h's reader). */
static void
put_fields(const char *target, const char *name, const char *head, size_t headlen,
           const char *const *fields)
{
	char buf[4096];
	size_t n = headlen;
	memcpy(buf, head, headlen);
	for (int i = 0; fields[i]; i++) {
		size_t k = strlen(fields[i]);
		memcpy(buf + n, fields[i], k);
		n += k;
		if (fields[i + 1])
			buf[n++] = 0;
	}
	put(target, name, buf, n);
}

static const char example_conf[] =
        "# docs/config.md's example, with tokens inline\n"
        "[scheduler]\n"
        "node_url = tcp://0.0.0.0:7070          ; where nodes dial in\n"
        "client_url = tcp://127.0.0.1:7071      ; where clients connect\n"
        "join_token = j0in-t0ken\n"
        "admin_token = adm1n-t0ken\n"
        "heartbeat = 1s\n"
        "dead_after = 3s\n"
        "poll = 5s\n"
        "idle_ttl = 30m\n"
        "shutdown_grace = 10s\n"
        "max_queued = 100000\n"
        "\n"
        "[tenant acme]\n"
        "token = acme-secret\n"
        "weight = 2\n"
        "max_sessions = 200\n"
        "max_inflight = 64\n"
        "rate = 200\n"
        "burst = 400\n"
        "queue = 256\n"
        "max_memory = 2G\n"
        "max_pids = 1024\n"
        "max_cpu = 2000m\n"
        "max_workspace = 4G\n"
        "max_timeout = 10m\n"
        "max_output = 4M\n"
        "default_memory = 512M\n"
        "default_timeout = 2m\n"
        "\n"
        "[tenant globex]\n"
        "token: globex-secret\n"
        "max_memory = 1G\n"
        "max_cpu = 1.5\n"
        "default_idle_ttl = 90s\n"
        "max_idle_ttl = 1h\n";

static void
configs(void)
{
	put_str("fuzz_config", "example", example_conf);
	put_str("fuzz_config", "example_token_files",
	        "[scheduler]\njoin_token_file = /etc/kiln/join.token\n"
	        "[tenant acme]\ntoken_file = acme.token\n");
	put_str("fuzz_config", "dev",
	        "[scheduler]\nnode_url = tcp://127.0.0.1:7070\njoin_token = kiln-dev-join\n"
	        "admin_token = kiln-dev-admin\n\n[tenant dev]\ntoken = kiln-dev-token\n"
	        "max_sessions = 10000\nmax_inflight = 4096\nrate = 0\nqueue = 16384\n");
	put_str("fuzz_config", "mistakes",
	        "[scheduler]\njoin_token = j\n  heartbeat = 2s\ndead_after = 1s\n"
	        "[tenant a b]\n[tenant x]\ntoken = j\nmax_memory = 1.1K\nweight = 0\n"
	        "default_pids = 10\nmax_pids = 5\nunknown = 1\n");
	put_str("fuzz_config", "sizes",
	        "[scheduler]\njoin_token = j\n[tenant t]\ntoken = t\nmax_memory = "
	        "18446744073709551615\n"
	        "max_output = 1.5 GiB\nmax_workspace = 0.5t\nmax_timeout = 1193h\n"
	        "default_timeout = 0.25s\nmax_cpu = 999999999m\n");
}

/* fuzz_fstools: a selector byte and the case's fixed-size fields (head),
 * then its strings, NUL-separated. */
#define HEAD(...) (const char[]){__VA_ARGS__}, sizeof((const char[]){__VA_ARGS__})

static void
fs_seed(const char *name, const char *head, size_t hl, const char *a, const char *b, const char *c)
{
	const char *const f[] = {a, b, c, NULL};
	put_fields("fuzz_fstools", name, head, hl, f);
}

static void
fstools(void)
{
	fs_seed("abs_relative", HEAD(0, 0), "/workspace", "src/../lib/./x.c", NULL);
	fs_seed("abs_escape", HEAD(0, 0), "/workspace", "../../etc/passwd", NULL);
	fs_seed("abs_short_buffer", HEAD(0, 2), "/workspace", "/etc//passwd/", NULL);
	fs_seed("glob_braces", HEAD(1), "**/*.{c,h}", "src/kiln/main.c", NULL);
	fs_seed("glob_class", HEAD(1), "src/[a-c]?/[!x]*.[ch]", "src/ab/main.c", NULL);
	fs_seed("glob_utf8", HEAD(1), "d\xc3\xa9j\xc3\xa0/*", "d\xc3\xa9j\xc3\xa0/vu", NULL);
	fs_seed("regex_rg", HEAD(2), "(?i)fn\\s+\\w+\\(\\d{2,}[\\d\\s]*?\\)", "fn main(42 )", NULL);
	fs_seed("regex_hex", HEAD(2), "\\x41\\x{1F600}[^\\]\\-]+(?:ab|cd)$",
	        "A\xf0\x9f\x98\x80zzab", NULL);
	fs_seed("replace_one", HEAD(3, 0), "hello world\nhello\n", "world", "there");
	fs_seed("replace_all", HEAD(3, 1), "a.a.a.a", "a", "bb");
	/* view: mode (2 = a range; 4 = small numbers), start, end (big-endian
	 * int64), max_characters (16 bits), the text */
	fs_seed("view_range", HEAD(4, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0),
	        "one\ntwo\nthree\nfour\nfive", NULL, NULL);
	fs_seed("view_clip", HEAD(4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5),
	        "\xc3\xa9t\xc3\xa9\nhiver\nlong line here\n", NULL, NULL);
	fs_seed("insert", HEAD(5, 2), "a\nb\nc", "new line", NULL);
	fs_seed("utf8", HEAD(6),
	        "ok \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 bad \xed\xa0\x80 \xc0\xaf", NULL, NULL);
	fs_seed("clip", HEAD(8, 0, 3), "ab\ncd\nef", NULL, NULL);
}

static void
cli_args(void)
{
	static const struct {
		const char *name;
		const char *s;
	} t[] = {
	        {"size", "\x00"
	                 "1.5GiB"},
	        {"size_k", "\x00"
	                   "64k"},
	        {"duration", "\x00"
	                     "1.5s"},
	        {"cpu", "\x00"
	                "1500m"},
	        {"limits", "\x01memory=512M,pids=100,cpu=1.5,timeout=30s,idle=10m,output=1M"},
	        {"limits_bad", "\x01memory=lots"},
	        {"range", "\x02"
	                  "10:20"},
	        {"range_open", "\x02"
	                       "5:"},
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		put("fuzz_cli_args", t[i].name, t[i].s, 1 + strlen(t[i].s + 1));
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: kiln-fuzz-seeds DIR\n");
		return 2;
	}
	outdir = argv[1];
	fill_common();
	fill_calls();
	client_requests();
	client_replies();
	node_messages();
	init_messages();
	configs();
	fstools();
	cli_args();
	return 0;
}
