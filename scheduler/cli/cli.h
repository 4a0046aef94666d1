/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kiln command-line tool's internals, shared by its files and its unit
 * tests: the command table (extensible from other files, which is how `kiln
 * dev` and `kiln audit` join), the option parser, the parsers for limits,
 * sizes and durations, the mapping of results and errors to exit codes and
 * messages, and the JSON and table renderings. Everything writes to the
 * FILE pointers in struct cli, so tests capture output with open_memstream.
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "kiln.h"
#include "kl_util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The dev tenant's token: `kiln run -- echo hi` works against `kiln dev` untouched. */
#define CLI_DEV_TOKEN "kiln-dev-token"
/* Replies to requests other than tool calls (status, open, close...) wait this long. */
#define CLI_REQUEST_TIMEOUT_MS 60000u

/*
 * Exit codes. A command's own status passes through unchanged (0-255,
 * 128+N for signal N); kiln's own outcomes use the sysexits.h values, plus
 * timeout(1)'s 124 and the shell's 130 for an interrupted call.
 */
enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_TOOL = 1,         /* a file tool reported an error (no such file, ...) */
	CLI_EXIT_USAGE = 64,       /* bad command line */
	CLI_EXIT_DATAERR = 65,     /* INVALID_ARGUMENT: the cluster refused the input */
	CLI_EXIT_NOTFOUND = 66,    /* NOT_FOUND: no such session, node, template or job */
	CLI_EXIT_UNAVAILABLE = 69, /* no scheduler, UNAVAILABLE, FAILED_PRECONDITION */
	CLI_EXIT_SOFTWARE = 70,    /* INTERNAL or an unexpected answer */
	CLI_EXIT_IOERR = 74,       /* lost connection or NODE_LOST: the outcome is unknown */
	CLI_EXIT_TEMPFAIL = 75,    /* RESOURCE_EXHAUSTED: retry later */
	CLI_EXIT_PROTOCOL = 76,    /* VERSION_MISMATCH */
	CLI_EXIT_NOPERM = 77,      /* UNAUTHENTICATED or PERMISSION_DENIED */
	CLI_EXIT_TIMEOUT = 124,    /* DEADLINE_EXCEEDED */
	CLI_EXIT_CANCELLED = 130,  /* CANCELLED (Ctrl-C or kiln cancel) */
};

/* One invocation's settings and connection. */
typedef struct cli {
	const char *url;        /* --scheduler, KILN_SCHEDULER, or KILN_DEFAULT_URL */
	const char *token;      /* --token or KILN_TOKEN (NULL: not given on the command line) */
	const char *token_file; /* --token-file or KILN_TOKEN_FILE */
	char *token_buf;        /* owned: the token read from token_file */
	const char *token_from; /* where the token in use came from, for error messages */
	bool json;              /* --json */
	FILE *out, *err;        /* stdout and stderr (memory streams in tests) */
	kiln_client *client;    /* once connected */
} cli;

/* What a failure was about, to pick the hint that helps. */
enum cli_ctx {
	CLI_CTX_GENERIC,
	CLI_CTX_CALL,    /* a tool call */
	CLI_CTX_SESSION, /* a session id the user gave */
	CLI_CTX_NODE,    /* node administration */
	CLI_CTX_JOB,     /* kiln cancel */
};

/* ---- commands ---- */

typedef struct cli_cmd {
	const char *name;
	const char *summary; /* one line for `kiln --help` */
	/* argv[0] is the command's name; returns the process's exit code. */
	int (*run)(cli *cl, int argc, char **argv);
} cli_cmd;

/*
 * Add a command from another file (the lead's cli/dev.c and cli/audit.c use
 * this): CLI_COMMAND(dev, "run a local cluster in this process", cmd_dev).
 * The registration runs before main, so the file must be linked into the
 * kiln executable itself (listed in add_executable(kiln ...)), not only in a
 * static library, where an otherwise unreferenced object would be dropped.
 * A registered name replaces nothing: built-in names win.
 */
void cli_register(const cli_cmd *cmd);
#define CLI_COMMAND(name_, summary_, fn_)                                   \
	static const cli_cmd cli_cmd_##name_ = {#name_, summary_, fn_};     \
	__attribute__((constructor)) static void cli_register_##name_(void) \
	{                                                                   \
		cli_register(&cli_cmd_##name_);                             \
	}

/* The command named name (built-in or registered), or NULL. */
const cli_cmd *cli_find(const char *name);

/*
 * The whole tool: global options, then a command. Reads KILN_SCHEDULER,
 * KILN_TOKEN and KILN_TOKEN_FILE. Returns the exit code.
 */
int cli_main(int argc, char **argv, FILE *out, FILE *err);

/* The built-in commands (commands.c), NULL-name terminated. */
extern const cli_cmd cli_builtin_cmds[];

/* ---- options ---- */

typedef struct cli_opt {
	const char *name; /* long name, without "--" */
	int key;          /* a short option character, or any value > 255 */
	bool arg;         /* takes a value: --name VALUE or --name=VALUE (-k VALUE, -kVALUE) */
} cli_opt;

/* Returned by cli_parse for -h/--help: the caller prints its usage and exits 0. */
#define CLI_HELP 1

typedef int cli_opt_fn(cli *cl, void *ctx, int key, const char *val);

/*
 * Parse a command's arguments (argv[0], the command name, is skipped).
 * Options may come anywhere until "--" or until stop_after positionals were
 * seen (-1: never stop), after which everything is a positional, verbatim:
 * `kiln run echo -n hi` runs `echo -n hi`. Global options (--scheduler,
 * --token, --token-file, --json, -h/--help) are accepted too. fn gets every
 * option of opts and returns 0 or an exit code. On success *ret_pos points
 * at a heap array (free it) of *ret_npos positionals that point into argv.
 * Returns 0, CLI_HELP, or an exit code after printing why to cl->err.
 */
int cli_parse(cli *cl, const char *cmd, int argc, char **argv, const cli_opt *opts, int stop_after,
              cli_opt_fn *fn, void *ctx, char ***ret_pos, int *ret_npos);

/* Handle a global option by name; 0 if it was one, -ENOENT if not. */
int cli_global_opt(cli *cl, const char *name, const char *val);

/* Resolve the token (--token, --token-file, KILN_TOKEN, KILN_TOKEN_FILE, the dev
 * token) into cl->token and cl->token_from. 0 or an exit code (message printed). */
int cli_resolve_token(cli *cl);

/* Connect cl->client to cl->url. 0 or an exit code (friendly message printed). */
int cli_connect(cli *cl);

/* Release what cli_main's helpers allocated (the client, the token buffer). */
void cli_fini(cli *cl);

/* ---- value syntax ---- */

/* Bytes: "4096", "512M", "1.5G", "64KiB", "2g" (K, M, G, T are powers of 1024). 0 or
 * -EINVAL/-ERANGE. */
int cli_parse_size(const char *s, uint64_t *ret);
/* Milliseconds: "1500" (ms), "1500ms", "30s", "1.5s", "2m", "1h". 0 or -EINVAL/-ERANGE. */
int cli_parse_duration_ms(const char *s, uint32_t *ret);
/* CPU: "1500m" (millicores), "1.5" or "2" (CPUs). 0 or -EINVAL/-ERANGE. */
int cli_parse_millicores(const char *s, uint32_t *ret);
/*
 * A --limit spec: comma-separated key=value pairs, merged into *lim:
 * memory=SIZE, pids=N, cpu=CPU, workspace=SIZE, timeout=DURATION,
 * output=SIZE, idle=DURATION. lim must be initialised (KILN__LIMITS__INIT).
 * 0, or -EINVAL with a message in err (lim may then be partly updated).
 */
int cli_parse_limits(const char *spec, Kiln__Limits *lim, char *err, size_t errlen);
/* read's --range: "A:B", "A:" or "A:0" (to the end), "A" (line A only). 0 or -EINVAL. */
int cli_parse_range(const char *s, int64_t *start, int64_t *end);

/* ---- results, errors, exit codes ---- */

/* The exit code a result maps to (see enum cli_exit). process: exec or bash. */
int cli_result_exit(const Kiln__ToolResult *r, bool process);

/*
 * Show a result as a local command would: output to cl->out, stderr to
 * cl->err, kiln's notes (timeout, OOM, signal, tool errors) to cl->err as
 * "kiln: ..."; with --json, the JSON object instead. Returns the exit code.
 */
int cli_result_print(cli *cl, const Kiln__ToolResult *r, int tool_case);

/* The exit code for a failed libkiln call. */
int cli_error_exit(const kiln_error *e);

/*
 * Explain a failed libkiln call (human: one actionable message on cl->err;
 * --json: an {"error": ...} object on cl->out as well). Returns the exit code.
 */
int cli_fail(cli *cl, const kiln_error *e, enum cli_ctx ctx);

/* Print "kiln: <msg>" to cl->err (and an error object with --json); returns code. */
int cli_failf(cli *cl, int code, const char *fmt, ...) KL_PRINTF(3, 4);

/* ---- rendering ---- */

/* JSON for a string or bytes: the text when it is valid UTF-8, else base64. */
json_t *cli_json_bytes(const void *data, size_t len, bool *ret_base64);
json_t *cli_json_result(const Kiln__ToolResult *r);
json_t *cli_json_limits(const Kiln__Limits *l);
json_t *cli_json_session(const Kiln__SessionInfo *s);
json_t *cli_json_opened(const Kiln__SessionOpened *o);
json_t *cli_json_sessions(const Kiln__SessionListReply *l);
json_t *cli_json_status(const Kiln__StatusReply *s);
json_t *cli_json_error(const kiln_error *e, int exit_code);
/* Print j (consumed) to cl->out, followed by a newline. */
void cli_json_print(cli *cl, json_t *j);

/* Standard base64 (with padding) into a heap string. */
char *cli_base64(const void *data, size_t len);

/* Human tables; now_ms is the wall clock in ms (a parameter so tests are stable). */
void cli_status_print(cli *cl, const Kiln__StatusReply *s);
void cli_sessions_print(cli *cl, const Kiln__SessionListReply *l, uint64_t now_ms);

#endif
