/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kiln CLI's command-line syntax: a small option parser (getopt cannot
 * stop after the N-th positional, which `kiln exec SESSION CMD -x` needs),
 * global options and token resolution, and the value syntax of limits,
 * sizes, durations, CPU amounts and line ranges.
 */
#include "cli.h"

#include "kl_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

/* ---- options ---- */

static const struct {
	const char *name;
	bool arg;
} global_opts[] = {
        {"scheduler", true}, {"token", true}, {"token-file", true},
        {"json", false},     {"help", false},
};

int
cli_global_opt(cli *cl, const char *name, const char *val)
{
	if (!strcmp(name, "scheduler"))
		cl->url = val;
	else if (!strcmp(name, "token"))
		cl->token = val;
	else if (!strcmp(name, "token-file"))
		cl->token_file = val;
	else if (!strcmp(name, "json"))
		cl->json = true;
	else
		return -ENOENT;
	return 0;
}

static int usage_error(cli *cl, const char *cmd, const char *fmt, ...) KL_PRINTF(3, 4);

static int
usage_error(cli *cl, const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(cl->err, "kiln%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(cl->err, fmt, ap);
	va_end(ap);
	fprintf(cl->err, " (see `kiln%s%s --help`)\n", cmd ? " " : "", cmd ? cmd : "");
	return CLI_EXIT_USAGE;
}

static const cli_opt *
find_long(const cli_opt *opts, const char *name, size_t len)
{
	for (; opts && opts->name; opts++)
		if (strlen(opts->name) == len && !strncmp(opts->name, name, len))
			return opts;
	return NULL;
}

static const cli_opt *
find_short(const cli_opt *opts, int key)
{
	for (; opts && opts->name; opts++)
		if (opts->key == key)
			return opts;
	return NULL;
}

/* One "--name[=value]" argument at argv[*i]. 0, CLI_HELP or an exit code. */
static int
parse_long(cli *cl, const char *cmd, int argc, char **argv, int *i, const cli_opt *opts,
           cli_opt_fn *fn, void *ctx)
{
	const char *name = argv[*i] + 2;
	const char *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const cli_opt *o = find_long(opts, name, len);
	bool arg = o && o->arg;
	int g = -1;
	if (!o) {
		for (size_t k = 0; k < KL_ARRAY_SIZE(global_opts); k++)
			if (strlen(global_opts[k].name) == len &&
			    !strncmp(global_opts[k].name, name, len))
				g = (int)k;
		if (g < 0)
			return usage_error(cl, cmd, "unknown option '--%.*s'", (int)len, name);
		arg = global_opts[g].arg;
	}
	const char *val = NULL;
	if (arg) {
		if (eq)
			val = eq + 1;
		else if (*i + 1 < argc)
			val = argv[++*i];
		else
			return usage_error(cl, cmd, "option --%.*s needs a value", (int)len, name);
	} else if (eq) {
		return usage_error(cl, cmd, "option --%.*s takes no value", (int)len, name);
	}
	if (o)
		return fn(cl, ctx, o->key, val);
	if (!strcmp(global_opts[g].name, "help"))
		return CLI_HELP;
	cli_global_opt(cl, global_opts[g].name, val);
	return 0;
}

/* One "-k", "-k VALUE" or "-kVALUE" argument. */
static int
parse_short(cli *cl, const char *cmd, int argc, char **argv, int *i, const cli_opt *opts,
            cli_opt_fn *fn, void *ctx)
{
	const char *a = argv[*i];
	const cli_opt *o = find_short(opts, (unsigned char)a[1]);
	if (!o) {
		if (a[1] == 'h' && !a[2])
			return CLI_HELP;
		return usage_error(cl, cmd, "unknown option '%s'", a);
	}
	const char *val = NULL;
	if (o->arg) {
		if (a[2])
			val = a + 2;
		else if (*i + 1 < argc)
			val = argv[++*i];
		else
			return usage_error(cl, cmd, "option -%c needs a value", a[1]);
	} else if (a[2]) {
		return usage_error(cl, cmd, "unknown option '%s'", a);
	}
	return fn(cl, ctx, o->key, val);
}

int
cli_parse(cli *cl, const char *cmd, int argc, char **argv, const cli_opt *opts, int stop_after,
          cli_opt_fn *fn, void *ctx, char ***ret_pos, int *ret_npos)
{
	char **pos = kl_xcalloc((size_t)argc + 1, sizeof(*pos));
	int npos = 0, rv = 0;
	bool verbatim = false;
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (!verbatim && !strcmp(a, "--")) {
			verbatim = true;
			continue;
		}
		if (verbatim || a[0] != '-' || a[1] == 0) {
			if (stop_after >= 0 && npos >= stop_after)
				verbatim = true;
			pos[npos++] = a;
			continue;
		}
		if (a[1] == '-')
			rv = parse_long(cl, cmd, argc, argv, &i, opts, fn, ctx);
		else
			rv = parse_short(cl, cmd, argc, argv, &i, opts, fn, ctx);
		if (rv != 0) {
			free(pos);
			return rv;
		}
	}
	*ret_pos = pos;
	*ret_npos = npos;
	return 0;
}

/* ---- token and connection ---- */

static int
token_from_file(cli *cl, const char *path, const char *from)
{
	char *buf;
	size_t len;
	int rv = kl_read_file_at(AT_FDCWD, path, 64 << 10, &buf, &len);
	if (rv < 0)
		return cli_failf(cl, CLI_EXIT_NOTFOUND, "cannot read the token file %s (%s): %s",
		                 path, from, strerror(-rv));
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		buf[--len] = 0;
	if (len == 0 || strchr(buf, '\n')) {
		free(buf);
		return cli_failf(cl, CLI_EXIT_USAGE,
		                 "the token file %s (%s) must hold one token on one line", path,
		                 from);
	}
	free(cl->token_buf);
	cl->token_buf = buf;
	cl->token = buf;
	cl->token_from = from;
	return 0;
}

int
cli_resolve_token(cli *cl)
{
	if (cl->token && cl->token_file)
		return cli_failf(cl, CLI_EXIT_USAGE,
		                 "give either --token or --token-file, not both");
	if (cl->token) {
		cl->token_from = "--token";
		return 0;
	}
	if (cl->token_file)
		return token_from_file(cl, cl->token_file, "--token-file");
	const char *env = getenv("KILN_TOKEN");
	if (env && *env) {
		cl->token = env;
		cl->token_from = "KILN_TOKEN";
		return 0;
	}
	env = getenv("KILN_TOKEN_FILE");
	if (env && *env)
		return token_from_file(cl, env, "KILN_TOKEN_FILE");
	cl->token = CLI_DEV_TOKEN;
	cl->token_from = "the default dev token";
	return 0;
}

int
cli_connect(cli *cl)
{
	int rv = cli_resolve_token(cl);
	if (rv != 0)
		return rv;
	if (kiln_connect(cl->url, cl->token, &cl->client, NULL, 0) < 0)
		return cli_fail(cl, kiln_last_error(), CLI_CTX_GENERIC);
	return 0;
}

void
cli_fini(cli *cl)
{
	kiln_close(cl->client);
	cl->client = NULL;
	free(cl->token_buf);
	cl->token_buf = NULL;
}

/* ---- value syntax ---- */

/* A non-negative decimal, "12" or "1.5", as integer and fraction parts. */
struct num {
	uint64_t ip, fnum, fden;
};

static int
num_parse(const char *s, struct num *n, const char **end)
{
	const char *p = s;
	n->ip = 0;
	n->fnum = 0;
	n->fden = 1;
	if (!isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1])))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++)
		if (__builtin_mul_overflow(n->ip, 10, &n->ip) ||
		    __builtin_add_overflow(n->ip, (uint64_t)(*p - '0'), &n->ip))
			return -ERANGE;
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++)
			if (n->fden < 1000000000000000000ull) { /* digits past 1e-18 are noise */
				n->fnum = n->fnum * 10 + (uint64_t)(*p - '0');
				n->fden *= 10;
			}
	}
	*end = p;
	return 0;
}

/* n * unit, rounded down. */
static int
num_scale(const struct num *n, uint64_t unit, uint64_t *ret)
{
	uint64_t v;
	if (__builtin_mul_overflow(n->ip, unit, &v))
		return -ERANGE;
	uint64_t f = (uint64_t)((unsigned __int128)n->fnum * unit / n->fden);
	if (__builtin_add_overflow(v, f, &v))
		return -ERANGE;
	*ret = v;
	return 0;
}

int
cli_parse_size(const char *s, uint64_t *ret)
{
	struct num n;
	const char *p;
	int rv = num_parse(s, &n, &p);
	if (rv < 0)
		return rv;
	uint64_t unit = 1;
	switch (tolower((unsigned char)*p)) {
	case 'k':
		unit = 1ull << 10;
		break;
	case 'm':
		unit = 1ull << 20;
		break;
	case 'g':
		unit = 1ull << 30;
		break;
	case 't':
		unit = 1ull << 40;
		break;
	}
	if (unit > 1) {
		p++;
		if (tolower((unsigned char)*p) == 'i')
			p++;
	}
	if (tolower((unsigned char)*p) == 'b')
		p++;
	if (*p)
		return -EINVAL;
	return num_scale(&n, unit, ret);
}

int
cli_parse_duration_ms(const char *s, uint32_t *ret)
{
	static const struct {
		const char *suffix;
		uint64_t ms;
	} units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"min", 60000}, {"h", 3600000}};
	struct num n;
	const char *p;
	int rv = num_parse(s, &n, &p);
	if (rv < 0)
		return rv;
	for (size_t i = 0; i < KL_ARRAY_SIZE(units); i++) {
		if (strcmp(p, units[i].suffix))
			continue;
		uint64_t v;
		if ((rv = num_scale(&n, units[i].ms, &v)) < 0)
			return rv;
		if (v > UINT32_MAX)
			return -ERANGE;
		*ret = (uint32_t)v;
		return 0;
	}
	return -EINVAL;
}

int
cli_parse_millicores(const char *s, uint32_t *ret)
{
	struct num n;
	const char *p;
	int rv = num_parse(s, &n, &p);
	if (rv < 0)
		return rv;
	uint64_t unit;
	if (!strcmp(p, "m"))
		unit = 1;
	else if (!*p)
		unit = 1000;
	else
		return -EINVAL;
	uint64_t v;
	if ((rv = num_scale(&n, unit, &v)) < 0)
		return rv;
	if (v > UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

static int
parse_u32(const char *s, uint32_t *ret)
{
	uint64_t v;
	struct num n;
	const char *p;
	int rv = num_parse(s, &n, &p);
	if (rv < 0 || *p || n.fnum)
		return rv < 0 ? rv : -EINVAL;
	if ((rv = num_scale(&n, 1, &v)) < 0 || v > UINT32_MAX)
		return rv < 0 ? rv : -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

enum limit_kind { LK_SIZE, LK_U32, LK_CPU, LK_MS };

static const struct limit_key {
	const char *name;
	enum limit_kind kind;
	size_t off;
	const char *example;
} limit_keys[] = {
        {"memory", LK_SIZE, offsetof(Kiln__Limits, memory_bytes), "a size, e.g. 512M or 2G"},
        {"pids", LK_U32, offsetof(Kiln__Limits, pids), "a count, e.g. 100"},
        {"cpu", LK_CPU, offsetof(Kiln__Limits, cpu_millicores), "CPUs, e.g. 1500m or 1.5"},
        {"workspace", LK_SIZE, offsetof(Kiln__Limits, workspace_bytes), "a size, e.g. 1G"},
        {"timeout", LK_MS, offsetof(Kiln__Limits, call_timeout_ms), "a duration, e.g. 30s"},
        {"output", LK_SIZE, offsetof(Kiln__Limits, output_bytes), "a size, e.g. 1M"},
        {"idle", LK_MS, offsetof(Kiln__Limits, idle_ttl_ms), "a duration, e.g. 10m"},
};

static int
limit_set(const struct limit_key *k, const char *val, Kiln__Limits *lim)
{
	char *field = (char *)lim + k->off;
	uint64_t v64;
	uint32_t v32;
	int rv;
	switch (k->kind) {
	case LK_SIZE:
		if ((rv = cli_parse_size(val, &v64)) == 0)
			memcpy(field, &v64, sizeof v64);
		return rv;
	case LK_U32:
		rv = parse_u32(val, &v32);
		break;
	case LK_CPU:
		rv = cli_parse_millicores(val, &v32);
		break;
	default:
		rv = cli_parse_duration_ms(val, &v32);
		break;
	}
	if (rv == 0)
		memcpy(field, &v32, sizeof v32);
	return rv;
}

int
cli_parse_limits(const char *spec, Kiln__Limits *lim, char *err, size_t errlen)
{
	char *copy = kl_xstrdup(spec), *save = NULL;
	int rv = 0;
	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		if (!eq || eq == item || !eq[1]) {
			snprintf(err, errlen, "'%s' is not key=value (e.g. memory=512M,pids=100)",
			         item);
			rv = -EINVAL;
			break;
		}
		*eq = 0;
		const struct limit_key *k = NULL;
		for (size_t i = 0; i < KL_ARRAY_SIZE(limit_keys); i++)
			if (!strcmp(item, limit_keys[i].name))
				k = &limit_keys[i];
		if (!k) {
			snprintf(err, errlen,
			         "unknown limit '%s' (known: memory, pids, cpu, workspace, "
			         "timeout, output, idle)",
			         item);
			rv = -EINVAL;
			break;
		}
		if ((rv = limit_set(k, eq + 1, lim)) < 0) {
			snprintf(err, errlen, "%s=%s: %s; expected %s", item, eq + 1,
			         rv == -ERANGE ? "out of range" : "bad value", k->example);
			rv = -EINVAL;
			break;
		}
	}
	free(copy);
	return rv;
}

static int
parse_i64(const char *s, const char **end, int64_t *ret)
{
	char *e;
	errno = 0;
	long long v = strtoll(s, &e, 10);
	if (e == s || errno)
		return -EINVAL;
	*end = e;
	*ret = v;
	return 0;
}

int
cli_parse_range(const char *s, int64_t *start, int64_t *end)
{
	const char *p;
	int64_t a, b;
	if (parse_i64(s, &p, &a) < 0 || a < 1)
		return -EINVAL;
	if (!*p) {
		b = a;
	} else if (*p != ':') {
		return -EINVAL;
	} else if (!p[1]) {
		b = 0;
	} else {
		const char *q;
		if (parse_i64(p + 1, &q, &b) < 0 || *q)
			return -EINVAL;
	}
	*start = a;
	*end = b;
	return 0;
}
