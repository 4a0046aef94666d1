/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cluster membership of a node: dial the scheduler (nng REQ, resends off so
 * a request is never delivered twice), register with the join token, the
 * node's capacity, templates, labels and live sessions, then keep one
 * heartbeat and one work pull per slot outstanding. Work pulled is handed to
 * the node; its reply rides on the slot's next pull. A lost scheduler means
 * registering again (with the sessions this node still holds, so a restarted
 * scheduler rebuilds its table). A refusal (join token, protocol version,
 * removal by the operator) is fatal: the node stops and says why.
 */
#ifndef NODE_MEMBER_H
#define NODE_MEMBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"

typedef struct node_member node_member;

typedef struct node_member_cfg {
	const char *url;           /* scheduler's node address, e.g. tcp://sched:7070 */
	const char *token;         /* join token */
	uint32_t slots;            /* concurrent work pulls (0: the node's max_calls, at most 64) */
	const char *const *labels; /* "k=v" strings, NULL-terminated (may be NULL) */
	uint32_t protocol_version; /* 0: ours. Tests set another to see the refusal. */
} node_member_cfg;

/* Start membership (returns at once; registration happens in the background). */
int node_member_start(node *n, const node_member_cfg *cfg, node_member **ret, char *err,
                      size_t errlen);
/* Stop pulling and close the socket; waits for callbacks to finish. */
void node_member_stop(node_member *m);
/* True (and the reason) when the scheduler refused this node for good. */
bool node_member_refused(node_member *m, char *why, size_t len);
/* True once registered (for tests and `kiln dev`). */
bool node_member_registered(node_member *m);
/* True when the scheduler asked this node to drain. */
bool node_member_draining(node_member *m);

#endif
