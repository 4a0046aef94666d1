/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_gw_frame: the egress tunnel's wire (scheduler/gateway/gw_frame.c,
 * gw_mux.c). Everything the remote control plane sends reaches the cluster
 * through gw_mux_input, so this target feeds it arbitrary bytes, cut in
 * input-chosen chunks, into a multiplexer of either role (optionally after a
 * valid HELLO so the fuzzer starts past the handshake), with an application
 * that reads, answers, resets and opens streams as the input directs, and a
 * fake clock ticking the PING timers. It also runs the pure decoders over
 * the raw bytes.
 *
 * Invariants:
 *  - gw_mux_input returns 0, -EPROTO (then a reason, a non-zero code and a
 *    GOAWAY carrying both are on the wire) or -ECONNRESET (the peer's GOAWAY
 *    said why), and a failed mux stays failed with the same error;
 *  - everything the mux writes is a valid frame sequence by our own rules;
 *  - received bytes held never exceed the windows we granted;
 *  - every stream accepted or opened ends exactly once (on_end), by free
 *    at the latest, and on_end never names an unknown stream;
 *  - the decoders never claim more bytes than they were given.
 */
#include "fuzz.h"

#include <errno.h>

#include "gw_mux.h"

#define MAXTRACK 4096

struct app {
	uint8_t role;
	uint8_t ops; /* behaviour bits from the input */
	uint32_t stream_window;
	uint8_t started[MAXTRACK / 8]; /* a bit per stream id below MAXTRACK */
	uint8_t ended[MAXTRACK / 8];
	uint32_t nstarted, nended;
};

static bool
bit(uint8_t *v, uint32_t id)
{
	return v[id / 8] & (1u << (id % 8));
}

static void
set_bit(uint8_t *v, uint32_t id)
{
	v[id / 8] |= (uint8_t)(1u << (id % 8));
}

static void
track_start(struct app *a, uint32_t id)
{
	a->nstarted++;
	if (id < MAXTRACK) {
		FZ_CHECK(!bit(a->started, id), "stream %u started twice", id);
		set_bit(a->started, id);
	}
}

static int
on_open(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t len, void *arg)
{
	struct app *a = arg;
	FZ_CHECK(gw_open_check(kind, meta, len, NULL) == 0, "accepted an invalid OPEN");
	if ((a->ops & 0x10) && kind == GW_KIND_MCP)
		return GW_E_REFUSED;
	track_start(a, id);
	if (a->ops & 0x20) {
		FZ_CHECK(gw_mux_write(m, id, "hello", 5) == 5, "write to a new stream");
		FZ_CHECK(gw_mux_shutdown(m, id) == 0, "shutdown of a new stream");
	}
	return 0;
}

static void
on_readable(gw_mux *m, uint32_t id, void *udata, void *arg)
{
	struct app *a = arg;
	uint8_t buf[4096];
	FZ_CHECK(gw_mux_readable(m, id) <= (ssize_t)a->stream_window, "stream %u holds %zd > %u",
	         id, gw_mux_readable(m, id), a->stream_window);
	if (a->ops & 0x04)
		return; /* a slow reader: data stays, the window holds the peer */
	for (;;) {
		ssize_t n = gw_mux_read(m, id, buf, sizeof buf);
		if (n == 0 && (a->ops & 0x08)) {
			int r = gw_mux_shutdown(m, id);
			FZ_CHECK(r == 0 || r == -EPIPE, "shutdown after EOF: %d", r);
		}
		if (n <= 0)
			break;
		if ((a->ops & 0x40) && buf[0] == 'R') {
			FZ_CHECK(gw_mux_reset(m, id, GW_E_CANCEL, "fuzz") == 0, "reset");
			break;
		}
	}
}

static void
on_end(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata, void *arg)
{
	struct app *a = arg;
	FZ_CHECK(msg, "on_end without a message");
	a->nended++;
	if (id < MAXTRACK) {
		FZ_CHECK(bit(a->started, id), "on_end for stream %u that never started", id);
		FZ_CHECK(!bit(a->ended, id), "on_end twice for stream %u", id);
		set_bit(a->ended, id);
	}
}

static const struct gw_mux_ops ops = {
        .on_open = on_open,
        .on_readable = on_readable,
        .on_end = on_end,
};

/* Drain the output and check it is a valid frame sequence. */
static void
check_output(gw_mux *m, bool want_goaway)
{
	static uint8_t out[1 << 20];
	size_t len = 0;
	struct iovec iov[2];
	int n;
	while ((n = gw_mux_output(m, iov, 2)) > 0) {
		FZ_CHECK(n == 1 && iov[0].iov_len, "output: %d iovecs", n);
		size_t k = iov[0].iov_len < sizeof out - len ? iov[0].iov_len : sizeof out - len;
		memcpy(out + len, iov[0].iov_base, k);
		len += k;
		gw_mux_consume(m, iov[0].iov_len);
	}
	FZ_CHECK(n == 0, "output returned %d", n);
	bool goaway = false;
	for (size_t off = 0; off < len;) {
		struct gw_frame f;
		struct gw_err e;
		int k = gw_frame_decode(out + off, len - off, GW_FRAME_MAX, &f, &e);
		if (k == 0 && len == sizeof out)
			break; /* cut by our buffer */
		FZ_CHECK(k > 0, "we wrote an invalid frame at %zu: %s", off, k < 0 ? e.msg : "cut");
		FZ_CHECK(gw_fhdr_check(&f.h, GW_FRAME_MAX, &e) == 0, "we wrote %s", e.msg);
		if (f.h.type == GW_T_GOAWAY) {
			uint32_t last, code;
			char msg[GW_MSG_MAX + 1];
			FZ_CHECK(gw_goaway_decode(f.payload, f.h.len, &last, &code, msg, sizeof msg,
			                          &e) == 0,
			         "our GOAWAY: %s", e.msg);
			if (want_goaway) {
				FZ_CHECK(code == gw_mux_error_code(m),
				         "GOAWAY code %u, error code %u", code,
				         gw_mux_error_code(m));
				FZ_CHECK(*msg, "GOAWAY without a reason");
			}
			goaway = true;
		}
		off += (size_t)k;
	}
	FZ_CHECK(!want_goaway || goaway, "failed without a GOAWAY: %s", gw_mux_error(m));
}

/* The pure decoders over raw bytes: lengths stay inside the input. */
static void
decoders(const uint8_t *p, size_t n)
{
	struct gw_frame f;
	struct gw_err e;
	for (size_t off = 0; off < n;) {
		int k = gw_frame_decode(p + off, n - off, GW_FRAME_DEFAULT, &f, &e);
		if (k <= 0)
			break;
		FZ_CHECK((size_t)k <= n - off && (size_t)k == GW_HDR_LEN + f.h.len, "frame size");
		struct gw_hello h;
		struct gw_open o;
		char msg[64];
		uint32_t a, b;
		switch (f.h.type) {
		case GW_T_HELLO:
			if (gw_hello_decode(f.payload, f.h.len, &h, &e) == 0)
				FZ_CHECK(h.token_len <= GW_TOKEN_MAX &&
				                 h.max_frame >= GW_FRAME_MIN &&
				                 h.max_frame <= GW_FRAME_MAX,
				         "hello values");
			break;
		case GW_T_OPEN:
			if (gw_open_decode(f.payload, f.h.len, &o, &e) == 0)
				FZ_CHECK(o.meta + o.meta_len == f.payload + f.h.len, "open meta");
			break;
		case GW_T_RST:
			if (gw_rst_decode(f.payload, f.h.len, &a, msg, sizeof msg, &e) == 0)
				FZ_CHECK(strlen(msg) < sizeof msg, "rst text");
			break;
		case GW_T_GOAWAY:
			if (gw_goaway_decode(f.payload, f.h.len, &a, &b, msg, sizeof msg, &e) == 0)
				FZ_CHECK(a <= GW_SID_MAX, "goaway last id");
			break;
		case GW_T_WINDOW:
			if (gw_window_decode(f.payload, f.h.len, &a, &e) == 0)
				FZ_CHECK(a >= 1 && a <= GW_WINDOW_MAX, "window increment");
			break;
		default:
			break;
		}
		off += (size_t)k;
	}
	struct gw_ctl_msg m;
	int k = gw_ctl_parse(p, n, 0, &m);
	FZ_CHECK(k <= 0 || ((size_t)k <= n && (size_t)k == GW_CTL_HDR_LEN + m.len), "ctl size");
	FZ_CHECK(k >= 0 || k == -EMSGSIZE || k == -EBADMSG, "ctl error %d", k);
}

static void
feed_hello(gw_mux *m, uint8_t peer_role)
{
	uint8_t f[GW_HDR_LEN + GW_HELLO_MAX];
	struct gw_hello h;
	gw_hello_init(&h, peer_role);
	int n = gw_hello_encode(f, sizeof f, &h);
	FZ_CHECK(n > 0 && gw_mux_input(m, f, (size_t)n) == 0, "valid HELLO refused");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_reader in = {data, size};
	uint8_t mode = fz_u8(&in);
	uint8_t seed = fz_u8(&in);
	struct app a = {
	        .role = (mode & 1) ? GW_ROLE_GATEWAY : GW_ROLE_PLANE,
	        .ops = mode,
	        .stream_window = (mode & 0x80) ? 4096 : GW_STREAM_WINDOW_DEFAULT,
	};
	struct gw_mux_config c = {
	        .role = a.role,
	        .stream_window = a.stream_window,
	        .conn_window = (mode & 0x80) ? 8192 : 0,
	        .max_streams = (mode & 0x80) ? 4 : 0,
	        .ctl_max = (mode & 0x80) ? 2048 : 0,
	        .ping_interval_ms = 1000,
	        .ops = &ops,
	        .arg = &a,
	};
	gw_mux *m;
	FZ_CHECK(gw_mux_new(&c, &m) == 0, "gw_mux_new");
	check_output(m, false);
	if (mode & 2)
		feed_hello(m, a.role == GW_ROLE_PLANE ? GW_ROLE_GATEWAY : GW_ROLE_PLANE);
	if ((mode & 0x22) == 0x22) {
		uint32_t id;
		if (gw_mux_open(m, GW_KIND_MCP, "fuzz", 4, NULL, &id) == 0) {
			track_start(&a, id);
			FZ_CHECK(gw_mux_write(m, id, "GET", 3) == 3, "write");
		}
	}
	decoders(in.p, in.n);
	uint64_t now = 0, state = seed | 0x100u;
	int err = 0;
	while (in.n) {
		state = state * 6364136223846793005ull + 1442695040888963407ull;
		size_t k = 1 + (size_t)(state >> 33) % (seed & 0x80 ? 4096 : 64);
		if (k > in.n)
			k = in.n;
		int r = gw_mux_input(m, in.p, k);
		in.p += k;
		in.n -= k;
		FZ_CHECK(r == 0 || r == -EPROTO || r == -ECONNRESET || (err && r == err),
		         "input returned %d", r);
		FZ_CHECK(!err || r == err, "error changed from %d to %d", err, r);
		struct gw_mux_stats st;
		gw_mux_stats(m, &st);
		FZ_CHECK(st.recvq_bytes <= (mode & 0x80 ? 8192u : GW_CONN_WINDOW_DEFAULT),
		         "holding %zu received bytes", st.recvq_bytes);
		if (r < 0 && !err) {
			err = r;
			FZ_CHECK(*gw_mux_error(m) && gw_mux_error_code(m) != GW_E_NONE,
			         "failed without a reason");
			if (r == -ECONNRESET)
				FZ_CHECK(!strncmp(gw_mux_error(m), "peer: ", 6), "%s",
				         gw_mux_error(m));
			check_output(m, r == -EPROTO);
			FZ_CHECK(gw_mux_finished(m), "failed but not finished");
		} else {
			check_output(m, false);
		}
		now += 400;
		int64_t t = gw_mux_tick(m, now);
		FZ_CHECK(t > 0 || t == -ETIMEDOUT || t == err, "tick returned %lld", (long long)t);
		if (t == -ETIMEDOUT && !err)
			err = -ETIMEDOUT;
	}
	gw_mux_free(m);
	FZ_CHECK(a.nended == a.nstarted, "%u streams started, %u ended", a.nstarted, a.nended);
	return 0;
}
