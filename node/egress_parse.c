/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox egress proxy's HTTP parsing (see egress_parse.h): a client's
 * request head, the authorities in it, and the gateway's answer. Moved out
 * of egress.c unchanged so that fuzz_http runs exactly what the proxy runs.
 */
#include "egress_parse.h"

#include "initproto.h"
#include "kl_util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define EG_STR2(x) #x
#define EG_STR(x)  EG_STR2(x)
#define EG_URL     "http://127.0.0.1:" EG_STR(KI_PROXY_PORT)

static bool
is_tchar(int ch)
{
	return ch > 0 && (isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch));
}

/* The next line of buf[*off, end): without its "\n" or "\r\n". False at end. */
static bool
next_line(const char *buf, size_t end, size_t *off, const char **line, size_t *len)
{
	if (*off >= end)
		return false;
	const char *p = buf + *off, *nl = memchr(p, '\n', end - *off);
	size_t n = nl ? (size_t)(nl - p) : end - *off;
	*line = p;
	*off += n + (nl ? 1 : 0);
	*len = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
	return true;
}

uint32_t
egress_head_end(const uint8_t *buf, uint32_t len, uint32_t from)
{
	for (uint32_t i = from > 3 ? from - 3 : 0; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && buf[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static bool
hdr_is(const char *line, size_t len, const char *name)
{
	size_t k = strlen(name);
	return len > k && line[k] == ':' && !strncasecmp(line, name, k);
}

static void
hdr_value(const char *line, size_t len, const char **v, size_t *vlen)
{
	const char *p = (const char *)memchr(line, ':', len) + 1, *e = line + len;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*v = p;
	*vlen = (size_t)(e - p);
}

int
egress_parse_authority(const char *s, size_t n, char *host, size_t hostcap, uint16_t *port,
                       uint16_t defport)
{
	const char *p = s, *end = s + n, *h, *he;
	if (n && *p == '[') {
		h = p + 1;
		he = memchr(h, ']', n - 1);
		if (!he || he == h)
			return -1;
		for (const char *q = h; q < he; q++)
			if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
				return -1;
		p = he + 1;
	} else {
		h = p;
		while (p < end && *p != ':')
			p++;
		he = p;
		if (he == h)
			return -1;
		for (const char *q = h; q < he; q++)
			if (!isalnum((unsigned char)*q) && *q != '.' && *q != '-' && *q != '_')
				return -1;
	}
	size_t hl = (size_t)(he - h);
	if (hl > 253 || hl >= hostcap)
		return -1;
	unsigned long v = defport;
	if (p < end) {
		if (*p++ != ':' || p == end || end - p > 5)
			return -1;
		v = 0;
		for (; p < end; p++) {
			if (!isdigit((unsigned char)*p))
				return -1;
			v = v * 10 + (unsigned long)(*p - '0');
		}
	}
	if (v == 0 || v > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = 0;
	*port = (uint16_t)v;
	return 0;
}

int
egress_fmt_authority(char *buf, size_t cap, const char *host, uint16_t port)
{
	return snprintf(buf, cap, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
}

char *
egress_connect_request(const char *host, uint16_t port, const char *token, const char *tenant,
                       const char *session, const char *node)
{
	char auth[300];
	egress_fmt_authority(auth, sizeof auth, host, port);
	return kl_xasprintf("CONNECT %s HTTP/1.1\r\n"
	                    "Host: %s\r\n"
	                    "%s%s%s"
	                    "X-Kiln-Tenant: %s\r\n"
	                    "X-Kiln-Session: %s\r\n"
	                    "X-Kiln-Node: %s\r\n"
	                    "\r\n",
	                    auth, auth, token ? "X-Kiln-Node-Token: " : "", token ? token : "",
	                    token ? "\r\n" : "", tenant, session, node);
}

/* ---- the client's request ---- */

static bool
hop_by_hop(const char *line, size_t len)
{
	return hdr_is(line, len, "Proxy-Connection") || hdr_is(line, len, "Proxy-Authorization") ||
	       hdr_is(line, len, "Connection") || hdr_is(line, len, "Keep-Alive");
}

/* Plain HTTP: the request as the origin should see it, in req->pre: origin
 * form, our Host, no proxy headers, "Connection: close" (so a reused client
 * connection cannot carry a second request to another host through this
 * tunnel), then the body bytes already read. */
static void
build_origin_request(const uint8_t *head, uint32_t hlen, egress_request *req, const char *method,
                     size_t mlen, const char *path, size_t plen, const char *version, size_t vlen,
                     uint32_t hend)
{
	const char *h = (const char *)head, *line;
	size_t off = 0, len;
	char auth[300];
	if (req->port == 80)
		snprintf(auth, sizeof auth, strchr(req->host, ':') ? "[%s]" : "%s", req->host);
	else
		egress_fmt_authority(auth, sizeof auth, req->host, req->port);
	/* Each line may gain a CR; the request line and Host are bounded by 600. */
	req->pre = kl_xmalloc(2 * (size_t)hend + (hlen - hend) + 600);
	char *p = (char *)req->pre;
	p += sprintf(p, "%.*s %.*s %.*s\r\nHost: %s\r\n", (int)mlen, method, (int)plen, path,
	             (int)vlen, version, auth);
	next_line(h, hend, &off, &line, &len);
	while (next_line(h, hend, &off, &line, &len) && len) {
		if (hop_by_hop(line, len) || hdr_is(line, len, "Host"))
			continue;
		memcpy(p, line, len);
		p += len;
		*p++ = '\r';
		*p++ = '\n';
	}
	p += sprintf(p, "Connection: close\r\n\r\n");
	memcpy(p, head + hend, hlen - hend);
	p += hlen - hend;
	req->prelen = (uint32_t)(p - (char *)req->pre);
}

/* The plain-HTTP half of egress_parse_request: target is not a CONNECT's. */
static int
parse_plain(const uint8_t *head, uint32_t hlen, uint32_t hend, bool via_unix, egress_request *req,
            const char *method, size_t mlen, const char *target, size_t tlen, const char *version,
            size_t vlen, const char *host, size_t hostlen, const char **why)
{
	const char *auth, *path;
	if (tlen > 7 && !strncasecmp(target, "http://", 7)) {
		auth = target + 7;
		path = auth;
		while (path < target + tlen && *path != '/' && *path != '?')
			path++;
		*why = "bad host in the URL (user:password@ is not supported)";
		if (egress_parse_authority(auth, (size_t)(path - auth), req->host, sizeof req->host,
		                           &req->port, 80) < 0)
			return 400;
	} else if (tlen > 8 && !strncasecmp(target, "https://", 8)) {
		*why = "https URLs go through CONNECT (set HTTPS_PROXY=" EG_URL ")";
		return 400;
	} else if (target[0] == '/' && via_unix && host) {
		/* The unix socket has no other use: treat it as the origin's. */
		path = target;
		*why = "bad Host header";
		if (egress_parse_authority(host, hostlen, req->host, sizeof req->host, &req->port,
		                           80) < 0)
			return 400;
	} else {
		*why = "this is a proxy: send an absolute URL (GET http://host/path) or CONNECT "
		       "host:port";
		return 400;
	}
	size_t plen = (size_t)(target + tlen - path);
	if (plen == 0 || path[0] == '?') { /* "http://h" or "http://h?q": the path is "/" */
		char *tmp = kl_xasprintf("/%.*s", (int)plen, path);
		build_origin_request(head, hlen, req, method, mlen, tmp, strlen(tmp), version, vlen,
		                     hend);
		free(tmp);
	} else {
		build_origin_request(head, hlen, req, method, mlen, path, plen, version, vlen,
		                     hend);
	}
	return 0;
}

int
egress_parse_request(const uint8_t *head, uint32_t hlen, uint32_t hend, bool via_unix,
                     egress_request *req, const char **why)
{
	const char *h = (const char *)head, *line = "", *host = NULL;
	size_t off = 0, len = 0, hostlen = 0;
	next_line(h, hend, &off, &line, &len);
	const char *sp1 = memchr(line, ' ', len);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line)) : NULL;
	*why = "malformed request line";
	if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1)
		return 400;
	const char *method = line, *target = sp1 + 1, *version = sp2 + 1;
	size_t mlen = (size_t)(sp1 - line), tlen = (size_t)(sp2 - target);
	size_t vlen = len - (size_t)(version - line);
	for (size_t i = 0; i < mlen; i++)
		if (!is_tchar((unsigned char)method[i]))
			return 400;
	for (size_t i = 0; i < tlen; i++)
		if ((unsigned char)target[i] <= ' ' || target[i] == 0x7f)
			return 400;
	if (vlen != 8 || strncmp(version, "HTTP/1.", 7) || !isdigit((unsigned char)version[7]))
		return 400;
	*why = "malformed header line";
	while (next_line(h, hend, &off, &line, &len) && len) {
		const char *colon = memchr(line, ':', len);
		if (!colon || colon == line)
			return 400;
		for (const char *q = line; q < colon; q++)
			if (!is_tchar((unsigned char)*q))
				return 400;
		for (const char *q = colon; q < line + len; q++)
			if ((unsigned char)*q < ' ' && *q != '\t')
				return 400;
		if (hdr_is(line, len, "Host"))
			hdr_value(line, len, &host, &hostlen);
	}
	if (mlen == 7 && !memcmp(method, "CONNECT", 7)) {
		req->connect = true;
		*why = "CONNECT wants host:port";
		if (egress_parse_authority(target, tlen, req->host, sizeof req->host, &req->port,
		                           0) < 0)
			return 400;
		req->pre = kl_xmalloc(hlen - hend + 1);
		memcpy(req->pre, head + hend, hlen - hend);
		req->prelen = hlen - hend;
		return 0;
	}
	return parse_plain(head, hlen, hend, via_unix, req, method, mlen, target, tlen, version,
	                   vlen, host, hostlen, why);
}

/* ---- the gateway's answer ---- */

int
egress_parse_answer(const uint8_t *gwb, uint32_t hend, uint32_t cap, uint32_t *need)
{
	const char *g = (const char *)gwb, *line = "";
	size_t off = 0, len = 0;
	next_line(g, hend, &off, &line, &len);
	if (len < 12 || strncmp(line, "HTTP/1.", 7) || line[8] != ' ' ||
	    !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
	    !isdigit((unsigned char)line[11]) || (len > 12 && line[12] != ' '))
		return -1;
	int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	if (status < 100)
		return -1;
	*need = cap; /* no Content-Length: until EOF */
	while (next_line(g, hend, &off, &line, &len) && len) {
		if (!memchr(line, ':', len))
			return -1;
		if (hdr_is(line, len, "Content-Length")) {
			const char *v;
			size_t vl;
			hdr_value(line, len, &v, &vl);
			unsigned long k = 0;
			bool ok = vl > 0 && vl <= 9;
			for (size_t i = 0; ok && i < vl; i++) {
				ok = isdigit((unsigned char)v[i]);
				k = k * 10 + (unsigned long)(v[i] - '0');
			}
			*need = ok ? (uint32_t)KL_MIN(k, (unsigned long)cap) : cap;
		}
	}
	return status;
}

/* Hop-by-hop and framing headers are ours to write, not the gateway's. */
static bool
gw_header_dropped(const char *line, size_t len)
{
	static const char *const drop[] = {"Connection",
	                                   "Keep-Alive",
	                                   "Proxy-Connection",
	                                   "Content-Length",
	                                   "Transfer-Encoding",
	                                   "Upgrade",
	                                   "TE",
	                                   "Trailer",
	                                   "X-Kiln-Egress",
	                                   NULL};
	for (int i = 0; drop[i]; i++)
		if (hdr_is(line, len, drop[i]))
			return true;
	return false;
}

char *
egress_build_refusal(const uint8_t *gwb, uint32_t gwlen, uint32_t hend, uint32_t need,
                     size_t *ret_len)
{
	const char *g = (const char *)gwb, *line = "HTTP/1.1 502 Bad Gateway";
	size_t off = 0, len = 24, blen = gwlen - hend;
	if (blen > need)
		blen = need;
	char *r = kl_xmalloc(2 * (size_t)hend + blen + 128); /* + a CR per line */
	size_t n = 0;
	/* "HTTP/1.x NNN reason": keep "NNN reason" as the gateway wrote it (the head
	 * was validated: its status line is at least that long). */
	if (!next_line(g, hend, &off, &line, &len) || len < 12) {
		line = "HTTP/1.1 502 Bad Gateway";
		len = 24;
	}
	n += (size_t)sprintf(r, "HTTP/1.1 %.*s\r\n", (int)(len - 9), line + 9);
	while (next_line(g, hend, &off, &line, &len) && len) {
		if (gw_header_dropped(line, len))
			continue;
		memcpy(r + n, line, len);
		n += len;
		r[n++] = '\r';
		r[n++] = '\n';
	}
	n += (size_t)sprintf(r + n,
	                     "Content-Length: %zu\r\nConnection: close\r\nX-Kiln-Egress: "
	                     "gateway\r\n\r\n",
	                     blen);
	memcpy(r + n, g + hend, blen);
	n += blen;
	*ret_len = n;
	return r;
}
