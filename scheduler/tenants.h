/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tenants at run time: authentication by API token, the per-tenant token
 * bucket that bounds the submit rate, and the check of requested session
 * limits against the tenant's caps. The table is built once from a
 * sched_config and indexed like it; the counters are owned by the scheduler
 * core. Nothing here allocates after init or locks: everything runs on the
 * scheduler's loop thread.
 */
#ifndef SCHED_TENANTS_H
#define SCHED_TENANTS_H

#include <stddef.h>
#include <stdint.h>

#include "sched_config.h"

typedef struct sched_tenant {
	const sched_tenant_cfg *cfg;
	uint32_t idx;                        /* index in the table */
	uint32_t sessions, inflight, queued; /* maintained by the scheduler core */
	double tokens;                       /* token bucket */
	uint64_t tokens_ns;
	uint64_t calls_done, rejected; /* maintained by the scheduler core */
} sched_tenant;

typedef struct sched_tenants {
	sched_tenant *v;
	uint32_t n;
} sched_tenants;

/* Build the table from c, which must outlive it (tenants point at its entries).
 * Every bucket starts full. 0, or -EINVAL if a tenant's token is empty or not
 * padded with zeros to the end of its buffer (as the loader leaves it). */
int sched_tenants_init(sched_tenants *t, const sched_config *c);
/* Accepts a zeroed or finalized table. */
void sched_tenants_fini(sched_tenants *t);

/* Constant-time over ALL tenants: compares the token with every tenant's token
 * (kl_consttime_eq over the whole fixed-size token buffer, no early exit), so
 * timing reveals neither which tenant matched nor how long the tokens are.
 * NULL if none matches, and for a NULL, empty or over-long token. */
sched_tenant *sched_tenants_auth(sched_tenants *t, const char *token);
/* By name; NULL if unknown. */
sched_tenant *sched_tenants_find(sched_tenants *t, const char *name);

/* Rate admission: take one token at now_ns (kl_now_ns(), monotonic). 0 ok;
 * -EAGAIN with *retry_after_ms (time until a token is available, at least 1)
 * when the bucket is empty: a caller that waits that long is admitted. A rate
 * of 0 means unlimited. Does not count rejections (the core does). */
int sched_tenant_take(sched_tenant *t, uint64_t now_ns, uint32_t *retry_after_ms);

/*
 * Check requested session limits against the tenant's maxima and resolve the
 * fields left 0 into *out: the tenant's default, or else its cap (a capped
 * field is never left 0, since 0 asks for the node template's default, which
 * the cap would not bound), or else 0. req may be NULL (nothing requested).
 * Error: -EPERM with a message naming the field, the requested value and the
 * max ("memory 4 GiB exceeds tenant acme's max 2 GiB"); *out is untouched.
 * err may be NULL.
 */
int sched_tenant_limits(const sched_tenant *t, const Kiln__Limits *req, Kiln__Limits *out,
                        char *err, size_t errlen);

#endif
