/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's configuration loader. inih splits the text into sections and
 * key = value pairs; everything else is ours: a reader callback feeds inih one
 * line at a time so that we know the line number (Debian builds inih without
 * INI_HANDLER_LINENO), refuse lines longer than inih's fixed 200-byte buffer
 * instead of letting it split them, see section headers in full (inih cuts
 * them at 49 bytes, which would merge two long tenant names) and keep inih's
 * process-wide option globals untouched. Values are parsed by tables of keys,
 * then cross-checked (tokens present and distinct, defaults within caps).
 */
#include "sched_config.h"

#include "kl_util.h"

#include <ctype.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#define CONFIG_FILE_MAX (1u << 20)
#define TOKEN_FILE_MAX  4096
/* Durations are stored as uint32 ms; the cap is a round number of hours. */
#define DURATION_MAX (1193ull * 3600 * 1000)

/* ---- values ---- */

struct unit {
	const char *suffix;
	uint64_t mult;
};

static const struct unit size_units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1ull << 10},
        {"kb", 1ull << 10},
        {"kib", 1ull << 10},
        {"m", 1ull << 20},
        {"mb", 1ull << 20},
        {"mib", 1ull << 20},
        {"g", 1ull << 30},
        {"gb", 1ull << 30},
        {"gib", 1ull << 30},
        {"t", 1ull << 40},
        {"tb", 1ull << 40},
        {"tib", 1ull << 40},
        {NULL, 0},
};
static const struct unit duration_units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {NULL, 0},
};
static const struct unit cpu_units[] = {{"", 1000}, {"m", 1}, {NULL, 0}};
static const struct unit count_units[] = {{"", 1}, {NULL, 0}};

/*
 * A decimal number with an optional fraction and a unit, computed exactly in
 * integers: -EINVAL for bad syntax, -ERANGE past 64 bits, -EDOM when the
 * fraction does not come to a whole base unit ("1.1K" is 1126.4 bytes).
 */
static int
parse_scaled(const char *s, const struct unit *units, uint64_t *ret)
{
	const char *p = s;
	uint64_t ip = 0, frac = 0, fscale = 1;
	bool big = false;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++)
		big |= __builtin_mul_overflow(ip, 10, &ip) ||
		       __builtin_add_overflow(ip, (uint64_t)(*p - '0'), &ip);
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		for (int nd = 0; isdigit((unsigned char)*p); p++, nd++) {
			if (nd == 9)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*p - '0');
			fscale *= 10;
		}
	}
	while (*p == ' ' || *p == '\t')
		p++;
	const struct unit *u = units;
	while (u->suffix && strcasecmp(p, u->suffix))
		u++;
	if (!u->suffix)
		return -EINVAL;
	if (big)
		return -ERANGE;
	uint64_t v;
	unsigned __int128 f = (unsigned __int128)frac * u->mult;
	if (f % fscale)
		return -EDOM;
	if (__builtin_mul_overflow(ip, u->mult, &v) ||
	    __builtin_add_overflow(v, (uint64_t)(f / fscale), &v))
		return -ERANGE;
	*ret = v;
	return 0;
}

int
sched_parse_size(const char *s, uint64_t *ret)
{
	int r = parse_scaled(s, size_units, ret);
	return r == -EDOM ? -EINVAL : r;
}

int
sched_parse_duration_ms(const char *s, uint64_t *ret)
{
	int r = parse_scaled(s, duration_units, ret);
	return r == -EDOM ? -EINVAL : r;
}

int
sched_parse_cpu(const char *s, uint64_t *ret)
{
	int r = parse_scaled(s, cpu_units, ret);
	return r == -EDOM ? -EINVAL : r;
}

void
sched_fmt_size(uint64_t v, char *buf, size_t n)
{
	static const char *names[] = {"KiB", "MiB", "GiB", "TiB"};
	for (int i = 3; i >= 0; i--) {
		uint64_t m = 1ull << (10 * (i + 1));
		if (v >= m && v % m == 0) {
			snprintf(buf, n, "%" PRIu64 " %s", v / m, names[i]);
			return;
		}
	}
	snprintf(buf, n, "%" PRIu64 " byte%s", v, v == 1 ? "" : "s");
}

void
sched_fmt_duration(uint64_t ms, char *buf, size_t n)
{
	if (ms && ms % (3600 * 1000) == 0)
		snprintf(buf, n, "%" PRIu64 "h", ms / (3600 * 1000));
	else if (ms && ms % (60 * 1000) == 0)
		snprintf(buf, n, "%" PRIu64 "m", ms / (60 * 1000));
	else if (ms && ms % 1000 == 0)
		snprintf(buf, n, "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, n, "%" PRIu64 "ms", ms);
}

void
sched_fmt_cpu(uint64_t millicores, char *buf, size_t n)
{
	snprintf(buf, n, "%" PRIu64 "m", millicores);
}

/* ---- keys ---- */

enum kind { V_URL, V_TOKEN, V_TOKEN_FILE, V_COUNT, V_SIZE, V_DURATION, V_CPU, V_STRING };

struct key {
	const char *name;
	enum kind kind;
	uint16_t width; /* of the destination: 4 or 8 bytes for numbers */
	uint16_t off;
	uint64_t min, max; /* max 0: whatever the destination holds */
	const char *excl;  /* a key that sets the same field: only one may appear */
};

#define FIELD_SIZE(type, f) sizeof(((type *)0)->f)
#define SK(n, k, f, lo, hi, x)                                                          \
	{                                                                               \
		n, k, FIELD_SIZE(sched_config, f), offsetof(sched_config, f), lo, hi, x \
	}
#define TK(n, k, f, lo, hi, x)                                                                  \
	{                                                                                       \
		n, k, FIELD_SIZE(sched_tenant_cfg, f), offsetof(sched_tenant_cfg, f), lo, hi, x \
	}

static const struct key sched_keys[] = {
        SK("node_url", V_URL, node_url, 0, 0, NULL),
        SK("client_url", V_URL, client_url, 0, 0, NULL),
        SK("join_token", V_TOKEN, join_token, 0, 0, "join_token_file"),
        SK("join_token_file", V_TOKEN_FILE, join_token, 0, 0, "join_token"),
        SK("admin_token", V_TOKEN, admin_token, 0, 0, "admin_token_file"),
        SK("admin_token_file", V_TOKEN_FILE, admin_token, 0, 0, "admin_token"),
        SK("heartbeat", V_DURATION, heartbeat_ms, 1, DURATION_MAX, NULL),
        SK("dead_after", V_DURATION, dead_after_ms, 1, DURATION_MAX, NULL),
        SK("poll", V_DURATION, poll_ms, 1, DURATION_MAX, NULL),
        SK("idle_ttl", V_DURATION, idle_ttl_ms, 1, DURATION_MAX, NULL),
        SK("shutdown_grace", V_DURATION, shutdown_grace_ms, 0, DURATION_MAX, NULL),
        SK("max_queued", V_COUNT, max_queued, 1, 0, NULL),
        SK("audit_log", V_STRING, audit_log, 0, 0, NULL),
        SK("audit_fsync", V_STRING, audit_fsync, 0, 0, NULL),
};

#define SECK(n, k, f)                                                                            \
	{                                                                                        \
		n, k, FIELD_SIZE(sched_secret_cfg, f), offsetof(sched_secret_cfg, f), 0, 0, NULL \
	}

static const struct key secret_keys[] = {
        SECK("value", V_STRING, value),
        SECK("value_file", V_TOKEN_FILE, value),
        SECK("tenants", V_STRING, tenants),
};
#define NSECKEYS KL_ARRAY_SIZE(secret_keys)

static const struct key tenant_keys[] = {
        TK("token", V_TOKEN, token, 0, 0, "token_file"),
        TK("token_file", V_TOKEN_FILE, token, 0, 0, "token"),
        TK("weight", V_COUNT, weight, 1, SCHED_WEIGHT_MAX, NULL),
        TK("max_sessions", V_COUNT, max_sessions, 1, 0, NULL),
        TK("max_inflight", V_COUNT, max_inflight, 1, 0, NULL),
        TK("rate", V_COUNT, rate, 0, 0, NULL),
        TK("burst", V_COUNT, burst, 1, 0, NULL),
        TK("queue", V_COUNT, queue_limit, 1, 0, NULL),
        TK("max_memory", V_SIZE, max.memory_bytes, 0, 0, NULL),
        TK("max_pids", V_COUNT, max.pids, 0, 0, NULL),
        TK("max_cpu", V_CPU, max.cpu_millicores, 0, 0, NULL),
        TK("max_workspace", V_SIZE, max.workspace_bytes, 0, 0, NULL),
        TK("max_timeout", V_DURATION, max.call_timeout_ms, 0, DURATION_MAX, NULL),
        TK("max_output", V_SIZE, max.output_bytes, 0, 0, NULL),
        TK("max_idle_ttl", V_DURATION, max.idle_ttl_ms, 0, DURATION_MAX, NULL),
        TK("default_memory", V_SIZE, defaults.memory_bytes, 0, 0, NULL),
        TK("default_pids", V_COUNT, defaults.pids, 0, 0, NULL),
        TK("default_cpu", V_CPU, defaults.cpu_millicores, 0, 0, NULL),
        TK("default_workspace", V_SIZE, defaults.workspace_bytes, 0, 0, NULL),
        TK("default_timeout", V_DURATION, defaults.call_timeout_ms, 0, DURATION_MAX, NULL),
        TK("default_output", V_SIZE, defaults.output_bytes, 0, 0, NULL),
        TK("default_idle_ttl", V_DURATION, defaults.idle_ttl_ms, 0, DURATION_MAX, NULL),
        TK("aggregate_memory", V_SIZE, aggregate.memory_bytes, 0, 0, NULL),
        TK("aggregate_pids", V_COUNT, aggregate.pids, 0, 0, NULL),
        TK("aggregate_cpu", V_CPU, aggregate.cpu_millicores, 0, 0, NULL),
};

#define NSKEYS KL_ARRAY_SIZE(sched_keys)
#define NTKEYS KL_ARRAY_SIZE(tenant_keys)

/* ---- the parse ---- */

enum section { SEC_NONE, SEC_SCHED, SEC_TENANT, SEC_SECRET, SEC_BAD };

struct tenant_meta {
	int line;             /* of the [tenant NAME] header */
	int key_line[NTKEYS]; /* where each key was set; 0 = not set */
};

struct parse {
	sched_config *c;
	struct tenant_meta *meta; /* parallel to c->tenants */
	int cap;
	const char *pos; /* the rest of the text */
	int dirfd;       /* token_file paths are relative to this */
	int lineno;
	enum section sec;
	int sched_line[NSKEYS];
	int secret_line[NSECKEYS]; /* of the current [secret NAME] */
	bool failed;
	int errline; /* 0: the error belongs to no line */
	char msg[512];
};

/* Record the first error (and only the first); returns 0 for inih's "failed". */
static int perr(struct parse *p, int line, const char *fmt, ...) KL_PRINTF(3, 4);

static int
perr(struct parse *p, int line, const char *fmt, ...)
{
	if (p->failed)
		return 0;
	p->failed = true;
	p->errline = line;
	int n = line ? snprintf(p->msg, sizeof p->msg, "config line %d: ", line)
	             : snprintf(p->msg, sizeof p->msg, "config: ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->msg + n, sizeof p->msg - (size_t)n, fmt, ap);
	va_end(ap);
	return 0;
}

static bool
is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

static bool
tenant_name_ok(const char *s, size_t n)
{
	if (!n || n > SCHED_TENANT_NAME_MAX || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !(s[i] && strchr("._-", s[i])))
			return false;
	return true;
}

static void
add_tenant(struct parse *p, const char *name, size_t n)
{
	sched_config *c = p->c;
	for (int i = 0; i < c->ntenants; i++)
		if (strlen(c->tenants[i].name) == n && !memcmp(c->tenants[i].name, name, n)) {
			perr(p, p->lineno, "duplicate tenant '%.*s' (first on line %d)", (int)n,
			     name, p->meta[i].line);
			return;
		}
	if (c->ntenants == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 8;
		c->tenants = kl_xrealloc(c->tenants, (size_t)p->cap * sizeof(*c->tenants));
		p->meta = kl_xrealloc(p->meta, (size_t)p->cap * sizeof(*p->meta));
	}
	sched_tenant_cfg *t = &c->tenants[c->ntenants];
	memset(t, 0, sizeof(*t));
	memcpy(t->name, name, n);
	t->weight = 1;
	t->max_sessions = 100;
	t->max_inflight = 64;
	t->rate = 100;
	t->max = (Kiln__Limits)KILN__LIMITS__INIT;
	t->defaults = (Kiln__Limits)KILN__LIMITS__INIT;
	t->aggregate = (Kiln__Limits)KILN__LIMITS__INIT;
	memset(&p->meta[c->ntenants], 0, sizeof(*p->meta));
	p->meta[c->ntenants].line = p->lineno;
	c->ntenants++;
	p->sec = SEC_TENANT;
}

static void
add_secret(struct parse *p, const char *name, size_t n)
{
	sched_config *c = p->c;
	for (int i = 0; i < c->nsecrets; i++)
		if (strlen(c->secrets[i].name) == n && !memcmp(c->secrets[i].name, name, n)) {
			perr(p, p->lineno, "duplicate secret '%.*s'", (int)n, name);
			return;
		}
	c->secrets = kl_xrealloc(c->secrets, (size_t)(c->nsecrets + 1) * sizeof(*c->secrets));
	sched_secret_cfg *sc = &c->secrets[c->nsecrets++];
	memset(sc, 0, sizeof(*sc));
	memcpy(sc->name, name, n);
	memset(p->secret_line, 0, sizeof p->secret_line);
	p->sec = SEC_SECRET;
}

/* A line that starts with '[': find out which section follows, in full. */
static void
section_header(struct parse *p, const char *line, size_t len)
{
	const char *end = memchr(line, ']', len);
	if (!end) {
		/* inih reports this line as malformed; its keys must not land anywhere. */
		p->sec = SEC_BAD;
		return;
	}
	for (const char *q = end + 1; q < line + len && *q != ';' && *q != '#'; q++)
		if (!is_blank(*q)) {
			perr(p, p->lineno, "unexpected text after ']'");
			return;
		}
	const char *s = line + 1;
	while (s < end && is_blank(*s))
		s++;
	while (end > s && is_blank(end[-1]))
		end--;
	size_t n = (size_t)(end - s);
	if (n == 9 && !memcmp(s, "scheduler", 9)) {
		p->sec = SEC_SCHED;
		return;
	}
	if (n == 6 && !memcmp(s, "tenant", 6)) {
		perr(p, p->lineno, "[tenant] needs a name: [tenant NAME]");
		return;
	}
	if (n > 6 && !memcmp(s, "tenant", 6) && is_blank(s[6])) {
		const char *name = s + 6;
		while (is_blank(*name))
			name++;
		size_t nn = (size_t)(end - name);
		if (!tenant_name_ok(name, nn)) {
			perr(p, p->lineno,
			     "tenant name '%.*s': use 1-%d letters, digits, '.', '_' or '-', "
			     "starting with a letter or digit",
			     (int)nn, name, SCHED_TENANT_NAME_MAX);
			return;
		}
		add_tenant(p, name, nn);
		return;
	}
	if (n > 6 && !memcmp(s, "secret", 6) && is_blank(s[6])) {
		const char *name = s + 6;
		while (is_blank(*name))
			name++;
		size_t nn = (size_t)(end - name);
		if (!tenant_name_ok(name, nn)) {
			perr(p, p->lineno,
			     "secret name '%.*s': use letters, digits, '.', '_' or '-'", (int)nn,
			     name);
			return;
		}
		add_secret(p, name, nn);
		return;
	}
	perr(p, p->lineno,
	     "unknown section [%.*s] (expected [scheduler], [tenant NAME] or [secret NAME])",
	     (int)n, s);
}

/*
 * inih's fgets-style reader. Leading blanks are dropped so that inih never
 * sees an indented line: it would take one for a multi-line continuation of
 * the previous value, silently gluing text onto a token or a number.
 */
static char *
read_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	if (p->failed || !*p->pos)
		return NULL;
	const char *s = p->pos;
	size_t len = strcspn(s, "\n");
	p->pos = s[len] ? s + len + 1 : s + len;
	p->lineno++;
	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	if (len && (*s == ';' || *s == '#'))
		len = 1; /* a comment: its length does not matter */
	if (len + 2 > (size_t)num) {
		perr(p, p->lineno, "line too long (at most %d characters)", num - 2);
		return NULL;
	}
	memcpy(str, s, len);
	str[len] = '\n';
	str[len + 1] = 0;
	if (len && *s == '[')
		section_header(p, str, len);
	return str;
}

static const char *
token_problem(const char *s, size_t len)
{
	if (!len)
		return "is empty";
	if (len > SCHED_TOKEN_MAX)
		return "is longer than 255 characters";
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !(s[i] && strchr("-._~+/=", s[i])))
			return "may contain only letters, digits and - . _ ~ + / =";
	return NULL;
}

static void
free_secret(char **p)
{
	if (*p) {
		explicit_bzero(*p, strlen(*p));
		free(*p);
	}
}

static int
set_token_file(struct parse *p, const struct key *k, const char *path, char *dst)
{
	__attribute__((cleanup(free_secret))) char *buf = NULL;
	size_t len;
	if (!*path)
		return perr(p, p->lineno, "%s: empty path", k->name);
	int r = kl_read_file_at(p->dirfd, path, TOKEN_FILE_MAX + 1, &buf, &len);
	if (r < 0)
		return perr(p, p->lineno, "%s: cannot read '%s': %s", k->name, path, strerror(-r));
	if (len > TOKEN_FILE_MAX)
		return perr(p, p->lineno, "%s: '%s' is larger than %d bytes", k->name, path,
		            TOKEN_FILE_MAX);
	if (strlen(buf) != len)
		return perr(p, p->lineno, "%s: '%s' contains a NUL byte", k->name, path);
	char *s = buf, *e = buf + len;
	while (s < e && is_blank(*s))
		s++;
	while (e > s && is_blank(e[-1]))
		e--;
	/* Secret values (wide fields) may hold any bytes but NUL; tokens are strict. */
	const char *why = k->width > SCHED_TOKEN_MAX + 1
	                          ? ((size_t)(e - s) >= k->width ? "is too long" : NULL)
	                          : token_problem(s, (size_t)(e - s));
	if (why)
		return perr(p, p->lineno, "%s: the token in '%s' %s", k->name, path, why);
	memcpy(dst, s, (size_t)(e - s));
	dst[e - s] = 0;
	return 1;
}

static int
set_string(struct parse *p, const struct key *k, const char *v, char *dst)
{
	size_t len = strlen(v);
	if (k->kind == V_TOKEN) {
		const char *why = token_problem(v, len);
		if (why)
			return perr(p, p->lineno, "%s: the token %s", k->name, why);
	} else if (k->kind == V_STRING) {
		if (len >= k->width)
			return perr(p, p->lineno, "%s: longer than %u characters", k->name,
			            (unsigned)k->width - 1);
	} else {
		const char *sep = strstr(v, "://");
		bool ok = sep && sep > v && sep[3] && len <= 255;
		for (const char *q = v; ok && *q; q++)
			ok = !is_blank(*q) && isprint((unsigned char)*q);
		if (!ok)
			return perr(p, p->lineno, "%s: not a URL like tcp://host:port: '%s'",
			            k->name, v);
	}
	memcpy(dst, v, len + 1);
	return 1;
}

static void
fmt_kind(enum kind kind, uint64_t v, char *buf, size_t n)
{
	if (kind == V_SIZE)
		sched_fmt_size(v, buf, n);
	else if (kind == V_DURATION)
		sched_fmt_duration(v, buf, n);
	else if (kind == V_CPU)
		sched_fmt_cpu(v, buf, n);
	else
		snprintf(buf, n, "%" PRIu64, v);
}

static int
set_number(struct parse *p, const struct key *k, const char *v, void *dst)
{
	static const char *what[] = {
	        [V_COUNT] = "a number",
	        [V_SIZE] = "a size",
	        [V_DURATION] = "a duration",
	        [V_CPU] = "a CPU amount",
	};
	static const char *base[] = {
	        [V_COUNT] = "number",
	        [V_SIZE] = "number of bytes",
	        [V_DURATION] = "number of milliseconds",
	        [V_CPU] = "number of millicores",
	};
	const struct unit *units = k->kind == V_SIZE       ? size_units
	                           : k->kind == V_DURATION ? duration_units
	                           : k->kind == V_CPU      ? cpu_units
	                                                   : count_units;
	uint64_t max = k->max ? k->max : k->width == 4 ? UINT32_MAX : UINT64_MAX, x;
	char lim[64];
	if (*v == '-')
		return perr(p, p->lineno, "%s: must not be negative: '%s'", k->name, v);
	int r = parse_scaled(v, units, &x);
	if (r == -EDOM && k->kind == V_COUNT)
		r = -EINVAL;
	if (r == -EINVAL)
		return perr(p, p->lineno, "%s: not %s: '%s'", k->name, what[k->kind], v);
	if (r == -EDOM)
		return perr(p, p->lineno, "%s: '%s' is not a whole %s", k->name, v, base[k->kind]);
	if (r == -ERANGE || x > max) {
		fmt_kind(k->kind, max, lim, sizeof lim);
		return perr(p, p->lineno, "%s: '%s' is too large (at most %s)", k->name, v, lim);
	}
	if (x < k->min) {
		fmt_kind(k->kind, k->min, lim, sizeof lim);
		return perr(p, p->lineno, "%s: '%s' is too small (at least %s)", k->name, v, lim);
	}
	if (k->width == 4) {
		uint32_t y = (uint32_t)x;
		memcpy(dst, &y, sizeof y);
	} else {
		memcpy(dst, &x, sizeof x);
	}
	return 1;
}

/* Set one key of a section; lines[] records where each key was set. */
static int
set_key(struct parse *p, const struct key *keys, size_t nkeys, int *lines, void *obj,
        const char *name, const char *value)
{
	const struct key *k = NULL;
	for (size_t i = 0; i < nkeys && !k; i++)
		if (!strcmp(keys[i].name, name))
			k = &keys[i];
	if (!k && p->sec == SEC_SCHED)
		return perr(p, p->lineno, "%s: unknown key in [scheduler]", name);
	if (!k && p->sec == SEC_SECRET)
		return perr(p, p->lineno, "%s: unknown key in [secret %s]", name,
		            p->c->secrets[p->c->nsecrets - 1].name);
	if (!k)
		return perr(p, p->lineno, "%s: unknown key in [tenant %s]", name,
		            p->c->tenants[p->c->ntenants - 1].name);
	size_t idx = (size_t)(k - keys);
	if (lines[idx])
		return perr(p, p->lineno, "%s: set twice (first on line %d)", name, lines[idx]);
	for (size_t i = 0; k->excl && i < nkeys; i++)
		if (lines[i] && !strcmp(keys[i].name, k->excl))
			return perr(p, p->lineno, "%s: %s was already set on line %d; use one",
			            name, k->excl, lines[i]);
	lines[idx] = p->lineno;
	char *dst = (char *)obj + k->off;
	switch (k->kind) {
	case V_URL:
	case V_TOKEN:
	case V_STRING:
		return set_string(p, k, value, dst);
	case V_TOKEN_FILE:
		return set_token_file(p, k, value, dst);
	default:
		return set_number(p, k, value, dst);
	}
}

static int
handle(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	(void)section; /* cut at 49 bytes by inih; read_line tracks sections in full */
	if (p->failed)
		return 0;
	switch (p->sec) {
	case SEC_NONE:
		return perr(p, p->lineno,
		            "%s: outside any section (put it under [scheduler] or "
		            "[tenant NAME])",
		            name);
	case SEC_BAD:
		return 0;
	case SEC_SCHED:
		return set_key(p, sched_keys, NSKEYS, p->sched_line, p->c, name, value);
	case SEC_SECRET:
		return set_key(p, secret_keys, NSECKEYS, p->secret_line,
		               &p->c->secrets[p->c->nsecrets - 1], name, value);
	case SEC_TENANT:
		break;
	}
	int i = p->c->ntenants - 1;
	return set_key(p, tenant_keys, NTKEYS, p->meta[i].key_line, &p->c->tenants[i], name, value);
}

/* ---- cross-checks once every line is in ---- */

static int
key_line(const int *lines, const struct key *keys, size_t nkeys, const char *name)
{
	for (size_t i = 0; i < nkeys; i++)
		if (!strcmp(keys[i].name, name))
			return lines[i];
	return 0;
}

static int
tkey_line(const struct tenant_meta *m, const char *name)
{
	return key_line(m->key_line, tenant_keys, NTKEYS, name);
}

static int
skey_line(const struct parse *p, const char *name)
{
	return key_line(p->sched_line, sched_keys, NSKEYS, name);
}

static uint64_t
get_field(const void *obj, const struct key *k)
{
	if (k->width == 4) {
		uint32_t v;
		memcpy(&v, (const char *)obj + k->off, sizeof v);
		return v;
	}
	uint64_t v;
	memcpy(&v, (const char *)obj + k->off, sizeof v);
	return v;
}

/* A default above its cap could never be granted: say so at load time. */
static void
check_defaults(struct parse *p, const sched_tenant_cfg *t, const struct tenant_meta *m)
{
	for (size_t i = 0; i < NTKEYS; i++) {
		const struct key *d = &tenant_keys[i];
		if (strncmp(d->name, "default_", 8))
			continue;
		char maxname[32];
		snprintf(maxname, sizeof maxname, "max_%s", d->name + 8);
		const struct key *mk = NULL;
		for (size_t j = 0; j < NTKEYS && !mk; j++)
			if (!strcmp(tenant_keys[j].name, maxname))
				mk = &tenant_keys[j];
		if (!mk)
			continue;
		uint64_t dv = get_field(t, d), mv = get_field(t, mk);
		if (!dv || !mv || dv <= mv)
			continue;
		char a[64], b[64];
		fmt_kind(d->kind, dv, a, sizeof a);
		fmt_kind(d->kind, mv, b, sizeof b);
		int line = KL_MAX(m->key_line[i], tkey_line(m, maxname));
		perr(p, line, "%s %s exceeds %s %s", d->name, a, maxname, b);
		return;
	}
}

/* One token, one role: a shared token would let a tenant act as a node or an admin. */
static void
check_token(struct parse *p, int i)
{
	const sched_config *c = p->c;
	const sched_tenant_cfg *t = &c->tenants[i];
	int line = tkey_line(&p->meta[i], "token");
	if (!line)
		line = tkey_line(&p->meta[i], "token_file");
	if (!strcmp(t->token, c->join_token))
		perr(p, line, "tenant %s: same token as the join token", t->name);
	else if (!strcmp(t->token, c->admin_token))
		perr(p, line, "tenant %s: same token as the admin token", t->name);
	for (int j = 0; j < i; j++)
		if (!strcmp(t->token, c->tenants[j].token))
			perr(p, line, "tenant %s: same token as tenant %s", t->name,
			     c->tenants[j].name);
}

static void
finish_tenant(struct parse *p, int i)
{
	sched_tenant_cfg *t = &p->c->tenants[i];
	const struct tenant_meta *m = &p->meta[i];
	if (!*t->token) {
		perr(p, m->line, "tenant %s has no token (set token or token_file)", t->name);
		return;
	}
	if (!tkey_line(m, "burst"))
		t->burst = t->rate > UINT32_MAX / 2 ? UINT32_MAX : 2 * t->rate;
	if (!tkey_line(m, "queue"))
		t->queue_limit =
		        t->max_inflight > UINT32_MAX / 4 ? UINT32_MAX : 4 * t->max_inflight;
	check_defaults(p, t, m);
	check_token(p, i);
}

static void
finish(struct parse *p)
{
	sched_config *c = p->c;
	if (c->dead_after_ms <= c->heartbeat_ms) {
		char a[32], b[32];
		sched_fmt_duration(c->dead_after_ms, a, sizeof a);
		sched_fmt_duration(c->heartbeat_ms, b, sizeof b);
		perr(p, KL_MAX(skey_line(p, "dead_after"), skey_line(p, "heartbeat")),
		     "dead_after (%s) must be longer than heartbeat (%s)", a, b);
	}
	if (!*c->join_token)
		perr(p, 0,
		     "[scheduler] needs join_token or join_token_file: nodes must prove they "
		     "belong to the cluster");
	if (*c->admin_token && !strcmp(c->admin_token, c->join_token)) {
		int line = skey_line(p, "admin_token");
		perr(p, line ? line : skey_line(p, "admin_token_file"),
		     "the admin token must differ from the join token");
	}
	for (int i = 0; i < c->ntenants && !p->failed; i++)
		finish_tenant(p, i);
	for (int i = 0; i < c->nsecrets && !p->failed; i++)
		if (strlen(c->secrets[i].value) < 4)
			perr(p, 0,
			     "secret %s: its value must be at least 4 characters (shorter "
			     "values cannot be scrubbed from outputs reliably)",
			     c->secrets[i].name);
}

static int
parse_text(const char *text, int dirfd, sched_config *c, char *err, size_t errlen)
{
	sched_config tmp;
	sched_config_init(&tmp);
	struct parse p = {.c = &tmp, .pos = text, .dirfd = dirfd};

	int r = ini_parse_stream(read_line, &p, handle, &p);
	if (r == -2) {
		p.failed = true;
		snprintf(p.msg, sizeof p.msg, "config: out of memory");
	} else if (r > 0 && (!p.failed || r < p.errline)) {
		/* inih found a malformed line before anything we refused. */
		p.failed = false;
		perr(&p, r, "expected [section], key = value or a comment");
	}
	if (!p.failed)
		finish(&p);
	free(p.meta);
	if (p.failed) {
		sched_config_fini(&tmp);
		if (err && errlen)
			kl_strlcpy(err, p.msg, errlen);
		return r == -2 ? -ENOMEM : -EINVAL;
	}
	*c = tmp;
	return 0;
}

int
sched_config_load_string(const char *text, sched_config *c, char *err, size_t errlen)
{
	return parse_text(text, AT_FDCWD, c, err, errlen);
}

int
sched_config_load_file(const char *path, sched_config *c, char *err, size_t errlen)
{
	__attribute__((cleanup(free_secret))) char *text = NULL;
	size_t len;
	int r = kl_read_file_at(AT_FDCWD, path, CONFIG_FILE_MAX + 1, &text, &len);
	if (r < 0) {
		if (err && errlen)
			snprintf(err, errlen, "config: cannot read '%s': %s", path, strerror(-r));
		return r;
	}
	if (len > CONFIG_FILE_MAX || strlen(text) != len) {
		if (err && errlen)
			snprintf(err, errlen, "config: '%s' %s", path,
			         len > CONFIG_FILE_MAX ? "is larger than 1 MiB"
			                               : "contains a NUL byte");
		return -EINVAL;
	}
	/* Token files sit next to the config: resolve them from its directory. */
	_cleanup_close_ int dirfd = -1;
	const char *slash = strrchr(path, '/');
	if (slash) {
		_cleanup_free_ char *dir =
		        kl_xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
		dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0) {
			r = -errno;
			if (err && errlen)
				snprintf(err, errlen, "config: cannot open '%s': %s", dir,
				         strerror(-r));
			return r;
		}
	}
	return parse_text(text, dirfd >= 0 ? dirfd : AT_FDCWD, c, err, errlen);
}

void
sched_config_init(sched_config *c)
{
	memset(c, 0, sizeof(*c));
	kl_strlcpy(c->node_url, "tcp://0.0.0.0:7070", sizeof c->node_url);
	kl_strlcpy(c->client_url, "tcp://127.0.0.1:7071", sizeof c->client_url);
	c->heartbeat_ms = 1000;
	c->dead_after_ms = 3000;
	c->poll_ms = 5000;
	c->max_queued = 100000;
	c->idle_ttl_ms = 30 * 60 * 1000;
	c->shutdown_grace_ms = 10000;
}

/* `kiln dev`'s cluster, written in the file format so it is parsed like any other. */
static const char dev_config[] = "[scheduler]\n"
                                 "node_url = tcp://127.0.0.1:7070\n"
                                 "join_token = kiln-dev-join\n"
                                 "admin_token = kiln-dev-admin\n"
                                 "\n"
                                 "[tenant dev]\n"
                                 "token = kiln-dev-token\n"
                                 "max_sessions = 10000\n"
                                 "max_inflight = 4096\n"
                                 "rate = 0\n"
                                 "queue = 16384\n"
                                 "\n"
                                 "[tenant acme]\n"
                                 "token = kiln-dev-acme\n"
                                 "weight = 2\n"
                                 "max_sessions = 100\n"
                                 "max_inflight = 32\n"
                                 "rate = 200\n"
                                 "queue = 256\n"
                                 "max_memory = 2G\n"
                                 "max_pids = 1024\n"
                                 "max_cpu = 2\n"
                                 "max_timeout = 10m\n"
                                 "default_memory = 512M\n"
                                 "default_timeout = 2m\n"
                                 "\n"
                                 "[tenant globex]\n"
                                 "token = kiln-dev-globex\n"
                                 "weight = 1\n"
                                 "max_sessions = 50\n"
                                 "max_inflight = 16\n"
                                 "rate = 100\n"
                                 "queue = 128\n"
                                 "max_memory = 1G\n"
                                 "max_pids = 512\n"
                                 "max_cpu = 1\n"
                                 "max_timeout = 5m\n"
                                 "default_memory = 256M\n"
                                 "default_timeout = 1m\n";

void
sched_config_dev(sched_config *c)
{
	char err[512];
	if (sched_config_load_string(dev_config, c, err, sizeof err) < 0) {
		fprintf(stderr, "kiln: the embedded dev config is broken: %s\n", err);
		abort();
	}
	c->dev = true;
}

void
sched_config_fini(sched_config *c)
{
	if (c->tenants) {
		explicit_bzero(c->tenants, (size_t)c->ntenants * sizeof(*c->tenants));
		free(c->tenants);
	}
	if (c->secrets) {
		explicit_bzero(c->secrets, (size_t)c->nsecrets * sizeof(*c->secrets));
		free(c->secrets);
	}
	explicit_bzero(c, sizeof(*c));
	sched_config_init(c);
}
