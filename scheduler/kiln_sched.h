/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkiln_sched: the scheduler. Nodes dial it and pull work; clients send
 * ClientRequests; it authenticates tenants, enforces quotas, shares the
 * cluster by weight, places sessions (power of two choices on free warm
 * sandboxes and load), keeps session affinity, and owns the failure
 * semantics: at-most-once, NODE_LOST for calls in flight on a lost node,
 * re-placement of work no node had started, session table rebuilt from the
 * nodes' re-registration after a restart.
 *
 * Threading: all state sits behind one mutex; nng's threads run the
 * callbacks, and replies are sent after the lock is released. sched_new and
 * sched_free on one thread; sched_stop from any thread.
 */
#ifndef KILN_SCHED_H
#define KILN_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "sched_config.h"

typedef struct sched sched;

/* Create and start listening on cfg->node_url and cfg->client_url (either may
 * be "" to skip it); extra_node_url / extra_client_url add a second listener
 * each (e.g. inproc:// for `kiln dev`). The config is copied. */
int sched_new(const sched_config *cfg, const char *extra_node_url, const char *extra_client_url,
              sched **ret, char *err, size_t errlen);
/* Graceful stop: refuse new requests, wait up to the grace period for calls
 * in flight, then close the sockets. Idempotent. */
void sched_stop(sched *s);
void sched_free(sched *s);

typedef struct sched_counters {
	uint32_t nodes_ready, nodes_draining, sessions, queued, inflight;
	uint64_t placements, calls_done, node_lost, rejected;
} sched_counters;
void sched_get_counters(sched *s, sched_counters *c);

/* The placement decision alone (for the placement benchmark): choose a node
 * for a new session of `template_`; returns the node index or -1. */
int sched_place_bench(sched *s, const char *template_);

#endif
