/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sessions: a session owns one sandbox from open to close. Opening claims a
 * warm sandbox (or waits for a cold start, or fails, as configured), moves
 * its init into tenants/<tenant>/<session>/init, applies the session's limits
 * to tenants/<tenant>/<session>, and opens the sandbox root for the file
 * tools.
 * Tenant data (environment, files) only arrives now, never in the pool.
 * Calls of a session run one at a time, in order. Close, idle TTL, node
 * shutdown or the sandbox's death destroy the sandbox; nothing is reused.
 */
#include "node_impl.h"

#include "kl_clock.h"
#include "kl_log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>

static bool
valid_name(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

session *
session_find(node *n, const char *id)
{
	return kl_map_get(&n->sessions, id);
}

static void
session_release(node_ref *r)
{
	session *s = kl_container_of(r, session, ref);
	for (size_t i = 0; i < s->nenv; i++)
		free(s->env[i]);
	free(s->env);
	free(s);
}

/* ---- tenants ---- */

static tenant *
tenant_get(node *n, const char *name, int *err)
{
	tenant *t = kl_map_get(&n->tenants, name);
	if (t) {
		t->sessions++;
		return t;
	}
	int fd;
	int r = cg_mkdir(n->cg.tenantsfd, name, (uid_t)-1, (gid_t)-1, n->cg.enabled, &fd);
	if (r < 0) {
		*err = r;
		return NULL;
	}
	t = kl_xcalloc(1, sizeof *t);
	kl_strlcpy(t->name, name, sizeof t->name);
	t->fd = fd;
	t->sessions = 1;
	kl_map_put(&n->tenants, name, t);
	return t;
}

/* Tenant cgroups stay (empty) for the node's lifetime: there are few tenants,
 * and keeping them avoids racing a removal against the next open. They go
 * with the node's tree at shutdown. */
static void
tenant_put(node *n, tenant *t)
{
	(void)n;
	if (t)
		t->sessions--;
}

/* ---- replies ---- */

static void
fill_info(session *s, Kiln__SessionInfo *info, Kiln__Limits *lim)
{
	*lim = s->lim;
	info->session_id = s->id;
	info->tenant = s->tenant_name;
	info->template_ = s->t->cfg.name;
	info->limits = lim;
	info->node_id = s->n->name;
	info->created_unix_ms = s->created_ms;
	info->last_used_unix_ms = s->last_used_ms;
	info->calls = s->calls;
}

static void
session_unlink(session *s)
{
	node *n = s->n;
	if (kl_map_get(&n->sessions, s->id) == s) {
		kl_map_del(&n->sessions, s->id);
		kl_list_del(&s->link);
		n->nsessions--;
	}
	kl_list_del(&s->waitlink);
}

void
session_reply_opened(session *s, int code, const char *msg)
{
	Kiln__SessionInfo info = KILN__SESSION_INFO__INIT;
	Kiln__Limits lim = KILN__LIMITS__INIT;
	Kiln__SessionOpened o = KILN__SESSION_OPENED__INIT;
	Kiln__NodeReply rep = KILN__NODE_REPLY__INIT;
	fill_info(s, &info, &lim);
	o.code = code;
	o.message = (char *)(msg ? msg : "");
	o.session = &info;
	o.limits_enforced = s->n->limits_enforced;
	o.warm = s->warm;
	o.claim_us = (kl_now_ns() - s->t_open_ns) / 1000;
	if (code == KILN__CODE__RESOURCE_EXHAUSTED)
		o.retry_after_ms = 1000;
	rep.reply_case = KILN__NODE_REPLY__REPLY_OPENED;
	rep.opened = &o;
	node_reply_fn *fn = s->open_fn;
	void *arg = s->open_arg;
	s->open_fn = NULL;
	if (code == KILN__CODE__OK) {
		s->state = SS_OPEN;
		egress_session_start(s); /* the proxy serves only open sessions */
	} else {
		session_unlink(s);
		if (s->sb) {
			/* A claim that failed after creating the session's cgroup
			 * would leave it (and the tenant's count) until shutdown. */
			tenant *t = s->sb->tenant;
			bool has_cg = s->sb->sessfd >= 0;
			sandbox_destroy(s->sb);
			if (has_cg)
				graveyard_add(s->n, t->fd, s->id);
			tenant_put(s->n, t);
		}
		s->sb = NULL;
	}
	if (fn)
		fn(arg, &rep);
	if (code != KILN__CODE__OK)
		node_ref_put(&s->ref);
	else
		session_kick(s);
}

static void reply_open_error(node_reply_fn *fn, void *arg, const Kiln__SessionOpen *o, int code,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
reply_open_error(node_reply_fn *fn, void *arg, const Kiln__SessionOpen *o, int code,
                 const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	Kiln__SessionInfo info = KILN__SESSION_INFO__INIT;
	info.session_id = o->session_id;
	info.tenant = o->tenant;
	info.template_ = o->template_;
	Kiln__SessionOpened op = KILN__SESSION_OPENED__INIT;
	op.code = code;
	op.message = msg;
	op.session = &info;
	if (code == KILN__CODE__RESOURCE_EXHAUSTED)
		op.retry_after_ms = 1000;
	Kiln__NodeReply rep = KILN__NODE_REPLY__INIT;
	rep.reply_case = KILN__NODE_REPLY__REPLY_OPENED;
	rep.opened = &op;
	if (fn)
		fn(arg, &rep);
}

/* ---- open and claim ---- */

static void
effective_limits(const tmpl *t, const Kiln__Limits *req, Kiln__Limits *l)
{
	kiln__limits__init(l);
	l->memory_bytes = t->cfg.memory_bytes;
	l->pids = t->cfg.pids;
	l->cpu_millicores = t->cfg.cpu_millicores;
	l->workspace_bytes = t->cfg.workspace_bytes;
	l->call_timeout_ms = t->cfg.call_timeout_ms;
	l->output_bytes = t->cfg.output_bytes;
	l->idle_ttl_ms = t->cfg.idle_ttl_ms;
	if (!req)
		return;
#define OVR(f)      \
	if (req->f) \
	l->f = req->f
	OVR(memory_bytes);
	OVR(pids);
	OVR(cpu_millicores);
	OVR(workspace_bytes);
	OVR(call_timeout_ms);
	OVR(output_bytes);
	OVR(idle_ttl_ms);
#undef OVR
}

static int
copy_env(session *s, const Kiln__SessionOpen *o)
{
	s->env = kl_xcalloc(o->n_env + 1, sizeof *s->env);
	for (size_t i = 0; i < o->n_env; i++) {
		const char *k = o->env[i]->key, *v = o->env[i]->value;
		if (!*k || strchr(k, '=') || strlen(k) + strlen(v) > 65536)
			return -EINVAL;
		s->env[s->nenv++] = kl_xasprintf("%s=%s", k, v);
	}
	return 0;
}

void
session_open(node *n, Kiln__SessionOpen *o, node_reply_fn *fn, void *arg)
{
	const char *tname = *o->tenant ? o->tenant : "default";
	if (n->stopping)
		return reply_open_error(fn, arg, o, KILN__CODE__UNAVAILABLE,
		                        "node is shutting down");
	if (!valid_name(o->session_id, 64) || !valid_name(tname, 64))
		return reply_open_error(fn, arg, o, KILN__CODE__INVALID_ARGUMENT,
		                        "session id and tenant must be 1-64 characters of "
		                        "[A-Za-z0-9._-], not starting with '.' or '-'");
	if (session_find(n, o->session_id))
		return reply_open_error(fn, arg, o, KILN__CODE__FAILED_PRECONDITION,
		                        "session %s already exists on this node", o->session_id);
	if (n->nsessions >= n->cfg.max_sessions)
		return reply_open_error(fn, arg, o, KILN__CODE__RESOURCE_EXHAUSTED,
		                        "node %s is at its session limit (%u)", n->name,
		                        n->cfg.max_sessions);
	tmpl *t = pool_find(n, o->template_);
	if (!t)
		return reply_open_error(fn, arg, o, KILN__CODE__NOT_FOUND,
		                        "unknown template \"%s\"", o->template_);
	session *s = kl_xcalloc(1, sizeof *s);
	s->ref.refs = 1;
	s->ref.release = session_release;
	s->n = n;
	s->t = t;
	kl_strlcpy(s->id, o->session_id, sizeof s->id);
	kl_strlcpy(s->tenant_name, tname, sizeof s->tenant_name);
	kl_list_init(&s->queue);
	kl_list_init(&s->waitlink);
	s->created_ms = s->last_used_ms = kl_wall_ms();
	s->t_open_ns = kl_now_ns();
	s->open_fn = fn;
	s->open_arg = arg;
	effective_limits(t, o->limits, &s->lim);
	if (o->tenant_limits && (o->tenant_limits->memory_bytes || o->tenant_limits->pids ||
	                         o->tenant_limits->cpu_millicores)) {
		s->tenant_lim = *o->tenant_limits;
		s->tenant_lim.base.n_unknown_fields = 0; /* o is freed after the open */
		s->tenant_lim.base.unknown_fields = NULL;
		s->tenant_lim_set = true;
	}
	s->tenant_weight = o->tenant_weight;
	if (copy_env(s, o) < 0) {
		reply_open_error(fn, arg, o, KILN__CODE__INVALID_ARGUMENT,
		                 "environment names must be non-empty without '='");
		node_ref_put(&s->ref);
		return;
	}
	s->state = SS_OPENING;
	kl_map_put(&n->sessions, s->id, s);
	kl_list_add_tail(&n->session_list, &s->link);
	n->nsessions++;
	sandbox *sb = pool_take(t);
	if (sb) {
		s->warm = true;
		n->warm_claims++;
		/* No refill here: creating the replacement now would compete with the
		 * session's first call for the CPUs. The next tick (<= 50 ms) starts it. */
		session_claim_ready(s, sb);
		return;
	}
	if (!n->cfg.cold_start) {
		session_reply_opened(s, KILN__CODE__FAILED_PRECONDITION,
		                     "no warm sandbox for this template (pool empty) and cold "
		                     "starts are disabled; retry shortly");
		return;
	}
	n->cold_starts++;
	kl_list_add_tail(&t->waiters, &s->waitlink);
	pool_tick(n);
}

static int
claim(session *s, sandbox *sb)
{
	node *n = s->n;
	int r;
	char path[64];
	sb->tenant = tenant_get(n, s->tenant_name, &r);
	if (!sb->tenant)
		return r;
	if ((r = cg_mkdir(sb->tenant->fd, s->id, sb->uid, sb->gid, n->cg.enabled, &sb->sessfd)) < 0)
		return r;
	if ((r = cg_mkdir(sb->sessfd, "init", (uid_t)-1, (gid_t)-1, 0, &sb->initfd)) < 0)
		return r;
	if ((r = cg_move(sb->initfd, sb->pid)) < 0)
		return r;
	if (s->tenant_lim_set && n->enforced) {
		/* The tenant's aggregate: every session of the tenant on this node. */
		cg_limits tl = {s->tenant_lim.memory_bytes, s->tenant_lim.pids,
		                s->tenant_lim.cpu_millicores};
		if ((r = cg_set_limits(sb->tenant->fd, n->enforced, &tl)) < 0 && r != -EOPNOTSUPP)
			return r;
	}
	if (s->tenant_weight && (n->enforced & CG_CTRL_CPU) &&
	    (r = cg_set_weight(sb->tenant->fd, s->tenant_weight)) < 0)
		return r;
	cg_limits cl = {s->lim.memory_bytes, s->lim.pids, s->lim.cpu_millicores};
	if (n->enforced && (r = cg_set_limits(sb->sessfd, n->enforced, &cl)) < 0 &&
	    r != -EOPNOTSUPP)
		return r;
	snprintf(path, sizeof path, "%d/root", (int)sb->pid);
	sb->rootfd = openat(n->proc_fd, path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sb->rootfd < 0)
		return -errno;
	return 0;
}

void
session_claim_ready(session *s, sandbox *sb)
{
	tmpl *t = sb->t;
	sb->state = SB_CLAIMED;
	sb->s = s;
	s->sb = sb;
	t->nbusy++;
	int r = claim(s, sb);
	if (r < 0) {
		KL_LOG(KL_ERROR, NODE_COMPONENT, "session=%s claim failed: %s", s->id,
		       strerror(-r));
		char msg[160];
		snprintf(msg, sizeof msg, "claiming a sandbox failed: %s", strerror(-r));
		session_reply_opened(s, KILN__CODE__INTERNAL, msg);
		return;
	}
	if (s->lim.workspace_bytes && s->lim.workspace_bytes != t->cfg.workspace_bytes) {
		uint8_t mem[sizeof(struct ki_hdr)];
		ki_buf m;
		sb->resize_id = sandbox_next_id(sb);
		ki_begin(&m, mem, sizeof mem, KI_RESIZE, sb->resize_id);
		ki_hdr(&m)->x = s->lim.workspace_bytes;
		if (sandbox_send(sb, &m, NULL, 0) < 0)
			session_reply_opened(s, KILN__CODE__INTERNAL,
			                     "resizing the workspace failed");
		return; /* the answer (KI_OK / KI_FAIL) completes the open */
	}
	session_reply_opened(s, KILN__CODE__OK, NULL);
}

/* ---- init messages ---- */

void
session_on_init_msg(session *s, const struct ki_hdr *h, const uint8_t *msg, uint32_t len)
{
	sandbox *sb = s->sb;
	if ((h->type == KI_OK || h->type == KI_FAIL) && sb && h->id == sb->resize_id) {
		sb->resize_id = 0;
		if (h->type == KI_OK)
			session_reply_opened(s, KILN__CODE__OK, NULL);
		else
			session_reply_opened(s, KILN__CODE__INVALID_ARGUMENT,
			                     "the workspace cannot be resized to that size");
		return;
	}
	if (h->type != KI_SPAWNED && h->type != KI_SPAWN_FAILED && h->type != KI_EXITED)
		return;
	if (s->sh && h->id == s->sh->spawn_id) {
		bash_on_init_msg(s, h, msg, len);
		return;
	}
	if (s->cur && s->cur->spawn_id == h->id)
		call_on_init_msg(s->cur, h, msg, len);
}

/* ---- running calls in order ---- */

void
session_kick(session *s)
{
	while (s->state == SS_OPEN && !s->cur && !kl_list_empty(&s->queue)) {
		call *c = kl_list_entry(kl_list_pop(&s->queue), call, link);
		s->nqueued--;
		s->cur = c;
		call_start(c);
	}
}

/* ---- close ---- */

static void
fail_queue(session *s, int code, const char *why)
{
	kl_list *l;
	while ((l = kl_list_pop(&s->queue))) {
		call *c = kl_list_entry(l, call, link);
		s->nqueued--;
		c->done = true;
		s->n->admitted--;
		call_reply_error(s->n, c->tc->job_id, c->fn, c->arg, code, "%s", why);
		c->s = NULL;
		node_ref_put(&s->ref);
		call_free(c);
	}
}

static void
session_teardown(session *s, int code, const char *why)
{
	node *n = s->n;
	s->state = SS_CLOSING;
	session_unlink(s);
	fail_queue(s, code, why);
	if (s->cur) {
		s->cur->cancelled = code == KILN__CODE__CANCELLED;
		call_kill(s->cur, false);
		call_finish(s->cur);
	}
	shell_fini(s);
	egress_session_stop(s);
	sandbox *sb = s->sb;
	if (sb) {
		tenant *t = sb->tenant;
		if (sb->sessfd >= 0) {
			cg_kill(sb->sessfd);
			graveyard_add(n, t->fd, s->id);
		}
		sb->s = NULL;
		sandbox_destroy(sb);
		s->sb = NULL;
		tenant_put(n, t);
	}
}

static void
reply_closed(node_reply_fn *fn, void *arg, const char *id, int code, const char *msg)
{
	Kiln__SessionClosed c = KILN__SESSION_CLOSED__INIT;
	c.code = code;
	c.message = (char *)(msg ? msg : "");
	c.session_id = (char *)id;
	Kiln__NodeReply rep = KILN__NODE_REPLY__INIT;
	rep.reply_case = KILN__NODE_REPLY__REPLY_CLOSED;
	rep.closed = &c;
	if (fn)
		fn(arg, &rep);
}

void
session_close(node *n, const char *id, node_reply_fn *fn, void *arg, int code, const char *why)
{
	session *s = session_find(n, id);
	if (!s) {
		reply_closed(fn, arg, id, KILN__CODE__NOT_FOUND, "no such session on this node");
		return;
	}
	if (s->state == SS_OPENING) {
		/* Close before the open finished: fail the open, then report closed. */
		session_reply_opened(s, KILN__CODE__CANCELLED, "session closed while opening");
		reply_closed(fn, arg, id, KILN__CODE__OK, why);
		return;
	}
	KL_LOG(KL_DEBUG, NODE_COMPONENT, "session=%s closing: %s", s->id, why);
	session_teardown(s, code, why);
	reply_closed(fn, arg, id, KILN__CODE__OK, why);
	node_ref_put(&s->ref);
	node_maybe_finish_stop(n);
}

void
session_sandbox_died(session *s)
{
	node *n = s->n;
	if (s->state == SS_OPENING) {
		s->sb = NULL;
		session_reply_opened(s, KILN__CODE__INTERNAL, "the sandbox died while opening");
		return;
	}
	if (s->state == SS_CLOSING)
		return;
	KL_LOG(KL_WARN, NODE_COMPONENT, "session=%s: its sandbox died; session closed", s->id);
	s->sb = NULL; /* already being destroyed */
	session_teardown(s, KILN__CODE__INTERNAL, "the session's sandbox died");
	node_ref_put(&s->ref);
	node_maybe_finish_stop(n);
}

void
session_tick(node *n)
{
	uint64_t now = kl_wall_ms();
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &n->session_list) {
		session *s = kl_list_entry(p, session, link);
		if (s->state != SS_OPEN || s->cur || s->nqueued || !s->lim.idle_ttl_ms)
			continue;
		if (now - s->last_used_ms >= s->lim.idle_ttl_ms)
			session_close(n, s->id, NULL, NULL, KILN__CODE__CANCELLED,
			              "idle TTL expired");
	}
}
