/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's egress proxy for node proxies (see gw_egress.c): CONNECT
 * requests carrying X-Kiln-Node-Token, X-Kiln-Tenant and X-Kiln-Session,
 * decided by the tenant's policy, relayed, and audited.
 */
#ifndef GW_EGRESS_H
#define GW_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_config.h"
#include "kl_audit.h"

typedef struct gw_egress gw_egress;

/* What a node proxy's request head asks for (gw_egress_parse). */
typedef struct gw_egress_req {
	char target[512]; /* the CONNECT target, cut to 511 bytes */
	char host[300];   /* the target before its last ':' ("" unless port) */
	uint16_t port;    /* 0: not host:port (or cut, or with control bytes) */
	bool has_token;   /* an X-Kiln-Node-Token header was present */
	char token[300];  /* its value, cut to fit */
	char tenant[80];  /* X-Kiln-Tenant, X-Kiln-Session ("" when absent), cut */
	char session[80];
} gw_egress_req;

/*
 * Parse a node proxy's request head: head is NUL-terminated and holds the
 * request line and headers up to and including the blank line ("\r\n\r\n"),
 * as the proxy reads it. Headers are matched case-insensitively at line
 * starts, the first of each name counts, values lose leading blanks. A pure
 * function (any thread): the proxy and fuzz_http run the same code.
 * 0 with *ret filled (the caller checks the token, then ret->port), or
 * -EBADMSG when the request line is not "CONNECT target ..." (400).
 */
int gw_egress_parse(const char *head, gw_egress_req *ret);

/* Listen on cfg->egress_listen and serve in background threads. audit may be
 * NULL (decisions are still logged). cfg must outlive the proxy. */
int gw_egress_start(const gw_config *cfg, kl_audit *audit, gw_egress **ret, char *err,
                    size_t errlen);
void gw_egress_stop(gw_egress *g);
void gw_egress_counts(gw_egress *g, uint64_t *allowed, uint64_t *denied);

#endif
