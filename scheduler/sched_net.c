/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's nng plumbing: two REP sockets (nodes, clients), each served
 * by a growing set of contexts. A context receives a request, the logic
 * either answers it at once or parks it (a node's work pull waits for work,
 * a client's call waits for its result), and the reply is queued under the
 * lock and sent after it is released (nng callbacks never run with our lock
 * held). The pool grows so that at least a couple of contexts always wait
 * in receive, up to a cap that bounds memory; contexts are never freed
 * while running (freeing an aio from its own callback deadlocks).
 */
#include "sched_impl.h"

#include "kl_log.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <nng/protocol/reqrep0/rep.h>
#include <stdio.h>

#define MIN_RECV        2
#define MAX_NODE_CTXS   16384
#define MAX_CLIENT_CTXS 65536
/* A client that stops reading: each reply nng cannot write yet waits on its
 * context, message and all. Past this many bytes unsent on one connection
 * the connection is closed (nng drops what waits for it), like Redis's
 * client-output-buffer-limit: a live client reads as fast as the network
 * lets it. A reply counts at least UNSENT_MIN, so a flood of small ones is
 * bounded too (at most UNSENT_MAX / UNSENT_MIN contexts per connection). */
#define UNSENT_MAX (64u << 20)
#define UNSENT_MIN (16u << 10)

static void ctx_cb(void *arg);

/* Add delta to the unsent bytes of c's pipe (with the lock); the new total. */
static size_t
unsent_add(sched *s, sctx *c, ssize_t delta)
{
	char key[16];
	snprintf(key, sizeof key, "%u", (unsigned)nng_pipe_id(c->pipe));
	size_t v = (size_t)(uintptr_t)kl_map_get(&s->unsent, key) + (size_t)delta;
	if (v)
		kl_map_put(&s->unsent, key, (void *)(uintptr_t)v);
	else
		kl_map_del(&s->unsent, key);
	return v;
}

static int
ctx_new(sched *s, enum sctx_kind kind)
{
	sctx *c = kl_xcalloc(1, sizeof *c);
	c->s = s;
	c->kind = kind;
	int r = nng_ctx_open(&c->ctx, kind == SC_NODE ? s->node_sock : s->client_sock);
	if (r == 0)
		r = nng_aio_alloc(&c->aio, ctx_cb, c);
	if (r) {
		free(c);
		return -ENOMEM;
	}
	kl_list_init(&c->link);
	kl_list_add_tail(&s->ctxs, &c->all);
	if (kind == SC_NODE)
		s->node_ctxs++;
	else
		s->client_ctxs++;
	c->state = SC_RECV;
	if (kind == SC_NODE)
		s->node_recv++;
	else
		s->client_recv++;
	nng_ctx_recv(c->ctx, c->aio);
	return 0;
}

/* Keep MIN_RECV contexts receiving on each socket (called with the lock). */
static void
ctx_top_up(sched *s, enum sctx_kind kind)
{
	uint32_t *recv = kind == SC_NODE ? &s->node_recv : &s->client_recv;
	uint32_t *total = kind == SC_NODE ? &s->node_ctxs : &s->client_ctxs;
	uint32_t cap = kind == SC_NODE ? MAX_NODE_CTXS : MAX_CLIENT_CTXS;
	while (*recv < MIN_RECV && *total < cap && !s->stopped)
		if (ctx_new(s, kind) < 0)
			break;
}

static void
start_recv(sctx *c)
{
	sched *s = c->s;
	c->state = SC_RECV;
	c->park = PK_NONE;
	c->node = NULL;
	if (c->kind == SC_NODE)
		s->node_recv++;
	else
		s->client_recv++;
	nng_ctx_recv(c->ctx, c->aio);
}

static void
on_request(sctx *c, nng_msg *m)
{
	sched *s = c->s;
	Kiln__Envelope *e = NULL;
	uint32_t ver = 0;
	c->pipe = nng_msg_get_pipe(m);
	int r = kl_env_decode(nng_msg_body(m), nng_msg_len(m), KL_MAX_MSG, &e, &ver);
	nng_msg_free(m);
	pthread_mutex_lock(&s->mu);
	c->state = SC_BUSY;
	if (c->kind == SC_NODE)
		s->node_recv--;
	else
		s->client_recv--;
	if (r < 0) {
		char msg[160];
		if (r == -EPROTO)
			snprintf(msg, sizeof msg,
			         "protocol version mismatch: this scheduler speaks %u, the peer "
			         "sent %u; upgrade the older side",
			         KL_PROTO_VERSION, ver);
		else
			snprintf(msg, sizeof msg, "%s", kl_env_strerror(r));
		KL_LOG(KL_WARN, SCHED_COMPONENT, "refused a %s message: %s",
		       c->kind == SC_NODE ? "node" : "client", msg);
		sctx_reply_error(c,
		                 r == -EPROTO ? KILN__CODE__VERSION_MISMATCH
		                              : KILN__CODE__INVALID_ARGUMENT,
		                 msg, 0);
	} else if (c->kind == SC_NODE) {
		sched_on_node_msg(s, c, e);
	} else {
		sched_on_client_msg(s, c, e);
	}
	if (e)
		kiln__envelope__free_unpacked(e, NULL);
	ctx_top_up(s, c->kind);
	pthread_mutex_unlock(&s->mu);
	sched_flush(s);
}

static void
ctx_cb(void *arg)
{
	sctx *c = arg;
	sched *s = c->s;
	int r = nng_aio_result(c->aio);
	if (c->state == SC_SEND) {
		if (r != 0) {
			nng_msg *m = nng_aio_get_msg(c->aio);
			if (m)
				nng_msg_free(m); /* the peer went away: nothing to do */
		}
		pthread_mutex_lock(&s->mu);
		if (c->unsent)
			unsent_add(s, c, -(ssize_t)c->unsent);
		c->unsent = 0;
		if (s->stopped || r == NNG_ECLOSED) {
			c->state = SC_DEAD;
			pthread_mutex_unlock(&s->mu);
			return;
		}
		start_recv(c);
		pthread_mutex_unlock(&s->mu);
		return;
	}
	if (r != 0) {
		pthread_mutex_lock(&s->mu);
		if (c->kind == SC_NODE)
			s->node_recv--;
		else
			s->client_recv--;
		if (r == NNG_ECLOSED || s->stopped) {
			c->state = SC_DEAD;
			pthread_mutex_unlock(&s->mu);
			return;
		}
		start_recv(c);
		pthread_mutex_unlock(&s->mu);
		return;
	}
	on_request(c, nng_aio_get_msg(c->aio));
}

/* ---- replies ---- */

void
sctx_reply_env(sctx *c, Kiln__Envelope *e)
{
	uint8_t *buf;
	size_t len;
	nng_msg *m;
	if (c->state == SC_SEND || c->state == SC_RECV || c->state == SC_DEAD) {
		KL_LOG(KL_ERROR, SCHED_COMPONENT, "bug: reply on a context in state %d", c->state);
		return;
	}
	if (kl_env_encode(e, &buf, &len) < 0) {
		kl_env_encode_error(KILN__CODE__INTERNAL, "reply too large", 0, &buf, &len);
	}
	if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, buf, len) != 0) {
		free(buf);
		return;
	}
	free(buf);
	if (c->out)
		nng_msg_free(c->out);
	c->out = m;
	if (c->kind == SC_CLIENT && !c->unsent) {
		c->unsent = KL_MAX((size_t)len, (size_t)UNSENT_MIN);
		size_t total = unsent_add(c->s, c, (ssize_t)c->unsent);
		if (total > UNSENT_MAX && total - c->unsent <= UNSENT_MAX) {
			KL_LOG(KL_WARN, SCHED_COMPONENT,
			       "closing client connection %u: %zu bytes of replies unread "
			       "(limit %u); the outcome of its calls is unknown to it",
			       (unsigned)nng_pipe_id(c->pipe), total, UNSENT_MAX);
			c->close_pipe = true;
		}
	}
	kl_list_del(&c->link);
	c->park = PK_NONE;
	c->node = NULL;
	c->state = SC_SEND;
	kl_list_add_tail(&c->s->sendq, &c->link);
}

void
sctx_reply_client(sctx *c, Kiln__ClientReply *r)
{
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	r->request_id = c->request_id;
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REPLY;
	e.client_reply = r;
	sctx_reply_env(c, &e);
}

void
sctx_reply_error(sctx *c, int code, const char *msg, uint32_t retry_after_ms)
{
	Kiln__ErrorReply er = KILN__ERROR_REPLY__INIT;
	er.code = code;
	er.message = (char *)msg;
	er.retry_after_ms = retry_after_ms;
	if (c->kind == SC_CLIENT) {
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_ERROR;
		r.error = &er;
		sctx_reply_client(c, &r);
		return;
	}
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_ERROR;
	e.error = &er;
	sctx_reply_env(c, &e);
}

void
sched_flush(sched *s)
{
	kl_list q;
	kl_list_init(&q);
	pthread_mutex_lock(&s->mu);
	if (!kl_list_empty(&s->sendq)) {
		q.next = s->sendq.next;
		q.prev = s->sendq.prev;
		q.next->prev = &q;
		q.prev->next = &q;
		kl_list_init(&s->sendq);
	}
	pthread_mutex_unlock(&s->mu);
	kl_list *l;
	while ((l = kl_list_pop(&q))) {
		sctx *c = kl_container_of(l, sctx, link);
		nng_msg *m = c->out;
		nng_pipe p = c->pipe;
		bool close_pipe = c->close_pipe;
		c->out = NULL;
		c->close_pipe = false;
		nng_aio_set_msg(c->aio, m);
		nng_ctx_send(c->ctx, c->aio);
		if (close_pipe)
			nng_pipe_close(p); /* completes every send waiting for it */
	}
}

/* ---- sockets ---- */

static void
pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	sched *s = arg;
	if (ev != NNG_PIPE_EV_REM_POST)
		return;
	pthread_mutex_lock(&s->mu);
	sched_on_node_pipe_gone(s, p);
	pthread_mutex_unlock(&s->mu);
	sched_flush(s);
}

static int
listen_on(sched *s, nng_socket sock, const char *url, char *err, size_t errlen)
{
	if (!url || !*url)
		return 0;
	int r = nng_listen(sock, url, &s->listeners[s->nlisteners], 0);
	if (r) {
		snprintf(err, errlen, "cannot listen on %s: %s", url, nng_strerror(r));
		return -EADDRINUSE;
	}
	s->nlisteners++;
	KL_LOG(KL_INFO, SCHED_COMPONENT, "listening on %s", url);
	return 0;
}

int
sched_net_start(sched *s, const char *extra_node_url, const char *extra_client_url, char *err,
                size_t errlen)
{
	kl_map_init(&s->unsent);
	int r = nng_rep0_open(&s->node_sock);
	if (r == 0)
		r = nng_rep0_open(&s->client_sock);
	if (r) {
		snprintf(err, errlen, "nng: %s", nng_strerror(r));
		return -ENOMEM;
	}
	nng_socket_set_size(s->node_sock, NNG_OPT_RECVMAXSZ, KL_MAX_MSG);
	nng_socket_set_size(s->client_sock, NNG_OPT_RECVMAXSZ, KL_MAX_MSG);
	nng_pipe_notify(s->node_sock, NNG_PIPE_EV_REM_POST, pipe_cb, s);
	if ((r = listen_on(s, s->node_sock, s->cfg.node_url, err, errlen)) < 0 ||
	    (r = listen_on(s, s->node_sock, extra_node_url, err, errlen)) < 0 ||
	    (r = listen_on(s, s->client_sock, s->cfg.client_url, err, errlen)) < 0 ||
	    (r = listen_on(s, s->client_sock, extra_client_url, err, errlen)) < 0)
		return r;
	pthread_mutex_lock(&s->mu);
	ctx_top_up(s, SC_NODE);
	ctx_top_up(s, SC_CLIENT);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

void
sched_net_stop(sched *s)
{
	pthread_mutex_lock(&s->mu);
	s->stopped = true;
	pthread_mutex_unlock(&s->mu);
	/* Stop every aio first (callbacks then see ECLOSED), then close. */
	kl_list *p;
	kl_list_for_each (p, &s->ctxs) {
		sctx *c = kl_container_of(p, sctx, all);
		nng_aio_stop(c->aio);
	}
	nng_close(s->node_sock);
	nng_close(s->client_sock);
	kl_list *tmp;
	kl_list_for_each_safe (p, tmp, &s->ctxs) {
		sctx *c = kl_container_of(p, sctx, all);
		nng_msg *m = nng_aio_get_msg(c->aio);
		if (m && c->state == SC_SEND)
			nng_msg_free(m);
		if (c->out)
			nng_msg_free(c->out);
		nng_aio_free(c->aio);
		kl_list_del(&c->all);
		free(c);
	}
	kl_map_fini(&s->unsent);
}
