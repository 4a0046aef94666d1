/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A byte relay between a TCP socket and one tunnel stream, for a poll()
 * loop that owns both: MCP streams on the gateway (stream -> private MCP
 * server) and on the control-plane simulator (local HTTP client -> stream).
 * Bytes pass through unchanged and unbuffered beyond what the two sides hold
 * (an SSE response is forwarded as it arrives). Back-pressure both ways: the
 * socket is not read while the stream's send queue is full, and the stream
 * is not read while the socket cannot take more (its data then holds the
 * peer to the stream's flow-control window). Half-closes are forwarded
 * (stream FIN -> shutdown(SHUT_WR); socket EOF -> stream FIN).
 *
 * Threading: the thread that owns the mux.
 */
#ifndef GW_RELAY_H
#define GW_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "gw_mux.h"

typedef struct gw_relay {
	gw_mux *m;
	uint32_t sid;
	int fd;            /* non-blocking, connected (or connecting) */
	bool connecting;   /* waiting for a non-blocking connect to finish */
	bool fd_eof;       /* the socket read EOF (FIN forwarded to the stream) */
	bool fd_wclosed;   /* we shut the socket's write side (stream FIN) */
	bool stream_eof;   /* the stream's FIN was read */
	bool stream_full;  /* the stream refused a write: wait for on_writable */
	bool fd_full;      /* the socket refused a write: wait for POLLOUT */
	bool failed;       /* the socket broke: the stream was reset */
	uint64_t up, down; /* bytes socket->stream, stream->socket */
} gw_relay;

/* Start relaying between fd (owned by the relay from now on) and stream sid. */
void gw_relay_init(gw_relay *r, gw_mux *m, uint32_t sid, int fd, bool connecting);
/* The poll events to wait for on r->fd (0: none for now). */
short gw_relay_events(const gw_relay *r);
/* The socket is ready (revents from poll). */
void gw_relay_on_fd(gw_relay *r, short revents);
/* The mux said: the stream has data or FIN (on_readable). */
void gw_relay_on_stream_readable(gw_relay *r);
/* The mux said: the stream's send queue has room again (on_writable). */
void gw_relay_on_stream_writable(gw_relay *r);
/* True when both directions are finished (or it failed): free it. */
bool gw_relay_done(const gw_relay *r);
/* Close the socket (the stream is the caller's: it ended or is reset). */
void gw_relay_fini(gw_relay *r);

#endif
