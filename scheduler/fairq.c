/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stride scheduling over per-tenant FIFOs. Each tenant has a pass (the
 * virtual time of its next service) and a stride (STRIDE_ONE / weight); the
 * queue's virtual time is the pass of the last tenant served, which never
 * decreases. Passes are 64-bit and wrap: every backlogged tenant's pass lies
 * within one stride above the virtual time, so passes are compared as
 * unsigned offsets from it, which stays right across the wrap. The virtual
 * time starts just below the wrap (like the kernel's INITIAL_JIFFIES) so that
 * every run, tests included, goes through it early.
 *
 * Backlogged tenants sit on a list and pop scans it: with tens of tenants a
 * scan of a few cache lines beats maintaining a heap, and it keeps push and
 * remove O(1).
 */
#include "fairq.h"

#include "kl_util.h"

#include <stdio.h>

/* A weight-1 tenant's stride: large enough that STRIDE_ONE / weight loses
 * at most 0.4% of a share at weight 65536 (and nothing at powers of two). */
#define STRIDE_ONE  (1ull << 24)
#define VTIME_START ((uint64_t)0 - 256 * STRIDE_ONE)

struct fq_tenant {
	kl_list items;
	kl_list link;  /* on q->backlog while items is not empty */
	uint64_t pass; /* virtual time of its next service */
	uint64_t stride;
	uint32_t len;
};

struct fairq {
	struct fq_tenant *t;
	uint32_t n, len;
	uint64_t vtime;
	kl_list backlog;
};

static struct fq_tenant *
tenant_of(fairq *q, uint32_t tenant)
{
	if (kl_unlikely(tenant >= q->n)) {
		fprintf(stderr, "kiln: fairq: tenant %u out of range (%u tenants)\n", tenant, q->n);
		abort();
	}
	return &q->t[tenant];
}

fairq *
fairq_new(uint32_t ntenants)
{
	fairq *q = kl_xcalloc(1, sizeof(*q));
	q->t = kl_xcalloc(ntenants, sizeof(*q->t));
	q->n = ntenants;
	q->vtime = VTIME_START;
	kl_list_init(&q->backlog);
	for (uint32_t i = 0; i < ntenants; i++) {
		kl_list_init(&q->t[i].items);
		kl_list_init(&q->t[i].link);
		q->t[i].pass = VTIME_START;
		q->t[i].stride = STRIDE_ONE;
	}
	return q;
}

void
fairq_free(fairq *q)
{
	if (!q)
		return;
	free(q->t);
	free(q);
}

void
fairq_set_weight(fairq *q, uint32_t tenant, uint32_t weight)
{
	weight = KL_MIN(KL_MAX(weight, 1u), (uint32_t)FAIRQ_WEIGHT_MAX);
	tenant_of(q, tenant)->stride = STRIDE_ONE / weight;
}

void
fairq_push(fairq *q, fairq_item *it)
{
	struct fq_tenant *ft = tenant_of(q, it->tenant);
	if (!ft->len) {
		/* Idle tenants rejoin at max(own pass, vtime). A pass ahead of vtime
		 * is at most one stride ahead (it was just served); any larger offset
		 * means behind, modulo the wrap. */
		if (ft->pass - q->vtime > STRIDE_ONE)
			ft->pass = q->vtime;
		kl_list_add_tail(&q->backlog, &ft->link);
	}
	kl_list_add_tail(&ft->items, &it->link);
	ft->len++;
	q->len++;
}

static struct fq_tenant *
next_tenant(fairq *q)
{
	struct fq_tenant *best = NULL;
	uint64_t best_off = UINT64_MAX;
	kl_list *pos;
	kl_list_for_each (pos, &q->backlog) {
		struct fq_tenant *ft = kl_list_entry(pos, struct fq_tenant, link);
		uint64_t off = ft->pass - q->vtime;
		if (off < best_off) {
			best = ft;
			best_off = off;
		}
	}
	return best;
}

static void
unlink_item(fairq *q, struct fq_tenant *ft, fairq_item *it)
{
	kl_list_del(&it->link);
	ft->len--;
	q->len--;
	if (!ft->len)
		kl_list_del(&ft->link);
}

fairq_item *
fairq_pop(fairq *q)
{
	struct fq_tenant *ft = next_tenant(q);
	if (!ft)
		return NULL;
	fairq_item *it = kl_list_entry(ft->items.next, fairq_item, link);
	q->vtime = ft->pass;
	ft->pass += ft->stride;
	unlink_item(q, ft, it);
	return it;
}

fairq_item *
fairq_peek(fairq *q)
{
	struct fq_tenant *ft = next_tenant(q);
	return ft ? kl_list_entry(ft->items.next, fairq_item, link) : NULL;
}

void
fairq_remove(fairq *q, fairq_item *it)
{
	if (!kl_list_linked(&it->link))
		return;
	unlink_item(q, tenant_of(q, it->tenant), it);
}

uint32_t
fairq_len(const fairq *q)
{
	return q->len;
}

uint32_t
fairq_tenant_len(const fairq *q, uint32_t tenant)
{
	return tenant < q->n ? q->t[tenant].len : 0;
}
