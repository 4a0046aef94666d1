/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A real cluster for integration tests: kiln-scheduler and kiln-node
 * processes on loopback TCP, started from the build's bin directory with a
 * generated config (tenants, tokens) in a temporary directory. Node stderr
 * goes to per-node log files the tests can read (nodes run with --log debug,
 * which logs one "job=N start" line per call they execute). Failure tests
 * kill and restart the scheduler and nodes in place: same ports, names,
 * arguments and (appended) logs.
 */
#ifndef KT_CLUSTER_H
#define KT_CLUSTER_H

#include <stdbool.h>
#include <sys/types.h>

#include "kiln.h"

#define KT_MAX_NODES 8
#define KT_ADMIN     "kt-admin-token-0123456789"
#define KT_JOIN      "kt-join-token-0123456789"
#define KT_ALPHA     "kt-alpha-token-0123456789"
#define KT_BETA      "kt-beta-token-0123456789"
#define KT_SMALL     "kt-small-token-0123456789"

typedef struct kt_cluster {
	char dir[256];
	int instance; /* clusters prepared before this one in this process */
	char bindir[4096];
	int node_port, client_port;
	char node_url[64], client_url[64];
	pid_t sched;
	pid_t nodes[KT_MAX_NODES]; /* 0: not running (stopped, or killed and reaped) */
	char names[KT_MAX_NODES][64];
	char *extra[KT_MAX_NODES][24]; /* copies of each node's extra arguments, NULL-ended */
	int nnodes;
} kt_cluster;

/* Prepare (temp dir, config with tenants alpha (weight 1), beta (weight 3) and
 * small (2 sessions, 2 calls in flight, 5 calls/s); extra_ini is appended).
 * Each cluster a process prepares gets its own pair of ports. */
void kt_cluster_init(kt_cluster *c, const char *extra_ini);
/* Start the scheduler and wait until its client address answers. */
void kt_cluster_start_sched(kt_cluster *c);
/* Send sig to the scheduler; SIGKILL also waits for it (kill -9: a crash).
 * kt_cluster_start_sched starts it again with the same ports and config. */
void kt_cluster_kill_sched(kt_cluster *c, int sig);
/* Start a node with extra arguments (NULL-terminated, at most 23, copied);
 * returns its index. Waits until the scheduler lists it. */
int kt_cluster_add_node(kt_cluster *c, const char *const *extra);
/* Send sig to node i; SIGKILL also reaps it (nodes[i] becomes 0). */
void kt_cluster_kill_node(kt_cluster *c, int i, int sig);
/* SIGTERM node i and wait (15 s) for it: its wait status (nodes[i] becomes 0). */
int kt_cluster_stop_node(kt_cluster *c, int i);
/* Start node i again (it must not be running) with the same name, arguments
 * and log, e.g. after a kill -9: the new run removes what the old one left.
 * Does not wait for its registration. */
void kt_cluster_restart_node(kt_cluster *c, int i);
/* The index of the node called id, or -1. */
int kt_cluster_node_index(kt_cluster *c, const char *id);
/* Start a node without waiting (e.g. one expected to be refused). */
pid_t kt_cluster_spawn_node(kt_cluster *c, const char *name, const char *const *extra,
                            const char *log);
/* Wait until the scheduler lists n ready nodes (admin status). */
void kt_cluster_wait_nodes(kt_cluster *c, int n);
/* Start a program with stderr appended to log (NULL: inherited). */
pid_t kt_spawn(const char *const *argv, const char *log);
/* Wait for a process to exit; returns its wait status or -1 on timeout. */
int kt_wait_pid(pid_t p, int timeout_ms);
kiln_client *kt_cluster_client(kt_cluster *c, const char *token);
/* Count lines containing needle in node i's log. */
int kt_cluster_log_count(kt_cluster *c, int i, const char *needle);
/* Count lines containing needle in the scheduler's log (all its runs). */
int kt_cluster_sched_log_count(kt_cluster *c, const char *needle);
/* Execution counts per job id across all node logs: returns the largest
 * number of "job=<id> start" lines for any single id (1 = nothing ran twice). */
int kt_cluster_max_runs_per_job(kt_cluster *c, int *distinct_jobs);
/* SIGTERM everything, wait, remove the temp dir. */
void kt_cluster_stop(kt_cluster *c);
/* The scheduler's status as the admin (fails the test if it cannot be had);
 * free with kiln_status_free. */
Kiln__StatusReply *kt_cluster_status(kt_cluster *c);
/* Node id's entry in st, or NULL. */
Kiln__NodeStatus *kt_status_node(Kiln__StatusReply *st, const char *id);
/* Wait up to timeout_ms until the scheduler sees at least n warm sandboxes
 * of template tmpl on node i; fails the test otherwise. */
void kt_cluster_wait_warm(kt_cluster *c, int i, const char *tmpl, uint32_t n, int timeout_ms);

#endif
