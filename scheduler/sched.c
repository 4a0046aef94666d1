/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's logic on the node side: registration (join token in
 * constant time, session table rebuilt from what nodes report), heartbeats
 * (held as a long poll so cancels and closes reach a node at once), work
 * pulls (a node parks one request per free slot; dispatch answers them:
 * opens and closes first, then calls by weighted fair queueing over the
 * tenants' ready sessions), results, placement (power of two choices on
 * free warm sandboxes, then load), and failure: a lost node fails its
 * in-flight calls with NODE_LOST, re-places what it had not started, and
 * drops the sessions it held.
 */
#include "sched_impl.h"

#include "kl_clock.h"
#include "kl_log.h"
#include "kl_proto.h"
#include "kl_util.h"
#include "sched_secrets.h"

#include <stdio.h>
#include <sys/random.h>

uint64_t
sched_now_ms(void)
{
	return kl_now_ms();
}

static uint64_t
rnd(sched *s)
{
	/* xorshift64*: placement only needs cheap, decent randomness. */
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 2685821657736338717ull;
}

/* ---- replies to nodes ---- */

static void
reply_assign(sctx *c, int code, const char *msg, Kiln__NodeWork *w)
{
	Kiln__WorkAssign a = KILN__WORK_ASSIGN__INIT;
	a.code = code;
	a.message = (char *)(msg ? msg : "");
	a.work = w;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_WORK_ASSIGN;
	e.work_assign = &a;
	sctx_reply_env(c, &e);
}

static void
reply_hb(sched *s, snode *n, sctx *c, int code, const char *msg)
{
	Kiln__HeartbeatAck a = KILN__HEARTBEAT_ACK__INIT;
	a.code = code;
	a.message = (char *)(msg ? msg : "");
	a.drain = n && n->state == N_DRAINING;
	Kiln__NodeWork *items[64], wv[64];
	Kiln__Cancel cancels[64];
	Kiln__SessionClose closes[64];
	size_t k = 0;
	while (n && k < 64 && !kl_list_empty(&n->hbq)) {
		sitem *it = kl_container_of(kl_list_pop(&n->hbq), sitem, link);
		kiln__node_work__init(&wv[k]);
		if (it->kind == SI_CANCEL) {
			kiln__cancel__init(&cancels[k]);
			cancels[k].job_id = it->job_id;
			wv[k].work_case = KILN__NODE_WORK__WORK_CANCEL;
			wv[k].cancel = &cancels[k];
		} else {
			kiln__session_close__init(&closes[k]);
			closes[k].session_id = kl_xstrdup(it->session_id);
			wv[k].work_case = KILN__NODE_WORK__WORK_CLOSE;
			wv[k].close = &closes[k];
		}
		items[k] = &wv[k];
		k++;
		free(it);
	}
	a.n_control = k;
	a.control = items;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_HEARTBEAT_ACK;
	e.heartbeat_ack = &a;
	sctx_reply_env(c, &e);
	for (size_t i = 0; i < k; i++)
		if (wv[i].work_case == KILN__NODE_WORK__WORK_CLOSE)
			free(closes[i].session_id);
}

/* ---- nodes ---- */

void
sched_node_free(snode *n)
{
	fairq_free(n->fq);
	kl_map_fini(&n->inflight);
	for (size_t i = 0; i < n->nlabels; i++)
		free(n->labels[i]);
	free(n->labels);
	kl_list *l;
	while ((l = kl_list_pop(&n->ctrl)))
		free(kl_container_of(l, sitem, link));
	while ((l = kl_list_pop(&n->hbq)))
		free(kl_container_of(l, sitem, link));
	free(n);
}

void
node_queue_ctrl(snode *n, enum sitem_kind k, ssess *ss, const char *sid, uint64_t job)
{
	sitem *it = kl_xcalloc(1, sizeof *it);
	it->kind = k;
	it->sess = ss;
	it->job_id = job;
	if (sid)
		kl_strlcpy(it->session_id, sid, sizeof it->session_id);
	if (k == SI_CANCEL || (k == SI_CLOSE && !ss))
		kl_list_add_tail(&n->hbq, &it->link);
	else
		kl_list_add_tail(&n->ctrl, &it->link);
}

static void
update_templates(snode *n, Kiln__TemplateInfo **t, size_t nt)
{
	n->ntmpl = (int)KL_MIN(nt, KL_ARRAY_SIZE(n->tmpl));
	for (int i = 0; i < n->ntmpl; i++) {
		kl_strlcpy(n->tmpl[i].name, t[i]->name, sizeof n->tmpl[i].name);
		n->tmpl[i].warm = t[i]->warm;
		n->tmpl[i].target = t[i]->target;
		n->tmpl[i].creating = t[i]->creating;
	}
}

void
sched_hb_flush(sched *s, snode *n)
{
	if (n->parked_hb && (!kl_list_empty(&n->hbq) || n->state == N_DRAINING || n->removing)) {
		sctx *c = n->parked_hb;
		n->parked_hb = NULL;
		if (n->removing)
			reply_hb(s, n, c, KILN__CODE__CANCELLED,
			         "removed by the operator: shut down");
		else
			reply_hb(s, n, c, KILN__CODE__OK, NULL);
	}
}

/* Fail everything a lost node was doing; re-place what it had not started. */
static void
node_lost(sched *s, snode *n, const char *why)
{
	char msg[256];
	if (n->state == N_DEAD)
		return;
	KL_LOG(s->stopping ? KL_INFO : KL_WARN, SCHED_COMPONENT,
	       "node %s lost: %s (%u calls in flight, %u sessions)", n->id, why,
	       (unsigned)kl_map_size(&n->inflight), n->nsessions);
	n->state = N_DEAD;
	s->node_lost++;
	/* If this same process comes back (it was paused or cut off, not
	 * restarted), what it still holds was answered for below: see
	 * on_register. */
	uint64_t *inc = kl_xmalloc(sizeof *inc);
	*inc = n->incarnation;
	free(kl_map_put(&s->lost, n->id, inc));
	/* Parked requests can no longer be answered usefully: recycle them. */
	kl_list *l;
	while ((l = kl_list_pop(&n->parked_work))) {
		sctx *c = kl_container_of(l, sctx, link);
		reply_assign(c, KILN__CODE__UNAVAILABLE, "node lost", NULL);
	}
	n->nparked = 0;
	if (n->parked_hb) {
		reply_hb(s, NULL, n->parked_hb, KILN__CODE__NOT_FOUND, "node lost");
		n->parked_hb = NULL;
	}
	/* Calls in flight: outcome unknown. */
	snprintf(msg, sizeof msg, "node %s was lost mid-call (%s): the call's outcome is unknown",
	         n->id, why);
	size_t i;
	kl_map_ent *e;
	while ((e = kl_map_first(&n->inflight, &i))) {
		sjob *j = e->val;
		kl_map_del(&n->inflight, j->key);
		if (j->sess)
			j->sess->inflight = NULL;
		job_fail(s, j, KILN__CODE__NODE_LOST, msg, 0);
	}
	kl_list *tmp;
	kl_list_for_each_safe (l, tmp, &n->sessions) {
		ssess *ss = kl_container_of(l, ssess, node_link);
		if (ss->in_fq) {
			fairq_remove(n->fq, &ss->fq);
			ss->in_fq = false;
		}
		bool replace = ss->ephemeral ? ss->ncalls > 0 : ss->state == S_OPENING;
		snode *to = replace ? sched_place(s, ss->template_, n) : NULL;
		if (to) {
			/* Nothing of this session had started: place it again elsewhere. */
			kl_list_del(&ss->node_link);
			ss->node = to;
			ss->state = S_OPENING;
			ss->open_sent = false;
			to->pending_opens++;
			kl_list_add_tail(&to->sessions, &ss->node_link);
			node_queue_ctrl(to, SI_OPEN, ss, ss->id, 0);
			KL_LOG(KL_INFO, SCHED_COMPONENT, "session %s re-placed on %s", ss->id,
			       to->id);
			sched_kick(s, to);
			continue;
		}
		sess_free(s, ss, KILN__CODE__UNAVAILABLE,
		          "the session was lost with its node; the call did not run");
	}
	n->nsessions = 0;
	n->pending_opens = 0;
	kl_map_del(&s->nodes, n->id);
	kl_list_del(&n->link);
	sched_node_free(n);
}

void
sched_on_node_pipe_gone(sched *s, nng_pipe p)
{
	kl_list *l;
	kl_list_for_each (l, &s->node_list) {
		snode *n = kl_container_of(l, snode, link);
		if (nng_pipe_id(n->pipe) == nng_pipe_id(p)) {
			node_lost(s, n, "connection closed");
			return;
		}
	}
}

/* ---- placement ---- */

static uint32_t
warm_of(const snode *n, const char *tmpl)
{
	const char *want = *tmpl ? tmpl : "default";
	for (int i = 0; i < n->ntmpl; i++)
		if (!strcmp(n->tmpl[i].name, want))
			return n->tmpl[i].warm;
	return 0;
}

static bool
has_template(const snode *n, const char *tmpl)
{
	const char *want = *tmpl ? tmpl : "default";
	for (int i = 0; i < n->ntmpl; i++)
		if (!strcmp(n->tmpl[i].name, want))
			return true;
	return n->ntmpl == 0;
}

static bool
eligible(const snode *n, const char *tmpl, const snode *avoid)
{
	return n != avoid && n->state == N_READY && !n->removing &&
	       n->nsessions + n->pending_opens < n->max_sessions && has_template(n, tmpl);
}

/* Better of two: more free warm sandboxes (minus opens on their way), then
 * lower load. */
static snode *
better(snode *a, snode *b, const char *tmpl)
{
	int64_t wa = (int64_t)warm_of(a, tmpl) - a->pending_opens;
	int64_t wb = (int64_t)warm_of(b, tmpl) - b->pending_opens;
	if (wa != wb)
		return wa > wb ? a : b;
	double la =
	        (double)(a->nsessions + a->pending_opens) / (a->max_sessions ? a->max_sessions : 1);
	double lb =
	        (double)(b->nsessions + b->pending_opens) / (b->max_sessions ? b->max_sessions : 1);
	return la <= lb ? a : b;
}

snode *
sched_place(sched *s, const char *tmpl, snode *avoid)
{
	snode *cand[64];
	uint32_t nc = 0, seen = 0;
	kl_list *l;
	/* Reservoir-sample two eligible nodes in one pass. */
	kl_list_for_each (l, &s->node_list) {
		snode *n = kl_container_of(l, snode, link);
		if (!eligible(n, tmpl, avoid))
			continue;
		seen++;
		if (nc < 2) {
			cand[nc++] = n;
		} else {
			uint64_t r = rnd(s) % seen;
			if (r < 2)
				cand[r] = n;
		}
	}
	if (nc == 0)
		return NULL;
	s->placements++;
	return nc == 1 ? cand[0] : better(cand[0], cand[1], tmpl);
}

/* ---- dispatch ---- */

void
sess_ready(sched *s, ssess *ss)
{
	if (ss->state != S_OPEN || ss->inflight || ss->in_fq || !ss->ncalls || !ss->node)
		return;
	ss->fq.tenant = ss->tenant->idx;
	fairq_push(ss->node->fq, &ss->fq);
	ss->in_fq = true;
}

static void
assign_open(sched *s, sctx *c, ssess *ss)
{
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_OPEN;
	w.open = ss->open;
	ss->open_sent = true;
	reply_assign(c, KILN__CODE__OK, NULL, &w);
}

static void
assign_close(sched *s, sctx *c, const char *sid)
{
	Kiln__SessionClose cl = KILN__SESSION_CLOSE__INIT;
	cl.session_id = (char *)sid;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CLOSE;
	w.close = &cl;
	reply_assign(c, KILN__CODE__OK, NULL, &w);
}

static void
assign_call(sched *s, snode *n, sctx *c, sjob *j)
{
	Kiln__ToolCall *tc = j->req->call;
	ssess *ss = j->sess;
	j->state = J_RUNNING;
	ss->inflight = j;
	kl_map_put(&n->inflight, j->key, j);
	/* Counted so that status shows running calls and a graceful stop waits
	 * for them (job_finish_client takes it back). */
	s->inflight++;
	s->queued--;
	j->tenant->queued--;
	/* The node sees the cluster job id and the real session. */
	char *sid = tc->session_id;
	tc->job_id = j->id;
	tc->session_id = ss->id;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CALL;
	w.call = tc;
	reply_assign(c, KILN__CODE__OK, NULL, &w);
	tc->job_id = j->client_id;
	tc->session_id = sid;
}

void
sched_kick(sched *s, snode *n)
{
	while (n->nparked && n->state != N_DEAD) {
		sctx *c = kl_container_of(n->parked_work.next, sctx, link);
		if (!kl_list_empty(&n->ctrl)) {
			sitem *it = kl_container_of(kl_list_pop(&n->ctrl), sitem, link);
			kl_list_del(&c->link);
			n->nparked--;
			if (it->kind == SI_OPEN)
				assign_open(s, c, it->sess);
			else
				assign_close(s, c, it->session_id);
			free(it);
			continue;
		}
		fairq_item *fi = fairq_pop(n->fq);
		if (!fi)
			return;
		ssess *ss = kl_container_of(fi, ssess, fq);
		ss->in_fq = false;
		sjob *j = kl_container_of(kl_list_pop(&ss->calls), sjob, link);
		ss->ncalls--;
		kl_list_del(&c->link);
		n->nparked--;
		assign_call(s, n, c, j);
	}
}

/* ---- results ---- */

static void
on_result(sched *s, snode *n, Kiln__ToolResult *r)
{
	char key[24];
	snprintf(key, sizeof key, "%016llx", (unsigned long long)r->job_id);
	sjob *j = kl_map_get(&n->inflight, key);
	if (!j)
		return; /* already failed (NODE_LOST, cancel race): drop it */
	kl_map_del(&n->inflight, key);
	n->calls_done++;
	s->calls_done++;
	j->tenant->calls_done++;
	ssess *ss = j->sess;
	if (!ss) { /* its session was closed meanwhile */
		sched_secret_scrub(&s->cfg, j->secret_mask, r);
		job_finish_client(s, j, r);
		return;
	}
	ss->inflight = NULL;
	ss->last_used_ms = sched_now_ms();
	ss->calls_done++;
	sched_secret_scrub(&s->cfg, j->secret_mask, r);
	job_finish_client(s, j, r);
	if (ss->ephemeral && !ss->ncalls) {
		node_queue_ctrl(n, SI_CLOSE, NULL, ss->id, 0);
		sched_hb_flush(s, n);
		sess_free(s, ss, KILN__CODE__OK, NULL);
		return;
	}
	if (r->code == KILN__CODE__NOT_FOUND && !ss->ephemeral) {
		/* The node no longer has it (idle TTL or a restart): forget it. */
		sess_free(s, ss, KILN__CODE__NOT_FOUND, "the session no longer exists on its node");
		return;
	}
	sess_ready(s, ss);
}

static void
on_opened(sched *s, snode *n, Kiln__SessionOpened *o)
{
	const char *sid = o->session ? o->session->session_id : "";
	ssess *ss = kl_map_get(&s->sessions, sid);
	if (!ss || ss->node != n || ss->state != S_OPENING)
		return;
	if (n->pending_opens)
		n->pending_opens--;
	if (o->code == KILN__CODE__OK) {
		ss->state = S_OPEN;
		ss->counted = true;
		n->nsessions++;
		if (o->session && o->session->limits)
			limits_copy(&ss->lim, o->session->limits);
		sched_client_opened(s, ss, o);
		if (ss->close_pending) { /* closed while it was opening */
			ss->state = S_CLOSING;
			node_queue_ctrl(n, SI_CLOSE, ss, ss->id, 0);
			sched_kick(s, n);
			return;
		}
		sess_ready(s, ss);
		return;
	}
	bool retryable = o->code == KILN__CODE__RESOURCE_EXHAUSTED ||
	                 o->code == KILN__CODE__FAILED_PRECONDITION ||
	                 o->code == KILN__CODE__UNAVAILABLE || o->code == KILN__CODE__INTERNAL;
	snode *to = retryable && ss->retries < 2 ? sched_place(s, ss->template_, n) : NULL;
	if (to) {
		ss->retries++;
		kl_list_del(&ss->node_link);
		ss->node = to;
		ss->open_sent = false;
		to->pending_opens++;
		kl_list_add_tail(&to->sessions, &ss->node_link);
		node_queue_ctrl(to, SI_OPEN, ss, ss->id, 0);
		sched_kick(s, to);
		return;
	}
	sched_client_opened(s, ss, o);
	sess_free(s, ss, o->code, o->message);
}

static void
on_closed(sched *s, snode *n, Kiln__SessionClosed *cl)
{
	ssess *ss = kl_map_get(&s->sessions, cl->session_id);
	if (!ss || ss->node != n || ss->state != S_CLOSING)
		return;
	if (ss->close_ctx) {
		Kiln__SessionClosed c = KILN__SESSION_CLOSED__INIT;
		c.code = cl->code == KILN__CODE__NOT_FOUND ? KILN__CODE__OK : cl->code;
		c.message = cl->message;
		c.session_id = ss->id;
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_CLOSED;
		r.closed = &c;
		sctx_reply_client(ss->close_ctx, &r);
		ss->close_ctx = NULL;
	}
	sess_free(s, ss, KILN__CODE__CANCELLED, "session closed");
}

/* ---- node requests ---- */

/* A node the operator removed: told to shut down whenever it calls again. */
static bool
removed(sched *s, const char *id, uint64_t inc)
{
	uint64_t *v = kl_map_get(&s->removed, id);
	return v && *v == inc;
}

static bool
valid_id(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < 128;
}

static void
rebuild_sessions(sched *s, snode *n, Kiln__NodeRegister *reg)
{
	for (size_t i = 0; i < reg->n_sessions; i++) {
		Kiln__SessionInfo *si = reg->sessions[i];
		ssess *ss = kl_map_get(&s->sessions, si->session_id);
		if (ss)
			continue; /* already known (reconnect of a live node) */
		sched_tenant *t = sched_tenants_find(&s->tenants, si->tenant);
		/* A tenant this scheduler does not know, or the session of a one-shot
		 * call (it existed for that call only, whose client was told the
		 * outcome is unknown when the old scheduler went away; adopted, it
		 * would show up as a session the tenant never opened): nobody can
		 * use it, close it. */
		if (!t || strlen(si->session_id) >= sizeof ss->id ||
		    !strncmp(si->session_id, SCHED_ONESHOT_PREFIX, strlen(SCHED_ONESHOT_PREFIX))) {
			node_queue_ctrl(n, SI_CLOSE, NULL, si->session_id, 0);
			continue;
		}
		ss = kl_xcalloc(1, sizeof *ss);
		kl_strlcpy(ss->id, si->session_id, sizeof ss->id);
		kl_strlcpy(ss->template_, si->template_, sizeof ss->template_);
		ss->tenant = t;
		ss->node = n;
		ss->state = S_OPEN;
		limits_copy(&ss->lim, si->limits);
		ss->counted = true;
		ss->created_ms = si->created_unix_ms;
		ss->last_used_ms = sched_now_ms();
		kl_list_init(&ss->calls);
		kl_list_add_tail(&n->sessions, &ss->node_link);
		kl_map_put(&s->sessions, ss->id, ss);
		t->sessions++;
		n->nsessions++;
	}
}

/*
 * A node that was declared lost registers again as the same incarnation (it
 * was paused or cut off). Its sessions were dropped when it was lost: their
 * queued calls failed, the clients were told, sessions still opening were
 * placed again elsewhere under the same id and may have been used and closed
 * there since. Adopting what the node still holds would bring those back
 * (a closed session alive again, one id on two nodes), so it is closed on the
 * node instead; a call still running there is killed with its session.
 */
static void
drop_sessions(sched *s, snode *n, Kiln__NodeRegister *reg)
{
	KL_LOG(KL_WARN, SCHED_COMPONENT,
	       "node %s is back after it was declared lost: closing the %u sessions it still "
	       "holds",
	       n->id, (unsigned)reg->n_sessions);
	for (size_t i = 0; i < reg->n_sessions; i++)
		node_queue_ctrl(n, SI_CLOSE, NULL, reg->sessions[i]->session_id, 0);
}

static void
on_register(sched *s, sctx *c, Kiln__NodeRegister *reg)
{
	Kiln__NodeRegistered ok = KILN__NODE_REGISTERED__INIT;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_REGISTERED;
	e.node_registered = &ok;
	if (!kl_consttime_eq(reg->token, strlen(reg->token), s->cfg.join_token,
	                     strlen(s->cfg.join_token))) {
		KL_LOG(KL_WARN, SCHED_COMPONENT, "node %.64s refused: wrong join token",
		       reg->node_id);
		ok.code = KILN__CODE__UNAUTHENTICATED;
		ok.message = "join token refused: the node's --token-file does not match the "
		             "scheduler's join token";
		sctx_reply_env(c, &e);
		return;
	}
	if (!valid_id(reg->node_id) || s->stopping) {
		ok.code = s->stopping ? KILN__CODE__UNAVAILABLE : KILN__CODE__INVALID_ARGUMENT;
		ok.message =
		        s->stopping ? "scheduler is shutting down" : "node id is empty or too long";
		sctx_reply_env(c, &e);
		return;
	}
	if (removed(s, reg->node_id, reg->incarnation)) {
		ok.code = KILN__CODE__CANCELLED;
		ok.message = "removed by the operator: shut down";
		sctx_reply_env(c, &e);
		return;
	}
	snode *n = kl_map_get(&s->nodes, reg->node_id);
	if (n && n->incarnation != reg->incarnation)
		node_lost(s, n, "node restarted"), n = NULL;
	uint64_t *lost_inc = kl_map_del(&s->lost, reg->node_id);
	bool rejoin = !n && lost_inc && *lost_inc == reg->incarnation;
	free(lost_inc);
	if (!n) {
		n = kl_xcalloc(1, sizeof *n);
		kl_strlcpy(n->id, reg->node_id, sizeof n->id);
		n->incarnation = reg->incarnation;
		kl_list_init(&n->parked_work);
		kl_list_init(&n->ctrl);
		kl_list_init(&n->hbq);
		kl_list_init(&n->sessions);
		kl_map_init(&n->inflight);
		n->fq = fairq_new(s->tenants.n);
		for (uint32_t i = 0; i < s->tenants.n; i++)
			fairq_set_weight(n->fq, i, s->tenants.v[i].cfg->weight);
		n->registered_ms = sched_now_ms();
		kl_map_put(&s->nodes, n->id, n);
		kl_list_add_tail(&s->node_list, &n->link);
		for (size_t i = 0; i < reg->n_labels && i < 64; i++) {
			n->labels = kl_xrealloc(n->labels, (n->nlabels + 1) * sizeof *n->labels);
			n->labels[n->nlabels++] =
			        kl_xasprintf("%s=%s", reg->labels[i]->key, reg->labels[i]->value);
		}
		KL_LOG(KL_INFO, SCHED_COMPONENT,
		       "node %s registered: %u slots, %u sessions held, %s", n->id, reg->slots,
		       (unsigned)reg->n_sessions, reg->software);
	}
	n->pipe = c->pipe;
	n->state = N_READY;
	n->slots = reg->slots;
	n->max_sessions = reg->max_sessions ? reg->max_sessions : 1024;
	n->limits_enforced = reg->limits_enforced;
	kl_strlcpy(n->software, reg->software, sizeof n->software);
	update_templates(n, reg->templates, reg->n_templates);
	n->last_hb_ms = sched_now_ms();
	if (rejoin)
		drop_sessions(s, n, reg);
	else
		rebuild_sessions(s, n, reg);
	ok.code = KILN__CODE__OK;
	ok.heartbeat_ms = s->cfg.heartbeat_ms;
	ok.dead_after_ms = s->cfg.dead_after_ms;
	sctx_reply_env(c, &e);
}

static snode *
live_node(sched *s, const char *id, uint64_t inc)
{
	snode *n = kl_map_get(&s->nodes, id);
	return n && n->incarnation == inc && n->state != N_DEAD ? n : NULL;
}

void
sched_remove_node(sched *s, snode *n)
{
	uint64_t *v = kl_xmalloc(sizeof *v);
	*v = n->incarnation;
	free(kl_map_put(&s->removed, n->id, v));
	n->removing = true;
	sched_hb_flush(s, n);
	node_lost(s, n, "removed by the operator");
}

static void
on_heartbeat(sched *s, sctx *c, Kiln__Heartbeat *hb)
{
	snode *n = live_node(s, hb->node_id, hb->incarnation);
	if (!n) {
		if (removed(s, hb->node_id, hb->incarnation))
			reply_hb(s, NULL, c, KILN__CODE__CANCELLED,
			         "removed by the operator: shut down");
		else
			reply_hb(s, NULL, c, KILN__CODE__NOT_FOUND, "unknown node: register again");
		return;
	}
	n->pipe = c->pipe;
	n->last_hb_ms = sched_now_ms();
	n->running = hb->running;
	n->free_slots = hb->free_slots;
	update_templates(n, hb->templates, hb->n_templates);
	if (n->parked_hb) /* a stale one (the node gave up on it): answer it */
		reply_hb(s, n, n->parked_hb, KILN__CODE__OK, NULL);
	n->parked_hb = c;
	c->park = PK_HB;
	c->state = SC_PARKED;
	c->node = n;
	c->deadline_ms = n->last_hb_ms + s->cfg.heartbeat_ms;
	sched_hb_flush(s, n);
}

static void
on_work_request(sched *s, sctx *c, Kiln__WorkRequest *wr)
{
	snode *n = live_node(s, wr->node_id, wr->incarnation);
	if (!n) {
		reply_assign(c, KILN__CODE__NOT_FOUND, "unknown node: register again", NULL);
		return;
	}
	n->pipe = c->pipe;
	if (wr->done) {
		Kiln__NodeReply *d = wr->done;
		if (d->reply_case == KILN__NODE_REPLY__REPLY_RESULT)
			on_result(s, n, d->result);
		else if (d->reply_case == KILN__NODE_REPLY__REPLY_OPENED)
			on_opened(s, n, d->opened);
		else if (d->reply_case == KILN__NODE_REPLY__REPLY_CLOSED)
			on_closed(s, n, d->closed);
	}
	if (!wr->want_work || n->state == N_DEAD) {
		reply_assign(c, KILN__CODE__OK, NULL, NULL);
		return;
	}
	c->park = PK_WORK;
	c->state = SC_PARKED;
	c->node = n;
	c->deadline_ms = sched_now_ms() + s->cfg.poll_ms;
	kl_list_add_tail(&n->parked_work, &c->link);
	n->nparked++;
	sched_kick(s, n);
}

void
sched_on_node_msg(sched *s, sctx *c, Kiln__Envelope *e)
{
	switch (e->msg_case) {
	case KILN__ENVELOPE__MSG_NODE_REGISTER:
		on_register(s, c, e->node_register);
		break;
	case KILN__ENVELOPE__MSG_HEARTBEAT:
		on_heartbeat(s, c, e->heartbeat);
		break;
	case KILN__ENVELOPE__MSG_WORK_REQUEST:
		on_work_request(s, c, e->work_request);
		break;
	default:
		sctx_reply_error(c, KILN__CODE__INVALID_ARGUMENT,
		                 "not a node message (clients use the client address)", 0);
		break;
	}
}

/* ---- the tick: liveness, long-poll expiry, deadlines, idle sessions ---- */

static void
tick_jobs_and_sessions(sched *s, uint64_t now)
{
	size_t i;
	ssess *idle[256];
	int nidle = 0;
	for (kl_map_ent *e = kl_map_first(&s->sessions, &i); e;
	     e = kl_map_next(&s->sessions, &i, e)) {
		ssess *ss = e->val;
		kl_list *l, *tmp;
		kl_list_for_each_safe (l, tmp, &ss->calls) {
			sjob *j = kl_container_of(l, sjob, link);
			if (j->deadline_ms && j->deadline_ms <= kl_wall_ms())
				job_fail(s, j, KILN__CODE__DEADLINE_EXCEEDED,
				         "deadline passed while the call was queued", 0);
		}
		uint32_t ttl = ss->lim.idle_ttl_ms ? ss->lim.idle_ttl_ms : s->cfg.idle_ttl_ms;
		if (ss->state == S_OPEN && !ss->inflight && !ss->ncalls && ttl &&
		    now - ss->last_used_ms > ttl && nidle < 256)
			idle[nidle++] = ss;
	}
	for (int k = 0; k < nidle; k++) {
		ssess *ss = idle[k];
		KL_LOG(KL_INFO, SCHED_COMPONENT, "session %s closed: idle TTL", ss->id);
		node_queue_ctrl(ss->node, SI_CLOSE, NULL, ss->id, 0);
		sched_hb_flush(s, ss->node);
		sess_free(s, ss, KILN__CODE__OK, NULL);
	}
}

void
sched_tick(sched *s)
{
	static unsigned ticks;
	uint64_t now = sched_now_ms();
	kl_list *l, *tmp;
	kl_list_for_each_safe (l, tmp, &s->node_list) {
		snode *n = kl_container_of(l, snode, link);
		if (now - n->last_hb_ms > s->cfg.dead_after_ms) {
			node_lost(s, n, "no heartbeat");
			continue;
		}
		kl_list *p, *ptmp;
		kl_list_for_each_safe (p, ptmp, &n->parked_work) {
			sctx *c = kl_container_of(p, sctx, link);
			if (c->deadline_ms > now)
				break; /* FIFO: later ones expire later */
			kl_list_del(&c->link);
			n->nparked--;
			reply_assign(c, KILN__CODE__OK, "no work", NULL);
		}
		if (n->parked_hb && n->parked_hb->deadline_ms <= now) {
			sctx *c = n->parked_hb;
			n->parked_hb = NULL;
			reply_hb(s, n, c, KILN__CODE__OK, NULL);
		}
	}
	if (++ticks % 10 == 0)
		tick_jobs_and_sessions(s, now);
}

int
sched_place_bench(sched *s, const char *template_)
{
	pthread_mutex_lock(&s->mu);
	snode *n = sched_place(s, template_, NULL);
	int idx = -1;
	if (n) {
		idx = 0;
		kl_list *l;
		kl_list_for_each (l, &s->node_list) {
			if (kl_container_of(l, snode, link) == n)
				break;
			idx++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return idx;
}

void
limits_copy(Kiln__Limits *dst, const Kiln__Limits *src)
{
	kiln__limits__init(dst);
	if (!src)
		return;
	dst->memory_bytes = src->memory_bytes;
	dst->pids = src->pids;
	dst->cpu_millicores = src->cpu_millicores;
	dst->workspace_bytes = src->workspace_bytes;
	dst->call_timeout_ms = src->call_timeout_ms;
	dst->output_bytes = src->output_bytes;
	dst->idle_ttl_ms = src->idle_ttl_ms;
}

void
sched_seed(sched *s)
{
	if (getrandom(&s->rng, sizeof s->rng, 0) != sizeof s->rng || !s->rng)
		s->rng = kl_now_ns() | 1;
	uint64_t j;
	if (getrandom(&j, sizeof j, 0) != sizeof j)
		j = kl_now_ns();
	s->next_job = (j & ~0xffffffffull) | 1; /* distinct per scheduler run */
}
