/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-gateway's configuration (INI, parsed with inih; docs/gateway.md):
 *
 *   [gateway]      control plane address, TLS files, proxy, scheduler,
 *                  egress listener, audit log, result buffer bound
 *   [identity ID]  a control-plane identity and the tenant token it acts as
 *   [route NAME]   an MCP route: upstream host:port (private addresses only
 *                  unless allow_public = true)
 *   [egress TENANT] the tenant's egress policy (gw_policy_set keys)
 *
 * Unknown sections and keys are errors, with their line number. A section
 * that appears again (same kind and name) adds to the first.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_policy.h"

typedef struct gw_identity {
	char name[128];
	char token[256]; /* the tenant's API token at the scheduler */
} gw_identity;

typedef struct gw_route {
	char name[64];
	char host[256];
	uint16_t port;
	bool allow_public;
} gw_route;

typedef struct gw_egress_cfg {
	char tenant[64];
	gw_policy *policy;
} gw_egress_cfg;

typedef struct gw_config {
	char plane_host[256];
	uint16_t plane_port;
	char server_name[256];
	char ca_file[4096], cert_file[4096], key_file[4096];
	char proxy_host[256];
	uint16_t proxy_port;
	char scheduler[256];     /* the scheduler's client URL */
	char egress_listen[256]; /* host:port node proxies connect to ("": no egress) */
	char join_token[256];    /* authenticates node proxies */
	char audit_log[4096];
	char audit_fsync[64]; /* none | every | interval:MS */
	char journal[4096];   /* the gateway's journal ("": none; gw_journal.h) */
	bool journal_fsync;   /* fdatasync each ACCEPT and RESULT */
	uint32_t max_results; /* unacknowledged results kept */
	uint32_t ping_interval_ms;
	uint32_t backoff_min_ms, backoff_max_ms;
	int nidentities, nroutes, negress;
	gw_identity *identities;
	gw_route *routes;
	gw_egress_cfg *egress;
} gw_config;

/* Load path into c (zeroed first; relative paths in it are taken from its
 * directory). 0, or -errno with err ("PATH: config line N: ...", or what is
 * missing) and c holding nothing (gw_config_fini done). */
int gw_config_load(const char *path, gw_config *c, char *err, size_t errlen);
/* The same from len bytes of text, read exactly as a file holding them:
 * name stands for the path in err, relative paths are taken from dir (NULL
 * or "": as written). 0 or -EINVAL. */
int gw_config_load_string(const char *text, size_t len, const char *name, const char *dir,
                          gw_config *c, char *err, size_t errlen);
void gw_config_fini(gw_config *c);
const gw_identity *gw_config_identity(const gw_config *c, const char *name);
const gw_route *gw_config_route(const gw_config *c, const char *name);
gw_policy *gw_config_egress(const gw_config *c, const char *tenant);

#endif
