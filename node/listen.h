/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A node's own listener: NodeWork requests straight to this node over nng
 * REP (Envelope{node_work} -> Envelope{node_reply}), without a scheduler.
 * For single-node use, and for the benchmark that compares calls straight to
 * a node with calls through the scheduler. No tenant authentication: bind it
 * to a local address (ipc:// or 127.0.0.1) only.
 */
#ifndef NODE_LISTEN_H
#define NODE_LISTEN_H

#include <stddef.h>

#include "node.h"

typedef struct node_listener node_listener;

int node_listener_start(node *n, const char *url, node_listener **ret, char *err, size_t errlen);
void node_listener_stop(node_listener *l);

#endif
