/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Weighted fair queueing of calls across tenants (stride scheduling, i.e.
 * start-time fair queuing with one pass value per tenant). Each tenant has a
 * FIFO of intrusive items; pop serves the backlogged tenant with the lowest
 * pass and advances it by 1/weight, so while tenants stay backlogged they are
 * served in proportion to their weights. A tenant that was idle rejoins at
 * the queue's current virtual time: idling earns no credit to burst later.
 *
 * push, remove and the length queries are O(1), pop and peek O(backlogged
 * tenants); nothing allocates after fairq_new. Not thread-safe: one owner
 * (the scheduler's loop thread). The queue does not own the items.
 */
#ifndef SCHED_FAIRQ_H
#define SCHED_FAIRQ_H

#include <stdint.h>

#include "kl_list.h"

#define FAIRQ_WEIGHT_MAX 65536

typedef struct fairq_item {
	kl_list link;    /* private to the queue while queued */
	uint32_t tenant; /* set by the caller before push; < ntenants */
} fairq_item;

typedef struct fairq fairq;

/* A queue for tenants 0..ntenants-1, each with weight 1. Aborts on OOM like
 * kl_xmalloc; never NULL. */
fairq *fairq_new(uint32_t ntenants);
/* Accepts NULL. Items still queued are dropped, not touched: their links are
 * stale afterwards. */
void fairq_free(fairq *q);
/* Weight 0 counts as 1, above FAIRQ_WEIGHT_MAX as the max. Takes effect from
 * the tenant's next pop; its place in line now is kept. */
void fairq_set_weight(fairq *q, uint32_t tenant, uint32_t weight);
/* Append to it->tenant's FIFO. it must not be queued already. Aborts if
 * it->tenant is out of range (a bug that would otherwise corrupt memory). */
void fairq_push(fairq *q, fairq_item *it);
/* Next by weighted fairness, unlinked; NULL if empty. */
fairq_item *fairq_pop(fairq *q);
/* What fairq_pop would return, left in place; NULL if empty. */
fairq_item *fairq_peek(fairq *q);
/* Unlink an item queued in q (e.g. a cancelled call). An item that was
 * popped or removed already, or is zeroed, is left alone, so cancellation
 * paths need not know whether the call was still waiting. */
void fairq_remove(fairq *q, fairq_item *it);
uint32_t fairq_len(const fairq *q);
/* 0 for an out-of-range tenant. */
uint32_t fairq_tenant_len(const fairq *q, uint32_t tenant);

#endif
