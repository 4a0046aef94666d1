/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for scheduler/gateway/gw_mux.c: two multiplexers wired back to
 * back in memory (each one's output is the other's input, cut in random
 * chunk sizes), with no sockets, threads or timing:
 *
 *  - handshake and resume data; streams both ways with every byte checked,
 *    clean ends reported exactly once; random and 1-byte chunking;
 *  - flow control: a sender stalls at the receiver's stream and connection
 *    windows exactly, bounded send queues refuse and then wake the writer;
 *  - fairness: a small message behind a bulk transfer waits a bounded number
 *    of bulk frames, counted on the wire;
 *  - PING/PONG and dead-peer detection on a fake clock, the HELLO timeout;
 *  - GOAWAY (graceful and with an error), RST, EOF, refusals;
 *  - hostile input fed to a control plane: oversized lengths, unknown types,
 *    bad flags, DATA on unknown or closed streams, window overflow, DATA
 *    beyond windows, wrong parity and reused ids, floods, non-tunnel bytes,
 *    and random garbage: never a crash, always a GOAWAY with a reason.
 */
#include "test.h"

#include <errno.h>

#include "gw_mux.h"

#include "kl_util.h"

#define MAXS 320

/* ---- deterministic randomness ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

/* Byte i of the data written on stream id: the reader checks every byte. */
static uint8_t
pat(uint32_t id, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)id << 40);
	return (uint8_t)(x >> 56 ^ x >> 23);
}

/* ---- one side: a mux and what its callbacks saw ---- */

struct sink {
	uint32_t id;
	uint8_t kind;
	uint64_t got;
	uint64_t bad; /* bytes that differed from pat() */
	bool eof;
	int ends;
	uint32_t end_code;
	char end_msg[GW_MSG_MAX + 64];
};

struct src {
	uint32_t id;
	uint64_t len, sent;
	bool fin, fin_done;
};

struct wframe {
	uint8_t type, flags;
	uint32_t sid, len;
};

struct side {
	gw_mux *m;
	int hellos;
	struct gw_hello peer;
	bool set_session;
	int refuse_kind;
	uint32_t refuse_code;
	bool autoread;  /* read everything in on_readable */
	bool close_eof; /* shut our side down on EOF (a clean end) */
	struct sink sinks[MAXS];
	int nsinks;
	struct src srcs[MAXS];
	int nsrcs;
	int opens;
	uint32_t open_ids[MAXS];
	char open_meta[MAXS][GW_ROUTE_MAX + 1];
	int ends, readables, writables;
	int goaways;
	uint32_t ga_last, ga_code;
	char ga_msg[GW_MSG_MAX + 1];
	int in_err;
	/* wire tap: the frames this side sent, in order */
	bool tap;
	uint8_t *tbuf;
	size_t tlen, tcap;
	struct wframe *log;
	size_t nlog, logcap;
};

static struct sink *
sink_of(struct side *sd, uint32_t id)
{
	for (int i = 0; i < sd->nsinks; i++)
		if (sd->sinks[i].id == id)
			return &sd->sinks[i];
	ASSERT_LT(sd->nsinks, MAXS);
	struct sink *k = &sd->sinks[sd->nsinks++];
	memset(k, 0, sizeof *k);
	k->id = id;
	return k;
}

static void
drain_stream(struct side *sd, gw_mux *m, uint32_t id)
{
	static uint8_t buf[65536];
	struct sink *k = sink_of(sd, id);
	for (;;) {
		ssize_t n = gw_mux_read(m, id, buf, sizeof buf);
		if (n == -EAGAIN || n == -ECONNRESET || n == -ENOENT)
			return;
		if (n == 0) {
			k->eof = true;
			if (sd->close_eof) {
				int r = gw_mux_shutdown(m, id);
				ASSERT(r == 0 || r == -EPIPE);
			}
			return;
		}
		ASSERT_GT(n, 0);
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pat(id, k->got + (uint64_t)i))
				k->bad++;
		k->got += (uint64_t)n;
	}
}

static int
cb_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	struct side *sd = arg;
	sd->hellos++;
	sd->peer = *peer;
	if (sd->set_session) {
		ASSERT_EQ(gw_mux_set_session(m, (const uint8_t *)"tok-2", 5, 8, true), 0);
	}
	return 0;
}

static int
cb_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t len, void *arg)
{
	struct side *sd = arg;
	ASSERT_LT(sd->opens, MAXS);
	sd->open_ids[sd->opens] = id;
	size_t n = KL_MIN(len, (size_t)GW_ROUTE_MAX);
	memcpy(sd->open_meta[sd->opens], meta, n);
	sd->open_meta[sd->opens][n] = 0;
	sd->opens++;
	if (sd->refuse_kind == kind)
		return (int)sd->refuse_code;
	sink_of(sd, id)->kind = kind;
	ASSERT_EQ(gw_mux_stream_kind(m, id), kind);
	return 0;
}

static void
cb_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	struct side *sd = arg;
	sd->readables++;
	if (sd->autoread)
		drain_stream(sd, m, id);
}

static void
cb_writable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	struct side *sd = arg;
	sd->writables++;
}

static void
cb_end(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata, void *arg)
{
	struct side *sd = arg;
	struct sink *k = sink_of(sd, id);
	k->ends++;
	k->end_code = code;
	snprintf(k->end_msg, sizeof k->end_msg, "%s", msg);
	sd->ends++;
}

static void
cb_goaway(gw_mux *m, uint32_t last, uint32_t code, const char *msg, void *arg)
{
	struct side *sd = arg;
	sd->goaways++;
	sd->ga_last = last;
	sd->ga_code = code;
	snprintf(sd->ga_msg, sizeof sd->ga_msg, "%s", msg);
}

static const struct gw_mux_ops ops = {
        .on_hello = cb_hello,
        .on_open = cb_open,
        .on_readable = cb_readable,
        .on_writable = cb_writable,
        .on_end = cb_end,
        .on_goaway = cb_goaway,
};

static void
side_new(struct side *sd, uint8_t role, const struct gw_mux_config *base)
{
	memset(sd, 0, sizeof *sd);
	struct gw_mux_config c = {0};
	if (base)
		c = *base;
	c.role = role;
	c.ops = &ops;
	c.arg = sd;
	sd->autoread = true;
	sd->close_eof = true;
	ASSERT_EQ(gw_mux_new(&c, &sd->m), 0);
}

static void
side_free(struct side *sd)
{
	gw_mux_free(sd->m);
	free(sd->tbuf);
	free(sd->log);
}

/* Record the frames of bytes this side sent. */
static void
tap(struct side *sd, const uint8_t *p, size_t n)
{
	if (!sd->tap)
		return;
	if (sd->tlen + n > sd->tcap) {
		sd->tcap = (sd->tlen + n) * 2;
		sd->tbuf = kl_xrealloc(sd->tbuf, sd->tcap);
	}
	memcpy(sd->tbuf + sd->tlen, p, n);
	sd->tlen += n;
	size_t off = 0;
	for (;;) {
		struct gw_frame f;
		struct gw_err e;
		int r = gw_frame_decode(sd->tbuf + off, sd->tlen - off, GW_FRAME_MAX, &f, &e);
		ASSERT_GE(r, 0);
		if (!r)
			break;
		if (sd->nlog == sd->logcap) {
			sd->logcap = sd->logcap ? sd->logcap * 2 : 1024;
			sd->log = kl_xrealloc(sd->log, sd->logcap * sizeof *sd->log);
		}
		sd->log[sd->nlog++] = (struct wframe){f.h.type, f.h.flags, f.h.sid, f.h.len};
		off += (size_t)r;
	}
	memmove(sd->tbuf, sd->tbuf + off, sd->tlen - off);
	sd->tlen -= off;
}

/* Move from's output into to's input, in chunks of at most maxchunk bytes
 * (random sizes when rand_chunks), at most budget bytes (0: all). */
static size_t
xfer(struct side *from, struct side *to, size_t maxchunk, bool rand_chunks, size_t budget)
{
	size_t moved = 0;
	struct iovec iov[4];
	for (;;) {
		int n = gw_mux_output(from->m, iov, 4);
		ASSERT_GE(n, 0);
		if (!n)
			break;
		ASSERT_EQ(n, 1);
		size_t k = iov[0].iov_len;
		if (maxchunk) {
			size_t c = rand_chunks ? 1 + rnd() % maxchunk : maxchunk; /* KL_MIN: once */
			k = KL_MIN(k, c);
		}
		if (budget)
			k = KL_MIN(k, budget - moved);
		tap(from, iov[0].iov_base, k);
		int r = 0;
		if (!to->in_err)
			r = gw_mux_input(to->m, iov[0].iov_base, k);
		if (r < 0)
			to->in_err = r;
		gw_mux_consume(from->m, k);
		moved += k;
		if (budget && moved >= budget)
			break;
	}
	return moved;
}

/* Write what the send queues take; shut down when a source is done. */
static bool
feed(struct side *sd)
{
	static uint8_t buf[16384];
	bool any = false;
	for (int i = 0; i < sd->nsrcs; i++) {
		struct src *s = &sd->srcs[i];
		while (s->sent < s->len) {
			size_t k = (size_t)KL_MIN(s->len - s->sent, (uint64_t)sizeof buf);
			for (size_t j = 0; j < k; j++)
				buf[j] = pat(s->id, s->sent + j);
			ssize_t r = gw_mux_write(sd->m, s->id, buf, k);
			if (r == -EAGAIN || r == -ECONNRESET || r == -ENOENT)
				break;
			ASSERT_GT(r, 0);
			s->sent += (uint64_t)r;
			any = true;
		}
		if (s->sent == s->len && s->fin && !s->fin_done) {
			int r = gw_mux_shutdown(sd->m, s->id);
			if (r == -ENOENT)
				continue; /* the peer's OPEN has not arrived yet */
			ASSERT_EQ(r, 0);
			s->fin_done = true;
			any = true;
		}
	}
	return any;
}

static void
add_src(struct side *sd, uint32_t id, uint64_t len, bool fin)
{
	ASSERT_LT(sd->nsrcs, MAXS);
	sd->srcs[sd->nsrcs++] = (struct src){.id = id, .len = len, .fin = fin};
}

/* Pump both ways until nothing moves. */
static void
run(struct side *a, struct side *b, size_t maxchunk, bool rand_chunks)
{
	for (int iter = 0;; iter++) {
		ASSERT_LT(iter, 1000000);
		bool w = feed(a) | feed(b);
		size_t m =
		        xfer(a, b, maxchunk, rand_chunks, 0) + xfer(b, a, maxchunk, rand_chunks, 0);
		if (!w && !m)
			break;
	}
}

static void
pair(struct side *g, struct side *p, const struct gw_mux_config *gc, const struct gw_mux_config *pc)
{
	side_new(g, GW_ROLE_GATEWAY, gc);
	side_new(p, GW_ROLE_PLANE, pc);
	run(g, p, 0, false);
	ASSERT_EQ(g->hellos, 1);
	ASSERT_EQ(p->hellos, 1);
}

static uint32_t
open_work(struct side *sd, uint64_t job)
{
	uint8_t meta[8];
	uint32_t id = 0;
	gw_put64(meta, job);
	ASSERT_EQ(gw_mux_open(sd->m, GW_KIND_WORK, meta, sizeof meta, NULL, &id), 0);
	return id;
}

/* ---- handshake, data both ways ---- */

TEST(handshake_resume)
{
	struct side g, p;
	struct gw_mux_config gc = {
	        .token = (const uint8_t *)"tok-1", .token_len = 5, .epoch = 7, .resume = true};
	struct gw_mux_config pc = {.max_frame = 32768, .max_streams = 9};
	side_new(&g, GW_ROLE_GATEWAY, &gc);
	side_new(&p, GW_ROLE_PLANE, &pc);
	p.set_session = true;
	/* The plane speaks only after the gateway: no output before input. */
	struct iovec iov;
	ASSERT_EQ(gw_mux_output(p.m, &iov, 1), 0);
	ASSERT(!gw_mux_want_output(p.m));
	ASSERT(gw_mux_want_output(g.m));
	ASSERT(gw_mux_peer_hello(g.m) == NULL);
	/* A stream opened before the handshake waits: only HELLO leaves. */
	uint32_t id = open_work(&g, 1);
	ASSERT_EQ(id, 1);
	ASSERT_EQ(gw_mux_write(g.m, id, "early", 5), 5);
	g.tap = true;
	ASSERT_GT(xfer(&g, &p, 0, false, 0), 0);
	ASSERT_EQ(g.nlog, 1);
	ASSERT_EQ(g.log[0].type, GW_T_HELLO);
	ASSERT_EQ(p.hellos, 1);
	ASSERT_STR_EQ((const char *)p.peer.token, "tok-1");
	ASSERT_EQ(p.peer.epoch, 7);
	ASSERT_EQ(p.peer.flags, GW_HELLO_F_RESUME);
	ASSERT_EQ(p.peer.role, GW_ROLE_GATEWAY);
	run(&g, &p, 0, false);
	ASSERT_EQ(g.hellos, 1);
	ASSERT_EQ(g.peer.token_len, 5);
	ASSERT_EQ(memcmp(g.peer.token, "tok-2", 5), 0);
	ASSERT_EQ(g.peer.epoch, 8);
	ASSERT_EQ(g.peer.flags, GW_HELLO_F_RESUME);
	ASSERT_EQ(g.peer.max_frame, 32768);
	ASSERT_EQ(g.peer.max_streams, 9);
	ASSERT_EQ(gw_mux_peer_hello(g.m)->stream_window, GW_STREAM_WINDOW_DEFAULT);
	/* Now OPEN and DATA follow the HELLO, in that order. */
	ASSERT_EQ(g.log[1].type, GW_T_OPEN);
	ASSERT_EQ(g.log[2].type, GW_T_DATA);
	ASSERT_EQ(g.log[2].len, 5);
	ASSERT_EQ(p.opens, 1);
	ASSERT_EQ(sink_of(&p, 1)->got, 5);
	/* The plane's session cannot change once its HELLO is out. */
	ASSERT_EQ(gw_mux_set_session(p.m, NULL, 0, 0, false), -EALREADY);
	ASSERT_EQ(gw_mux_set_session(g.m, NULL, 0, 0, false), -EINVAL);
	side_free(&g);
	side_free(&p);
}

TEST(config_refused)
{
	gw_mux *m = (gw_mux *)0x1;
	struct gw_mux_config c = {.role = 3};
	ASSERT_EQ(gw_mux_new(&c, &m), -EINVAL);
	c.role = GW_ROLE_GATEWAY;
	c.max_frame = 1000;
	ASSERT_EQ(gw_mux_new(&c, &m), -EINVAL);
	c.max_frame = 0;
	c.stream_window = 0x80000000u;
	ASSERT_EQ(gw_mux_new(&c, &m), -EINVAL);
	c.stream_window = 0;
	c.token_len = GW_TOKEN_MAX + 1;
	c.token = (const uint8_t *)"x";
	ASSERT_EQ(gw_mux_new(&c, &m), -EINVAL);
	ASSERT(m == (gw_mux *)0x1); /* outputs only on success */
	gw_mux_free(NULL);
}

/* Streams opened by both sides carry len bytes each way and close cleanly. */
static void
both_ways(size_t maxchunk, bool rand_chunks, const uint64_t *lens, int n)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	g.close_eof = p.close_eof = false; /* every stream has a source with FIN */
	uint32_t ctl = 0;
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_CONTROL, NULL, 0, NULL, &ctl), 0);
	ASSERT_EQ(ctl, 1);
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_CONTROL, NULL, 0, NULL, &ctl), -EEXIST);
	ASSERT_EQ(gw_mux_open(p.m, GW_KIND_CONTROL, NULL, 0, NULL, &ctl), -EINVAL);
	uint32_t gid[MAXS], pid[MAXS];
	for (int i = 0; i < n; i++) {
		gid[i] = open_work(&g, 100 + (uint64_t)i);
		ASSERT_EQ(gid[i], 3 + 2 * (uint32_t)i);
		ASSERT_EQ(gw_mux_open(p.m, GW_KIND_MCP, "files", 5, NULL, &pid[i]), 0);
		ASSERT_EQ(pid[i], 2 + 2 * (uint32_t)i);
		add_src(&g, gid[i], lens[i], true);
		add_src(&p, pid[i], lens[(i + 1) % n], true);
		/* The acceptor answers on the same stream with its own bytes. */
		add_src(&p, gid[i], lens[(i + 2) % n], true);
		add_src(&g, pid[i], lens[(i + 3) % n], true);
	}
	add_src(&g, ctl, 1000, true);
	add_src(&p, ctl, 10, true);
	run(&g, &p, maxchunk, rand_chunks);
	ASSERT_STR_EQ(gw_mux_error(g.m), "");
	ASSERT_STR_EQ(gw_mux_error(p.m), "");
	ASSERT_EQ(p.opens, n + 1);
	ASSERT_EQ(g.opens, n);
	ASSERT_STR_EQ(g.open_meta[0], "files");
	for (int i = 0; i < n; i++) {
		struct sink *a = sink_of(&p, gid[i]), *b = sink_of(&g, pid[i]);
		struct sink *c = sink_of(&g, gid[i]), *d = sink_of(&p, pid[i]);
		ASSERT_EQ(a->got, lens[i]);
		ASSERT_EQ(b->got, lens[(i + 1) % n]);
		ASSERT_EQ(c->got, lens[(i + 2) % n]);
		ASSERT_EQ(d->got, lens[(i + 3) % n]);
		ASSERT_EQ(a->bad + b->bad + c->bad + d->bad, 0);
		ASSERT(a->eof && b->eof && c->eof && d->eof);
		ASSERT_EQ(a->ends, 1);
		ASSERT_EQ(b->ends, 1);
		ASSERT_EQ(c->ends, 1);
		ASSERT_EQ(d->ends, 1);
		ASSERT_EQ(a->end_code + b->end_code + c->end_code + d->end_code, GW_E_NONE);
		ASSERT_EQ(a->kind, GW_KIND_WORK);
		ASSERT_EQ(b->kind, GW_KIND_MCP);
	}
	ASSERT_EQ(sink_of(&p, ctl)->got, 1000);
	ASSERT_EQ(sink_of(&g, ctl)->got, 10);
	ASSERT_EQ(g.ends, 2 * n + 1);
	ASSERT_EQ(p.ends, 2 * n + 1);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.streams, 0);
	ASSERT_EQ(st.sendq_bytes, 0);
	ASSERT_EQ(st.recvq_bytes, 0);
	/* Ids are never reused: a stream opened now gets the next one. */
	ASSERT_EQ(open_work(&g, 999), 3 + 2 * (uint32_t)n);
	ASSERT_EQ(gw_mux_read(g.m, gid[0], (char[4]){0}, 4), -ENOENT);
	side_free(&g);
	side_free(&p);
}

TEST(streams_both_ways)
{
	const uint64_t lens[] = {0, 1, 16384, 16385, 100000, 3u << 20};
	both_ways(0, false, lens, 6);
}

TEST(random_chunks)
{
	const uint64_t lens[] = {5, 70000, 300000, 1, 16383};
	both_ways(5000, true, lens, 5);
	const uint64_t small[] = {3, 40000, 17, 0};
	both_ways(7, true, small, 4);
}

TEST(one_byte_chunks)
{
	const uint64_t lens[] = {20000, 2, 33000};
	both_ways(1, false, lens, 3);
}

/* ---- flow control ---- */

TEST(stream_window_stall)
{
	struct side g, p;
	struct gw_mux_config pc = {.stream_window = 65536};
	pair(&g, &p, NULL, &pc);
	p.autoread = false;
	uint32_t id = open_work(&g, 1);
	add_src(&g, id, 3u << 20, true);
	run(&g, &p, 0, false);
	/* The receiver holds exactly one window; the rest waits in the sender. */
	ASSERT_EQ(gw_mux_readable(p.m, id), 65536);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.sendq_bytes, 1u << 20); /* the stream's send bound */
	ASSERT_EQ(g.srcs[0].sent, (1u << 20) + 65536);
	ASSERT_EQ(gw_mux_write(g.m, id, "x", 1), -EAGAIN);
	gw_mux_stats(p.m, &st);
	ASSERT_EQ(st.recvq_bytes, 65536);
	/* Reading a quarter of the window returns it and lets exactly that in. */
	drain_stream(&p, p.m, id); /* one read of up to 64 KiB */
	ASSERT_EQ(sink_of(&p, id)->got, 65536);
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_readable(p.m, id), 65536);
	ASSERT_EQ(g.writables, 0);
	/* Keep reading: the sender resumes, wakes up and finishes. */
	p.autoread = true;
	for (int i = 0; i < 200 && !sink_of(&p, id)->eof; i++) {
		drain_stream(&p, p.m, id);
		run(&g, &p, 0, false);
	}
	ASSERT(sink_of(&p, id)->eof);
	ASSERT_EQ(sink_of(&p, id)->got, 3u << 20);
	ASSERT_EQ(sink_of(&p, id)->bad, 0);
	ASSERT_GE(g.writables, 1);
	side_free(&g);
	side_free(&p);
}

TEST(connection_window_stall)
{
	struct side g, p;
	struct gw_mux_config pc = {.stream_window = 65536, .conn_window = 100000};
	pair(&g, &p, NULL, &pc);
	p.autoread = false;
	uint32_t a = open_work(&g, 1), b = open_work(&g, 2), c = open_work(&g, 3);
	add_src(&g, a, 200000, true);
	add_src(&g, b, 200000, true);
	add_src(&g, c, 200000, true);
	run(&g, &p, 0, false);
	ssize_t ra = gw_mux_readable(p.m, a), rb = gw_mux_readable(p.m, b);
	ssize_t rc = gw_mux_readable(p.m, c);
	ASSERT_EQ(ra + rb + rc, 100000);
	ASSERT_LE(ra, 65536);
	ASSERT_LE(rb, 65536);
	ASSERT_LE(rc, 65536);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.send_window, 0);
	gw_mux_stats(p.m, &st);
	ASSERT_EQ(st.recv_window, 0);
	ASSERT_EQ(st.recvq_bytes, 100000);
	/* Draining one stream gives the connection credit to the others. */
	drain_stream(&p, p.m, a);
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_readable(p.m, a) + gw_mux_readable(p.m, b) + gw_mux_readable(p.m, c),
	          100000);
	ASSERT_GT(gw_mux_readable(p.m, b) + gw_mux_readable(p.m, c), rb + rc);
	p.autoread = true;
	for (int i = 0; i < 100; i++) {
		drain_stream(&p, p.m, a);
		drain_stream(&p, p.m, b);
		drain_stream(&p, p.m, c);
		run(&g, &p, 0, false);
	}
	ASSERT_EQ(sink_of(&p, a)->got + sink_of(&p, b)->got + sink_of(&p, c)->got, 600000);
	ASSERT(sink_of(&p, a)->eof && sink_of(&p, b)->eof && sink_of(&p, c)->eof);
	side_free(&g);
	side_free(&p);
}

TEST(send_bounds)
{
	struct side g, p;
	struct gw_mux_config gc = {.stream_sendbuf = 10000, .total_sendbuf = 15000};
	pair(&g, &p, &gc, NULL);
	uint32_t a = open_work(&g, 1), b = open_work(&g, 2);
	static uint8_t buf[20000];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = pat(a, i);
	ASSERT_EQ(gw_mux_write(g.m, a, buf, sizeof buf), 10000);
	ASSERT_EQ(gw_mux_write(g.m, a, buf, sizeof buf), -EAGAIN);
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = pat(b, i);
	ASSERT_EQ(gw_mux_write(g.m, b, buf, sizeof buf), 5000);
	ASSERT_EQ(gw_mux_write(g.m, b, buf, 1), -EAGAIN);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.sendq_bytes, 15000);
	run(&g, &p, 0, false);
	ASSERT_EQ(g.writables, 2);
	ASSERT_EQ(sink_of(&p, a)->got, 10000);
	ASSERT_EQ(sink_of(&p, b)->got, 5000);
	ASSERT_EQ(sink_of(&p, a)->bad + sink_of(&p, b)->bad, 0);
	side_free(&g);
	side_free(&p);
}

TEST(zero_copy)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	p.autoread = false;
	uint32_t id = open_work(&g, 1);
	size_t total = 0;
	while (total < 50000) {
		void *ptr;
		size_t len;
		ASSERT_EQ(gw_mux_write_reserve(g.m, id, &ptr, &len), 0);
		ASSERT_GE(len, 1);
		size_t k = KL_MIN(len, (size_t)7000);
		for (size_t i = 0; i < k; i++)
			((uint8_t *)ptr)[i] = pat(id, total + i);
		ASSERT_EQ(gw_mux_write_commit(g.m, id, k), 0);
		total += k;
	}
	void *ptr;
	size_t len;
	ASSERT_EQ(gw_mux_write_reserve(g.m, id, &ptr, &len), 0);
	ASSERT_EQ(gw_mux_write_commit(g.m, id, len + 1), -EINVAL);
	ASSERT_EQ(gw_mux_shutdown(g.m, id), 0);
	ASSERT_EQ(gw_mux_write_reserve(g.m, id, &ptr, &len), -EPIPE);
	run(&g, &p, 0, false);
	uint64_t got = 0, bad = 0;
	for (;;) {
		const void *q = NULL;
		ssize_t n = gw_mux_peek(p.m, id, &q);
		if (n <= 0) {
			ASSERT_EQ(n, 0);
			break;
		}
		ssize_t k = n > 3 ? n / 2 : n;
		for (ssize_t i = 0; i < k; i++)
			bad += ((const uint8_t *)q)[i] != pat(id, got + (uint64_t)i);
		ASSERT_EQ(gw_mux_skip(p.m, id, (size_t)k), 0);
		got += (uint64_t)k;
	}
	ASSERT_EQ(got, total);
	ASSERT_EQ(bad, 0);
	ASSERT_EQ(gw_mux_skip(p.m, id, 1), -EINVAL);
	side_free(&g);
	side_free(&p);
}

TEST(shutdown_semantics)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	p.close_eof = false;
	uint32_t id = open_work(&g, 1);
	ASSERT_EQ(gw_mux_write(g.m, id, "abc", 3), 3);
	ASSERT_EQ(gw_mux_shutdown(g.m, id), 0);
	ASSERT_EQ(gw_mux_shutdown(g.m, id), -EPIPE);
	ASSERT_EQ(gw_mux_write(g.m, id, "d", 1), -EPIPE);
	run(&g, &p, 0, false);
	/* Half-closed: the plane read EOF but may still answer. */
	ASSERT(sink_of(&p, id)->eof);
	ASSERT_EQ(gw_mux_read(p.m, id, (char[4]){0}, 4), 0);
	ASSERT_EQ(sink_of(&p, id)->ends, 0);
	ASSERT_EQ(gw_mux_write(p.m, id, "xy", 2), 2);
	ASSERT_EQ(gw_mux_shutdown(p.m, id), 0);
	run(&g, &p, 0, false);
	ASSERT_EQ(sink_of(&p, id)->got, 3);
	ASSERT_EQ(sink_of(&g, id)->got, 2);
	ASSERT_EQ(sink_of(&g, id)->ends, 1);
	ASSERT_EQ(sink_of(&p, id)->ends, 1);
	ASSERT_EQ(sink_of(&p, id)->end_code, GW_E_NONE);
	ASSERT_EQ(gw_mux_write(p.m, id, "z", 1), -ENOENT);
	ASSERT_EQ(gw_mux_reset(p.m, id, 0, NULL), -ENOENT);
	side_free(&g);
	side_free(&p);
}

/* ---- fairness ---- */

/* nbulk streams keep the tunnel busy; then a small message is written on a
 * new stream. Returns how many bulk DATA frames went on the wire between the
 * write and the small message's DATA frame. */
static int
small_behind_bulk(size_t out_batch, int nbulk)
{
	struct side g, p;
	struct gw_mux_config gc = {.out_batch = out_batch};
	pair(&g, &p, &gc, NULL);
	g.tap = true;
	uint32_t bulk[8];
	for (int i = 0; i < nbulk; i++) {
		bulk[i] = open_work(&g, (uint64_t)i);
		add_src(&g, bulk[i], 6u << 20, true);
	}
	/* Move 1 MiB in 4 KiB chunks so that every bulk stream is mid-flight. */
	for (int i = 0; i < 256; i++) {
		feed(&g);
		xfer(&g, &p, 4096, false, 4096);
		xfer(&p, &g, 0, false, 0);
	}
	for (int i = 0; i < nbulk; i++) {
		ASSERT_GT(sink_of(&p, bulk[i])->got, 0);
		ASSERT_LT(sink_of(&p, bulk[i])->got, 6u << 20);
	}
	size_t mark = g.nlog;
	uint32_t s = open_work(&g, 1000);
	add_src(&g, s, 100, true);
	run(&g, &p, 4096, false);
	int before = -1, after = 0;
	bool opened = false;
	for (size_t i = mark; i < g.nlog; i++) {
		const struct wframe *f = &g.log[i];
		if (f->type == GW_T_OPEN && f->sid == s)
			opened = true;
		if (f->type == GW_T_DATA && f->sid == s) {
			ASSERT(opened);
			ASSERT_EQ(f->len, 100);
			ASSERT_EQ(f->flags, GW_F_FIN);
			before = 0;
			for (size_t j = mark; j < i; j++)
				before += g.log[j].type == GW_T_DATA && g.log[j].sid != s;
		} else if (before >= 0 && f->type == GW_T_DATA) {
			after++;
		}
	}
	ASSERT_GE(before, 0);
	ASSERT_GT(after, 10); /* the bulk streams were still busy */
	ASSERT_EQ(sink_of(&p, s)->got, 100);
	ASSERT_EQ(sink_of(&p, s)->bad, 0);
	for (int i = 0; i < nbulk; i++) {
		ASSERT_EQ(sink_of(&p, bulk[i])->got, 6u << 20);
		ASSERT_EQ(sink_of(&p, bulk[i])->bad, 0);
	}
	side_free(&g);
	side_free(&p);
	fprintf(stderr, "  batch %zu, %d bulk streams: %d bulk frames before the small one\n",
	        out_batch, nbulk, before);
	return before;
}

TEST(fairness_small_after_large)
{
	/* What waits: the rest of the batch framed already (at most one partly
	 * written frame plus batch/frame whole ones), then one frame of each
	 * bulk stream ahead in the round. */
	ASSERT_LE(small_behind_bulk(65536, 1), 1 + 4 + 1);
	ASSERT_LE(small_behind_bulk(16384, 1), 1 + 1 + 1);
	ASSERT_LE(small_behind_bulk(16384, 4), 1 + 1 + 4);
}

/* ---- timers ---- */

TEST(ping_pong)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	ASSERT_EQ(gw_mux_tick(g.m, 1000), 15000);
	ASSERT_EQ(gw_mux_tick(g.m, 9000), 7000);
	ASSERT_EQ(gw_mux_tick(g.m, 16000), 15000); /* sends PING 1 */
	g.tap = true;
	ASSERT_EQ(gw_mux_tick(g.m, 16020), 14980);
	run(&g, &p, 0, false);
	ASSERT_EQ(g.nlog, 1);
	ASSERT_EQ(g.log[0].type, GW_T_PING);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.pings_sent, 1);
	ASSERT_EQ(st.pongs_recv, 1);
	ASSERT_EQ(st.rtt_ms, 20);
	/* Answered every time: never dead, however long. */
	for (uint64_t t = 31000; t < 31000 + 15000 * 20; t += 15000) {
		ASSERT_EQ(gw_mux_tick(g.m, t), 15000);
		run(&g, &p, 0, false);
	}
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.pings_sent, 21);
	ASSERT_EQ(st.pongs_recv, 21);
	ASSERT_STR_EQ(gw_mux_error(g.m), "");
	side_free(&g);
	side_free(&p);
}

TEST(dead_peer)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	uint32_t id = open_work(&g, 1);
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_tick(g.m, 0), 15000);
	ASSERT_EQ(gw_mux_tick(g.m, 15000), 15000); /* PING 1 */
	ASSERT_EQ(gw_mux_tick(g.m, 30000), 15000); /* missed 1, PING 2 */
	/* A late PONG (to PING 1) still proves life: the count starts again. */
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_tick(g.m, 45000), 15000);
	ASSERT_EQ(gw_mux_tick(g.m, 60000), 15000); /* missed 1 */
	ASSERT_EQ(gw_mux_tick(g.m, 75000), 15000); /* missed 2 */
	ASSERT_EQ(sink_of(&g, id)->ends, 0);
	ASSERT_EQ(gw_mux_tick(g.m, 90000), -ETIMEDOUT); /* missed 3: dead */
	ASSERT_CONTAINS(gw_mux_error(g.m), "peer dead: 3 PINGs in a row unanswered");
	ASSERT_EQ(gw_mux_error_code(g.m), GW_E_TIMEOUT);
	ASSERT_EQ(sink_of(&g, id)->ends, 1);
	ASSERT_EQ(sink_of(&g, id)->end_code, GW_E_TIMEOUT);
	ASSERT_EQ(gw_mux_tick(g.m, 95000), -ETIMEDOUT);
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_MCP, "x", 1, NULL, &id), -ENOTCONN);
	ASSERT(!gw_mux_finished(g.m)); /* the GOAWAY has not left yet */
	/* The GOAWAY says why (if the peer is alive enough to read it). */
	run(&g, &p, 0, false);
	ASSERT(gw_mux_finished(g.m));
	ASSERT_EQ(p.in_err, -ECONNRESET);
	ASSERT_CONTAINS(gw_mux_error(p.m), "peer: TIMEOUT: peer dead");
	ASSERT_EQ(sink_of(&p, id)->end_code, GW_E_TIMEOUT);
	side_free(&g);
	side_free(&p);
}

TEST(hello_timeout)
{
	struct side p;
	side_new(&p, GW_ROLE_PLANE, NULL);
	ASSERT_EQ(gw_mux_tick(p.m, 500), 10000);
	ASSERT_EQ(gw_mux_tick(p.m, 10499), 1);
	ASSERT_EQ(gw_mux_tick(p.m, 10500), -ETIMEDOUT);
	ASSERT_CONTAINS(gw_mux_error(p.m), "no HELLO from the peer within 10000 ms");
	side_free(&p);
}

/* ---- GOAWAY, RST, EOF ---- */

TEST(goaway_graceful)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	p.close_eof = false;
	uint32_t a = open_work(&g, 1), b = open_work(&g, 2);
	ASSERT_EQ(gw_mux_write(g.m, a, "hi", 2), 2);
	run(&g, &p, 0, false);
	ASSERT_EQ(p.opens, 2);
	uint32_t c = open_work(&g, 3); /* crosses the GOAWAY on the wire */
	ASSERT_EQ(gw_mux_goaway(p.m, GW_E_NONE, "maintenance"), 0);
	ASSERT_EQ(gw_mux_goaway(p.m, GW_E_NONE, "again"), -EALREADY);
	uint32_t x;
	ASSERT_EQ(gw_mux_open(p.m, GW_KIND_MCP, "r", 1, NULL, &x), -ESHUTDOWN);
	run(&g, &p, 0, false);
	ASSERT_EQ(g.goaways, 1);
	ASSERT_EQ(g.ga_last, b);
	ASSERT_EQ(g.ga_code, GW_E_NONE);
	ASSERT_STR_EQ(g.ga_msg, "maintenance");
	ASSERT_EQ(sink_of(&g, c)->ends, 1);
	ASSERT_EQ(sink_of(&g, c)->end_code, GW_E_REFUSED);
	ASSERT_EQ(p.opens, 2); /* c was refused, never reached the application */
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_MCP, "r", 1, NULL, &x), -ESHUTDOWN);
	ASSERT(!gw_mux_finished(g.m));
	ASSERT(!gw_mux_finished(p.m));
	/* Streams below the GOAWAY finish normally. */
	for (int i = 0; i < 2; i++) {
		uint32_t id = i ? b : a;
		ASSERT_EQ(gw_mux_shutdown(g.m, id), 0);
		run(&g, &p, 0, false);
		ASSERT_EQ(gw_mux_write(p.m, id, "ok", 2), 2);
		ASSERT_EQ(gw_mux_shutdown(p.m, id), 0);
		run(&g, &p, 0, false);
		ASSERT_EQ(sink_of(&p, id)->ends, 1);
		ASSERT_EQ(sink_of(&p, id)->end_code, GW_E_NONE);
	}
	ASSERT(gw_mux_finished(g.m));
	ASSERT(gw_mux_finished(p.m));
	ASSERT_EQ(gw_mux_eof(g.m), 0);
	ASSERT_STR_EQ(gw_mux_error(g.m), "");
	side_free(&g);
	side_free(&p);
}

TEST(goaway_error)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	uint32_t a = open_work(&g, 1);
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_goaway(p.m, GW_E_INTERNAL, "database down"), 0);
	ASSERT_EQ(gw_mux_input(p.m, "", 0), -ECONNABORTED);
	ASSERT_EQ(sink_of(&p, a)->end_code, GW_E_INTERNAL);
	run(&g, &p, 0, false);
	ASSERT_EQ(g.in_err, -ECONNRESET);
	ASSERT_STR_EQ(gw_mux_error(g.m), "peer: INTERNAL_ERROR: database down");
	ASSERT_EQ(gw_mux_error_code(g.m), GW_E_INTERNAL);
	ASSERT_EQ(sink_of(&g, a)->ends, 1);
	ASSERT_EQ(sink_of(&g, a)->end_code, GW_E_INTERNAL);
	ASSERT_EQ(g.goaways, 1);
	ASSERT(gw_mux_finished(g.m));
	ASSERT(gw_mux_finished(p.m));
	side_free(&g);
	side_free(&p);
}

TEST(rst_and_credit)
{
	struct side g, p;
	struct gw_mux_config pc = {.conn_window = 65536, .stream_window = 65536};
	pair(&g, &p, NULL, &pc);
	p.autoread = false;
	uint32_t a = open_work(&g, 1);
	add_src(&g, a, 40000, false);
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_readable(p.m, a), 40000);
	/* The plane cancels a without reading; more data is in flight. */
	ASSERT_EQ(gw_mux_reset(p.m, a, GW_E_APP + 5, "job cancelled"), 0);
	ASSERT_EQ(gw_mux_reset(p.m, a, GW_E_APP + 5, "twice"), -ENOENT);
	ASSERT_EQ(gw_mux_read(p.m, a, (char[4]){0}, 4), -ECONNRESET);
	ASSERT_EQ(gw_mux_write(g.m, a, "late", 4), 4);
	run(&g, &p, 0, false);
	ASSERT_EQ(sink_of(&g, a)->ends, 1);
	ASSERT_EQ(sink_of(&g, a)->end_code, GW_E_APP + 5);
	ASSERT_STR_EQ(sink_of(&g, a)->end_msg, "job cancelled");
	ASSERT_EQ(sink_of(&p, a)->ends, 1);
	ASSERT_EQ(gw_mux_write(g.m, a, "x", 1), -ENOENT);
	/* The unread 40000 bytes (and the late 4) went back to the connection
	 * window: a new stream can use all 65536 of it. */
	p.autoread = true;
	uint32_t b = open_work(&g, 2);
	add_src(&g, b, 65536, true);
	run(&g, &p, 0, false);
	ASSERT_EQ(sink_of(&p, b)->got, 65536);
	ASSERT(sink_of(&p, b)->eof);
	ASSERT_STR_EQ(gw_mux_error(p.m), "");
	side_free(&g);
	side_free(&p);
}

TEST(eof)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	uint32_t a = open_work(&g, 1);
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_eof(p.m), -ECONNRESET);
	ASSERT_CONTAINS(gw_mux_error(p.m), "closed by the peer with 1 streams open");
	ASSERT_EQ(sink_of(&p, a)->ends, 1);
	ASSERT_EQ(sink_of(&p, a)->end_code, GW_E_CANCEL);
	/* Freeing ends what is left, exactly once. */
	gw_mux_free(g.m);
	ASSERT_EQ(sink_of(&g, a)->ends, 1);
	ASSERT_EQ(sink_of(&g, a)->end_code, GW_E_CANCEL);
	g.m = NULL;
	side_free(&g);
	side_free(&p);
}

TEST(refused_by_application)
{
	struct side g, p;
	pair(&g, &p, NULL, NULL);
	p.refuse_kind = GW_KIND_MCP;
	p.refuse_code = GW_E_REFUSED;
	uint32_t id;
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_MCP, "nowhere", 7, NULL, &id), 0);
	ASSERT_EQ(gw_mux_write(g.m, id, "GET / HTTP/1.1\r\n", 16), 16);
	run(&g, &p, 0, false);
	ASSERT_EQ(p.opens, 1);
	ASSERT_STR_EQ(p.open_meta[0], "nowhere");
	ASSERT_EQ(p.ends, 0);
	ASSERT_EQ(sink_of(&g, id)->end_code, GW_E_REFUSED);
	ASSERT_STR_EQ(sink_of(&g, id)->end_msg, "refused by the receiver");
	ASSERT_STR_EQ(gw_mux_error(p.m), "");
	side_free(&g);
	side_free(&p);
}

/* ---- hostile input, fed to a control plane ---- */

struct frames {
	struct gw_frame f[64];
	uint8_t buf[1 << 16];
	int n;
};

/* Drain m's output and split it into frames. */
static void
out_frames(gw_mux *m, struct frames *fs)
{
	size_t len = 0;
	struct iovec iov;
	int r;
	while ((r = gw_mux_output(m, &iov, 1)) > 0) {
		size_t k = KL_MIN(iov.iov_len, sizeof fs->buf - len);
		memcpy(fs->buf + len, iov.iov_base, k);
		len += k;
		gw_mux_consume(m, iov.iov_len);
	}
	fs->n = 0;
	for (size_t off = 0; off < len && fs->n < 64;) {
		struct gw_err e;
		int k = gw_frame_decode(fs->buf + off, len - off, GW_FRAME_MAX, &fs->f[fs->n], &e);
		ASSERT_GT(k, 0);
		fs->n++;
		off += (size_t)k;
	}
}

static const struct gw_frame *
find_frame(const struct frames *fs, uint8_t type, uint32_t sid)
{
	for (int i = 0; i < fs->n; i++)
		if (fs->f[i].h.type == type && fs->f[i].h.sid == sid)
			return &fs->f[i];
	return NULL;
}

/* A plane that has accepted a default gateway HELLO. */
static void
plane_raw(struct side *p, const struct gw_mux_config *pc)
{
	side_new(p, GW_ROLE_PLANE, pc);
	uint8_t f[GW_HDR_LEN + GW_HELLO_MAX];
	struct gw_hello h;
	gw_hello_init(&h, GW_ROLE_GATEWAY);
	int n = gw_hello_encode(f, sizeof f, &h);
	ASSERT_EQ(gw_mux_input(p->m, f, (size_t)n), 0);
	struct frames fs;
	out_frames(p->m, &fs);
	ASSERT_EQ(fs.n, 1);
	ASSERT_EQ(fs.f[0].h.type, GW_T_HELLO);
}

static size_t
raw(uint8_t *out, uint8_t type, uint8_t flags, uint32_t sid, const void *pay, uint32_t len)
{
	gw_fhdr_encode(out, len, type, flags, sid);
	if (len)
		memcpy(out + GW_HDR_LEN, pay, len);
	return GW_HDR_LEN + len;
}

static int
send_raw(struct side *p, uint8_t type, uint8_t flags, uint32_t sid, const void *pay, uint32_t len)
{
	static uint8_t f[GW_HDR_LEN + (1 << 17)];
	size_t n = raw(f, type, flags, sid, pay, len);
	return gw_mux_input(p->m, f, n);
}

static int
send_open(struct side *p, uint32_t sid, uint8_t flags)
{
	const uint8_t pay[] = {GW_KIND_WORK, 0, 0, 0, 0, 0, 0, 0, 1};
	return send_raw(p, GW_T_OPEN, flags, sid, pay, sizeof pay);
}

static int
send_window(struct side *p, uint32_t sid, uint32_t inc)
{
	uint8_t b[4];
	gw_put32(b, inc);
	return send_raw(p, GW_T_WINDOW, 0, sid, b, 4);
}

/* The connection failed with -EPROTO, code and a reason containing why, and
 * the GOAWAY on the wire says the same. */
static void
expect_fail(struct side *p, int r, uint32_t code, const char *why)
{
	ASSERT_EQ(r, -EPROTO);
	ASSERT_EQ(gw_mux_error_code(p->m), code);
	ASSERT_CONTAINS(gw_mux_error(p->m), why);
	struct frames fs;
	out_frames(p->m, &fs);
	const struct gw_frame *ga = find_frame(&fs, GW_T_GOAWAY, 0);
	ASSERT(ga);
	uint32_t last, c;
	char msg[GW_MSG_MAX + 1];
	ASSERT_EQ(gw_goaway_decode(ga->payload, ga->h.len, &last, &c, msg, sizeof msg, NULL), 0);
	ASSERT_EQ(c, code);
	ASSERT_CONTAINS(msg, why);
	ASSERT(gw_mux_finished(p->m));
	ASSERT_EQ(gw_mux_input(p->m, "x", 1), -EPROTO); /* stays failed */
	side_free(p);
}

static void
expect_rst(struct side *p, uint32_t sid, uint32_t code, const char *why)
{
	struct frames fs;
	out_frames(p->m, &fs);
	const struct gw_frame *rst = find_frame(&fs, GW_T_RST, sid);
	ASSERT(rst);
	uint32_t c;
	char msg[GW_MSG_MAX + 1];
	ASSERT_EQ(gw_rst_decode(rst->payload, rst->h.len, &c, msg, sizeof msg, NULL), 0);
	ASSERT_EQ(c, code);
	ASSERT_CONTAINS(msg, why);
	ASSERT_STR_EQ(gw_mux_error(p->m), "");
}

static uint8_t zeros[1 << 17];

TEST(hostile_lengths_types_flags)
{
	struct side p;
	plane_raw(&p, NULL);
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	expect_fail(&p, send_raw(&p, GW_T_DATA, 0, 1, zeros, 16385), GW_E_FRAME_SIZE,
	            "DATA frame of 16385 bytes exceeds the limit of 16384");

	plane_raw(&p, NULL);
	uint8_t h[GW_HDR_LEN];
	gw_fhdr_encode(h, 0xffffffffu, GW_T_PING, 0, 0);
	expect_fail(&p, gw_mux_input(p.m, h, sizeof h), GW_E_FRAME_SIZE, "4294967295 bytes");

	plane_raw(&p, NULL);
	expect_fail(&p, send_raw(&p, 0x09, 0, 0, zeros, 3), GW_E_PROTOCOL,
	            "unknown frame type 0x09");

	plane_raw(&p, NULL);
	expect_fail(&p, send_raw(&p, GW_T_PING, 0x01, 0, zeros, 8), GW_E_PROTOCOL,
	            "PING frame with undefined flags 0x01");

	plane_raw(&p, NULL);
	expect_fail(&p, send_raw(&p, GW_T_DATA, 0, 0x80000001u, zeros, 1), GW_E_PROTOCOL,
	            "reserved stream id bit");

	/* An unknown ignorable frame is skipped; the connection lives on. */
	plane_raw(&p, NULL);
	ASSERT_EQ(send_raw(&p, 0x85, 0x77, 3, zeros, 1000), 0);
	ASSERT_EQ(send_raw(&p, GW_T_PING, 0, 0, "12345678", 8), 0);
	struct frames fs;
	out_frames(p.m, &fs);
	const struct gw_frame *pong = find_frame(&fs, GW_T_PONG, 0);
	ASSERT(pong);
	ASSERT_EQ(memcmp(pong->payload, "12345678", 8), 0);
	ASSERT_STR_EQ(gw_mux_error(p.m), "");
	side_free(&p);
}

TEST(hostile_stream_ids)
{
	struct side p;
	plane_raw(&p, NULL);
	expect_fail(&p, send_raw(&p, GW_T_DATA, 0, 9, "x", 1), GW_E_PROTOCOL,
	            "DATA on stream 9, which was never opened");

	plane_raw(&p, NULL);
	expect_fail(&p, send_raw(&p, GW_T_DATA, 0, 4, "x", 1), GW_E_PROTOCOL,
	            "DATA on stream 4, which was never opened");

	plane_raw(&p, NULL);
	expect_fail(&p, send_open(&p, 2, 0), GW_E_PROTOCOL,
	            "OPEN of stream 2: that parity is ours");

	plane_raw(&p, NULL);
	ASSERT_EQ(send_open(&p, 3, 0), 0);
	expect_fail(&p, send_open(&p, 1, 0), GW_E_PROTOCOL,
	            "OPEN reuses stream id 1 (ids must increase; last opened 3)");

	plane_raw(&p, NULL);
	ASSERT_EQ(send_open(&p, 3, 0), 0);
	expect_fail(&p, send_open(&p, 3, 0), GW_E_PROTOCOL, "OPEN reuses stream id 3");

	plane_raw(&p, NULL);
	expect_fail(&p, send_raw(&p, GW_T_RST, 0, 7, "\0\0\0\0", 4), GW_E_PROTOCOL,
	            "RST on stream 7, which was never opened");

	plane_raw(&p, NULL);
	expect_fail(&p, send_window(&p, 11, 5), GW_E_PROTOCOL,
	            "WINDOW_UPDATE on stream 11, which was never opened");

	/* Frames for a closed stream are dropped: RST crossed them. */
	plane_raw(&p, NULL);
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	ASSERT_EQ(send_raw(&p, GW_T_RST, 0, 1, "\0\0\0\7bye", 7), 0);
	ASSERT_EQ(sink_of(&p, 1)->end_code, GW_E_CANCEL);
	ASSERT_STR_EQ(sink_of(&p, 1)->end_msg, "bye");
	ASSERT_EQ(send_raw(&p, GW_T_DATA, 0, 1, zeros, 5000), 0);
	ASSERT_EQ(send_window(&p, 1, 100), 0);
	ASSERT_EQ(send_raw(&p, GW_T_RST, 0, 1, "\0\0\0\7", 4), 0);
	struct gw_mux_stats st;
	gw_mux_stats(p.m, &st);
	ASSERT_EQ(st.recvq_bytes, 0);
	ASSERT_EQ(st.data_in, 5000);
	ASSERT_EQ(sink_of(&p, 1)->ends, 1);
	ASSERT_STR_EQ(gw_mux_error(p.m), "");
	side_free(&p);
}

TEST(hostile_windows)
{
	struct side p;
	plane_raw(&p, NULL);
	expect_fail(&p, send_window(&p, 0, 0x7fffffffu), GW_E_FLOW_CONTROL,
	            "connection window overflow: 16777216 + 2147483647 > 2^31-1");

	plane_raw(&p, NULL);
	ASSERT_EQ(send_window(&p, 0, 0x7fffffffu - (16u << 20)), 0);
	expect_fail(&p, send_window(&p, 0, 1), GW_E_FLOW_CONTROL, "connection window overflow");

	plane_raw(&p, NULL);
	expect_fail(&p, send_window(&p, 0, 0), GW_E_PROTOCOL, "increment 0");

	plane_raw(&p, NULL);
	expect_fail(&p, send_window(&p, 0, 0x80000000u), GW_E_PROTOCOL, "increment 2147483648");

	/* On a stream, overflow and a zero increment are stream errors. */
	plane_raw(&p, NULL);
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	ASSERT_EQ(send_window(&p, 1, 0x7fffffffu), 0);
	expect_rst(&p, 1, GW_E_FLOW_CONTROL, "stream 1 window overflow: 1048576 + 2147483647");
	ASSERT_EQ(sink_of(&p, 1)->end_code, GW_E_FLOW_CONTROL);
	ASSERT_EQ(send_open(&p, 3, 0), 0);
	ASSERT_EQ(send_window(&p, 3, 0), 0);
	expect_rst(&p, 3, GW_E_PROTOCOL, "increment 0");
	side_free(&p);

	/* DATA beyond a stream's window, then beyond the connection's. */
	struct gw_mux_config pc = {.stream_window = 4096, .conn_window = 8192};
	plane_raw(&p, &pc);
	p.autoread = false;
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	ASSERT_EQ(send_raw(&p, GW_T_DATA, 0, 1, zeros, 4096), 0);
	expect_fail(&p, send_raw(&p, GW_T_DATA, 0, 1, zeros, 1), GW_E_FLOW_CONTROL,
	            "DATA of 1 bytes on stream 1 exceeds its window (0 left)");

	plane_raw(&p, &pc);
	p.autoread = false;
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	ASSERT_EQ(send_open(&p, 3, 0), 0);
	ASSERT_EQ(send_open(&p, 5, 0), 0);
	ASSERT_EQ(send_raw(&p, GW_T_DATA, 0, 1, zeros, 4000), 0);
	ASSERT_EQ(send_raw(&p, GW_T_DATA, 0, 3, zeros, 4000), 0);
	expect_fail(&p, send_raw(&p, GW_T_DATA, 0, 5, zeros, 1000), GW_E_FLOW_CONTROL,
	            "DATA of 1000 bytes on stream 5 exceeds the connection window (192 left)");
}

TEST(hostile_stream_errors)
{
	struct side p;
	plane_raw(&p, NULL);
	/* DATA after FIN: the stream is reset, the connection lives. */
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	ASSERT_EQ(send_raw(&p, GW_T_DATA, GW_F_FIN, 1, "ab", 2), 0);
	ASSERT_EQ(sink_of(&p, 1)->got, 2);
	ASSERT(sink_of(&p, 1)->eof);
	ASSERT_EQ(send_raw(&p, GW_T_DATA, 0, 1, "c", 1), 0);
	expect_rst(&p, 1, GW_E_STREAM_CLOSED, "DATA after FIN");
	/* OPEN with FIN: half-closed at once, EOF for the reader. */
	ASSERT_EQ(send_open(&p, 3, GW_F_FIN), 0);
	ASSERT(sink_of(&p, 3)->eof);
	/* Bad OPEN headers are stream errors too. */
	const uint8_t badmcp[] = {GW_KIND_MCP, 'a', ' ', 'b'};
	ASSERT_EQ(send_raw(&p, GW_T_OPEN, 0, 5, badmcp, sizeof badmcp), 0);
	expect_rst(&p, 5, GW_E_PROTOCOL, "MCP route name with byte 0x20");
	ASSERT_EQ(send_raw(&p, GW_T_OPEN, 0, 7, "\x09", 1), 0);
	expect_rst(&p, 7, GW_E_REFUSED, "unknown stream kind 9");
	/* One CONTROL stream, opened by the gateway. */
	ASSERT_EQ(send_raw(&p, GW_T_OPEN, 0, 9, "\x01", 1), 0);
	ASSERT_EQ(sink_of(&p, 9)->kind, GW_KIND_CONTROL);
	ASSERT_EQ(send_raw(&p, GW_T_OPEN, 0, 11, "\x01", 1), 0);
	expect_rst(&p, 11, GW_E_REFUSED, "a CONTROL stream is open already");
	ASSERT_EQ(p.opens, 3);
	side_free(&p);

	struct gw_mux_config pc = {.max_streams = 2};
	plane_raw(&p, &pc);
	ASSERT_EQ(send_open(&p, 1, 0), 0);
	ASSERT_EQ(send_open(&p, 3, 0), 0);
	ASSERT_EQ(send_open(&p, 5, 0), 0);
	expect_rst(&p, 5, GW_E_REFUSED, "too many streams (limit 2)");
	ASSERT_EQ(p.opens, 2);
	side_free(&p);
}

TEST(gateway_refuses_plane_control)
{
	struct side g;
	side_new(&g, GW_ROLE_GATEWAY, NULL);
	struct frames fs;
	out_frames(g.m, &fs);
	ASSERT_EQ(fs.n, 1);
	uint8_t f[GW_HDR_LEN + GW_HELLO_MAX];
	struct gw_hello h;
	gw_hello_init(&h, GW_ROLE_PLANE);
	ASSERT_EQ(gw_mux_input(g.m, f, (size_t)gw_hello_encode(f, sizeof f, &h)), 0);
	ASSERT_EQ(send_raw(&g, GW_T_OPEN, 0, 2, "\x01", 1), 0);
	expect_rst(&g, 2, GW_E_REFUSED, "only the gateway opens the CONTROL stream");
	/* The gateway opens odd ids: an odd OPEN from the plane is misuse. */
	ASSERT_EQ(send_raw(&g, GW_T_OPEN, 0, 5, "\x01", 1), -EPROTO);
	ASSERT_CONTAINS(gw_mux_error(g.m), "OPEN of stream 5: that parity is ours");
	side_free(&g);
}

TEST(hostile_handshake)
{
	struct side p;
	side_new(&p, GW_ROLE_PLANE, NULL);
	const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	expect_fail(&p, gw_mux_input(p.m, http, strlen(http)), GW_E_PROTOCOL,
	            "first frame is UNKNOWN (type 0x2f, 1195725856 bytes), not HELLO");

	side_new(&p, GW_ROLE_PLANE, NULL);
	uint8_t f[GW_HDR_LEN + GW_HELLO_MAX];
	struct gw_hello h;
	gw_hello_init(&h, GW_ROLE_PLANE);
	int n = gw_hello_encode(f, sizeof f, &h);
	expect_fail(&p, gw_mux_input(p.m, f, (size_t)n), GW_E_PROTOCOL,
	            "both sides claim the role control plane");

	plane_raw(&p, NULL);
	gw_hello_init(&h, GW_ROLE_GATEWAY);
	n = gw_hello_encode(f, sizeof f, &h);
	expect_fail(&p, gw_mux_input(p.m, f, (size_t)n), GW_E_PROTOCOL, "second HELLO");

	side_new(&p, GW_ROLE_PLANE, NULL);
	gw_hello_init(&h, GW_ROLE_GATEWAY);
	n = gw_hello_encode(f, sizeof f, &h);
	memcpy(f + GW_HDR_LEN, "KLTX", 4);
	expect_fail(&p, gw_mux_input(p.m, f, (size_t)n), GW_E_PROTOCOL, "magic");

	side_new(&p, GW_ROLE_PLANE, NULL);
	n = gw_hello_encode(f, sizeof f, &h);
	f[GW_HDR_LEN + 4] = f[GW_HDR_LEN + 5] = 0;
	expect_fail(&p, gw_mux_input(p.m, f, (size_t)n), GW_E_VERSION, "version 0");

	/* A plane that refuses our HELLO answers with GOAWAY alone: the gateway
	 * reports the plane's reason. */
	struct side g;
	side_new(&g, GW_ROLE_GATEWAY, NULL);
	n = (int)raw(f, GW_T_GOAWAY, 0, 0, "\0\0\0\0\0\0\0\x08too old", 15);
	ASSERT_EQ(gw_mux_input(g.m, f, (size_t)n), -ECONNRESET);
	ASSERT_STR_EQ(gw_mux_error(g.m), "peer: VERSION_ERROR: too old");
	side_free(&g);
}

TEST(hostile_floods)
{
	struct side p;
	plane_raw(&p, NULL);
	static uint8_t b[9 * (GW_HDR_LEN + 8)];
	for (int i = 0; i < 9; i++)
		gw_ping_encode(b + i * (GW_HDR_LEN + 8), GW_HDR_LEN + 8, GW_T_PING, (uint64_t)i);
	expect_fail(&p, gw_mux_input(p.m, b, sizeof b), GW_E_CALM, "PING flood");

	/* A peer provoking RSTs without reading ours: bounded, then refused. */
	struct gw_mux_config pc = {.ctl_max = 4096};
	plane_raw(&p, &pc);
	int r = 0;
	for (uint32_t id = 1; id < 2000 && r == 0; id += 2)
		r = send_raw(&p, GW_T_OPEN, 0, id, "\x09", 1);
	expect_fail(&p, r, GW_E_CALM, "control frames queued");

	/* GOAWAY may lower the last id, never raise it. */
	plane_raw(&p, NULL);
	ASSERT_EQ(send_raw(&p, GW_T_GOAWAY, 0, 0, "\0\0\0\x05\0\0\0\0", 8), 0);
	expect_fail(&p, send_raw(&p, GW_T_GOAWAY, 0, 0, "\0\0\0\x07\0\0\0\0", 8), GW_E_PROTOCOL,
	            "GOAWAY raised the last stream id from 5 to 7");
}

/* The same frames fed whole and one byte at a time give the same events. */
TEST(split_everywhere)
{
	static uint8_t seq[4096];
	size_t n = 0;
	const uint8_t open[] = {GW_KIND_MCP, 'r', 't'};
	n += raw(seq + n, GW_T_OPEN, 0, 1, open, sizeof open);
	uint8_t data[3000];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = pat(1, i);
	n += raw(seq + n, GW_T_DATA, 0, 1, data, 1000);
	n += raw(seq + n, 0x99, 0, 0, zeros, 17);
	n += raw(seq + n, GW_T_DATA, GW_F_FIN, 1, data + 1000, 2000);
	n += raw(seq + n, GW_T_PING, 0, 0, "abcdefgh", 8);
	for (int mode = 0; mode < 3; mode++) {
		struct side p;
		plane_raw(&p, NULL);
		if (mode == 0) {
			ASSERT_EQ(gw_mux_input(p.m, seq, n), 0);
		} else {
			for (size_t off = 0; off < n;) {
				size_t c = 1 + rnd() % 40;
				size_t k = mode == 1 ? 1 : KL_MIN(n - off, c);
				ASSERT_EQ(gw_mux_input(p.m, seq + off, k), 0);
				off += k;
			}
		}
		ASSERT_EQ(p.opens, 1);
		ASSERT_STR_EQ(p.open_meta[0], "rt");
		ASSERT_EQ(sink_of(&p, 1)->got, 3000);
		ASSERT_EQ(sink_of(&p, 1)->bad, 0);
		ASSERT(sink_of(&p, 1)->eof);
		struct frames fs;
		out_frames(p.m, &fs);
		ASSERT(find_frame(&fs, GW_T_PONG, 0));
		if (mode == 1)
			ASSERT_GE(p.readables, 2); /* delivered as the bytes came */
		side_free(&p);
	}
}

/* More live streams than the table's first size, and frames larger than
 * the output batch (the peer allows 256 KiB): the buffers grow. */
TEST(many_streams_big_frames)
{
	struct side g, p;
	struct gw_mux_config pc = {.max_frame = 256u << 10};
	pair(&g, &p, NULL, &pc);
	uint32_t ids[300];
	int tags[300];
	for (int i = 0; i < 300; i++) {
		ids[i] = open_work(&g, (uint64_t)i);
		tags[i] = i;
		ASSERT_EQ(gw_mux_set_udata(g.m, ids[i], &tags[i]), 0);
		add_src(&g, ids[i], i % 50 ? 100 : 600000, true);
	}
	ASSERT(gw_mux_udata(g.m, ids[7]) == &tags[7]);
	ASSERT(gw_mux_udata(g.m, 9999) == NULL);
	ASSERT_EQ(gw_mux_set_udata(g.m, 9999, NULL), -ENOENT);
	ASSERT_EQ(gw_mux_stream_kind(g.m, ids[0]), GW_KIND_WORK);
	ASSERT_EQ(gw_mux_stream_kind(g.m, 9999), -ENOENT);
	g.tap = true;
	run(&g, &p, 0, false);
	size_t biggest = 0;
	for (size_t i = 0; i < g.nlog; i++)
		if (g.log[i].type == GW_T_DATA && g.log[i].len > biggest)
			biggest = g.log[i].len;
	ASSERT_EQ(biggest, 256u << 10);
	for (int i = 0; i < 300; i++) {
		ASSERT_EQ(sink_of(&p, ids[i])->got, i % 50 ? 100u : 600000u);
		ASSERT_EQ(sink_of(&p, ids[i])->bad, 0);
		ASSERT_EQ(sink_of(&p, ids[i])->ends, 1);
		ASSERT_EQ(sink_of(&g, ids[i])->ends, 1);
	}
	side_free(&g);
	side_free(&p);
}

/* With the connection window spent by a stream nobody reads, a FIN on
 * another stream still goes out: FIN-only frames cost no window. */
TEST(fin_without_window)
{
	struct side g, p;
	struct gw_mux_config pc = {.conn_window = 65536, .stream_window = 65536};
	pair(&g, &p, NULL, &pc);
	p.autoread = false;
	uint32_t hog = open_work(&g, 1), b = open_work(&g, 2);
	add_src(&g, hog, 200000, false);
	run(&g, &p, 0, false);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.send_window, 0);
	ASSERT_EQ(gw_mux_write(g.m, b, "x", 1), 1);
	ASSERT_EQ(gw_mux_shutdown(g.m, b), 0);
	ASSERT(!gw_mux_want_output(g.m)); /* "x" waits for window */
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_readable(p.m, b), 0);
	/* The stream without data: its FIN leaves at once. */
	uint32_t c = open_work(&g, 3);
	ASSERT_EQ(gw_mux_shutdown(g.m, c), 0);
	ASSERT(gw_mux_want_output(g.m));
	run(&g, &p, 0, false);
	ASSERT_EQ(gw_mux_read(p.m, c, (char[4]){0}, 4), 0);
	ASSERT_EQ(gw_mux_read(p.m, b, (char[4]){0}, 4), -EAGAIN);
	side_free(&g);
	side_free(&p);
}

static int
refuse_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	return GW_E_APP + 9;
}

static void
nested_input(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	struct iovec iov;
	*(int *)arg += gw_mux_input(m, "x", 1) == -EBUSY;
	*(int *)arg += gw_mux_output(m, &iov, 1) == -EBUSY;
	*(int *)arg += gw_mux_tick(m, 1) == -EBUSY;
	*(int *)arg += gw_mux_eof(m) == -EBUSY;
}

TEST(limits_and_refusals)
{
	/* The peer's max_streams bounds what we open. */
	struct side g, p;
	struct gw_mux_config pc = {.max_streams = 2};
	pair(&g, &p, NULL, &pc);
	uint32_t id;
	open_work(&g, 1);
	open_work(&g, 2);
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_MCP, "r", 1, NULL, &id), -EAGAIN);
	ASSERT_EQ(gw_mux_open(g.m, GW_KIND_MCP, "bad route", 9, NULL, &id), -EINVAL);
	ASSERT_EQ(gw_mux_open(g.m, 42, NULL, 0, NULL, &id), -EINVAL);
	/* An unsolicited PONG is ignored. */
	uint8_t f[GW_HDR_LEN + 8];
	gw_ping_encode(f, sizeof f, GW_T_PONG, 12345);
	ASSERT_EQ(gw_mux_input(g.m, f, sizeof f), 0);
	struct gw_mux_stats st;
	gw_mux_stats(g.m, &st);
	ASSERT_EQ(st.pongs_recv, 0);
	side_free(&g);
	side_free(&p);

	/* The application refuses the peer's HELLO: GOAWAY with its code. */
	static const struct gw_mux_ops refuse = {.on_hello = refuse_hello};
	struct gw_mux_config c = {.role = GW_ROLE_PLANE, .ops = &refuse};
	gw_mux *m;
	ASSERT_EQ(gw_mux_new(&c, &m), 0);
	struct gw_hello h;
	uint8_t hf[GW_HDR_LEN + GW_HELLO_MAX];
	gw_hello_init(&h, GW_ROLE_GATEWAY);
	ASSERT_EQ(gw_mux_input(m, hf, (size_t)gw_hello_encode(hf, sizeof hf, &h)), -ECONNABORTED);
	ASSERT_STR_EQ(gw_mux_error(m), "HELLO refused: APPLICATION_ERROR");
	ASSERT_EQ(gw_mux_error_code(m), GW_E_APP + 9);
	struct frames fs;
	out_frames(m, &fs);
	ASSERT_EQ(fs.n, 1); /* no HELLO of ours: GOAWAY alone */
	ASSERT_EQ(fs.f[0].h.type, GW_T_GOAWAY);
	gw_mux_free(m);

	/* Pump calls from a callback are refused. */
	int busy = 0;
	static const struct gw_mux_ops nest = {.on_readable = nested_input};
	struct gw_mux_config nc = {.role = GW_ROLE_PLANE, .ops = &nest, .arg = &busy};
	ASSERT_EQ(gw_mux_new(&nc, &m), 0);
	ASSERT_EQ(gw_mux_input(m, hf, (size_t)gw_hello_encode(hf, sizeof hf, &h)), 0);
	const uint8_t open[] = {GW_KIND_MCP, 'r'};
	size_t n = raw(hf, GW_T_OPEN, 0, 1, open, sizeof open);
	n += raw(hf + n, GW_T_DATA, 0, 1, "data", 4);
	ASSERT_EQ(gw_mux_input(m, hf, n), 0);
	ASSERT_EQ(busy, 4);
	gw_mux_free(m);
}

/* Random bytes never crash the mux: either they are still a valid prefix,
 * or the connection fails with a reason and a GOAWAY carrying it. */
TEST(random_garbage)
{
	static uint8_t g[512];
	int failed = 0;
	for (int iter = 0; iter < 3000; iter++) {
		struct side p;
		if (iter % 3)
			plane_raw(&p, NULL);
		else
			side_new(&p, GW_ROLE_PLANE, NULL);
		size_t n = 1 + rnd() % sizeof g;
		for (size_t i = 0; i < n; i++)
			g[i] = (uint8_t)rnd();
		if (iter % 5 == 0 && n > 10) /* a plausible header now and then */
			gw_fhdr_encode(g, rnd() % 64, (uint8_t)(rnd() % 9), (uint8_t)(rnd() % 2),
			               rnd() % 8);
		int r = 0;
		for (size_t off = 0; off < n && r == 0;) {
			size_t c = 1 + rnd() % 64;
			size_t k = KL_MIN(n - off, c);
			r = gw_mux_input(p.m, g + off, k);
			off += k;
		}
		struct frames fs;
		out_frames(p.m, &fs);
		if (r == -ECONNRESET) {
			/* The garbage parsed as a GOAWAY carrying an error code. */
			ASSERT_CONTAINS(gw_mux_error(p.m), "peer: ");
			failed++;
		} else if (r < 0) {
			ASSERT_EQ(r, -EPROTO);
			ASSERT_GT(strlen(gw_mux_error(p.m)), 10);
			ASSERT_NE(gw_mux_error_code(p.m), GW_E_NONE);
			ASSERT(find_frame(&fs, GW_T_GOAWAY, 0));
			failed++;
		} else {
			ASSERT_STR_EQ(gw_mux_error(p.m), "");
		}
		side_free(&p);
	}
	ASSERT_GT(failed, 2500);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
