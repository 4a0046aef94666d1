/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kiln CLI's front door: global options, the command table (built-ins
 * from commands.c plus commands other files register with CLI_COMMAND, such
 * as `kiln dev` and `kiln audit`), help and version. main.c only calls
 * cli_main, so tests drive the whole tool through this function.
 */
#include "cli.h"

#include "kl_proto.h"

#include <string.h>

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

#define MAX_REGISTERED 16

static const cli_cmd *registered[MAX_REGISTERED];
static int nregistered;

void
cli_register(const cli_cmd *cmd)
{
	/* Runs from constructors, before main: there is nobody to return an error to. */
	if (nregistered < MAX_REGISTERED)
		registered[nregistered++] = cmd;
	else
		fprintf(stderr, "kiln: too many registered commands; '%s' dropped\n", cmd->name);
}

const cli_cmd *
cli_find(const char *name)
{
	for (const cli_cmd *c = cli_builtin_cmds; c->name; c++)
		if (!strcmp(c->name, name))
			return c;
	for (int i = 0; i < nregistered; i++)
		if (!strcmp(registered[i]->name, name))
			return registered[i];
	return NULL;
}

static void
print_usage(FILE *f)
{
	fprintf(f, "usage: kiln [GLOBAL OPTIONS] COMMAND [ARGS...]\n"
	           "\n"
	           "Run AI agents' tool calls on a kiln cluster.\n"
	           "\n"
	           "commands:\n");
	for (const cli_cmd *c = cli_builtin_cmds; c->name; c++)
		fprintf(f, "  %-9s %s\n", c->name, c->summary);
	for (int i = 0; i < nregistered; i++)
		fprintf(f, "  %-9s %s\n", registered[i]->name, registered[i]->summary);
	fprintf(f,
	        "\n"
	        "global options (also accepted after the command):\n"
	        "  --scheduler URL    the scheduler's client URL (env KILN_SCHEDULER;\n"
	        "                     default %s)\n"
	        "  --token TOKEN      tenant or admin token (env KILN_TOKEN; default %s,\n"
	        "                     the tenant of `kiln dev`)\n"
	        "  --token-file FILE  read the token from FILE (env KILN_TOKEN_FILE)\n"
	        "  --json             machine-readable output\n"
	        "  -h, --help         this help; `kiln COMMAND --help` for a command's\n"
	        "  --version          print the version\n"
	        "\n"
	        "exit status: a command's own status passes through (128+N: killed by\n"
	        "signal N); 124 timed out, 130 cancelled, 64 usage, 65 invalid argument,\n"
	        "66 not found, 69 no scheduler or no capacity to place it, 70 internal error,\n"
	        "74 connection or node lost (outcome unknown), 75 over quota (retry later),\n"
	        "76 protocol version mismatch, 77 token refused or permission denied.\n",
	        KILN_DEFAULT_URL, CLI_DEV_TOKEN);
}

static int
top_opt(cli *cl, void *ctx, int key, const char *val)
{
	fprintf(cl->out, "kiln %s (kiln protocol %u)\n", KILN_VERSION, KL_PROTO_VERSION);
	*(bool *)ctx = true;
	return 0;
}

int
cli_main(int argc, char **argv, FILE *out, FILE *err)
{
	cli cl = {.out = out, .err = err};
	const char *env = getenv("KILN_SCHEDULER");
	cl.url = env && *env ? env : KILN_DEFAULT_URL;
	const cli_opt opts[] = {{"version", 256, false}, {NULL, 0, false}};
	bool version = false;
	char **pos = NULL;
	int npos, rv;
	/* stop_after 0: the command's name ends the global options; the rest is its own. */
	rv = cli_parse(&cl, NULL, argc, argv, opts, 0, top_opt, &version, &pos, &npos);
	if (rv == CLI_HELP) {
		print_usage(out);
		return CLI_EXIT_OK;
	}
	if (rv != 0 || version) {
		free(pos);
		return rv;
	}
	const cli_cmd *cmd = NULL;
	if (npos == 0) {
		print_usage(err);
		rv = CLI_EXIT_USAGE;
	} else if (!strcmp(pos[0], "help")) {
		char *h[] = {npos > 1 ? pos[1] : NULL, "--help", NULL};
		if (!h[0])
			print_usage(out);
		else if ((cmd = cli_find(h[0])))
			rv = cmd->run(&cl, 2, h);
		else
			rv = cli_failf(&cl, CLI_EXIT_USAGE, "no command '%s' (see `kiln --help`)",
			               h[0]);
	} else if ((cmd = cli_find(pos[0]))) {
		rv = cmd->run(&cl, npos, pos);
	} else {
		rv = cli_failf(&cl, CLI_EXIT_USAGE, "no command '%s' (see `kiln --help`)", pos[0]);
	}
	free(pos);
	cli_fini(&cl);
	fflush(out);
	return rv;
}
