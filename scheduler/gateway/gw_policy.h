/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's egress policy engine: per tenant, a deny list and an allow
 * list of host names (exact, "*.suffix", "*"), CIDRs and ports, the built-in
 * denial of special address ranges (loopback, private, link-local, cloud
 * metadata, CGNAT, multicast, IPv4-mapped and other IPv4-embedding IPv6
 * forms, documentation and reserved ranges) unless an allow CIDR inside the
 * range names it, timeouts and a connection cap. Decisions are pure
 * functions of the policy and their inputs; the only I/O is getaddrinfo in
 * gw_resolve. The gateway resolves a name once, checks every address, and
 * dials exactly an address it checked (never the name again), which defeats
 * DNS rebinding. Syntax and semantics: docs/egress.md.
 */
#ifndef GW_POLICY_H
#define GW_POLICY_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct gw_policy gw_policy;

typedef enum gw_decision {
	GW_DENY = 0,
	GW_ALLOW = 1,
} gw_decision;

/* "allow" or "deny": the audit record's decision field. */
const char *gw_decision_name(gw_decision d);

enum gw_list {
	GW_LIST_DENY,
	GW_LIST_ALLOW,
};

#define GW_DEFAULT_MAX_CONNS          64u
#define GW_DEFAULT_CONNECT_TIMEOUT_MS 10000u
#define GW_DEFAULT_IDLE_TIMEOUT_MS    300000u
#define GW_REASON_LEN                 192 /* enough for every reason this module writes */
#define GW_MAX_ADDRS                  16  /* addresses kept from one resolution */
#define GW_ADDRSTRLEN                 INET6_ADDRSTRLEN

/* ---- building a policy ---- */

/*
 * A policy that allows nothing (empty allow list), with the default cap and
 * timeouts. Never NULL (aborts on OOM). Not thread-safe while being built;
 * once built, any number of threads may check against it concurrently.
 */
gw_policy *gw_policy_new(void);
void gw_policy_free(gw_policy *p); /* accepts NULL; no connection may hold it */

/*
 * Add the entries of spec, separated by commas and/or blanks, to the deny or
 * allow list: "*.pypi.org, github.com, 10.1.2.0/24, :443, example.com:8080,
 * [2001:db8::/32]:443". All or nothing: on error nothing is added.
 * 0, or -EINVAL with the offending entry named in err.
 */
int gw_policy_parse_list(gw_policy *p, enum gw_list list, const char *spec, char *err,
                         size_t errlen);

/*
 * One INI key of a tenant's egress policy, as the gateway's config parser
 * passes it: allow, deny (lists, appended to: a key may repeat to keep lines
 * short), allow_private (true/false), max_conns (0 = no cap),
 * connect_timeout, idle_timeout (durations; a plain number is seconds).
 * 0, -ENOENT for an unknown key, -EINVAL for a bad value; err says which.
 */
int gw_policy_set(gw_policy *p, const char *key, const char *value, char *err, size_t errlen);

uint32_t gw_policy_max_conns(const gw_policy *p);
uint32_t gw_policy_connect_timeout_ms(const gw_policy *p);
uint32_t gw_policy_idle_timeout_ms(const gw_policy *p);

/* ---- decisions ---- */

/*
 * The name-level decision for a CONNECT to host:port, before any DNS. host
 * is a name or an IP literal ("[::1]" brackets allowed). Names in the deny
 * list, denied ports, malformed names and non-canonical IPv4 forms
 * ("127.1", "0x7f.1", "2130706433") are denied; a name allowed by an allow
 * entry, or one that an allow CIDR might still admit once resolved, is
 * allowed to proceed to resolution; anything else is denied with "not in
 * allow list". An IP literal gets its final, address-level decision here.
 * ALLOW means "resolve it and call gw_policy_check_addr on every address".
 * Returns 0 with *ret and a reason (always written, for the audit record),
 * or -EINVAL for NULL arguments.
 */
int gw_policy_check_host(const gw_policy *p, const char *host, uint16_t port, gw_decision *ret,
                         char *reason, size_t len);

/*
 * The final decision for connecting to addr (AF_INET or AF_INET6, its port
 * set) on behalf of a request for host: the name-level rules again, then
 * deny CIDRs (also against an IPv4 address embedded in an IPv6 one), the
 * built-in special ranges (unless explicitly allowed, see docs/egress.md),
 * then the allow list (the name matched an allow entry, or the address is
 * in an allow CIDR, for this port). Returns 0 with *ret and a reason, or
 * -EINVAL (NULL, or another address family).
 */
int gw_policy_check_addr(const gw_policy *p, const char *host, const struct sockaddr *addr,
                         gw_decision *ret, char *reason, size_t len);

/* ---- resolution ---- */

typedef struct gw_addr {
	struct sockaddr_storage ss;
	socklen_t len;
} gw_addr;

/*
 * Resolve host (a name, or an IP literal with or without brackets) once with
 * getaddrinfo (blocking: call it from a worker thread), for TCP to port.
 * Up to max distinct addresses, in getaddrinfo's order, with the port set.
 * 0 with *ret_n >= 1, or -ENOENT (no such name / no address), -EAGAIN
 * (temporary DNS failure), -EINVAL (bad host), -EIO (other resolver errors).
 */
int gw_resolve(const char *host, uint16_t port, gw_addr *addrs, size_t max, size_t *ret_n);

/* The address (no port) as text: "10.0.0.1", "::ffff:127.0.0.1". */
void gw_addr_str(const struct sockaddr *sa, char *buf, size_t len);

/* The whole decision for one CONNECT: name check, one resolution, every address checked. */
typedef struct gw_verdict {
	gw_decision decision;
	char reason[GW_REASON_LEN];
	char addr[GW_ADDRSTRLEN]; /* the address allowed (the first) or refused; "" if none */
	size_t naddrs;            /* ALLOW: the checked addresses, to dial in order */
	gw_addr addrs[GW_MAX_ADDRS];
} gw_verdict;

/*
 * Decide a CONNECT to host:port: gw_policy_check_host, gw_resolve,
 * gw_policy_check_addr on every address. All or nothing: if any address is
 * refused the connection is (a name answering with both a public and an
 * internal address is an attack, not a fallback). Dial only ret->addrs.
 * Returns 0 with the verdict (DENY included), or a gw_resolve error with
 * ret->decision = GW_DENY and the resolver's message in ret->reason.
 */
int gw_policy_decide(const gw_policy *p, const char *host, uint16_t port, gw_verdict *ret);

/* ---- connection cap ---- */

/*
 * Count one egress connection against the policy's max_conns: 0, or -EAGAIN
 * at the cap (nothing counted). Thread-safe (atomic). Every success needs one
 * gw_policy_conn_release when the connection closes.
 */
int gw_policy_conn_acquire(gw_policy *p);
void gw_policy_conn_release(gw_policy *p);
uint32_t gw_policy_conns(const gw_policy *p); /* connections counted now */

#endif
