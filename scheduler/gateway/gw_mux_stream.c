/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream calls of the tunnel multiplexer (gw_mux.h): open, write (with a
 * copy, or zero-copy through reserve/commit into the send queue's last
 * chunk), read (with a copy, or zero-copy through peek/skip), half-close,
 * reset and per-stream state. None of them fires a callback or frees a
 * stream: they change state that the next pump call (gw_mux.c) acts on.
 */
#include "gw_mux_impl.h"

#include <errno.h>
#include <string.h>

#include "kl_util.h"

int
gw_mux_open(gw_mux *m, uint8_t kind, const void *meta, size_t meta_len, void *udata,
            uint32_t *ret_id)
{
	uint8_t f[GW_HDR_LEN + 1 + GW_META_MAX];
	if (m->err)
		return -ENOTCONN;
	if (m->goaway_sent || m->goaway_recvd)
		return -ESHUTDOWN;
	if (gw_open_check(kind, meta, meta_len, NULL) < 0)
		return -EINVAL;
	if (kind == GW_KIND_CONTROL && m->cfg.role != GW_ROLE_GATEWAY)
		return -EINVAL;
	if (kind == GW_KIND_CONTROL && m->control_open)
		return -EEXIST;
	if (m->nlocal >= (m->peer_ok ? m->peer.max_streams : GW_MAX_STREAMS_DEFAULT))
		return -EAGAIN;
	if (m->next_sid > GW_SID_MAX)
		return -ENOSPC;
	uint32_t id = m->next_sid;
	int r = gwm_ctl_push(m, f, gw_open_encode(f, sizeof f, id, 0, kind, meta, meta_len), false,
	                     false);
	if (r < 0)
		return r;
	m->next_sid += 2;
	struct gwm_stream *s = gwm_stream_new(m, id, kind, true);
	s->udata = udata;
	if (kind == GW_KIND_CONTROL)
		m->control_open = true;
	*ret_id = id;
	return 0;
}

/* The stream for a write: NULL with *err set when writing is not possible. */
static struct gwm_stream *
writer(const gw_mux *m, uint32_t id, int *err)
{
	struct gwm_stream *s = gwm_tab_get(m, id);
	if (!s)
		*err = -ENOENT;
	else if (s->ended)
		*err = s->end_code == GW_E_NONE ? -EPIPE : -ECONNRESET;
	else if (s->fin_queued)
		*err = -EPIPE;
	else
		return s;
	return NULL;
}

static void
want_room(gw_mux *m, struct gwm_stream *s)
{
	if (!kl_list_linked(&s->blocked))
		kl_list_add_tail(&m->blocked, &s->blocked);
}

ssize_t
gw_mux_write(gw_mux *m, uint32_t id, const void *buf, size_t len)
{
	int err;
	struct gwm_stream *s = writer(m, id, &err);
	if (!s)
		return err;
	if (!len)
		return 0;
	size_t n = KL_MIN(len, gwm_room(m, s));
	if (n < len)
		want_room(m, s);
	if (!n)
		return -EAGAIN;
	gwm_q_append(m, &s->sq, buf, n);
	m->sq_total += n;
	gwm_update_active(m, s);
	return (ssize_t)n;
}

int
gw_mux_write_reserve(gw_mux *m, uint32_t id, void **ret_ptr, size_t *ret_len)
{
	int err;
	struct gwm_stream *s = writer(m, id, &err);
	if (!s)
		return err;
	size_t n = gwm_room(m, s);
	if (!n) {
		want_room(m, s);
		return -EAGAIN;
	}
	struct gwm_queue *q = &s->sq;
	if (!q->tail || q->tail->len == GWM_CHUNK_CAP) {
		struct gwm_chunk *c = gwm_chunk_get(m);
		if (q->tail)
			q->tail->next = c;
		else
			q->head = c;
		q->tail = c;
	}
	*ret_ptr = q->tail->data + q->tail->len;
	*ret_len = KL_MIN(n, (size_t)(GWM_CHUNK_CAP - q->tail->len));
	return 0;
}

int
gw_mux_write_commit(gw_mux *m, uint32_t id, size_t n)
{
	int err;
	struct gwm_stream *s = writer(m, id, &err);
	if (!s)
		return err;
	struct gwm_queue *q = &s->sq;
	if (!n)
		return 0;
	if (!q->tail || n > GWM_CHUNK_CAP - q->tail->len || n > gwm_room(m, s))
		return -EINVAL;
	q->tail->len += (uint32_t)n;
	q->bytes += n;
	m->sq_total += n;
	gwm_update_active(m, s);
	return 0;
}

/* The stream for a read: NULL with *err set (0 at EOF) when nothing can be read. */
static struct gwm_stream *
reader(gw_mux *m, uint32_t id, ssize_t *err)
{
	struct gwm_stream *s = gwm_tab_get(m, id);
	if (!s) {
		*err = -ENOENT;
		return NULL;
	}
	if (s->ended && s->end_code != GW_E_NONE) {
		*err = -ECONNRESET;
		return NULL;
	}
	if (s->rq.bytes)
		return s;
	if (s->fin_recvd) {
		s->eof_read = true;
		gwm_maybe_done(m, s);
		*err = 0;
	} else {
		*err = -EAGAIN;
	}
	return NULL;
}

ssize_t
gw_mux_read(gw_mux *m, uint32_t id, void *buf, size_t len)
{
	ssize_t err;
	struct gwm_stream *s = reader(m, id, &err);
	if (!s)
		return err;
	size_t n = KL_MIN(len, s->rq.bytes);
	gwm_q_take(m, &s->rq, buf, n);
	gwm_consumed(m, s, n);
	return (ssize_t)n;
}

ssize_t
gw_mux_peek(gw_mux *m, uint32_t id, const void **ret_ptr)
{
	ssize_t err;
	struct gwm_stream *s = reader(m, id, &err);
	if (!s)
		return err;
	struct gwm_chunk *c = s->rq.head; /* trimmed: never drained while bytes remain */
	*ret_ptr = c->data + c->off;
	return (ssize_t)(c->len - c->off);
}

int
gw_mux_skip(gw_mux *m, uint32_t id, size_t n)
{
	struct gwm_stream *s = gwm_tab_get(m, id);
	if (!s)
		return -ENOENT;
	if (n > s->rq.bytes)
		return -EINVAL;
	gwm_q_take(m, &s->rq, NULL, n);
	gwm_consumed(m, s, n);
	return 0;
}

ssize_t
gw_mux_readable(const gw_mux *m, uint32_t id)
{
	const struct gwm_stream *s = gwm_tab_get(m, id);
	return s ? (ssize_t)s->rq.bytes : -ENOENT;
}

int
gw_mux_shutdown(gw_mux *m, uint32_t id)
{
	int err;
	struct gwm_stream *s = writer(m, id, &err);
	if (!s)
		return err;
	s->fin_queued = true;
	gwm_update_active(m, s);
	return 0;
}

int
gw_mux_reset(gw_mux *m, uint32_t id, uint32_t code, const char *msg)
{
	struct gwm_stream *s = gwm_tab_get(m, id);
	if (!s || s->ended)
		return -ENOENT;
	gwm_end_stream(m, s, code, msg ? msg : "reset", true);
	return 0;
}

void *
gw_mux_udata(const gw_mux *m, uint32_t id)
{
	const struct gwm_stream *s = gwm_tab_get(m, id);
	return s ? s->udata : NULL;
}

int
gw_mux_set_udata(gw_mux *m, uint32_t id, void *udata)
{
	struct gwm_stream *s = gwm_tab_get(m, id);
	if (!s)
		return -ENOENT;
	s->udata = udata;
	return 0;
}

int
gw_mux_stream_kind(const gw_mux *m, uint32_t id)
{
	const struct gwm_stream *s = gwm_tab_get(m, id);
	return s ? s->kind : -ENOENT;
}
