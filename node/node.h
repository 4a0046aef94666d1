/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkiln_node's public API: a node runs tool calls in pools of pre-warmed
 * sandboxes on one io_uring event loop. The transport (nng to a scheduler,
 * a local listener, or an in-process caller such as `kiln dev` and the tests)
 * hands it Kiln__NodeWork messages and receives Kiln__NodeReply messages.
 *
 * Threading: node_new/node_free on one thread; node_start runs the loop on
 * its own thread (or node_run in the caller's); node_submit, node_stats and
 * node_stop may be called from any thread. Reply callbacks run on the loop
 * thread and must not block.
 */
#ifndef NODE_NODE_H
#define NODE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.pb-c.h"

#define NODE_MAX_TEMPLATES 8

typedef struct node node;

typedef struct node_template_cfg {
	char name[64];
	/* Base image: NULL or "host" composes the root from the host's /usr (and
	 * /bin, /lib... links) plus a curated /etc, like bubblewrap; otherwise a
	 * directory whose top-level entries are bound read-only. */
	const char *rootfs;
	uint32_t target; /* idle sandboxes to keep warm */
	uint64_t workspace_bytes;
	uint64_t tmp_bytes;
	uint64_t memory_bytes; /* default session limits (0: none) */
	uint32_t pids;
	uint32_t cpu_millicores;
	uint32_t call_timeout_ms;
	uint64_t output_bytes;
	uint32_t idle_ttl_ms;
} node_template_cfg;

typedef struct node_config {
	const char *name;             /* node id; default "node-<hostname>-<k>" */
	const char *init_path;        /* kiln-sandbox-init; default: beside the executable */
	const char *cgroup_root;      /* absolute cgroupfs path; NULL: our own cgroup */
	bool allow_unenforced_limits; /* run even if memory/pids limits cannot be enforced */
	bool move_self;               /* move the node process into kiln-<name>/daemon */
	uint32_t max_sessions;
	uint32_t max_calls; /* admitted calls (queued + running) across sessions */
	uint32_t max_queue_per_session;
	uint32_t refill_per_s; /* pool refill token bucket rate */
	uint32_t refill_burst;
	uint32_t max_creating; /* sandboxes being created at once */
	bool cold_start;       /* claim on an empty pool: create one (true) or fail */
	uint32_t uid_base;     /* 0: pick a free range of uid_count host uids */
	uint32_t uid_count;
	uint32_t shutdown_grace_ms;   /* SIGTERM: how long running calls may finish */
	uint32_t idle_sandbox_ttl_ms; /* recycle idle pool sandboxes after this long (0: never) */
	bool fsync_writes;            /* file tools fsync before rename */
	int ntemplates;
	node_template_cfg templates[NODE_MAX_TEMPLATES];
	const char *const *etc_entries; /* /etc entries bound into "host" roots (NULL: default) */
	/* Sandbox egress (docs/egress-node.md). egress_url: the gateway's egress
	 * address, "tcp://host:port" or "host:port", resolved once at node_new; NULL:
	 * egress is disabled and every sandbox's proxy answers 403. egress_token: sent
	 * to the gateway to authenticate this node (the cluster join token). Strings
	 * are copied or resolved by node_new. Bounds: 0 takes the default. */
	const char *egress_url;
	const char *egress_token;
	uint32_t egress_max_conns;       /* proxy connections per node (1024) */
	uint32_t egress_max_per_session; /* per session (64); more are answered 429 */
	uint32_t egress_idle_ms;         /* an idle tunnel is closed after (300000) */
} node_config;

/* Sensible defaults: one "default" template on the host base, target 4. */
void node_config_defaults(node_config *c);

/* Create a node: discovers cgroups (refusing to start, with a message in err,
 * if memory/pids limits cannot be enforced and allow_unenforced_limits is
 * false), cleans what a crashed previous run with the same name left, builds
 * the seccomp filter and starts filling the pools once running. */
int node_new(const node_config *cfg, node **ret, char *err, size_t errlen);
/* Run the loop on a new thread. */
int node_start(node *n);
/* Run the loop on this thread until node_stop; returns 0 after a clean shutdown. */
int node_run(node *n);
/* Graceful stop (any thread; idempotent): refuse new work, let running calls
 * finish for up to shutdown_grace_ms, cancel the rest, destroy every sandbox.
 * If the loop runs on node_start's thread, waits for it to exit. */
void node_stop(node *n);
/* Wait until the loop started by node_start exits (after a stop was requested
 * by a signal handler, a drain or a refusal). */
void node_wait(node *n);
/* Ask for a stop without waiting (async-signal-safe: a write to an eventfd). */
void node_request_stop(node *n);
void node_free(node *n);

typedef void node_reply_fn(void *arg, const Kiln__NodeReply *reply);
/* Submit work (any thread). The reply callback runs exactly once on the loop
 * thread, except for Cancel, which has no reply of its own (the cancelled
 * call's result carries CANCELLED). The message is copied. Errors: -EMSGSIZE,
 * -ESHUTDOWN (the node is stopping). */
int node_submit(node *n, const Kiln__NodeWork *work, node_reply_fn *fn, void *arg);

typedef struct node_template_stats {
	char name[64];
	uint32_t warm, target, creating, busy;
} node_template_stats;

typedef struct node_stats {
	char name[128];
	uint64_t incarnation;
	uint32_t uid_base, uid_count; /* host ids of this node's sandboxes */
	bool limits_enforced;
	unsigned enforced_ctrl; /* CG_CTRL_* */
	uint32_t sessions, running, queued, max_sessions, max_calls;
	uint64_t calls_done, sandboxes_created, sandboxes_destroyed, cold_starts, warm_claims;
	uint64_t create_failures;
	double create_ms_avg; /* mean sandbox creation time (clone to READY) */
	int ntemplates;
	node_template_stats templates[NODE_MAX_TEMPLATES];
	bool stopping;
	/* Sandbox egress, node side (the gateway keeps the audit record). */
	bool egress_enabled;
	uint32_t egress_active;     /* proxy connections open now */
	uint64_t egress_accepted;   /* proxy connections accepted */
	uint64_t egress_tunnels;    /* of which the gateway let through */
	uint64_t egress_refused;    /* ended without a tunnel (refused, malformed, over a cap) */
	uint64_t egress_bytes_up;   /* relayed sandbox -> gateway, closed connections */
	uint64_t egress_bytes_down; /* gateway -> sandbox */
} node_stats;
/* A snapshot (any thread). */
void node_get_stats(node *n, node_stats *st);

/* The exact number of sessions now (asks the loop; any other thread). */
uint32_t node_session_count(node *n);

/* Live sessions for re-registration with a restarted scheduler. Fills up to
 * max entries (heap strings inside; free with node_sessions_free). */
int node_list_sessions(node *n, Kiln__SessionInfo ***ret, size_t *ret_n);
void node_sessions_free(Kiln__SessionInfo **s, size_t n);

/* Human text: which limits this node enforces ("memory pids cpu" or a list of
 * what is missing). */
const char *node_limits_text(node *n);

#endif
