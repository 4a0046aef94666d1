/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's lifecycle (create, tick thread, graceful stop, free) and
 * its status report.
 */
#include "sched_impl.h"

#include "kl_clock.h"
#include "kl_log.h"
#include "kl_util.h"

#include <stdio.h>
#include <time.h>

#define TICK_MS 100

static void *
ticker(void *arg)
{
	sched *s = arg;
	pthread_mutex_lock(&s->mu);
	while (!s->stopped) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->tick_cond, &s->mu, &ts);
		if (s->stopped)
			break;
		sched_tick(s);
		pthread_mutex_unlock(&s->mu);
		sched_flush(s);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int
sched_new(const sched_config *cfg, const char *extra_node_url, const char *extra_client_url,
          sched **ret, char *err, size_t errlen)
{
	sched *s = kl_xcalloc(1, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->tick_cond, NULL);
	s->cfg = *cfg;
	/* Own copy of the tenant array: the caller may free theirs. */
	s->cfg.tenants = kl_xcalloc((size_t)cfg->ntenants + 1, sizeof *cfg->tenants);
	memcpy(s->cfg.tenants, cfg->tenants, sizeof *cfg->tenants * (size_t)cfg->ntenants);
	/* The secrets array is the caller's too: keep our own copy. */
	s->cfg.secrets = NULL;
	if (cfg->nsecrets) {
		s->cfg.secrets = kl_xcalloc((size_t)cfg->nsecrets, sizeof *cfg->secrets);
		memcpy(s->cfg.secrets, cfg->secrets, sizeof *cfg->secrets * (size_t)cfg->nsecrets);
	}
	if (!s->cfg.join_token[0]) {
		snprintf(err, errlen, "the scheduler needs a join token (join_token_file)");
		free(s->cfg.tenants);
		free(s->cfg.secrets);
		free(s);
		return -EINVAL;
	}
	kl_list_init(&s->ctxs);
	kl_list_init(&s->sendq);
	kl_list_init(&s->node_list);
	kl_map_init(&s->nodes);
	kl_map_init(&s->sessions);
	kl_map_init(&s->jobs);
	kl_map_init(&s->client_jobs);
	kl_map_init(&s->removed);
	kl_map_init(&s->lost);
	s->started_ms = sched_now_ms();
	sched_seed(s);
	int r = sched_tenants_init(&s->tenants, &s->cfg);
	if (r < 0) {
		snprintf(err, errlen, "tenants: %s", strerror(-r));
		sched_free(s);
		return r;
	}
	if (s->cfg.audit_log[0]) {
		kl_audit_fsync fs = {0};
		if (kl_audit_fsync_parse(s->cfg.audit_fsync[0] ? s->cfg.audit_fsync : "every",
		                         &fs) < 0 ||
		    kl_audit_open(s->cfg.audit_log, &fs, &s->audit, err, errlen) < 0) {
			sched_free(s);
			return -EINVAL;
		}
		kl_audit_admin(s->audit, "scheduler", "start", s->cfg.client_url, "ok");
	}
	if ((r = sched_net_start(s, extra_node_url, extra_client_url, err, errlen)) < 0) {
		sched_free(s);
		return r;
	}
	if (pthread_create(&s->ticker, NULL, ticker, s) == 0)
		s->ticker_running = true;
	KL_LOG(KL_INFO, SCHED_COMPONENT, "scheduler up: %d tenants", s->cfg.ntenants);
	*ret = s;
	return 0;
}

void
sched_stop(sched *s)
{
	pthread_mutex_lock(&s->mu);
	if (s->stopping) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	s->stopping = true;
	uint32_t inflight = s->inflight + s->queued;
	pthread_mutex_unlock(&s->mu);
	KL_LOG(KL_INFO, SCHED_COMPONENT, "stopping: %u calls queued or running", inflight);
	/* New requests are refused from now on; calls in flight may finish. */
	uint64_t until = kl_now_ms() + s->cfg.shutdown_grace_ms;
	while (kl_now_ms() < until) {
		pthread_mutex_lock(&s->mu);
		uint32_t left = s->inflight + s->queued;
		pthread_mutex_unlock(&s->mu);
		if (!left)
			break;
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&s->mu);
	/* Calls still queued never ran: tell their clients so. */
	size_t i;
	kl_map_ent *e;
	uint32_t failed = 0;
	for (e = kl_map_first(&s->sessions, &i); e; e = kl_map_next(&s->sessions, &i, e)) {
		ssess *ss = e->val;
		while (!kl_list_empty(&ss->calls)) {
			job_fail(s, kl_container_of(ss->calls.next, sjob, link),
			         KILN__CODE__UNAVAILABLE,
			         "the scheduler shut down before the call ran", 1000);
			failed++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	sched_flush(s);
	if (failed)
		KL_LOG(KL_INFO, SCHED_COMPONENT, "%u queued calls refused at shutdown", failed);
}

void
sched_free(sched *s)
{
	if (!s)
		return;
	if (s->ticker_running) {
		pthread_mutex_lock(&s->mu);
		s->stopped = true;
		pthread_cond_signal(&s->tick_cond);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->ticker, NULL);
		s->ticker_running = false;
	}
	sched_net_stop(s);
	size_t i;
	kl_map_ent *e;
	while ((e = kl_map_first(&s->sessions, &i)))
		sess_free(s, e->val, KILN__CODE__UNAVAILABLE, "scheduler stopped");
	while ((e = kl_map_first(&s->jobs, &i))) {
		sjob *j = e->val;
		j->cctx = NULL;
		job_finish_client(s, j, &(Kiln__ToolResult)KILN__TOOL_RESULT__INIT);
	}
	kl_list *l;
	while ((l = kl_list_pop(&s->node_list))) {
		snode *n = kl_container_of(l, snode, link);
		kl_map_del(&s->nodes, n->id);
		sched_node_free(n);
	}
	for (e = kl_map_first(&s->removed, &i); e; e = kl_map_next(&s->removed, &i, e))
		free(e->val);
	kl_map_fini(&s->removed);
	for (e = kl_map_first(&s->lost, &i); e; e = kl_map_next(&s->lost, &i, e))
		free(e->val);
	kl_map_fini(&s->lost);
	kl_map_fini(&s->nodes);
	kl_map_fini(&s->sessions);
	kl_map_fini(&s->jobs);
	kl_map_fini(&s->client_jobs);
	sched_tenants_fini(&s->tenants);
	free(s->cfg.tenants);
	if (s->cfg.secrets) {
		explicit_bzero(s->cfg.secrets, sizeof *s->cfg.secrets * (size_t)s->cfg.nsecrets);
		free(s->cfg.secrets);
	}
	if (s->audit) {
		kl_audit_admin(s->audit, "scheduler", "stop", s->cfg.client_url, "ok");
		kl_audit_close(s->audit);
	}
	pthread_cond_destroy(&s->tick_cond);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void
sched_get_counters(sched *s, sched_counters *c)
{
	memset(c, 0, sizeof *c);
	pthread_mutex_lock(&s->mu);
	kl_list *l;
	kl_list_for_each (l, &s->node_list) {
		snode *n = kl_container_of(l, snode, link);
		if (n->state == N_READY)
			c->nodes_ready++;
		else if (n->state == N_DRAINING)
			c->nodes_draining++;
	}
	c->sessions = (uint32_t)kl_map_size(&s->sessions);
	c->queued = s->queued;
	c->inflight = s->inflight;
	c->placements = s->placements;
	c->calls_done = s->calls_done;
	c->node_lost = s->node_lost;
	c->rejected = s->rejected;
	pthread_mutex_unlock(&s->mu);
}

/* ---- status ---- */

static const char *
node_state_name(const snode *n)
{
	return n->state == N_READY ? "ready" : n->state == N_DRAINING ? "draining" : "dead";
}

void
sched_status(sched *s, sctx *c, sched_tenant *only)
{
	uint64_t now = sched_now_ms();
	size_t nn = kl_map_size(&s->nodes);
	Kiln__NodeStatus *ns = kl_xcalloc(nn + 1, sizeof *ns);
	Kiln__NodeStatus **nv = kl_xcalloc(nn + 1, sizeof *nv);
	Kiln__TemplateInfo *ti = kl_xcalloc((nn + 1) * 8, sizeof *ti);
	Kiln__TemplateInfo **tv = kl_xcalloc((nn + 1) * 8, sizeof *tv);
	size_t k = 0, tk = 0;
	kl_list *l;
	kl_list_for_each (l, &s->node_list) {
		snode *n = kl_container_of(l, snode, link);
		Kiln__NodeStatus *x = &ns[k];
		kiln__node_status__init(x);
		x->node_id = n->id;
		x->state = (char *)node_state_name(n);
		x->slots = n->slots;
		x->running = (uint32_t)kl_map_size(&n->inflight);
		x->sessions = n->nsessions;
		x->last_heartbeat_ms_ago = now - n->last_hb_ms;
		x->limits_enforced = n->limits_enforced;
		x->calls_done = n->calls_done;
		x->templates = &tv[tk];
		for (int i = 0; i < n->ntmpl; i++, tk++) {
			kiln__template_info__init(&ti[tk]);
			ti[tk].name = n->tmpl[i].name;
			ti[tk].warm = n->tmpl[i].warm;
			ti[tk].target = n->tmpl[i].target;
			ti[tk].creating = n->tmpl[i].creating;
			tv[tk] = &ti[tk];
			x->n_templates++;
		}
		nv[k] = x;
		k++;
	}
	Kiln__TenantStatus *ts = kl_xcalloc(s->tenants.n + 1, sizeof *ts);
	Kiln__TenantStatus **tsv = kl_xcalloc(s->tenants.n + 1, sizeof *tsv);
	size_t tn = 0;
	for (uint32_t i = 0; i < s->tenants.n; i++) {
		sched_tenant *t = &s->tenants.v[i];
		if (only && only != t)
			continue;
		kiln__tenant_status__init(&ts[tn]);
		ts[tn].name = (char *)t->cfg->name;
		ts[tn].weight = t->cfg->weight;
		ts[tn].sessions = t->sessions;
		ts[tn].max_sessions = t->cfg->max_sessions;
		ts[tn].inflight = t->inflight;
		ts[tn].max_inflight = t->cfg->max_inflight;
		ts[tn].queued = t->queued;
		ts[tn].calls_done = t->calls_done;
		ts[tn].rejected = t->rejected;
		tsv[tn] = &ts[tn];
		tn++;
	}
	Kiln__StatusReply st = KILN__STATUS_REPLY__INIT;
	st.n_nodes = k;
	st.nodes = nv;
	st.n_tenants = tn;
	st.tenants = tsv;
	st.sessions = (uint32_t)kl_map_size(&s->sessions);
	st.queued = s->queued;
	st.inflight = s->inflight;
	st.placements = s->placements;
	st.scheduler = "kiln-scheduler " KILN_VERSION;
	st.uptime_ms = now - s->started_ms;
	Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
	r.reply_case = KILN__CLIENT_REPLY__REPLY_STATUS;
	r.status = &st;
	sctx_reply_client(c, &r);
	free(ns);
	free(nv);
	free(ti);
	free(tv);
	free(ts);
	free(tsv);
}
