/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tunnel multiplexer (gw_mux.h, docs/tunnel.md): an incremental frame
 * parser that streams DATA payloads straight into per-stream receive queues,
 * per-stream and connection flow control in both directions, a round-robin
 * frame scheduler that frames into one contiguous output batch (one SSL_write
 * or write(2) per batch, and at most one frame per stream per round), PING
 * timers, GOAWAY and connection failure. Events are queued while frames are
 * processed and delivered at the end of each pump call, so streams are only
 * freed where no caller can still hold them. The stream calls of gw_mux.h
 * live in gw_mux_stream.c.
 */
#include "gw_mux_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kl_util.h"

/* ---- chunks and queues ---- */

struct gwm_chunk *
gwm_chunk_get(gw_mux *m)
{
	struct gwm_chunk *c = m->freel;
	if (c) {
		m->freel = c->next;
		m->nfree--;
	} else {
		c = kl_xmalloc(sizeof *c);
	}
	c->next = NULL;
	c->off = c->len = 0;
	return c;
}

static void
chunk_put(gw_mux *m, struct gwm_chunk *c)
{
	if (m->nfree >= GWM_FREE_MAX) {
		free(c);
		return;
	}
	c->next = m->freel;
	m->freel = c;
	m->nfree++;
}

void
gwm_q_append(gw_mux *m, struct gwm_queue *q, const uint8_t *src, size_t n)
{
	while (n) {
		if (!q->tail || q->tail->len == GWM_CHUNK_CAP) {
			struct gwm_chunk *c = gwm_chunk_get(m);
			if (q->tail)
				q->tail->next = c;
			else
				q->head = c;
			q->tail = c;
		}
		size_t k = KL_MIN(n, GWM_CHUNK_CAP - q->tail->len);
		memcpy(q->tail->data + q->tail->len, src, k);
		q->tail->len += (uint32_t)k;
		q->bytes += k;
		src += k;
		n -= k;
	}
}

/* Drop drained chunks from the head. */
static void
q_trim(gw_mux *m, struct gwm_queue *q)
{
	while (q->head && q->head->off == q->head->len) {
		struct gwm_chunk *c = q->head;
		q->head = c->next;
		if (!q->head)
			q->tail = NULL;
		chunk_put(m, c);
	}
}

/* Copy n <= q->bytes bytes out (dst NULL: just drop them). */
void
gwm_q_take(gw_mux *m, struct gwm_queue *q, uint8_t *dst, size_t n)
{
	while (n) {
		q_trim(m, q);
		struct gwm_chunk *c = q->head;
		size_t k = KL_MIN(n, (size_t)(c->len - c->off));
		if (dst) {
			memcpy(dst, c->data + c->off, k);
			dst += k;
		}
		c->off += (uint32_t)k;
		q->bytes -= k;
		n -= k;
	}
	q_trim(m, q);
}

static void
q_clear(gw_mux *m, struct gwm_queue *q)
{
	while (q->head) {
		struct gwm_chunk *c = q->head;
		q->head = c->next;
		chunk_put(m, c);
	}
	q->tail = NULL;
	q->bytes = 0;
}

/* ---- the stream table ---- */

struct gwm_stream *
gwm_tab_get(const gw_mux *m, uint32_t id)
{
	for (struct gwm_stream *s = m->tab[id & m->tabmask]; s; s = s->hnext)
		if (s->id == id)
			return s;
	return NULL;
}

static void
tab_put(gw_mux *m, struct gwm_stream *s)
{
	if (m->ntab > m->tabmask) {
		size_t nb = (m->tabmask + 1) * 2;
		struct gwm_stream **t = kl_xcalloc(nb, sizeof *t);
		for (size_t i = 0; i <= m->tabmask; i++)
			for (struct gwm_stream *x = m->tab[i], *nx; x; x = nx) {
				nx = x->hnext;
				x->hnext = t[x->id & (nb - 1)];
				t[x->id & (nb - 1)] = x;
			}
		free(m->tab);
		m->tab = t;
		m->tabmask = nb - 1;
	}
	struct gwm_stream **b = &m->tab[s->id & m->tabmask];
	s->hnext = *b;
	*b = s;
	m->ntab++;
}

static void
tab_del(gw_mux *m, struct gwm_stream *s)
{
	for (struct gwm_stream **p = &m->tab[s->id & m->tabmask]; *p; p = &(*p)->hnext)
		if (*p == s) {
			*p = s->hnext;
			m->ntab--;
			return;
		}
}

static bool
is_local_id(const gw_mux *m, uint32_t id)
{
	return (id & 1) == (m->cfg.role == GW_ROLE_GATEWAY);
}

static struct gwm_stream *
lookup(const gw_mux *m, uint32_t id, enum gwm_sid_class *cls)
{
	struct gwm_stream *s = gwm_tab_get(m, id);
	if (s)
		*cls = s->ended ? GWM_SID_CLOSED : GWM_SID_LIVE;
	else if (is_local_id(m, id))
		*cls = id < m->next_sid ? GWM_SID_CLOSED : GWM_SID_IDLE;
	else
		*cls = id <= m->last_peer ? GWM_SID_CLOSED : GWM_SID_IDLE;
	return s && !s->ended ? s : NULL;
}

struct gwm_stream *
gwm_stream_new(gw_mux *m, uint32_t id, uint8_t kind, bool local)
{
	struct gwm_stream *s = kl_xcalloc(1, sizeof *s);
	s->id = id;
	s->kind = kind;
	s->local = local;
	s->rwin = m->cfg.stream_window;
	s->swin = m->peer_ok ? m->peer.stream_window : 0;
	kl_list_init(&s->active);
	kl_list_init(&s->wu);
	kl_list_init(&s->readable);
	kl_list_init(&s->blocked);
	kl_list_init(&s->writable);
	kl_list_init(&s->ended_l);
	tab_put(m, s);
	if (local)
		m->nlocal++;
	else
		m->npeer++;
	return s;
}

static void
stream_unlink(struct gwm_stream *s)
{
	kl_list_del(&s->active);
	kl_list_del(&s->wu);
	kl_list_del(&s->readable);
	kl_list_del(&s->blocked);
	kl_list_del(&s->writable);
}

static void
stream_free(gw_mux *m, struct gwm_stream *s)
{
	q_clear(m, &s->sq);
	q_clear(m, &s->rq);
	free(s->end_msg);
	free(s);
}

/* ---- control frames ---- */

/* Queue an encoded control frame. Frames the peer provokes (PONG, RST in
 * answer to its frames) count against cfg.ctl_max: a peer that keeps
 * provoking them without reading ours fails the connection. */
static int conn_fail(gw_mux *m, int err, uint32_t code, bool goaway, const char *fmt, ...)
        KL_PRINTF(5, 6);

int
gwm_ctl_push(gw_mux *m, const uint8_t *frame, int len, bool head, bool provoked)
{
	if (len < 0)
		return len; /* an encoder refused: a bug, but never a crash */
	if (provoked && m->ctl_bytes + (size_t)len > m->cfg.ctl_max)
		return conn_fail(
		        m, -EPROTO, GW_E_CALM, true,
		        "%zu bytes of control frames queued: the peer provokes them faster "
		        "than it reads",
		        m->ctl_bytes);
	struct gwm_ctl_item *c = kl_xmalloc(sizeof *c + (size_t)len);
	c->len = (uint32_t)len;
	c->type = frame[4];
	memcpy(c->buf, frame, (size_t)len);
	if (head)
		kl_list_add_head(&m->ctl, &c->link);
	else
		kl_list_add_tail(&m->ctl, &c->link);
	m->ctl_bytes += (size_t)len;
	return 0;
}

static void
ctl_clear(gw_mux *m, bool keep_hello)
{
	kl_list *pos, *tmp;
	kl_list_for_each_safe (pos, tmp, &m->ctl) {
		struct gwm_ctl_item *c = kl_list_entry(pos, struct gwm_ctl_item, link);
		if (keep_hello && c->type == GW_T_HELLO)
			continue;
		kl_list_del(&c->link);
		m->ctl_bytes -= c->len;
		free(c);
	}
	m->npong = 0;
}

static void
rst_push(gw_mux *m, uint32_t id, uint32_t code, const char *msg, bool provoked)
{
	uint8_t f[GW_HDR_LEN + 4 + GW_MSG_MAX];
	if (!m->err)
		gwm_ctl_push(m, f, gw_rst_encode(f, sizeof f, id, code, msg), false, provoked);
}

static int
hello_push(gw_mux *m)
{
	uint8_t f[GW_HDR_LEN + GW_HELLO_MAX];
	int r = gwm_ctl_push(m, f, gw_hello_encode(f, sizeof f, &m->hello), true, false);
	if (r == 0)
		m->hello_out = true;
	return r;
}

/* ---- stream state ---- */

static bool
sendable(const gw_mux *m, const struct gwm_stream *s)
{
	if (s->ended || s->fin_sent || !m->peer_ok || m->err)
		return false;
	if (s->sq.bytes)
		return s->swin > 0;
	return s->fin_queued;
}

void
gwm_update_active(gw_mux *m, struct gwm_stream *s)
{
	bool want = sendable(m, s);
	if (want && !kl_list_linked(&s->active))
		kl_list_add_tail(&m->active, &s->active);
	else if (!want)
		kl_list_del(&s->active);
}

static void
mark_readable(gw_mux *m, struct gwm_stream *s)
{
	if (!kl_list_linked(&s->readable))
		kl_list_add_tail(&m->readable, &s->readable);
}

/* Bytes the application read (or that were dropped): credit to return. */
void
gwm_consumed(gw_mux *m, struct gwm_stream *s, size_t n)
{
	m->rq_total -= n;
	m->rcredit += (uint32_t)n;
	if (s && !s->fin_recvd && !s->ended) {
		s->rcredit += (uint32_t)n;
		if (s->rcredit >= m->cfg.stream_window / 4 && !kl_list_linked(&s->wu))
			kl_list_add_tail(&m->wu, &s->wu);
	}
}

/* The stream is over: queues on_end(code, msg), drops its buffers (returning
 * the connection credit of unread data), and sends RST if asked. */
void
gwm_end_stream(gw_mux *m, struct gwm_stream *s, uint32_t code, const char *msg, bool send_rst)
{
	if (s->ended)
		return;
	s->ended = true;
	s->end_code = code;
	s->end_msg = kl_xstrdup(msg ? msg : "");
	if (send_rst)
		rst_push(m, s->id, code, msg, false);
	m->sq_total -= s->sq.bytes;
	q_clear(m, &s->sq);
	if (s->rq.bytes) {
		gwm_consumed(m, NULL, s->rq.bytes);
		q_clear(m, &s->rq);
	}
	stream_unlink(s);
	if (m->cur_s == s)
		m->cur_s = NULL;
	if (s->local)
		m->nlocal--;
	else
		m->npeer--;
	kl_list_add_tail(&m->ended, &s->ended_l);
}

void
gwm_maybe_done(gw_mux *m, struct gwm_stream *s)
{
	if (!s->ended && s->fin_sent && s->fin_recvd && s->eof_read)
		gwm_end_stream(m, s, GW_E_NONE, "", false);
}

/* A stream error provoked by the peer: RST with the reason. */
static void
stream_error(gw_mux *m, struct gwm_stream *s, uint32_t code, const char *msg)
{
	if (s->ended)
		return;
	rst_push(m, s->id, code, msg, true);
	gwm_end_stream(m, s, code, msg, false);
}

/* ---- connection failure ---- */

static int
conn_fail(gw_mux *m, int err, uint32_t code, bool goaway, const char *fmt, ...)
{
	if (m->err)
		return m->err;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->errmsg, sizeof m->errmsg, fmt, ap);
	va_end(ap);
	m->err = err;
	m->err_code = code ? code : GW_E_INTERNAL;
	/* Our HELLO still goes first if it has not left: the peer then reads
	 * the GOAWAY's reason after a valid handshake. */
	ctl_clear(m, true);
	if (goaway && !m->goaway_sent) {
		uint8_t f[GW_HDR_LEN + 8 + GW_MSG_MAX];
		gwm_ctl_push(m, f,
		             gw_goaway_encode(f, sizeof f, m->last_peer, m->err_code, m->errmsg),
		             false, false);
		m->goaway_sent = true;
	}
	for (size_t i = 0; i <= m->tabmask; i++)
		for (struct gwm_stream *s = m->tab[i]; s; s = s->hnext)
			gwm_end_stream(m, s, m->err_code, m->errmsg, false);
	m->cur_s = NULL;
	return err;
}

/* ---- delivering events ---- */

static void
deliver(gw_mux *m)
{
	const struct gw_mux_ops *ops = m->cfg.ops;
	void *arg = m->cfg.arg;
	for (;;) {
		kl_list *n;
		if ((n = kl_list_pop(&m->readable))) {
			struct gwm_stream *s = kl_list_entry(n, struct gwm_stream, readable);
			if (!s->ended && ops && ops->on_readable)
				ops->on_readable(m, s->id, s->udata, arg);
		} else if ((n = kl_list_pop(&m->writable))) {
			struct gwm_stream *s = kl_list_entry(n, struct gwm_stream, writable);
			if (!s->ended && ops && ops->on_writable)
				ops->on_writable(m, s->id, s->udata, arg);
		} else if ((n = kl_list_pop(&m->ended))) {
			struct gwm_stream *s = kl_list_entry(n, struct gwm_stream, ended_l);
			if (ops && ops->on_end)
				ops->on_end(m, s->id, s->end_code, s->end_msg, s->udata, arg);
			tab_del(m, s);
			stream_free(m, s);
		} else {
			break;
		}
	}
}

/* ---- output: framing ---- */

static uint8_t *
ob_room(gw_mux *m, size_t n)
{
	if (m->ob_cap - m->ob_len < n) {
		size_t cap = KL_MAX(m->ob_cap * 2, m->ob_len + n);
		m->ob = kl_xrealloc(m->ob, cap);
		m->ob_cap = cap;
	}
	return m->ob + m->ob_len;
}

static void
ob_put(gw_mux *m, const uint8_t *p, size_t n)
{
	memcpy(ob_room(m, n), p, n);
	m->ob_len += n;
	m->st.frames_out++;
}

static void
fill_ctl(gw_mux *m)
{
	while (!kl_list_empty(&m->ctl)) {
		struct gwm_ctl_item *c = kl_list_entry(m->ctl.next, struct gwm_ctl_item, link);
		/* Before the handshake only our HELLO leaves (and, on failure, GOAWAY). */
		if (!m->peer_ok && !m->err && c->type != GW_T_HELLO)
			break;
		ob_put(m, c->buf, c->len);
		if (c->type == GW_T_PONG)
			m->npong--;
		m->ctl_bytes -= c->len;
		kl_list_del(&c->link);
		free(c);
	}
}

static void
put_window(gw_mux *m, uint32_t id, uint32_t inc)
{
	uint8_t f[GW_HDR_LEN + 4];
	gw_window_encode(f, sizeof f, id, inc);
	ob_put(m, f, sizeof f);
}

static void
fill_wu(gw_mux *m)
{
	if (m->rcredit && m->rcredit >= m->cfg.conn_window / 4) {
		put_window(m, 0, m->rcredit);
		m->rwin += m->rcredit;
		m->rcredit = 0;
	}
	kl_list *n;
	while ((n = kl_list_pop(&m->wu))) {
		struct gwm_stream *s = kl_list_entry(n, struct gwm_stream, wu);
		if (s->ended || s->fin_recvd || !s->rcredit)
			continue;
		put_window(m, s->id, s->rcredit);
		s->rwin += s->rcredit;
		s->rcredit = 0;
	}
}

/* One DATA frame of n bytes from s (FIN if fin). */
static void
put_data(gw_mux *m, struct gwm_stream *s, size_t n, bool fin)
{
	uint8_t *p = ob_room(m, GW_HDR_LEN + n);
	gw_fhdr_encode(p, (uint32_t)n, GW_T_DATA, fin ? GW_F_FIN : 0, s->id);
	gwm_q_take(m, &s->sq, p + GW_HDR_LEN, n);
	m->ob_len += GW_HDR_LEN + n;
	m->st.frames_out++;
	m->st.data_out += n;
	s->swin -= (int64_t)n;
	m->swin -= (int64_t)n;
	m->sq_total -= n;
	if (fin) {
		s->fin_sent = true;
		gwm_maybe_done(m, s);
	}
}

/* With the connection window spent, FIN-only frames still go: they cost no
 * window, and a peer waiting for a FIN must not wait for an unrelated
 * stream's credit. */
static void
fill_fins(gw_mux *m)
{
	kl_list *pos, *tmp;
	kl_list_for_each_safe (pos, tmp, &m->active) {
		struct gwm_stream *s = kl_list_entry(pos, struct gwm_stream, active);
		if (!s->sq.bytes && s->fin_queued) {
			kl_list_del(&s->active);
			put_data(m, s, 0, true);
		}
	}
}

/* Round robin: the stream at the head frames one frame and goes to the tail.
 * A stream that becomes sendable joins at the tail, so every other active
 * stream frames at most one frame before its first one. */
static void
fill_data(gw_mux *m)
{
	uint32_t maxf = m->peer.max_frame;
	while (m->ob_len - m->ob_off < m->cfg.out_batch && !kl_list_empty(&m->active)) {
		struct gwm_stream *s = kl_list_entry(m->active.next, struct gwm_stream, active);
		size_t n = KL_MIN(s->sq.bytes, (size_t)maxf);
		n = KL_MIN(n, (size_t)s->swin); /* > 0 while queued with data: sendable() */
		n = m->swin > 0 ? KL_MIN(n, (size_t)m->swin) : 0;
		bool fin = s->fin_queued && n == s->sq.bytes;
		if (!n && !fin) {
			fill_fins(m);
			return;
		}
		kl_list_del(&s->active);
		put_data(m, s, n, fin);
		gwm_update_active(m, s);
	}
}

size_t
gwm_room(const gw_mux *m, const struct gwm_stream *s)
{
	size_t a = m->cfg.stream_sendbuf - KL_MIN(s->sq.bytes, m->cfg.stream_sendbuf);
	size_t b = m->cfg.total_sendbuf - KL_MIN(m->sq_total, m->cfg.total_sendbuf);
	return KL_MIN(a, b);
}

/* Writers refused for lack of room hear about it once half the room is back. */
static void
wake_writers(gw_mux *m)
{
	size_t want = KL_MIN(m->cfg.stream_sendbuf, m->cfg.total_sendbuf) / 2;
	kl_list *pos, *tmp;
	kl_list_for_each_safe (pos, tmp, &m->blocked) {
		struct gwm_stream *s = kl_list_entry(pos, struct gwm_stream, blocked);
		if (gwm_room(m, s) >= KL_MAX(want, (size_t)1)) {
			kl_list_del(&s->blocked);
			kl_list_add_tail(&m->writable, &s->writable);
		}
	}
}

static void
fill(gw_mux *m)
{
	fill_ctl(m);
	if (m->err || !m->peer_ok)
		return;
	fill_wu(m);
	size_t before = m->sq_total;
	fill_data(m);
	if (m->sq_total != before)
		wake_writers(m);
}

/* ---- input: frames ---- */

static void
on_hello(gw_mux *m, const uint8_t *p, size_t n)
{
	struct gw_err e;
	struct gw_hello h;
	if (m->peer_ok) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true, "second HELLO on the connection");
		return;
	}
	if (gw_hello_decode(p, n, &h, &e) < 0) {
		conn_fail(m, -EPROTO, e.code, true, "%s", e.msg);
		return;
	}
	if (h.role == m->cfg.role) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true, "both sides claim the role %s",
		          h.role == GW_ROLE_GATEWAY ? "gateway" : "control plane");
		return;
	}
	/* The connection runs at version min(ours, theirs); we only have 1. */
	m->peer = h;
	m->peer_ok = true;
	m->swin = h.conn_window;
	for (size_t i = 0; i <= m->tabmask; i++)
		for (struct gwm_stream *s = m->tab[i]; s; s = s->hnext)
			if (s->local && !s->ended) {
				s->swin = h.stream_window;
				gwm_update_active(m, s);
			}
	const struct gw_mux_ops *ops = m->cfg.ops;
	int r = ops && ops->on_hello ? ops->on_hello(m, &m->peer, m->cfg.arg) : 0;
	if (r) {
		conn_fail(m, -ECONNABORTED, (uint32_t)r, true, "HELLO refused: %s",
		          gw_code_name((uint32_t)r));
		return;
	}
	if (m->cfg.role == GW_ROLE_PLANE)
		hello_push(m);
}

/* Whether the peer may open stream id now: false after failing the
 * connection (misused ids) or refusing the stream with RST. */
static bool
open_allowed(gw_mux *m, uint32_t id)
{
	char why[GW_MSG_MAX];
	if (is_local_id(m, id)) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "OPEN of stream %u: that parity is ours (the %s opens %s ids)", id,
		          m->cfg.role == GW_ROLE_GATEWAY ? "control plane" : "gateway",
		          m->cfg.role == GW_ROLE_GATEWAY ? "even" : "odd");
		return false;
	}
	if (id <= m->last_peer) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "OPEN reuses stream id %u (ids must increase; last opened %u)", id,
		          m->last_peer);
		return false;
	}
	m->last_peer = id;
	if (m->goaway_recvd) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "OPEN of stream %u after the peer's GOAWAY", id);
		return false;
	}
	if (m->goaway_sent) {
		rst_push(m, id, GW_E_REFUSED, "going away: stream not processed", true);
		return false;
	}
	if (m->npeer >= m->cfg.max_streams) {
		snprintf(why, sizeof why, "too many streams (limit %u)", m->cfg.max_streams);
		rst_push(m, id, GW_E_REFUSED, why, true);
		return false;
	}
	return true;
}

static void
on_open(gw_mux *m, const uint8_t *p, size_t n)
{
	uint32_t id = m->cur.sid;
	struct gw_open o;
	struct gw_err e;
	if (!open_allowed(m, id))
		return;
	if (gw_open_decode(p, n, &o, &e) < 0) {
		rst_push(m, id, e.code, e.msg, true);
		return;
	}
	if (o.kind == GW_KIND_CONTROL && (m->cfg.role != GW_ROLE_PLANE || m->control_open)) {
		rst_push(m, id, GW_E_REFUSED,
		         m->control_open ? "a CONTROL stream is open already"
		                         : "only the gateway opens the CONTROL stream",
		         true);
		return;
	}
	struct gwm_stream *s = gwm_stream_new(m, id, o.kind, false);
	const struct gw_mux_ops *ops = m->cfg.ops;
	int r = ops && ops->on_open ? ops->on_open(m, id, o.kind, o.meta, o.meta_len, m->cfg.arg)
	                            : 0;
	if (r && !s->ended) {
		/* Never accepted, so no on_end: it goes now, with whatever the
		 * callback may have queued on it. */
		rst_push(m, id, (uint32_t)r, "refused by the receiver", true);
		stream_unlink(s);
		m->sq_total -= s->sq.bytes;
		m->npeer--;
		tab_del(m, s);
		stream_free(m, s);
		return;
	}
	if (o.kind == GW_KIND_CONTROL)
		m->control_open = true;
	if (m->cur.flags & GW_F_FIN && !s->ended) {
		s->fin_recvd = true;
		mark_readable(m, s);
	}
}

static void
on_window(gw_mux *m, const uint8_t *p, size_t n)
{
	uint32_t id = m->cur.sid, inc;
	struct gw_err e;
	enum gwm_sid_class cls = GWM_SID_LIVE;
	struct gwm_stream *s = id ? lookup(m, id, &cls) : NULL;
	if (cls == GWM_SID_IDLE) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "WINDOW_UPDATE on stream %u, which was never opened", id);
		return;
	}
	if (gw_window_decode(p, n, &inc, &e) < 0) {
		if (!id)
			conn_fail(m, -EPROTO, e.code, true, "%s", e.msg);
		else if (s)
			stream_error(m, s, e.code, e.msg);
		return;
	}
	if (!id) {
		if (m->swin + inc > GW_WINDOW_MAX) {
			conn_fail(m, -EPROTO, GW_E_FLOW_CONTROL, true,
			          "connection window overflow: %lld + %u > 2^31-1",
			          (long long)m->swin, inc);
			return;
		}
		m->swin += inc;
		return;
	}
	if (!s)
		return; /* closed: an update that crossed our RST or FIN */
	if (s->swin + inc > GW_WINDOW_MAX) {
		char why[128];
		snprintf(why, sizeof why, "stream %u window overflow: %lld + %u > 2^31-1", id,
		         (long long)s->swin, inc);
		stream_error(m, s, GW_E_FLOW_CONTROL, why);
		return;
	}
	s->swin += inc;
	gwm_update_active(m, s);
}

static void
on_rst(gw_mux *m, const uint8_t *p, size_t n)
{
	uint32_t code;
	char msg[GW_MSG_MAX + 1];
	enum gwm_sid_class cls;
	struct gwm_stream *s = lookup(m, m->cur.sid, &cls);
	if (cls == GWM_SID_IDLE) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "RST on stream %u, which was never opened", m->cur.sid);
		return;
	}
	gw_rst_decode(p, n, &code, msg, sizeof msg, NULL); /* the length was checked */
	if (s)
		gwm_end_stream(m, s, code, msg, false);
}

static void
on_ping(gw_mux *m, const uint8_t *p)
{
	uint8_t f[GW_HDR_LEN + 8];
	if (m->npong >= GWM_PONG_MAX) {
		conn_fail(m, -EPROTO, GW_E_CALM, true,
		          "PING flood: %u PONGs queued and the peer keeps asking", m->npong);
		return;
	}
	if (gwm_ctl_push(m, f, gw_ping_encode(f, sizeof f, GW_T_PONG, gw_get64(p)), false, true) ==
	    0)
		m->npong++;
}

static void
on_pong(gw_mux *m, const uint8_t *p)
{
	uint64_t seq = gw_get64(p);
	if (seq <= m->pong_seq || seq > m->ping_seq)
		return; /* not an answer to a PING of ours: harmless, ignored */
	m->st.pongs_recv++;
	m->pong_seq = seq;
	m->missed = 0;
	if (seq == m->ping_seq) {
		m->ping_out = false;
		m->st.rtt_ms = (uint32_t)(m->now - m->ping_sent_at);
	}
}

static void
on_goaway(gw_mux *m, const uint8_t *p, size_t n)
{
	uint32_t last, code;
	char msg[GW_MSG_MAX + 1];
	struct gw_err e;
	if (gw_goaway_decode(p, n, &last, &code, msg, sizeof msg, &e) < 0) {
		conn_fail(m, -EPROTO, e.code, true, "%s", e.msg);
		return;
	}
	if (m->goaway_recvd && last > m->goaway_last_recvd) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "GOAWAY raised the last stream id from %u to %u", m->goaway_last_recvd,
		          last);
		return;
	}
	m->goaway_recvd = true;
	m->goaway_last_recvd = last;
	for (size_t i = 0; i <= m->tabmask; i++)
		for (struct gwm_stream *s = m->tab[i]; s; s = s->hnext)
			if (s->local && s->id > last)
				gwm_end_stream(m, s, GW_E_REFUSED,
				               "not processed by the peer (GOAWAY): safe to retry",
				               false);
	const struct gw_mux_ops *ops = m->cfg.ops;
	if (ops && ops->on_goaway)
		ops->on_goaway(m, last, code, msg, m->cfg.arg);
	if (code != GW_E_NONE)
		conn_fail(m, -ECONNRESET, code, false, "peer: %s: %s", gw_code_name(code), msg);
}

static void
on_frame(gw_mux *m, const uint8_t *p, size_t n)
{
	switch (m->cur.type) {
	case GW_T_HELLO:
		on_hello(m, p, n);
		break;
	case GW_T_OPEN:
		on_open(m, p, n);
		break;
	case GW_T_WINDOW:
		on_window(m, p, n);
		break;
	case GW_T_RST:
		on_rst(m, p, n);
		break;
	case GW_T_PING:
		on_ping(m, p);
		break;
	case GW_T_PONG:
		on_pong(m, p);
		break;
	case GW_T_GOAWAY:
		on_goaway(m, p, n);
		break;
	default:
		break;
	}
}

/* A DATA header: checks ids and windows now, so the payload can stream into
 * the receive queue as it arrives. Both windows are charged for the whole
 * frame; bytes nobody will read are credited back at once. */
static void
data_begin(gw_mux *m)
{
	const struct gw_fhdr *h = &m->cur;
	enum gwm_sid_class cls;
	struct gwm_stream *s = lookup(m, h->sid, &cls);
	if (cls == GWM_SID_IDLE) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "DATA on stream %u, which was never opened", h->sid);
		return;
	}
	if (h->len > m->rwin) {
		conn_fail(m, -EPROTO, GW_E_FLOW_CONTROL, true,
		          "DATA of %u bytes on stream %u exceeds the connection window (%u left)",
		          h->len, h->sid, m->rwin);
		return;
	}
	if (s && s->fin_recvd) {
		stream_error(m, s, GW_E_STREAM_CLOSED, "DATA after FIN");
		s = NULL;
	} else if (s && h->len > s->rwin) {
		conn_fail(m, -EPROTO, GW_E_FLOW_CONTROL, true,
		          "DATA of %u bytes on stream %u exceeds its window (%u left)", h->len,
		          h->sid, s->rwin);
		return;
	}
	m->rwin -= h->len;
	if (s)
		s->rwin -= h->len;
	m->cur_s = s;
	m->cur_left = h->len;
	m->st.data_in += h->len;
	m->in = h->len ? GWM_IN_DATA : GWM_IN_HDR;
}

static void
data_bytes(gw_mux *m, const uint8_t *p, size_t n)
{
	struct gwm_stream *s = m->cur_s;
	if (!s) {
		m->rcredit += (uint32_t)n; /* closed stream: the connection gets it back */
		return;
	}
	gwm_q_append(m, &s->rq, p, n);
	m->rq_total += n;
	mark_readable(m, s);
}

static void
data_end(gw_mux *m)
{
	struct gwm_stream *s = m->cur_s;
	m->cur_s = NULL;
	if (s && m->cur.flags & GW_F_FIN) {
		s->fin_recvd = true;
		kl_list_del(&s->wu); /* the peer sends nothing more: no credit needed */
		mark_readable(m, s);
	}
}

static void
on_header(gw_mux *m)
{
	struct gw_fhdr h;
	struct gw_err e;
	gw_fhdr_parse(m->ih, &h);
	m->st.frames_in++;
	if (!m->peer_ok && h.type != GW_T_HELLO && h.type != GW_T_GOAWAY) {
		conn_fail(m, -EPROTO, GW_E_PROTOCOL, true,
		          "first frame is %s (type 0x%02x, %u bytes), not HELLO: the peer does not "
		          "speak the kiln tunnel protocol",
		          gw_type_name(h.type), h.type, h.len);
		return;
	}
	int r = gw_fhdr_check(&h, m->cfg.max_frame, &e);
	if (r < 0) {
		conn_fail(m, -EPROTO, e.code, true, "%s", e.msg);
		return;
	}
	m->cur = h;
	if (r == 1) {
		m->cur_left = h.len;
		m->in = h.len ? GWM_IN_SKIP : GWM_IN_HDR;
	} else if (h.type == GW_T_DATA) {
		data_begin(m);
		if (m->in == GWM_IN_HDR && !m->err)
			data_end(m);
	} else {
		m->ibuf_have = 0;
		m->in = GWM_IN_PAY; /* every control type has a payload (gw_fhdr_check) */
	}
}

static size_t
in_step(gw_mux *m, const uint8_t *p, size_t len)
{
	size_t k;
	switch (m->in) {
	case GWM_IN_HDR:
		k = KL_MIN(GW_HDR_LEN - m->ih_have, len);
		memcpy(m->ih + m->ih_have, p, k);
		m->ih_have += k;
		if (m->ih_have == GW_HDR_LEN) {
			m->ih_have = 0;
			on_header(m);
		}
		return k;
	case GWM_IN_PAY:
		k = KL_MIN(m->cur.len - m->ibuf_have, len);
		memcpy(m->ibuf + m->ibuf_have, p, k);
		m->ibuf_have += k;
		if (m->ibuf_have == m->cur.len) {
			m->in = GWM_IN_HDR;
			on_frame(m, m->ibuf, m->ibuf_have);
		}
		return k;
	case GWM_IN_DATA:
		k = KL_MIN((size_t)m->cur_left, len);
		data_bytes(m, p, k);
		m->cur_left -= (uint32_t)k;
		if (!m->cur_left) {
			m->in = GWM_IN_HDR;
			data_end(m);
		}
		return k;
	default: /* GWM_IN_SKIP */
		k = KL_MIN((size_t)m->cur_left, len);
		m->cur_left -= (uint32_t)k;
		if (!m->cur_left)
			m->in = GWM_IN_HDR;
		return k;
	}
}

/* ---- the pump ---- */

int
gw_mux_input(gw_mux *m, const void *buf, size_t len)
{
	if (m->in_pump)
		return -EBUSY;
	m->in_pump = true;
	const uint8_t *p = buf;
	if (!m->err)
		m->st.bytes_in += len;
	while (len && !m->err) {
		size_t k = in_step(m, p, len);
		p += k;
		len -= k;
	}
	deliver(m);
	m->in_pump = false;
	return m->err;
}

int
gw_mux_output(gw_mux *m, struct iovec *iov, int iovcnt)
{
	if (m->in_pump)
		return -EBUSY;
	if (iovcnt < 1)
		return -EINVAL;
	m->in_pump = true;
	size_t left = m->ob_len - m->ob_off;
	if (left <= KL_MIN((size_t)GWM_REFILL_MAX, m->cfg.out_batch / 4)) {
		if (m->ob_off) {
			memmove(m->ob, m->ob + m->ob_off, left);
			m->ob_off = 0;
			m->ob_len = left;
		}
		fill(m);
	}
	deliver(m);
	m->in_pump = false;
	left = m->ob_len - m->ob_off;
	if (!left)
		return 0;
	iov[0].iov_base = m->ob + m->ob_off;
	iov[0].iov_len = left;
	return 1;
}

void
gw_mux_consume(gw_mux *m, size_t n)
{
	size_t left = m->ob_len - m->ob_off;
	n = KL_MIN(n, left);
	m->ob_off += n;
	m->st.bytes_out += n;
	if (m->ob_off == m->ob_len)
		m->ob_off = m->ob_len = 0;
}

bool
gw_mux_want_output(const gw_mux *m)
{
	if (m->ob_len > m->ob_off)
		return true;
	if (!kl_list_empty(&m->ctl)) {
		const struct gwm_ctl_item *c =
		        kl_list_entry(m->ctl.next, struct gwm_ctl_item, link);
		if (m->peer_ok || m->err || c->type == GW_T_HELLO)
			return true;
	}
	if (m->err || !m->peer_ok)
		return false;
	if (!kl_list_empty(&m->wu) || (m->rcredit && m->rcredit >= m->cfg.conn_window / 4))
		return true;
	return !kl_list_empty(&m->active) && m->swin > 0;
}

static int64_t
timers(gw_mux *m, uint64_t now)
{
	if (!m->ticked) {
		m->ticked = true;
		m->hello_deadline = now + m->cfg.hello_timeout_ms;
	}
	if (!m->peer_ok) {
		if (now < m->hello_deadline)
			return (int64_t)(m->hello_deadline - now);
		return conn_fail(m, -ETIMEDOUT, GW_E_TIMEOUT, true,
		                 "no HELLO from the peer within %u ms", m->cfg.hello_timeout_ms);
	}
	if (!m->next_ping)
		m->next_ping = now + m->cfg.ping_interval_ms;
	if (now >= m->next_ping) {
		if (m->ping_out && ++m->missed >= m->cfg.ping_max_missed)
			return conn_fail(m, -ETIMEDOUT, GW_E_TIMEOUT, true,
			                 "peer dead: %u PINGs in a row unanswered, %u ms apart",
			                 m->missed, m->cfg.ping_interval_ms);
		uint8_t f[GW_HDR_LEN + 8];
		gwm_ctl_push(m, f, gw_ping_encode(f, sizeof f, GW_T_PING, ++m->ping_seq), false,
		             false);
		m->st.pings_sent++;
		m->ping_out = true;
		m->ping_sent_at = now;
		m->next_ping = now + m->cfg.ping_interval_ms;
	}
	return (int64_t)(m->next_ping - now);
}

int64_t
gw_mux_tick(gw_mux *m, uint64_t now_ms)
{
	if (m->in_pump)
		return -EBUSY;
	m->in_pump = true;
	m->now = now_ms;
	int64_t r = m->err ? m->err : timers(m, now_ms);
	deliver(m);
	m->in_pump = false;
	return r;
}

int
gw_mux_eof(gw_mux *m)
{
	if (m->in_pump)
		return -EBUSY;
	if (!m->err && (m->goaway_sent || m->goaway_recvd) && !m->ntab)
		return 0; /* a drained connection may end */
	m->in_pump = true;
	conn_fail(m, -ECONNRESET, GW_E_CANCEL, false,
	          "connection closed by the peer with %zu streams open", m->ntab);
	deliver(m);
	m->in_pump = false;
	return m->err;
}

bool
gw_mux_finished(const gw_mux *m)
{
	if (m->ob_len > m->ob_off || !kl_list_empty(&m->ctl))
		return false;
	if (m->err)
		return true;
	return (m->goaway_sent || m->goaway_recvd) && !m->ntab;
}

const char *
gw_mux_error(const gw_mux *m)
{
	return m->errmsg;
}

uint32_t
gw_mux_error_code(const gw_mux *m)
{
	return m->err ? m->err_code : GW_E_NONE;
}

const struct gw_hello *
gw_mux_peer_hello(const gw_mux *m)
{
	return m->peer_ok ? &m->peer : NULL;
}

void
gw_mux_stats(const gw_mux *m, struct gw_mux_stats *ret)
{
	*ret = m->st;
	ret->streams = (uint32_t)(m->nlocal + m->npeer);
	ret->sendq_bytes = m->sq_total;
	ret->recvq_bytes = m->rq_total;
	ret->send_window = m->swin;
	ret->recv_window = m->rwin;
}

/* ---- life cycle ---- */

static int
config_fill(struct gw_mux_config *c)
{
#define DEF(f, v)                   \
	do {                        \
		if (!c->f)          \
			c->f = (v); \
	} while (0)
	DEF(max_frame, GW_FRAME_DEFAULT);
	DEF(stream_window, GW_STREAM_WINDOW_DEFAULT);
	DEF(conn_window, GW_CONN_WINDOW_DEFAULT);
	DEF(max_streams, GW_MAX_STREAMS_DEFAULT);
	DEF(stream_sendbuf, 1u << 20);
	DEF(total_sendbuf, 64u << 20);
	DEF(out_batch, 64u << 10);
	DEF(ctl_max, 256u << 10);
	DEF(ping_interval_ms, 15000);
	DEF(ping_max_missed, 3);
	DEF(hello_timeout_ms, 10000);
#undef DEF
	if (c->role != GW_ROLE_GATEWAY && c->role != GW_ROLE_PLANE)
		return -EINVAL;
	if (c->max_frame < GW_FRAME_MIN || c->max_frame > GW_FRAME_MAX)
		return -EINVAL;
	if (c->stream_window < GW_WINDOW_MIN || c->stream_window > GW_WINDOW_MAX ||
	    c->conn_window < GW_WINDOW_MIN || c->conn_window > GW_WINDOW_MAX)
		return -EINVAL;
	if (c->token_len > GW_TOKEN_MAX || (c->token_len && !c->token))
		return -EINVAL;
	return 0;
}

int
gw_mux_new(const struct gw_mux_config *cfg, gw_mux **ret)
{
	struct gw_mux_config c = *cfg;
	int r = config_fill(&c);
	if (r < 0)
		return r;
	gw_mux *m = kl_xcalloc(1, sizeof *m);
	m->cfg = c;
	m->cfg.token = NULL;
	gw_hello_init(&m->hello, c.role);
	m->hello.max_frame = c.max_frame;
	m->hello.stream_window = c.stream_window;
	m->hello.conn_window = c.conn_window;
	m->hello.max_streams = c.max_streams;
	m->hello.ping_interval_ms = c.ping_interval_ms;
	m->hello.epoch = c.epoch;
	m->hello.flags = c.resume ? GW_HELLO_F_RESUME : 0;
	m->hello.token_len = (uint16_t)c.token_len;
	if (c.token_len)
		memcpy(m->hello.token, cfg->token, c.token_len);
	m->tabmask = 63;
	m->tab = kl_xcalloc(m->tabmask + 1, sizeof *m->tab);
	m->next_sid = c.role == GW_ROLE_GATEWAY ? 1 : 2;
	m->rwin = c.conn_window;
	kl_list_init(&m->active);
	kl_list_init(&m->wu);
	kl_list_init(&m->readable);
	kl_list_init(&m->blocked);
	kl_list_init(&m->writable);
	kl_list_init(&m->ended);
	kl_list_init(&m->ctl);
	m->ob_cap = c.out_batch + GW_FRAME_DEFAULT + 1024;
	m->ob = kl_xmalloc(m->ob_cap);
	if (c.role == GW_ROLE_GATEWAY)
		hello_push(m);
	*ret = m;
	return 0;
}

void
gw_mux_free(gw_mux *m)
{
	if (!m)
		return;
	m->in_pump = true;
	conn_fail(m, -ECONNABORTED, GW_E_CANCEL, false, "connection closed");
	deliver(m);
	ctl_clear(m, false);
	for (size_t i = 0; i <= m->tabmask; i++)
		for (struct gwm_stream *s = m->tab[i], *nx; s; s = nx) {
			nx = s->hnext;
			stream_free(m, s);
		}
	while (m->freel) {
		struct gwm_chunk *c = m->freel;
		m->freel = c->next;
		free(c);
	}
	free(m->tab);
	free(m->ob);
	free(m);
}

int
gw_mux_set_session(gw_mux *m, const uint8_t *token, size_t token_len, uint64_t epoch, bool resumed)
{
	if (m->cfg.role != GW_ROLE_PLANE || token_len > GW_TOKEN_MAX || (token_len && !token))
		return -EINVAL;
	if (m->hello_out)
		return -EALREADY;
	m->hello.token_len = (uint16_t)token_len;
	if (token_len)
		memcpy(m->hello.token, token, token_len);
	m->hello.epoch = epoch;
	m->hello.flags = resumed ? GW_HELLO_F_RESUME : 0;
	return 0;
}

int
gw_mux_goaway(gw_mux *m, uint32_t code, const char *msg)
{
	if (m->err)
		return -ENOTCONN;
	if (m->goaway_sent)
		return -EALREADY;
	if (code != GW_E_NONE) {
		conn_fail(m, -ECONNABORTED, code, true, "%s", msg ? msg : gw_code_name(code));
		return 0;
	}
	uint8_t f[GW_HDR_LEN + 8 + GW_MSG_MAX];
	gwm_ctl_push(m, f, gw_goaway_encode(f, sizeof f, m->last_peer, code, msg), false, false);
	m->goaway_sent = true;
	return 0;
}
