/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node membership (see member.h). One control context runs register ->
 * heartbeat -> heartbeat ...; `slots` work contexts each run pull -> (work on
 * the node) -> pull-with-reply. Every callback runs on an nng thread; the
 * node's reply callbacks run on the node's loop thread and only start an
 * asynchronous send. State shared between them sits under m->mu.
 */
#include "member.h"

#include "kl_clock.h"
#include "kl_log.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>

#define MEMBER    "member"
#define MAX_SLOTS 256

enum { PH_REGISTER, PH_RUNNING, PH_REFUSED, PH_STOPPED };
enum { CS_REG_SEND, CS_REG_RECV, CS_HB_SEND, CS_HB_RECV, CS_SLEEP };
enum { WS_IDLE, WS_SEND, WS_RECV, WS_BUSY, WS_SLEEP };

typedef struct wslot {
	node_member *m;
	nng_ctx ctx;
	nng_aio *aio;
	int state;
	uint8_t *done; /* packed NodeReply to deliver with the next pull */
	size_t done_len;
} wslot;

struct node_member {
	node *n;
	node_member_cfg cfg;
	char url[256], token[256], id[128];
	uint64_t incarnation;
	nng_socket sock;
	nng_ctx cctx;
	nng_aio *caio;
	int cstate;
	pthread_mutex_t mu;
	int phase;
	bool draining;
	uint32_t nslots;
	wslot slots[MAX_SLOTS];
	char refusal[256];
	uint32_t heartbeat_ms;
	uint64_t registered_at;
	const char *const *labels;
};

/* ---- sending ---- */

static int
send_env(node_member *m, nng_ctx ctx, nng_aio *aio, Kiln__Envelope *e)
{
	uint8_t *buf;
	size_t len;
	nng_msg *msg;
	uint32_t v = m->cfg.protocol_version ? m->cfg.protocol_version : KL_PROTO_VERSION;
	int r = kl_env_encode_as(e, v, &buf, &len);
	if (r < 0)
		return r;
	if (nng_msg_alloc(&msg, 0) || nng_msg_append(msg, buf, len)) {
		free(buf);
		return -ENOMEM;
	}
	free(buf);
	nng_aio_set_msg(aio, msg);
	nng_ctx_send(ctx, aio);
	return 0;
}

static Kiln__Envelope *
recv_env(nng_aio *aio, int *err)
{
	nng_msg *msg = nng_aio_get_msg(aio);
	Kiln__Envelope *e = NULL;
	*err = kl_env_decode(nng_msg_body(msg), nng_msg_len(msg), KL_MAX_MSG, &e, NULL);
	nng_msg_free(msg);
	return *err == 0 ? e : NULL;
}

static void
refuse(node_member *m, const char *why)
{
	pthread_mutex_lock(&m->mu);
	bool first = m->phase != PH_REFUSED;
	m->phase = PH_REFUSED;
	kl_strlcpy(m->refusal, why, sizeof m->refusal);
	pthread_mutex_unlock(&m->mu);
	if (first) {
		KL_LOG(KL_ERROR, MEMBER, "the scheduler at %s refused this node: %s", m->url, why);
		node_request_stop(m->n);
	}
}

/* ---- control: register and heartbeat ---- */

static void
fill_templates(const node_stats *st, Kiln__TemplateInfo *ti, Kiln__TemplateInfo **tv)
{
	for (int i = 0; i < st->ntemplates; i++) {
		kiln__template_info__init(&ti[i]);
		ti[i].name = (char *)st->templates[i].name;
		ti[i].warm = st->templates[i].warm;
		ti[i].target = st->templates[i].target;
		ti[i].creating = st->templates[i].creating;
		tv[i] = &ti[i];
	}
}

static void
send_register(node_member *m)
{
	node_stats st;
	node_get_stats(m->n, &st);
	Kiln__TemplateInfo ti[NODE_MAX_TEMPLATES], *tv[NODE_MAX_TEMPLATES];
	fill_templates(&st, ti, tv);
	Kiln__SessionInfo **sess = NULL;
	size_t nsess = 0;
	node_list_sessions(m->n, &sess, &nsess);
	Kiln__NodeRegister__LabelsEntry le[32], *lv[32];
	size_t nl = 0;
	char kbuf[32][64];
	for (size_t i = 0; m->labels && m->labels[i] && nl < 32; i++) {
		const char *eq = strchr(m->labels[i], '=');
		if (!eq)
			continue;
		kiln__node_register__labels_entry__init(&le[nl]);
		snprintf(kbuf[nl], sizeof kbuf[nl], "%.*s", (int)(eq - m->labels[i]), m->labels[i]);
		le[nl].key = kbuf[nl];
		le[nl].value = (char *)eq + 1;
		lv[nl] = &le[nl];
		nl++;
	}
	Kiln__NodeRegister reg = KILN__NODE_REGISTER__INIT;
	reg.node_id = m->id;
	reg.token = m->token;
	reg.slots = m->nslots;
	reg.max_sessions = st.max_sessions;
	reg.n_templates = (size_t)st.ntemplates;
	reg.templates = tv;
	reg.n_labels = nl;
	reg.labels = lv;
	reg.n_sessions = nsess;
	reg.sessions = sess;
	reg.incarnation = m->incarnation;
	reg.limits_enforced = st.limits_enforced;
	reg.software = "kiln-node " KILN_VERSION;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_REGISTER;
	e.node_register = &reg;
	m->cstate = CS_REG_SEND;
	if (send_env(m, m->cctx, m->caio, &e) < 0) {
		m->cstate = CS_SLEEP;
		nng_sleep_aio(1000, m->caio);
	}
	node_sessions_free(sess, nsess);
}

static void
send_heartbeat(node_member *m)
{
	node_stats st;
	node_get_stats(m->n, &st);
	Kiln__TemplateInfo ti[NODE_MAX_TEMPLATES], *tv[NODE_MAX_TEMPLATES];
	fill_templates(&st, ti, tv);
	uint32_t busy = 0;
	pthread_mutex_lock(&m->mu);
	for (uint32_t i = 0; i < m->nslots; i++)
		busy += m->slots[i].state == WS_BUSY;
	bool draining = m->draining;
	pthread_mutex_unlock(&m->mu);
	Kiln__Heartbeat hb = KILN__HEARTBEAT__INIT;
	hb.node_id = m->id;
	hb.incarnation = m->incarnation;
	hb.n_templates = (size_t)st.ntemplates;
	hb.templates = tv;
	hb.running = st.running;
	hb.sessions = st.sessions;
	hb.free_slots = m->nslots - busy;
	hb.draining = draining;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_HEARTBEAT;
	e.heartbeat = &hb;
	m->cstate = CS_HB_SEND;
	if (send_env(m, m->cctx, m->caio, &e) < 0) {
		m->cstate = CS_SLEEP;
		nng_sleep_aio(500, m->caio);
	}
}

static void slot_pull(wslot *w);

static void
start_slots(node_member *m)
{
	for (uint32_t i = 0; i < m->nslots; i++) {
		wslot *w = &m->slots[i];
		pthread_mutex_lock(&m->mu);
		bool idle = w->state == WS_IDLE;
		pthread_mutex_unlock(&m->mu);
		if (idle)
			slot_pull(w);
	}
}

static void
ignore_reply(void *arg, const Kiln__NodeReply *r)
{
}

static void
on_ack(node_member *m, Kiln__HeartbeatAck *a)
{
	if (a->code == KILN__CODE__NOT_FOUND) {
		KL_LOG(KL_INFO, MEMBER, "the scheduler does not know us: registering again");
		pthread_mutex_lock(&m->mu);
		m->phase = PH_REGISTER;
		pthread_mutex_unlock(&m->mu);
		send_register(m);
		return;
	}
	if (a->code == KILN__CODE__CANCELLED) {
		refuse(m, a->message);
		return;
	}
	for (size_t i = 0; i < a->n_control; i++)
		node_submit(m->n, a->control[i], ignore_reply, NULL);
	if (a->drain) {
		pthread_mutex_lock(&m->mu);
		if (!m->draining)
			KL_LOG(KL_INFO, MEMBER, "draining: no new sessions; exiting when empty");
		m->draining = true;
		pthread_mutex_unlock(&m->mu);
		/* Ask the loop: the stats snapshot may be a tick old. */
		if (node_session_count(m->n) == 0) {
			KL_LOG(KL_INFO, MEMBER, "drained: stopping");
			node_request_stop(m->n);
			return;
		}
	}
	send_heartbeat(m);
}

static void
on_registered(node_member *m, Kiln__Envelope *e)
{
	if (e->msg_case == KILN__ENVELOPE__MSG_ERROR) {
		char why[300];
		snprintf(why, sizeof why, "%s: %s", kl_code_name(e->error->code),
		         e->error->message);
		refuse(m, why);
		return;
	}
	if (e->msg_case != KILN__ENVELOPE__MSG_NODE_REGISTERED) {
		refuse(m, "unexpected answer to our registration");
		return;
	}
	Kiln__NodeRegistered *r = e->node_registered;
	if (r->code == KILN__CODE__UNAVAILABLE) {
		m->cstate = CS_SLEEP;
		nng_sleep_aio(1000, m->caio);
		return;
	}
	if (r->code != KILN__CODE__OK) {
		char why[300];
		snprintf(why, sizeof why, "%s: %s", kl_code_name(r->code), r->message);
		refuse(m, why);
		return;
	}
	pthread_mutex_lock(&m->mu);
	m->phase = PH_RUNNING;
	m->heartbeat_ms = r->heartbeat_ms ? r->heartbeat_ms : 1000;
	m->registered_at = kl_now_ms();
	pthread_mutex_unlock(&m->mu);
	KL_LOG(KL_INFO, MEMBER, "registered with %s as %s (%u slots)", m->url, m->id, m->nslots);
	/* The scheduler holds heartbeats up to heartbeat_ms: wait a bit longer. */
	nng_ctx_set_ms(m->cctx, NNG_OPT_RECVTIMEO, (nng_duration)(m->heartbeat_ms * 3));
	start_slots(m);
	send_heartbeat(m);
}

static void
control_cb(void *arg)
{
	node_member *m = arg;
	int r = nng_aio_result(m->caio);
	pthread_mutex_lock(&m->mu);
	int phase = m->phase;
	pthread_mutex_unlock(&m->mu);
	if (phase == PH_STOPPED || phase == PH_REFUSED || r == NNG_ECLOSED || r == NNG_ECANCELED)
		return;
	switch (m->cstate) {
	case CS_REG_SEND:
	case CS_HB_SEND:
		if (r) {
			nng_msg_free(nng_aio_get_msg(m->caio));
			m->cstate = CS_SLEEP;
			nng_sleep_aio(500, m->caio);
			return;
		}
		m->cstate = m->cstate == CS_REG_SEND ? CS_REG_RECV : CS_HB_RECV;
		nng_ctx_recv(m->cctx, m->caio);
		return;
	case CS_SLEEP:
		send_register(m);
		return;
	}
	if (r) { /* the scheduler went away or stopped answering: register again */
		KL_LOG(KL_WARN, MEMBER, "lost the scheduler at %s (%s): registering again", m->url,
		       nng_strerror(r));
		pthread_mutex_lock(&m->mu);
		m->phase = PH_REGISTER;
		pthread_mutex_unlock(&m->mu);
		m->cstate = CS_SLEEP;
		nng_sleep_aio(200, m->caio);
		return;
	}
	int err;
	Kiln__Envelope *e = recv_env(m->caio, &err);
	if (!e) {
		refuse(m, kl_env_strerror(err));
		return;
	}
	if (m->cstate == CS_REG_RECV)
		on_registered(m, e);
	else if (e->msg_case == KILN__ENVELOPE__MSG_HEARTBEAT_ACK)
		on_ack(m, e->heartbeat_ack);
	else
		send_heartbeat(m);
	kiln__envelope__free_unpacked(e, NULL);
}

/* ---- work slots ---- */

static size_t
put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}

/*
 * The pull with the previous reply spliced in as already-packed bytes: a
 * nested protobuf message is just (tag, length, bytes), so the reply (which
 * may carry a megabyte of output) is never unpacked and packed again.
 * Envelope{version = 1, work_request = 14: WorkRequest{1, 2, 4, done = 3}}.
 */
static int
send_pull(node_member *m, wslot *w, const uint8_t *done, size_t done_len)
{
	Kiln__WorkRequest wr = KILN__WORK_REQUEST__INIT;
	wr.node_id = m->id;
	wr.incarnation = m->incarnation;
	wr.want_work = true; /* draining nodes still finish and close what they hold */
	size_t wl = kiln__work_request__get_packed_size(&wr);
	size_t dl = done ? 1 + 10 + done_len : 0;
	uint8_t *buf = kl_xmalloc(32 + wl + dl); /* the head (<= 22 bytes) + the WorkRequest */
	uint32_t v = m->cfg.protocol_version ? m->cfg.protocol_version : KL_PROTO_VERSION;
	uint8_t *inner = buf + 32; /* the WorkRequest, built first, moved into place below */
	size_t il = kiln__work_request__pack(&wr, inner);
	if (done) {
		inner[il++] = (3 << 3) | 2;
		il += put_varint(inner + il, done_len);
		memcpy(inner + il, done, done_len);
		il += done_len;
	}
	uint8_t head[32];
	size_t hl = 0;
	head[hl++] = (1 << 3) | 0;
	hl += put_varint(head + hl, v);
	head[hl++] = (14 << 3) | 2;
	hl += put_varint(head + hl, il);
	memmove(buf + hl, inner, il);
	memcpy(buf, head, hl);
	nng_msg *msg;
	if (nng_msg_alloc(&msg, 0) || nng_msg_append(msg, buf, hl + il)) {
		free(buf);
		return -ENOMEM;
	}
	free(buf);
	nng_aio_set_msg(w->aio, msg);
	nng_ctx_send(w->ctx, w->aio);
	return 0;
}

static void
slot_pull(wslot *w)
{
	node_member *m = w->m;
	pthread_mutex_lock(&m->mu);
	if (m->phase != PH_RUNNING) {
		w->state = WS_IDLE; /* restarted by the next registration */
		free(w->done);
		w->done = NULL;
		pthread_mutex_unlock(&m->mu);
		return;
	}
	w->state = WS_SEND;
	uint8_t *done = w->done;
	size_t done_len = w->done_len;
	w->done = NULL;
	pthread_mutex_unlock(&m->mu);
	if (send_pull(m, w, done, done_len) < 0) {
		w->state = WS_SLEEP;
		nng_sleep_aio(500, w->aio);
	}
	free(done);
}

static void
work_done(void *arg, const Kiln__NodeReply *rep)
{
	wslot *w = arg;
	size_t len = kiln__node_reply__get_packed_size(rep);
	uint8_t *buf = kl_xmalloc(len);
	kiln__node_reply__pack(rep, buf);
	pthread_mutex_lock(&w->m->mu);
	free(w->done);
	w->done = buf;
	w->done_len = len;
	pthread_mutex_unlock(&w->m->mu);
	slot_pull(w);
}

static void
on_assign(wslot *w, Kiln__Envelope *e)
{
	node_member *m = w->m;
	if (e->msg_case == KILN__ENVELOPE__MSG_ERROR) {
		KL_LOG(KL_WARN, MEMBER, "work pull refused: %s", e->error->message);
		w->state = WS_SLEEP;
		nng_sleep_aio(1000, w->aio);
		return;
	}
	Kiln__WorkAssign *a =
	        e->msg_case == KILN__ENVELOPE__MSG_WORK_ASSIGN ? e->work_assign : NULL;
	if (a && a->code == KILN__CODE__NOT_FOUND) {
		pthread_mutex_lock(&m->mu);
		w->state = WS_IDLE; /* the control loop re-registers and restarts us */
		pthread_mutex_unlock(&m->mu);
		return;
	}
	if (!a || !a->work) {
		slot_pull(w);
		return;
	}
	pthread_mutex_lock(&m->mu);
	w->state = WS_BUSY;
	pthread_mutex_unlock(&m->mu);
	if (node_submit(m->n, a->work, work_done, w) < 0) {
		/* Shutting down: answer so the scheduler is not left waiting. */
		pthread_mutex_lock(&m->mu);
		w->state = WS_IDLE;
		pthread_mutex_unlock(&m->mu);
	}
}

static void
work_cb(void *arg)
{
	wslot *w = arg;
	node_member *m = w->m;
	int r = nng_aio_result(w->aio);
	pthread_mutex_lock(&m->mu);
	int phase = m->phase;
	pthread_mutex_unlock(&m->mu);
	if (phase == PH_STOPPED || phase == PH_REFUSED || r == NNG_ECLOSED || r == NNG_ECANCELED)
		return;
	if (w->state == WS_SLEEP) {
		slot_pull(w);
		return;
	}
	if (w->state == WS_SEND) {
		if (r) {
			nng_msg_free(nng_aio_get_msg(w->aio));
			w->state = WS_SLEEP;
			nng_sleep_aio(500, w->aio);
			return;
		}
		w->state = WS_RECV;
		nng_ctx_recv(w->ctx, w->aio);
		return;
	}
	if (r) { /* lost the scheduler: the control loop re-registers */
		pthread_mutex_lock(&m->mu);
		w->state = WS_IDLE;
		pthread_mutex_unlock(&m->mu);
		return;
	}
	int err;
	Kiln__Envelope *e = recv_env(w->aio, &err);
	if (!e) {
		w->state = WS_SLEEP;
		nng_sleep_aio(1000, w->aio);
		return;
	}
	on_assign(w, e);
	kiln__envelope__free_unpacked(e, NULL);
}

/* ---- lifecycle ---- */

int
node_member_start(node *n, const node_member_cfg *cfg, node_member **ret, char *err, size_t errlen)
{
	node_member *m = kl_xcalloc(1, sizeof *m);
	node_stats st;
	m->n = n;
	m->cfg = *cfg;
	m->labels = cfg->labels;
	kl_strlcpy(m->url, cfg->url, sizeof m->url);
	kl_strlcpy(m->token, cfg->token ? cfg->token : "", sizeof m->token);
	pthread_mutex_init(&m->mu, NULL);
	node_get_stats(n, &st);
	kl_strlcpy(m->id, st.name, sizeof m->id);
	m->incarnation = st.incarnation;
	m->nslots = cfg->slots ? cfg->slots : KL_MIN(st.max_calls ? st.max_calls : 64, 64);
	if (m->nslots > MAX_SLOTS)
		m->nslots = MAX_SLOTS;
	int r = nng_req0_open(&m->sock);
	if (r) {
		snprintf(err, errlen, "nng: %s", nng_strerror(r));
		free(m);
		return -ENOMEM;
	}
	/* Never re-send a request: a re-sent work pull could run a call twice. */
	nng_socket_set_ms(m->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(m->sock, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(m->sock, NNG_OPT_RECONNMAXT, 2000);
	nng_socket_set_size(m->sock, NNG_OPT_RECVMAXSZ, KL_MAX_MSG);
	if ((r = nng_ctx_open(&m->cctx, m->sock)) || (r = nng_aio_alloc(&m->caio, control_cb, m))) {
		snprintf(err, errlen, "nng: %s", nng_strerror(r));
		nng_close(m->sock);
		free(m);
		return -ENOMEM;
	}
	nng_ctx_set_ms(m->cctx, NNG_OPT_RECVTIMEO, 5000);
	for (uint32_t i = 0; i < m->nslots; i++) {
		wslot *w = &m->slots[i];
		w->m = m;
		nng_ctx_open(&w->ctx, m->sock);
		nng_aio_alloc(&w->aio, work_cb, w);
		/* The scheduler holds a pull up to its poll time (5 s by default). */
		nng_ctx_set_ms(w->ctx, NNG_OPT_RECVTIMEO, 30000);
	}
	r = nng_dial(m->sock, m->url, NULL, NNG_FLAG_NONBLOCK);
	if (r) {
		snprintf(err, errlen, "cannot dial the scheduler at %s: %s", m->url,
		         nng_strerror(r));
		node_member_stop(m);
		return -EINVAL;
	}
	m->phase = PH_REGISTER;
	send_register(m);
	*ret = m;
	return 0;
}

void
node_member_stop(node_member *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	if (m->phase != PH_REFUSED)
		m->phase = PH_STOPPED;
	pthread_mutex_unlock(&m->mu);
	nng_aio_stop(m->caio);
	for (uint32_t i = 0; i < m->nslots; i++)
		nng_aio_stop(m->slots[i].aio);
	nng_close(m->sock);
	nng_aio_free(m->caio);
	for (uint32_t i = 0; i < m->nslots; i++) {
		nng_aio_free(m->slots[i].aio);
		free(m->slots[i].done);
	}
	pthread_mutex_destroy(&m->mu);
	free(m);
}

bool
node_member_refused(node_member *m, char *why, size_t len)
{
	pthread_mutex_lock(&m->mu);
	bool r = m->phase == PH_REFUSED;
	if (r && why)
		kl_strlcpy(why, m->refusal, len);
	pthread_mutex_unlock(&m->mu);
	return r;
}

bool
node_member_registered(node_member *m)
{
	pthread_mutex_lock(&m->mu);
	bool r = m->phase == PH_RUNNING;
	pthread_mutex_unlock(&m->mu);
	return r;
}

bool
node_member_draining(node_member *m)
{
	pthread_mutex_lock(&m->mu);
	bool r = m->draining;
	pthread_mutex_unlock(&m->mu);
	return r;
}
