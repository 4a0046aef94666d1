/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kiln CLI's built-in commands: one-shot `run`, the session tools (exec,
 * bash, read, write, edit, glob, grep), sessions, cancel, status and node
 * administration. Each parses its arguments, makes one libkiln request and
 * hands the outcome to render.c. Tool calls block SIGINT/SIGTERM/SIGHUP
 * before connecting and wait for them on a thread of their own, so the first
 * Ctrl-C cancels the call in the cluster (instead of leaving it running
 * there) and a second one stops waiting.
 */
#include "cli.h"

#include "kl_proto.h"
#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* Option keys beyond the short letters. */
enum {
	OPT_TEMPLATE = 256,
	OPT_CWD,
	OPT_STDIN,
	OPT_RESTART,
	OPT_RANGE,
	OPT_FROM,
	OPT_ALL,
};

struct kv {
	char *key;
	const char *value;
};

/* Every command's options; each command's table lists the ones it takes. */
struct opts {
	const char *cmd;
	uint32_t timeout_ms;
	const char *template_;
	Kiln__Limits limits;
	bool has_limits;
	const char *cwd;
	bool read_stdin;
	bool restart;
	bool all;
	const char *range;
	const char *from;
	struct kv *env;
	size_t n_env;
};

static const cli_opt opt_timeout = {"timeout", 't', true};
static const cli_opt opt_template = {"template", OPT_TEMPLATE, true};
static const cli_opt opt_limit = {"limit", 'l', true};
static const cli_opt opt_env = {"env", 'e', true};
static const cli_opt opt_cwd = {"cwd", OPT_CWD, true};
static const cli_opt opt_stdin = {"stdin", OPT_STDIN, false};

static void
opts_fini(struct opts *o)
{
	for (size_t i = 0; i < o->n_env; i++)
		free(o->env[i].key);
	free(o->env);
}

static int usage(cli *cl, const char *cmd, const char *fmt, ...) KL_PRINTF(3, 4);

static int
usage(cli *cl, const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(cl->err, "kiln %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(cl->err, fmt, ap);
	va_end(ap);
	fprintf(cl->err, " (see `kiln %s --help`)\n", cmd);
	return CLI_EXIT_USAGE;
}

static int
opt_fn(cli *cl, void *ctx, int key, const char *val)
{
	struct opts *o = ctx;
	char err[256];
	switch (key) {
	case 't':
		if (cli_parse_duration_ms(val, &o->timeout_ms) < 0)
			return usage(cl, o->cmd,
			             "--timeout '%s': expected a duration such as 30s, "
			             "1500ms or 1500 (ms)",
			             val);
		return 0;
	case OPT_TEMPLATE:
		o->template_ = val;
		return 0;
	case 'l':
		if (!o->has_limits) {
			Kiln__Limits init = KILN__LIMITS__INIT;
			o->limits = init;
		}
		if (cli_parse_limits(val, &o->limits, err, sizeof err) < 0)
			return usage(cl, o->cmd, "--limit: %s", err);
		o->has_limits = true;
		return 0;
	case 'e': {
		const char *eq = strchr(val, '=');
		if (!eq || eq == val)
			return usage(cl, o->cmd, "--env '%s': expected NAME=VALUE", val);
		o->env = kl_xrealloc(o->env, (o->n_env + 1) * sizeof(*o->env));
		o->env[o->n_env].key = kl_xstrndup(val, (size_t)(eq - val));
		o->env[o->n_env++].value = eq + 1;
		return 0;
	}
	case OPT_CWD:
		o->cwd = val;
		return 0;
	case OPT_STDIN:
		o->read_stdin = true;
		return 0;
	case OPT_RESTART:
		o->restart = true;
		return 0;
	case OPT_ALL:
		o->all = true;
		return 0;
	case OPT_RANGE:
		o->range = val;
		return 0;
	case OPT_FROM:
		o->from = val;
		return 0;
	}
	return usage(cl, o->cmd, "unhandled option");
}

static int
help(cli *cl, const char *text)
{
	fputs(text, cl->out);
	fflush(cl->out);
	return CLI_EXIT_OK;
}

/* Parse, and turn --help into the usage text. *done says the command should return rv. */
static int
parse(cli *cl, struct opts *o, int argc, char **argv, const cli_opt *opts, int stop_after,
      const char *usage_text, char ***pos, int *npos, bool *done)
{
	int rv = cli_parse(cl, o->cmd, argc, argv, opts, stop_after, opt_fn, o, pos, npos);
	*done = rv != 0;
	return rv == CLI_HELP ? help(cl, usage_text) : rv;
}

/* Read all of fd (at most max bytes). 0, -EFBIG or -errno. */
static int
read_all(int fd, size_t max, uint8_t **ret, size_t *ret_len)
{
	size_t len = 0, cap = 64 << 10;
	uint8_t *buf = kl_xmalloc(cap);
	for (;;) {
		if (len == cap) {
			if (cap > max) {
				free(buf);
				return -EFBIG;
			}
			cap = KL_MIN(cap * 2, max + 1); /* one byte past max tells "too large" */
			buf = kl_xrealloc(buf, cap);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;
			free(buf);
			return e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > max) {
		free(buf);
		return -EFBIG;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* Writes and stdin share one message with the call: leave room for the rest of it. */
#define CONTENT_MAX ((size_t)KL_MAX_MSG - (1u << 20))

static int
read_input(cli *cl, const char *cmd, const char *path, uint8_t **ret, size_t *ret_len)
{
	int fd = 0;
	if (path && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return cli_failf(cl, CLI_EXIT_NOTFOUND, "%s: cannot open %s: %s", cmd, path,
		                 strerror(errno));
	int rv = read_all(fd, CONTENT_MAX, ret, ret_len);
	if (path)
		close(fd);
	if (rv == -EFBIG)
		return cli_failf(cl, CLI_EXIT_DATAERR,
		                 "%s: %s is larger than %zu MiB, more than "
		                 "one call can carry",
		                 cmd, path ? path : "stdin", CONTENT_MAX >> 20);
	if (rv < 0)
		return cli_failf(cl, CLI_EXIT_NOTFOUND, "%s: cannot read %s: %s", cmd,
		                 path ? path : "stdin", strerror(-rv));
	return 0;
}

/* ---- tool calls ---- */

/* The thread that turns Ctrl-C into a cancel of the running call. */
struct watch {
	kiln_client *client;
	uint64_t job_id;
	sigset_t set;
	FILE *err;
	pthread_t thread;
	_Atomic bool stop; /* the call is over: the next signal only wakes the watcher */
};

static void *
watch_main(void *arg)
{
	struct watch *w = arg;
	for (int n = 0;; n++) {
		int sig;
		if (sigwait(&w->set, &sig) != 0)
			continue;
		if (atomic_load(&w->stop))
			return NULL;
		if (n > 0)
			_exit(128 + sig);
		fprintf(w->err,
		        "kiln: cancelling the call (job %" PRIu64 "); interrupt again to stop "
		        "waiting\n",
		        w->job_id);
		if (kiln_cancel(w->client, w->job_id) < 0)
			fprintf(w->err, "kiln: could not cancel the call: %s\n",
			        kiln_last_error()->message);
	}
	return NULL;
}

/* Connect, run tc, show the result. Returns the exit code. */
static int
do_call(cli *cl, Kiln__ToolCall *tc)
{
	struct watch w = {.err = cl->err};
	sigset_t old;
	sigemptyset(&w.set);
	sigaddset(&w.set, SIGINT);
	sigaddset(&w.set, SIGTERM);
	sigaddset(&w.set, SIGHUP);
	/* Blocked before kiln_connect starts nng's threads, which inherit the mask: the
	 * signals can then reach only the watcher. */
	pthread_sigmask(SIG_BLOCK, &w.set, &old);
	int rv = cli_connect(cl);
	if (rv != 0)
		goto out;
	tc->job_id = kiln_job_id_new();
	w.client = cl->client;
	w.job_id = tc->job_id;
	bool watching = pthread_create(&w.thread, NULL, watch_main, &w) == 0;
	Kiln__ToolResult *res;
	if (kiln_call(cl->client, tc, &res) < 0) {
		rv = cli_fail(cl, kiln_last_error(), CLI_CTX_CALL);
	} else {
		rv = cli_result_print(cl, res, tc->tool_case);
		kiln_result_free(res);
	}
	if (watching) {
		/* Not pthread_cancel: unwinding out of sigwait upsets ASan's stack checks. */
		atomic_store(&w.stop, true);
		pthread_kill(w.thread, SIGHUP);
		pthread_join(w.thread, NULL);
	}
out:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rv;
}

/* A session call: fill the shared fields and run it. */
static int
session_call(cli *cl, const char *cmd, const char *session, Kiln__ToolCall *tc)
{
	if (!*session)
		return usage(cl, cmd, "empty session id (for a one-shot call use `kiln run`)");
	tc->session_id = (char *)session;
	return do_call(cl, tc);
}

/* Build the exec input shared by run and exec; frees nothing it did not allocate. */
static int
exec_input(cli *cl, struct opts *o, char **argv, int argc, Kiln__ExecInput *in,
           Kiln__ExecInput__EnvEntry *entries, Kiln__ExecInput__EnvEntry **ptrs)
{
	in->argv = argv;
	in->n_argv = (size_t)argc;
	for (size_t i = 0; i < o->n_env; i++) {
		Kiln__ExecInput__EnvEntry e = KILN__EXEC_INPUT__ENV_ENTRY__INIT;
		e.key = o->env[i].key;
		e.value = (char *)o->env[i].value;
		entries[i] = e;
		ptrs[i] = &entries[i];
	}
	in->n_env = o->n_env;
	in->env = ptrs;
	if (o->cwd)
		in->cwd = (char *)o->cwd;
	if (o->read_stdin)
		return read_input(cl, o->cmd, NULL, &in->stdin.data, &in->stdin.len);
	return 0;
}

static const char usage_run[] =
        "usage: kiln run [OPTIONS] [--] COMMAND [ARGS...]\n"
        "\n"
        "Run one command in a fresh sandbox (a one-shot session, destroyed afterwards).\n"
        "Its stdout and stderr pass through; kiln exits with its exit status\n"
        "(128+N if killed by signal N, 124 on timeout).\n"
        "\n"
        "  --template NAME      sandbox template (default: \"default\")\n"
        "  -t, --timeout DUR    kill it after DUR (e.g. 30s, 1500ms; default: the template's)\n"
        "  -l, --limit SPEC     memory=512M,pids=100,cpu=1500m,workspace=1G,timeout=30s,\n"
        "                       output=1M,idle=10m (repeatable)\n"
        "  -e, --env NAME=VALUE set an environment variable (repeatable)\n"
        "  --cwd DIR            working directory (default: /workspace)\n"
        "  --stdin              send this process's stdin to the command\n"
        "\n"
        "The first argument that is not an option starts the command, so\n"
        "`kiln run ls -la` runs `ls -la`.\n";

static int
exec_like(cli *cl, struct opts *o, const char *session, char **argv, int argc)
{
	Kiln__ExecInput in = KILN__EXEC_INPUT__INIT;
	Kiln__ExecInput__EnvEntry *entries = kl_xcalloc(o->n_env + 1, sizeof(*entries));
	Kiln__ExecInput__EnvEntry **ptrs = kl_xcalloc(o->n_env + 1, sizeof(*ptrs));
	int rv = exec_input(cl, o, argv, argc, &in, entries, ptrs);
	if (rv == 0) {
		Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
		tc.tool_case = KILN__TOOL_CALL__TOOL_EXEC;
		tc.exec = &in;
		tc.timeout_ms = o->timeout_ms;
		if (session) {
			rv = session_call(cl, o->cmd, session, &tc);
		} else {
			if (o->template_)
				tc.template_ = (char *)o->template_;
			tc.limits = o->has_limits ? &o->limits : NULL;
			rv = do_call(cl, &tc);
		}
	}
	free(in.stdin.data);
	free(ptrs);
	free(entries);
	return rv;
}

static int
cmd_run(cli *cl, int argc, char **argv)
{
	const cli_opt opts[] = {opt_template, opt_timeout, opt_limit,       opt_env,
	                        opt_cwd,      opt_stdin,   {NULL, 0, false}};
	struct opts o = {.cmd = "run"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, opts, 0, usage_run, &pos, &npos, &done);
	if (!done) {
		if (npos == 0)
			rv = usage(cl, o.cmd, "no command given");
		else
			rv = exec_like(cl, &o, NULL, pos, npos);
	}
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_exec[] =
        "usage: kiln exec SESSION [OPTIONS] [--] COMMAND [ARGS...]\n"
        "\n"
        "Run a command as a fresh process in an open session (argv form, no shell).\n"
        "Its stdout and stderr pass through; kiln exits with its exit status.\n"
        "\n"
        "  -t, --timeout DUR    kill it after DUR (default: the session's)\n"
        "  -e, --env NAME=VALUE set an environment variable (repeatable)\n"
        "  --cwd DIR            working directory (default: /workspace)\n"
        "  --stdin              send this process's stdin to the command\n";

static int
cmd_exec(cli *cl, int argc, char **argv)
{
	const cli_opt opts[] = {opt_timeout, opt_env, opt_cwd, opt_stdin, {NULL, 0, false}};
	struct opts o = {.cmd = "exec"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, opts, 1, usage_exec, &pos, &npos, &done);
	if (!done) {
		if (npos < 2)
			rv = usage(cl, o.cmd, npos ? "no command given" : "no session given");
		else
			rv = exec_like(cl, &o, pos[0], pos + 1, npos - 1);
	}
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_bash[] =
        "usage: kiln bash SESSION [OPTIONS] [--] 'COMMAND'\n"
        "       kiln bash SESSION --restart\n"
        "\n"
        "Run a command in the session's persistent bash (cwd and environment survive\n"
        "between calls; stderr is merged into stdout). Several arguments are joined\n"
        "with spaces. kiln exits with the command's status.\n"
        "\n"
        "  -t, --timeout DUR    kill the shell after DUR (default: 120s)\n"
        "  --restart            kill the shell and everything it started; the next\n"
        "                       call gets a fresh one\n";

static int
cmd_bash(cli *cl, int argc, char **argv)
{
	const cli_opt opts[] = {opt_timeout, {"restart", OPT_RESTART, false}, {NULL, 0, false}};
	struct opts o = {.cmd = "bash"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, opts, 1, usage_bash, &pos, &npos, &done);
	if (done)
		goto out;
	if (npos < 1 || (npos < 2 && !o.restart) || (npos > 1 && o.restart)) {
		rv = usage(cl, o.cmd,
		           npos < 1    ? "no session given"
		           : o.restart ? "--restart takes no command"
		                       : "no command given");
		goto out;
	}
	size_t len = 1;
	for (int i = 1; i < npos; i++)
		len += strlen(pos[i]) + 1;
	char *command = kl_xcalloc(1, len);
	for (int i = 1; i < npos; i++) {
		if (i > 1)
			strcat(command, " ");
		strcat(command, pos[i]);
	}
	Kiln__BashInput in = KILN__BASH_INPUT__INIT;
	in.command = command;
	in.restart = o.restart;
	in.timeout_ms = o.timeout_ms;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &in;
	tc.timeout_ms = o.timeout_ms;
	rv = session_call(cl, o.cmd, pos[0], &tc);
	free(command);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_read[] =
        "usage: kiln read SESSION PATH [--range A:B]\n"
        "\n"
        "Print a text file of the session (relative paths start at /workspace).\n"
        "\n"
        "  --range A:B   lines A to B (1-based, inclusive); A: or A:0 reads to the end;\n"
        "                A alone reads line A\n";

static int
cmd_read(cli *cl, int argc, char **argv)
{
	const cli_opt opts[] = {{"range", OPT_RANGE, true}, {NULL, 0, false}};
	struct opts o = {.cmd = "read"};
	char **pos = NULL;
	int npos;
	bool done;
	int64_t range[2];
	int rv = parse(cl, &o, argc, argv, opts, -1, usage_read, &pos, &npos, &done);
	if (done)
		goto out;
	if (npos != 2) {
		rv = usage(cl, o.cmd, "expected SESSION PATH");
		goto out;
	}
	if (o.range && cli_parse_range(o.range, &range[0], &range[1]) < 0) {
		rv = usage(cl, o.cmd, "--range '%s': expected A:B, A: or A with A >= 1", o.range);
		goto out;
	}
	Kiln__ReadInput in = KILN__READ_INPUT__INIT;
	in.file_path = pos[1];
	if (o.range) {
		in.view_range = range;
		in.n_view_range = 2;
	}
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_READ;
	tc.read = &in;
	rv = session_call(cl, o.cmd, pos[0], &tc);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_write[] =
        "usage: kiln write SESSION PATH [--from FILE]\n"
        "\n"
        "Replace a file of the session with the content of FILE, or of stdin, creating\n"
        "parent directories. The write is atomic.\n";

static int
cmd_write(cli *cl, int argc, char **argv)
{
	const cli_opt opts[] = {{"from", OPT_FROM, true}, {NULL, 0, false}};
	struct opts o = {.cmd = "write"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, opts, -1, usage_write, &pos, &npos, &done);
	if (done)
		goto out;
	if (npos != 2) {
		rv = usage(cl, o.cmd, "expected SESSION PATH");
		goto out;
	}
	if (!o.from && isatty(0))
		fprintf(cl->err, "kiln write: reading the content from the terminal; end it with "
		                 "Ctrl-D\n");
	Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
	in.file_path = pos[1];
	if ((rv = read_input(cl, o.cmd, o.from, &in.content.data, &in.content.len)) != 0)
		goto out;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_WRITE;
	tc.write = &in;
	rv = session_call(cl, o.cmd, pos[0], &tc);
	free(in.content.data);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_edit[] =
        "usage: kiln edit SESSION PATH OLD NEW [--all]\n"
        "\n"
        "Replace the string OLD by NEW in a file of the session. OLD must occur exactly\n"
        "once, unless --all replaces every occurrence.\n";

static int
cmd_edit(cli *cl, int argc, char **argv)
{
	const cli_opt opts[] = {{"all", OPT_ALL, false}, {NULL, 0, false}};
	struct opts o = {.cmd = "edit"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, opts, -1, usage_edit, &pos, &npos, &done);
	if (done)
		goto out;
	if (npos != 4) {
		rv = usage(cl, o.cmd, "expected SESSION PATH OLD NEW");
		goto out;
	}
	Kiln__EditInput in = KILN__EDIT_INPUT__INIT;
	in.file_path = pos[1];
	in.old_string = pos[2];
	in.new_string = pos[3];
	in.replace_all = o.all;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.tool_case = KILN__TOOL_CALL__TOOL_EDIT;
	tc.edit = &in;
	rv = session_call(cl, o.cmd, pos[0], &tc);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_glob[] =
        "usage: kiln glob SESSION PATTERN [PATH]\n"
        "\n"
        "List the session's files matching PATTERN (doublestar: **/*.c), newest first,\n"
        "at most 200, under PATH (default: /workspace).\n";

static const char usage_grep[] =
        "usage: kiln grep SESSION PATTERN [PATH]\n"
        "\n"
        "Search the session's files under PATH (default: /workspace) for the regular\n"
        "expression PATTERN; prints path:line:text.\n";

static int
search(cli *cl, int argc, char **argv, bool grep)
{
	struct opts o = {.cmd = grep ? "grep" : "glob"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, NULL, -1, grep ? usage_grep : usage_glob, &pos, &npos,
	               &done);
	if (done)
		goto out;
	if (npos < 2 || npos > 3) {
		rv = usage(cl, o.cmd, "expected SESSION PATTERN [PATH]");
		goto out;
	}
	char *path = npos > 2 ? pos[2] : (char *)"";
	Kiln__GlobInput gi = KILN__GLOB_INPUT__INIT;
	Kiln__GrepInput ri = KILN__GREP_INPUT__INIT;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	if (grep) {
		ri.pattern = pos[1];
		ri.path = path;
		tc.tool_case = KILN__TOOL_CALL__TOOL_GREP;
		tc.grep = &ri;
	} else {
		gi.pattern = pos[1];
		gi.path = path;
		tc.tool_case = KILN__TOOL_CALL__TOOL_GLOB;
		tc.glob = &gi;
	}
	rv = session_call(cl, o.cmd, pos[0], &tc);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static int
cmd_glob(cli *cl, int argc, char **argv)
{
	return search(cl, argc, argv, false);
}

static int
cmd_grep(cli *cl, int argc, char **argv)
{
	return search(cl, argc, argv, true);
}

/* ---- requests other than tool calls ---- */

/* Connect with the reply timeout these short requests use. */
static int
connect_short(cli *cl)
{
	int rv = cli_connect(cl);
	if (rv == 0)
		kiln_set_timeout(cl->client, CLI_REQUEST_TIMEOUT_MS);
	return rv;
}

static const char usage_session[] =
        "usage: kiln session open [--template NAME] [--limit SPEC] [--env NAME=VALUE]\n"
        "       kiln session close SESSION\n"
        "       kiln session list\n"
        "\n"
        "open prints the new session's id (use it with exec, bash, read, write, edit,\n"
        "glob and grep); close destroys the session and its sandbox; list shows the\n"
        "open sessions. --limit takes the same keys as `kiln run`.\n";

static int
session_open(cli *cl, struct opts *o)
{
	Kiln__SessionOpen open = KILN__SESSION_OPEN__INIT;
	Kiln__SessionOpen__EnvEntry *entries = kl_xcalloc(o->n_env + 1, sizeof(*entries));
	Kiln__SessionOpen__EnvEntry **ptrs = kl_xcalloc(o->n_env + 1, sizeof(*ptrs));
	for (size_t i = 0; i < o->n_env; i++) {
		Kiln__SessionOpen__EnvEntry e = KILN__SESSION_OPEN__ENV_ENTRY__INIT;
		e.key = o->env[i].key;
		e.value = (char *)o->env[i].value;
		entries[i] = e;
		ptrs[i] = &entries[i];
	}
	open.n_env = o->n_env;
	open.env = ptrs;
	if (o->template_)
		open.template_ = (char *)o->template_;
	open.limits = o->has_limits ? &o->limits : NULL;
	Kiln__SessionOpened *op = NULL;
	int rv = connect_short(cl);
	if (rv == 0 && kiln_session_open_full(cl->client, &open, &op) < 0)
		rv = cli_fail(cl, kiln_last_error(), CLI_CTX_GENERIC);
	if (op && cl->json) {
		cli_json_print(cl, cli_json_opened(op));
	} else if (op) {
		fprintf(cl->out, "%s\n", op->session->session_id);
		fflush(cl->out);
		if (!op->limits_enforced)
			fprintf(cl->err, "kiln: note: node %s does not enforce resource limits\n",
			        op->session->node_id);
	}
	kiln_opened_free(op);
	free(ptrs);
	free(entries);
	return rv;
}

static int
session_close(cli *cl, const char *id)
{
	int rv = connect_short(cl);
	if (rv != 0)
		return rv;
	if (kiln_session_close(cl->client, id) < 0)
		return cli_fail(cl, kiln_last_error(), CLI_CTX_SESSION);
	if (cl->json) {
		json_t *j = json_object();
		json_object_set_new(j, "code", json_string("OK"));
		json_object_set_new(j, "session_id", json_string(id));
		cli_json_print(cl, j);
	}
	return 0;
}

static int
session_list(cli *cl)
{
	int rv = connect_short(cl);
	if (rv != 0)
		return rv;
	Kiln__SessionListReply *l;
	if (kiln_session_list(cl->client, &l) < 0)
		return cli_fail(cl, kiln_last_error(), CLI_CTX_GENERIC);
	if (cl->json) {
		cli_json_print(cl, cli_json_sessions(l));
	} else {
		struct timeval tv;
		gettimeofday(&tv, NULL);
		cli_sessions_print(cl, l, (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000);
	}
	kiln_list_free(l);
	return 0;
}

static int
cmd_session(cli *cl, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help"))
		return help(cl, usage_session);
	bool is_open = !strcmp(sub, "open"), is_close = !strcmp(sub, "close");
	if (!is_open && !is_close && strcmp(sub, "list"))
		return usage(cl, "session", "expected open, close or list%s%s%s",
		             *sub ? ", not '" : "", sub, *sub ? "'" : "");
	const cli_opt open_opts[] = {opt_template, opt_limit, opt_env, {NULL, 0, false}};
	char cmd[32];
	snprintf(cmd, sizeof cmd, "session %s", sub);
	struct opts o = {.cmd = cmd};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc - 1, argv + 1, is_open ? open_opts : NULL, -1, usage_session,
	               &pos, &npos, &done);
	if (done)
		goto out;
	if (npos != (is_close ? 1 : 0))
		rv = usage(cl, cmd, is_close ? "expected one SESSION" : "takes no arguments");
	else if (is_open)
		rv = session_open(cl, &o);
	else if (is_close)
		rv = session_close(cl, pos[0]);
	else
		rv = session_list(cl);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_cancel[] =
        "usage: kiln cancel JOB_ID\n"
        "\n"
        "Cancel a running call by its job id (the job_id of `--json` output, decimal or\n"
        "0x-hex). The call ends with code CANCELLED. Ctrl-C on a running `kiln run`,\n"
        "`exec` or `bash` does this for you.\n";

static int
cmd_cancel(cli *cl, int argc, char **argv)
{
	struct opts o = {.cmd = "cancel"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, NULL, -1, usage_cancel, &pos, &npos, &done);
	if (done)
		goto out;
	char *end = NULL;
	errno = 0;
	uint64_t job = npos == 1 ? strtoull(pos[0], &end, 0) : 0;
	if (npos != 1 || errno || !end || *end || job == 0 || pos[0][0] == '-') {
		rv = usage(cl, o.cmd, "expected one nonzero JOB_ID");
		goto out;
	}
	if ((rv = connect_short(cl)) != 0)
		goto out;
	if (kiln_cancel(cl->client, job) < 0) {
		rv = cli_fail(cl, kiln_last_error(), CLI_CTX_JOB);
	} else if (cl->json) {
		json_t *j = json_object();
		json_object_set_new(j, "code", json_string("OK"));
		json_object_set_new(j, "job_id", json_string(pos[0]));
		cli_json_print(cl, j);
	}
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_status[] =
        "usage: kiln status [--json]\n"
        "\n"
        "Show the cluster: nodes (state, slots, running calls, sessions, warm sandboxes\n"
        "per template as warm/target, last heartbeat, whether limits are enforced),\n"
        "tenants (sessions and calls in flight against their maxima, queued, done,\n"
        "rejected) and totals. A tenant token sees its own tenant; the admin token\n"
        "sees all.\n";

static int
cmd_status(cli *cl, int argc, char **argv)
{
	struct opts o = {.cmd = "status"};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc, argv, NULL, -1, usage_status, &pos, &npos, &done);
	if (done)
		goto out;
	if (npos != 0) {
		rv = usage(cl, o.cmd, "takes no arguments");
		goto out;
	}
	if ((rv = connect_short(cl)) != 0)
		goto out;
	Kiln__StatusReply *s;
	if (kiln_status(cl->client, &s) < 0) {
		rv = cli_fail(cl, kiln_last_error(), CLI_CTX_GENERIC);
		goto out;
	}
	if (cl->json)
		cli_json_print(cl, cli_json_status(s));
	else
		cli_status_print(cl, s);
	kiln_status_free(s);
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

static const char usage_node[] =
        "usage: kiln node drain NODE_ID\n"
        "       kiln node remove NODE_ID\n"
        "\n"
        "drain: the node takes no new sessions and leaves once its sessions are gone.\n"
        "remove: forget the node now; calls running there end with NODE_LOST.\n"
        "Both need the scheduler's admin token (--token or --token-file).\n";

static int
cmd_node(cli *cl, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help"))
		return help(cl, usage_node);
	if (strcmp(sub, "drain") && strcmp(sub, "remove"))
		return usage(cl, "node", "expected drain or remove%s%s%s", *sub ? ", not '" : "",
		             sub, *sub ? "'" : "");
	char cmd[32];
	snprintf(cmd, sizeof cmd, "node %s", sub);
	struct opts o = {.cmd = cmd};
	char **pos = NULL;
	int npos;
	bool done;
	int rv = parse(cl, &o, argc - 1, argv + 1, NULL, -1, usage_node, &pos, &npos, &done);
	if (done)
		goto out;
	if (npos != 1) {
		rv = usage(cl, cmd, "expected one NODE_ID");
		goto out;
	}
	if ((rv = connect_short(cl)) != 0)
		goto out;
	if (kiln_node_admin(cl->client, pos[0], sub) < 0) {
		rv = cli_fail(cl, kiln_last_error(), CLI_CTX_NODE);
	} else if (cl->json) {
		json_t *j = json_object();
		json_object_set_new(j, "code", json_string("OK"));
		json_object_set_new(j, "node_id", json_string(pos[0]));
		json_object_set_new(j, "action", json_string(sub));
		cli_json_print(cl, j);
	} else {
		fprintf(cl->err, "kiln: node %s: %s\n", pos[0],
		        !strcmp(sub, "drain") ? "draining" : "removed");
	}
out:
	opts_fini(&o);
	free(pos);
	return rv;
}

const cli_cmd cli_builtin_cmds[] = {
        {"run", "run one command in a fresh sandbox (one-shot)", cmd_run},
        {"session", "open, close or list sessions", cmd_session},
        {"exec", "run a command in a session (a fresh process, argv form)", cmd_exec},
        {"bash", "run a command in a session's persistent shell", cmd_bash},
        {"read", "print a file of a session", cmd_read},
        {"write", "write a file of a session (from stdin or --from FILE)", cmd_write},
        {"edit", "replace a string in a file of a session", cmd_edit},
        {"glob", "list a session's files matching a pattern", cmd_glob},
        {"grep", "search a session's files for a regular expression", cmd_grep},
        {"cancel", "cancel a running call by job id", cmd_cancel},
        {"status", "show nodes, tenants and totals", cmd_status},
        {"node", "drain or remove a node (admin token)", cmd_node},
        {NULL, NULL, NULL},
};
