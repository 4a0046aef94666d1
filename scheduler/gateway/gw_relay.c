/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Socket <-> tunnel-stream relay (see gw_relay.h). Reads go straight into the
 * stream's send queue (gw_mux_write_reserve/commit: no intermediate buffer),
 * writes come straight from the stream's receive buffer (gw_mux_peek/skip).
 */
#include "gw_relay.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

void
gw_relay_init(gw_relay *r, gw_mux *m, uint32_t sid, int fd, bool connecting)
{
	*r = (gw_relay){.m = m, .sid = sid, .fd = fd, .connecting = connecting};
}

short
gw_relay_events(const gw_relay *r)
{
	if (r->failed || r->fd < 0)
		return 0;
	if (r->connecting)
		return POLLOUT;
	short ev = 0;
	if (!r->fd_eof && !r->stream_full)
		ev |= POLLIN;
	if (r->fd_full)
		ev |= POLLOUT;
	return ev;
}

static void
fail(gw_relay *r, int err)
{
	if (r->failed)
		return;
	r->failed = true;
	gw_mux_reset(r->m, r->sid, GW_E_APP + 1,
	             err == ECONNREFUSED ? "upstream refused the connection"
	                                 : "upstream connection broke");
}

/* Socket -> stream, until the socket or the stream's queue runs dry. */
static void
pump_up(gw_relay *r)
{
	while (!r->fd_eof && !r->failed) {
		void *p;
		size_t room;
		int e = gw_mux_write_reserve(r->m, r->sid, &p, &room);
		if (e == -EAGAIN) {
			r->stream_full = true;
			return;
		}
		if (e < 0) {
			r->failed = true; /* the stream is gone */
			return;
		}
		ssize_t n = recv(r->fd, p, room, MSG_DONTWAIT);
		if (n < 0) {
			gw_mux_write_commit(r->m, r->sid, 0);
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			fail(r, errno);
			return;
		}
		gw_mux_write_commit(r->m, r->sid, (size_t)n);
		if (n == 0) {
			r->fd_eof = true;
			gw_mux_shutdown(r->m, r->sid);
			return;
		}
		r->up += (uint64_t)n;
	}
}

/* Stream -> socket, until the stream is empty or the socket is full. */
static void
pump_down(gw_relay *r)
{
	while (!r->failed && !r->fd_full) {
		const void *p;
		ssize_t n = gw_mux_peek(r->m, r->sid, &p);
		if (n == -EAGAIN)
			return;
		if (n == 0) {
			if (!r->fd_wclosed) {
				shutdown(r->fd, SHUT_WR);
				r->fd_wclosed = true;
			}
			r->stream_eof = true;
			return;
		}
		if (n < 0) {
			r->failed = true;
			return;
		}
		ssize_t w = send(r->fd, p, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				r->fd_full = true;
				return;
			}
			if (errno == EINTR)
				continue;
			fail(r, errno);
			return;
		}
		gw_mux_skip(r->m, r->sid, (size_t)w);
		r->down += (uint64_t)w;
	}
}

void
gw_relay_on_fd(gw_relay *r, short revents)
{
	if (r->failed)
		return;
	if (r->connecting && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		int err = 0;
		socklen_t len = sizeof err;
		getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			fail(r, err);
			return;
		}
		r->connecting = false;
		pump_down(r); /* data may have waited for the connect */
	}
	if (revents & POLLOUT) {
		r->fd_full = false;
		pump_down(r);
	}
	if (revents & (POLLIN | POLLHUP | POLLERR))
		pump_up(r);
}

void
gw_relay_on_stream_readable(gw_relay *r)
{
	if (!r->connecting)
		pump_down(r);
}

void
gw_relay_on_stream_writable(gw_relay *r)
{
	r->stream_full = false;
	if (!r->connecting)
		pump_up(r);
}

bool
gw_relay_done(const gw_relay *r)
{
	return r->failed || (r->fd_eof && r->stream_eof);
}

void
gw_relay_fini(gw_relay *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}
