/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_http: the HTTP parsing on both ends of sandbox egress. The node's
 * in-sandbox proxy (node/egress_parse.c, run by egress.c) reads a tool's
 * request head (CONNECT host:port, or plain HTTP to rewrite) and later the
 * gateway's answer; the gateway's egress listener (gw_egress_parse, run by
 * gw_egress.c) reads the node's CONNECT with X-Kiln-Node-Token,
 * X-Kiln-Tenant and X-Kiln-Session. The first input byte holds flags (bit 0:
 * the request came through the unix socket; the rest seeds how the head is
 * cut into reads); the rest goes to every parser.
 *
 * Invariants:
 *  - the end of a head found over reads of any size is the one found at once;
 *  - a request is refused with 400 and a reason, or parsed: then its host is
 *    1..253 bytes of [A-Za-z0-9._-] (or an IPv6 literal's hex digits, ':'
 *    and '.'), with no control characters, its port is 1..65535, and
 *    host:port formatted and parsed again gives the same host and port;
 *  - CONNECT's tunnel starts with exactly the bytes after the head; plain
 *    HTTP's starts with the request in origin form with exactly one Host and
 *    one "Connection: close", no proxy headers, then those bytes, and that
 *    request parses again (as an origin-form request on the unix socket) to
 *    the same host, port and bytes;
 *  - the gateway parses the CONNECT the node sends for that host:port to the
 *    same destination, with the token, tenant and session the node sent;
 *  - the gateway's parser never returns a host with control characters or
 *    blanks, keeps every value inside its buffer and without CR or LF, and a
 *    host:port it parsed parses again to the same;
 *  - a gateway answer's status is 100..999 with a body bound <= 8 KiB, and
 *    the refusal passed to the client parses back to the same status with
 *    exactly the body kept.
 */
#include "fuzz.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>

#include "egress_parse.h"
#include "gw_egress.h"

#define HEAD_MAX   (16u << 10) /* egress.c: EG_HEAD_MAX */
#define GW_MAX     (8u << 10)  /* egress.c: EG_GW_MAX */
#define GW_HEAD    16384       /* gw_egress.c: HEAD_MAX */
#define MIN_(a, b) ((a) < (b) ? (a) : (b))

/* The head's end found over reads cut as a recv loop would see them. */
static void
check_head_end(const uint8_t *p, uint32_t n, uint8_t seed)
{
	uint32_t once = egress_head_end(p, n, 0), got = 0, len = 0;
	uint32_t state = seed | 0x100u;
	while (len < n && !got) {
		state = state * 1103515245u + 12345u;
		uint32_t k = 1 + (state >> 16) % (seed & 0x80 ? 512 : 5);
		uint32_t before = len;
		len = len + k > n ? n : len + k;
		got = egress_head_end(p, len, before);
	}
	FZ_CHECK(got == once, "head end %u in pieces, %u at once", got, once);
	FZ_CHECK(!once || (once >= 2 && once <= n && p[once - 1] == '\n'), "head end %u", once);
}

static void
check_host(const char *host, uint16_t port)
{
	size_t n = strnlen(host, EGRESS_HOST_MAX);
	FZ_CHECK(n >= 1 && n <= 253, "host length %zu", n);
	FZ_CHECK(port >= 1, "port 0");
	bool v6 = strchr(host, ':') != NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)host[i];
		FZ_CHECK(ch > ' ' && ch < 0x7f, "host has byte 0x%02x", ch);
		FZ_CHECK(v6 ? isxdigit(ch) || ch == ':' || ch == '.'
		            : isalnum(ch) || ch == '.' || ch == '-' || ch == '_',
		         "host '%s' has '%c'", host, ch);
	}
	char a[300], h2[EGRESS_HOST_MAX];
	uint16_t p2 = 0;
	int k = egress_fmt_authority(a, sizeof a, host, port);
	FZ_CHECK(k > 0 && (size_t)k < sizeof a, "authority length %d", k);
	FZ_CHECK(egress_parse_authority(a, (size_t)k, h2, sizeof h2, &p2, 0) == 0,
	         "'%s' does not parse back", a);
	FZ_CHECK(!strcmp(h2, host) && p2 == port, "'%s' parses to %s port %u", a, h2, p2);
}

/* How many lines of a rewritten head (CRLF lines, up to the blank one) are header name. */
static int
count_header(const char *p, size_t n, const char *name)
{
	int count = 0;
	size_t k = strlen(name);
	const char *line = memchr(p, '\n', n); /* skip the request line */
	while (line && (size_t)(line + 1 - p) < n) {
		line++;
		if (line[0] == '\r')
			break;
		if ((size_t)(p + n - line) > k && line[k] == ':' && !strncasecmp(line, name, k))
			count++;
		line = memchr(line, '\n', (size_t)(p + n - line));
	}
	return count;
}

/* The node sends the gateway CONNECT host:port; the gateway must read the same. */
static void
check_gateway_agrees(const char *host, uint16_t port)
{
	char *req = egress_connect_request(host, port, "tok-123", "acme", "s-1", "node-a");
	gw_egress_req rq;
	FZ_CHECK(gw_egress_parse(req, &rq) == 0, "gateway refused the node's request:\n%s", req);
	char want[300];
	snprintf(want, sizeof want, strchr(host, ':') ? "[%s]" : "%s", host);
	FZ_CHECK(rq.port == port && !strcmp(rq.host, want),
	         "node asked for %s port %u, the gateway read %s port %u", want, port, rq.host,
	         rq.port);
	FZ_CHECK(rq.has_token && !strcmp(rq.token, "tok-123") && !strcmp(rq.tenant, "acme") &&
	                 !strcmp(rq.session, "s-1"),
	         "headers: token '%s' tenant '%s' session '%s'", rq.token, rq.tenant, rq.session);
	free(req);
}

static void
check_plain(const egress_request *rq, const uint8_t *p, uint32_t n, uint32_t hend)
{
	const char *pre = (const char *)rq->pre;
	uint32_t body = n - hend;
	FZ_CHECK(rq->prelen >= body + 21, "rewritten request of %u bytes", rq->prelen);
	FZ_CHECK(!memcmp(pre + rq->prelen - body, p + hend, body), "body bytes changed");
	FZ_CHECK(!memcmp(pre + rq->prelen - body - 21, "Connection: close\r\n\r\n", 21),
	         "no Connection: close before the body");
	uint32_t h2 = egress_head_end(rq->pre, rq->prelen, 0);
	FZ_CHECK(h2 == rq->prelen - body, "rewritten head ends at %u, not %u", h2,
	         rq->prelen - body);
	FZ_CHECK(count_header(pre, h2, "Host") == 1 && count_header(pre, h2, "Connection") == 1,
	         "Host or Connection not exactly once");
	FZ_CHECK(!count_header(pre, h2, "Proxy-Authorization") &&
	                 !count_header(pre, h2, "Proxy-Connection") &&
	                 !count_header(pre, h2, "Keep-Alive"),
	         "a proxy header went to the origin");
	FZ_CHECK(pre[0] != '/' && memchr(pre, ' ', h2) &&
	                 ((const char *)memchr(pre, ' ', h2))[1] == '/',
	         "not origin form");
	egress_request again = {0};
	const char *why;
	int st = egress_parse_request(rq->pre, rq->prelen, h2, true, &again, &why);
	FZ_CHECK(st == 0, "the rewritten request is refused: %s", why);
	FZ_CHECK(!again.connect && !strcmp(again.host, rq->host) && again.port == rq->port,
	         "rewritten request goes to %s:%u, not %s:%u", again.host, again.port, rq->host,
	         rq->port);
	FZ_CHECK(again.prelen == rq->prelen && !memcmp(again.pre, rq->pre, rq->prelen),
	         "rewriting twice changes the request");
	free(again.pre);
}

static void
node_request(const uint8_t *p, uint32_t n, bool via_unix)
{
	uint32_t hend = egress_head_end(p, n, 0);
	if (!hend)
		return; /* the proxy reads on, or answers 431 */
	egress_request rq = {0};
	const char *why = NULL;
	int st = egress_parse_request(p, n, hend, via_unix, &rq, &why);
	FZ_CHECK(st == 0 || st == 400, "status %d", st);
	FZ_CHECK(why && *why, "no reason");
	FZ_CHECK(strnlen(rq.host, sizeof rq.host) < sizeof rq.host, "host not terminated");
	if (st) {
		FZ_CHECK(!rq.pre, "refused, but a tunnel preamble");
		return;
	}
	check_host(rq.host, rq.port);
	check_gateway_agrees(rq.host, rq.port);
	FZ_CHECK(rq.connect == (n >= 8 && !memcmp(p, "CONNECT ", 8)), "CONNECT is %d", rq.connect);
	if (rq.connect)
		FZ_CHECK(rq.prelen == n - hend && !memcmp(rq.pre, p + hend, rq.prelen),
		         "CONNECT's early bytes changed");
	else
		check_plain(&rq, p, n, hend);
	free(rq.pre);
}

static void
gateway_answer(const uint8_t *p, uint32_t n)
{
	if (n > GW_MAX)
		n = GW_MAX;
	uint32_t hend = egress_head_end(p, n, 0), need = 0;
	if (!hend)
		return;
	int st = egress_parse_answer(p, hend, GW_MAX, &need);
	FZ_CHECK(st == -1 || (st >= 100 && st <= 999), "status %d", st);
	if (st < 0 || (st >= 200 && st < 300))
		return;
	FZ_CHECK(need <= GW_MAX, "body bound %u", need);
	size_t len;
	char *r = egress_build_refusal(p, n, hend, need, &len);
	uint32_t blen = MIN_(n - hend, need);
	uint32_t rh = egress_head_end((const uint8_t *)r, (uint32_t)len, 0), need2 = 0;
	FZ_CHECK(rh && len - rh == blen && !memcmp(r + rh, p + hend, blen),
	         "refusal body: head end %u, %zu bytes, want %u", rh, len - rh, blen);
	int st2 = egress_parse_answer((const uint8_t *)r, rh, GW_MAX, &need2);
	FZ_CHECK(st2 == st && need2 == blen, "refusal parses to %d (need %u), not %d (%u)", st2,
	         need2, st, blen);
	FZ_CHECK(!memcmp(r, "HTTP/1.1 ", 9), "refusal status line");
	free(r);
}

static void
check_value(const char *v, size_t cap, const char *what)
{
	size_t n = strnlen(v, cap);
	FZ_CHECK(n < cap, "%s not terminated", what);
	FZ_CHECK(!memchr(v, '\r', n) && !memchr(v, '\n', n), "%s has CR or LF", what);
}

static void
gateway_request(const uint8_t *p, uint32_t n)
{
	/* What gw_egress.c's read_head hands over: text up to and including
	 * "\r\n\r\n", within its buffer (the rest is refused or read later). */
	char *text = strndup((const char *)p, MIN_(n, GW_HEAD - 1));
	char *end = strstr(text, "\r\n\r\n");
	if (!end) {
		free(text);
		return;
	}
	end[4] = 0;
	gw_egress_req rq;
	int r = gw_egress_parse(text, &rq);
	FZ_CHECK(r == 0 || r == -EBADMSG, "gw_egress_parse: %d", r);
	if (r == 0) {
		check_value(rq.target, sizeof rq.target, "target");
		check_value(rq.host, sizeof rq.host, "host");
		check_value(rq.token, sizeof rq.token, "token");
		check_value(rq.tenant, sizeof rq.tenant, "tenant");
		check_value(rq.session, sizeof rq.session, "session");
		FZ_CHECK(rq.target[0], "empty target");
		FZ_CHECK(rq.has_token || !rq.token[0], "token without a header");
	}
	if (r == 0 && rq.port) {
		size_t hl = strlen(rq.host);
		for (size_t i = 0; i < hl; i++)
			FZ_CHECK((unsigned char)rq.host[i] > ' ' && rq.host[i] != 0x7f,
			         "gateway host has byte 0x%02x", (unsigned char)rq.host[i]);
		FZ_CHECK(!strncmp(rq.target, rq.host, hl) && rq.target[hl] == ':',
		         "host '%s' is not the target's '%s'", rq.host, rq.target);
		char again[700];
		snprintf(again, sizeof again, "CONNECT %s:%u HTTP/1.1\r\n\r\n", rq.host, rq.port);
		gw_egress_req r2;
		FZ_CHECK(gw_egress_parse(again, &r2) == 0 && r2.port == rq.port &&
		                 !strcmp(r2.host, rq.host),
		         "%s:%u does not parse back (%s:%u)", rq.host, rq.port, r2.host, r2.port);
	}
	free(text);
}

/* The first line as an authority, with and without a default port. */
static void
authority(const uint8_t *p, uint32_t n)
{
	const uint8_t *nl = memchr(p, '\n', n);
	size_t len = nl ? (size_t)(nl - p) : n;
	char host[EGRESS_HOST_MAX];
	uint16_t port;
	for (int i = 0; i < 2; i++)
		if (egress_parse_authority((const char *)p, len, host, sizeof host, &port,
		                           i ? 80 : 0) == 0)
			check_host(host, port);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_reader in = {data, size};
	uint8_t flags = fz_u8(&in);
	if (in.n > HEAD_MAX)
		in.n = HEAD_MAX; /* the proxy never holds more */
	size_t n;
	uint8_t *p = fz_rest(&in, &n);
	check_head_end(p, (uint32_t)n, flags);
	node_request(p, (uint32_t)n, flags & 1);
	gateway_answer(p, (uint32_t)n);
	gateway_request(p, (uint32_t)n);
	authority(p, (uint32_t)n);
	free(p);
	return 0;
}
