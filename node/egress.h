/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sandbox egress, node side (docs/egress-node.md). A sandbox has only lo; its
 * init creates the proxy's listening sockets (TCP 127.0.0.1:3128 in the
 * sandbox's netns, unix /run/kiln/proxy.sock in its root) and hands them to
 * the node with KI_READY. Once the sandbox's session is open, the node
 * accepts on them on the ring, reads one HTTP proxy request head (CONNECT
 * host:port, or an absolute-form plain HTTP request), and opens a CONNECT
 * tunnel to the cluster's egress gateway carrying the node's token and the
 * session's tenant; the gateway decides, dials and audits. The node relays
 * bytes both ways through bounded buffers, or passes the gateway's refusal
 * (403, 502...) back to the tool. Every connection of a session is closed
 * with it. Everything here runs on the loop thread.
 */
#ifndef NODE_EGRESS_H
#define NODE_EGRESS_H

#include <stddef.h>
#include <stdint.h>

struct node;
struct session;
struct node_stats;

typedef struct node_egress node_egress; /* the node's egress state (n->egress) */
typedef struct egress_sess egress_sess; /* one open session's proxy (s->egress) */

/* Build the node's egress state from its config (egress_url, egress_token,
 * bounds): resolves the gateway's address once, here. 0, or -EINVAL with a
 * message in err (bad address, unresolvable host, token with control bytes).
 * Called from node_new (any thread, before the loop runs). */
int egress_init(struct node *n, char *err, size_t errlen);
/* After the loop has stopped (every session, and so every connection, is gone). */
void egress_fini(struct node *n);

/* A session is open: take its sandbox's listeners (sandbox.proxy_fd) and
 * start accepting. A sandbox without listeners gets no proxy (and no proxy
 * environment). */
void egress_session_start(struct session *s);
/* The session is closing: stop accepting and close every proxy connection at
 * once (both sockets shut down, ops cancelled); memory goes when the
 * cancellations complete. Idempotent. */
void egress_session_stop(struct session *s);

/* The HTTP(S)_PROXY / NO_PROXY variables (upper and lower case) for the
 * session's tool processes when its proxy listens on 127.0.0.1:3128; NULL
 * otherwise. Static strings. */
const char *const *egress_env(const struct session *s);

/* Timeouts (request head, gateway answer, idle tunnels, lingering closes)
 * and re-arming listeners after an accept error. From the node's tick. */
void egress_tick(struct node *n);

/* Counters into the node's stats snapshot. */
void egress_fill_stats(struct node *n, struct node_stats *st);

#endif
