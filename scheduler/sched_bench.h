/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bench-only hooks into the scheduler, for kiln-bench's placement
 * microbenchmark: register fake nodes (no connection, no heartbeats) and
 * time the placement decision as the client path makes it (lock, choose,
 * unlock). Not for production code: a fake node has no pipe, so any work
 * placed on it would never run. Linked only into kiln-bench
 * (bench/CMakeLists.txt compiles scheduler/sched_bench.c into it).
 */
#ifndef SCHED_BENCH_H
#define SCHED_BENCH_H

#include <stdint.h>

#include "kiln_sched.h"

/*
 * Register a fake ready node `id` with one template "default" holding `warm`
 * idle sandboxes, `sessions` of `max_sessions` in use. Create the scheduler
 * with a dead_after longer than the benchmark, or the ticker removes the node
 * for want of heartbeats. 0, or -EEXIST. Any thread.
 */
int sched_bench_add_node(sched *s, const char *id, uint32_t warm, uint32_t sessions,
                         uint32_t max_sessions);

/* One placement for a new session of template_ ("" = default), under the
 * scheduler's lock, as sched_client.c does it: 0 when a node was chosen,
 * -ENOENT when none is eligible. Any thread. */
int sched_bench_place(sched *s, const char *template_);

#endif
