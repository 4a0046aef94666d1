/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The multiplexer's internal structures, shared by gw_mux.c (the connection:
 * frame parsing, flow control, the frame scheduler, timers, GOAWAY and
 * failure) and gw_mux_stream.c (the stream calls of gw_mux.h). Nothing here
 * is API: the gwm_ functions are internal to those two files, and follow the
 * threading rule of gw_mux.h (one thread owns a mux).
 */
#ifndef GW_MUX_IMPL_H
#define GW_MUX_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_mux.h"
#include "kl_list.h"

/* Send and receive queues are lists of fixed chunks; drained chunks are kept
 * on a short free list, so a busy stream does not malloc per frame. */
#define GWM_CHUNK_CAP  16384u
#define GWM_FREE_MAX   32u
#define GWM_PONG_MAX   8u /* PONGs queued at once before a PING flood is declared */
#define GWM_IBUF_MAX   GW_HELLO_MAX
#define GWM_REFILL_MAX 4096u /* refill the output batch when at most this much is left */

struct gwm_chunk {
	struct gwm_chunk *next;
	uint32_t off, len; /* unread bytes are data[off, len) */
	uint8_t data[GWM_CHUNK_CAP];
};

struct gwm_queue {
	struct gwm_chunk *head, *tail;
	size_t bytes;
};

struct gwm_stream {
	uint32_t id;
	uint8_t kind;
	bool local;      /* we opened it */
	bool fin_queued; /* gw_mux_shutdown called */
	bool fin_sent;   /* our FIN is framed */
	bool fin_recvd;
	bool eof_read; /* the application saw EOF */
	bool ended;    /* waiting for on_end, then freed */
	uint32_t end_code;
	char *end_msg;
	int64_t swin;     /* what we may still send (the peer's window) */
	uint32_t rwin;    /* what the peer may still send us */
	uint32_t rcredit; /* read by the application, not yet returned */
	struct gwm_queue sq, rq;
	kl_list active;   /* in m->active: has something to frame */
	kl_list wu;       /* in m->wu: owes the peer a WINDOW_UPDATE */
	kl_list readable; /* in m->readable: on_readable due */
	kl_list blocked;  /* in m->blocked: a write was refused */
	kl_list writable; /* in m->writable: on_writable due */
	kl_list ended_l;  /* in m->ended: on_end due */
	struct gwm_stream *hnext;
	void *udata;
};

/* A pre-encoded control frame waiting for output. */
struct gwm_ctl_item {
	kl_list link;
	uint32_t len;
	uint8_t type;
	uint8_t buf[];
};

enum gwm_in_state { GWM_IN_HDR, GWM_IN_PAY, GWM_IN_DATA, GWM_IN_SKIP };
enum gwm_sid_class { GWM_SID_LIVE, GWM_SID_CLOSED, GWM_SID_IDLE };

struct gw_mux {
	struct gw_mux_config cfg;
	struct gw_hello hello; /* ours */
	struct gw_hello peer;
	bool peer_ok;   /* the peer's HELLO arrived */
	bool hello_out; /* ours is queued */
	bool in_pump;

	/* streams */
	struct gwm_stream **tab;
	size_t tabmask, ntab;
	uint32_t next_sid, last_peer;
	uint32_t nlocal, npeer;
	bool control_open;

	/* flow control: connection level */
	int64_t swin;
	uint32_t rwin, rcredit;
	size_t sq_total, rq_total;

	kl_list active, wu, readable, blocked, writable, ended, ctl;
	size_t ctl_bytes;
	unsigned npong;

	/* output batch */
	uint8_t *ob;
	size_t ob_off, ob_len, ob_cap;

	/* input parser */
	enum gwm_in_state in;
	uint8_t ih[GW_HDR_LEN];
	size_t ih_have;
	struct gw_fhdr cur;
	uint32_t cur_left;
	struct gwm_stream *cur_s;
	uint8_t ibuf[GWM_IBUF_MAX];
	size_t ibuf_have;

	/* timers */
	bool ticked;
	uint64_t now, hello_deadline, next_ping, ping_sent_at;
	uint64_t ping_seq, pong_seq;
	bool ping_out;
	uint32_t missed;

	/* GOAWAY and failure */
	bool goaway_sent, goaway_recvd;
	uint32_t goaway_last_recvd;
	int err;
	uint32_t err_code;
	char errmsg[256];

	struct gwm_chunk *freel;
	unsigned nfree;
	struct gw_mux_stats st;
};

/* Chunks (from the free list when possible) and queues of them. */
struct gwm_chunk *gwm_chunk_get(gw_mux *m);
void gwm_q_append(gw_mux *m, struct gwm_queue *q, const uint8_t *src, size_t n);
/* Copy n <= q->bytes bytes out (dst NULL: just drop them). */
void gwm_q_take(gw_mux *m, struct gwm_queue *q, uint8_t *dst, size_t n);

struct gwm_stream *gwm_tab_get(const gw_mux *m, uint32_t id);
struct gwm_stream *gwm_stream_new(gw_mux *m, uint32_t id, uint8_t kind, bool local);
/* Queue an encoded control frame (len < 0: an encoder's error, returned). */
int gwm_ctl_push(gw_mux *m, const uint8_t *frame, int len, bool head, bool provoked);
/* Put s in or out of the round robin after its queue or windows changed. */
void gwm_update_active(gw_mux *m, struct gwm_stream *s);
/* n received bytes of s (NULL: of no live stream) were read or dropped. */
void gwm_consumed(gw_mux *m, struct gwm_stream *s, size_t n);
/* s is over: on_end(code, msg) at the next pump call, RST if send_rst. */
void gwm_end_stream(gw_mux *m, struct gwm_stream *s, uint32_t code, const char *msg, bool send_rst);
/* Ends s cleanly once both FINs are through and its EOF was read. */
void gwm_maybe_done(gw_mux *m, struct gwm_stream *s);
/* Bytes s may still queue under the stream and total send bounds. */
size_t gwm_room(const gw_mux *m, const struct gwm_stream *s);

#endif
