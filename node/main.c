/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-node: runs one node. Placeholder main for bring-up; the full CLI
 * (scheduler membership, local listener) lives in node/cli.c.
 */
#include "node.h"

#include "kl_log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static node *the_node;

static void
on_signal(int sig)
{
	if (the_node)
		node_request_stop(the_node);
}

int
main(int argc, char **argv)
{
	node_config cfg;
	char err[512];
	node_config_defaults(&cfg);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--allow-unenforced-limits"))
			cfg.allow_unenforced_limits = true;
	if (node_new(&cfg, &the_node, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-node: %s\n", err);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	int r = node_run(the_node);
	node_free(the_node);
	return r < 0 ? 1 : 0;
}
