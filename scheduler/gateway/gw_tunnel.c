/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's tunnel loop (see gw_tunnel.h). One thread owns the TLS
 * connection, the mux and every stream; it polls the TLS socket, the MCP
 * upstream sockets and a mailbox eventfd. Tool calls go to the scheduler
 * with kiln_call_async (their callbacks post to the mailbox); other requests
 * (open, close, status, ...) run on a small fixed pool of worker threads
 * because libkiln's generic request is blocking.
 *
 * Jobs are keyed by the plane's id (plane_id). A request whose id is known
 * is never submitted again: it is attached to the running job, or answered
 * from the kept result. Results stay until the plane acknowledges them on
 * the CONTROL stream, bounded by max_results (beyond it new calls are
 * refused with RESOURCE_EXHAUSTED rather than dropping results).
 */
#include "gw_tunnel.h"

#include "gw_journal.h"
#include "gw_mux.h"
#include "gw_relay.h"
#include "gw_tls.h"
#include "kiln.h"
#include "kl_clock.h"
#include "kl_list.h"
#include "kl_log.h"
#include "kl_map.h"
#include "kl_mbox.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define TN         "tunnel"
#define NWORKERS   4
#define MAX_RELAYS 256
#define REQ_MAX    (72u << 20)

enum { J_RUNNING, J_DONE };

typedef struct gw_job {
	uint64_t plane_id;
	char key[24];
	int state;
	uint32_t sid;   /* the WORK stream that waits for it (0: none now) */
	uint8_t *reply; /* framed TunnelReply (J_DONE) */
	size_t reply_len, sent;
	bool redeliver; /* its stream is gone: deliver on a new one */
	bool marked;    /* reply re-encoded with redelivered = true */
	gw_tunnel *t;
	Kiln__ClientRequest *req; /* while running on a worker */
	kiln_client *kc;          /* the worker's client (the identity's tenant) */
	kl_list wlink;            /* worker queue */
} gw_job;

enum { SK_WORK = 1, SK_MCP };

typedef struct wstream {
	int kind; /* SK_WORK: first, like mstream's, so on_end can tell them apart */
	uint32_t sid;
	uint8_t *buf;
	size_t len, cap;
	gw_job *job;
} wstream;

typedef struct mstream {
	int kind; /* SK_MCP */
	gw_relay relay;
	char route[64];
	kl_list link;
	uint64_t t0;
} mstream;

typedef struct done_item {
	kl_mbox_item it;
	gw_job *job;
	uint8_t *env; /* packed Envelope{tunnel_reply} */
	size_t len;
} done_item;

struct gw_tunnel {
	const gw_config *cfg;
	kl_audit *audit;
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	gw_mux *mux;
	short want; /* TLS wants POLLIN/POLLOUT to progress */
	uint64_t epoch;
	uint8_t token[32];
	uint32_t ctl_sid;
	uint8_t ctlbuf[65536];
	size_t ctllen;
	kl_map jobs;
	kl_map clients; /* identity -> kiln_client */
	kl_mbox mbox;
	kl_list relays;
	int nrelays;
	volatile int stop;
	uint64_t backoff_ms, next_dial_ms, connected_at;
	/* workers for non-call requests */
	pthread_t workers[NWORKERS];
	pthread_mutex_t wmu;
	pthread_cond_t wcond;
	kl_list wq;
	bool wstop;
	pthread_mutex_t smu;
	gw_tunnel_stats st;
	gw_journal *journal; /* NULL: no journal configured */
};

/* ---- replies ---- */

static void
set_error(gw_tunnel *t, const char *why)
{
	pthread_mutex_lock(&t->smu);
	kl_strlcpy(t->st.last_error, why, sizeof t->st.last_error);
	pthread_mutex_unlock(&t->smu);
}

/* A framed TunnelReply: CONTROL-style header (GW_CTL_ENVELOPE) + Envelope. */
static uint8_t *
frame_env(const uint8_t *env, size_t len, size_t *ret_len)
{
	uint8_t *b = kl_xmalloc(GW_CTL_HDR_LEN + len);
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, (uint32_t)len);
	memcpy(b + GW_CTL_HDR_LEN, env, len);
	*ret_len = GW_CTL_HDR_LEN + len;
	return b;
}

static uint8_t *
pack_reply(uint64_t plane_id, Kiln__ClientReply *r, bool redelivered, size_t *ret_len)
{
	Kiln__TunnelReply tr = KILN__TUNNEL_REPLY__INIT;
	tr.plane_id = plane_id;
	tr.reply = r;
	tr.redelivered = redelivered;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_TUNNEL_REPLY;
	e.tunnel_reply = &tr;
	uint8_t *buf;
	size_t len;
	if (kl_env_encode(&e, &buf, &len) < 0)
		kl_env_encode_error(KILN__CODE__INTERNAL, "reply too large", 0, &buf, &len);
	*ret_len = len;
	return buf;
}

static uint8_t *
error_reply(uint64_t plane_id, int code, const char *msg, uint32_t retry, size_t *ret_len)
{
	Kiln__ErrorReply er = KILN__ERROR_REPLY__INIT;
	er.code = code;
	er.message = (char *)msg;
	er.retry_after_ms = retry;
	Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
	r.reply_case = KILN__CLIENT_REPLY__REPLY_ERROR;
	r.error = &er;
	return pack_reply(plane_id, &r, false, ret_len);
}

/* Write as much of the job's reply as the stream takes; FIN when done. */
static void
push_reply(gw_tunnel *t, gw_job *j)
{
	if (!t->mux || !j->sid || j->state != J_DONE)
		return;
	while (j->sent < j->reply_len) {
		ssize_t n =
		        gw_mux_write(t->mux, j->sid, j->reply + j->sent, j->reply_len - j->sent);
		if (n <= 0)
			return; /* on_writable resumes it (or the stream is gone) */
		j->sent += (size_t)n;
	}
	gw_mux_shutdown(t->mux, j->sid);
	pthread_mutex_lock(&t->smu);
	t->st.results_sent++;
	pthread_mutex_unlock(&t->smu);
}

static void
job_done(gw_tunnel *t, gw_job *j, uint8_t *env, size_t len)
{
	j->reply = frame_env(env, len, &j->reply_len);
	free(env);
	j->state = J_DONE;
	j->sent = 0;
	if (t->journal && gw_journal_result(t->journal, j->plane_id, j->reply, j->reply_len) < 0)
		KL_LOG(KL_ERROR, TN,
		       "plane_id=%llu: its result is not in the journal: a gateway crash before "
		       "the plane acknowledges it would lose it",
		       (unsigned long long)j->plane_id);
	pthread_mutex_lock(&t->smu);
	t->st.running--;
	t->st.unacked++;
	pthread_mutex_unlock(&t->smu);
	if (j->sid)
		push_reply(t, j);
	else
		j->redeliver = true;
}

static gw_job *
job_new(gw_tunnel *t, uint64_t plane_id, uint32_t sid)
{
	gw_job *j = kl_xcalloc(1, sizeof *j);
	j->t = t;
	j->plane_id = plane_id;
	j->sid = sid;
	j->state = J_RUNNING;
	snprintf(j->key, sizeof j->key, "%016llx", (unsigned long long)plane_id);
	kl_map_put(&t->jobs, j->key, j);
	pthread_mutex_lock(&t->smu);
	t->st.running++;
	t->st.requests++;
	pthread_mutex_unlock(&t->smu);
	return j;
}

static void
job_free(gw_tunnel *t, gw_job *j)
{
	kl_map_del(&t->jobs, j->key);
	free(j->reply);
	free(j);
}

/* ---- completions (other threads) ---- */

static void
post_done(gw_tunnel *t, gw_job *j, uint8_t *env, size_t len)
{
	done_item *d = kl_xmalloc(sizeof *d);
	d->job = j;
	d->env = env;
	d->len = len;
	kl_mbox_post(&t->mbox, &d->it);
}

static void
call_cb(void *arg, int err, Kiln__ToolResult *res)
{
	gw_job *j = arg;
	size_t len;
	uint8_t *env;
	if (err < 0 || !res) {
		const kiln_error *e = kiln_last_error();
		env = error_reply(j->plane_id, e->code >= 0 ? e->code : KILN__CODE__UNAVAILABLE,
		                  e->message, e->retry_after_ms, &len);
	} else {
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_RESULT;
		r.result = res;
		env = pack_reply(j->plane_id, &r, false, &len);
	}
	if (res)
		kiln_result_free(res);
	post_done(j->t, j, env, len);
}

static kiln_client *
client_for(gw_tunnel *t, const char *identity, const char **ret_token)
{
	const gw_identity *id = gw_config_identity(t->cfg, identity);
	if (!id)
		return NULL;
	*ret_token = id->token;
	kiln_client *k = kl_map_get(&t->clients, identity);
	if (k)
		return k;
	char err[256];
	if (kiln_connect(t->cfg->scheduler, id->token, &k, err, sizeof err) < 0) {
		KL_LOG(KL_WARN, TN, "scheduler %s: %s", t->cfg->scheduler, err);
		return NULL;
	}
	kl_map_put(&t->clients, identity, k);
	return k;
}

static void *
worker_main(void *arg)
{
	gw_tunnel *t = arg;
	for (;;) {
		pthread_mutex_lock(&t->wmu);
		while (!t->wstop && kl_list_empty(&t->wq))
			pthread_cond_wait(&t->wcond, &t->wmu);
		if (kl_list_empty(&t->wq)) {
			pthread_mutex_unlock(&t->wmu);
			return NULL;
		}
		gw_job *j = kl_container_of(kl_list_pop(&t->wq), gw_job, wlink);
		kiln_client *k = j->req ? j->kc : NULL;
		pthread_mutex_unlock(&t->wmu);
		Kiln__ClientReply *rep = NULL;
		size_t len;
		uint8_t *env;
		if (k && kiln_request(k, j->req, &rep) == 0) {
			env = pack_reply(j->plane_id, rep, false, &len);
			kiln_reply_free(rep);
		} else {
			const kiln_error *e = kiln_last_error();
			env = error_reply(j->plane_id,
			                  e->code >= 0 ? e->code : KILN__CODE__UNAVAILABLE,
			                  e->message, e->retry_after_ms, &len);
		}
		kiln__client_request__free_unpacked(j->req, NULL);
		j->req = NULL;
		post_done(t, j, env, len);
	}
}

/* ---- requests from the plane ---- */

static void
answer_now(gw_tunnel *t, gw_job *j, int code, const char *msg, uint32_t retry)
{
	size_t len;
	uint8_t *env = error_reply(j->plane_id, code, msg, retry, &len);
	job_done(t, j, env, len);
}

static void
handle_request(gw_tunnel *t, wstream *ws, Kiln__TunnelRequest *tr)
{
	char key[24];
	snprintf(key, sizeof key, "%016llx", (unsigned long long)tr->plane_id);
	gw_job *j = kl_map_get(&t->jobs, key);
	if (j) { /* seen before: never run it twice; attach to it */
		pthread_mutex_lock(&t->smu);
		t->st.duplicates++;
		pthread_mutex_unlock(&t->smu);
		if (j->sid && j->sid != ws->sid && t->mux) {
			/* The stream that asked first is still open: it gets no answer
			 * now, so say so rather than leave it waiting. */
			wstream *old = gw_mux_udata(t->mux, j->sid);
			if (old && old->kind == SK_WORK)
				old->job = NULL;
			gw_mux_reset(t->mux, j->sid, GW_E_CANCEL,
			             "the same plane_id was asked again on another stream; "
			             "the answer goes there");
		}
		j->sid = ws->sid;
		j->sent = 0;
		j->redeliver = false;
		ws->job = j;
		push_reply(t, j);
		return;
	}
	j = job_new(t, tr->plane_id, ws->sid);
	ws->job = j;
	/* Journal it before it can run: after a crash the gateway must know it may have. */
	if (t->journal && gw_journal_accept(t->journal, j->plane_id) < 0)
		return answer_now(t, j, KILN__CODE__UNAVAILABLE,
		                  "the gateway cannot write its journal (see its log); not run",
		                  1000);
	if (!tr->request || tr->request->op_case == KILN__CLIENT_REQUEST__OP__NOT_SET)
		return answer_now(t, j, KILN__CODE__INVALID_ARGUMENT,
		                  "the request names no operation", 0);
	if ((uint32_t)kl_map_size(&t->jobs) > t->cfg->max_results)
		return answer_now(t, j, KILN__CODE__RESOURCE_EXHAUSTED,
		                  "the gateway holds too many unacknowledged results; "
		                  "acknowledge them",
		                  1000);
	const char *token;
	kiln_client *k = client_for(t, tr->identity, &token);
	if (!k) {
		char m[300];
		snprintf(m, sizeof m,
		         gw_config_identity(t->cfg, tr->identity)
		                 ? "the scheduler is unreachable from the gateway"
		                 : "identity '%.200s' is not configured on this gateway",
		         tr->identity);
		return answer_now(t, j,
		                  gw_config_identity(t->cfg, tr->identity)
		                          ? KILN__CODE__UNAVAILABLE
		                          : KILN__CODE__PERMISSION_DENIED,
		                  m, 1000);
	}
	if (tr->request->op_case == KILN__CLIENT_REQUEST__OP_CALL) {
		if (kiln_call_async(k, tr->request->call, call_cb, j) < 0)
			answer_now(t, j, KILN__CODE__UNAVAILABLE, kiln_last_error()->message, 1000);
		return;
	}
	/* Keep a copy for the worker: tr is freed when we return. The copy carries
	 * no token: libkiln would send the plane's instead of the identity's. */
	char *plane_token = tr->request->token;
	tr->request->token = (char *)"";
	size_t plen = kiln__client_request__get_packed_size(tr->request);
	uint8_t *buf = kl_xmalloc(plen);
	kiln__client_request__pack(tr->request, buf);
	tr->request->token = plane_token;
	j->req = kiln__client_request__unpack(NULL, plen, buf);
	free(buf);
	j->kc = k;
	pthread_mutex_lock(&t->wmu);
	kl_list_add_tail(&t->wq, &j->wlink);
	pthread_cond_signal(&t->wcond);
	pthread_mutex_unlock(&t->wmu);
}

static void
work_readable(gw_tunnel *t, wstream *ws)
{
	for (;;) {
		if (ws->len == ws->cap) {
			if (ws->cap >= REQ_MAX) {
				gw_mux_reset(t->mux, ws->sid, GW_E_CALM, "request too large");
				return;
			}
			ws->cap = ws->cap ? ws->cap * 2 : 16384;
			ws->buf = kl_xrealloc(ws->buf, ws->cap);
		}
		ssize_t n = gw_mux_read(t->mux, ws->sid, ws->buf + ws->len, ws->cap - ws->len);
		if (n <= 0)
			break;
		ws->len += (size_t)n;
	}
	struct gw_ctl_msg msg;
	int used;
	while (!ws->job && (used = gw_ctl_parse(ws->buf, ws->len, GW_CTL_BODY_MAX, &msg)) > 0) {
		Kiln__Envelope *e = NULL;
		uint32_t v;
		int r = msg.type == GW_CTL_ENVELOPE
		                ? kl_env_decode(msg.body, msg.len, KL_MAX_MSG, &e, &v)
		                : -EBADMSG;
		if (r < 0 || e->msg_case != KILN__ENVELOPE__MSG_TUNNEL_REQUEST) {
			gw_mux_reset(t->mux, ws->sid, GW_E_PROTOCOL,
			             r == -EPROTO ? "protocol version mismatch"
			                          : "expected a TunnelRequest envelope");
			if (e)
				kiln__envelope__free_unpacked(e, NULL);
			return;
		}
		handle_request(t, ws, e->tunnel_request);
		kiln__envelope__free_unpacked(e, NULL);
		memmove(ws->buf, ws->buf + used, ws->len - (size_t)used);
		ws->len -= (size_t)used;
	}
	if (used < 0 && !ws->job)
		gw_mux_reset(t->mux, ws->sid, GW_E_PROTOCOL, "malformed message");
}

/* ---- journal ---- */

/* Rewrite the journal with what is live now (after many acknowledgements). */
static void
journal_rewrite(gw_tunnel *t)
{
	size_t n = 0, i;
	gw_journal_entry *ents = kl_xcalloc(kl_map_size(&t->jobs) + 1, sizeof *ents);
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		ents[n++] = (gw_journal_entry){j->plane_id, j->state == J_DONE ? j->reply : NULL,
		                               j->state == J_DONE ? j->reply_len : 0};
	}
	gw_journal_rewrite(t->journal, t->token, t->epoch, ents, n);
	free(ents);
}

/* gw_journal_open's callback: a call the previous gateway process had. */
static void
journal_entry(void *arg, uint64_t plane_id, uint8_t *reply, size_t reply_len)
{
	gw_tunnel *t = arg;
	gw_job *j = job_new(t, plane_id, 0);
	if (reply) { /* finished: its result is kept until the plane acknowledges it */
		j->reply = reply;
		j->reply_len = reply_len;
		j->state = J_DONE;
		j->redeliver = true;
		t->st.running--;
		t->st.unacked++;
	}
}

/* Open the journal: carry over the session and every call it holds. Calls
 * that were running when the previous process died are answered NODE_LOST:
 * whether they ran is unknown, and they are never submitted again. */
static int
journal_open(gw_tunnel *t, char *err, size_t errlen)
{
	bool had;
	int r = gw_journal_open(t->cfg->journal, t->cfg->journal_fsync, t->token, &t->epoch, &had,
	                        journal_entry, t, &t->journal, err, errlen);
	if (r < 0)
		return r;
	if (!had && (r = gw_journal_session(t->journal, t->token, 0)) < 0) {
		snprintf(err, errlen, "journal %s: %s", t->cfg->journal, strerror(-r));
		return r;
	}
	size_t i, lost = 0, kept = 0;
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		if (j->state == J_DONE) {
			kept++;
			continue;
		}
		lost++;
		size_t len;
		uint8_t *env =
		        error_reply(j->plane_id, KILN__CODE__NODE_LOST,
		                    "the gateway restarted while this call was in flight: "
		                    "its outcome is unknown (it may have run); it is not run "
		                    "again",
		                    0, &len);
		job_done(t, j, env, len);
		j->redeliver = true;
	}
	if (lost || kept)
		KL_LOG(KL_WARN, TN,
		       "journal: %zu results kept from before the restart; %zu calls that were "
		       "running are answered NODE_LOST (outcome unknown)",
		       kept, lost);
	return 0;
}

/* ---- CONTROL ---- */

static void
on_ack(gw_tunnel *t, const Kiln__TunnelAck *a)
{
	for (size_t i = 0; i < a->n_plane_ids; i++) {
		char key[24];
		snprintf(key, sizeof key, "%016llx", (unsigned long long)a->plane_ids[i]);
		gw_job *j = kl_map_get(&t->jobs, key);
		if (!j || j->state != J_DONE)
			continue;
		if (t->journal)
			gw_journal_ack(t->journal, j->plane_id);
		job_free(t, j);
		pthread_mutex_lock(&t->smu);
		t->st.acked++;
		t->st.unacked--;
		pthread_mutex_unlock(&t->smu);
	}
	if (t->journal && gw_journal_wants_rewrite(t->journal))
		journal_rewrite(t);
}

static void
control_readable(gw_tunnel *t, uint32_t sid)
{
	for (;;) {
		ssize_t n = gw_mux_read(t->mux, sid, t->ctlbuf + t->ctllen,
		                        sizeof t->ctlbuf - t->ctllen);
		if (n <= 0)
			break;
		t->ctllen += (size_t)n;
		struct gw_ctl_msg msg;
		int used;
		while ((used = gw_ctl_parse(t->ctlbuf, t->ctllen, sizeof t->ctlbuf - GW_CTL_HDR_LEN,
		                            &msg)) > 0) {
			Kiln__Envelope *e = NULL;
			if (msg.type == GW_CTL_ENVELOPE &&
			    kl_env_decode(msg.body, msg.len, KL_MAX_MSG, &e, NULL) == 0 &&
			    e->msg_case == KILN__ENVELOPE__MSG_TUNNEL_CONTROL &&
			    e->tunnel_control->msg_case == KILN__TUNNEL_CONTROL__MSG_ACK)
				on_ack(t, e->tunnel_control->ack);
			if (e)
				kiln__envelope__free_unpacked(e, NULL);
			memmove(t->ctlbuf, t->ctlbuf + used, t->ctllen - (size_t)used);
			t->ctllen -= (size_t)used;
		}
		if (used < 0) {
			gw_mux_goaway(t->mux, GW_E_PROTOCOL, "malformed CONTROL message");
			return;
		}
	}
}

/* After every HELLO: RESUME on a new CONTROL stream, then redeliver. */
static void
send_resume(gw_tunnel *t)
{
	size_t nj = kl_map_size(&t->jobs), ni = 0, nu = 0, i;
	uint64_t *in = kl_xcalloc(nj + 1, 8), *un = kl_xcalloc(nj + 1, 8);
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		if (j->state == J_RUNNING)
			in[ni++] = j->plane_id;
		else
			un[nu++] = j->plane_id;
	}
	if (gw_mux_open(t->mux, GW_KIND_CONTROL, NULL, 0, NULL, &t->ctl_sid) == 0) {
		Kiln__TunnelResume rs = KILN__TUNNEL_RESUME__INIT;
		rs.n_in_flight = ni;
		rs.in_flight = in;
		rs.n_unacked = nu;
		rs.unacked = un;
		rs.epoch = t->epoch;
		Kiln__TunnelControl tc = KILN__TUNNEL_CONTROL__INIT;
		tc.msg_case = KILN__TUNNEL_CONTROL__MSG_RESUME;
		tc.resume = &rs;
		Kiln__Envelope e = KILN__ENVELOPE__INIT;
		e.msg_case = KILN__ENVELOPE__MSG_TUNNEL_CONTROL;
		e.tunnel_control = &tc;
		uint8_t *env;
		size_t len, flen;
		if (kl_env_encode(&e, &env, &len) == 0) {
			uint8_t *f = frame_env(env, len, &flen);
			gw_mux_write(t->mux, t->ctl_sid, f, flen);
			free(f);
			free(env);
		}
	}
	KL_LOG(KL_INFO, TN, "resume: %zu calls still running, %zu results to redeliver", ni, nu);
	free(in);
	free(un);
}

/* Mark the kept reply as a redelivery (TunnelReply.redelivered), so the plane
 * can tell it from a second answer. Once per job; re-encoding is rare. */
static void
mark_redelivered(gw_job *j)
{
	struct gw_ctl_msg msg;
	Kiln__Envelope *e = NULL;
	if (j->marked)
		return;
	j->marked = true;
	if (gw_ctl_parse(j->reply, j->reply_len, GW_CTL_BODY_MAX, &msg) <= 0 ||
	    kl_env_decode(msg.body, msg.len, KL_MAX_MSG, &e, NULL) < 0)
		return;
	uint8_t *env;
	size_t len;
	if (e->msg_case == KILN__ENVELOPE__MSG_TUNNEL_REPLY) {
		e->tunnel_reply->redelivered = true;
		if (kl_env_encode(e, &env, &len) == 0) {
			free(j->reply);
			j->reply = frame_env(env, len, &j->reply_len);
			free(env);
		}
	}
	kiln__envelope__free_unpacked(e, NULL);
}

static void
redeliver(gw_tunnel *t)
{
	size_t i;
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		if (j->state != J_DONE || !j->redeliver)
			continue;
		uint8_t meta[8];
		gw_put64(meta, j->plane_id);
		uint32_t sid;
		if (gw_mux_open(t->mux, GW_KIND_WORK, meta, sizeof meta, NULL, &sid) < 0)
			return; /* stream limit: the rest goes at the next pump */
		j->sid = sid;
		j->sent = 0;
		j->redeliver = false;
		mark_redelivered(j);
		pthread_mutex_lock(&t->smu);
		t->st.redelivered++;
		pthread_mutex_unlock(&t->smu);
		push_reply(t, j);
	}
}

/* ---- MCP routes ---- */

static bool
private_addr(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
		return (a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) ||
		       (a >> 16) == (192u << 8 | 168) || (a >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const uint8_t lo[16] = {[15] = 1};
		return (b[0] & 0xfe) == 0xfc || !memcmp(b, lo, 16);
	}
	return false;
}

static bool
metadata_addr(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET &&
	       ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 16 == (169u << 8 | 254);
}

static int
mcp_open(gw_tunnel *t, uint32_t sid, const uint8_t *meta, size_t len)
{
	char name[GW_ROUTE_MAX + 1], msg[640];
	snprintf(name, sizeof name, "%.*s", (int)KL_MIN(len, GW_ROUTE_MAX), (const char *)meta);
	const gw_route *r = gw_config_route(t->cfg, name);
	if (!r) {
		snprintf(msg, sizeof msg, "unknown MCP route '%s'", name);
		gw_mux_reset(t->mux, sid, GW_E_APP + 2, msg);
		return -ENOENT;
	}
	if (t->nrelays >= MAX_RELAYS) {
		gw_mux_reset(t->mux, sid, GW_E_CALM, "too many MCP streams at once");
		return -EAGAIN;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char port[8];
	snprintf(port, sizeof port, "%u", r->port);
	if (getaddrinfo(r->host, port, &hints, &res) || !res) {
		snprintf(msg, sizeof msg, "route '%s': cannot resolve %s", name, r->host);
		gw_mux_reset(t->mux, sid, GW_E_APP + 3, msg);
		return -ENOENT;
	}
	if (metadata_addr(res->ai_addr) || (!r->allow_public && !private_addr(res->ai_addr))) {
		snprintf(msg, sizeof msg,
		         "route '%s': %s is not a private address (set allow_public = true to "
		         "allow it)",
		         name, r->host);
		freeaddrinfo(res);
		gw_mux_reset(t->mux, sid, GW_E_APP + 4, msg);
		return -EPERM;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int cr = fd >= 0 ? connect(fd, res->ai_addr, res->ai_addrlen) : -1;
	if (fd < 0 || (cr < 0 && errno != EINPROGRESS)) {
		snprintf(msg, sizeof msg, "route '%s': cannot connect to %s:%u", name, r->host,
		         r->port);
		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		gw_mux_reset(t->mux, sid, GW_E_APP + 1, msg);
		return -ECONNREFUSED;
	}
	freeaddrinfo(res);
	mstream *m = kl_xcalloc(1, sizeof *m);
	m->kind = SK_MCP;
	gw_relay_init(&m->relay, t->mux, sid, fd, true);
	kl_strlcpy(m->route, name, sizeof m->route);
	m->t0 = kl_now_ms();
	kl_list_add_tail(&t->relays, &m->link);
	t->nrelays++;
	gw_mux_set_udata(t->mux, sid, m);
	pthread_mutex_lock(&t->smu);
	t->st.mcp_streams++;
	pthread_mutex_unlock(&t->smu);
	return 0;
}

/* ---- mux callbacks ---- */

static int
on_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	gw_tunnel *t = arg;
	KL_LOG(KL_INFO, TN, "control plane says hello (epoch %llu)",
	       (unsigned long long)peer->epoch);
	t->backoff_ms = t->cfg->backoff_min_ms; /* a working connection resets the backoff */
	send_resume(t);
	redeliver(t);
	return 0;
}

static int
on_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t meta_len, void *arg)
{
	gw_tunnel *t = arg;
	if (kind == GW_KIND_WORK) {
		wstream *ws = kl_xcalloc(1, sizeof *ws);
		ws->kind = SK_WORK;
		ws->sid = id;
		gw_mux_set_udata(m, id, ws);
		return 0;
	}
	if (kind == GW_KIND_MCP) {
		mcp_open(t, id, meta, meta_len);
		return 0;
	}
	return GW_E_PROTOCOL; /* CONTROL is ours to open */
}

static void
on_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	gw_tunnel *t = arg;
	if (id == t->ctl_sid) {
		control_readable(t, id);
		return;
	}
	int kind = gw_mux_stream_kind(m, id);
	if (kind == GW_KIND_MCP && udata)
		gw_relay_on_stream_readable(&((mstream *)udata)->relay);
	else if (kind == GW_KIND_WORK && udata && !(id & 1)) /* plane-opened */
		work_readable(t, udata);
	else if (kind == GW_KIND_WORK) { /* our redelivery stream: drain the plane's FIN */
		char sink[256];
		while (gw_mux_read(m, id, sink, sizeof sink) > 0)
			;
	}
}

static void
on_writable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	gw_tunnel *t = arg;
	int kind = gw_mux_stream_kind(m, id);
	if (kind == GW_KIND_MCP && udata) {
		gw_relay_on_stream_writable(&((mstream *)udata)->relay);
		return;
	}
	size_t i;
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		if (j->sid == id)
			push_reply(t, j);
	}
}

static void
on_end(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata, void *arg)
{
	gw_tunnel *t = arg;
	if (id == t->ctl_sid) {
		t->ctl_sid = 0;
		return;
	}
	size_t i;
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		if (j->sid != id)
			continue;
		j->sid = 0;
		if (j->state == J_DONE && j->sent < j->reply_len)
			j->redeliver = true; /* not (fully) delivered: again later */
	}
	if (!udata)
		return;
	if (*(int *)udata == SK_MCP) {
		mstream *ms = udata;
		ms->relay.failed = true; /* reaped by the loop */
		ms->relay.sid = 0;
		return;
	}
	wstream *ws = udata;
	free(ws->buf);
	free(ws);
}

static void
on_goaway(gw_mux *m, uint32_t last_id, uint32_t code, const char *msg, void *arg)
{
	KL_LOG(KL_WARN, TN, "control plane sent GOAWAY (%s): %s", gw_code_name(code), msg);
}

static const struct gw_mux_ops ops = {on_hello,    on_open, on_readable,
                                      on_writable, on_end,  on_goaway};

/* ---- the connection ---- */

/* Jittered exponential backoff: the next dial in [b/2, b), b doubling up to
 * the maximum (reset once a connection works). */
static void
schedule_redial(gw_tunnel *t)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = kl_now_ns();
	uint64_t b = t->backoff_ms ? t->backoff_ms : 1000;
	t->next_dial_ms = kl_now_ms() + b / 2 + (b > 1 ? r % (b / 2) : 0);
	t->backoff_ms = KL_MIN(b * 2, (uint64_t)t->cfg->backoff_max_ms);
}

static void
disconnect(gw_tunnel *t, const char *why)
{
	if (!t->mux && !t->ssl)
		return;
	KL_LOG(KL_WARN, TN, "tunnel down: %s; calls keep running, results are kept", why);
	set_error(t, why);
	if (t->mux) {
		gw_mux_eof(t->mux); /* every stream ends: jobs detach, relays fail */
		gw_mux_free(t->mux);
		t->mux = NULL;
	}
	gw_tls_close(t->ssl, t->fd);
	t->ssl = NULL;
	t->fd = -1;
	t->ctl_sid = 0;
	t->ctllen = 0;
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &t->relays) {
		mstream *m = kl_container_of(p, mstream, link);
		kl_list_del(&m->link);
		gw_relay_fini(&m->relay);
		free(m);
		t->nrelays--;
	}
	size_t i;
	for (kl_map_ent *e = kl_map_first(&t->jobs, &i); e; e = kl_map_next(&t->jobs, &i, e)) {
		gw_job *j = e->val;
		j->sid = 0;
		if (j->state == J_DONE)
			j->redeliver = true;
	}
	schedule_redial(t);
	pthread_mutex_lock(&t->smu);
	t->st.connected = false;
	t->st.disconnects++;
	pthread_mutex_unlock(&t->smu);
}

static int
dial(gw_tunnel *t)
{
	char err[512];
	gw_tls_dial_cfg dc = {
	        .host = t->cfg->plane_host,
	        .port = t->cfg->plane_port,
	        .server_name = t->cfg->server_name[0] ? t->cfg->server_name : NULL,
	        .ca_file = t->cfg->ca_file,
	        .cert_file = t->cfg->cert_file,
	        .key_file = t->cfg->key_file,
	        .proxy_host = t->cfg->proxy_host[0] ? t->cfg->proxy_host : NULL,
	        .proxy_port = t->cfg->proxy_port,
	        .timeout_ms = 10000,
	};
	int r = gw_tls_dial(t->ctx, &dc, &t->ssl, &t->fd, err, sizeof err);
	if (r < 0) {
		KL_LOG(KL_WARN, TN, "dial: %s", err);
		set_error(t, err);
		schedule_redial(t);
		return r;
	}
	struct gw_mux_config mc = {
	        .role = GW_ROLE_GATEWAY,
	        .ping_interval_ms = t->cfg->ping_interval_ms,
	        .epoch = ++t->epoch,
	        .token = t->token,
	        .token_len = sizeof t->token,
	        .resume = t->epoch > 1,
	        .ops = &ops,
	        .arg = t,
	};
	if ((r = gw_mux_new(&mc, &t->mux)) < 0) {
		gw_tls_close(t->ssl, t->fd);
		t->ssl = NULL;
		t->fd = -1;
		schedule_redial(t);
		return r;
	}
	if (t->journal)
		gw_journal_session(t->journal, t->token, t->epoch);
	t->connected_at = kl_now_ms();
	t->want = POLLIN;
	KL_LOG(KL_INFO, TN, "tunnel up to %s:%u (TLS 1.3, client certificate)", t->cfg->plane_host,
	       t->cfg->plane_port);
	pthread_mutex_lock(&t->smu);
	t->st.connected = true;
	t->st.connects++;
	t->st.last_error[0] = 0;
	pthread_mutex_unlock(&t->smu);
	return 0;
}

/* TLS -> mux. False when the connection ended. */
static bool
pump_in(gw_tunnel *t)
{
	uint8_t buf[65536];
	char err[256];
	for (;;) {
		short want = 0;
		ssize_t n = gw_tls_read(t->ssl, buf, sizeof buf, &want, err, sizeof err);
		if (n == -EAGAIN) {
			t->want = want;
			return true;
		}
		if (n <= 0) {
			disconnect(t, n == 0 ? "the control plane closed the connection" : err);
			return false;
		}
		int r = gw_mux_input(t->mux, buf, (size_t)n);
		if (r < 0) {
			char why[600];
			snprintf(why, sizeof why, "tunnel protocol: %s", gw_mux_error(t->mux));
			/* Let the GOAWAY out before closing. */
			struct iovec iov[4];
			int k;
			while ((k = gw_mux_output(t->mux, iov, 4)) > 0) {
				short w;
				ssize_t wn = gw_tls_write(t->ssl, iov[0].iov_base, iov[0].iov_len,
				                          &w, err, sizeof err);
				if (wn <= 0)
					break;
				gw_mux_consume(t->mux, (size_t)wn);
			}
			disconnect(t, why);
			return false;
		}
	}
}

/* mux -> TLS. False when the connection ended. */
static bool
pump_out(gw_tunnel *t)
{
	struct iovec iov[8];
	char err[256];
	int k;
	while ((k = gw_mux_output(t->mux, iov, 8)) > 0) {
		for (int i = 0; i < k; i++) {
			short want = 0;
			ssize_t n = gw_tls_write(t->ssl, iov[i].iov_base, iov[i].iov_len, &want,
			                         err, sizeof err);
			if (n == -EAGAIN) {
				t->want = want;
				return true;
			}
			if (n <= 0) {
				disconnect(t, err);
				return false;
			}
			gw_mux_consume(t->mux, (size_t)n);
			if ((size_t)n < iov[i].iov_len)
				return true; /* partial: the next output call resumes */
		}
	}
	t->want = POLLIN;
	return true;
}

static void
drain_mailbox(gw_tunnel *t)
{
	uint64_t v;
	ssize_t k = read(t->mbox.efd, &v, sizeof v);
	(void)k;
	kl_mbox_item *it = kl_mbox_take_all(&t->mbox);
	while (it) {
		done_item *d = (done_item *)it;
		it = it->next;
		job_done(t, d->job, d->env, d->len);
		free(d);
	}
	if (t->mux && gw_mux_peer_hello(t->mux)) /* before HELLO: on_hello does it after RESUME */
		redeliver(t);
}

static void
reap_relays(gw_tunnel *t)
{
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &t->relays) {
		mstream *m = kl_container_of(p, mstream, link);
		if (!gw_relay_done(&m->relay))
			continue;
		KL_LOG(KL_DEBUG, TN, "mcp route=%s up=%llu down=%llu ms=%llu", m->route,
		       (unsigned long long)m->relay.up, (unsigned long long)m->relay.down,
		       (unsigned long long)(kl_now_ms() - m->t0));
		if (m->relay.sid && t->mux)
			gw_mux_set_udata(t->mux, m->relay.sid, NULL);
		kl_list_del(&m->link);
		gw_relay_fini(&m->relay);
		free(m);
		t->nrelays--;
	}
}

/* One round of the loop: poll, then feed everything that is ready. */
static void
loop_once(gw_tunnel *t)
{
	struct pollfd pf[2 + MAX_RELAYS];
	mstream *rel[MAX_RELAYS];
	int n = 0, timeout = 1000;
	pf[n++] = (struct pollfd){t->mbox.efd, POLLIN, 0};
	if (t->mux) {
		bool out = gw_mux_want_output(t->mux);
		pf[n++] = (struct pollfd){t->fd, (short)(t->want | (out ? POLLOUT : 0)), 0};
		int64_t tk = gw_mux_tick(t->mux, kl_now_ms());
		if (tk < 0) {
			disconnect(t, "the control plane stopped answering pings");
			return;
		}
		timeout = (int)KL_MIN(tk, 1000);
		kl_list *p;
		kl_list_for_each (p, &t->relays) {
			mstream *m = kl_container_of(p, mstream, link);
			rel[n - 2] = m;
			pf[n++] = (struct pollfd){m->relay.fd, gw_relay_events(&m->relay), 0};
		}
	} else {
		int64_t wait = (int64_t)t->next_dial_ms - (int64_t)kl_now_ms();
		timeout = (int)KL_MAX(KL_MIN(wait, 1000), 0);
	}
	poll(pf, (nfds_t)n, timeout);
	if (pf[0].revents)
		drain_mailbox(t);
	if (!t->mux) {
		if (!t->stop && kl_now_ms() >= t->next_dial_ms)
			dial(t);
		return;
	}
	if (pf[1].revents & (POLLIN | POLLHUP | POLLERR) || (pf[1].revents & POLLOUT))
		if (!pump_in(t))
			return;
	for (int i = 2; i < n && t->mux; i++)
		if (pf[i].revents)
			gw_relay_on_fd(&rel[i - 2]->relay, pf[i].revents);
	reap_relays(t);
	if (t->mux)
		pump_out(t);
}

/* ---- lifecycle ---- */

int
gw_tunnel_new(const gw_config *cfg, kl_audit *audit, gw_tunnel **ret, char *err, size_t errlen)
{
	gw_tunnel *t = kl_xcalloc(1, sizeof *t);
	t->cfg = cfg;
	t->audit = audit;
	t->fd = -1;
	gw_tls_dial_cfg dc = {
	        .ca_file = cfg->ca_file, .cert_file = cfg->cert_file, .key_file = cfg->key_file};
	t->ctx = gw_tls_client_ctx(&dc, err, errlen);
	if (!t->ctx) {
		free(t);
		return -EINVAL;
	}
	if (getrandom(t->token, sizeof t->token, 0) != sizeof t->token) {
		snprintf(err, errlen, "getrandom failed");
		SSL_CTX_free(t->ctx);
		free(t);
		return -EIO;
	}
	kl_map_init(&t->jobs);
	kl_map_init(&t->clients);
	kl_list_init(&t->relays);
	kl_list_init(&t->wq);
	kl_mbox_init(&t->mbox);
	pthread_mutex_init(&t->wmu, NULL);
	pthread_cond_init(&t->wcond, NULL);
	pthread_mutex_init(&t->smu, NULL);
	t->backoff_ms = cfg->backoff_min_ms;
	for (int i = 0; i < NWORKERS; i++)
		pthread_create(&t->workers[i], NULL, worker_main, t);
	if (cfg->journal[0] && journal_open(t, err, errlen) < 0) {
		gw_tunnel_free(t);
		return -EIO;
	}
	if (!cfg->journal[0])
		KL_LOG(KL_WARN, TN,
		       "no journal configured: if this gateway dies, the plane cannot learn what "
		       "it had accepted (set journal = PATH in [gateway])");
	*ret = t;
	return 0;
}

int
gw_tunnel_run(gw_tunnel *t)
{
	t->next_dial_ms = 0;
	while (!t->stop)
		loop_once(t);
	/* Graceful: no new streams; let running calls finish and be delivered. */
	if (t->mux)
		gw_mux_goaway(t->mux, GW_E_NONE, "gateway shutting down");
	uint64_t until = kl_now_ms() + 10000;
	while (kl_now_ms() < until && t->mux && t->st.running > 0)
		loop_once(t);
	if (t->mux)
		pump_out(t);
	disconnect(t, "gateway stopped");
	return 0;
}

void
gw_tunnel_stop(gw_tunnel *t)
{
	t->stop = 1;
	uint64_t one = 1;
	ssize_t k = write(t->mbox.efd, &one, sizeof one);
	(void)k;
}

void
gw_tunnel_stats_get(gw_tunnel *t, gw_tunnel_stats *st)
{
	pthread_mutex_lock(&t->smu);
	*st = t->st;
	pthread_mutex_unlock(&t->smu);
}

void
gw_tunnel_free(gw_tunnel *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->wmu);
	t->wstop = true;
	pthread_cond_broadcast(&t->wcond);
	pthread_mutex_unlock(&t->wmu);
	for (int i = 0; i < NWORKERS; i++)
		pthread_join(t->workers[i], NULL);
	size_t i;
	kl_map_ent *e;
	for (e = kl_map_first(&t->clients, &i); e; e = kl_map_next(&t->clients, &i, e))
		kiln_close(e->val); /* waits for call callbacks */
	drain_mailbox(t);
	while ((e = kl_map_first(&t->jobs, &i)))
		job_free(t, e->val);
	kl_map_fini(&t->jobs);
	kl_map_fini(&t->clients);
	kl_mbox_fini(&t->mbox);
	gw_journal_close(t->journal);
	SSL_CTX_free(t->ctx);
	free(t);
}
