/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-node: one execution node. Joins a scheduler (--scheduler URL
 * --token-file F), and/or serves calls straight to itself (--listen URL).
 * SIGTERM/SIGINT stop it gracefully: no new work, running calls get the
 * grace period, every sandbox is destroyed, exit 0.
 */
#include "listen.h"
#include "member.h"
#include "node.h"

#include "kl_log.h"
#include "kl_util.h"

#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static node *the_node;

static void
on_signal(int sig)
{
	if (the_node)
		node_request_stop(the_node);
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: kiln-node [options]\n"
	        "\n"
	        "Runs tool calls in pools of pre-warmed sandboxes. Join a cluster with\n"
	        "--scheduler, or serve calls directly with --listen (local addresses only).\n"
	        "\n"
	        "  --scheduler URL          the scheduler's node address (tcp://host:7070)\n"
	        "  --token-file FILE        file holding the cluster's join token\n"
	        "  --egress HOST:PORT       the gateway's egress address: sandboxes reach the\n"
	        "                           outside through it (authenticated with the join\n"
	        "                           token); without it their proxies answer 403\n"
	        "  --listen URL             serve NodeWork requests directly (ipc:// or "
	        "127.0.0.1)\n"
	        "  --name NAME              node id (default: <hostname>-<n>)\n"
	        "  --label K=V              a label reported to the scheduler (repeatable)\n"
	        "  --slots N                concurrent work pulls (default: min(max-calls, 64))\n"
	        "  --max-sessions N         sessions this node holds at most (default 1024)\n"
	        "  --max-calls N            calls queued or running at most (default 256)\n"
	        "  --warm N                 idle sandboxes kept ready for the default template "
	        "(4)\n"
	        "  --template NAME:DIR:N    another template: base image DIR, N kept warm\n"
	        "  --refill-rate N          sandboxes created per second at most (500)\n"
	        "  --no-cold-start          fail session opens when the pool is empty\n"
	        "  --workspace SIZE         default /workspace size in MiB (1024)\n"
	        "  --memory SIZE            default session memory limit in MiB (1024)\n"
	        "  --pids N                 default session pids limit (512)\n"
	        "  --grace-ms N             shutdown grace for running calls (10000)\n"
	        "  --cgroup-root PATH       delegated cgroup v2 directory (default: our own "
	        "cgroup)\n"
	        "  --init PATH              the kiln-sandbox-init binary (default: beside "
	        "kiln-node)\n"
	        "  --allow-unenforced-limits  run where memory/pids limits cannot be enforced;\n"
	        "                           every result then says limits_enforced=false\n"
	        "  --log LEVEL              error|warn|info|debug\n"
	        "  --protocol-version N     (testing) speak another protocol version\n"
	        "  -h, --help               this help\n");
}

static char *
read_token(const char *path)
{
	char *buf;
	size_t len;
	if (kl_read_file_at(AT_FDCWD, path, 4096, &buf, &len) < 0)
		return NULL;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r'))
		buf[--len] = 0;
	return buf;
}

struct opts {
	const char *scheduler, *token_file, *listen;
	const char *labels[33];
	int nlabels;
	uint32_t slots, protocol_version;
};

static int
parse_template(node_config *cfg, const char *spec)
{
	char name[64], dir[4096];
	unsigned target;
	if (cfg->ntemplates >= NODE_MAX_TEMPLATES ||
	    sscanf(spec, "%63[^:]:%4095[^:]:%u", name, dir, &target) != 3)
		return -1;
	node_template_cfg *t = &cfg->templates[cfg->ntemplates];
	*t = cfg->templates[0];
	kl_strlcpy(t->name, name, sizeof t->name);
	t->rootfs = kl_xstrdup(dir);
	t->target = target;
	cfg->ntemplates++;
	return 0;
}

static int
parse_args(int argc, char **argv, node_config *cfg, struct opts *o)
{
	static const struct option lo[] = {
	        {"scheduler", 1, 0, 'S'},
	        {"token-file", 1, 0, 'T'},
	        {"egress", 1, 0, 'E'}, /* reuses --token-file's token */
	        {"listen", 1, 0, 'L'},
	        {"name", 1, 0, 'n'},
	        {"label", 1, 0, 'l'},
	        {"slots", 1, 0, 's'},
	        {"max-sessions", 1, 0, 'm'},
	        {"max-calls", 1, 0, 'c'},
	        {"warm", 1, 0, 'w'},
	        {"template", 1, 0, 't'},
	        {"refill-rate", 1, 0, 'r'},
	        {"no-cold-start", 0, 0, 'C'},
	        {"workspace", 1, 0, 'W'},
	        {"memory", 1, 0, 'M'},
	        {"pids", 1, 0, 'P'},
	        {"grace-ms", 1, 0, 'g'},
	        {"cgroup-root", 1, 0, 'G'},
	        {"init", 1, 0, 'i'},
	        {"allow-unenforced-limits", 0, 0, 'A'},
	        {"log", 1, 0, 'v'},
	        {"protocol-version", 1, 0, 'V'},
	        {"help", 0, 0, 'h'},
	        {0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'S':
			o->scheduler = optarg;
			break;
		case 'T':
			o->token_file = optarg;
			break;
		case 'E':
			cfg->egress_url = optarg;
			break;
		case 'L':
			o->listen = optarg;
			break;
		case 'n':
			cfg->name = optarg;
			break;
		case 'l':
			if (o->nlabels < 32)
				o->labels[o->nlabels++] = optarg;
			break;
		case 's':
			o->slots = (uint32_t)atoi(optarg);
			break;
		case 'm':
			cfg->max_sessions = (uint32_t)atoi(optarg);
			break;
		case 'c':
			cfg->max_calls = (uint32_t)atoi(optarg);
			break;
		case 'w':
			cfg->templates[0].target = (uint32_t)atoi(optarg);
			break;
		case 't':
			if (parse_template(cfg, optarg) < 0) {
				fprintf(stderr, "kiln-node: --template wants NAME:DIR:N, got %s\n",
				        optarg);
				return -1;
			}
			break;
		case 'r':
			cfg->refill_per_s = (uint32_t)atoi(optarg);
			break;
		case 'C':
			cfg->cold_start = false;
			break;
		case 'W':
			cfg->templates[0].workspace_bytes = (uint64_t)atoll(optarg) << 20;
			break;
		case 'M':
			cfg->templates[0].memory_bytes = (uint64_t)atoll(optarg) << 20;
			break;
		case 'P':
			cfg->templates[0].pids = (uint32_t)atoi(optarg);
			break;
		case 'g':
			cfg->shutdown_grace_ms = (uint32_t)atoi(optarg);
			break;
		case 'G':
			cfg->cgroup_root = optarg;
			break;
		case 'i':
			cfg->init_path = optarg;
			break;
		case 'A':
			cfg->allow_unenforced_limits = true;
			break;
		case 'v':
			if (kl_log_set_level(optarg) < 0) {
				fprintf(stderr, "kiln-node: unknown log level %s\n", optarg);
				return -1;
			}
			break;
		case 'V':
			o->protocol_version = (uint32_t)atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kiln-node: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	if (!o->scheduler && !o->listen) {
		fprintf(stderr, "kiln-node: nothing to do: give --scheduler URL (with "
		                "--token-file) to join a cluster, or --listen URL\n");
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	node_config cfg;
	struct opts o;
	char err[512];
	memset(&o, 0, sizeof o);
	node_config_defaults(&cfg);
	if (parse_args(argc, argv, &cfg, &o) < 0)
		return 2;
	_cleanup_free_ char *token = NULL;
	if (cfg.egress_url && !o.token_file) {
		fprintf(stderr, "kiln-node: --egress needs --token-file: the gateway authenticates "
		                "nodes with the cluster's join token\n");
		return 2;
	}
	if (o.scheduler || cfg.egress_url) {
		if (!o.token_file) {
			fprintf(stderr, "kiln-node: --scheduler needs --token-file with the "
			                "cluster's join token\n");
			return 2;
		}
		if (!(token = read_token(o.token_file))) {
			fprintf(stderr, "kiln-node: cannot read the join token from %s\n",
			        o.token_file);
			return 2;
		}
		cfg.egress_token = token; /* the gateway knows nodes by the join token */
	}
	if (node_new(&cfg, &the_node, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-node: %s\n", err);
		return 1;
	}
	fprintf(stderr, "kiln-node: limits %s%s\n", node_limits_text(the_node),
	        cfg.allow_unenforced_limits ? " (accepted: --allow-unenforced-limits)" : "");
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (node_start(the_node) < 0) {
		fprintf(stderr, "kiln-node: cannot start the loop\n");
		node_free(the_node);
		return 1;
	}
	node_listener *l = NULL;
	node_member *m = NULL;
	int rc = 0;
	if (o.listen && node_listener_start(the_node, o.listen, &l, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-node: %s\n", err);
		rc = 1;
		node_request_stop(the_node);
	}
	o.labels[o.nlabels] = NULL;
	node_member_cfg mc = {o.scheduler, token, o.slots, o.labels, o.protocol_version};
	if (!rc && o.scheduler && node_member_start(the_node, &mc, &m, err, sizeof err) < 0) {
		fprintf(stderr, "kiln-node: %s\n", err);
		rc = 1;
		node_request_stop(the_node);
	}
	node_wait(the_node); /* a signal, a drain or a refusal ends the loop */
	if (m && node_member_refused(m, err, sizeof err)) {
		fprintf(stderr, "kiln-node: the scheduler refused this node: %s\n", err);
		rc = 1;
	}
	node_member_stop(m);
	node_listener_stop(l);
	/* The handler must not see a freed node: block the signals first. */
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, NULL);
	node *n = the_node;
	the_node = NULL;
	node_free(n);
	for (int i = 1; i < cfg.ntemplates; i++)
		free((char *)cfg.templates[i].rootfs);
	return rc;
}
