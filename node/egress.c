/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sandbox egress, node side: the HTTP proxy every sandbox sees on
 * 127.0.0.1:3128 and /run/kiln/proxy.sock (docs/egress-node.md). Sockets
 * work across namespaces once created, so the listeners come from the
 * sandbox's init and the whole proxy runs here, on the ring, with no helper
 * process in the sandbox. A connection goes through
 *
 *   HEAD     read one request head (16 KiB, 10 s): CONNECT host:port, or an
 *            absolute-form plain HTTP request (on the unix socket also an
 *            origin-form one with a Host header); 400 / 408 / 431 otherwise
 *   DIAL     TCP connect to the gateway, send it CONNECT host:port with the
 *            node's token, the tenant and the session
 *   GW_HEAD  read the gateway's answer (8 KiB, 30 s together with DIAL):
 *            2xx opens the tunnel, anything else is passed to the client
 *   RELAY    two directions, each one op at a time through a 64 KiB buffer:
 *            RECV from one side, SEND all of it to the other; EOF on one side
 *            becomes shutdown(SHUT_WR) on the other; idle timeout
 *   REPLY    an error response (ours or the gateway's) is sent, then
 *   LINGER   our write side is shut and the client's leftovers drained (2 s)
 *            so the response is not lost to a reset
 *
 * The HTTP parsing (request heads, authorities, the gateway's answer) is in
 * egress_parse.c, pure, so that fuzz_http runs it as it runs here.
 *
 * For plain HTTP the tunnel is the same CONNECT (port 80 by default): the
 * client's request, rewritten to origin form with "Connection: close", is
 * the tunnel's first bytes, so the gateway applies one policy path to both.
 *
 * Bounds: a connection holds at most 16 KiB (head) + 8 KiB (gateway head)
 * before the tunnel and 2 x 64 KiB in it; a session has at most
 * egress_max_per_session connections (more are answered 429), the node
 * egress_max_conns (503); refusals themselves are capped (beyond that a
 * connection is closed unanswered).
 */
#include "egress.h"
#include "egress_parse.h"

#include "node_impl.h"

#include "kl_clock.h"
#include "kl_log.h"
#include "kl_util.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>

#define EG_HEAD_MAX        (16u << 10) /* a client's request head */
#define EG_GW_MAX          (8u << 10)  /* the gateway's answer, head and refusal body */
#define EG_BUF             (64u << 10) /* one relay direction */
#define EG_HEAD_MS         10000       /* accept to complete request head */
#define EG_GW_MS           30000       /* gateway connect + answer (it dials upstream) */
#define EG_REPLY_MS        10000       /* sending an error response */
#define EG_LINGER_MS       2000        /* draining after an error response */
#define EG_DEF_PER_SESSION 64
#define EG_DEF_CONNS       1024
#define EG_DEF_IDLE_MS     300000
#define EG_MAX_REFUSING    256 /* connections being answered 429/503 at once, per node */

#define EG_STR2(x) #x
#define EG_STR(x)  EG_STR2(x)
#define EG_URL     "http://127.0.0.1:" EG_STR(KI_PROXY_PORT)
#define EG_NOPROXY "localhost,127.0.0.1,::1"

static const char *const proxy_env[] = {
        "HTTP_PROXY=" EG_URL,
        "HTTPS_PROXY=" EG_URL,
        "http_proxy=" EG_URL,
        "https_proxy=" EG_URL,
        "NO_PROXY=" EG_NOPROXY,
        "no_proxy=" EG_NOPROXY,
        NULL,
};

struct node_egress {
	node *n;
	bool enabled;
	struct sockaddr_storage gw;
	socklen_t gwlen;
	char gw_text[300];
	char *token; /* NULL: none configured (the gateway will refuse) */
	uint32_t max_conns, max_per_session, idle_ms;
	uint32_t nconns, nrefusing;
	kl_list conns; /* every live connection, for the tick */
	uint64_t accepted, tunnels, refused, bytes_up, bytes_down;
};

struct egress_sess {
	node_ref ref; /* the session's, and one per in-flight accept and connection */
	node_egress *eg;
	char sid[72], tenant[72];
	int lfd[2];     /* TCP, unix listeners (owned) */
	node_op acc[2]; /* accepts on them */
	bool single[2]; /* the kernel lacks multishot accept */
	bool rearm[2];  /* re-arm from the tick (after an accept error) */
	kl_list conns;  /* its connections */
	uint32_t nconns, nrefusing;
	bool stopped;
};

enum ec_state { EC_HEAD, EC_DIAL, EC_GW_SEND, EC_GW_HEAD, EC_RELAY, EC_REPLY, EC_LINGER, EC_DONE };

typedef struct ec_dir {
	node_op op;
	int from, to;
	uint8_t *buf; /* EG_BUF */
	uint32_t len, off;
	bool eof;
} ec_dir;

typedef struct egress_conn {
	node_ref ref; /* the lists' (dropped on close), and one per in-flight op */
	node_egress *eg;
	egress_sess *es;
	kl_list slink, nlink;
	int cfd, gfd;
	bool via_unix, refusing, connect, timed_out;
	enum ec_state state;
	uint64_t t0_ns, deadline_ns, last_ns;
	node_op op;    /* the one op of the phases before the tunnel and after a refusal */
	uint8_t *head; /* client's request head (EG_HEAD_MAX), then gone */
	uint32_t hlen;
	uint8_t *gwb; /* the gateway's answer (EG_GW_MAX) */
	uint32_t gwlen, gw_hend, gw_need;
	char *out; /* request to the gateway, then a response to the client */
	uint32_t outlen, outoff;
	uint8_t *pre; /* the client's bytes the tunnel starts with */
	uint32_t prelen;
	char host[EGRESS_HOST_MAX];
	uint16_t port;
	int status;      /* what the client got: 200 for a tunnel, else the refusal */
	const char *end; /* why it ended (static) */
	uint64_t up, down;
	ec_dir dir[2]; /* [0] client -> gateway, [1] gateway -> client */
} egress_conn;

static char drain_buf[4096]; /* discarded bytes of lingering connections */

/* ---- connections ---- */

static const char *
reason_phrase(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 408:
		return "Request Timeout";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "Error";
	}
}

static void
conn_release(node_ref *r)
{
	egress_conn *c = kl_container_of(r, egress_conn, ref);
	kl_close(&c->cfd);
	kl_close(&c->gfd);
	free(c->head);
	free(c->gwb);
	free(c->out);
	free(c->pre);
	free(c->dir[0].buf);
	free(c->dir[1].buf);
	node_ref_put(&c->es->ref);
	free(c);
}

static void
conn_close(egress_conn *c, const char *why)
{
	if (c->state == EC_DONE)
		return;
	node_egress *eg = c->eg;
	egress_sess *es = c->es;
	c->state = EC_DONE;
	if (!c->end)
		c->end = why;
	uint64_t ms = (kl_now_ns() - c->t0_ns) / 1000000;
	KL_LOG(KL_DEBUG, NODE_COMPONENT,
	       "egress session=%s tenant=%s target=%s:%u via=%s mode=%s status=%d up=%llu "
	       "down=%llu ms=%llu end=\"%s\"",
	       es->sid, es->tenant, c->host[0] ? c->host : "-", (unsigned)c->port,
	       c->via_unix ? "unix" : "tcp", c->connect ? "connect" : "http", c->status,
	       (unsigned long long)c->up, (unsigned long long)c->down, (unsigned long long)ms,
	       c->end);
	eg->bytes_up += c->up;
	eg->bytes_down += c->down;
	if (c->status != 200)
		eg->refused++;
	kl_list_del(&c->slink);
	kl_list_del(&c->nlink);
	if (c->refusing) {
		eg->nrefusing--;
		es->nrefusing--;
	} else {
		eg->nconns--;
		es->nconns--;
	}
	/* Shutting both sockets down wakes any op on them at once (and the
	 * peers see EOF now, not when the cancellations land). */
	if (c->cfd >= 0)
		shutdown(c->cfd, SHUT_RDWR);
	if (c->gfd >= 0)
		shutdown(c->gfd, SHUT_RDWR);
	node_loop *l = &eg->n->loop;
	loop_cancel(l, &c->op);
	loop_cancel(l, &c->dir[0].op);
	loop_cancel(l, &c->dir[1].op);
	node_ref_put(&c->ref);
}

/* ---- responses to the client, then a lingering close ---- */

static void reply_send(egress_conn *c);

static void drain(egress_conn *c);

static void
drain_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op, egress_conn, op);
	if (c->state != EC_LINGER)
		return;
	if (res <= 0)
		conn_close(c, "closed");
	else
		drain(c);
}

static void
drain(egress_conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	io_uring_prep_recv(sqe, c->cfd, drain_buf, sizeof drain_buf, 0);
	loop_bind(&c->eg->n->loop, sqe, &c->op, drain_done, &c->ref);
}

static void
reply_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op, egress_conn, op);
	if (c->state != EC_REPLY)
		return;
	if (res <= 0) {
		conn_close(c, "client gone before the response");
		return;
	}
	c->outoff += (uint32_t)res;
	if (c->outoff < c->outlen) {
		reply_send(c);
		return;
	}
	shutdown(c->cfd, SHUT_WR);
	c->state = EC_LINGER;
	c->deadline_ns = kl_now_ns() + (uint64_t)EG_LINGER_MS * 1000000;
	drain(c);
}

static void
reply_send(egress_conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	io_uring_prep_send(sqe, c->cfd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
	loop_bind(&c->eg->n->loop, sqe, &c->op, reply_done, &c->ref);
}

/* Send buf (heap, taken) to the client and close. No op may be in flight. */
static void
reply_raw(egress_conn *c, int status, char *buf, size_t len)
{
	free(c->head);
	free(c->gwb);
	free(c->pre);
	free(c->out);
	c->head = NULL;
	c->gwb = NULL;
	c->pre = NULL;
	if (c->gfd >= 0) {
		shutdown(c->gfd, SHUT_RDWR);
		kl_close(&c->gfd);
	}
	c->status = status;
	c->out = buf;
	c->outlen = (uint32_t)len;
	c->outoff = 0;
	c->state = EC_REPLY;
	c->deadline_ns = kl_now_ns() + (uint64_t)EG_REPLY_MS * 1000000;
	reply_send(c);
}

static void reply(egress_conn *c, int status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* A response of our own: status, and a one-line text body that says why. */
static void
reply(egress_conn *c, int status, const char *fmt, ...)
{
	char body[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	char *r = kl_xasprintf("HTTP/1.1 %d %s\r\n"
	                       "Content-Type: text/plain; charset=utf-8\r\n"
	                       "Content-Length: %zu\r\n"
	                       "Connection: close\r\n"
	                       "%s"
	                       "X-Kiln-Egress: node\r\n"
	                       "\r\n"
	                       "%s\n",
	                       status, reason_phrase(status), strlen(body) + 1,
	                       status == 429 || status == 503 ? "Retry-After: 1\r\n" : "", body);
	if (!c->end)
		c->end = reason_phrase(status);
	reply_raw(c, status, r, strlen(r));
}

/* ---- the tunnel ---- */

static void dir_recv(egress_conn *c, ec_dir *d);

static void
dir_send_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op->owner, egress_conn, ref);
	ec_dir *d = kl_container_of(op, ec_dir, op);
	if (c->state != EC_RELAY)
		return;
	if (res <= 0) {
		conn_close(c, d == &c->dir[0] ? "gateway write failed" : "client write failed");
		return;
	}
	d->off += (uint32_t)res;
	c->last_ns = kl_now_ns();
	if (d->off < d->len) {
		struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
		io_uring_prep_send(sqe, d->to, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
		loop_bind(&c->eg->n->loop, sqe, &d->op, dir_send_done, &c->ref);
		return;
	}
	dir_recv(c, d);
}

static void
dir_send(egress_conn *c, ec_dir *d)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	d->off = 0;
	io_uring_prep_send(sqe, d->to, d->buf, d->len, MSG_NOSIGNAL);
	loop_bind(&c->eg->n->loop, sqe, &d->op, dir_send_done, &c->ref);
}

static void
dir_recv_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op->owner, egress_conn, ref);
	ec_dir *d = kl_container_of(op, ec_dir, op);
	if (c->state != EC_RELAY)
		return;
	if (res < 0) {
		conn_close(c, d == &c->dir[0] ? "client read failed" : "gateway read failed");
		return;
	}
	if (res == 0) {
		/* Half-close: pass the EOF on, keep the other direction going. */
		d->eof = true;
		shutdown(d->to, SHUT_WR);
		if (c->dir[0].eof && c->dir[1].eof)
			conn_close(c, "closed");
		return;
	}
	d->len = (uint32_t)res;
	if (d == &c->dir[0])
		c->up += (uint64_t)res;
	else
		c->down += (uint64_t)res;
	c->last_ns = kl_now_ns();
	dir_send(c, d);
}

static void
dir_recv(egress_conn *c, ec_dir *d)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	io_uring_prep_recv(sqe, d->from, d->buf, EG_BUF, 0);
	loop_bind(&c->eg->n->loop, sqe, &d->op, dir_recv_done, &c->ref);
}

static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";

/* What a tunnel starts with fits its buffers: the rewritten request (each
 * line may gain a CR, + 600) and the client's early bytes, or our 200 and
 * the gateway's early bytes. */
_Static_assert(2 * EG_HEAD_MAX + 600 <= EG_BUF, "request preamble fits a relay buffer");
_Static_assert(EG_GW_MAX + sizeof established <= EG_BUF, "gateway preamble fits");

/* The gateway said 2xx: each direction starts by sending what is already
 * here (the client's request or early bytes; our 200 and any early bytes
 * of the gateway's), then relays. */
static void
relay_start(egress_conn *c)
{
	ec_dir *up = &c->dir[0], *down = &c->dir[1];
	uint32_t extra = c->gwlen - c->gw_hend;
	up->from = down->to = c->cfd;
	up->to = down->from = c->gfd;
	up->buf = kl_xmalloc(EG_BUF);
	down->buf = kl_xmalloc(EG_BUF);
	memcpy(up->buf, c->pre, c->prelen);
	up->len = c->prelen;
	if (c->connect) {
		memcpy(down->buf, established, sizeof established - 1);
		down->len = sizeof established - 1;
	}
	memcpy(down->buf + down->len, c->gwb + c->gw_hend, extra);
	down->len += extra;
	c->up += c->prelen;
	c->down += extra;
	free(c->pre);
	free(c->gwb);
	c->pre = NULL;
	c->gwb = NULL;
	c->status = 200;
	c->state = EC_RELAY;
	c->last_ns = kl_now_ns();
	c->eg->tunnels++;
	for (int i = 0; i < 2; i++) {
		if (c->dir[i].len)
			dir_send(c, &c->dir[i]);
		else
			dir_recv(c, &c->dir[i]);
	}
}

/* ---- the gateway ---- */

static bool
gw_failed(egress_conn *c, int res, const char *what)
{
	if (c->timed_out) {
		reply(c, 504, "the egress gateway did not answer within %d s", EG_GW_MS / 1000);
		return true;
	}
	if (res < 0) {
		reply(c, 502, "egress gateway %s: %s: %s", c->eg->gw_text, what, strerror(-res));
		return true;
	}
	return false;
}

/* The gateway refused (or failed): pass its status, reason, headers and
 * (short) body to the client, framed by us. */
static void
gw_refusal(egress_conn *c, int status)
{
	size_t n;
	char *r = egress_build_refusal(c->gwb, c->gwlen, c->gw_hend, c->gw_need, &n);
	c->end = "refused by the gateway";
	reply_raw(c, status, r, n);
}

/* Parse the gateway's head: its status, and how much body a refusal has. */
static int
gw_parse(egress_conn *c)
{
	return egress_parse_answer(c->gwb, c->gw_hend, EG_GW_MAX, &c->gw_need);
}

static void gw_recv(egress_conn *c);

static void
gw_recv_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op, egress_conn, op);
	if (c->state != EC_GW_HEAD || gw_failed(c, res, "reading its answer"))
		return;
	if (res == 0 && !c->gw_hend) {
		reply(c, 502, "egress gateway %s closed the connection without an answer",
		      c->eg->gw_text);
		return;
	}
	uint32_t before = c->gwlen;
	c->gwlen += (uint32_t)res;
	if (!c->gw_hend) {
		c->gw_hend = egress_head_end(c->gwb, c->gwlen, before);
		if (!c->gw_hend) {
			if (c->gwlen == EG_GW_MAX)
				reply(c, 502, "egress gateway %s: answer head too large",
				      c->eg->gw_text);
			else
				gw_recv(c);
			return;
		}
		int status = gw_parse(c);
		if (status < 0) {
			reply(c, 502, "egress gateway %s: malformed answer", c->eg->gw_text);
			return;
		}
		c->status = status;
		if (status >= 200 && status < 300) {
			relay_start(c);
			return;
		}
	}
	/* A refusal: wait for its body (Content-Length, or until EOF), bounded. */
	if (res == 0 || c->gwlen == EG_GW_MAX || c->gwlen - c->gw_hend >= c->gw_need)
		gw_refusal(c, c->status);
	else
		gw_recv(c);
}

static void
gw_recv(egress_conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	io_uring_prep_recv(sqe, c->gfd, c->gwb + c->gwlen, EG_GW_MAX - c->gwlen, 0);
	loop_bind(&c->eg->n->loop, sqe, &c->op, gw_recv_done, &c->ref);
}

static void gw_send(egress_conn *c);

static void
gw_send_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op, egress_conn, op);
	if (c->state != EC_GW_SEND || gw_failed(c, res, "sending the request"))
		return;
	c->outoff += (uint32_t)res;
	if (c->outoff < c->outlen) {
		gw_send(c);
		return;
	}
	free(c->out);
	c->out = NULL;
	c->gwb = kl_xmalloc(EG_GW_MAX);
	c->state = EC_GW_HEAD;
	gw_recv(c);
}

static void
gw_send(egress_conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	io_uring_prep_send(sqe, c->gfd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
	loop_bind(&c->eg->n->loop, sqe, &c->op, gw_send_done, &c->ref);
}

static void
dial_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op, egress_conn, op);
	if (c->state != EC_DIAL || gw_failed(c, res, "connect"))
		return;
	c->state = EC_GW_SEND;
	gw_send(c);
}

static void
dial(egress_conn *c)
{
	node_egress *eg = c->eg;
	c->gfd = socket(eg->gw.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->gfd < 0) {
		reply(c, 502, "egress: socket: %s", strerror(errno));
		return;
	}
	free(c->head); /* what the tunnel needs of it is in pre */
	c->head = NULL;
	c->out = egress_connect_request(c->host, c->port, eg->token, c->es->tenant, c->es->sid,
	                                eg->n->name);
	c->outlen = (uint32_t)strlen(c->out);
	c->outoff = 0;
	c->state = EC_DIAL;
	c->deadline_ns = kl_now_ns() + (uint64_t)EG_GW_MS * 1000000;
	struct io_uring_sqe *sqe = loop_sqe(&eg->n->loop);
	io_uring_prep_connect(sqe, c->gfd, (struct sockaddr *)&eg->gw, eg->gwlen);
	loop_bind(&eg->n->loop, sqe, &c->op, dial_done, &c->ref);
}

/* ---- the client's request ---- */

/* Parse the request head (hend bytes); 0, or an HTTP status with *why set. */
static int
parse_request(egress_conn *c, uint32_t hend, const char **why)
{
	egress_request rq = {0};
	int status = egress_parse_request(c->head, c->hlen, hend, c->via_unix, &rq, why);
	_Static_assert(sizeof rq.host == sizeof c->host, "same host buffer");
	c->connect = rq.connect;
	memcpy(c->host, rq.host, sizeof c->host);
	c->port = rq.port;
	c->pre = rq.pre;
	c->prelen = rq.prelen;
	return status;
}

static void
on_head(egress_conn *c, uint32_t hend)
{
	const char *why;
	int status = parse_request(c, hend, &why);
	if (status) {
		reply(c, status, "malformed proxy request: %s", why);
		return;
	}
	if (!c->eg->enabled) {
		reply(c, 403, "egress is not configured on this cluster (no gateway for node %s)",
		      c->eg->n->name);
		return;
	}
	dial(c);
}

static void head_recv(egress_conn *c);

static void
head_done(node_op *op, int res, uint32_t flags)
{
	egress_conn *c = kl_container_of(op, egress_conn, op);
	if (c->state != EC_HEAD)
		return;
	if (c->timed_out) {
		reply(c, 408, "no complete request head within %d s", EG_HEAD_MS / 1000);
		return;
	}
	if (res <= 0) {
		conn_close(c, res == 0 ? "client closed before a request" : "client read failed");
		return;
	}
	uint32_t before = c->hlen;
	c->hlen += (uint32_t)res;
	uint32_t hend = egress_head_end(c->head, c->hlen, before);
	if (hend)
		on_head(c, hend);
	else if (c->hlen == EG_HEAD_MAX)
		reply(c, 431, "request head larger than %u bytes", EG_HEAD_MAX);
	else
		head_recv(c);
}

static void
head_recv(egress_conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->eg->n->loop);
	io_uring_prep_recv(sqe, c->cfd, c->head + c->hlen, EG_HEAD_MAX - c->hlen, 0);
	loop_bind(&c->eg->n->loop, sqe, &c->op, head_done, &c->ref);
}

/* ---- accepting ---- */

static void
conn_new(egress_sess *es, int fd, bool via_unix)
{
	node_egress *eg = es->eg;
	bool over_session = es->nconns >= eg->max_per_session;
	bool over_node = eg->nconns >= eg->max_conns;
	eg->accepted++;
	if ((over_session || over_node) &&
	    (eg->nrefusing >= EG_MAX_REFUSING || es->nrefusing >= eg->max_per_session)) {
		close(fd); /* refusing politely is bounded too */
		eg->refused++;
		return;
	}
	egress_conn *c = kl_xcalloc(1, sizeof *c);
	c->ref.refs = 1;
	c->ref.release = conn_release;
	c->eg = eg;
	c->es = es;
	node_ref_get(&es->ref);
	c->cfd = fd;
	c->gfd = -1;
	c->via_unix = via_unix;
	c->t0_ns = kl_now_ns();
	kl_list_add_tail(&es->conns, &c->slink);
	kl_list_add_tail(&eg->conns, &c->nlink);
	if (over_session || over_node) {
		c->refusing = true;
		eg->nrefusing++;
		es->nrefusing++;
		if (over_session)
			reply(c, 429,
			      "too many egress connections open in this session (at most %u)",
			      eg->max_per_session);
		else
			reply(c, 503, "node %s is at its egress connection limit (%u)", eg->n->name,
			      eg->max_conns);
		return;
	}
	eg->nconns++;
	es->nconns++;
	c->head = kl_xmalloc(EG_HEAD_MAX);
	c->state = EC_HEAD;
	c->deadline_ns = c->t0_ns + (uint64_t)EG_HEAD_MS * 1000000;
	head_recv(c);
}

static void accept_arm(egress_sess *es, int i);

static void
accept_done(node_op *op, int res, uint32_t flags)
{
	egress_sess *es = kl_container_of(op->owner, egress_sess, ref);
	int i = op == &es->acc[1];
	if (res >= 0) {
		if (es->stopped)
			close(res);
		else
			conn_new(es, res, i == 1);
	}
	if ((flags & IORING_CQE_F_MORE) || es->stopped || res == -ECANCELED)
		return;
	if (res == -EINVAL && !es->single[i]) {
		es->single[i] = true; /* no multishot accept: one at a time */
		accept_arm(es, i);
	} else if (res < 0) {
		KL_LOG(KL_WARN, NODE_COMPONENT, "egress session=%s: accept: %s (retrying)", es->sid,
		       strerror(-res));
		es->rearm[i] = true; /* from the tick: EMFILE would otherwise spin */
	} else {
		accept_arm(es, i);
	}
}

static void
accept_arm(egress_sess *es, int i)
{
	node_loop *l = &es->eg->n->loop;
	struct io_uring_sqe *sqe = loop_sqe(l);
	if (es->single[i])
		io_uring_prep_accept(sqe, es->lfd[i], NULL, NULL, SOCK_CLOEXEC);
	else
		io_uring_prep_multishot_accept(sqe, es->lfd[i], NULL, NULL, SOCK_CLOEXEC);
	es->rearm[i] = false;
	loop_bind(l, sqe, &es->acc[i], accept_done, &es->ref);
}

static void
sess_release(node_ref *r)
{
	egress_sess *es = kl_container_of(r, egress_sess, ref);
	kl_close(&es->lfd[0]);
	kl_close(&es->lfd[1]);
	free(es);
}

void
egress_session_start(session *s)
{
	sandbox *sb = s->sb;
	node_egress *eg = s->n->egress;
	if (!eg || !sb || s->egress || (sb->proxy_fd[0] < 0 && sb->proxy_fd[1] < 0))
		return;
	egress_sess *es = kl_xcalloc(1, sizeof *es);
	es->ref.refs = 1;
	es->ref.release = sess_release;
	es->eg = eg;
	kl_strlcpy(es->sid, s->id, sizeof es->sid);
	kl_strlcpy(es->tenant, s->tenant_name, sizeof es->tenant);
	kl_list_init(&es->conns);
	for (int i = 0; i < 2; i++) {
		es->lfd[i] = sb->proxy_fd[i];
		sb->proxy_fd[i] = -1;
		if (es->lfd[i] >= 0)
			accept_arm(es, i);
	}
	s->egress = es;
}

void
egress_session_stop(session *s)
{
	egress_sess *es = s->egress;
	if (!es)
		return;
	s->egress = NULL;
	es->stopped = true;
	node_loop *l = &es->eg->n->loop;
	for (int i = 0; i < 2; i++)
		loop_cancel(l, &es->acc[i]);
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &es->conns) {
		egress_conn *c = kl_list_entry(p, egress_conn, slink);
		if (!c->end)
			c->end = "session closed";
		conn_close(c, "session closed");
	}
	node_ref_put(&es->ref);
}

const char *const *
egress_env(const session *s)
{
	return s->egress && s->egress->lfd[0] >= 0 ? proxy_env : NULL;
}

/* ---- timeouts ---- */

void
egress_tick(node *n)
{
	node_egress *eg = n->egress;
	if (!eg)
		return;
	uint64_t now = kl_now_ns();
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &eg->conns) {
		egress_conn *c = kl_list_entry(p, egress_conn, nlink);
		switch (c->state) {
		case EC_HEAD:
		case EC_DIAL:
		case EC_GW_SEND:
		case EC_GW_HEAD:
			/* The op's completion answers (408 / 504). */
			if (now >= c->deadline_ns && !c->timed_out) {
				c->timed_out = true;
				if (c->gfd >= 0)
					shutdown(c->gfd, SHUT_RDWR);
				loop_cancel(&n->loop, &c->op);
			}
			break;
		case EC_RELAY:
			if (now - c->last_ns >= (uint64_t)eg->idle_ms * 1000000)
				conn_close(c, "idle timeout");
			break;
		case EC_REPLY:
		case EC_LINGER:
			if (now >= c->deadline_ns)
				conn_close(c, c->end ? c->end : "response timeout");
			break;
		case EC_DONE:
			break;
		}
	}
	kl_list_for_each (p, &n->session_list) {
		session *s = kl_list_entry(p, session, link);
		egress_sess *es = s->egress;
		for (int i = 0; es && i < 2; i++)
			if (es->rearm[i] && !es->acc[i].busy)
				accept_arm(es, i);
	}
}

/* ---- setup ---- */

static int
resolve_gateway(node_egress *eg, const char *url, char *err, size_t errlen)
{
	const char *a = strncmp(url, "tcp://", 6) ? url : url + 6;
	char host[256];
	uint16_t port;
	if (egress_parse_authority(a, strlen(a), host, sizeof host, &port, 0) < 0) {
		snprintf(err, errlen,
		         "egress gateway address \"%s\": want host:port or tcp://host:port", url);
		return -EINVAL;
	}
	char ps[8];
	snprintf(ps, sizeof ps, "%u", (unsigned)port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
	int r = getaddrinfo(host, ps, &hints, &ai);
	if (r != 0) {
		snprintf(err, errlen, "egress gateway %s: %s", url, gai_strerror(r));
		return -EINVAL;
	}
	memcpy(&eg->gw, ai->ai_addr, ai->ai_addrlen);
	eg->gwlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	egress_fmt_authority(eg->gw_text, sizeof eg->gw_text, host, port);
	return 0;
}

int
egress_init(node *n, char *err, size_t errlen)
{
	const node_config *cfg = &n->cfg;
	node_egress *eg = kl_xcalloc(1, sizeof *eg);
	eg->n = n;
	eg->max_conns = cfg->egress_max_conns ? cfg->egress_max_conns : EG_DEF_CONNS;
	eg->max_per_session =
	        cfg->egress_max_per_session ? cfg->egress_max_per_session : EG_DEF_PER_SESSION;
	eg->idle_ms = cfg->egress_idle_ms ? cfg->egress_idle_ms : EG_DEF_IDLE_MS;
	kl_list_init(&eg->conns);
	n->egress = eg;
	if (cfg->egress_token) {
		for (const char *p = cfg->egress_token; *p; p++)
			if ((unsigned char)*p < ' ' || *p == 0x7f) {
				snprintf(err, errlen, "the egress token has control characters");
				return -EINVAL;
			}
		if (strlen(cfg->egress_token) > 1024) {
			snprintf(err, errlen, "the egress token is longer than 1024 bytes");
			return -EINVAL;
		}
		eg->token = kl_xstrdup(cfg->egress_token);
	}
	if (!cfg->egress_url || !*cfg->egress_url) {
		KL_LOG(KL_INFO, NODE_COMPONENT,
		       "egress: no gateway configured; sandbox proxies answer 403");
		return 0;
	}
	int r = resolve_gateway(eg, cfg->egress_url, err, errlen);
	if (r < 0)
		return r;
	eg->enabled = true;
	KL_LOG(KL_INFO, NODE_COMPONENT, "egress: through gateway %s (%s token)", eg->gw_text,
	       eg->token ? "with" : "WITHOUT a");
	return 0;
}

void
egress_fini(node *n)
{
	node_egress *eg = n->egress;
	if (!eg)
		return;
	if (eg->nconns || eg->nrefusing)
		KL_LOG(KL_WARN, NODE_COMPONENT, "egress: %u connections left at exit",
		       eg->nconns + eg->nrefusing);
	free(eg->token);
	free(eg);
	n->egress = NULL;
}

void
egress_fill_stats(node *n, node_stats *st)
{
	node_egress *eg = n->egress;
	if (!eg)
		return;
	st->egress_enabled = eg->enabled;
	st->egress_active = eg->nconns + eg->nrefusing;
	st->egress_accepted = eg->accepted;
	st->egress_tunnels = eg->tunnels;
	st->egress_refused = eg->refused;
	st->egress_bytes_up = eg->bytes_up;
	st->egress_bytes_down = eg->bytes_down;
}
