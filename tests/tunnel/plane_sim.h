/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-plane-sim: a control-plane simulator for the egress tunnel
 * (docs/tunnel-sim.md). It plays the remote side of kiln-gateway's one TLS
 * connection: a work queue fed from a trace file (sessions and tool calls),
 * the CONTROL-stream protocol (RESUME in, ACK out), and local HTTP listeners
 * that carry MCP connections through the tunnel to the gateway's routes.
 *
 * The simulator is one thread and one poll loop (kiln_plane_sim.c); the
 * trace and the request/result encoding live in plane_trace.c, the state file
 * (what survives a kill -9) and the summary in plane_state.c.
 */
#ifndef PLANE_SIM_H
#define PLANE_SIM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.pb-c.h"

enum ps_kind { PS_OPEN = 1, PS_CALL, PS_CLOSE };
enum ps_state {
	PS_WAIT, /* not sent (or to be sent again) */
	PS_SENT, /* sent; the gateway may have it */
	PS_DONE, /* final: a result from the gateway, or a local error */
};

/* One line of the trace and its progress. */
typedef struct ps_op {
	int line; /* in the trace file */
	int kind;
	uint64_t at_ms; /* not before this long after the run started */
	char *identity; /* the plane identity the gateway maps to a tenant */
	char *as;       /* open: the name "$as" refers to */
	char *session;  /* call, close: "$name", a literal session id, or NULL */
	int open_idx;   /* the open that defines $name, or -1 */
	int prev_idx;   /* the previous op on the same session, or -1 */
	json_t *spec;   /* the trace line */
	uint64_t plane_id;
	/* progress (persisted by --state) */
	int state;
	unsigned sends;         /* times a request left for the gateway */
	unsigned results;       /* results received for it (redeliveries included) */
	uint64_t first_sent_ms; /* wall clock */
	uint64_t done_ms;       /* wall clock; 0 for local errors */
	uint64_t first_sent_us; /* the same two in microseconds (latency records) */
	uint64_t done_us;
	json_t *result;  /* final outcome, {"code": ...} */
	char digest[65]; /* SHA-256 of the ClientReply bytes */
	/* this connection only */
	uint32_t sid;
	bool at_gw;   /* the last RESUME listed it */
	bool awaited; /* listed as unacked: its redelivery is on the way */
} ps_op;

/* Counters kept across restarts (--state). */
typedef struct ps_counters {
	uint64_t sent, resent, results, redelivered, repeat_results, duplicates, foreign;
	uint64_t acks, expect_failed, connections, tls_refused, mcp_conns, mcp_refused;
	uint64_t mcp_up, mcp_down;
	uint64_t gateway_lost; /* sent to a gateway that came back as a new session */
} ps_counters;

typedef struct ps_trace {
	ps_op *ops;
	int nops;
	char digest[65]; /* of the trace file: a restarted run must use the same one */
} ps_trace;

/* ---- plane_trace.c ---- */

/* Parse a trace (JSON lines, docs/tunnel-sim.md). identity: the default for
 * lines without one (NULL: required). 0, or -EINVAL with the line in err. */
int ps_trace_load(const char *path, const char *identity, ps_trace *t, char *err, size_t errlen);
void ps_trace_free(ps_trace *t);
/* The packed Envelope{tunnel_request} for op (session: the resolved id for
 * $name, or NULL). Caller frees *ret. -EINVAL with err if the input does not
 * make a request. */
int ps_request_encode(const ps_op *op, const char *session, uint8_t **ret, size_t *ret_len,
                      char *err, size_t errlen);
/* The outcome object for a reply (new reference). */
json_t *ps_reply_json(const Kiln__ClientReply *r);
/* A local outcome (the request could not be made or sent). */
json_t *ps_local_error(const char *code, const char *msg);
/* Compare op->result with the trace's "expect"; returns the mismatches (0:
 * none or no expectation) and describes the first in why. */
int ps_expect_check(const ps_op *op, char *why, size_t whylen);

/* ---- plane_state.c ---- */

typedef struct ps_resume_log {
	uint64_t epoch;
	size_t n_in_flight, n_unacked, resent;
	json_t *ids; /* {"in_flight": [...], "unacked": [...]} as strings; NULL if too many */
} ps_resume_log;

typedef struct ps_run {
	ps_trace *trace;
	ps_counters *c;
	uint64_t nonce;      /* plane_id = nonce << 24 | index + 1 */
	uint64_t started_ms; /* wall clock of the first start (or first RESUME) */
	uint64_t started_us; /* the same in microseconds: at_ms counts from here */
	json_t *resumes;     /* array of RESUME records */
	char token[65];      /* the last session token seen (hex) */
} ps_run;

/* Load path into run (ops' progress, counters, nonce). 0 if loaded, 1 if the
 * file does not exist (a fresh run), -EINVAL with err if it belongs to another
 * trace or is malformed. */
int ps_state_load(const char *path, ps_run *run, char *err, size_t errlen);
/* Write atomically (temporary file, fsync, rename). 0 or -errno. */
int ps_state_save(const char *path, const ps_run *run);
/* The summary object (new reference). */
json_t *ps_summary(const ps_run *run);
/* One JSON line per finished op. */
int ps_results_write(const char *path, const ps_run *run);
/* Write a JSON value to path atomically. */
int ps_json_save(const char *path, json_t *j);

#endif
