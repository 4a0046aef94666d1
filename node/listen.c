/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's direct listener (see listen.h): a fixed set of REP contexts,
 * each receiving one request, handing it to the node, and sending the reply
 * from the node's reply callback (an asynchronous send, so the loop never
 * blocks). Cancels have no reply of their own and are acknowledged at once.
 */
#include "listen.h"

#include "kl_log.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdio.h>

#define NCTX 128

typedef struct lctx {
	struct node_listener *l;
	nng_ctx ctx;
	nng_aio *aio;
	int sending;
} lctx;

struct node_listener {
	node *n;
	nng_socket sock;
	lctx c[NCTX];
	volatile int stopping;
};

static void
send_bytes(lctx *c, uint8_t *buf, size_t len)
{
	nng_msg *m;
	if (nng_msg_alloc(&m, 0) || nng_msg_append(m, buf, len)) {
		free(buf);
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	free(buf);
	c->sending = 1;
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
}

static void
on_reply(void *arg, const Kiln__NodeReply *rep)
{
	lctx *c = arg;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_REPLY;
	e.node_reply = (Kiln__NodeReply *)rep;
	uint8_t *buf;
	size_t len;
	if (kl_env_encode(&e, &buf, &len) < 0)
		kl_env_encode_error(KILN__CODE__INTERNAL, "reply too large", 0, &buf, &len);
	send_bytes(c, buf, len);
}

static void
on_request(lctx *c)
{
	nng_msg *m = nng_aio_get_msg(c->aio);
	Kiln__Envelope *e = NULL;
	uint32_t ver = 0;
	uint8_t *buf;
	size_t len;
	int r = kl_env_decode(nng_msg_body(m), nng_msg_len(m), KL_MAX_MSG, &e, &ver);
	nng_msg_free(m);
	if (r < 0 || e->msg_case != KILN__ENVELOPE__MSG_NODE_WORK) {
		char msg[160];
		snprintf(msg, sizeof msg, "%s",
		         r == -EPROTO ? "protocol version mismatch"
		         : r < 0      ? kl_env_strerror(r)
		                      : "not a NodeWork message");
		kl_env_encode_error(r == -EPROTO ? KILN__CODE__VERSION_MISMATCH
		                                 : KILN__CODE__INVALID_ARGUMENT,
		                    msg, 0, &buf, &len);
		send_bytes(c, buf, len);
	} else if (e->node_work->work_case == KILN__NODE_WORK__WORK_CANCEL) {
		node_submit(c->l->n, e->node_work, NULL, NULL);
		kl_env_encode_error(KILN__CODE__OK, "cancel requested", 0, &buf, &len);
		send_bytes(c, buf, len);
	} else if ((r = node_submit(c->l->n, e->node_work, on_reply, c)) < 0) {
		kl_env_encode_error(KILN__CODE__UNAVAILABLE, "node is shutting down", 0, &buf,
		                    &len);
		send_bytes(c, buf, len);
	}
	if (e)
		kiln__envelope__free_unpacked(e, NULL);
}

static void
ctx_cb(void *arg)
{
	lctx *c = arg;
	int r = nng_aio_result(c->aio);
	if (r == NNG_ECLOSED || c->l->stopping)
		return;
	if (c->sending) {
		c->sending = 0;
		if (r)
			nng_msg_free(nng_aio_get_msg(c->aio));
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	if (r) {
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	on_request(c);
}

int
node_listener_start(node *n, const char *url, node_listener **ret, char *err, size_t errlen)
{
	node_listener *l = kl_xcalloc(1, sizeof *l);
	l->n = n;
	int r = nng_rep0_open(&l->sock);
	if (r == 0) {
		nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, KL_MAX_MSG);
		r = nng_listen(l->sock, url, NULL, 0);
	}
	if (r) {
		snprintf(err, errlen, "cannot listen on %s: %s", url, nng_strerror(r));
		nng_close(l->sock);
		free(l);
		return -EINVAL;
	}
	for (int i = 0; i < NCTX; i++) {
		lctx *c = &l->c[i];
		c->l = l;
		nng_ctx_open(&c->ctx, l->sock);
		nng_aio_alloc(&c->aio, ctx_cb, c);
		nng_ctx_recv(c->ctx, c->aio);
	}
	KL_LOG(KL_INFO, "node", "listening for direct calls on %s", url);
	*ret = l;
	return 0;
}

void
node_listener_stop(node_listener *l)
{
	if (!l)
		return;
	l->stopping = 1;
	for (int i = 0; i < NCTX; i++)
		nng_aio_stop(l->c[i].aio);
	nng_close(l->sock);
	for (int i = 0; i < NCTX; i++)
		nng_aio_free(l->c[i].aio);
	free(l);
}
