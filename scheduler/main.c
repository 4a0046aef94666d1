/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-scheduler: one per cluster. Reads the config (tenants, tokens,
 * addresses), listens for nodes and clients, and runs until SIGTERM/SIGINT,
 * which stops it gracefully (new requests refused, calls in flight get the
 * grace period, queued calls are answered UNAVAILABLE).
 */
#include "kiln_sched.h"

#include "kl_log.h"
#include "kl_util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	stop = 1;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: kiln-scheduler --config FILE [options]\n"
	           "\n"
	           "  -c, --config FILE     tenants, tokens and addresses (docs/config.md)\n"
	           "  --node-url URL        override [scheduler] node_url\n"
	           "  --client-url URL      override [scheduler] client_url\n"
	           "  --log LEVEL           error|warn|info|debug\n"
	           "  -h, --help            this help\n");
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
	        {"config", 1, 0, 'c'}, {"node-url", 1, 0, 'n'}, {"client-url", 1, 0, 'u'},
	        {"log", 1, 0, 'v'},    {"help", 0, 0, 'h'},     {0, 0, 0, 0},
	};
	const char *config = NULL, *node_url = NULL, *client_url = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'n':
			node_url = optarg;
			break;
		case 'u':
			client_url = optarg;
			break;
		case 'v':
			if (kl_log_set_level(optarg) < 0) {
				fprintf(stderr, "kiln-scheduler: unknown log level %s\n", optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!config) {
		fprintf(stderr, "kiln-scheduler: --config FILE is required (see docs/config.md; "
		                "`kiln dev` runs a whole cluster without one)\n");
		return 2;
	}
	sched_config cfg;
	char err[512];
	sched_config_init(&cfg);
	if (sched_config_load_file(config, &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-scheduler: %s\n", err);
		return 2;
	}
	if (node_url)
		kl_strlcpy(cfg.node_url, node_url, sizeof cfg.node_url);
	if (client_url)
		kl_strlcpy(cfg.client_url, client_url, sizeof cfg.client_url);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sched *s;
	if (sched_new(&cfg, NULL, NULL, &s, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-scheduler: %s\n", err);
		sched_config_fini(&cfg);
		return 1;
	}
	while (!stop)
		pause();
	sched_stop(s);
	sched_free(s);
	sched_config_fini(&cfg);
	KL_LOG(KL_INFO, "scheduler", "stopped");
	return 0;
}
