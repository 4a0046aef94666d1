/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-plane-sim: the remote control plane, simulated (docs/tunnel-sim.md).
 * A TLS 1.3 server that requires a client certificate from --client-ca and
 * accepts one kiln-gateway connection at a time (a new one replaces the old
 * one). Over it, with the stream multiplexer in the plane's role, it
 *
 *   - waits for the gateway's RESUME on the CONTROL stream, then sends the
 *     trace's operations as WORK streams (one TunnelRequest each, plane ids
 *     derived from the run's nonce and the trace index), in trace order per
 *     session and concurrently across sessions;
 *   - takes each TunnelReply (on its WORK stream, or on a stream the gateway
 *     opens to redeliver it), stores it, checks it against earlier copies
 *     (a plane id answered twice with different content, or more often than
 *     it was sent, is a duplicate), and acknowledges it on CONTROL -- after
 *     the state file holds it;
 *   - after a reconnect (or its own restart with --state), re-sends exactly
 *     the requests that RESUME does not list as in flight or unacked;
 *   - relays every connection accepted on a --route NAME=PORT listener as an
 *     MCP stream for route NAME, byte for byte.
 *
 * One thread, one poll loop. The gateway's handshake is blocking (bounded):
 * nothing else here needs to move while a gateway is being let in.
 */
#include "plane_sim.h"

#include "gw_mux.h"
#include "gw_relay.h"
#include "gw_tls.h"
#include "kl_audit.h"
#include "kl_clock.h"
#include "kl_list.h"
#include "kl_log.h"
#include "kl_map.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define PS                 "plane-sim"
#define MAX_ROUTES         16
#define MAX_RELAYS         256
#define CTL_MAX            (16u << 20) /* a RESUME listing many ids */
#define ACCEPT_MS          10000
#define SUMMARY_MS         1000
#define ACK_BATCH          2048 /* ids per ACK: <= 10 bytes each, well under 64 KiB */
#define PLANE_ID(nonce, i) (((nonce)&0xffffffffffull) << 24 | (uint64_t)((i) + 1))

enum { SK_WORK = 1, SK_MCP };

/* A WORK stream: one of ours (op set, request bytes in out) or one the
 * gateway opened to redeliver a result (op looked up by its plane id). */
typedef struct wstream {
	int kind; /* SK_WORK: first, like mstream's, so on_end can tell them apart */
	uint32_t sid;
	ps_op *op;
	uint64_t plane_id;
	bool ours, answered;
	uint8_t *out;
	size_t out_len, out_off;
	uint8_t *in;
	size_t in_len, in_cap;
} wstream;

typedef struct mstream {
	int kind; /* SK_MCP */
	gw_relay relay;
	int route;
	kl_list link;
} mstream;

typedef struct route {
	char name[GW_ROUTE_MAX + 1];
	uint16_t port;
	int lfd;
} route;

typedef struct sim {
	/* options */
	const char *listen, *cert, *key, *client_ca, *trace_path, *identity;
	const char *summary_path, *state_path, *results_path;
	bool ack, exit_when_done;
	uint32_t max_inflight, ping_ms;
	route routes[MAX_ROUTES];
	int nroutes;
	/* the listener */
	int lfd;
	SSL_CTX *ctx;
	/* the gateway's connection (one at a time) */
	SSL *ssl;
	int fd;
	short want;
	gw_mux *mux;
	bool ready;   /* its RESUME arrived: work may be sent */
	bool resumed; /* its HELLO resumed the session we knew */
	bool closing; /* the connection is being torn down: stream ends are not refusals */
	uint32_t ctl_sid;
	uint8_t *ctlin, *ctlout;
	size_t ctlin_len, ctlin_cap, ctlout_len, ctlout_off;
	kl_list relays;
	int nrelays;
	/* the work */
	ps_trace trace;
	ps_counters c;
	ps_run run;
	kl_map by_id; /* "%016llx" plane id -> ps_op */
	int first_open;
	uint32_t inflight;
	uint64_t *acks;
	size_t nacks, acks_cap;
	bool dirty, summary_dirty;
	uint64_t summary_at;
	bool start_on_connect; /* the run's clock starts at the first RESUME */
	bool clock_set;
	uint64_t next_due_us; /* wall clock of the next op not due yet, 0: none */
} sim;

static volatile sig_atomic_t stop_sig;

/* Wall-clock microseconds: the run's times must survive a restart. */
static uint64_t
ps_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static void
on_signal(int sig)
{
	stop_sig = sig;
}

static ps_op *
op_by_id(sim *s, uint64_t id)
{
	char key[24];
	snprintf(key, sizeof key, "%016llx", (unsigned long long)id);
	return kl_map_get(&s->by_id, key);
}

static void
mark(sim *s)
{
	s->dirty = s->summary_dirty = true;
}

/* A framed stream message (u32 len, u16 type, u16 flags) around an envelope. */
static uint8_t *
frame_env(uint8_t *env, size_t len, size_t *ret_len)
{
	uint8_t *b = kl_xmalloc(GW_CTL_HDR_LEN + len);
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, (uint32_t)len);
	memcpy(b + GW_CTL_HDR_LEN, env, len);
	free(env);
	*ret_len = GW_CTL_HDR_LEN + len;
	return b;
}

/* ---- results ---- */

static void
queue_ack(sim *s, uint64_t id)
{
	if (!s->ack)
		return;
	if (s->nacks == s->acks_cap) {
		s->acks_cap = s->acks_cap ? s->acks_cap * 2 : 64;
		s->acks = kl_xrealloc(s->acks, s->acks_cap * sizeof *s->acks);
	}
	s->acks[s->nacks++] = id;
}

static void
finish_op(sim *s, ps_op *o, json_t *result)
{
	if (o->state == PS_SENT)
		s->inflight--;
	o->state = PS_DONE;
	o->result = result;
	char why[512];
	int bad = ps_expect_check(o, why, sizeof why);
	if (bad) {
		s->c.expect_failed += (uint64_t)bad;
		KL_LOG(KL_ERROR, PS, "%s", why);
	}
	KL_LOG(KL_INFO, PS, "op line=%d plane_id=%llu done code=%s", o->line,
	       (unsigned long long)o->plane_id,
	       json_string_value(json_object_get(result, "code")) ?: "?");
	mark(s);
}

static void
local_fail(sim *s, ps_op *o, const char *code, const char *msg)
{
	KL_LOG(KL_WARN, PS, "op line=%d: %s", o->line, msg);
	finish_op(s, o, ps_local_error(code, msg));
}

/* A result already stored came again: fine if it is a redelivery of the same
 * content; a duplicate if the content differs or it is answered more often
 * than it was asked. */
static void
repeat_result(sim *s, ps_op *o, const Kiln__TunnelReply *tr, const char *digest)
{
	if (!o->done_ms) { /* we had given up on it locally: the gateway had it after all */
		KL_LOG(KL_WARN, PS, "op line=%d plane_id=%llu: a result after a local error",
		       o->line, (unsigned long long)o->plane_id);
		s->c.repeat_results++;
	} else if (strcmp(o->digest, digest)) {
		s->c.duplicates++;
		KL_LOG(KL_ERROR, PS,
		       "DUPLICATE: plane_id=%llu (trace line %d) answered twice with different "
		       "content",
		       (unsigned long long)o->plane_id, o->line);
	} else if (!tr->redelivered && o->results > o->sends) {
		s->c.duplicates++;
		KL_LOG(KL_ERROR, PS,
		       "DUPLICATE: plane_id=%llu (trace line %d): %u results for %u requests",
		       (unsigned long long)o->plane_id, o->line, o->results, o->sends);
	} else {
		s->c.repeat_results++;
	}
}

static void
on_result(sim *s, const Kiln__TunnelReply *tr)
{
	char digest[65] = "";
	size_t n = tr->reply ? kiln__client_reply__get_packed_size(tr->reply) : 0;
	uint8_t *b = kl_xmalloc(n ? n : 1);
	if (tr->reply)
		kiln__client_reply__pack(tr->reply, b);
	kl_audit_digest(b, n, digest);
	free(b);
	ps_op *o = op_by_id(s, tr->plane_id);
	queue_ack(s, tr->plane_id);
	if (o)
		o->awaited = false;
	mark(s);
	if (tr->redelivered)
		s->c.redelivered++;
	if (!o) {
		s->c.foreign++;
		KL_LOG(KL_WARN, PS, "a result for plane_id=%llu, which this run never sent",
		       (unsigned long long)tr->plane_id);
		return;
	}
	o->results++;
	if (o->state == PS_DONE) {
		repeat_result(s, o, tr, digest);
		return;
	}
	s->c.results++;
	o->done_us = ps_wall_us();
	o->done_ms = o->done_us / 1000;
	if (!o->first_sent_ms) {
		o->first_sent_ms = o->done_ms;
		o->first_sent_us = o->done_us;
	}
	kl_strlcpy(o->digest, digest, sizeof o->digest);
	finish_op(s, o,
	          tr->reply ? ps_reply_json(tr->reply)
	                    : ps_local_error("INTERNAL", "the gateway's reply is empty"));
}

/* ---- WORK streams ---- */

static void
ws_flush(sim *s, wstream *ws)
{
	while (ws->out && ws->out_off < ws->out_len) {
		ssize_t n = gw_mux_write(s->mux, ws->sid, ws->out + ws->out_off,
		                         ws->out_len - ws->out_off);
		if (n <= 0)
			return; /* on_writable resumes (or the stream is gone) */
		ws->out_off += (size_t)n;
	}
	if (ws->out) {
		free(ws->out);
		ws->out = NULL;
		gw_mux_shutdown(s->mux, ws->sid);
	}
}

static void
ws_message(sim *s, wstream *ws, const struct gw_ctl_msg *msg)
{
	Kiln__Envelope *e = NULL;
	int r = msg->type == GW_CTL_ENVELOPE
	                ? kl_env_decode(msg->body, msg->len, KL_MAX_MSG, &e, NULL)
	                : -EBADMSG;
	if (r < 0 || e->msg_case != KILN__ENVELOPE__MSG_TUNNEL_REPLY) {
		KL_LOG(KL_ERROR, PS, "stream %u: expected a TunnelReply envelope (%s)", ws->sid,
		       r < 0 ? kl_env_strerror(r) : "another message");
		gw_mux_reset(s->mux, ws->sid, GW_E_PROTOCOL, "expected a TunnelReply envelope");
	} else {
		if (e->tunnel_reply->plane_id != ws->plane_id)
			KL_LOG(KL_ERROR, PS, "stream %u: opened for plane_id=%llu, answers %llu",
			       ws->sid, (unsigned long long)ws->plane_id,
			       (unsigned long long)e->tunnel_reply->plane_id);
		ws->answered = true;
		on_result(s, e->tunnel_reply);
	}
	if (e)
		kiln__envelope__free_unpacked(e, NULL);
}

static void
ws_readable(sim *s, wstream *ws)
{
	for (;;) {
		if (ws->in_len == ws->in_cap) {
			if (ws->in_cap >= GW_CTL_BODY_MAX + GW_CTL_HDR_LEN) {
				gw_mux_reset(s->mux, ws->sid, GW_E_CALM, "reply too large");
				return;
			}
			ws->in_cap = ws->in_cap ? ws->in_cap * 2 : 16384;
			ws->in = kl_xrealloc(ws->in, ws->in_cap);
		}
		ssize_t n =
		        gw_mux_read(s->mux, ws->sid, ws->in + ws->in_len, ws->in_cap - ws->in_len);
		if (n <= 0)
			break;
		ws->in_len += (size_t)n;
	}
	struct gw_ctl_msg msg;
	int used;
	while (!ws->answered &&
	       (used = gw_ctl_parse(ws->in, ws->in_len, GW_CTL_BODY_MAX, &msg)) > 0) {
		ws_message(s, ws, &msg);
		memmove(ws->in, ws->in + used, ws->in_len - (size_t)used);
		ws->in_len -= (size_t)used;
	}
	if (ws->answered)
		ws->in_len = 0; /* nothing else belongs on it */
}

static int
send_op(sim *s, ps_op *o, const char *session)
{
	uint8_t *env, meta[8];
	size_t len;
	char err[512];
	if (ps_request_encode(o, session, &env, &len, err, sizeof err) < 0) {
		local_fail(s, o, "INVALID_ARGUMENT", err);
		return 0;
	}
	wstream *ws = kl_xcalloc(1, sizeof *ws);
	ws->kind = SK_WORK;
	ws->op = o;
	ws->ours = true;
	ws->plane_id = o->plane_id;
	gw_put64(meta, o->plane_id);
	int r = gw_mux_open(s->mux, GW_KIND_WORK, meta, sizeof meta, ws, &ws->sid);
	if (r < 0) {
		free(env);
		free(ws);
		return r;
	}
	ws->out = frame_env(env, len, &ws->out_len);
	if (o->sends)
		s->c.resent++;
	o->sends++;
	o->state = PS_SENT;
	o->sid = ws->sid;
	if (!o->first_sent_ms) {
		o->first_sent_us = ps_wall_us();
		o->first_sent_ms = o->first_sent_us / 1000;
	}
	s->c.sent++;
	s->inflight++;
	mark(s);
	KL_LOG(o->sends > 1 ? KL_INFO : KL_DEBUG, PS, "op line=%d plane_id=%llu sent (attempt %u)",
	       o->line, (unsigned long long)o->plane_id, o->sends);
	ws_flush(s, ws);
	return 0;
}

/* The session id for o, NULL for none; *wait when it is not known yet. A
 * session whose open failed fails o. */
static const char *
session_of(sim *s, ps_op *o, bool *wait)
{
	*wait = false;
	if (o->open_idx < 0)
		return o->session;
	ps_op *op = &s->trace.ops[o->open_idx];
	if (op->state != PS_DONE) {
		*wait = true;
		return NULL;
	}
	const char *id = json_string_value(json_object_get(op->result, "session_id"));
	const char *code = json_string_value(json_object_get(op->result, "code"));
	if (!id || !*id || !code || strcmp(code, "OK")) {
		char msg[512];
		snprintf(msg, sizeof msg, "session %s did not open (line %d: %s: %s)", o->session,
		         op->line, code ?: "?",
		         json_string_value(json_object_get(op->result, "message")) ?: "");
		local_fail(s, o, "FAILED_PRECONDITION", msg);
		*wait = true;
		return NULL;
	}
	return id;
}

/* Send every op that may go now: its time has come, its session is open, the
 * op before it on the session is done, and the in-flight bound allows. Notes
 * when the next op not due yet will be (the loop wakes up for it). */
static void
schedule(sim *s)
{
	s->next_due_us = 0;
	if (!s->mux || !s->ready)
		return;
	uint64_t now_us = ps_wall_us() - s->run.started_us;
	while (s->first_open < s->trace.nops && s->trace.ops[s->first_open].state == PS_DONE)
		s->first_open++;
	for (int i = s->first_open; i < s->trace.nops && s->inflight < s->max_inflight; i++) {
		ps_op *o = &s->trace.ops[i];
		bool wait;
		if (o->state != PS_WAIT)
			continue;
		if (o->at_ms * 1000 > now_us) {
			uint64_t due = s->run.started_us + o->at_ms * 1000;
			if (!s->next_due_us || due < s->next_due_us)
				s->next_due_us = due;
			continue;
		}
		if (o->prev_idx >= 0 && s->trace.ops[o->prev_idx].state != PS_DONE)
			continue;
		const char *sess = session_of(s, o, &wait);
		if (wait)
			continue;
		if (send_op(s, o, sess) < 0)
			return; /* stream limit or GOAWAY: later */
	}
}

/* ---- CONTROL ---- */

static json_t *
ids_json(const uint64_t *ids, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		char b[24];
		snprintf(b, sizeof b, "%llu", (unsigned long long)ids[i]);
		json_array_append_new(a, json_string(b));
	}
	return a;
}

static void
mark_listed(sim *s, const uint64_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ps_op *o = op_by_id(s, ids[i]);
		if (o)
			o->at_gw = true;
	}
}

/* RESUME: what the gateway has. In a resumed session, requests we sent that
 * it does not list never reached it: they go again, with the same plane id
 * (a gateway with a journal resumes its session after a crash too, and lists
 * what it had). A new session means a gateway that lost its state: whether
 * what we had sent ran is unknown, so it is not sent again (NODE_LOST). */
static void
on_resume(sim *s, const Kiln__TunnelResume *rs)
{
	for (int i = 0; i < s->trace.nops; i++) {
		ps_op *o = &s->trace.ops[i];
		o->at_gw = false;
		if (!s->resumed && o->state == PS_SENT) {
			s->c.gateway_lost++;
			local_fail(s, o, "NODE_LOST",
			           "the gateway came back as a new session (it lost its state): "
			           "outcome unknown; not sent again");
		}
	}
	mark_listed(s, rs->in_flight, rs->n_in_flight);
	mark_listed(s, rs->unacked, rs->n_unacked);
	for (size_t i = 0; i < rs->n_unacked; i++) {
		ps_op *o = op_by_id(s, rs->unacked[i]);
		if (o)
			o->awaited = true;
	}
	size_t resend = 0;
	for (int i = 0; i < s->trace.nops; i++) {
		ps_op *o = &s->trace.ops[i];
		if (o->state == PS_SENT && !o->at_gw) {
			o->state = PS_WAIT;
			s->inflight--;
			resend++;
			KL_LOG(KL_INFO, PS,
			       "op line=%d plane_id=%llu: the gateway never got it: again", o->line,
			       (unsigned long long)o->plane_id);
		}
	}
	json_t *r = json_object();
	json_object_set_new(r, "epoch", json_integer((json_int_t)rs->epoch));
	json_object_set_new(r, "in_flight", json_integer((json_int_t)rs->n_in_flight));
	json_object_set_new(r, "unacked", json_integer((json_int_t)rs->n_unacked));
	json_object_set_new(r, "resend", json_integer((json_int_t)resend));
	if (rs->n_in_flight + rs->n_unacked <= 1000) {
		json_object_set_new(r, "in_flight_ids", ids_json(rs->in_flight, rs->n_in_flight));
		json_object_set_new(r, "unacked_ids", ids_json(rs->unacked, rs->n_unacked));
	}
	json_array_append_new(s->run.resumes, r);
	if (!s->clock_set) { /* --start-on-connect: at_ms counts from now */
		s->run.started_us = ps_wall_us();
		s->run.started_ms = s->run.started_us / 1000;
		s->clock_set = true;
	}
	KL_LOG(KL_INFO, PS, "resume: epoch=%llu in_flight=%zu unacked=%zu resend=%zu",
	       (unsigned long long)rs->epoch, rs->n_in_flight, rs->n_unacked, resend);
	s->ready = true;
	mark(s);
}

static void
ctl_message(sim *s, const struct gw_ctl_msg *msg)
{
	Kiln__Envelope *e = NULL;
	if (msg->type != GW_CTL_ENVELOPE) {
		if (!(msg->type & GW_CTL_IGNORABLE))
			KL_LOG(KL_WARN, PS, "CONTROL: unknown message type 0x%04x", msg->type);
		return;
	}
	int r = kl_env_decode(msg->body, msg->len, KL_MAX_MSG, &e, NULL);
	if (r == 0 && e->msg_case == KILN__ENVELOPE__MSG_TUNNEL_CONTROL &&
	    e->tunnel_control->msg_case == KILN__TUNNEL_CONTROL__MSG_RESUME)
		on_resume(s, e->tunnel_control->resume);
	else
		KL_LOG(KL_WARN, PS, "CONTROL: unexpected message (%s)",
		       r < 0 ? kl_env_strerror(r) : "not a RESUME");
	if (e)
		kiln__envelope__free_unpacked(e, NULL);
}

static void
ctl_readable(sim *s)
{
	for (;;) {
		if (s->ctlin_len == s->ctlin_cap) {
			if (s->ctlin_cap >= CTL_MAX + GW_CTL_HDR_LEN) {
				gw_mux_goaway(s->mux, GW_E_CALM, "CONTROL message too large");
				return;
			}
			s->ctlin_cap = s->ctlin_cap ? s->ctlin_cap * 2 : 65536;
			s->ctlin = kl_xrealloc(s->ctlin, s->ctlin_cap);
		}
		ssize_t n = gw_mux_read(s->mux, s->ctl_sid, s->ctlin + s->ctlin_len,
		                        s->ctlin_cap - s->ctlin_len);
		if (n <= 0)
			break;
		s->ctlin_len += (size_t)n;
	}
	struct gw_ctl_msg msg;
	int used;
	while ((used = gw_ctl_parse(s->ctlin, s->ctlin_len, CTL_MAX, &msg)) > 0) {
		ctl_message(s, &msg);
		memmove(s->ctlin, s->ctlin + used, s->ctlin_len - (size_t)used);
		s->ctlin_len -= (size_t)used;
	}
	if (used < 0)
		gw_mux_goaway(s->mux, GW_E_PROTOCOL, "malformed CONTROL message");
}

static void
ctl_flush(sim *s)
{
	while (s->ctl_sid && s->ctlout_off < s->ctlout_len) {
		ssize_t n = gw_mux_write(s->mux, s->ctl_sid, s->ctlout + s->ctlout_off,
		                         s->ctlout_len - s->ctlout_off);
		if (n <= 0)
			return;
		s->ctlout_off += (size_t)n;
	}
	s->ctlout_off = s->ctlout_len = 0;
}

/* One ACK message for ids[0..n). */
static void
ack_message(sim *s, uint64_t *ids, size_t n)
{
	Kiln__TunnelAck a = KILN__TUNNEL_ACK__INIT;
	a.n_plane_ids = n;
	a.plane_ids = ids;
	Kiln__TunnelControl tc = KILN__TUNNEL_CONTROL__INIT;
	tc.msg_case = KILN__TUNNEL_CONTROL__MSG_ACK;
	tc.ack = &a;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_TUNNEL_CONTROL;
	e.tunnel_control = &tc;
	uint8_t *env;
	size_t len, flen;
	if (kl_env_encode(&e, &env, &len) < 0)
		return;
	uint8_t *f = frame_env(env, len, &flen);
	s->ctlout = kl_xrealloc(s->ctlout, s->ctlout_len + flen);
	memcpy(s->ctlout + s->ctlout_len, f, flen);
	s->ctlout_len += flen;
	free(f);
	s->c.acks += n;
}

/* Acknowledge what was stored: called after the state file was saved. At
 * most ACK_BATCH ids a message: the gateway reads CONTROL messages into a
 * 64 KiB buffer, and a larger one would end the connection. */
static void
send_acks(sim *s)
{
	if (!s->nacks || !s->mux || !s->ctl_sid)
		return;
	for (size_t i = 0; i < s->nacks; i += ACK_BATCH)
		ack_message(s, s->acks + i, KL_MIN(ACK_BATCH, s->nacks - i));
	s->nacks = 0;
	s->summary_dirty = true;
	ctl_flush(s);
}

/* ---- MCP relays ---- */

static void
http_error(int fd, int code, const char *reason, const char *why)
{
	char buf[1024];
	int n = snprintf(buf, sizeof buf,
	                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
	                 "Content-Length: %zu\r\n\r\nkiln-plane-sim: %s\n",
	                 code, reason, strlen(why) + 17, why);
	(void)send(fd, buf, (size_t)KL_MIN((size_t)n, sizeof buf - 1), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void
route_accept(sim *s, int ri)
{
	route *r = &s->routes[ri];
	int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	mstream *m = kl_xcalloc(1, sizeof *m);
	uint32_t sid;
	if (!s->mux || s->nrelays >= MAX_RELAYS ||
	    gw_mux_open(s->mux, GW_KIND_MCP, r->name, strlen(r->name), m, &sid) < 0) {
		http_error(fd, 503, "Service Unavailable",
		           s->mux ? "too many MCP streams" : "the tunnel to the gateway is down");
		close(fd);
		free(m);
		s->c.mcp_refused++;
		s->summary_dirty = true;
		return;
	}
	m->kind = SK_MCP;
	m->route = ri;
	gw_relay_init(&m->relay, s->mux, sid, fd, false);
	kl_list_add_tail(&s->relays, &m->link);
	s->nrelays++;
	s->c.mcp_conns++;
	s->summary_dirty = true;
	KL_LOG(KL_DEBUG, PS, "mcp route=%s: a local connection is stream %u", r->name, sid);
}

static void
relay_free(sim *s, mstream *m)
{
	s->c.mcp_up += m->relay.up;
	s->c.mcp_down += m->relay.down;
	s->summary_dirty = true;
	if (m->relay.sid && s->mux)
		gw_mux_set_udata(s->mux, m->relay.sid, NULL);
	kl_list_del(&m->link);
	gw_relay_fini(&m->relay);
	free(m);
	s->nrelays--;
}

static void
reap_relays(sim *s)
{
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &s->relays) {
		mstream *m = kl_list_entry(p, mstream, link);
		if (gw_relay_done(&m->relay))
			relay_free(s, m);
	}
}

/* The gateway ended an MCP stream. A refusal (unknown route, upstream down)
 * before any byte came back becomes an HTTP 502 the local client can read. */
static void
mcp_end(sim *s, mstream *m, uint32_t code, const char *msg)
{
	m->relay.sid = 0;
	if (code == GW_E_NONE) {
		m->relay.fd_eof = m->relay.stream_eof = true;
		return;
	}
	KL_LOG(KL_INFO, PS, "mcp route=%s: stream reset (%s): %s", s->routes[m->route].name,
	       gw_code_name(code), msg);
	if (!m->relay.down && m->relay.fd >= 0)
		http_error(m->relay.fd, 502, "Bad Gateway", msg);
	m->relay.failed = true;
}

/* ---- mux callbacks ---- */

static int
on_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	sim *s = arg;
	char tok[2 * GW_TOKEN_MAX + 1] = "";
	for (int i = 0; i < peer->token_len && i < 32; i++)
		snprintf(tok + 2 * i, 3, "%02x", peer->token[i]);
	bool resumed =
	        (peer->flags & GW_HELLO_F_RESUME) && s->run.token[0] && !strcmp(tok, s->run.token);
	/* The gateway keeps its token across reconnects: the session is the token. */
	gw_mux_set_session(m, peer->token, peer->token_len, peer->epoch, resumed);
	s->resumed = resumed;
	KL_LOG(KL_INFO, PS, "gateway hello: epoch=%llu resume=%s (session %s)",
	       (unsigned long long)peer->epoch, peer->flags & GW_HELLO_F_RESUME ? "asked" : "no",
	       resumed ? "resumed" : "new");
	kl_strlcpy(s->run.token, tok, sizeof s->run.token);
	mark(s);
	return 0;
}

static int
on_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t meta_len, void *arg)
{
	sim *s = arg;
	if (kind == GW_KIND_CONTROL) {
		if (s->ctl_sid)
			return GW_E_REFUSED;
		s->ctl_sid = id;
		s->ctlin_len = 0;
		return 0;
	}
	if (kind != GW_KIND_WORK || meta_len < 8)
		return GW_E_REFUSED;
	/* The gateway redelivers a result: we send nothing on this stream. */
	wstream *ws = kl_xcalloc(1, sizeof *ws);
	ws->kind = SK_WORK;
	ws->sid = id;
	ws->plane_id = gw_get64(meta);
	ws->op = op_by_id(s, ws->plane_id);
	gw_mux_set_udata(m, id, ws);
	gw_mux_shutdown(m, id);
	return 0;
}

static void
on_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	sim *s = arg;
	if (id == s->ctl_sid) {
		ctl_readable(s);
		return;
	}
	if (!udata) {
		char sink[4096];
		while (gw_mux_read(m, id, sink, sizeof sink) > 0)
			;
		return;
	}
	if (*(int *)udata == SK_MCP)
		gw_relay_on_stream_readable(&((mstream *)udata)->relay);
	else
		ws_readable(s, udata);
}

static void
on_writable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	sim *s = arg;
	if (id == s->ctl_sid)
		ctl_flush(s);
	else if (udata && *(int *)udata == SK_MCP)
		gw_relay_on_stream_writable(&((mstream *)udata)->relay);
	else if (udata)
		ws_flush(s, udata);
}

/* Our request's stream ended without an answer. A refusal by the gateway
 * (it reset the stream while the connection lives) is final; a connection
 * that went away leaves the op to the next RESUME. */
static void
ws_end(sim *s, wstream *ws, uint32_t code, const char *msg)
{
	ps_op *o = ws->op;
	if (o && o->sid == ws->sid)
		o->sid = 0;
	if (!ws->ours || ws->answered || !o || o->state != PS_SENT)
		return;
	if (s->closing || code == GW_E_NONE || code == GW_E_REFUSED || code == GW_E_CANCEL)
		return;
	char why[700];
	snprintf(why, sizeof why, "the gateway reset the request's stream (%s): %s",
	         gw_code_name(code), msg);
	local_fail(s, o, "STREAM_RESET", why);
}

static void
on_end(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata, void *arg)
{
	sim *s = arg;
	if (id == s->ctl_sid) {
		s->ctl_sid = 0;
		if (!s->closing)
			KL_LOG(KL_WARN, PS, "the gateway ended the CONTROL stream (%s): %s",
			       gw_code_name(code), msg);
		return;
	}
	if (!udata)
		return;
	if (*(int *)udata == SK_MCP) {
		mcp_end(s, udata, code, msg);
		return;
	}
	wstream *ws = udata;
	ws_end(s, ws, code, msg);
	free(ws->out);
	free(ws->in);
	free(ws);
}

static void
on_goaway(gw_mux *m, uint32_t last_id, uint32_t code, const char *msg, void *arg)
{
	KL_LOG(KL_INFO, PS, "the gateway sent GOAWAY (%s): %s", gw_code_name(code), msg);
}

static const struct gw_mux_ops ops = {on_hello,    on_open, on_readable,
                                      on_writable, on_end,  on_goaway};

/* ---- the connection ---- */

static void
disconnect(sim *s, const char *why, bool final)
{
	if (!s->mux && !s->ssl)
		return;
	KL_LOG(final ? KL_INFO : KL_WARN, PS, "gateway connection closed: %s%s", why,
	       final ? "" : " (state kept; waiting for a reconnect)");
	s->closing = true;
	if (s->mux) {
		gw_mux_eof(s->mux); /* every stream ends: requests stay sent until RESUME */
		gw_mux_free(s->mux);
		s->mux = NULL;
	}
	s->closing = false;
	gw_tls_close(s->ssl, s->fd);
	s->ssl = NULL;
	s->fd = -1;
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &s->relays) {
		mstream *m = kl_list_entry(p, mstream, link);
		m->relay.sid = 0;
		relay_free(s, m);
	}
	s->ready = false;
	s->ctl_sid = 0;
	s->ctlin_len = s->ctlout_len = s->ctlout_off = 0;
	s->nacks = 0; /* unacknowledged results are redelivered: acked then */
	for (int i = 0; i < s->trace.nops; i++) {
		s->trace.ops[i].sid = 0;
		s->trace.ops[i].awaited = false; /* the next RESUME says again */
	}
	mark(s);
}

static void
accept_gateway(sim *s)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?", peer[NI_MAXHOST + NI_MAXSERV + 2];
	getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv,
	            NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(peer, sizeof peer, "%s:%s", host, serv);
	SSL *ssl;
	char cn[256], err[768];
	if (gw_tls_accept(s->ctx, fd, ACCEPT_MS, &ssl, cn, sizeof cn, err, sizeof err) < 0) {
		if (strstr(err, " alert "))
			KL_LOG(KL_WARN, PS,
			       "a connection from %s gave up the handshake: %s (does it trust our "
			       "certificate %s, for the name it dialled?)",
			       peer, err, s->cert);
		else
			KL_LOG(KL_WARN, PS,
			       "refused a connection from %s: %s (a gateway needs a client "
			       "certificate signed by %s)",
			       peer, err, s->client_ca);
		close(fd);
		s->c.tls_refused++;
		s->summary_dirty = true;
		return;
	}
	if (s->mux)
		disconnect(s, "replaced by a new connection", false);
	/* Small frames (requests, ACKs) must not wait for Nagle behind an unacked
	 * one: the gateway's delayed ACK would hold them up to 40 ms. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct gw_mux_config mc = {
	        .role = GW_ROLE_PLANE, .ping_interval_ms = s->ping_ms, .ops = &ops, .arg = s};
	if (gw_mux_new(&mc, &s->mux) < 0) {
		gw_tls_close(ssl, fd);
		return;
	}
	s->ssl = ssl;
	s->fd = fd;
	s->want = POLLIN;
	s->c.connections++;
	mark(s);
	KL_LOG(KL_INFO, PS, "gateway connected from %s (client certificate CN=%s, TLS 1.3)", peer,
	       cn);
}

/* TLS -> mux. False when the connection ended. */
static bool
pump_in(sim *s)
{
	uint8_t buf[65536];
	char err[512];
	for (;;) {
		short want = 0;
		ssize_t n = gw_tls_read(s->ssl, buf, sizeof buf, &want, err, sizeof err);
		if (n == -EAGAIN) {
			s->want = want;
			return true;
		}
		if (n <= 0) {
			disconnect(s, n == 0 ? "the gateway closed the connection" : err, false);
			return false;
		}
		if (gw_mux_input(s->mux, buf, (size_t)n) < 0) {
			snprintf(err, sizeof err, "tunnel protocol: %s", gw_mux_error(s->mux));
			struct iovec iov[1];
			short w;
			char e2[256];
			if (gw_mux_output(s->mux, iov, 1) > 0) /* let the GOAWAY out */
				gw_tls_write(s->ssl, iov[0].iov_base, iov[0].iov_len, &w, e2,
				             sizeof e2);
			disconnect(s, err, false);
			return false;
		}
	}
}

/* mux -> TLS. False when the connection ended. */
static bool
pump_out(sim *s)
{
	struct iovec iov[8];
	char err[512];
	int k;
	while ((k = gw_mux_output(s->mux, iov, 8)) > 0) {
		for (int i = 0; i < k; i++) {
			short want = 0;
			ssize_t n = gw_tls_write(s->ssl, iov[i].iov_base, iov[i].iov_len, &want,
			                         err, sizeof err);
			if (n == -EAGAIN) {
				s->want = want;
				return true;
			}
			if (n <= 0) {
				disconnect(s, err, false);
				return false;
			}
			gw_mux_consume(s->mux, (size_t)n);
			if ((size_t)n < iov[i].iov_len)
				return true;
		}
	}
	s->want = POLLIN;
	return true;
}

/* ---- persistence and reports ---- */

static void
save(sim *s, bool final)
{
	if (s->dirty && s->state_path && s->trace.nops) {
		int r = ps_state_save(s->state_path, &s->run);
		if (r < 0)
			KL_LOG(KL_ERROR, PS, "state %s: %s", s->state_path, strerror(-r));
	}
	s->dirty = false;
	uint64_t now = kl_now_ms();
	if (!final && (!s->summary_dirty || now < s->summary_at))
		return;
	s->summary_at = now + SUMMARY_MS;
	s->summary_dirty = false;
	if (s->summary_path) {
		json_t *j = ps_summary(&s->run);
		if (ps_json_save(s->summary_path, j) < 0)
			KL_LOG(KL_ERROR, PS, "summary %s: %s", s->summary_path, strerror(errno));
		json_decref(j);
	}
	if (s->results_path && ps_results_write(s->results_path, &s->run) < 0)
		KL_LOG(KL_ERROR, PS, "results %s: %s", s->results_path, strerror(errno));
}

/* Every op has its outcome, and the gateway holds nothing of ours: whatever
 * its RESUME listed as unacknowledged came and was acknowledged. So even a
 * run restarted after its last result connects once, to clean up. */
static bool
all_done(sim *s)
{
	if (!s->trace.nops || !s->ready)
		return false;
	for (int i = 0; i < s->trace.nops; i++)
		if (s->trace.ops[i].state != PS_DONE || s->trace.ops[i].awaited)
			return false;
	return !s->nacks && s->ctlout_off == s->ctlout_len &&
	       (!s->mux || !gw_mux_want_output(s->mux));
}

/* ---- setup ---- */

static int
listen_tcp(const char *host, const char *port, int *ret_fd, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g) {
		snprintf(err, errlen, "%s:%s: %s", host, port, gai_strerror(g));
		return -EINVAL;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		int e = errno;
		snprintf(err, errlen, "listen on %s:%s: %s", host, port, strerror(e));
		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		return -e;
	}
	freeaddrinfo(res);
	*ret_fd = fd;
	return 0;
}

static int
add_route(sim *s, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char *end;
	long port = eq ? strtol(eq + 1, &end, 10) : 0;
	size_t n = eq ? (size_t)(eq - arg) : 0;
	if (!eq || !n || n > GW_ROUTE_MAX || *end || port < 1 || port > 65535 ||
	    strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") < n ||
	    s->nroutes >= MAX_ROUTES) {
		fprintf(stderr,
		        "kiln-plane-sim: --route %s: expected NAME=PORT (a name of 1-64 of "
		        "A-Z a-z 0-9 . _ -; at most %d routes)\n",
		        arg, MAX_ROUTES);
		return -EINVAL;
	}
	route *r = &s->routes[s->nroutes++];
	snprintf(r->name, sizeof r->name, "%.*s", (int)n, arg);
	r->port = (uint16_t)port;
	r->lfd = -1;
	return 0;
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: kiln-plane-sim --listen HOST:PORT --cert FILE --key FILE --client-ca FILE\n"
	        "                      [--trace FILE] [--route NAME=PORT]... [options]\n"
	        "\n"
	        "The remote control plane of kiln's egress tunnel, simulated: a TLS 1.3 server\n"
	        "for one kiln-gateway (client certificate required), a work queue fed from a\n"
	        "trace, and local HTTP ports that reach the gateway's MCP routes "
	        "(docs/tunnel-sim.md).\n"
	        "\n"
	        "  --listen HOST:PORT   where the gateway dials in\n"
	        "  --cert/--key FILE    the plane's server certificate and key\n"
	        "  --client-ca FILE     gateway certificates must chain to it\n"
	        "  --trace FILE         operations to send (JSON lines)\n"
	        "  --identity NAME      identity for trace lines without one\n"
	        "  --route NAME=PORT    serve 127.0.0.1:PORT; each connection is an MCP stream\n"
	        "                       to the gateway's route NAME (repeatable)\n"
	        "  --state FILE         keep progress and results across restarts\n"
	        "  --summary FILE       counters, errors, duplicates, latencies (JSON)\n"
	        "  --results FILE       every operation's outcome (JSON lines)\n"
	        "  --ack / --no-ack     acknowledge stored results (default: --ack)\n"
	        "  --max-inflight N     requests outstanding at once (256)\n"
	        "  --ping-ms N          PING interval (15000)\n"
	        "  --exit-when-done     exit once every operation has its result (acked)\n"
	        "  --start-on-connect   a new run's clock (at_ms) starts at the gateway's first\n"
	        "                       RESUME instead of at the simulator's start\n"
	        "  --log LEVEL          error, warn, info (default), debug\n"
	        "\n"
	        "Exit status: 0; 1 if duplicates were detected or expectations failed; 2 usage.\n");
}

static int
parse_args(sim *s, int argc, char **argv)
{
	static const struct option lo[] = {{"start-on-connect", 0, 0, 'o'},
	                                   {"listen", 1, 0, 'l'},
	                                   {"cert", 1, 0, 'c'},
	                                   {"key", 1, 0, 'k'},
	                                   {"client-ca", 1, 0, 'a'},
	                                   {"trace", 1, 0, 't'},
	                                   {"identity", 1, 0, 'i'},
	                                   {"route", 1, 0, 'r'},
	                                   {"state", 1, 0, 's'},
	                                   {"summary", 1, 0, 'S'},
	                                   {"results", 1, 0, 'R'},
	                                   {"ack", 0, 0, 'A'},
	                                   {"no-ack", 0, 0, 'N'},
	                                   {"max-inflight", 1, 0, 'm'},
	                                   {"ping-ms", 1, 0, 'p'},
	                                   {"exit-when-done", 0, 0, 'x'},
	                                   {"log", 1, 0, 'v'},
	                                   {"help", 0, 0, 'h'},
	                                   {0, 0, 0, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
			s->listen = optarg;
			break;
		case 'c':
			s->cert = optarg;
			break;
		case 'k':
			s->key = optarg;
			break;
		case 'a':
			s->client_ca = optarg;
			break;
		case 't':
			s->trace_path = optarg;
			break;
		case 'i':
			s->identity = optarg;
			break;
		case 'r':
			if (add_route(s, optarg) < 0)
				return 2;
			break;
		case 's':
			s->state_path = optarg;
			break;
		case 'S':
			s->summary_path = optarg;
			break;
		case 'R':
			s->results_path = optarg;
			break;
		case 'A':
			s->ack = true;
			break;
		case 'N':
			s->ack = false;
			break;
		case 'm':
			s->max_inflight = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'p':
			s->ping_ms = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'x':
			s->exit_when_done = true;
			break;
		case 'o':
			s->start_on_connect = true;
			break;
		case 'v':
			if (kl_log_set_level(optarg) < 0) {
				fprintf(stderr,
				        "kiln-plane-sim: --log: error, warn, info or debug\n");
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!s->listen || !s->cert || !s->key || !s->client_ca || optind < argc ||
	    !s->max_inflight) {
		usage(stderr);
		return 2;
	}
	if (s->exit_when_done && !s->trace_path) {
		fprintf(stderr, "kiln-plane-sim: --exit-when-done needs --trace\n");
		return 2;
	}
	return 0;
}

/* The trace, then the state file (or a fresh nonce). */
static int
load_work(sim *s, char *err, size_t errlen)
{
	s->run.trace = &s->trace;
	s->run.c = &s->c;
	s->run.resumes = json_array();
	kl_map_init(&s->by_id);
	if (!s->trace_path)
		return 0;
	if (ps_trace_load(s->trace_path, s->identity, &s->trace, err, errlen) < 0)
		return -EINVAL;
	int r = s->state_path ? ps_state_load(s->state_path, &s->run, err, errlen) : 1;
	if (r < 0)
		return r;
	if (r == 1) {
		if (getrandom(&s->run.nonce, sizeof s->run.nonce, 0) != sizeof s->run.nonce)
			s->run.nonce = kl_now_ns();
		s->run.started_us = ps_wall_us();
		s->run.started_ms = s->run.started_us / 1000;
	}
	s->clock_set = r != 1 || !s->start_on_connect;
	for (int i = 0; i < s->trace.nops; i++) {
		ps_op *o = &s->trace.ops[i];
		char key[24];
		o->plane_id = PLANE_ID(s->run.nonce, i);
		snprintf(key, sizeof key, "%016llx", (unsigned long long)o->plane_id);
		kl_map_put(&s->by_id, key, o);
		s->inflight += o->state == PS_SENT;
	}
	KL_LOG(KL_INFO, PS, "trace %s: %d operations (%s run, nonce %010llx)", s->trace_path,
	       s->trace.nops, r == 1 ? "a new" : "a resumed",
	       (unsigned long long)(s->run.nonce & 0xffffffffffull));
	mark(s);
	return 0;
}

static int
setup(sim *s, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(s->listen, ':');
	if (!colon) {
		snprintf(err, errlen, "--listen %s: expected HOST:PORT", s->listen);
		return -EINVAL;
	}
	snprintf(host, sizeof host, "%.*s", (int)(colon - s->listen), s->listen);
	if (!(s->ctx = gw_tls_server_ctx(s->cert, s->key, s->client_ca, err, errlen)))
		return -EINVAL;
	if (listen_tcp(host, colon + 1, &s->lfd, err, errlen) < 0)
		return -EINVAL;
	for (int i = 0; i < s->nroutes; i++) {
		char port[8];
		snprintf(port, sizeof port, "%u", s->routes[i].port);
		if (listen_tcp("127.0.0.1", port, &s->routes[i].lfd, err, errlen) < 0)
			return -EINVAL;
		KL_LOG(KL_INFO, PS, "mcp route %s: http://127.0.0.1:%u/ (any path)",
		       s->routes[i].name, s->routes[i].port);
	}
	KL_LOG(KL_INFO, PS, "listening on %s for the gateway", s->listen);
	return load_work(s, err, errlen);
}

/* ---- the loop ---- */

static void
loop_once(sim *s)
{
	struct pollfd pf[2 + MAX_ROUTES + MAX_RELAYS];
	mstream *rel[MAX_RELAYS];
	int n = 0, conn = -1, rel0;
	uint64_t timeout = 200000; /* us */
	pf[n++] = (struct pollfd){s->lfd, POLLIN, 0};
	for (int i = 0; i < s->nroutes; i++)
		pf[n++] = (struct pollfd){s->routes[i].lfd, POLLIN, 0};
	if (s->mux) {
		int64_t tk = gw_mux_tick(s->mux, kl_now_ms());
		if (tk < 0) {
			disconnect(s, "the gateway stopped answering pings", false);
			return;
		}
		timeout = KL_MIN((uint64_t)tk * 1000, timeout);
		conn = n;
		pf[n++] = (struct pollfd){
		        s->fd, (short)(s->want | (gw_mux_want_output(s->mux) ? POLLOUT : 0)), 0};
	}
	if (s->next_due_us) { /* wake up when the next op comes due, to the microsecond */
		uint64_t now = ps_wall_us();
		timeout = KL_MIN(timeout, s->next_due_us > now ? s->next_due_us - now : 0);
	}
	rel0 = n;
	kl_list *p;
	kl_list_for_each (p, &s->relays) {
		mstream *m = kl_list_entry(p, mstream, link);
		rel[n - rel0] = m;
		pf[n++] = (struct pollfd){m->relay.fd, gw_relay_events(&m->relay), 0};
	}
	struct timespec ts = {(time_t)(timeout / 1000000), (long)(timeout % 1000000) * 1000};
	ppoll(pf, (nfds_t)n, &ts, NULL);
	gw_mux *before = s->mux;
	if (pf[0].revents & POLLIN)
		accept_gateway(s);
	if (s->mux != before)
		conn = -1; /* a new connection: the old one's events (and relays) are gone */
	for (int i = 0; i < s->nroutes; i++)
		if (pf[1 + i].revents & POLLIN)
			route_accept(s, i);
	if (conn >= 0 && s->mux && pf[conn].revents && !pump_in(s))
		conn = -1;
	for (int i = rel0; conn >= 0 && s->mux && i < n; i++)
		if (pf[i].revents)
			gw_relay_on_fd(&rel[i - rel0]->relay, pf[i].revents);
	reap_relays(s);
	schedule(s);
	save(s, false); /* before any ACK leaves: a result acked is a result on disk */
	send_acks(s);
	if (s->mux)
		pump_out(s);
}

static void
sim_fini(sim *s)
{
	for (int i = 0; i < s->nroutes; i++)
		if (s->routes[i].lfd >= 0)
			close(s->routes[i].lfd);
	if (s->lfd >= 0)
		close(s->lfd);
	SSL_CTX_free(s->ctx);
	ps_trace_free(&s->trace);
	json_decref(s->run.resumes);
	if (s->by_id.b)
		kl_map_fini(&s->by_id);
	free(s->acks);
	free(s->ctlin);
	free(s->ctlout);
}

int
main(int argc, char **argv)
{
	sim s = {.ack = true, .max_inflight = 256, .ping_ms = 15000, .lfd = -1, .fd = -1};
	kl_list_init(&s.relays);
	int r = parse_args(&s, argc, argv);
	if (r)
		return r == 1 ? 0 : r;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	char err[1024];
	if (setup(&s, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-plane-sim: %s\n", err);
		sim_fini(&s);
		return 2;
	}
	bool done = false;
	while (!stop_sig && !done) {
		loop_once(&s);
		done = s.exit_when_done && all_done(&s);
	}
	if (s.mux) {
		gw_mux_goaway(s.mux, GW_E_NONE,
		              done ? "the simulator is done" : "simulator stopping");
		pump_out(&s);
		disconnect(&s, done ? "every operation is done" : "stopping", true);
	}
	save(&s, true);
	int status = s.c.duplicates || s.c.expect_failed ? 1 : 0;
	KL_LOG(KL_INFO, PS,
	       "%s: sent=%llu resent=%llu results=%llu duplicates=%llu expect_failed=%llu",
	       done ? "done" : "stopped", (unsigned long long)s.c.sent,
	       (unsigned long long)s.c.resent, (unsigned long long)s.c.results,
	       (unsigned long long)s.c.duplicates, (unsigned long long)s.c.expect_failed);
	sim_fini(&s);
	return status;
}
