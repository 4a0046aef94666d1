/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-gateway configuration parser (see gw_config.h). Token values may be
 * given inline or as files (token_file, join_token_file); relative paths are
 * taken from the config file's directory.
 */
#include "gw_config.h"

#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parse {
	gw_config *c;
	FILE *file;       /* read from this, or else from text */
	const char *text; /* the rest of an in-memory config */
	size_t left;      /* its bytes */
	char dir[4096];
	char err[512];
	int line;
	const char *section;
};

static int perr(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
perr(struct parse *p, const char *fmt, ...)
{
	if (!p->err[0]) {
		int n = snprintf(p->err, sizeof p->err, "config line %d: ", p->line);
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err + n, sizeof p->err - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return 0;
}

static void
path_of(struct parse *p, const char *v, char *out, size_t len)
{
	int n = v[0] == '/' || !p->dir[0] ? snprintf(out, len, "%s", v)
	                                  : snprintf(out, len, "%s/%s", p->dir, v);
	if (n < 0 || (size_t)n >= len) /* a cut path would name another file */
		perr(p, "path too long: %.200s", v);
}

static int
read_secret(struct parse *p, const char *v, char *dst, size_t len)
{
	char path[4096], *buf;
	size_t n;
	path_of(p, v, path, sizeof path);
	if (kl_read_file_at(AT_FDCWD, path, len - 1, &buf, &n) < 0)
		return perr(p, "cannot read %s: %s", path, strerror(errno));
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		buf[--n] = 0;
	kl_strlcpy(dst, buf, len);
	explicit_bzero(buf, n);
	free(buf);
	return 1;
}

static int
host_port(struct parse *p, const char *v, char *host, size_t hlen, uint16_t *port)
{
	const char *colon = strrchr(v, ':');
	char *end;
	long pt = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || colon == v || *end || pt < 1 || pt > 65535)
		return perr(p, "'%s': expected host:port", v);
	size_t n = (size_t)(colon - v);
	if (v[0] == '[' && colon[-1] == ']') /* [v6]:port */
		snprintf(host, hlen, "%.*s", (int)(n - 2), v + 1);
	else
		snprintf(host, hlen, "%.*s", (int)n, v);
	*port = (uint16_t)pt;
	return 1;
}

static int
gateway_key(struct parse *p, const char *k, const char *v)
{
	gw_config *c = p->c;
#define STR(name, field)                                  \
	if (!strcmp(k, name)) {                           \
		kl_strlcpy(c->field, v, sizeof c->field); \
		return 1;                                 \
	}
#define PATH(name, field)                                 \
	if (!strcmp(k, name)) {                           \
		path_of(p, v, c->field, sizeof c->field); \
		return 1;                                 \
	}
	if (!strcmp(k, "control_plane"))
		return host_port(p, v, c->plane_host, sizeof c->plane_host, &c->plane_port);
	if (!strcmp(k, "https_proxy"))
		return host_port(p, v, c->proxy_host, sizeof c->proxy_host, &c->proxy_port);
	STR("server_name", server_name)
	PATH("ca_file", ca_file)
	PATH("cert_file", cert_file)
	PATH("key_file", key_file)
	STR("scheduler", scheduler)
	STR("egress_listen", egress_listen)
	STR("join_token", join_token)
	PATH("audit_log", audit_log)
	STR("audit_fsync", audit_fsync)
	PATH("journal", journal)
	if (!strcmp(k, "journal_fsync")) {
		if (strcmp(v, "none") && strcmp(v, "every"))
			return perr(p, "journal_fsync: '%s': expected none or every", v);
		c->journal_fsync = !strcmp(v, "every");
		return 1;
	}
	if (!strcmp(k, "join_token_file"))
		return read_secret(p, v, c->join_token, sizeof c->join_token);
	if (!strcmp(k, "max_results")) {
		c->max_results = (uint32_t)strtoul(v, NULL, 10);
		return c->max_results ? 1 : perr(p, "max_results: '%s' is not a count", v);
	}
	if (!strcmp(k, "ping_interval_ms")) {
		c->ping_interval_ms = (uint32_t)strtoul(v, NULL, 10);
		return 1;
	}
	if (!strcmp(k, "backoff_min_ms")) {
		c->backoff_min_ms = (uint32_t)strtoul(v, NULL, 10);
		return 1;
	}
	if (!strcmp(k, "backoff_max_ms")) {
		c->backoff_max_ms = (uint32_t)strtoul(v, NULL, 10);
		return 1;
	}
#undef STR
#undef PATH
	return perr(p, "unknown key '%s' in [gateway]", k);
}

static void *
grow(void *v, int n, size_t sz)
{
	v = kl_xrealloc(v, sz * (size_t)(n + 1));
	memset((char *)v + sz * (size_t)n, 0, sz);
	return v;
}

static int
handler(void *user, const char *section, const char *k, const char *v)
{
	struct parse *p = user;
	gw_config *c = p->c;
	if (p->err[0])
		return 0;
	char kind[32], name[128];
	/* A section that appears again adds to the entry of that name, as a
	 * repeated key does (a second one would never be found). */
	if (!strcmp(section, "gateway"))
		return gateway_key(p, k, v);
	if (sscanf(section, "%31s %127s", kind, name) != 2)
		return perr(p, "unknown section [%s]", section);
	if (!strcmp(kind, "identity")) {
		gw_identity *id = (gw_identity *)gw_config_identity(c, name);
		if (!id) {
			c->identities = grow(c->identities, c->nidentities, sizeof *c->identities);
			id = &c->identities[c->nidentities++];
			kl_strlcpy(id->name, name, sizeof id->name);
		}
		if (!strcmp(k, "token"))
			return kl_strlcpy(id->token, v, sizeof id->token), 1;
		if (!strcmp(k, "token_file"))
			return read_secret(p, v, id->token, sizeof id->token);
		return perr(p, "unknown key '%s' in [identity %s]", k, name);
	}
	if (!strcmp(kind, "route")) {
		gw_route *r = (gw_route *)gw_config_route(c, name);
		if (!r) {
			c->routes = grow(c->routes, c->nroutes, sizeof *c->routes);
			r = &c->routes[c->nroutes++];
			kl_strlcpy(r->name, name, sizeof r->name);
		}
		if (!strcmp(k, "upstream"))
			return host_port(p, v, r->host, sizeof r->host, &r->port);
		if (!strcmp(k, "allow_public")) {
			r->allow_public =
			        !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1");
			return 1;
		}
		return perr(p, "unknown key '%s' in [route %s]", k, name);
	}
	if (!strcmp(kind, "egress")) {
		gw_policy *pol = gw_config_egress(c, name);
		if (!pol) {
			c->egress = grow(c->egress, c->negress, sizeof *c->egress);
			kl_strlcpy(c->egress[c->negress].tenant, name, 64);
			pol = c->egress[c->negress++].policy = gw_policy_new();
		}
		char e[256];
		if (gw_policy_set(pol, k, v, e, sizeof e) < 0)
			return perr(p, "[egress %s]: %s", name, e);
		return 1;
	}
	return perr(p, "unknown section [%s]", section);
}

/* inih's reader, counting lines for error messages (Debian's inih does not
 * pass line numbers to handlers). In-memory text is read as fgets reads a
 * file: up to num - 1 bytes, through the first newline. */
static char *
read_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	char *r = str;
	if (p->file) {
		r = fgets(str, num, p->file);
	} else if (!p->left || num < 2) {
		r = NULL;
	} else {
		size_t max = KL_MIN(p->left, (size_t)num - 1);
		const char *nl = memchr(p->text, '\n', max);
		size_t n = nl ? (size_t)(nl - p->text) + 1 : max;
		memcpy(str, p->text, n);
		str[n] = 0;
		p->text += n;
		p->left -= n;
	}
	if (r)
		p->line++;
	return r;
}

/* Parse what p reads into c (defaults first) and check the whole; name
 * prefixes the error. */
static int
load(struct parse *p, const char *name, gw_config *c, char *err, size_t errlen)
{
	int r = ini_parse_stream(read_line, p, handler, p);
	if (!p->err[0] && r > 0)
		snprintf(p->err, sizeof p->err, "config line %d: malformed line", r);
	if (!p->err[0] && !c->plane_host[0])
		snprintf(p->err, sizeof p->err, "[gateway] control_plane = host:port is required");
	if (!p->err[0] && (!c->ca_file[0] || !c->cert_file[0] || !c->key_file[0]))
		snprintf(
		        p->err, sizeof p->err,
		        "[gateway] needs ca_file (the control plane's CA), cert_file and key_file");
	if (!p->err[0] && c->egress_listen[0] && !c->join_token[0])
		snprintf(p->err, sizeof p->err,
		         "[gateway] egress_listen needs join_token_file (it authenticates nodes)");
	for (int i = 0; !p->err[0] && i < c->nidentities; i++)
		if (!c->identities[i].token[0])
			snprintf(p->err, sizeof p->err, "[identity %s] has no token",
			         c->identities[i].name);
	for (int i = 0; !p->err[0] && i < c->nroutes; i++)
		if (!c->routes[i].port)
			snprintf(p->err, sizeof p->err, "[route %s] has no upstream",
			         c->routes[i].name);
	if (p->err[0]) {
		snprintf(err, errlen, "%s: %s", name, p->err);
		gw_config_fini(c);
		return -EINVAL;
	}
	return 0;
}

static void
defaults(gw_config *c)
{
	memset(c, 0, sizeof *c);
	c->max_results = 10000;
	c->ping_interval_ms = 15000;
	c->backoff_min_ms = 1000;
	c->backoff_max_ms = 60000;
	kl_strlcpy(c->scheduler, "tcp://127.0.0.1:7071", sizeof c->scheduler);
	kl_strlcpy(c->audit_fsync, "interval:1000", sizeof c->audit_fsync);
}

int
gw_config_load(const char *path, gw_config *c, char *err, size_t errlen)
{
	struct parse p = {.c = c};
	defaults(c);
	char tmp[4096];
	kl_strlcpy(tmp, path, sizeof tmp);
	kl_strlcpy(p.dir, dirname(tmp), sizeof p.dir);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -errno;
	}
	p.file = f;
	int r = load(&p, path, c, err, errlen);
	fclose(f);
	return r;
}

int
gw_config_load_string(const char *text, size_t len, const char *name, const char *dir, gw_config *c,
                      char *err, size_t errlen)
{
	struct parse p = {.c = c, .text = text, .left = len};
	defaults(c);
	kl_strlcpy(p.dir, dir ? dir : "", sizeof p.dir);
	return load(&p, name, c, err, errlen);
}

void
gw_config_fini(gw_config *c)
{
	for (int i = 0; i < c->negress; i++)
		gw_policy_free(c->egress[i].policy);
	if (c->identities)
		explicit_bzero(c->identities, sizeof *c->identities * (size_t)c->nidentities);
	free(c->identities);
	free(c->routes);
	free(c->egress);
	explicit_bzero(c->join_token, sizeof c->join_token);
	c->identities = NULL;
	c->routes = NULL;
	c->egress = NULL;
	c->nidentities = c->nroutes = c->negress = 0;
}

const gw_identity *
gw_config_identity(const gw_config *c, const char *name)
{
	for (int i = 0; i < c->nidentities; i++)
		if (!strcmp(c->identities[i].name, name))
			return &c->identities[i];
	return NULL;
}

const gw_route *
gw_config_route(const gw_config *c, const char *name)
{
	for (int i = 0; i < c->nroutes; i++)
		if (!strcmp(c->routes[i].name, name))
			return &c->routes[i];
	return NULL;
}

gw_policy *
gw_config_egress(const gw_config *c, const char *tenant)
{
	for (int i = 0; i < c->negress; i++)
		if (!strcmp(c->egress[i].tenant, tenant))
			return c->egress[i].policy;
	return NULL;
}
