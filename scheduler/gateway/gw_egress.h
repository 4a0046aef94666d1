/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's egress proxy for node proxies (see gw_egress.c): CONNECT
 * requests carrying X-Kiln-Node-Token, X-Kiln-Tenant and X-Kiln-Session,
 * decided by the tenant's policy, relayed, and audited.
 */
#ifndef GW_EGRESS_H
#define GW_EGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "gw_config.h"
#include "kl_audit.h"

typedef struct gw_egress gw_egress;

/* Listen on cfg->egress_listen and serve in background threads. audit may be
 * NULL (decisions are still logged). cfg must outlive the proxy. */
int gw_egress_start(const gw_config *cfg, kl_audit *audit, gw_egress **ret, char *err,
                    size_t errlen);
void gw_egress_stop(gw_egress *g);
void gw_egress_counts(gw_egress *g, uint64_t *allowed, uint64_t *denied);

#endif
