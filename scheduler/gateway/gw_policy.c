/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The egress policy engine (gw_policy.h; syntax and semantics in
 * docs/egress.md). A policy is two ordered rule lists, deny and allow, plus
 * flags and limits. A decision runs in stages, each able to refuse: the name
 * (its syntax, then the deny list's names and ports), then the address (deny
 * CIDRs, then the built-in special ranges, which an allow CIDR lying inside
 * the range can lift), then the allow list (a matching name or CIDR, with
 * its ports). The special-range table is checked first match wins, so the
 * narrow entries (metadata /32s) sit before the ranges that contain them.
 */
#include "gw_policy.h"

#include "kl_util.h"
#include "sched_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

enum rule_kind {
	R_NAME,    /* exact name */
	R_SUFFIX,  /* "*.example.com": any name strictly under it */
	R_ANYNAME, /* "*": any name (not an IP literal) */
	R_CIDR,
	R_PORT, /* ":443" alone */
};

struct rule {
	enum rule_kind kind;
	char *name; /* R_NAME: the name; R_SUFFIX: ".example.com" */
	int family; /* R_CIDR */
	uint8_t net[16];
	unsigned plen;
	bool has_port;
	uint16_t lo, hi;
	char *text; /* as written, for reasons */
};

struct rules {
	struct rule *v;
	size_t n;
};

struct gw_policy {
	struct rules deny, allow;
	bool allow_ports; /* the allow list has port-only entries: the default ports */
	bool allow_private;
	uint32_t max_conns, connect_timeout_ms, idle_timeout_ms;
	_Atomic uint32_t conns;
};

/* A host as asked for: a normalised name, or an address. */
struct target {
	bool is_ip;
	int family;
	uint8_t addr[16];
	char name[256];
};

static int errf(char *err, size_t errlen, int rv, const char *fmt, ...) KL_PRINTF(4, 5);

static int
errf(char *err, size_t errlen, int rv, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rv;
}

static gw_decision say(char *reason, size_t len, gw_decision d, const char *fmt, ...)
        KL_PRINTF(4, 5);

static gw_decision
say(char *reason, size_t len, gw_decision d, const char *fmt, ...)
{
	if (reason && len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(reason, len, fmt, ap);
		va_end(ap);
	}
	return d;
}

const char *
gw_decision_name(gw_decision d)
{
	return d == GW_ALLOW ? "allow" : "deny";
}

/* ---- addresses ---- */

static bool
prefix_eq(const uint8_t *a, const uint8_t *b, unsigned plen)
{
	unsigned full = plen / 8, rest = plen % 8;
	if (memcmp(a, b, full))
		return false;
	if (!rest)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

static size_t
famlen(int family)
{
	return family == AF_INET ? 4 : 16;
}

static void
addr_text(int family, const uint8_t *addr, char *buf, size_t len)
{
	if (!inet_ntop(family, addr, buf, (socklen_t)len))
		kl_strlcpy(buf, "?", len);
}

void
gw_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	if (sa->sa_family == AF_INET)
		addr_text(AF_INET, (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr,
		          buf, len);
	else if (sa->sa_family == AF_INET6)
		addr_text(AF_INET6, (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
		          buf, len);
	else
		kl_strlcpy(buf, "?", len);
}

/* "10.0.0.0/8", "fc00::/7" */
static void
cidr_text(int family, const uint8_t *net, unsigned plen, char *buf, size_t len)
{
	char a[GW_ADDRSTRLEN];
	addr_text(family, net, a, sizeof a);
	snprintf(buf, len, "%s/%u", a, plen);
}

/* ---- the built-in special ranges ---- */

enum sp_kind {
	SP_DENY,   /* denied */
	SP_EMBED,  /* denied, and the IPv4 address in its last 32 bits is named too */
	SP_NAT64,  /* 64:ff9b::/96: denied only if the embedded IPv4 address is special */
	SP_6TO4,   /* 2002::/16: the same, with the IPv4 address in bits 16..47 */
	SP_PRIVATE /* denied; lifted by allow_private as well */
};

struct special {
	const char *cidr, *what;
	enum sp_kind kind;
	int family;
	uint8_t net[16];
	unsigned plen;
};

/* First match wins: narrower entries before the ranges that contain them. */
static struct special specials[] = {
        {"0.0.0.0/8", "unspecified", SP_DENY},
        {"10.0.0.0/8", "private", SP_PRIVATE},
        {"100.100.100.200/32", "metadata", SP_DENY}, /* Alibaba Cloud */
        {"100.64.0.0/10", "CGNAT", SP_DENY},
        {"127.0.0.0/8", "loopback", SP_DENY},
        {"169.254.169.254/32", "metadata", SP_DENY}, /* AWS, GCP, Azure, OpenStack ... */
        {"169.254.170.2/32", "metadata", SP_DENY},   /* AWS ECS task metadata */
        {"169.254.0.0/16", "link-local", SP_DENY},
        {"172.16.0.0/12", "private", SP_PRIVATE},
        {"192.0.0.0/24", "reserved", SP_DENY}, /* IETF protocol assignments */
        {"192.0.2.0/24", "documentation", SP_DENY},
        {"192.88.99.0/24", "reserved", SP_DENY}, /* former 6to4 relay anycast */
        {"192.168.0.0/16", "private", SP_PRIVATE},
        {"198.18.0.0/15", "benchmarking", SP_DENY},
        {"198.51.100.0/24", "documentation", SP_DENY},
        {"203.0.113.0/24", "documentation", SP_DENY},
        {"224.0.0.0/4", "multicast", SP_DENY},
        {"255.255.255.255/32", "broadcast", SP_DENY},
        {"240.0.0.0/4", "reserved", SP_DENY},
        {"::/128", "unspecified", SP_DENY},
        {"::1/128", "loopback", SP_DENY},
        {"::ffff:0:0/96", "IPv4-mapped", SP_EMBED},
        {"::/96", "IPv4-compatible", SP_EMBED},
        {"64:ff9b::/96", "NAT64", SP_NAT64},
        {"64:ff9b:1::/48", "local-use NAT64", SP_DENY},
        {"100::/64", "discard-only", SP_DENY},
        {"2001::/32", "Teredo", SP_DENY},
        {"2001:db8::/32", "documentation", SP_DENY},
        {"2001::/23", "reserved", SP_DENY}, /* IETF protocol assignments */
        {"2002::/16", "6to4", SP_6TO4},
        {"3fff::/20", "documentation", SP_DENY},
        {"fd00:ec2::254/128", "metadata", SP_DENY}, /* AWS IPv6 metadata */
        {"fc00::/7", "private", SP_PRIVATE},
        {"fe80::/10", "link-local", SP_DENY},
        {"fec0::/10", "site-local", SP_DENY},
        {"ff00::/8", "multicast", SP_DENY},
};

static pthread_once_t specials_once = PTHREAD_ONCE_INIT;

static void
specials_init(void)
{
	for (size_t i = 0; i < KL_ARRAY_SIZE(specials); i++) {
		struct special *s = &specials[i];
		char buf[64];
		kl_strlcpy(buf, s->cidr, sizeof buf);
		char *slash = strchr(buf, '/');
		*slash = 0;
		s->family = strchr(buf, ':') ? AF_INET6 : AF_INET;
		s->plen = (unsigned)atoi(slash + 1);
		if (inet_pton(s->family, buf, s->net) != 1)
			abort(); /* a typo in the table above */
	}
}

/* Why an address is special: the range that denies it, and words for the reason. */
struct hit {
	const char *what;
	bool private_;
	int family;
	uint8_t net[16];
	unsigned plen;
	char detail[96]; /* "; embeds loopback 127.0.0.1" */
};

static const struct special *
lookup(int family, const uint8_t *addr)
{
	for (size_t i = 0; i < KL_ARRAY_SIZE(specials); i++)
		if (specials[i].family == family &&
		    prefix_eq(specials[i].net, addr, specials[i].plen))
			return &specials[i];
	return NULL;
}

static void
hit_set(struct hit *h, const char *what, int family, const uint8_t *net, unsigned plen)
{
	h->what = what;
	h->family = family;
	memcpy(h->net, net, famlen(family));
	h->plen = plen;
}

/* Is addr in a built-in range? Fills *h and returns true if so. */
static bool
classify(int family, const uint8_t *addr, struct hit *h)
{
	pthread_once(&specials_once, specials_init);
	memset(h, 0, sizeof(*h));
	const struct special *s = lookup(family, addr);
	if (!s) {
		/* IPv6 outside 2000::/3 is not global unicast: deny it by its /3 block. */
		if (family == AF_INET6 && (addr[0] & 0xe0) != 0x20) {
			uint8_t net[16] = {(uint8_t)(addr[0] & 0xe0)};
			hit_set(h, "reserved", AF_INET6, net, 3);
			return true;
		}
		return false;
	}
	hit_set(h, s->what, s->family, s->net, s->plen);
	h->private_ = s->kind == SP_PRIVATE;
	if (s->kind == SP_DENY || s->kind == SP_PRIVATE)
		return true;
	const uint8_t *v4 = s->kind == SP_6TO4 ? addr + 2 : addr + 12;
	const struct special *inner = lookup(AF_INET, v4);
	char a[INET_ADDRSTRLEN];
	addr_text(AF_INET, v4, a, sizeof a);
	if (s->kind == SP_EMBED) {
		snprintf(h->detail, sizeof h->detail, "; embeds %s%s%s", inner ? inner->what : "",
		         inner ? " " : "", a);
		return true;
	}
	if (!inner)
		return false; /* NAT64 or 6to4 of a public IPv4 address: an ordinary address */
	snprintf(h->detail, sizeof h->detail, "; embeds %s %s", inner->what, a);
	return true;
}

/* The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any. */
static bool
embedded_v4(int family, const uint8_t *addr, uint8_t v4[4])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const uint8_t zero[12], nat64[12] = {0, 0x64, 0xff, 0x9b};
	if (family != AF_INET6)
		return false;
	if (!memcmp(addr, mapped, 12) || !memcmp(addr, zero, 12) || !memcmp(addr, nat64, 12)) {
		memcpy(v4, addr + 12, 4);
		return true;
	}
	if (addr[0] == 0x20 && addr[1] == 0x02) {
		memcpy(v4, addr + 2, 4);
		return true;
	}
	return false;
}

/* ---- names ---- */

/* Lower-case n bytes of in into out (without one trailing dot) if they form a valid name. */
static bool
norm_name(const char *in, size_t n, char *out, size_t outlen)
{
	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > 253 || n >= outlen)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		/* RFC 1123: a label neither starts nor ends with a hyphen. */
		if (c == '-' && (label == 0 || i + 1 == n || in[i + 1] == '.'))
			return false;
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		           c == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
		out[i] = c;
	}
	out[n] = 0;
	return label > 0;
}

/* Parse a requested host. 0, or -1 with a deny reason written. */
static int
norm_host(const char *host, struct target *t, char *reason, size_t len)
{
	char buf[300];
	size_t n = strlen(host);
	memset(t, 0, sizeof(*t));
	if (n >= sizeof buf)
		return say(reason, len, GW_DENY, "invalid host name (too long)"), -1;
	memcpy(buf, host, n + 1);
	if (buf[0] == '[') {
		if (n < 3 || buf[n - 1] != ']')
			return say(reason, len, GW_DENY, "invalid host '%s'", host), -1;
		buf[n - 1] = 0;
		memmove(buf, buf + 1, n - 1);
		if (inet_pton(AF_INET6, buf, t->addr) != 1)
			return say(reason, len, GW_DENY, "invalid IPv6 address '%s'", host), -1;
		t->is_ip = true;
		t->family = AF_INET6;
		return 0;
	}
	if (inet_pton(AF_INET, buf, t->addr) == 1 || inet_pton(AF_INET6, buf, t->addr) == 1) {
		t->is_ip = true;
		t->family = strchr(buf, ':') ? AF_INET6 : AF_INET;
		return 0;
	}
	struct in_addr ia;
	if (inet_aton(buf, &ia))
		return say(reason, len, GW_DENY, "non-canonical IPv4 address '%s'", host), -1;
	if (!norm_name(buf, n, t->name, sizeof t->name))
		return say(reason, len, GW_DENY, "invalid host name '%.80s'", host), -1;
	/* "127.0.0.1." is an address, not a name, once its trailing dot is gone. */
	if (inet_pton(AF_INET, t->name, t->addr) == 1) {
		t->is_ip = true;
		t->family = AF_INET;
	}
	return 0;
}

/* ---- rules ---- */

static bool
is_name_rule(const struct rule *r)
{
	return r->kind == R_NAME || r->kind == R_SUFFIX || r->kind == R_ANYNAME;
}

static bool
name_match(const struct rule *r, const char *name)
{
	size_t n = strlen(name), s;
	switch (r->kind) {
	case R_NAME:
		return !strcmp(r->name, name);
	case R_SUFFIX:
		s = strlen(r->name);
		return n > s && !strcmp(name + n - s, r->name);
	case R_ANYNAME:
		return true;
	default:
		return false;
	}
}

static bool
port_in(const struct rule *r, uint16_t port)
{
	return !r->has_port || (port >= r->lo && port <= r->hi);
}

static bool
cidr_match(const struct rule *r, int family, const uint8_t *addr)
{
	return r->kind == R_CIDR && r->family == family && prefix_eq(r->net, addr, r->plen);
}

/* An allow entry's ports: its own, else the allow list's port-only entries, else any. */
static bool
allow_port(const gw_policy *p, const struct rule *r, uint16_t port)
{
	if (r->has_port)
		return port_in(r, port);
	if (!p->allow_ports)
		return true;
	for (size_t i = 0; i < p->allow.n; i++)
		if (p->allow.v[i].kind == R_PORT && port_in(&p->allow.v[i], port))
			return true;
	return false;
}

static void
rule_fini(struct rule *r)
{
	free(r->name);
	free(r->text);
}

static int
parse_ports(const char *s, struct rule *r)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	unsigned long lo = strtoul(s, &end, 10), hi = lo;
	if (*end == '-') {
		if (end[1] < '0' || end[1] > '9')
			return -EINVAL;
		hi = strtoul(end + 1, &end, 10);
	}
	if (*end || lo < 1 || hi > 65535 || lo > hi)
		return -EINVAL;
	r->has_port = true;
	r->lo = (uint16_t)lo;
	r->hi = (uint16_t)hi;
	return 0;
}

static int
parse_cidr(const char *s, struct rule *r, char *err, size_t errlen)
{
	char buf[64];
	if (kl_strlcpy(buf, s, sizeof buf) >= sizeof buf)
		return errf(err, errlen, -EINVAL, "'%s': not an address or CIDR", s);
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = 0;
	r->family = strchr(buf, ':') ? AF_INET6 : AF_INET;
	unsigned max = r->family == AF_INET ? 32 : 128;
	if (inet_pton(r->family, buf, r->net) != 1)
		return errf(err, errlen, -EINVAL, "'%s': not an address or CIDR", s);
	r->plen = max;
	if (slash) {
		char *end;
		unsigned long pl = strtoul(slash + 1, &end, 10);
		if (slash[1] < '0' || slash[1] > '9' || *end || pl > max)
			return errf(err, errlen, -EINVAL, "'%s': bad prefix length", s);
		r->plen = (unsigned)pl;
	}
	uint8_t masked[16] = {0};
	memcpy(masked, r->net, r->plen / 8);
	if (r->plen % 8)
		masked[r->plen / 8] = (uint8_t)(r->net[r->plen / 8] & (0xff << (8 - r->plen % 8)));
	if (memcmp(masked, r->net, famlen(r->family))) {
		char want[80];
		cidr_text(r->family, masked, r->plen, want, sizeof want);
		return errf(err, errlen, -EINVAL, "'%s': host bits set (did you mean %s?)", s,
		            want);
	}
	r->kind = R_CIDR;
	return 0;
}

/* The destination part of an entry: a name pattern or an address/CIDR. */
static int
parse_dest(const char *s, bool bracketed, struct rule *r, char *err, size_t errlen)
{
	char name[256];
	if (bracketed && !strchr(s, ':'))
		return errf(err, errlen, -EINVAL, "'%s': brackets are for IPv6 addresses", s);
	if (bracketed || strchr(s, '/') || strchr(s, ':') ||
	    (*s >= '0' && *s <= '9' && strspn(s, "0123456789.") == strlen(s)))
		return parse_cidr(s, r, err, errlen);
	if (!strcmp(s, "*")) {
		r->kind = R_ANYNAME;
		return 0;
	}
	bool wild = !strncmp(s, "*.", 2);
	if (!norm_name(s + (wild ? 2 : 0), strlen(s) - (wild ? 2 : 0), name, sizeof name))
		return errf(err, errlen, -EINVAL,
		            "'%s': not a host name, '*.' wildcard, address or CIDR%s", s,
		            strchr(s, '*') ? " (a wildcard may only be a whole leading '*.' label)"
		                           : "");
	r->kind = wild ? R_SUFFIX : R_NAME;
	r->name = wild ? kl_xasprintf(".%s", name) : kl_xstrdup(name);
	return 0;
}

static int
parse_entry(const char *tok, struct rule *r, char *err, size_t errlen)
{
	char dest[300];
	const char *ports = NULL, *colon = strchr(tok, ':');
	bool bracketed = tok[0] == '[';
	memset(r, 0, sizeof(*r));
	if (strlen(tok) >= sizeof dest)
		return errf(err, errlen, -EINVAL, "'%.40s...': entry too long", tok);
	if (tok[0] == ':' && tok[1] != ':') { /* ":443"; "::/0" is an address */
		r->kind = R_PORT;
		ports = tok + 1;
	} else if (bracketed) {
		const char *close = strchr(tok, ']');
		if (!close || (close[1] && close[1] != ':'))
			return errf(err, errlen, -EINVAL,
			            "'%s': expected [IPv6 address or CIDR]:PORT", tok);
		kl_strlcpy(dest, tok + 1, (size_t)(close - tok));
		ports = close[1] ? close + 2 : NULL;
	} else if (colon && !strchr(colon + 1, ':')) { /* one colon: DEST:PORT */
		kl_strlcpy(dest, tok, (size_t)(colon - tok) + 1);
		ports = colon + 1;
	} else { /* no colon, or an IPv6 address or CIDR without a port */
		kl_strlcpy(dest, tok, sizeof dest);
	}
	if (ports && parse_ports(ports, r) < 0)
		return errf(err, errlen, -EINVAL,
		            "'%s': bad port or port range (1-65535, as 443 or 8000-8999)", tok);
	int rv = r->kind == R_PORT ? 0 : parse_dest(dest, bracketed, r, err, errlen);
	if (rv == 0)
		r->text = kl_xstrdup(tok);
	return rv;
}

int
gw_policy_parse_list(gw_policy *p, enum gw_list list, const char *spec, char *err, size_t errlen)
{
	if (!p || !spec || (list != GW_LIST_DENY && list != GW_LIST_ALLOW))
		return errf(err, errlen, -EINVAL, "bad arguments");
	struct rules *rs = list == GW_LIST_DENY ? &p->deny : &p->allow;
	struct rules add = {0};
	_cleanup_free_ char *copy = kl_xstrdup(spec);
	char *save = NULL;
	int rv = 0;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		add.v = kl_xrealloc(add.v, (add.n + 1) * sizeof(*add.v));
		if ((rv = parse_entry(tok, &add.v[add.n], err, errlen)) < 0) {
			rule_fini(&add.v[add.n]);
			break;
		}
		add.n++;
	}
	if (rv < 0) {
		for (size_t i = 0; i < add.n; i++)
			rule_fini(&add.v[i]);
		free(add.v);
		return rv;
	}
	if (add.n == 0)
		return 0;
	rs->v = kl_xrealloc(rs->v, (rs->n + add.n) * sizeof(*rs->v));
	memcpy(rs->v + rs->n, add.v, add.n * sizeof(*add.v));
	rs->n += add.n;
	for (size_t i = 0; i < add.n; i++)
		if (list == GW_LIST_ALLOW && add.v[i].kind == R_PORT)
			p->allow_ports = true;
	free(add.v);
	return 0;
}

/* ---- the policy object ---- */

gw_policy *
gw_policy_new(void)
{
	gw_policy *p = kl_xcalloc(1, sizeof(*p));
	p->max_conns = GW_DEFAULT_MAX_CONNS;
	p->connect_timeout_ms = GW_DEFAULT_CONNECT_TIMEOUT_MS;
	p->idle_timeout_ms = GW_DEFAULT_IDLE_TIMEOUT_MS;
	return p;
}

void
gw_policy_free(gw_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->deny.n; i++)
		rule_fini(&p->deny.v[i]);
	for (size_t i = 0; i < p->allow.n; i++)
		rule_fini(&p->allow.v[i]);
	free(p->deny.v);
	free(p->allow.v);
	free(p);
}

static int
parse_bool(const char *v, bool *ret)
{
	static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
	                                                                            "off", "0"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(yes); i++) {
		if (!strcmp(v, yes[i]))
			return *ret = true, 0;
		if (!strcmp(v, no[i]))
			return *ret = false, 0;
	}
	return -EINVAL;
}

static int
set_duration(uint32_t *dst, const char *key, const char *value, char *err, size_t errlen)
{
	uint64_t ms;
	if (sched_parse_duration_ms(value, &ms) < 0 || ms == 0 || ms > UINT32_MAX)
		return errf(err, errlen, -EINVAL,
		            "%s: '%s' is not a duration above 0 (1500ms, 30s, 5m; a plain "
		            "number is seconds)",
		            key, value);
	*dst = (uint32_t)ms;
	return 0;
}

int
gw_policy_set(gw_policy *p, const char *key, const char *value, char *err, size_t errlen)
{
	if (!p || !key || !value)
		return errf(err, errlen, -EINVAL, "bad arguments");
	if (!strcmp(key, "allow") || !strcmp(key, "deny")) {
		char e[200];
		int rv = gw_policy_parse_list(p, key[0] == 'a' ? GW_LIST_ALLOW : GW_LIST_DENY,
		                              value, e, sizeof e);
		return rv < 0 ? errf(err, errlen, rv, "%s: %s", key, e) : 0;
	}
	if (!strcmp(key, "allow_private")) {
		if (parse_bool(value, &p->allow_private) < 0)
			return errf(err, errlen, -EINVAL, "%s: '%s' is not true or false", key,
			            value);
		return 0;
	}
	if (!strcmp(key, "max_conns")) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(value, &end, 10);
		if (*value < '0' || *value > '9' || *end || errno || v > 1000000)
			return errf(err, errlen, -EINVAL,
			            "%s: '%s' is not a count from 0 (no cap) to 1000000", key,
			            value);
		p->max_conns = (uint32_t)v;
		return 0;
	}
	if (!strcmp(key, "connect_timeout"))
		return set_duration(&p->connect_timeout_ms, key, value, err, errlen);
	if (!strcmp(key, "idle_timeout"))
		return set_duration(&p->idle_timeout_ms, key, value, err, errlen);
	return errf(err, errlen, -ENOENT, "%s: unknown egress key", key);
}

uint32_t
gw_policy_max_conns(const gw_policy *p)
{
	return p->max_conns;
}

uint32_t
gw_policy_connect_timeout_ms(const gw_policy *p)
{
	return p->connect_timeout_ms;
}

uint32_t
gw_policy_idle_timeout_ms(const gw_policy *p)
{
	return p->idle_timeout_ms;
}

/* ---- decisions ---- */

/* The name-level refusals: port 0, denied ports, denied names. */
static bool
name_denied(const gw_policy *p, const struct target *t, uint16_t port, char *reason, size_t len)
{
	if (port == 0)
		return say(reason, len, GW_DENY, "port 0"), true;
	for (size_t i = 0; i < p->deny.n; i++) {
		const struct rule *r = &p->deny.v[i];
		if (r->kind == R_PORT && port_in(r, port))
			return say(reason, len, GW_DENY, "deny list: port %u (%s)", port, r->text),
			       true;
		if (!t->is_ip && is_name_rule(r) && name_match(r, t->name) && port_in(r, port))
			return say(reason, len, GW_DENY, "deny list: %s (%s)", t->name, r->text),
			       true;
	}
	return false;
}

/* The allow entry naming t on port, if any. */
static const struct rule *
name_allowed(const gw_policy *p, const struct target *t, uint16_t port)
{
	for (size_t i = 0; !t->is_ip && i < p->allow.n; i++)
		if (is_name_rule(&p->allow.v[i]) && name_match(&p->allow.v[i], t->name) &&
		    allow_port(p, &p->allow.v[i], port))
			return &p->allow.v[i];
	return NULL;
}

/* The message for "nothing allows it", saying when only the port is wrong. */
static gw_decision
not_allowed(const gw_policy *p, const struct target *t, const char *what, uint16_t port,
            char *reason, size_t len)
{
	for (size_t i = 0; !t->is_ip && i < p->allow.n; i++)
		if (is_name_rule(&p->allow.v[i]) && name_match(&p->allow.v[i], t->name))
			return say(reason, len, GW_DENY,
			           "not in allow list: port %u is not allowed for %s (%s)", port,
			           what, p->allow.v[i].text);
	return say(reason, len, GW_DENY, "not in allow list: %s port %u", what, port);
}

/* Does an allow CIDR lying inside the special range h name addr (on port)? */
static bool
lifted(const gw_policy *p, const struct hit *h, int family, const uint8_t *addr, uint16_t port)
{
	if (h->private_ && p->allow_private)
		return true;
	for (size_t i = 0; i < p->allow.n; i++) {
		const struct rule *r = &p->allow.v[i];
		if (r->kind == R_CIDR && r->family == h->family && r->plen >= h->plen &&
		    prefix_eq(h->net, r->net, h->plen) && cidr_match(r, family, addr) &&
		    allow_port(p, r, port))
			return true;
	}
	return false;
}

static gw_decision
decide_addr(const gw_policy *p, const struct target *t, int family, const uint8_t *addr,
            uint16_t port, char *reason, size_t len)
{
	char a[GW_ADDRSTRLEN], range[80];
	uint8_t v4[4];
	addr_text(family, addr, a, sizeof a);
	if (name_denied(p, t, port, reason, len))
		return GW_DENY;
	bool emb = embedded_v4(family, addr, v4);
	for (size_t i = 0; i < p->deny.n; i++) {
		const struct rule *r = &p->deny.v[i];
		if (port_in(r, port) &&
		    (cidr_match(r, family, addr) || (emb && cidr_match(r, AF_INET, v4))))
			return say(reason, len, GW_DENY, "deny list: %s (%s)", a, r->text);
	}
	struct hit h;
	if (classify(family, addr, &h) && !lifted(p, &h, family, addr, port)) {
		cidr_text(h.family, h.net, h.plen, range, sizeof range);
		return say(reason, len, GW_DENY, "built-in deny: %s address %s (%s%s)", h.what, a,
		           range, h.detail);
	}
	const struct rule *r = name_allowed(p, t, port);
	if (r)
		return say(reason, len, GW_ALLOW, "allow list: %s (%s) at %s", t->name, r->text, a);
	for (size_t i = 0; i < p->allow.n; i++) {
		r = &p->allow.v[i];
		if (cidr_match(r, family, addr) && allow_port(p, r, port))
			return say(reason, len, GW_ALLOW, "allow list: %s (%s)", a, r->text);
	}
	return not_allowed(p, t, t->is_ip ? a : t->name, port, reason, len);
}

int
gw_policy_check_host(const gw_policy *p, const char *host, uint16_t port, gw_decision *ret,
                     char *reason, size_t len)
{
	struct target t;
	if (!p || !host || !ret)
		return -EINVAL;
	if (norm_host(host, &t, reason, len) < 0) {
		*ret = GW_DENY;
		return 0;
	}
	if (t.is_ip) {
		*ret = decide_addr(p, &t, t.family, t.addr, port, reason, len);
		return 0;
	}
	if (name_denied(p, &t, port, reason, len)) {
		*ret = GW_DENY;
		return 0;
	}
	const struct rule *r = name_allowed(p, &t, port);
	if (r) {
		*ret = say(reason, len, GW_ALLOW, "allow list: %s (%s)", t.name, r->text);
		return 0;
	}
	for (size_t i = 0; i < p->allow.n; i++) {
		if (p->allow.v[i].kind == R_CIDR && allow_port(p, &p->allow.v[i], port)) {
			*ret = say(reason, len, GW_ALLOW,
			           "%s: no allowed name; its address must be in an allow CIDR",
			           t.name);
			return 0;
		}
	}
	*ret = not_allowed(p, &t, t.name, port, reason, len);
	return 0;
}

int
gw_policy_check_addr(const gw_policy *p, const char *host, const struct sockaddr *addr,
                     gw_decision *ret, char *reason, size_t len)
{
	struct target t;
	if (!p || !host || !addr || !ret)
		return -EINVAL;
	const uint8_t *bytes;
	uint16_t port;
	if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)addr;
		bytes = (const uint8_t *)&s->sin_addr;
		port = ntohs(s->sin_port);
	} else if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)addr;
		bytes = (const uint8_t *)&s->sin6_addr;
		port = ntohs(s->sin6_port);
	} else {
		return -EINVAL;
	}
	if (norm_host(host, &t, reason, len) < 0) {
		*ret = GW_DENY;
		return 0;
	}
	*ret = decide_addr(p, &t, addr->sa_family, bytes, port, reason, len);
	return 0;
}

/* ---- resolution ---- */

int
gw_resolve(const char *host, uint16_t port, gw_addr *addrs, size_t max, size_t *ret_n)
{
	char buf[300], ps[8];
	size_t n = host ? strlen(host) : 0;
	if (n == 0 || n >= sizeof buf || max == 0)
		return -EINVAL;
	memcpy(buf, host, n + 1);
	if (buf[0] == '[' && buf[n - 1] == ']') {
		buf[n - 1] = 0;
		memmove(buf, buf + 1, n - 1);
	}
	snprintf(ps, sizeof ps, "%u", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV},
	                *res = NULL;
	int e = getaddrinfo(buf, ps, &hints, &res);
	switch (e) {
	case 0:
		break;
	case EAI_NONAME:
	case EAI_NODATA:
	case EAI_ADDRFAMILY:
		return -ENOENT;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_SYSTEM:
		return errno ? -errno : -EIO;
	default:
		return -EIO;
	}
	size_t got = 0;
	for (struct addrinfo *ai = res; ai && got < max; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(struct sockaddr_storage))
			continue;
		gw_addr g = {.len = ai->ai_addrlen};
		memcpy(&g.ss, ai->ai_addr, ai->ai_addrlen);
		bool dup = false;
		for (size_t i = 0; i < got && !dup; i++)
			dup = addrs[i].len == g.len && !memcmp(&addrs[i].ss, &g.ss, g.len);
		if (!dup)
			addrs[got++] = g;
	}
	freeaddrinfo(res);
	if (got == 0)
		return -ENOENT;
	*ret_n = got;
	return 0;
}

int
gw_policy_decide(const gw_policy *p, const char *host, uint16_t port, gw_verdict *ret)
{
	gw_decision d;
	if (!p || !host || !ret)
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	ret->decision = GW_DENY;
	int rv = gw_policy_check_host(p, host, port, &d, ret->reason, sizeof ret->reason);
	if (rv < 0)
		return rv;
	if (d == GW_DENY) {
		struct target t;
		if (norm_host(host, &t, NULL, 0) == 0 && t.is_ip) /* name the refused literal */
			addr_text(t.family, t.addr, ret->addr, sizeof ret->addr);
		return 0;
	}
	gw_addr addrs[GW_MAX_ADDRS];
	size_t n = 0;
	if ((rv = gw_resolve(host, port, addrs, GW_MAX_ADDRS, &n)) < 0) {
		snprintf(ret->reason, sizeof ret->reason, "cannot resolve %.100s: %s", host,
		         rv == -ENOENT ? "no such name or no address" : strerror(-rv));
		return rv;
	}
	char first[GW_REASON_LEN] = "";
	for (size_t i = 0; i < n; i++) {
		char why[GW_REASON_LEN];
		gw_policy_check_addr(p, host, (const struct sockaddr *)&addrs[i].ss, &d, why,
		                     sizeof why);
		if (d == GW_DENY) {
			gw_addr_str((const struct sockaddr *)&addrs[i].ss, ret->addr,
			            sizeof ret->addr);
			memcpy(ret->reason, why, sizeof why);
			return 0;
		}
		if (i == 0)
			memcpy(first, why, sizeof why);
	}
	ret->decision = GW_ALLOW;
	memcpy(ret->reason, first, sizeof first);
	gw_addr_str((const struct sockaddr *)&addrs[0].ss, ret->addr, sizeof ret->addr);
	memcpy(ret->addrs, addrs, n * sizeof(*addrs));
	ret->naddrs = n;
	return 0;
}

/* ---- connection cap ---- */

int
gw_policy_conn_acquire(gw_policy *p)
{
	uint32_t cur = atomic_load(&p->conns);
	do {
		if (p->max_conns && cur >= p->max_conns)
			return -EAGAIN;
	} while (!atomic_compare_exchange_weak(&p->conns, &cur, cur + 1));
	return 0;
}

void
gw_policy_conn_release(gw_policy *p)
{
	atomic_fetch_sub(&p->conns, 1);
}

uint32_t
gw_policy_conns(const gw_policy *p)
{
	return atomic_load(&((gw_policy *)p)->conns);
}
