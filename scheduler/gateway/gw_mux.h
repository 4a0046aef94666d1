/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tunnel multiplexer: a transport-agnostic state machine for one tunnel
 * connection (docs/tunnel.md). It owns no socket, no thread and no clock.
 * Its owner, the gateway's event loop (or a test), pumps it:
 *
 *     gw_mux_input(m, bytes read from the connection)
 *     while ((n = gw_mux_output(m, iov, 4)) > 0) { write; gw_mux_consume(m, written); }
 *     gw_mux_tick(m, now_ms)  at the latest when its previous return says
 *     gw_mux_eof(m)           when the connection reads EOF; gw_mux_free(m) after
 *
 * and streams are used through the gw_mux_open/write/read/shutdown/reset
 * calls below. Events come back as callbacks (struct gw_mux_ops), only ever
 * from inside gw_mux_input, gw_mux_output, gw_mux_tick, gw_mux_eof and
 * gw_mux_free — never from a stream call — so a stream call made inside a
 * callback is always safe, and no stream disappears under the caller's feet.
 *
 * Data in: each stream buffers what arrived until the application reads it
 * (gw_mux_read copies, gw_mux_peek/gw_mux_skip do not). Reading returns flow
 * control credit to the peer automatically. on_readable fires once per pump
 * call for every stream that received data or FIN during it: data left
 * unread raises no new event until more arrives (edge-triggered), and while
 * it stays unread it holds the peer to the stream's window.
 * Data out: gw_mux_write copies into the stream's bounded send queue
 * (gw_mux_write_reserve/commit fill it without a copy); frames leave in
 * round-robin order, one frame per stream per round, control frames first.
 *
 * Threading: none. A mux and its streams belong to one thread at a time;
 * every function here must be called from it. Pump calls must not be nested
 * (-EBUSY): do not call gw_mux_input/output/tick/eof from a callback.
 */
#ifndef GW_MUX_H
#define GW_MUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "gw_frame.h"

typedef struct gw_mux gw_mux;

struct gw_mux_ops {
	/* The peer's HELLO arrived (first thing on every connection). On the
	 * control plane this is where gw_mux_set_session() chooses the reply.
	 * Return 0, or a gw_code to refuse the connection (GOAWAY with it). */
	int (*on_hello)(gw_mux *m, const struct gw_hello *peer, void *arg);
	/* The peer opened stream id; meta is valid during the call only.
	 * Return 0 to accept (gw_mux_set_udata may attach state), or a gw_code
	 * to refuse it with RST (on_end is then not called for it). */
	int (*on_open)(gw_mux *m, uint32_t id, uint8_t kind, const uint8_t *meta, size_t meta_len,
	               void *arg);
	/* New data or FIN on id since the last pump call: gw_mux_read it. */
	void (*on_readable)(gw_mux *m, uint32_t id, void *udata, void *arg);
	/* The send queue of id, which refused a write, has room again. */
	void (*on_writable)(gw_mux *m, uint32_t id, void *udata, void *arg);
	/* Exactly once for every stream that was opened locally or accepted:
	 * code GW_E_NONE after a clean close (both FINs sent, EOF read), or the
	 * reset code (from the peer's RST, gw_mux_reset, a stream error, the
	 * peer's GOAWAY refusing it, or the connection's end) and a reason.
	 * The id is invalid once this returns. */
	void (*on_end)(gw_mux *m, uint32_t id, uint32_t code, const char *msg, void *udata,
	               void *arg);
	/* The peer sent GOAWAY: no new streams on this connection. Streams we
	 * opened above last_id end with GW_E_REFUSED (safe to retry). */
	void (*on_goaway)(gw_mux *m, uint32_t last_id, uint32_t code, const char *msg, void *arg);
};

/* Zero fields take the defaults in brackets. */
struct gw_mux_config {
	uint8_t role;              /* GW_ROLE_GATEWAY or GW_ROLE_PLANE (required) */
	uint32_t max_frame;        /* largest DATA payload we accept [16 KiB] */
	uint32_t stream_window;    /* receive window per stream [1 MiB] */
	uint32_t conn_window;      /* receive window of the connection [16 MiB] */
	uint32_t max_streams;      /* streams the peer may have open at once [1024] */
	size_t stream_sendbuf;     /* bytes queued per stream before -EAGAIN [1 MiB] */
	size_t total_sendbuf;      /* bytes queued over all streams [64 MiB] */
	size_t out_batch;          /* bytes framed per gw_mux_output refill [64 KiB] */
	size_t ctl_max;            /* queued control frames before ENHANCE_YOUR_CALM [256 KiB] */
	uint32_t ping_interval_ms; /* [15000] */
	uint32_t ping_max_missed;  /* dead after this many unanswered PINGs [3] */
	uint32_t hello_timeout_ms; /* the peer's HELLO must arrive within [10000] */
	uint64_t epoch;            /* gateway: resume data for its HELLO */
	const uint8_t *token;      /* gateway: session token (copied) */
	size_t token_len;          /* <= GW_TOKEN_MAX */
	bool resume;               /* gateway: ask the plane to resume token */
	const struct gw_mux_ops *ops;
	void *arg; /* passed to every callback */
};

struct gw_mux_stats {
	uint64_t bytes_in, bytes_out; /* connection bytes */
	uint64_t frames_in, frames_out;
	uint64_t data_in, data_out; /* DATA payload bytes */
	uint64_t pings_sent, pongs_recv;
	uint32_t rtt_ms;      /* of the last answered PING, per gw_mux_tick's clock */
	uint32_t streams;     /* open now */
	size_t sendq_bytes;   /* queued for sending, all streams */
	size_t recvq_bytes;   /* received, not read yet, all streams */
	int64_t send_window;  /* the peer's connection window for us */
	uint32_t recv_window; /* our connection window the peer may still use */
};

/* A mux in its initial state; the gateway's HELLO is queued at once (the
 * plane answers the gateway's). cfg is copied. Errors: -EINVAL (a value out
 * of range: role, max_frame outside [GW_FRAME_MIN, GW_FRAME_MAX], windows
 * outside [GW_WINDOW_MIN, GW_WINDOW_MAX], token too long). */
int gw_mux_new(const struct gw_mux_config *cfg, gw_mux **ret);
/* Ends every remaining stream (on_end with GW_E_CANCEL) and frees. Accepts
 * NULL. Not from a callback. */
void gw_mux_free(gw_mux *m);

/* ---- the pump ---- */

/* Feed bytes read from the connection, any split. 0, or the connection's
 * error: -EPROTO (the peer broke the protocol; a GOAWAY naming the reason is
 * queued), -ECONNRESET (the peer's GOAWAY carried an error), -ECONNABORTED
 * (we aborted), -ETIMEDOUT (dead peer): once failed, every later call
 * returns the same error. -EBUSY if called from a callback. */
int gw_mux_input(gw_mux *m, const void *buf, size_t len);
/* Points iov[0..] at bytes to write, framing more when little is left
 * (about cfg.out_batch per refill). Returns the number of iovecs filled, 0
 * if there is nothing to write, -EBUSY from a callback. The bytes stay put
 * until gw_mux_consume or the next gw_mux_output/gw_mux_free, and bytes
 * returned once are returned again first until consumed. */
int gw_mux_output(gw_mux *m, struct iovec *iov, int iovcnt);
/* n bytes of the last gw_mux_output were written (n <= their total). */
void gw_mux_consume(gw_mux *m, size_t n);
/* True if gw_mux_output has something to return (call it after stream
 * calls made outside the pump, e.g. from other event sources). */
bool gw_mux_want_output(const gw_mux *m);
/* Timers: sends a PING every ping_interval_ms once the HELLOs are
 * exchanged, and declares the peer dead when ping_max_missed PINGs in a row
 * went unanswered for a whole interval each (or its HELLO does not come in
 * hello_timeout_ms from the first tick). now_ms is any monotonic clock; the
 * first call starts the timers. Returns the ms until it wants the next call,
 * -ETIMEDOUT when the peer was declared dead (the connection fails), the
 * connection's error once failed, or -EBUSY from a callback. */
int64_t gw_mux_tick(gw_mux *m, uint64_t now_ms);
/* The connection read EOF (or broke). Returns 0 if that was expected (a
 * GOAWAY was exchanged and no stream is left); otherwise every stream ends
 * with GW_E_CANCEL and the connection fails with -ECONNRESET (or keeps the
 * error it already had). -EBUSY from a callback. */
int gw_mux_eof(gw_mux *m);
/* True when the connection has nothing left to do and may be closed:
 * output drained and either the connection failed or a GOAWAY was sent or
 * received and every stream has ended. */
bool gw_mux_finished(const gw_mux *m);
/* Why the connection failed ("" while it has not): a reason naming the
 * offending value, or "peer: CODE: its message". */
const char *gw_mux_error(const gw_mux *m);
/* The gw_code of the failure (GW_E_NONE while it has not failed). */
uint32_t gw_mux_error_code(const gw_mux *m);
/* The peer's HELLO, NULL until it arrived. */
const struct gw_hello *gw_mux_peer_hello(const gw_mux *m);
void gw_mux_stats(const gw_mux *m, struct gw_mux_stats *ret);

/* Plane only, inside on_hello: the session token, epoch and resumed flag
 * of the HELLO it answers with. -EINVAL (token too long, wrong role),
 * -EALREADY (our HELLO was already queued). */
int gw_mux_set_session(gw_mux *m, const uint8_t *token, size_t token_len, uint64_t epoch,
                       bool resumed);
/* Starts draining: GOAWAY naming the last stream of the peer we accepted.
 * No new streams either way; existing ones finish. A code other than
 * GW_E_NONE aborts instead: every stream ends and the connection fails
 * with -ECONNABORTED. -EALREADY if a GOAWAY was sent already. */
int gw_mux_goaway(gw_mux *m, uint32_t code, const char *msg);

/* ---- streams ---- */

/* Opens a stream of kind (GW_KIND_*) with its kind-specific header (see
 * docs/tunnel.md); OPEN is queued, data may be written at once. Before the
 * peer's HELLO arrived, nothing but our HELLO leaves. Errors: -EINVAL (bad
 * kind or meta, or CONTROL from the plane), -EEXIST (a CONTROL stream was
 * opened already), -EAGAIN (the peer's max_streams reached), -ESHUTDOWN
 * (GOAWAY sent or received), -ENOSPC (stream ids exhausted: reconnect),
 * -ENOTCONN (the connection failed). *ret_id on success. */
int gw_mux_open(gw_mux *m, uint8_t kind, const void *meta, size_t meta_len, void *udata,
                uint32_t *ret_id);
/* Queues up to len bytes; returns how many were taken (short when the
 * stream's or the total send bound is reached), -EAGAIN if none were
 * (on_writable follows), -EPIPE after gw_mux_shutdown, -ECONNRESET if the
 * stream was reset, -ENOENT for an unknown id. */
ssize_t gw_mux_write(gw_mux *m, uint32_t id, const void *buf, size_t len);
/* Zero-copy writing: *ret_ptr and *ret_len get free space at the end of the
 * send queue (at most what the bounds allow, at least 1 byte); fill some of
 * it, e.g. with read(2), and call gw_mux_write_commit(n) before any other
 * call on this mux. Errors as gw_mux_write. */
int gw_mux_write_reserve(gw_mux *m, uint32_t id, void **ret_ptr, size_t *ret_len);
/* n <= the reserved length. -EINVAL if n is larger, or errors as above. */
int gw_mux_write_commit(gw_mux *m, uint32_t id, size_t n);
/* Copies up to len received bytes: >0 bytes, 0 at EOF (the peer's FIN and
 * all data read), -EAGAIN if nothing is buffered yet, -ECONNRESET if the
 * stream was reset, -ENOENT for an unknown id. */
ssize_t gw_mux_read(gw_mux *m, uint32_t id, void *buf, size_t len);
/* Zero-copy reading: the next contiguous received bytes, *ret_ptr set when
 * >0 is returned (valid until the next call on this mux); returns as
 * gw_mux_read. Then gw_mux_skip(n <= gw_mux_readable) releases them and
 * returns their credit; -EINVAL if n is larger. */
ssize_t gw_mux_peek(gw_mux *m, uint32_t id, const void **ret_ptr);
int gw_mux_skip(gw_mux *m, uint32_t id, size_t n);
/* Bytes received and not read yet, or -ENOENT. */
ssize_t gw_mux_readable(const gw_mux *m, uint32_t id);
/* Half-close: FIN follows the queued data. -EPIPE if already done. */
int gw_mux_shutdown(gw_mux *m, uint32_t id);
/* Aborts the stream: queued and unread data are dropped, RST(code, msg) is
 * sent, on_end(code) follows at the next pump call. -ENOENT if unknown or
 * ended already. */
int gw_mux_reset(gw_mux *m, uint32_t id, uint32_t code, const char *msg);
void *gw_mux_udata(const gw_mux *m, uint32_t id);
int gw_mux_set_udata(gw_mux *m, uint32_t id, void *udata);
/* The stream's kind, or -ENOENT. */
int gw_mux_stream_kind(const gw_mux *m, uint32_t id);

#endif
