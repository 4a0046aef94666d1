/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's trace (JSON lines, parsed with jansson; format in
 * docs/tunnel-sim.md) and the bytes it turns into: TunnelRequest envelopes
 * for opens, tool calls and closes, and JSON outcomes for the replies (the
 * same shapes `kiln ... --json` prints, from the CLI's renderers). Every
 * parse error names its line.
 */
#include "plane_sim.h"

#include "cli.h"
#include "kl_audit.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocations a request borrows until it is packed. */
struct scratch {
	void *p[64];
	int n;
};

static void *
scratch_alloc(struct scratch *s, size_t n)
{
	void *p = kl_xcalloc(1, n ? n : 1);
	if (s->n < (int)KL_ARRAY_SIZE(s->p))
		s->p[s->n++] = p;
	return p;
}

static void
scratch_free(struct scratch *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->p[i]);
	s->n = 0;
}

/* ---- typed getters: NULL/0 when absent, an error when of the wrong type ---- */

static int
get_str(json_t *o, const char *key, const char **ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);
	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		snprintf(err, errlen, "\"%s\" must be a string", key);
		return -EINVAL;
	}
	*ret = json_string_value(v);
	return 0;
}

static int
get_u64(json_t *o, const char *key, uint64_t *ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		snprintf(err, errlen, "\"%s\" must be a non-negative integer", key);
		return -EINVAL;
	}
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static int
get_u32(json_t *o, const char *key, uint32_t *ret, char *err, size_t errlen)
{
	uint64_t v = *ret;
	if (get_u64(o, key, &v, err, errlen) < 0)
		return -EINVAL;
	if (v > UINT32_MAX) {
		snprintf(err, errlen, "\"%s\" is too large", key);
		return -EINVAL;
	}
	*ret = (uint32_t)v;
	return 0;
}

static int
get_bool(json_t *o, const char *key, protobuf_c_boolean *ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v)) {
		snprintf(err, errlen, "\"%s\" must be true or false", key);
		return -EINVAL;
	}
	*ret = json_is_true(v);
	return 0;
}

/* A required string. */
static int
need_str(json_t *o, const char *key, char **ret, char *err, size_t errlen)
{
	const char *s;
	if (get_str(o, key, &s, err, errlen) < 0)
		return -EINVAL;
	if (!s) {
		snprintf(err, errlen, "input.%s is required", key);
		return -EINVAL;
	}
	*ret = (char *)s;
	return 0;
}

static int
opt_str(json_t *o, const char *key, char **ret, char *err, size_t errlen)
{
	const char *s;
	if (get_str(o, key, &s, err, errlen) < 0)
		return -EINVAL;
	if (s)
		*ret = (char *)s;
	return 0;
}

static int
get_limits(json_t *o, struct scratch *s, Kiln__Limits **ret, char *err, size_t errlen)
{
	json_t *l = json_object_get(o, "limits");
	if (!l || json_is_null(l))
		return 0;
	if (!json_is_object(l)) {
		snprintf(err, errlen, "\"limits\" must be an object");
		return -EINVAL;
	}
	Kiln__Limits *lim = scratch_alloc(s, sizeof *lim);
	kiln__limits__init(lim);
	if (get_u64(l, "memory_bytes", &lim->memory_bytes, err, errlen) < 0 ||
	    get_u32(l, "pids", &lim->pids, err, errlen) < 0 ||
	    get_u32(l, "cpu_millicores", &lim->cpu_millicores, err, errlen) < 0 ||
	    get_u64(l, "workspace_bytes", &lim->workspace_bytes, err, errlen) < 0 ||
	    get_u32(l, "call_timeout_ms", &lim->call_timeout_ms, err, errlen) < 0 ||
	    get_u64(l, "output_bytes", &lim->output_bytes, err, errlen) < 0 ||
	    get_u32(l, "idle_ttl_ms", &lim->idle_ttl_ms, err, errlen) < 0)
		return -EINVAL;
	*ret = lim;
	return 0;
}

/* {"K": "V", ...} as protobuf map entries (SessionOpen and ExecInput share the layout). */
static int
get_env(json_t *o, struct scratch *s, size_t *ret_n, void ***ret, bool exec, char *err,
        size_t errlen)
{
	json_t *e = json_object_get(o, "env");
	if (!e || json_is_null(e))
		return 0;
	if (!json_is_object(e) || json_object_size(e) > 48) {
		snprintf(err, errlen, "\"env\" must be an object of at most 48 strings");
		return -EINVAL;
	}
	size_t n = json_object_size(e), i = 0;
	void **arr = scratch_alloc(s, n * sizeof *arr);
	Kiln__ExecInput__EnvEntry *xe = exec ? scratch_alloc(s, n * sizeof *xe) : NULL;
	Kiln__SessionOpen__EnvEntry *se = exec ? NULL : scratch_alloc(s, n * sizeof *se);
	const char *k;
	json_t *v;
	json_object_foreach(e, k, v)
	{
		if (!json_is_string(v)) {
			snprintf(err, errlen, "env.%s must be a string", k);
			return -EINVAL;
		}
		if (exec) {
			kiln__exec_input__env_entry__init(&xe[i]);
			xe[i].key = (char *)k;
			xe[i].value = (char *)json_string_value(v);
			arr[i] = &xe[i];
		} else {
			kiln__session_open__env_entry__init(&se[i]);
			se[i].key = (char *)k;
			se[i].value = (char *)json_string_value(v);
			arr[i] = &se[i];
		}
		i++;
	}
	*ret_n = n;
	*ret = arr;
	return 0;
}

/* view_range: [start, end] */
static int
get_range(json_t *in, struct scratch *s, size_t *ret_n, int64_t **ret, char *err, size_t errlen)
{
	json_t *r = json_object_get(in, "view_range");
	if (!r || json_is_null(r))
		return 0;
	if (!json_is_array(r) || json_array_size(r) != 2 ||
	    !json_is_integer(json_array_get(r, 0)) || !json_is_integer(json_array_get(r, 1))) {
		snprintf(err, errlen, "input.view_range must be [start, end]");
		return -EINVAL;
	}
	int64_t *v = scratch_alloc(s, 2 * sizeof *v);
	v[0] = json_integer_value(json_array_get(r, 0));
	v[1] = json_integer_value(json_array_get(r, 1));
	*ret_n = 2;
	*ret = v;
	return 0;
}

static int
fill_exec(Kiln__ToolCall *tc, json_t *in, struct scratch *s, char *err, size_t errlen)
{
	Kiln__ExecInput *x = scratch_alloc(s, sizeof *x);
	kiln__exec_input__init(x);
	json_t *argv = json_object_get(in, "argv");
	if (!json_is_array(argv) || !json_array_size(argv)) {
		snprintf(err, errlen, "input.argv must be a non-empty array of strings");
		return -EINVAL;
	}
	x->n_argv = json_array_size(argv);
	x->argv = scratch_alloc(s, x->n_argv * sizeof *x->argv);
	for (size_t i = 0; i < x->n_argv; i++) {
		if (!json_is_string(json_array_get(argv, i))) {
			snprintf(err, errlen, "input.argv[%zu] must be a string", i);
			return -EINVAL;
		}
		x->argv[i] = (char *)json_string_value(json_array_get(argv, i));
	}
	const char *in_stdin = NULL;
	if (get_env(in, s, &x->n_env, (void ***)&x->env, true, err, errlen) < 0 ||
	    opt_str(in, "cwd", &x->cwd, err, errlen) < 0 ||
	    get_str(in, "stdin", &in_stdin, err, errlen) < 0)
		return -EINVAL;
	if (in_stdin) {
		x->stdin.data = (uint8_t *)in_stdin;
		x->stdin.len = strlen(in_stdin);
	}
	tc->tool_case = KILN__TOOL_CALL__TOOL_EXEC;
	tc->exec = x;
	return 0;
}

static int
fill_file_tool(Kiln__ToolCall *tc, const char *tool, json_t *in, struct scratch *s, char *err,
               size_t errlen)
{
	if (!strcmp(tool, "read")) {
		Kiln__ReadInput *r = scratch_alloc(s, sizeof *r);
		kiln__read_input__init(r);
		tc->tool_case = KILN__TOOL_CALL__TOOL_READ;
		tc->read = r;
		if (need_str(in, "file_path", &r->file_path, err, errlen) < 0)
			return -EINVAL;
		return get_range(in, s, &r->n_view_range, &r->view_range, err, errlen);
	}
	if (!strcmp(tool, "write")) {
		Kiln__WriteInput *w = scratch_alloc(s, sizeof *w);
		kiln__write_input__init(w);
		char *content;
		if (need_str(in, "file_path", &w->file_path, err, errlen) < 0 ||
		    need_str(in, "content", &content, err, errlen) < 0)
			return -EINVAL;
		w->content.data = (uint8_t *)content;
		w->content.len = strlen(content);
		tc->tool_case = KILN__TOOL_CALL__TOOL_WRITE;
		tc->write = w;
		return 0;
	}
	if (!strcmp(tool, "edit")) {
		Kiln__EditInput *e = scratch_alloc(s, sizeof *e);
		kiln__edit_input__init(e);
		tc->tool_case = KILN__TOOL_CALL__TOOL_EDIT;
		tc->edit = e;
		if (need_str(in, "file_path", &e->file_path, err, errlen) < 0 ||
		    need_str(in, "old_string", &e->old_string, err, errlen) < 0 ||
		    need_str(in, "new_string", &e->new_string, err, errlen) < 0 ||
		    get_bool(in, "replace_all", &e->replace_all, err, errlen) < 0)
			return -EINVAL;
		return 0;
	}
	char **pattern, **path;
	if (!strcmp(tool, "glob")) {
		Kiln__GlobInput *g = scratch_alloc(s, sizeof *g);
		kiln__glob_input__init(g);
		tc->tool_case = KILN__TOOL_CALL__TOOL_GLOB;
		tc->glob = g;
		pattern = &g->pattern;
		path = &g->path;
	} else if (!strcmp(tool, "grep")) {
		Kiln__GrepInput *g = scratch_alloc(s, sizeof *g);
		kiln__grep_input__init(g);
		tc->tool_case = KILN__TOOL_CALL__TOOL_GREP;
		tc->grep = g;
		pattern = &g->pattern;
		path = &g->path;
	} else {
		snprintf(err, errlen,
		         "unknown tool \"%s\" (bash, exec, read, write, edit, glob, grep)", tool);
		return -EINVAL;
	}
	if (need_str(in, "pattern", pattern, err, errlen) < 0 ||
	    opt_str(in, "path", path, err, errlen) < 0)
		return -EINVAL;
	return 0;
}

static int
fill_call(Kiln__ToolCall *tc, const ps_op *op, const char *session, struct scratch *s, char *err,
          size_t errlen)
{
	const char *tool;
	json_t *in = json_object_get(op->spec, "input");
	if (get_str(op->spec, "tool", &tool, err, errlen) < 0)
		return -EINVAL;
	if (!tool || !json_is_object(in)) {
		snprintf(err, errlen, "a call needs \"tool\" and an \"input\" object");
		return -EINVAL;
	}
	/* The plane's id doubles as the client job id: the scheduler refuses a second
	 * call with the same id while the first runs, and node logs name it. */
	tc->job_id = op->plane_id;
	tc->session_id = (char *)(session ? session : "");
	if (get_u32(op->spec, "timeout_ms", &tc->timeout_ms, err, errlen) < 0 ||
	    opt_str(op->spec, "template", &tc->template_, err, errlen) < 0 ||
	    get_limits(op->spec, s, &tc->limits, err, errlen) < 0)
		return -EINVAL;
	if (!strcmp(tool, "bash")) {
		Kiln__BashInput *b = scratch_alloc(s, sizeof *b);
		kiln__bash_input__init(b);
		tc->tool_case = KILN__TOOL_CALL__TOOL_BASH;
		tc->bash = b;
		if (need_str(in, "command", &b->command, err, errlen) < 0 ||
		    get_bool(in, "restart", &b->restart, err, errlen) < 0 ||
		    get_u32(in, "timeout_ms", &b->timeout_ms, err, errlen) < 0)
			return -EINVAL;
		return 0;
	}
	if (!strcmp(tool, "exec"))
		return fill_exec(tc, in, s, err, errlen);
	return fill_file_tool(tc, tool, in, s, err, errlen);
}

int
ps_request_encode(const ps_op *op, const char *session, uint8_t **ret, size_t *ret_len, char *err,
                  size_t errlen)
{
	struct scratch s = {.n = 0};
	Kiln__ClientRequest cr = KILN__CLIENT_REQUEST__INIT;
	Kiln__SessionOpen so = KILN__SESSION_OPEN__INIT;
	Kiln__SessionClose sc = KILN__SESSION_CLOSE__INIT;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	int r = 0;
	err[0] = 0;
	if (op->kind == PS_OPEN) {
		cr.op_case = KILN__CLIENT_REQUEST__OP_OPEN;
		cr.open = &so;
		if (opt_str(op->spec, "template", &so.template_, err, errlen) < 0 ||
		    get_limits(op->spec, &s, &so.limits, err, errlen) < 0 ||
		    get_env(op->spec, &s, &so.n_env, (void ***)&so.env, false, err, errlen) < 0)
			r = -EINVAL;
	} else if (op->kind == PS_CLOSE) {
		cr.op_case = KILN__CLIENT_REQUEST__OP_CLOSE;
		cr.close = &sc;
		sc.session_id = (char *)(session ? session : "");
	} else {
		cr.op_case = KILN__CLIENT_REQUEST__OP_CALL;
		cr.call = &tc;
		r = fill_call(&tc, op, session, &s, err, errlen);
	}
	/* A token in the request itself: the gateway must ignore it (it acts as
	 * the identity's tenant only); traces use it to prove that. */
	if (r == 0 && get_str(op->spec, "token", (const char **)&cr.token, err, errlen) < 0)
		r = -EINVAL;
	if (!cr.token)
		cr.token = (char *)"";
	if (r == 0) {
		Kiln__TunnelRequest tr = KILN__TUNNEL_REQUEST__INIT;
		tr.plane_id = op->plane_id;
		tr.identity = op->identity;
		tr.request = &cr;
		Kiln__Envelope e = KILN__ENVELOPE__INIT;
		e.msg_case = KILN__ENVELOPE__MSG_TUNNEL_REQUEST;
		e.tunnel_request = &tr;
		r = kl_env_encode(&e, ret, ret_len);
		if (r < 0)
			snprintf(err, errlen, "request too large");
	}
	scratch_free(&s);
	return r;
}

/* ---- outcomes ---- */

json_t *
ps_local_error(const char *code, const char *msg)
{
	json_t *o = json_object();
	json_object_set_new(o, "code", json_string(code));
	json_object_set_new(o, "message", json_string(msg));
	json_object_set_new(o, "local", json_true());
	return o;
}

/* Outputs are kept whole up to this; the state file holds every result. */
#define KEEP_OUTPUT (64u << 10)

json_t *
ps_reply_json(const Kiln__ClientReply *r)
{
	switch (r->reply_case) {
	case KILN__CLIENT_REPLY__REPLY_RESULT: {
		Kiln__ToolResult cut = *r->result;
		cut.output.len = KL_MIN(cut.output.len, KEEP_OUTPUT);
		cut.stderr.len = KL_MIN(cut.stderr.len, KEEP_OUTPUT);
		return cli_json_result(&cut);
	}
	case KILN__CLIENT_REPLY__REPLY_OPENED:
		return cli_json_opened(r->opened);
	case KILN__CLIENT_REPLY__REPLY_CLOSED: {
		json_t *o = json_object();
		json_object_set_new(o, "code", json_string(kl_code_name(r->closed->code)));
		json_object_set_new(o, "message", json_string(r->closed->message));
		json_object_set_new(o, "session_id", json_string(r->closed->session_id));
		return o;
	}
	case KILN__CLIENT_REPLY__REPLY_ERROR: {
		json_t *o = json_object();
		json_object_set_new(o, "code", json_string(kl_code_name(r->error->code)));
		json_object_set_new(o, "message", json_string(r->error->message));
		json_object_set_new(o, "retry_after_ms", json_integer(r->error->retry_after_ms));
		return o;
	}
	default:
		return ps_local_error("INTERNAL", "the gateway's reply carries no known answer");
	}
}

int
ps_expect_check(const ps_op *op, char *why, size_t whylen)
{
	json_t *ex = json_object_get(op->spec, "expect");
	const char *k;
	json_t *v;
	int bad = 0;
	why[0] = 0;
	if (!json_is_object(ex) || !op->result)
		return 0;
	json_object_foreach(ex, k, v)
	{
		bool ok;
		if (!strcmp(k, "output_contains")) {
			const char *out = json_string_value(json_object_get(op->result, "output"));
			ok = out && json_is_string(v) && strstr(out, json_string_value(v));
		} else {
			ok = json_equal(json_object_get(op->result, k), v);
		}
		if (ok)
			continue;
		if (!bad++) {
			char *want = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			char *got = json_dumps(json_object_get(op->result, k) ?: json_null(),
			                       JSON_ENCODE_ANY | JSON_COMPACT);
			snprintf(why, whylen, "trace line %d: expected %s %s, got %.300s", op->line,
			         k, want ? want : "?", got ? got : "?");
			free(want);
			free(got);
		}
	}
	return bad;
}

/* ---- the trace ---- */

static int
kind_of(const char *s)
{
	return !s                    ? 0
	       : !strcmp(s, "open")  ? PS_OPEN
	       : !strcmp(s, "call")  ? PS_CALL
	       : !strcmp(s, "close") ? PS_CLOSE
	                             : 0;
}

/* The index of the open that defines name ($name), or -1. */
static int
find_open(const ps_trace *t, const char *name)
{
	for (int i = 0; i < t->nops; i++)
		if (t->ops[i].kind == PS_OPEN && t->ops[i].as && !strcmp(t->ops[i].as, name))
			return i;
	return -1;
}

/* The previous op on the same session (the open that defines $name counts), or
 * -1: an agent's calls on one session run one after the other. */
static int
find_prev(const ps_trace *t, const ps_op *op)
{
	if (op->kind == PS_OPEN || !op->session)
		return -1;
	for (int i = t->nops - 1; i >= 0; i--) {
		const ps_op *o = &t->ops[i];
		if (o->kind != PS_OPEN && o->session && !strcmp(o->session, op->session))
			return i;
		if (o->kind == PS_OPEN && o->as && op->session[0] == '$' &&
		    !strcmp(o->as, op->session + 1))
			return i;
	}
	return -1;
}

static int
parse_op(ps_trace *t, json_t *j, int line, const char *dflt_identity, char *err, size_t errlen)
{
	ps_op op = {.line = line, .open_idx = -1, .prev_idx = -1};
	const char *kind, *ident, *as, *sess;
	char e[256] = "";
	if (get_str(j, "op", &kind, e, sizeof e) < 0 ||
	    get_str(j, "identity", &ident, e, sizeof e) < 0 ||
	    get_str(j, "as", &as, e, sizeof e) < 0 ||
	    get_str(j, "session", &sess, e, sizeof e) < 0 ||
	    get_u64(j, "at_ms", &op.at_ms, e, sizeof e) < 0)
		goto bad;
	if (!(op.kind = kind_of(kind))) {
		snprintf(e, sizeof e, "\"op\" must be \"open\", \"call\" or \"close\"");
		goto bad;
	}
	if (sess && sess[0] == '$') {
		op.open_idx = find_open(t, sess + 1);
		if (op.open_idx < 0) {
			snprintf(e, sizeof e,
			         "session \"%s\" is not opened (\"as\") on an earlier line", sess);
			goto bad;
		}
		if (!ident)
			ident = t->ops[op.open_idx].identity;
	}
	if (op.kind == PS_CLOSE && !sess) {
		snprintf(e, sizeof e, "close needs \"session\"");
		goto bad;
	}
	if (as && find_open(t, as) >= 0) {
		snprintf(e, sizeof e, "\"as\": \"%s\" is opened twice", as);
		goto bad;
	}
	ident = ident ? ident : dflt_identity;
	if (!ident) {
		snprintf(e, sizeof e, "no \"identity\" (and no --identity default)");
		goto bad;
	}
	op.identity = kl_xstrdup(ident);
	op.as = op.kind == PS_OPEN && as ? kl_xstrdup(as) : NULL;
	op.session = op.kind != PS_OPEN && sess ? kl_xstrdup(sess) : NULL;
	op.spec = json_incref(j);
	op.prev_idx = find_prev(t, &op);
	/* Validate the input now: a bad line fails the load, not the run. */
	uint8_t *buf;
	size_t len;
	if (ps_request_encode(&op, "validate", &buf, &len, e, sizeof e) < 0) {
		free(op.identity);
		free(op.as);
		free(op.session);
		json_decref(op.spec);
		goto bad;
	}
	free(buf);
	t->ops = kl_xrealloc(t->ops, sizeof *t->ops * (size_t)(t->nops + 1));
	t->ops[t->nops++] = op;
	return 0;
bad:
	snprintf(err, errlen, "trace line %d: %s", line, e);
	return -EINVAL;
}

int
ps_trace_load(const char *path, const char *identity, ps_trace *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof *t);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "trace %s: %s", path, strerror(errno));
		return -errno;
	}
	char *line = NULL, *all = NULL;
	size_t cap = 0, alllen = 0;
	ssize_t n;
	int no = 0, r = 0;
	while (r == 0 && (n = getline(&line, &cap, f)) >= 0) {
		no++;
		all = kl_xrealloc(all, alllen + (size_t)n + 1);
		memcpy(all + alllen, line, (size_t)n);
		alllen += (size_t)n;
		char *p = line + strspn(line, " \t\r\n");
		if (!*p || *p == '#')
			continue;
		json_error_t je;
		json_t *j = json_loads(p, 0, &je);
		if (!j || !json_is_object(j)) {
			snprintf(err, errlen, "trace %s line %d: %s", path, no,
			         j ? "not a JSON object" : je.text);
			r = -EINVAL;
		} else {
			r = parse_op(t, j, no, identity, err, errlen);
		}
		json_decref(j);
	}
	fclose(f);
	free(line);
	kl_audit_digest(all ? all : "", alllen, t->digest);
	free(all);
	if (r == 0 && !t->nops) {
		snprintf(err, errlen, "trace %s has no operations", path);
		r = -EINVAL;
	}
	if (r < 0)
		ps_trace_free(t);
	return r;
}

void
ps_trace_free(ps_trace *t)
{
	for (int i = 0; i < t->nops; i++) {
		ps_op *o = &t->ops[i];
		free(o->identity);
		free(o->as);
		free(o->session);
		json_decref(o->spec);
		json_decref(o->result);
	}
	free(t->ops);
	t->ops = NULL;
	t->nops = 0;
}
