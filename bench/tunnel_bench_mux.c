/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench-tunnel's kiln sections (tunnel_bench.h): two gw_mux endpoints,
 * gateway and plane roles, over one TLS pair, each pumped by its own thread
 * the way kiln-gateway's loop pumps its mux (gw_tunnel.c: poll, read until
 * EAGAIN, write until EAGAIN). On top: one bulk stream (kiln), a TCP
 * connection relayed end to end through gw_relay like stunnel's topology
 * (relay), and small round trips beside back-to-back transfers (hol).
 */
#include "tunnel_bench.h"

#include "gw_mux.h"
#include "gw_relay.h"
#include "gw_tls.h"

#include "kl_clock.h"
#include "kl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- an endpoint: one gw_mux pumped by one thread ---- */

typedef struct ep ep;
struct ep {
	const char *name;
	gw_mux *m;
	struct tb_conn c;
	short want;
	bool failed;
	char err[300];
	atomic_bool *stop; /* set when the measurement is over (or failed) */
	void *app;         /* the section's state */
	/* called every round after input; may set wake_ns to be called again */
	void (*step)(ep *e, uint64_t now_ns);
	uint64_t wake_ns;
	gw_relay *relay;   /* polled beside the connection when set */
	bool pump_gateway; /* pump_out as gw_tunnel.c's (see pump_out) */
	double cpu_s;      /* this thread's CPU during the loop */
};

static void
ep_fail(ep *e, const char *what, const char *why)
{
	if (!e->failed)
		snprintf(e->err, sizeof e->err, "%s: %s: %s", e->name, what, why);
	e->failed = true;
	atomic_store(e->stop, true);
}

/* TLS -> mux, as gw_tunnel.c's pump_in: read until the socket is empty. */
static bool
pump_in(ep *e)
{
	static _Thread_local uint8_t buf[IO_CHUNK];
	char err[256];
	for (;;) {
		short want = 0;
		ssize_t n = gw_tls_read(e->c.ssl, buf, sizeof buf, &want, err, sizeof err);
		if (n == -EAGAIN) {
			e->want = want;
			return true;
		}
		if (n <= 0) {
			ep_fail(e, "read", n == 0 ? "the peer closed the connection" : err);
			return false;
		}
		if (gw_mux_input(e->m, buf, (size_t)n) < 0) {
			ep_fail(e, "tunnel protocol", gw_mux_error(e->m));
			return false;
		}
	}
}

/* mux -> TLS. gw_tls's SSL_MODE_ENABLE_PARTIAL_WRITE makes SSL_write_ex
 * return after each TLS record (16 KiB), so a short write is the normal
 * case, not a full socket. gw_tunnel.c's pump_out returns to poll() on any
 * short write (--pump gateway, and the kiln-gw section): one more poll and
 * one read that fails with EAGAIN per record. --pump continue (the default)
 * asks for the rest at once, until EAGAIN or --pump-budget bytes (64 KiB):
 * then back to poll(), so a request that arrived meanwhile is read before
 * the next batch rather than after the whole stream window. */
static bool
pump_out(ep *e)
{
	struct iovec iov[8];
	char err[256];
	int k;
	size_t done = 0;
	while ((k = gw_mux_output(e->m, iov, 8)) > 0) {
		for (int i = 0; i < k; i++) {
			short want = 0;
			ssize_t n = gw_tls_write(e->c.ssl, iov[i].iov_base, iov[i].iov_len, &want,
			                         err, sizeof err);
			if (n == -EAGAIN) {
				e->want = want;
				return true;
			}
			if (n <= 0) {
				ep_fail(e, "write", err);
				return false;
			}
			gw_mux_consume(e->m, (size_t)n);
			done += (size_t)n;
			if (!e->pump_gateway && tb.o.pump_budget && done >= tb.o.pump_budget)
				return true; /* poll() again: input is read before more output */
			if ((size_t)n < iov[i].iov_len) {
				if (e->pump_gateway)
					return true;
				break; /* gw_mux_output returns the rest first */
			}
		}
	}
	e->want = POLLIN;
	return true;
}

/* The loop of gw_tunnel.c's loop_once: poll the connection for what the
 * last pump wanted (plus POLLOUT while the mux has output), then read
 * everything, then write everything. */
static void *
ep_main(void *arg)
{
	ep *e = arg;
	double c0 = tb_thread_cpu_s();
	e->want = POLLIN;
	while (!atomic_load(e->stop) && !tb_interrupted) {
		struct pollfd pf[2];
		int n = 0;
		bool out = gw_mux_want_output(e->m);
		pf[n++] = (struct pollfd){e->c.fd, (short)(e->want | (out ? POLLOUT : 0)), 0};
		if (e->relay && e->relay->fd >= 0 && !gw_relay_done(e->relay))
			pf[n++] = (struct pollfd){e->relay->fd, gw_relay_events(e->relay), 0};
		int64_t tk = gw_mux_tick(e->m, kl_now_ms());
		if (tk < 0) {
			ep_fail(e, "tick", gw_mux_error(e->m));
			break;
		}
		uint64_t now = kl_now_ns(), wait = (uint64_t)KL_MIN(tk, 50) * 1000000ull;
		if (e->wake_ns)
			wait = KL_MIN(wait, e->wake_ns > now ? e->wake_ns - now : 0);
		struct timespec ts = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
		ppoll(pf, (nfds_t)n, &ts, NULL);
		if (pf[0].revents && !pump_in(e))
			break;
		if (n > 1 && pf[1].revents)
			gw_relay_on_fd(e->relay, pf[1].revents);
		if (e->step)
			e->step(e, kl_now_ns());
		if (!pump_out(e))
			break;
	}
	e->cpu_s = tb_thread_cpu_s() - c0;
	return NULL;
}

static void
mux_cfg(struct gw_mux_config *c, uint8_t role, const struct gw_mux_ops *ops, ep *e)
{
	memset(c, 0, sizeof *c);
	c->role = role;
	c->ops = ops;
	c->arg = e;
	c->max_frame = tb.o.max_frame;
	c->stream_window = tb.o.stream_window;
	c->conn_window = tb.o.conn_window;
	c->out_batch = tb.o.out_batch;
}

/* Connect, make both muxes, run both loops until stop, tear down. The
 * negotiated ciphersuite goes to tb.suite_kiln. */
static int
run_pair(const struct gw_mux_ops *ops, ep *gw, ep *pl, atomic_bool *stop, char *err, size_t errlen)
{
	struct gw_mux_config gc, pc;
	int r = tb_tls_pair(&gw->c, &pl->c, err, errlen);
	if (r < 0)
		return r;
	snprintf(tb.suite_kiln, sizeof tb.suite_kiln, "%s", SSL_get_cipher_name(gw->c.ssl));
	gw->name = "gateway";
	pl->name = "plane";
	gw->stop = pl->stop = stop;
	gw->pump_gateway = pl->pump_gateway = gw->pump_gateway || tb.o.pump_gateway;
	mux_cfg(&gc, GW_ROLE_GATEWAY, ops, gw);
	mux_cfg(&pc, GW_ROLE_PLANE, ops, pl);
	if ((r = gw_mux_new(&gc, &gw->m)) < 0 || (r = gw_mux_new(&pc, &pl->m)) < 0) {
		snprintf(err, errlen, "gw_mux_new: %s (a mux option out of range?)", strerror(-r));
		gw_mux_free(gw->m);
		gw_tls_close(gw->c.ssl, gw->c.fd);
		gw_tls_close(pl->c.ssl, pl->c.fd);
		return r;
	}
	pthread_t tg, tp;
	pthread_create(&tg, NULL, ep_main, gw);
	pthread_create(&tp, NULL, ep_main, pl);
	pthread_join(tg, NULL);
	pthread_join(tp, NULL);
	gw_mux_free(gw->m);
	gw_mux_free(pl->m);
	gw_tls_close(gw->c.ssl, gw->c.fd);
	gw_tls_close(pl->c.ssl, pl->c.fd);
	if (gw->failed || pl->failed) {
		snprintf(err, errlen, "%s", gw->failed ? gw->err : pl->err);
		return -EIO;
	}
	if (tb_interrupted) {
		snprintf(err, errlen, "interrupted");
		return -EINTR;
	}
	return 0;
}

/* ---- section: kiln mux, one stream gateway -> plane ---- */

struct bulk {
	uint64_t n;
	uint32_t sid;
	uint64_t sent;
	bool fin;
	uint64_t got;
	uint64_t t0, t1;
};

static void
bulk_fill(ep *e)
{
	struct bulk *b = e->app;
	while (b->sent < b->n) {
		ssize_t w =
		        gw_mux_write(e->m, b->sid, tb.src, KL_MIN(sizeof tb.src, b->n - b->sent));
		if (w <= 0)
			break; /* -EAGAIN: on_writable comes */
		b->sent += (uint64_t)w;
	}
	if (b->sent == b->n && !b->fin) {
		gw_mux_shutdown(e->m, b->sid);
		b->fin = true;
	}
}

/* Reads what arrived on id into a buffer (as a sink would); true at EOF. */
static bool
drain(ep *e, uint32_t id, uint64_t *count)
{
	static _Thread_local uint8_t buf[IO_CHUNK];
	for (;;) {
		ssize_t k = gw_mux_read(e->m, id, buf, sizeof buf);
		if (k > 0) {
			*count += (uint64_t)k;
			continue;
		}
		return k == 0;
	}
}

static int
bulk_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	ep *e = arg;
	struct bulk *b = e->app;
	uint8_t meta[8];
	if (peer->role == GW_ROLE_PLANE) { /* we are the gateway: send */
		gw_put64(meta, 1);
		if (gw_mux_open(m, GW_KIND_WORK, meta, sizeof meta, NULL, &b->sid) < 0)
			return GW_E_INTERNAL;
		b->t0 = kl_now_ns();
		bulk_fill(e);
	}
	return 0;
}

static int
bulk_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t len, void *arg)
{
	gw_mux_shutdown(m, id); /* the plane sends nothing back */
	return 0;
}

static void
bulk_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	ep *e = arg;
	struct bulk *b = e->app;
	uint64_t ignored = 0;
	if (e->name[0] == 'g') { /* the gateway: only the plane's FIN comes */
		drain(e, id, &ignored);
		return;
	}
	drain(e, id, &b->got);
	if (b->got >= b->n && !b->t1) {
		b->t1 = kl_now_ns();
		atomic_store(e->stop, true);
	}
}

static void
bulk_writable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	bulk_fill(arg);
}

static const struct gw_mux_ops bulk_ops = {.on_hello = bulk_hello,
                                           .on_open = bulk_open,
                                           .on_readable = bulk_readable,
                                           .on_writable = bulk_writable};

static int
run_kiln_pump(struct tb_tput *t, bool pump_gateway, char *err, size_t errlen)
{
	struct bulk b = {.n = tb.o.bytes};
	ep gw = {.app = &b, .pump_gateway = pump_gateway}, pl = {.app = &b};
	atomic_bool stop = false;
	int r = run_pair(&bulk_ops, &gw, &pl, &stop, err, errlen);
	if (r < 0)
		return r;
	tb_tput_set(t, b.got, b.t0, b.t1);
	t->cpu_a = gw.cpu_s;
	t->cpu_b = pl.cpu_s;
	return 0;
}

int
tb_run_kiln(struct tb_tput *t, char *err, size_t errlen)
{
	return run_kiln_pump(t, false, err, errlen);
}

int
tb_run_kiln_gw(struct tb_tput *t, char *err, size_t errlen)
{
	return run_kiln_pump(t, true, err, errlen);
}

/* ---- section: kiln relay, TCP -> plane -> gateway -> TCP ---- */

struct relay_t {
	struct tb_tcp_ends *te;
	int src_lfd; /* the plane's local port, as a --route port of the simulator */
	int sink_port;
	gw_relay rp, rg;
	bool rp_on, rg_on;
};

static int
relay_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	ep *e = arg;
	struct relay_t *rt = e->app;
	uint32_t sid;
	if (peer->role != GW_ROLE_GATEWAY)
		return 0;
	/* The plane: the source is connected already (the caller saw to it). */
	int fd = accept4(rt->src_lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0 || gw_mux_open(m, GW_KIND_MCP, "bench", 5, &rt->rp, &sid) < 0) {
		if (fd >= 0)
			close(fd);
		return GW_E_INTERNAL;
	}
	tb_nodelay(fd);
	gw_relay_init(&rt->rp, m, sid, fd, false);
	rt->rp_on = true;
	e->relay = &rt->rp;
	return 0;
}

static int
relay_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t len, void *arg)
{
	ep *e = arg;
	struct relay_t *rt = e->app;
	if (kind != GW_KIND_MCP || rt->rg_on)
		return GW_E_REFUSED;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)rt->sink_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return GW_E_INTERNAL;
	tb_nodelay(fd);
	bool connecting = connect(fd, (struct sockaddr *)&a, sizeof a) < 0;
	if (connecting && errno != EINPROGRESS) {
		close(fd);
		return GW_E_REFUSED;
	}
	gw_relay_init(&rt->rg, m, id, fd, connecting);
	gw_mux_set_udata(m, id, &rt->rg);
	rt->rg_on = true;
	e->relay = &rt->rg;
	return 0;
}

static void
relay_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	if (udata)
		gw_relay_on_stream_readable(udata);
}

static void
relay_writable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	if (udata)
		gw_relay_on_stream_writable(udata);
}

static void
relay_end(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata, void *arg)
{
	gw_relay *r = udata;
	if (!r)
		return;
	r->sid = 0;
	if (code == GW_E_NONE)
		r->fd_eof = r->stream_eof = true;
	else
		r->failed = true;
}

static const struct gw_mux_ops relay_ops = {.on_hello = relay_hello,
                                            .on_open = relay_open,
                                            .on_readable = relay_readable,
                                            .on_writable = relay_writable,
                                            .on_end = relay_end};

int
tb_run_relay(struct tb_tput *t, char *err, size_t errlen)
{
	atomic_bool stop = false;
	struct tb_tcp_ends te = {.n = tb.o.bytes, .stop = &stop};
	struct relay_t rt = {.te = &te};
	int src_port;
	rt.src_lfd = tb_listen_lo(0, &src_port);
	te.sink_lfd = tb_listen_lo(0, &rt.sink_port);
	te.src_fd = src_port > 0 ? tb_connect_lo(src_port) : -1;
	if (rt.src_lfd < 0 || te.sink_lfd < 0 || te.src_fd < 0) {
		snprintf(err, errlen, "relay: loopback sockets failed");
		return -EIO;
	}
	/* The gw_relay from the plane's struct is set in the relay_hello of the
	 * plane: it must exist before the gateway's HELLO can arrive. */
	ep gw = {.app = &rt}, pl = {.app = &rt};
	pthread_t ts, tk;
	pthread_create(&ts, NULL, tb_source_main, &te);
	pthread_create(&tk, NULL, tb_sink_main, &te);
	int r = run_pair(&relay_ops, &gw, &pl, &stop, err, errlen);
	atomic_store(&stop, true);
	pthread_join(ts, NULL);
	pthread_join(tk, NULL);
	if (rt.rp_on)
		gw_relay_fini(&rt.rp);
	if (rt.rg_on)
		gw_relay_fini(&rt.rg);
	close(rt.src_lfd);
	close(te.sink_lfd);
	if (r < 0)
		return r;
	if (te.got < te.n) {
		snprintf(err, errlen, "relay: the sink got %llu of %llu bytes",
		         (unsigned long long)te.got, (unsigned long long)te.n);
		return -EIO;
	}
	tb_tput_set(t, te.got, te.t0, te.t1);
	t->cpu_a = pl.cpu_s; /* the plane sends in this direction */
	t->cpu_b = gw.cpu_s;
	t->cpu_src = te.cpu_src;
	t->cpu_snk = te.cpu_snk;
	return 0;
}

/* ---- section: head-of-line blocking ---- */

struct hol {
	bool load; /* transfers run beside the round trips */
	/* gateway: back-to-back transfers, and the echo */
	uint32_t bulk_sid;
	uint64_t bulk_sent;
	bool bulk_fin;
	uint64_t transfers;
	uint32_t echo_sid;
	/* plane: the round trips */
	uint32_t small_sid;
	bool started, waiting;
	size_t got;
	int done;
	uint64_t t_req, next_at;
	uint64_t rx, rx0, t_rx0, t_end;
	uint8_t req[MSG_MAX], resp[MSG_MAX];
	kl_hist rtt;
};

static void
hol_bulk_fill(ep *e)
{
	struct hol *h = e->app;
	while (h->bulk_sid && h->bulk_sent < tb.o.hol_bytes) {
		ssize_t w = gw_mux_write(e->m, h->bulk_sid, tb.src,
		                         KL_MIN(sizeof tb.src, tb.o.hol_bytes - h->bulk_sent));
		if (w <= 0)
			return;
		h->bulk_sent += (uint64_t)w;
	}
	if (h->bulk_sid && !h->bulk_fin) {
		gw_mux_shutdown(e->m, h->bulk_sid);
		h->bulk_fin = true;
	}
}

static void
hol_bulk_next(ep *e)
{
	struct hol *h = e->app;
	uint8_t meta[8];
	gw_put64(meta, 1000 + h->transfers);
	h->bulk_sid = 0;
	h->bulk_sent = 0;
	h->bulk_fin = false;
	if (atomic_load(e->stop) ||
	    gw_mux_open(e->m, GW_KIND_WORK, meta, sizeof meta, NULL, &h->bulk_sid) < 0)
		return;
	hol_bulk_fill(e);
}

static void
hol_send(ep *e, uint64_t now)
{
	struct hol *h = e->app;
	h->req[0] = (uint8_t)h->done;
	if (gw_mux_write(e->m, h->small_sid, h->req, tb.o.msg) != (ssize_t)tb.o.msg) {
		ep_fail(e, "round trip", "the request did not fit the stream's send queue");
		return;
	}
	h->t_req = now;
	h->waiting = true;
	h->got = 0;
}

static int
hol_hello(gw_mux *m, const struct gw_hello *peer, void *arg)
{
	ep *e = arg;
	struct hol *h = e->app;
	uint8_t meta[8];
	if (peer->role == GW_ROLE_PLANE) { /* the gateway */
		if (h->load)
			hol_bulk_next(e);
		return 0;
	}
	gw_put64(meta, 7);
	if (gw_mux_open(m, GW_KIND_WORK, meta, sizeof meta, NULL, &h->small_sid) < 0)
		return GW_E_INTERNAL;
	return 0;
}

static int
hol_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t len, void *arg)
{
	ep *e = arg;
	struct hol *h = e->app;
	if (e->name[0] == 'g')
		h->echo_sid = id; /* the plane's round-trip stream */
	else
		gw_mux_shutdown(m, id); /* a transfer: nothing goes back */
	return 0;
}

/* The plane: a reply (or part of one) arrived. */
static void
hol_reply(ep *e, uint64_t now)
{
	struct hol *h = e->app;
	for (;;) {
		ssize_t k = gw_mux_read(e->m, h->small_sid, h->resp + h->got, tb.o.msg - h->got);
		if (k <= 0)
			return;
		h->got += (size_t)k;
		if (h->got < tb.o.msg || !h->waiting)
			continue;
		h->waiting = false;
		kl_hist_record(&h->rtt, now - h->t_req);
		if (++h->done >= tb.o.round_trips) {
			h->t_end = now;
			atomic_store(e->stop, true);
			return;
		}
		if (tb.o.gap_us)
			h->next_at = now + (uint64_t)tb.o.gap_us * 1000;
		else
			hol_send(e, now);
	}
}

static void
hol_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	ep *e = arg;
	struct hol *h = e->app;
	uint64_t now = kl_now_ns(), sink = 0;
	if (e->name[0] == 'g') {
		if (id != h->echo_sid) {
			drain(e, id, &sink);
			return;
		}
		uint8_t buf[MSG_MAX];
		ssize_t k;
		while ((k = gw_mux_read(m, id, buf, sizeof buf)) > 0)
			if (gw_mux_write(m, id, buf, (size_t)k) != k)
				ep_fail(e, "echo", "the reply did not fit the stream's send queue");
		return;
	}
	if (id == h->small_sid) {
		hol_reply(e, now);
		return;
	}
	drain(e, id, &h->rx);
	if (!h->started && h->rx >= tb.o.warm_bytes) {
		h->started = true; /* the transfer runs at full speed: measure */
		h->rx0 = h->rx;
		h->t_rx0 = now;
		hol_send(e, now);
	}
}

static void
hol_writable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	ep *e = arg;
	struct hol *h = e->app;
	if (e->name[0] == 'g' && id == h->bulk_sid)
		hol_bulk_fill(e);
}

static void
hol_end(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata, void *arg)
{
	ep *e = arg;
	struct hol *h = e->app;
	if (e->name[0] == 'g' && id == h->bulk_sid) {
		if (code == GW_E_NONE)
			h->transfers++;
		hol_bulk_next(e);
	}
}

/* The plane, every round: the idle run starts at once; gaps expire. */
static void
hol_step(ep *e, uint64_t now)
{
	struct hol *h = e->app;
	if (!h->small_sid || h->waiting || atomic_load(e->stop))
		return;
	if (!h->started && !h->load) {
		h->started = true;
		h->t_rx0 = now;
		hol_send(e, now);
		return;
	}
	if (h->started && h->next_at && now >= h->next_at) {
		h->next_at = 0;
		hol_send(e, now);
	}
	e->wake_ns = h->next_at;
}

static const struct gw_mux_ops hol_ops = {.on_hello = hol_hello,
                                          .on_open = hol_open,
                                          .on_readable = hol_readable,
                                          .on_writable = hol_writable,
                                          .on_end = hol_end};

int
tb_run_hol(bool load, bool pump_gateway, struct tb_hol_result *res, char *err, size_t errlen)
{
	struct hol *h = kl_xcalloc(1, sizeof *h);
	h->load = load;
	kl_hist_init(&h->rtt);
	memset(h->req, 'q', sizeof h->req);
	ep gw = {.app = h, .pump_gateway = pump_gateway}, pl = {.app = h, .step = hol_step};
	atomic_bool stop = false;
	int r = run_pair(&hol_ops, &gw, &pl, &stop, err, errlen);
	if (r == 0 && h->done < tb.o.round_trips) {
		snprintf(err, errlen, "head-of-line: %d of %d round trips", h->done,
		         tb.o.round_trips);
		r = -EIO;
	}
	if (r == 0) {
		res->rtt = h->rtt;
		res->secs = (double)(h->t_end - h->t_rx0) / 1e9;
		res->bulk_mb_s = res->secs > 0 ? (double)(h->rx - h->rx0) / MB / res->secs : 0;
		res->transfers = h->transfers;
		res->cpu_gw = gw.cpu_s;
		res->cpu_pl = pl.cpu_s;
	}
	free(h);
	return r;
}
