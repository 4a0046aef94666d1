/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's egress proxy: the place where sandbox network traffic leaves
 * the cluster. Node proxies connect here with an HTTP CONNECT naming the
 * destination and the tenant/session it is for, authenticated by the
 * cluster's join token (compared in constant time). The tenant's policy
 * decides (gw_policy_decide: names, one DNS resolution, every address
 * checked); an allowed connection dials exactly a checked address and relays
 * bytes both ways with connect and idle timeouts and the tenant's connection
 * cap; every decision is one audit record (denials at once, allowed
 * connections when they close, with bytes and duration).
 *
 * One thread per connection: connections are few and long-lived, bounded by
 * the per-tenant caps plus a global cap, and a blocking relay is the
 * simplest correct thing for them.
 */
#include "gw_egress.h"

#include "kl_audit.h"
#include "kl_clock.h"
#include "kl_log.h"
#include "kl_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define EG        "egress"
#define HEAD_MAX  16384
#define MAX_CONNS 1024

struct gw_egress {
	const gw_config *cfg;
	kl_audit *audit;
	int lfd;
	pthread_t th;
	volatile int stop;
	int conns; /* threads alive */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t allowed, denied;
};

typedef struct econn {
	gw_egress *g;
	int fd;
} econn;

static int
send_status(int fd, int code, const char *reason, const char *why)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf,
	                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
	                 "X-Kiln-Reason: %s\r\nContent-Length: %zu\r\n\r\n%s\n",
	                 code, reason, why, strlen(why) + 1, why);
	return kl_write_all(fd, buf, (size_t)KL_MIN((size_t)n, sizeof buf - 1));
}

/* Read the request head (up to the blank line) without consuming past it. */
static int
read_head(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t got = 0;
	while (got < cap - 1) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		ssize_t k = recv(fd, buf + got, cap - 1 - got, MSG_PEEK);
		if (k <= 0)
			return -ECONNRESET;
		buf[got + (size_t)k] = 0;
		char *end = strstr(buf, "\r\n\r\n");
		size_t take = end ? (size_t)(end + 4 - buf) - got : (size_t)k;
		if (recv(fd, buf + got, take, 0) != (ssize_t)take)
			return -ECONNRESET;
		got += take;
		buf[got] = 0;
		if (end)
			return (int)got;
	}
	return -E2BIG;
}

static const char *
header(const char *head, const char *name, char *out, size_t len)
{
	size_t n = strlen(name);
	for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
		const char *h = l + 2;
		if (!strncasecmp(h, name, n) && h[n] == ':') {
			h += n + 1;
			while (*h == ' ')
				h++;
			size_t k = strcspn(h, "\r\n");
			snprintf(out, len, "%.*s", (int)KL_MIN(k, len - 1), h);
			return out;
		}
	}
	return NULL;
}

int
gw_egress_parse(const char *head, gw_egress_req *r)
{
	memset(r, 0, sizeof *r);
	int end = 0;
	if (sscanf(head, "CONNECT %511s%n HTTP/1.%*d", r->target, &end) != 1)
		return -EBADMSG;
	r->has_token = header(head, "X-Kiln-Node-Token", r->token, sizeof r->token) != NULL;
	header(head, "X-Kiln-Tenant", r->tenant, sizeof r->tenant);
	header(head, "X-Kiln-Session", r->session, sizeof r->session);
	/* Not host:port either: a target cut to fit (the policy would judge,
	 * and the audit record name, a host nobody asked for), or one with
	 * control bytes (blanks end it; others would reach the log). */
	if (head[end] && !isspace((unsigned char)head[end]))
		return 0;
	for (const char *q = r->target; *q; q++)
		if ((unsigned char)*q < ' ' || *q == 0x7f)
			return 0;
	char *colon = strrchr(r->target, ':');
	long port = colon ? strtol(colon + 1, NULL, 10) : 0;
	if (!colon || port < 1 || port > 65535 || colon - r->target >= (long)sizeof r->host)
		return 0;
	snprintf(r->host, sizeof r->host, "%.*s", (int)(colon - r->target), r->target);
	r->port = (uint16_t)port;
	return 0;
}

static int
dial(const gw_verdict *v, uint32_t timeout_ms)
{
	for (size_t i = 0; i < v->naddrs; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&v->addrs[i].ss;
		int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (connect(fd, sa, v->addrs[i].len) < 0 && errno != EINPROGRESS) {
			close(fd);
			continue;
		}
		struct pollfd p = {fd, POLLOUT, 0};
		int err = 0;
		socklen_t l = sizeof err;
		if (poll(&p, 1, (int)timeout_ms) == 1 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && !err) {
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
			return fd;
		}
		close(fd);
	}
	return -1;
}

/* Relay until both directions end or nothing moves for idle_ms. */
static void
relay(int a, int b, uint32_t idle_ms, uint64_t *up, uint64_t *down)
{
	char buf[65536];
	bool a_open = true, b_open = true;
	while (a_open || b_open) {
		struct pollfd p[2] = {{a, a_open ? POLLIN : 0, 0}, {b, b_open ? POLLIN : 0, 0}};
		int r = poll(p, 2, (int)idle_ms);
		if (r <= 0)
			return; /* idle timeout or error */
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			int from = i ? b : a, to = i ? a : b;
			ssize_t k = recv(from, buf, sizeof buf, 0);
			if (k <= 0) {
				shutdown(to, SHUT_WR);
				if (i)
					b_open = false;
				else
					a_open = false;
				continue;
			}
			if (kl_write_all(to, buf, (size_t)k) < 0)
				return;
			*(i ? down : up) += (uint64_t)k;
		}
	}
}

static void
audit(gw_egress *g, const char *tenant, const char *session, const char *host, const char *addr,
      uint16_t port, bool allow, const char *reason, uint64_t up, uint64_t down, uint64_t ms)
{
	if (allow)
		__atomic_add_fetch(&g->allowed, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&g->denied, 1, __ATOMIC_RELAXED);
	KL_LOG(KL_INFO, EG, "tenant=%s session=%s host=%s addr=%s port=%u decision=%s reason=%s",
	       tenant, session, host, addr, port, allow ? "allow" : "deny", reason);
	/* No address reached (refused by name): null, as docs/audit.md says. */
	if (g->audit && kl_audit_egress(g->audit, tenant, session, host, *addr ? addr : NULL, port,
	                                allow ? "allow" : "deny", reason, up, down, ms) < 0)
		KL_LOG(KL_ERROR, EG, "audit log write failed: egress records are being lost");
}

static void
serve(gw_egress *g, int fd)
{
	char head[HEAD_MAX];
	int n = read_head(fd, head, sizeof head, 10000);
	if (n < 0) {
		if (n == -E2BIG)
			send_status(fd, 431, "Request Header Fields Too Large",
			            "request head too large");
		return;
	}
	gw_egress_req rq;
	if (gw_egress_parse(head, &rq) < 0)
		return (void)send_status(fd, 400, "Bad Request", "expected CONNECT host:port");
	if (!rq.has_token || !kl_consttime_eq(rq.token, strlen(rq.token), g->cfg->join_token,
	                                      strlen(g->cfg->join_token)))
		return (void)send_status(fd, 407, "Proxy Authentication Required",
		                         "node token refused");
	if (!rq.port)
		return (void)send_status(fd, 400, "Bad Request",
		                         "CONNECT target must be host:port");
	const char *tenant = rq.tenant, *session = rq.session, *host = rq.host;
	long port = rq.port;
	gw_policy *pol = gw_config_egress(g->cfg, tenant);
	if (!pol) {
		audit(g, tenant, session, host, "", (uint16_t)port, false,
		      "no egress policy for this tenant", 0, 0, 0);
		return (void)send_status(fd, 403, "Forbidden",
		                         "egress is not allowed for this tenant");
	}
	gw_verdict v;
	gw_policy_decide(pol, host, (uint16_t)port, &v);
	if (v.decision != GW_ALLOW) {
		audit(g, tenant, session, host, v.addr, (uint16_t)port, false, v.reason, 0, 0, 0);
		return (void)send_status(fd, 403, "Forbidden", v.reason);
	}
	if (gw_policy_conn_acquire(pol) < 0) {
		audit(g, tenant, session, host, v.addr, (uint16_t)port, false,
		      "tenant connection cap reached", 0, 0, 0);
		return (void)send_status(fd, 429, "Too Many Requests",
		                         "tenant egress connection cap reached");
	}
	uint64_t t0 = kl_now_ms(), up = 0, down = 0;
	int ufd = dial(&v, gw_policy_connect_timeout_ms(pol));
	if (ufd < 0) {
		audit(g, tenant, session, host, v.addr, (uint16_t)port, false, "connect failed", 0,
		      0, kl_now_ms() - t0);
		send_status(fd, 502, "Bad Gateway", "could not connect to the destination");
		gw_policy_conn_release(pol);
		return;
	}
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	if (kl_write_all(fd, ok, sizeof ok - 1) == 0)
		relay(fd, ufd, gw_policy_idle_timeout_ms(pol), &up, &down);
	close(ufd);
	gw_policy_conn_release(pol);
	audit(g, tenant, session, host, v.addr, (uint16_t)port, true, v.reason, up, down,
	      kl_now_ms() - t0);
}

static void *
conn_main(void *arg)
{
	econn *c = arg;
	gw_egress *g = c->g;
	serve(g, c->fd);
	close(c->fd);
	free(c);
	pthread_mutex_lock(&g->mu);
	g->conns--;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

static void *
accept_main(void *arg)
{
	gw_egress *g = arg;
	while (!g->stop) {
		struct pollfd p = {g->lfd, POLLIN, 0};
		if (poll(&p, 1, 200) <= 0)
			continue;
		int fd = accept4(g->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&g->mu);
		bool full = g->conns >= MAX_CONNS;
		if (!full)
			g->conns++;
		pthread_mutex_unlock(&g->mu);
		if (full) {
			send_status(fd, 503, "Service Unavailable",
			            "gateway egress is at capacity");
			close(fd);
			continue;
		}
		econn *c = kl_xcalloc(1, sizeof *c);
		c->g = g;
		c->fd = fd;
		pthread_t th;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&at, 256 << 10);
		if (pthread_create(&th, &at, conn_main, c) != 0) {
			close(fd);
			free(c);
			pthread_mutex_lock(&g->mu);
			g->conns--;
			pthread_mutex_unlock(&g->mu);
		}
		pthread_attr_destroy(&at);
	}
	return NULL;
}

int
gw_egress_start(const gw_config *cfg, kl_audit *audit, gw_egress **ret, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(cfg->egress_listen, ':');
	if (!colon) {
		snprintf(err, errlen, "egress_listen '%s': expected host:port", cfg->egress_listen);
		return -EINVAL;
	}
	snprintf(host, sizeof host, "%.*s", (int)(colon - cfg->egress_listen), cfg->egress_listen);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
	if (getaddrinfo(*host ? host : NULL, colon + 1, &hints, &res)) {
		snprintf(err, errlen, "egress_listen '%s': cannot resolve", cfg->egress_listen);
		return -EINVAL;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		snprintf(err, errlen, "egress_listen %s: %s", cfg->egress_listen, strerror(errno));
		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		return -EADDRINUSE;
	}
	freeaddrinfo(res);
	gw_egress *g = kl_xcalloc(1, sizeof *g);
	g->cfg = cfg;
	g->audit = audit;
	g->lfd = fd;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cond, NULL);
	pthread_create(&g->th, NULL, accept_main, g);
	KL_LOG(KL_INFO, EG, "egress proxy for node proxies on %s (%d tenant policies)",
	       cfg->egress_listen, cfg->negress);
	*ret = g;
	return 0;
}

void
gw_egress_stop(gw_egress *g)
{
	if (!g)
		return;
	g->stop = 1;
	pthread_join(g->th, NULL);
	close(g->lfd);
	/* Connections end at their idle timeout at the latest; wait a bounded time. */
	pthread_mutex_lock(&g->mu);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	while (g->conns > 0)
		if (pthread_cond_timedwait(&g->cond, &g->mu, &ts) != 0)
			break;
	bool left = g->conns > 0;
	pthread_mutex_unlock(&g->mu);
	if (!left)
		free(g);
	/* else: detached threads still use g; the process is exiting anyway. */
}

void
gw_egress_counts(gw_egress *g, uint64_t *allowed, uint64_t *denied)
{
	*allowed = __atomic_load_n(&g->allowed, __ATOMIC_RELAXED);
	*denied = __atomic_load_n(&g->denied, __ATOMIC_RELAXED);
}
