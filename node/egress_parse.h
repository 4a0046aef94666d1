/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox egress proxy's request parsing (node/egress.c): where a
 * request head ends, host[:port] authorities, and the whole request head
 * (CONNECT host:port, or an absolute-form plain HTTP request rewritten to
 * origin form). Pure functions with no state, shared by the proxy and the
 * fuzz_http target so that both run the same code; any thread.
 */
#ifndef NODE_EGRESS_PARSE_H
#define NODE_EGRESS_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EGRESS_HOST_MAX 256 /* host buffer: names are at most 253 bytes */

/* What a request head asks for. */
typedef struct egress_request {
	bool connect;               /* a CONNECT (set even when its target is refused) */
	char host[EGRESS_HOST_MAX]; /* without brackets; "" unless parsed */
	uint16_t port;              /* 0 unless parsed */
	uint8_t *pre;               /* malloc'd on success: the tunnel's first bytes */
	uint32_t prelen;
} egress_request;

/* Past the blank line ("\n\n" or "\n\r\n") that ends a head in buf[0, len),
 * or 0. from: where the previous search stopped (so a head arriving in
 * pieces is scanned once). */
uint32_t egress_head_end(const uint8_t *buf, uint32_t len, uint32_t from);

/* host[:port] or [v6][:port] (n bytes of s) into host (without brackets,
 * NUL-terminated, at most 253 bytes) and port; a missing port is defport
 * (0: required). Names and IPv4 literals are [A-Za-z0-9._-], IPv6 literals
 * hex digits, ':' and '.': nothing that could break the gateway's request.
 * 0, or -1 (nothing written). */
int egress_parse_authority(const char *s, size_t n, char *host, size_t hostcap, uint16_t *port,
                           uint16_t defport);

/* "host:port", or "[host]:port" when host has a ':'; snprintf's result. */
int egress_fmt_authority(char *buf, size_t cap, const char *host, uint16_t port);

/* The request the proxy sends the gateway for host:port (a tunnel, also for
 * plain HTTP): CONNECT with the node's token (none if NULL), the session's
 * tenant and id, and the node's name. malloc'd. */
char *egress_connect_request(const char *host, uint16_t port, const char *token, const char *tenant,
                             const char *session, const char *node);

/*
 * Parse the request head head[0, hend) (hend from egress_head_end; the
 * hlen - hend bytes after it are body bytes the client already sent). On
 * the unix socket (via_unix) an origin-form request with a Host header is
 * taken as meant for that host. Returns 0 with req->pre holding what the
 * tunnel starts with (for CONNECT the bytes after the head; for plain HTTP
 * the request in origin form with our Host and "Connection: close", then
 * those bytes), or an HTTP status (400) with *why set to a static reason.
 * req must be zeroed by the caller; connect, host and port may be set on
 * failure too (for the log).
 */
int egress_parse_request(const uint8_t *head, uint32_t hlen, uint32_t hend, bool via_unix,
                         egress_request *req, const char **why);

/* The gateway's answer head gwb[0, hend) (hend from egress_head_end): its
 * status (100..999), and in *need how much body a refusal has (its
 * Content-Length, at most cap; cap when there is none or it is malformed).
 * -1 for a malformed head (*need may be written). */
int egress_parse_answer(const uint8_t *gwb, uint32_t hend, uint32_t cap, uint32_t *need);

/* The response that passes a refusal the gateway answered (gwb: its head of
 * hend bytes, validated by egress_parse_answer, then gwlen - hend body
 * bytes, of which at most need are kept) to the client: "HTTP/1.1 NNN
 * reason" as the gateway wrote it, its headers without the hop-by-hop and
 * framing ones, our Content-Length and "Connection: close", the body.
 * malloc'd; its length in *ret_len. */
char *egress_build_refusal(const uint8_t *gwb, uint32_t gwlen, uint32_t hend, uint32_t need,
                           size_t *ret_len);

#endif
