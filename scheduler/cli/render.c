/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How the kiln CLI shows outcomes: a tool result becomes the bytes and exit
 * status a local command would have produced, plus short "kiln: ..." notes
 * for what a local command cannot say (a timeout, the OOM killer, a lost
 * node); a failure becomes one actionable message and a sysexits-style exit
 * code; --json turns either into a JSON object (jansson). Pure functions of
 * their inputs and the FILE pointers in struct cli, so they are unit-tested.
 */
#include "cli.h"

#include "kl_proto.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>

/* ---- exit codes ---- */

/* The exit code of a Kiln__Code that is not a tool outcome. */
static int
code_exit(int code)
{
	switch (code) {
	case KILN__CODE__OK:
		return CLI_EXIT_OK;
	case KILN__CODE__TOOL_ERROR:
		return CLI_EXIT_TOOL;
	case KILN__CODE__INVALID_ARGUMENT:
		return CLI_EXIT_DATAERR;
	case KILN__CODE__NOT_FOUND:
		return CLI_EXIT_NOTFOUND;
	case KILN__CODE__PERMISSION_DENIED:
	case KILN__CODE__UNAUTHENTICATED:
		return CLI_EXIT_NOPERM;
	case KILN__CODE__RESOURCE_EXHAUSTED:
		return CLI_EXIT_TEMPFAIL;
	case KILN__CODE__DEADLINE_EXCEEDED:
		return CLI_EXIT_TIMEOUT;
	case KILN__CODE__CANCELLED:
		return CLI_EXIT_CANCELLED;
	case KILN__CODE__NODE_LOST:
		return CLI_EXIT_IOERR;
	case KILN__CODE__UNAVAILABLE:
	case KILN__CODE__FAILED_PRECONDITION:
		return CLI_EXIT_UNAVAILABLE;
	case KILN__CODE__VERSION_MISMATCH:
		return CLI_EXIT_PROTOCOL;
	default:
		return CLI_EXIT_SOFTWARE;
	}
}

int
cli_result_exit(const Kiln__ToolResult *r, bool process)
{
	if (r->code != KILN__CODE__OK && r->code != KILN__CODE__TOOL_ERROR)
		return code_exit(r->code);
	if (!process)
		return r->code == KILN__CODE__OK ? CLI_EXIT_OK : CLI_EXIT_TOOL;
	if (r->signal > 0)
		return 128 + (r->signal & 0x7f);
	if (r->exit_code >= 0)
		return r->exit_code & 0xff;
	/* Neither exited nor signalled: the command never ran. */
	return CLI_EXIT_SOFTWARE;
}

int
cli_error_exit(const kiln_error *e)
{
	if (e->code >= 0)
		return code_exit(e->code);
	switch (e->err) {
	case -ECONNREFUSED:
	case -ENOTCONN:
	case -EHOSTUNREACH:
		return CLI_EXIT_UNAVAILABLE;
	case -EINVAL:
	case -ENOTSUP:
		return e->outcome_unknown ? CLI_EXIT_IOERR : CLI_EXIT_USAGE;
	case -EPROTO:
		return CLI_EXIT_PROTOCOL;
	case -EMSGSIZE:
		return CLI_EXIT_DATAERR;
	case -ECANCELED:
		return e->outcome_unknown ? CLI_EXIT_IOERR : CLI_EXIT_CANCELLED;
	default:
		return e->outcome_unknown ? CLI_EXIT_IOERR : CLI_EXIT_SOFTWARE;
	}
}

/* ---- failures ---- */

/* Bytes of the valid UTF-8 sequence at p (NUL-terminated; never read past
 * the NUL), 0 if it is not one: no overlongs, surrogates or > U+10FFFF. */
static size_t
utf8_seq(const unsigned char *p)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t k;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		k = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		k = 3, lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		k = 4, lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;
	else
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < k; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return k;
}

/* s with every byte that is not part of valid UTF-8 replaced by U+FFFD (heap). */
static char *
utf8_lossy(const char *s)
{
	char *out = kl_xmalloc(3 * strlen(s) + 1), *o = out;
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t k = utf8_seq(p);
		o = k ? mempcpy(o, p, k) : mempcpy(o, "\xef\xbf\xbd", 3);
		p += k ? k : 1;
	}
	*o = 0;
	return out;
}

/*
 * A JSON string for text from the wire. jansson refuses invalid UTF-8, and
 * json_object_set_new then drops the field without a word: `kiln --json`
 * printed results without "message" when an error quoted a client's bytes
 * (found by fuzz_envelope). Such text is kept, with U+FFFD for the bad bytes.
 */
static json_t *
json_text(const char *s)
{
	json_t *j = json_string(s ? s : "");
	if (!j) {
		char *t = utf8_lossy(s);
		j = json_string(t);
		free(t);
	}
	return j;
}

json_t *
cli_json_error(const kiln_error *e, int exit_code)
{
	json_t *o = json_object();
	json_object_set_new(o, "code",
	                    json_string(e->code >= 0 ? kl_code_name(e->code) : "CLIENT_ERROR"));
	const char *en = e->err ? strerrorname_np(-e->err) : NULL;
	if (en)
		json_object_set_new(o, "errno", json_string(en));
	json_object_set_new(o, "message", json_text(e->message));
	json_object_set_new(o, "retry_after_ms", json_integer(e->retry_after_ms));
	json_object_set_new(o, "outcome_unknown", json_boolean(e->outcome_unknown));
	json_object_set_new(o, "exit_code", json_integer(exit_code));
	json_t *w = json_object();
	json_object_set_new(w, "error", o);
	return w;
}

/* Whether the scheduler's message already says it (no need to repeat a hint). */
static bool
mentions(const kiln_error *e, const char *what)
{
	return strcasestr(e->message, what) != NULL;
}

/* What to do about it: the sentence after the message. */
static void
print_hint(cli *cl, const kiln_error *e, enum cli_ctx ctx)
{
	FILE *f = cl->err;
	if (e->code == KILN_NO_ANSWER) {
		if (e->err == -ECONNREFUSED)
			fprintf(f, " Start a local cluster with `kiln dev --no-demo`, or point "
			           "--scheduler / KILN_SCHEDULER at one.");
		else if (e->err == -ENOTCONN)
			fprintf(f, " Is the scheduler still running? Check --scheduler / "
			           "KILN_SCHEDULER.");
		else if (e->outcome_unknown && ctx == CLI_CTX_CALL)
			fprintf(f, " It may or may not have run: check the session's state "
			           "before retrying.");
		return;
	}
	switch (e->code) {
	case KILN__CODE__UNAUTHENTICATED:
		fprintf(f, " The token came from %s.", cl->token_from ? cl->token_from : "nowhere");
		if (!mentions(e, "--token"))
			fprintf(f, " Pass a tenant token with --token TOKEN, --token-file FILE or "
			           "KILN_TOKEN.");
		if (cl->token && !strcmp(cl->token, CLI_DEV_TOKEN))
			fprintf(f, " The default token '%s' is accepted only by `kiln dev`.",
			        CLI_DEV_TOKEN);
		break;
	case KILN__CODE__PERMISSION_DENIED:
		if (ctx == CLI_CTX_NODE && !mentions(e, "admin token"))
			fprintf(f, " Node administration needs the scheduler's admin token "
			           "(--token or --token-file).");
		break;
	case KILN__CODE__RESOURCE_EXHAUSTED:
		if (e->retry_after_ms && !mentions(e, "retry"))
			fprintf(f, " Retry after %" PRIu32 " ms.", e->retry_after_ms);
		else if (!mentions(e, "retry"))
			fprintf(f, " Retry later.");
		break;
	case KILN__CODE__NOT_FOUND:
		if (ctx == CLI_CTX_SESSION || ctx == CLI_CTX_CALL)
			fprintf(f, " `kiln session list` shows open sessions; `kiln session open` "
			           "starts one.");
		else if (ctx == CLI_CTX_NODE)
			fprintf(f, " `kiln status` lists the nodes.");
		else if (ctx == CLI_CTX_JOB)
			fprintf(f, " The call may have finished already.");
		break;
	case KILN__CODE__UNAVAILABLE:
		fprintf(f, " `kiln status` shows whether any node is ready.");
		break;
	case KILN__CODE__NODE_LOST:
		if (!mentions(e, "outcome"))
			fprintf(f, " The call's outcome is unknown: it may have had effects.");
		break;
	case KILN__CODE__VERSION_MISMATCH:
		fprintf(f, " Use a kiln CLI from the scheduler's release.");
		break;
	case KILN__CODE__INTERNAL:
		fprintf(f, " This is a bug in kiln; the scheduler's log has details.");
		break;
	}
}

/* Who refused, so the message reads as a sentence; NULL: the code says it. */
static const char *
error_lead(int code)
{
	switch (code) {
	case KILN__CODE__UNAUTHENTICATED:
		return "the scheduler refused the token";
	case KILN__CODE__PERMISSION_DENIED:
		return "permission denied";
	case KILN__CODE__RESOURCE_EXHAUSTED:
		return "the cluster is at capacity";
	case KILN__CODE__UNAVAILABLE:
		return "the cluster cannot take this now";
	case KILN__CODE__NODE_LOST:
		return "the node was lost";
	case KILN__CODE__INTERNAL:
		return "the scheduler failed";
	default:
		return NULL;
	}
}

int
cli_fail(cli *cl, const kiln_error *e, enum cli_ctx ctx)
{
	int code = cli_error_exit(e);
	const char *msg = e->message[0] ? e->message : "failed";
	fflush(cl->out);
	fputs("kiln: ", cl->err);
	if (e->code >= 0) {
		/* libkiln's "CODE: text" becomes "lead (CODE): text". */
		const char *name = kl_code_name(e->code), *lead = error_lead(e->code);
		size_t n = strlen(name);
		if (!strncmp(msg, name, n) && !strncmp(msg + n, ": ", 2))
			msg += n + 2;
		if (lead)
			fprintf(cl->err, "%s (%s): ", lead, name);
		else
			fprintf(cl->err, "%s: ", name);
	}
	size_t len = strlen(msg);
	fprintf(cl->err, "%s%s", msg, len && msg[len - 1] == '.' ? "" : ".");
	print_hint(cl, e, ctx);
	fputc('\n', cl->err);
	if (cl->json)
		cli_json_print(cl, cli_json_error(e, code));
	return code;
}

int
cli_failf(cli *cl, int code, const char *fmt, ...)
{
	kiln_error e = {.code = KILN_NO_ANSWER};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.message, sizeof e.message, fmt, ap);
	va_end(ap);
	fflush(cl->out);
	fprintf(cl->err, "kiln: %s\n", e.message);
	if (cl->json)
		cli_json_print(cl, cli_json_error(&e, code));
	return code;
}

/* ---- results ---- */

static void note(cli *cl, const char *fmt, ...) KL_PRINTF(2, 3);

static void
note(cli *cl, const char *fmt, ...)
{
	va_list ap;
	fflush(cl->out);
	fputs("kiln: ", cl->err);
	va_start(ap, fmt);
	vfprintf(cl->err, fmt, ap);
	va_end(ap);
	fputc('\n', cl->err);
}

static const char *
msg_or(const Kiln__ToolResult *r, const char *dflt)
{
	return r->message && *r->message ? r->message : dflt;
}

/* Notes for a process that ran: how it ended, when a local shell would not say. */
static void
process_notes(cli *cl, const Kiln__ToolResult *r, int tool_case)
{
	if (tool_case == KILN__TOOL_CALL__TOOL_EXEC && r->truncated) {
		if (r->output_total > r->output.len)
			note(cl,
			     "output truncated: kept the last %zu of %" PRIu64 " bytes of stdout",
			     r->output.len, r->output_total);
		if (r->stderr_total > r->stderr.len)
			note(cl,
			     "output truncated: kept the last %zu of %" PRIu64 " bytes of stderr",
			     r->stderr.len, r->stderr_total);
	}
	if (r->oom_killed)
		note(cl, "%s", msg_or(r, "killed by the out-of-memory killer"));
	else if (r->signal > 0)
		note(cl, "the command was killed by signal %d (SIG%s)", r->signal,
		     sigabbrev_np(r->signal) ? sigabbrev_np(r->signal) : "?");
	else if (r->exit_code < 0)
		note(cl, "the command did not run: %s", msg_or(r, "no reason given"));
	else if (r->is_error && r->message && *r->message)
		note(cl, "%s", r->message);
}

/* A result whose code is about the call rather than the tool: explain like a failure. */
static int
call_failed(cli *cl, const Kiln__ToolResult *r, bool process)
{
	switch (r->code) {
	case KILN__CODE__DEADLINE_EXCEEDED:
		note(cl, "%s%s", msg_or(r, "timed out"),
		     r->output.len || r->stderr.len ? " (partial output above)" : "");
		return CLI_EXIT_TIMEOUT;
	case KILN__CODE__CANCELLED:
		note(cl, "%s", msg_or(r, "cancelled"));
		return CLI_EXIT_CANCELLED;
	default: {
		kiln_error e = {.code = r->code, .retry_after_ms = r->retry_after_ms};
		e.err = kiln_code_errno(r->code);
		e.outcome_unknown = r->code == KILN__CODE__NODE_LOST;
		snprintf(e.message, sizeof e.message, "%s: %s", kl_code_name(r->code),
		         msg_or(r, "(no message)"));
		bool json = cl->json;
		cl->json = false; /* the caller prints the whole result */
		int code = cli_fail(cl, &e, CLI_CTX_CALL);
		cl->json = json;
		return code;
	}
	}
}

int
cli_result_print(cli *cl, const Kiln__ToolResult *r, int tool_case)
{
	bool process =
	        tool_case == KILN__TOOL_CALL__TOOL_EXEC || tool_case == KILN__TOOL_CALL__TOOL_BASH;
	int code = cli_result_exit(r, process);
	if (cl->json) {
		cli_json_print(cl, cli_json_result(r));
		return code;
	}
	if (r->output.len)
		fwrite(r->output.data, 1, r->output.len, cl->out);
	if (r->stderr.len) {
		fflush(cl->out);
		fwrite(r->stderr.data, 1, r->stderr.len, cl->err);
	}
	if (r->code != KILN__CODE__OK && r->code != KILN__CODE__TOOL_ERROR)
		return call_failed(cl, r, process);
	if (process)
		process_notes(cl, r, tool_case);
	else if (r->code != KILN__CODE__OK)
		note(cl, "%s", msg_or(r, "the tool failed"));
	/* Confirmations (write, edit, bash restart) are the result when there is no output. */
	if (!r->is_error && !r->output.len && r->message && *r->message)
		fprintf(cl->out, "%s\n", r->message);
	fflush(cl->out);
	return code;
}

/* ---- JSON ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
cli_base64(const void *data, size_t len)
{
	const uint8_t *p = data;
	char *out = kl_xmalloc((len + 2) / 3 * 4 + 1), *o = out;
	size_t i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = b64[(v >> 6) & 63];
		*o++ = b64[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = 0;
	return out;
}

json_t *
cli_json_bytes(const void *data, size_t len, bool *ret_base64)
{
	/* jansson refuses invalid UTF-8 here: that is the validity check. */
	json_t *s = json_stringn(len ? data : "", len);
	*ret_base64 = s == NULL;
	if (s)
		return s;
	char *enc = cli_base64(data, len);
	s = json_string(enc);
	free(enc);
	return s;
}

static void
set_str(json_t *o, const char *key, const char *s)
{
	json_object_set_new(o, key, json_text(s));
}

static void
set_u64(json_t *o, const char *key, uint64_t v)
{
	/* json_int_t is signed 64-bit; counters never reach 2^63. */
	json_object_set_new(o, key, json_integer((json_int_t)v));
}

static void
set_bytes(json_t *o, const char *key, const ProtobufCBinaryData *b)
{
	bool base64;
	char enc[64];
	json_object_set_new(o, key, cli_json_bytes(b->data, b->len, &base64));
	snprintf(enc, sizeof enc, "%s_encoding", key);
	set_str(o, enc, base64 ? "base64" : "utf-8");
}

json_t *
cli_json_result(const Kiln__ToolResult *r)
{
	json_t *o = json_object();
	char id[24];
	/* Job ids use all 64 bits: a string survives JSON readers that use doubles. */
	snprintf(id, sizeof id, "%" PRIu64, r->job_id);
	set_str(o, "job_id", id);
	set_str(o, "code", kl_code_name(r->code));
	set_str(o, "message", r->message);
	json_object_set_new(o, "is_error", json_boolean(r->is_error));
	json_object_set_new(o, "exit_code", json_integer(r->exit_code));
	json_object_set_new(o, "signal", json_integer(r->signal));
	set_bytes(o, "output", &r->output);
	set_bytes(o, "stderr", &r->stderr);
	json_object_set_new(o, "truncated", json_boolean(r->truncated));
	set_u64(o, "output_total", r->output_total);
	set_u64(o, "stderr_total", r->stderr_total);
	set_u64(o, "duration_us", r->duration_us);
	set_u64(o, "queue_us", r->queue_us);
	set_u64(o, "cpu_usec", r->cpu_usec);
	set_u64(o, "peak_memory_bytes", r->peak_memory_bytes);
	json_object_set_new(o, "oom_killed", json_boolean(r->oom_killed));
	json_object_set_new(o, "timed_out", json_boolean(r->timed_out));
	json_object_set_new(o, "limits_enforced", json_boolean(r->limits_enforced));
	set_str(o, "node_id", r->node_id);
	set_u64(o, "retry_after_ms", r->retry_after_ms);
	set_u64(o, "replacements", r->replacements);
	return o;
}

json_t *
cli_json_limits(const Kiln__Limits *l)
{
	json_t *o = json_object();
	Kiln__Limits zero = KILN__LIMITS__INIT;
	if (!l)
		l = &zero;
	set_u64(o, "memory_bytes", l->memory_bytes);
	set_u64(o, "pids", l->pids);
	set_u64(o, "cpu_millicores", l->cpu_millicores);
	set_u64(o, "workspace_bytes", l->workspace_bytes);
	set_u64(o, "call_timeout_ms", l->call_timeout_ms);
	set_u64(o, "output_bytes", l->output_bytes);
	set_u64(o, "idle_ttl_ms", l->idle_ttl_ms);
	return o;
}

json_t *
cli_json_session(const Kiln__SessionInfo *s)
{
	json_t *o = json_object();
	set_str(o, "session_id", s->session_id);
	set_str(o, "tenant", s->tenant);
	set_str(o, "template", s->template_);
	json_object_set_new(o, "limits", cli_json_limits(s->limits));
	set_str(o, "node_id", s->node_id);
	set_u64(o, "created_unix_ms", s->created_unix_ms);
	set_u64(o, "last_used_unix_ms", s->last_used_unix_ms);
	set_u64(o, "calls", s->calls);
	return o;
}

json_t *
cli_json_opened(const Kiln__SessionOpened *op)
{
	json_t *o = json_object();
	set_str(o, "code", kl_code_name(op->code));
	set_str(o, "message", op->message);
	if (op->session) {
		set_str(o, "session_id", op->session->session_id);
		json_object_set_new(o, "session", cli_json_session(op->session));
	}
	json_object_set_new(o, "limits_enforced", json_boolean(op->limits_enforced));
	json_object_set_new(o, "warm", json_boolean(op->warm));
	set_u64(o, "claim_us", op->claim_us);
	set_u64(o, "retry_after_ms", op->retry_after_ms);
	return o;
}

json_t *
cli_json_sessions(const Kiln__SessionListReply *l)
{
	json_t *a = json_array();
	for (size_t i = 0; i < l->n_sessions; i++)
		json_array_append_new(a, cli_json_session(l->sessions[i]));
	json_t *o = json_object();
	json_object_set_new(o, "sessions", a);
	return o;
}

static json_t *
json_templates(Kiln__TemplateInfo **t, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_object();
		set_str(o, "name", t[i]->name);
		set_u64(o, "warm", t[i]->warm);
		set_u64(o, "target", t[i]->target);
		set_u64(o, "creating", t[i]->creating);
		json_object_set_new(o, "defaults", cli_json_limits(t[i]->defaults));
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *
json_node(const Kiln__NodeStatus *n)
{
	json_t *o = json_object();
	set_str(o, "node_id", n->node_id);
	set_str(o, "state", n->state);
	set_u64(o, "slots", n->slots);
	set_u64(o, "running", n->running);
	set_u64(o, "sessions", n->sessions);
	json_object_set_new(o, "templates", json_templates(n->templates, n->n_templates));
	json_t *labels = json_object();
	for (size_t i = 0; i < n->n_labels; i++) {
		char *k = utf8_lossy(n->labels[i]->key); /* keys must be UTF-8 too */
		set_str(labels, k, n->labels[i]->value);
		free(k);
	}
	json_object_set_new(o, "labels", labels);
	set_u64(o, "last_heartbeat_ms_ago", n->last_heartbeat_ms_ago);
	json_object_set_new(o, "limits_enforced", json_boolean(n->limits_enforced));
	set_u64(o, "calls_done", n->calls_done);
	return o;
}

static json_t *
json_tenant(const Kiln__TenantStatus *t)
{
	json_t *o = json_object();
	set_str(o, "name", t->name);
	set_u64(o, "weight", t->weight);
	set_u64(o, "sessions", t->sessions);
	set_u64(o, "max_sessions", t->max_sessions);
	set_u64(o, "inflight", t->inflight);
	set_u64(o, "max_inflight", t->max_inflight);
	set_u64(o, "queued", t->queued);
	set_u64(o, "calls_done", t->calls_done);
	set_u64(o, "rejected", t->rejected);
	return o;
}

json_t *
cli_json_status(const Kiln__StatusReply *s)
{
	json_t *o = json_object();
	set_str(o, "scheduler", s->scheduler);
	set_u64(o, "uptime_ms", s->uptime_ms);
	json_t *nodes = json_array();
	for (size_t i = 0; i < s->n_nodes; i++)
		json_array_append_new(nodes, json_node(s->nodes[i]));
	json_object_set_new(o, "nodes", nodes);
	json_t *tenants = json_array();
	for (size_t i = 0; i < s->n_tenants; i++)
		json_array_append_new(tenants, json_tenant(s->tenants[i]));
	json_object_set_new(o, "tenants", tenants);
	json_t *tot = json_object();
	set_u64(tot, "nodes", s->n_nodes);
	set_u64(tot, "sessions", s->sessions);
	set_u64(tot, "queued", s->queued);
	set_u64(tot, "inflight", s->inflight);
	set_u64(tot, "placements", s->placements);
	json_object_set_new(o, "totals", tot);
	return o;
}

void
cli_json_print(cli *cl, json_t *j)
{
	json_dumpf(j, cl->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', cl->out);
	fflush(cl->out);
	json_decref(j);
}

/* ---- tables ---- */

#define TABLE_MAX_COLS 10

/* Rows of heap strings; printed with every column padded to its widest cell. */
typedef struct table {
	int ncols, nrows, cap;
	char **cells;
} table;

static void
table_row(table *t, ...)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 8;
		t->cells =
		        kl_xrealloc(t->cells, (size_t)t->cap * (size_t)t->ncols * sizeof(char *));
	}
	va_list ap;
	va_start(ap, t);
	for (int c = 0; c < t->ncols; c++)
		t->cells[t->nrows * t->ncols + c] = kl_xstrdup(va_arg(ap, const char *));
	va_end(ap);
	t->nrows++;
}

static void
table_print(table *t, FILE *f)
{
	size_t w[TABLE_MAX_COLS] = {0};
	for (int r = 0; r < t->nrows; r++)
		for (int c = 0; c < t->ncols; c++)
			w[c] = KL_MAX(w[c], strlen(t->cells[r * t->ncols + c]));
	for (int r = 0; r < t->nrows; r++) {
		for (int c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			if (c == t->ncols - 1)
				fprintf(f, "%s\n", s);
			else
				fprintf(f, "%-*s  ", (int)w[c], s);
		}
	}
	for (int i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* "1.5s", "42s", "3m", "2h05m", "3d" */
static void
fmt_ms(char *buf, size_t len, uint64_t ms)
{
	if (ms < 10000)
		snprintf(buf, len, "%.1fs", (double)ms / 1000);
	else if (ms < 120000)
		snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
	else if (ms < 3600000)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else if (ms < 172800000)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", ms / 3600000, ms / 60000 % 60);
	else
		snprintf(buf, len, "%" PRIu64 "d", ms / 86400000);
}

/* "3/100", or "3" when there is no maximum. */
static void
fmt_of(char *buf, size_t len, uint64_t n, uint64_t max)
{
	if (max)
		snprintf(buf, len, "%" PRIu64 "/%" PRIu64, n, max);
	else
		snprintf(buf, len, "%" PRIu64, n);
}

static char *
fmt_templates(Kiln__TemplateInfo **t, size_t n)
{
	char *s = kl_xstrdup(n ? "" : "-");
	for (size_t i = 0; i < n; i++) {
		char creating[24] = "";
		if (t[i]->creating)
			snprintf(creating, sizeof creating, " (+%u)", t[i]->creating);
		char *next = kl_xasprintf("%s%s%s %u/%u%s", s, i ? ", " : "", t[i]->name,
		                          t[i]->warm, t[i]->target, creating);
		free(s);
		s = next;
	}
	return s;
}

static void
nodes_print(cli *cl, const Kiln__StatusReply *s)
{
	table t = {.ncols = 9};
	table_row(&t, "NODE", "STATE", "SLOTS", "RUNNING", "SESSIONS", "WARM/TARGET", "HEARTBEAT",
	          "LIMITS", "CALLS");
	for (size_t i = 0; i < s->n_nodes; i++) {
		const Kiln__NodeStatus *n = s->nodes[i];
		char slots[16], running[16], sessions[16], hb[32], calls[24];
		snprintf(slots, sizeof slots, "%u", n->slots);
		snprintf(running, sizeof running, "%u", n->running);
		snprintf(sessions, sizeof sessions, "%u", n->sessions);
		fmt_ms(hb, sizeof hb - 4, n->last_heartbeat_ms_ago);
		strcat(hb, " ago");
		snprintf(calls, sizeof calls, "%" PRIu64, n->calls_done);
		char *tpl = fmt_templates(n->templates, n->n_templates);
		table_row(&t, n->node_id, n->state, slots, running, sessions, tpl, hb,
		          n->limits_enforced ? "enforced" : "NOT enforced", calls);
		free(tpl);
	}
	table_print(&t, cl->out);
}

static void
tenants_print(cli *cl, const Kiln__StatusReply *s)
{
	table t = {.ncols = 7};
	table_row(&t, "TENANT", "WEIGHT", "SESSIONS", "INFLIGHT", "QUEUED", "DONE", "REJECTED");
	for (size_t i = 0; i < s->n_tenants; i++) {
		const Kiln__TenantStatus *x = s->tenants[i];
		char w[16], ses[32], inf[32], q[16], done[24], rej[24];
		snprintf(w, sizeof w, "%u", x->weight);
		fmt_of(ses, sizeof ses, x->sessions, x->max_sessions);
		fmt_of(inf, sizeof inf, x->inflight, x->max_inflight);
		snprintf(q, sizeof q, "%u", x->queued);
		snprintf(done, sizeof done, "%" PRIu64, x->calls_done);
		snprintf(rej, sizeof rej, "%" PRIu64, x->rejected);
		table_row(&t, x->name, w, ses, inf, q, done, rej);
	}
	table_print(&t, cl->out);
}

void
cli_status_print(cli *cl, const Kiln__StatusReply *s)
{
	char up[32];
	size_t ready = 0;
	for (size_t i = 0; i < s->n_nodes; i++)
		ready += s->nodes[i]->state && !strcmp(s->nodes[i]->state, "ready");
	fmt_ms(up, sizeof up, s->uptime_ms);
	fprintf(cl->out, "scheduler %s, up %s\n",
	        s->scheduler && *s->scheduler ? s->scheduler : "(unnamed)", up);
	fprintf(cl->out,
	        "%zu node%s (%zu ready), %u session%s, %u inflight, %u queued, %" PRIu64
	        " placements\n",
	        s->n_nodes, s->n_nodes == 1 ? "" : "s", ready, s->sessions,
	        s->sessions == 1 ? "" : "s", s->inflight, s->queued, s->placements);
	if (s->n_nodes) {
		fputc('\n', cl->out);
		nodes_print(cl, s);
	} else {
		fprintf(cl->out, "\nno nodes: start one with kiln-node, or use `kiln dev`\n");
	}
	if (s->n_tenants) {
		fputc('\n', cl->out);
		tenants_print(cl, s);
	}
	fflush(cl->out);
}

void
cli_sessions_print(cli *cl, const Kiln__SessionListReply *l, uint64_t now_ms)
{
	if (!l->n_sessions) {
		fprintf(cl->err, "kiln: no open sessions\n");
		return;
	}
	table t = {.ncols = 7};
	table_row(&t, "SESSION", "TENANT", "TEMPLATE", "NODE", "AGE", "IDLE", "CALLS");
	for (size_t i = 0; i < l->n_sessions; i++) {
		const Kiln__SessionInfo *s = l->sessions[i];
		char age[32] = "-", idle[32] = "-", calls[24];
		if (s->created_unix_ms && now_ms >= s->created_unix_ms)
			fmt_ms(age, sizeof age, now_ms - s->created_unix_ms);
		if (s->last_used_unix_ms && now_ms >= s->last_used_unix_ms)
			fmt_ms(idle, sizeof idle, now_ms - s->last_used_unix_ms);
		snprintf(calls, sizeof calls, "%" PRIu64, s->calls);
		table_row(&t, s->session_id, s->tenant, *s->template_ ? s->template_ : "default",
		          s->node_id, age, idle, calls);
	}
	table_print(&t, cl->out);
	fflush(cl->out);
}
