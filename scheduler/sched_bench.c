/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bench-only hooks (see sched_bench.h): a fake node is built the way
 * on_register() in sched.c builds a real one, minus the connection, and
 * placement is timed through sched_place() itself, so the microbenchmark
 * measures exactly the code that places real sessions.
 */
#include "sched_bench.h"

#include "sched_impl.h"

#include "kl_util.h"

#include <errno.h>

int
sched_bench_add_node(sched *s, const char *id, uint32_t warm, uint32_t sessions,
                     uint32_t max_sessions)
{
	pthread_mutex_lock(&s->mu);
	if (kl_map_get(&s->nodes, id)) {
		pthread_mutex_unlock(&s->mu);
		return -EEXIST;
	}
	snode *n = kl_xcalloc(1, sizeof *n);
	kl_strlcpy(n->id, id, sizeof n->id);
	n->incarnation = 1;
	kl_list_init(&n->parked_work);
	kl_list_init(&n->ctrl);
	kl_list_init(&n->hbq);
	kl_list_init(&n->sessions);
	kl_map_init(&n->inflight);
	n->fq = fairq_new(s->tenants.n);
	for (uint32_t i = 0; i < s->tenants.n; i++)
		fairq_set_weight(n->fq, i, s->tenants.v[i].cfg->weight);
	n->state = N_READY;
	n->slots = 64;
	n->free_slots = 64;
	n->max_sessions = max_sessions ? max_sessions : 1024;
	n->nsessions = sessions;
	n->ntmpl = 1;
	kl_strlcpy(n->tmpl[0].name, "default", sizeof n->tmpl[0].name);
	n->tmpl[0].warm = warm;
	n->tmpl[0].target = warm;
	n->registered_ms = n->last_hb_ms = sched_now_ms();
	kl_map_put(&s->nodes, n->id, n);
	kl_list_add_tail(&s->node_list, &n->link);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

int
sched_bench_place(sched *s, const char *template_)
{
	pthread_mutex_lock(&s->mu);
	snode *n = sched_place(s, template_ ? template_ : "", NULL);
	pthread_mutex_unlock(&s->mu);
	return n ? 0 : -ENOENT;
}
