/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-gateway: the cluster's one link outside. Dials the control plane
 * (TLS 1.3, client certificate, pinned CA), carries its work to the
 * scheduler and the results back, relays MCP streams to private routes, and
 * -- with egress_listen -- serves node proxies with the tenants' egress
 * policies and an audit trail. SIGTERM/SIGINT stop it gracefully.
 */
#include "gw_config.h"
#include "gw_egress.h"
#include "gw_tunnel.h"

#include "kl_audit.h"
#include "kl_log.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static gw_tunnel *the_tunnel;

static void
on_signal(int sig)
{
	if (the_tunnel)
		gw_tunnel_stop(the_tunnel);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
	        {"config", 1, 0, 'c'}, {"log", 1, 0, 'v'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
	const char *config = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		if (c == 'c') {
			config = optarg;
		} else if (c == 'v') {
			kl_log_set_level(optarg);
		} else {
			fprintf(c == 'h' ? stdout : stderr,
			        "usage: kiln-gateway --config FILE [--log LEVEL]\n"
			        "The cluster's egress tunnel: see docs/gateway.md.\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (!config) {
		fprintf(stderr, "kiln-gateway: --config FILE is required (docs/gateway.md)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	gw_config cfg;
	char err[768];
	if (gw_config_load(config, &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-gateway: %s\n", err);
		return 2;
	}
	kl_audit *audit = NULL;
	if (cfg.audit_log[0]) {
		kl_audit_fsync fs;
		if (kl_audit_fsync_parse(cfg.audit_fsync, &fs) < 0 ||
		    kl_audit_open(cfg.audit_log, &fs, &audit, err, sizeof err) < 0) {
			fprintf(stderr, "kiln-gateway: audit log %s: %s\n", cfg.audit_log, err);
			gw_config_fini(&cfg);
			return 1;
		}
	}
	gw_egress *eg = NULL;
	if (cfg.egress_listen[0] && gw_egress_start(&cfg, audit, &eg, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-gateway: %s\n", err);
		kl_audit_close(audit);
		gw_config_fini(&cfg);
		return 1;
	}
	if (gw_tunnel_new(&cfg, audit, &the_tunnel, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-gateway: %s\n", err);
		gw_egress_stop(eg);
		kl_audit_close(audit);
		gw_config_fini(&cfg);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	int r = gw_tunnel_run(the_tunnel);
	gw_tunnel_free(the_tunnel);
	gw_egress_stop(eg);
	if (audit)
		kl_audit_close(audit);
	gw_config_fini(&cfg);
	KL_LOG(KL_INFO, "gateway", "stopped");
	return r < 0 ? 1 : 0;
}
