/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Client requests: authentication (every request; tenant tokens compared in
 * constant time against all tenants, plus the operator's admin token),
 * quotas (sessions, calls in flight, submit rate, queue bounds: overload is
 * a fast RESOURCE_EXHAUSTED with a retry-after), tenant isolation (another
 * tenant's session id answers NOT_FOUND, exactly like an unknown one),
 * session open/close, calls (queued per session, in order; one-shot calls
 * get an ephemeral session), cancel, list, status and node administration.
 * Also the common end of jobs and sessions.
 */
#include "sched_impl.h"

#include "kl_clock.h"
#include "kl_proto.h"
#include "kl_log.h"
#include "kl_util.h"
#include "sched_secrets.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/random.h>

/* ---- jobs ---- */

static const char *
tool_name(const Kiln__ToolCall *tc)
{
	static const char *const names[] = {"bash", "exec", "read", "write",
	                                    "edit", "glob", "grep", "editor"};
	int k = (int)tc->tool_case - KILN__TOOL_CALL__TOOL_BASH;
	return k >= 0 && k < (int)KL_ARRAY_SIZE(names) ? names[k] : "none";
}

/* One audit record per call that reached the scheduler's queue. */
static void
audit_call(sched *s, sjob *j, const Kiln__ToolResult *r)
{
	if (!s->audit)
		return;
	Kiln__ToolCall *tc = j->req->call;
	char digest[KL_AUDIT_HEX_LEN + 1];
	size_t len = kiln__tool_call__get_packed_size(tc);
	uint8_t *buf = kl_xmalloc(len);
	kiln__tool_call__pack(tc, buf);
	kl_audit_digest(buf, len, digest);
	free(buf);
	const char *sid = j->sess ? j->sess->id : tc->session_id;
	if (kl_audit_tool_call(s->audit, j->tenant->cfg->name, sid, tool_name(tc), digest,
	                       kl_code_name(r->code), (kl_now_ns() - j->t_submit_ns) / 1000,
	                       NULL) < 0)
		KL_LOG(KL_ERROR, SCHED_COMPONENT, "audit log write failed: records are being lost");
}

void
job_finish_client(sched *s, sjob *j, Kiln__ToolResult *r)
{
	audit_call(s, j, r);
	if (j->cctx) {
		uint64_t node_job = r->job_id;
		r->job_id = j->client_id;
		Kiln__ClientReply rep = KILN__CLIENT_REPLY__INIT;
		rep.reply_case = KILN__CLIENT_REPLY__REPLY_RESULT;
		rep.result = r;
		sctx_reply_client(j->cctx, &rep);
		r->job_id = node_job;
		j->cctx = NULL;
	}
	if (j->state == J_RUNNING && s->inflight)
		s->inflight--;
	if (j->tenant->inflight)
		j->tenant->inflight--;
	kl_map_del(&s->jobs, j->key);
	if (j->client_id)
		kl_map_del(&s->client_jobs, j->ckey);
	kiln__client_request__free_unpacked(j->req, NULL);
	free(j);
}

void
job_fail(sched *s, sjob *j, int code, const char *msg, uint32_t retry_after_ms)
{
	if (j->state == J_QUEUED) {
		kl_list_del(&j->link);
		if (j->sess)
			j->sess->ncalls--;
		s->queued--;
		j->tenant->queued--;
	}
	Kiln__ToolResult r = KILN__TOOL_RESULT__INIT;
	r.job_id = j->id;
	r.code = code;
	r.message = (char *)msg;
	r.is_error = true;
	r.exit_code = -1;
	r.retry_after_ms = retry_after_ms;
	r.queue_us = (kl_now_ns() - j->t_submit_ns) / 1000;
	job_finish_client(s, j, &r);
}

/* ---- sessions ---- */

static void
reply_opened(sctx *c, ssess *ss, int code, const char *msg, const Kiln__SessionOpened *o)
{
	Kiln__SessionInfo info = KILN__SESSION_INFO__INIT;
	info.session_id = ss->id;
	info.tenant = (char *)ss->tenant->cfg->name;
	info.template_ = ss->template_;
	info.limits = &ss->lim;
	info.node_id = ss->node ? ss->node->id : "";
	info.created_unix_ms = ss->created_ms;
	Kiln__SessionOpened op = KILN__SESSION_OPENED__INIT;
	op.code = code;
	op.message = (char *)(msg ? msg : "");
	op.session = &info;
	if (o) {
		op.limits_enforced = o->limits_enforced;
		op.warm = o->warm;
		op.claim_us = o->claim_us;
		op.retry_after_ms = o->retry_after_ms;
	}
	Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
	r.reply_case = KILN__CLIENT_REPLY__REPLY_OPENED;
	r.opened = &op;
	sctx_reply_client(c, &r);
}

void
sched_client_opened(sched *s, ssess *ss, const Kiln__SessionOpened *o)
{
	if (!ss->open_ctx)
		return;
	reply_opened(ss->open_ctx, ss, o->code, o->message, o);
	ss->open_ctx = NULL;
}

void
sess_free(sched *s, ssess *ss, int code, const char *msg)
{
	while (!kl_list_empty(&ss->calls))
		job_fail(s, kl_container_of(ss->calls.next, sjob, link),
		         code ? code : KILN__CODE__UNAVAILABLE,
		         msg ? msg : "the session is gone; the call did not run", 0);
	if (ss->inflight)
		ss->inflight->sess = NULL; /* its result still reaches its client */
	if (ss->open_ctx) {
		reply_opened(ss->open_ctx, ss,
		             code && code != KILN__CODE__OK ? code : KILN__CODE__UNAVAILABLE,
		             msg ? msg : "the session was lost while opening", NULL);
		ss->open_ctx = NULL;
	}
	if (ss->close_ctx) {
		Kiln__SessionClosed c = KILN__SESSION_CLOSED__INIT;
		c.session_id = ss->id;
		c.message = "session is gone";
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_CLOSED;
		r.closed = &c;
		sctx_reply_client(ss->close_ctx, &r);
		ss->close_ctx = NULL;
	}
	snode *n = ss->node;
	if (n) {
		if (ss->in_fq)
			fairq_remove(n->fq, &ss->fq);
		if (ss->counted && n->nsessions)
			n->nsessions--;
		if (ss->state == S_OPENING && n->pending_opens)
			n->pending_opens--;
		/* Drop an open still waiting in the node's queue. */
		kl_list *p, *tmp;
		kl_list_for_each_safe (p, tmp, &n->ctrl) {
			sitem *it = kl_container_of(p, sitem, link);
			if (it->sess == ss) {
				kl_list_del(&it->link);
				free(it);
			}
		}
	}
	kl_list_del(&ss->node_link);
	if (kl_map_get(&s->sessions, ss->id) == ss)
		kl_map_del(&s->sessions, ss->id);
	if (ss->tenant->sessions)
		ss->tenant->sessions--;
	if (ss->open)
		kiln__session_open__free_unpacked(ss->open, NULL);
	free(ss);
}

static void
new_session_id(sched *s, char *out, size_t len, bool ephemeral)
{
	uint64_t r;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = kl_now_ns() ^ s->placements;
	snprintf(out, len, "%s%016llx", ephemeral ? SCHED_ONESHOT_PREFIX : "s-",
	         (unsigned long long)r);
}

/* Create a session in OPENING state on node n. `o` is the client's request
 * (NULL for a one-shot call, whose session is ephemeral); env is copied from it. */
static ssess *
sess_new(sched *s, sched_tenant *t, snode *n, const char *tmpl, const Kiln__Limits *lim,
         const Kiln__SessionOpen *o)
{
	ssess *ss = kl_xcalloc(1, sizeof *ss);
	ss->ephemeral = !o;
	new_session_id(s, ss->id, sizeof ss->id, ss->ephemeral);
	ss->tenant = t;
	ss->node = n;
	kl_strlcpy(ss->template_, tmpl ? tmpl : "", sizeof ss->template_);
	limits_copy(&ss->lim, lim);
	kl_list_init(&ss->calls);
	ss->state = S_OPENING;
	ss->created_ms = ss->last_used_ms = sched_now_ms();
	/* What the node gets: a heap copy (pack/unpack keeps ownership simple). */
	Kiln__SessionOpen so = KILN__SESSION_OPEN__INIT;
	if (o)
		so = *o;
	so.session_id = ss->id;
	so.tenant = (char *)t->cfg->name;
	so.template_ = ss->template_;
	so.limits = &ss->lim;
	const Kiln__Limits *agg = &t->cfg->aggregate;
	if (agg->memory_bytes || agg->pids || agg->cpu_millicores)
		so.tenant_limits = (Kiln__Limits *)agg;
	so.tenant_weight = t->cfg->weight;
	size_t plen = kiln__session_open__get_packed_size(&so);
	uint8_t *buf = kl_xmalloc(plen);
	kiln__session_open__pack(&so, buf);
	ss->open = kiln__session_open__unpack(NULL, plen, buf);
	free(buf);
	kl_map_put(&s->sessions, ss->id, ss);
	kl_list_add_tail(&n->sessions, &ss->node_link);
	n->pending_opens++;
	t->sessions++;
	node_queue_ctrl(n, SI_OPEN, ss, ss->id, 0);
	return ss;
}

/* ---- requests ---- */

static void
park(sctx *c)
{
	c->state = SC_PARKED;
	c->park = PK_CLIENT;
}

static void fail(sched *s, sctx *c, int code, uint32_t retry, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static void
fail(sched *s, sctx *c, int code, uint32_t retry, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (code == KILN__CODE__RESOURCE_EXHAUSTED || code == KILN__CODE__UNAUTHENTICATED)
		s->rejected++;
	sctx_reply_error(c, code, msg, retry);
}

static void
do_open(sched *s, sctx *c, sched_tenant *t, Kiln__SessionOpen *o)
{
	char err[256];
	Kiln__Limits lim;
	if (t->sessions >= t->cfg->max_sessions) {
		t->rejected++;
		return fail(s, c, KILN__CODE__RESOURCE_EXHAUSTED, 1000,
		            "tenant %s has %u of %u sessions open; close one first", t->cfg->name,
		            t->sessions, t->cfg->max_sessions);
	}
	if (sched_tenant_limits(t, o->limits, &lim, err, sizeof err) < 0)
		return fail(s, c, KILN__CODE__PERMISSION_DENIED, 0, "%s", err);
	uint64_t secrets = 0;
	if (sched_secret_resolve_env(&s->cfg, t->cfg->name, o->env, o->n_env, &secrets, err,
	                             sizeof err) < 0)
		return fail(s, c, KILN__CODE__PERMISSION_DENIED, 0, "%s", err);
	snode *n = sched_place(s, o->template_, NULL);
	if (!n)
		return fail(s, c, KILN__CODE__UNAVAILABLE, 1000,
		            "no node can take a session of template \"%s\" now (%u nodes "
		            "registered); retry later",
		            *o->template_ ? o->template_ : "default",
		            (unsigned)kl_map_size(&s->nodes));
	ssess *ss = sess_new(s, t, n, o->template_, &lim, o);
	ss->secret_mask = secrets;
	ss->open_ctx = c;
	park(c);
	sched_kick(s, n);
}

static ssess *
own_session(sched *s, sched_tenant *t, const char *id)
{
	ssess *ss = kl_map_get(&s->sessions, id);
	/* Another tenant's session is indistinguishable from a missing one. */
	return ss && ss->tenant == t && !ss->ephemeral ? ss : NULL;
}

/* A session id we do not know. A restarted scheduler learns the live
 * sessions from the nodes' registrations, and a node has dead_after to come
 * back: until then "unknown" may just mean "not reported yet", so the answer
 * is UNAVAILABLE (retry), not NOT_FOUND, which would tell the client its
 * session is gone while it lives on. Another tenant's session gets the same
 * answer, so ids still leak nothing. */
static void
fail_no_session(sched *s, sctx *c, sched_tenant *t, const char *id)
{
	uint64_t up = sched_now_ms() - s->started_ms;
	if (up < s->cfg.dead_after_ms)
		return fail(s, c, KILN__CODE__UNAVAILABLE, (uint32_t)(s->cfg.dead_after_ms - up),
		            "session %s is not known yet: the scheduler started %llu ms ago and "
		            "its nodes are still reporting their sessions; retry shortly",
		            id, (unsigned long long)up);
	fail(s, c, KILN__CODE__NOT_FOUND, 0, "no session %s for tenant %s", id, t->cfg->name);
}

static void
do_close(sched *s, sctx *c, sched_tenant *t, const char *id)
{
	ssess *ss = own_session(s, t, id);
	if (!ss)
		return fail_no_session(s, c, t, id);
	if (ss->state == S_CLOSING)
		return fail(s, c, KILN__CODE__NOT_FOUND, 0, "no session %s for tenant %s", id,
		            t->cfg->name);
	while (!kl_list_empty(&ss->calls))
		job_fail(s, kl_container_of(ss->calls.next, sjob, link), KILN__CODE__CANCELLED,
		         "the session was closed before the call ran", 0);
	if (ss->in_fq) {
		fairq_remove(ss->node->fq, &ss->fq);
		ss->in_fq = false;
	}
	ss->close_ctx = c;
	park(c);
	if (ss->state == S_OPENING) {
		ss->close_pending = true; /* closed once the open lands */
		return;
	}
	ss->state = S_CLOSING;
	node_queue_ctrl(ss->node, SI_CLOSE, ss, ss->id, 0);
	sched_kick(s, ss->node);
}

static int
admit_call(sched *s, sctx *c, sched_tenant *t, Kiln__ToolCall *tc)
{
	uint32_t retry;
	if (tc->tool_case == KILN__TOOL_CALL__TOOL__NOT_SET) {
		fail(s, c, KILN__CODE__INVALID_ARGUMENT, 0, "the call names no tool");
		return -1;
	}
	if (t->inflight >= t->cfg->max_inflight) {
		t->rejected++;
		fail(s, c, KILN__CODE__RESOURCE_EXHAUSTED, 200,
		     "tenant %s has %u calls in flight (its maximum); retry shortly", t->cfg->name,
		     t->inflight);
		return -1;
	}
	if (t->queued >= t->cfg->queue_limit || s->queued >= s->cfg.max_queued) {
		t->rejected++;
		fail(s, c, KILN__CODE__RESOURCE_EXHAUSTED, 500,
		     "the %s queue is full; retry shortly",
		     t->queued >= t->cfg->queue_limit ? "tenant's" : "cluster's");
		return -1;
	}
	if (sched_tenant_take(t, kl_now_ns(), &retry) < 0) {
		t->rejected++;
		fail(s, c, KILN__CODE__RESOURCE_EXHAUSTED, retry,
		     "tenant %s is over its submit rate (%u calls/s); retry in %u ms", t->cfg->name,
		     t->cfg->rate, retry);
		return -1;
	}
	return 0;
}

static void
do_call(sched *s, sctx *c, sched_tenant *t, Kiln__Envelope *e)
{
	Kiln__ClientRequest *req = e->client_request;
	Kiln__ToolCall *tc = req->call;
	char ckey[96], err[256];
	snprintf(ckey, sizeof ckey, "%s/%016llx", t->cfg->name, (unsigned long long)tc->job_id);
	if (tc->job_id && kl_map_get(&s->client_jobs, ckey))
		return fail(s, c, KILN__CODE__INVALID_ARGUMENT, 0,
		            "job id %llu is already in use by a call in flight",
		            (unsigned long long)tc->job_id);
	ssess *ss = NULL;
	if (*tc->session_id) {
		ss = own_session(s, t, tc->session_id);
		if (!ss)
			return fail_no_session(s, c, t, tc->session_id);
		if (ss->state == S_CLOSING || ss->close_pending)
			return fail(s, c, KILN__CODE__NOT_FOUND, 0, "no session %s for tenant %s",
			            tc->session_id, t->cfg->name);
	}
	uint64_t secrets = 0;
	if (tc->tool_case == KILN__TOOL_CALL__TOOL_EXEC &&
	    sched_secret_resolve_exec_env(&s->cfg, t->cfg->name, tc->exec->env, tc->exec->n_env,
	                                  &secrets, err, sizeof err) < 0)
		return fail(s, c, KILN__CODE__PERMISSION_DENIED, 0, "%s", err);
	if (admit_call(s, c, t, tc) < 0)
		return;
	if (!ss) { /* one-shot: a fresh session just for this call */
		Kiln__Limits lim;
		if (sched_tenant_limits(t, tc->limits, &lim, err, sizeof err) < 0)
			return fail(s, c, KILN__CODE__PERMISSION_DENIED, 0, "%s", err);
		if (t->sessions >= t->cfg->max_sessions)
			return fail(s, c, KILN__CODE__RESOURCE_EXHAUSTED, 1000,
			            "tenant %s has %u of %u sessions open", t->cfg->name,
			            t->sessions, t->cfg->max_sessions);
		snode *n = sched_place(s, tc->template_, NULL);
		if (!n)
			return fail(s, c, KILN__CODE__UNAVAILABLE, 1000,
			            "no node can take a session now; retry later");
		ss = sess_new(s, t, n, tc->template_, &lim, NULL);
	}
	sjob *j = kl_xcalloc(1, sizeof *j);
	j->id = s->next_job++;
	j->client_id = tc->job_id;
	snprintf(j->key, sizeof j->key, "%016llx", (unsigned long long)j->id);
	memcpy(j->ckey, ckey, sizeof j->ckey);
	j->tenant = t;
	j->sess = ss;
	j->cctx = c;
	j->req = req;
	e->client_request = NULL; /* the job owns the request now */
	e->msg_case = KILN__ENVELOPE__MSG__NOT_SET;
	j->state = J_QUEUED;
	j->t_submit_ns = kl_now_ns();
	j->deadline_ms = tc->deadline_unix_ms;
	j->secret_mask = secrets | ss->secret_mask;
	kl_map_put(&s->jobs, j->key, j);
	if (j->client_id)
		kl_map_put(&s->client_jobs, j->ckey, j);
	kl_list_add_tail(&ss->calls, &j->link);
	ss->ncalls++;
	ss->last_used_ms = sched_now_ms();
	s->queued++;
	t->queued++;
	t->inflight++;
	park(c);
	sess_ready(s, ss);
	sched_kick(s, ss->node);
}

static void
do_cancel(sched *s, sctx *c, sched_tenant *t, uint64_t id)
{
	char ckey[96];
	snprintf(ckey, sizeof ckey, "%s/%016llx", t->cfg->name, (unsigned long long)id);
	sjob *j = id ? kl_map_get(&s->client_jobs, ckey) : NULL;
	if (!j)
		return fail(s, c, KILN__CODE__NOT_FOUND, 0, "no call %llu in flight for tenant %s",
		            (unsigned long long)id, t->cfg->name);
	if (j->state == J_QUEUED) {
		job_fail(s, j, KILN__CODE__CANCELLED, "cancelled before it started", 0);
	} else if (j->sess && j->sess->node) {
		node_queue_ctrl(j->sess->node, SI_CANCEL, NULL, NULL, j->id);
		sched_hb_flush(s, j->sess->node);
	}
	sctx_reply_error(c, KILN__CODE__OK, "cancel requested", 0);
}

static void
do_list(sched *s, sctx *c, sched_tenant *t)
{
	size_t n = 0, i;
	Kiln__SessionInfo **v = kl_xcalloc(kl_map_size(&s->sessions) + 1, sizeof *v);
	Kiln__SessionInfo *iv = kl_xcalloc(kl_map_size(&s->sessions) + 1, sizeof *iv);
	for (kl_map_ent *e = kl_map_first(&s->sessions, &i); e;
	     e = kl_map_next(&s->sessions, &i, e)) {
		ssess *ss = e->val;
		if (ss->tenant != t || ss->ephemeral)
			continue;
		kiln__session_info__init(&iv[n]);
		iv[n].session_id = ss->id;
		iv[n].tenant = (char *)t->cfg->name;
		iv[n].template_ = ss->template_;
		iv[n].limits = &ss->lim;
		iv[n].node_id = ss->node ? ss->node->id : "";
		iv[n].created_unix_ms = ss->created_ms;
		iv[n].calls = ss->calls_done;
		v[n] = &iv[n];
		n++;
	}
	Kiln__SessionListReply l = KILN__SESSION_LIST_REPLY__INIT;
	l.n_sessions = n;
	l.sessions = v;
	Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
	r.reply_case = KILN__CLIENT_REPLY__REPLY_LIST;
	r.list = &l;
	sctx_reply_client(c, &r);
	free(v);
	free(iv);
}

static void
do_node_admin(sched *s, sctx *c, Kiln__NodeAdmin *a)
{
	snode *n = kl_map_get(&s->nodes, a->node_id);
	if (!n)
		return fail(s, c, KILN__CODE__NOT_FOUND, 0, "no node %s", a->node_id);
	if (!strcmp(a->action, "drain")) {
		n->state = N_DRAINING;
		sched_hb_flush(s, n);
		if (s->audit)
			kl_audit_admin(s->audit, "admin", "node drain", n->id, "ok");
		KL_LOG(KL_INFO, SCHED_COMPONENT, "node %s draining (%u sessions)", n->id,
		       n->nsessions);
		sctx_reply_error(c, KILN__CODE__OK,
		                 "draining: no new sessions; it exits when empty", 0);
	} else if (!strcmp(a->action, "remove")) {
		KL_LOG(KL_INFO, SCHED_COMPONENT, "node %s removed by the operator", n->id);
		if (s->audit)
			kl_audit_admin(s->audit, "admin", "node remove", n->id, "ok");
		sched_remove_node(s, n);
		sctx_reply_error(c, KILN__CODE__OK, "removed: its sessions are closed", 0);
	} else {
		fail(s, c, KILN__CODE__INVALID_ARGUMENT, 0,
		     "unknown node action \"%s\" (drain|remove)", a->action);
	}
}

void
sched_on_client_msg(sched *s, sctx *c, Kiln__Envelope *e)
{
	if (e->msg_case != KILN__ENVELOPE__MSG_CLIENT_REQUEST)
		return fail(s, c, KILN__CODE__INVALID_ARGUMENT, 0,
		            "not a client request (nodes use the node address)");
	Kiln__ClientRequest *req = e->client_request;
	c->request_id = req->request_id;
	if (s->stopping)
		return fail(s, c, KILN__CODE__UNAVAILABLE, 1000, "the scheduler is shutting down");
	bool admin = s->cfg.admin_token[0] &&
	             kl_consttime_eq(req->token, strlen(req->token), s->cfg.admin_token,
	                             strlen(s->cfg.admin_token));
	sched_tenant *t = sched_tenants_auth(&s->tenants, req->token);
	if (!t && !admin)
		return fail(
		        s, c, KILN__CODE__UNAUTHENTICATED, 0,
		        "token refused: pass a tenant's API token (--token-file or KILN_TOKEN)");
	if (!t && req->op_case != KILN__CLIENT_REQUEST__OP_STATUS &&
	    req->op_case != KILN__CLIENT_REQUEST__OP_NODE_ADMIN)
		return fail(s, c, KILN__CODE__PERMISSION_DENIED, 0,
		            "the admin token cannot own sessions or calls; use a tenant's token");
	switch (req->op_case) {
	case KILN__CLIENT_REQUEST__OP_OPEN:
		return do_open(s, c, t, req->open);
	case KILN__CLIENT_REQUEST__OP_CLOSE:
		return do_close(s, c, t, req->close->session_id);
	case KILN__CLIENT_REQUEST__OP_CALL:
		return do_call(s, c, t, e);
	case KILN__CLIENT_REQUEST__OP_CANCEL:
		return do_cancel(s, c, t, req->cancel->job_id);
	case KILN__CLIENT_REQUEST__OP_LIST:
		return do_list(s, c, t);
	case KILN__CLIENT_REQUEST__OP_STATUS:
		return sched_status(s, c, admin ? NULL : t);
	case KILN__CLIENT_REQUEST__OP_NODE_ADMIN:
		if (!admin)
			return fail(s, c, KILN__CODE__PERMISSION_DENIED, 0,
			            "node administration needs the scheduler's admin token");
		return do_node_admin(s, c, req->node_admin);
	default:
		return fail(s, c, KILN__CODE__INVALID_ARGUMENT, 0,
		            "the request names no operation");
	}
}
