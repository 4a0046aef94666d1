/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's side of the egress tunnel: one outbound TLS connection to
 * the control plane (reconnected with jittered exponential backoff), the
 * stream multiplexer over it, WORK streams turned into scheduler requests
 * (as the tenant the plane's identity maps to), results kept until the plane
 * acknowledges them and redelivered after a reconnect, a RESUME message
 * after every (re)connect listing what is still running and what is
 * finished, and MCP streams relayed to the configured private routes. The
 * whole loop runs on one thread (gw_tunnel_run); libkiln completions reach it
 * through a mailbox.
 */
#ifndef GW_TUNNEL_H
#define GW_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_config.h"
#include "kl_audit.h"

typedef struct gw_tunnel gw_tunnel;

typedef struct gw_tunnel_stats {
	bool connected;
	uint64_t connects, disconnects;
	uint64_t requests, duplicates, results_sent, redelivered, acked;
	uint32_t running, unacked;
	uint64_t mcp_streams;
	char last_error[256];
} gw_tunnel_stats;

int gw_tunnel_new(const gw_config *cfg, kl_audit *audit, gw_tunnel **ret, char *err, size_t errlen);
/* Run until gw_tunnel_stop; returns 0, or -errno for a fatal setup error. */
int gw_tunnel_run(gw_tunnel *t);
/* Any thread, async-signal-safe: ask the loop to stop (GOAWAY, deliver what
 * finishes within the grace period, exit). */
void gw_tunnel_stop(gw_tunnel *t);
void gw_tunnel_stats_get(gw_tunnel *t, gw_tunnel_stats *st);
void gw_tunnel_free(gw_tunnel *t);

#endif
