/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the egress policy engine (scheduler/gateway/gw_policy.c):
 * the entry syntax and its errors, the INI keys, every SSRF case from the
 * acceptance list (loopback, metadata, private, IPv4-mapped, a name that
 * resolves to loopback) refused even by a policy that allows the whole
 * internet, the other special ranges and IPv4-embedding IPv6 forms,
 * non-canonical IPv4 spellings, explicit allows that lift a built-in denial
 * (and the wider ones that must not), wildcards, deny beating allow, ports,
 * resolution, and the per-tenant connection cap under threads.
 */
#include "test.h"

#include "gw_policy.h"
#include "kl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

static gw_policy *
policy(const char *allow, const char *deny)
{
	gw_policy *p = gw_policy_new();
	char err[256] = "";
	if (allow && gw_policy_parse_list(p, GW_LIST_ALLOW, allow, err, sizeof err) < 0)
		KT_FAIL("allow '%s': %s", allow, err);
	if (deny && gw_policy_parse_list(p, GW_LIST_DENY, deny, err, sizeof err) < 0)
		KT_FAIL("deny '%s': %s", deny, err);
	return p;
}

/* The whole internet, by name and by address. */
static gw_policy *
allow_all(void)
{
	return policy("*, 0.0.0.0/0, ::/0", NULL);
}

static gw_decision
host(const gw_policy *p, const char *h, uint16_t port, char *reason)
{
	gw_decision d = GW_ALLOW;
	char buf[GW_REASON_LEN];
	ASSERT_EQ(gw_policy_check_host(p, h, port, &d, reason ? reason : buf, GW_REASON_LEN), 0);
	fprintf(stderr, "  host %s:%u -> %s: %s\n", h, port, gw_decision_name(d),
	        reason ? reason : buf);
	return d;
}

static struct sockaddr_storage
sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss = {0};
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		ASSERT_EQ(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		ASSERT_EQ(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}

static gw_decision
addr(const gw_policy *p, const char *h, const char *ip, uint16_t port, char *reason)
{
	gw_decision d = GW_ALLOW;
	char buf[GW_REASON_LEN];
	struct sockaddr_storage ss = sa(ip, port);
	ASSERT_EQ(gw_policy_check_addr(p, h, (struct sockaddr *)&ss, &d, reason ? reason : buf,
	                               GW_REASON_LEN),
	          0);
	fprintf(stderr, "  addr %s -> %s:%u -> %s: %s\n", h, ip, port, gw_decision_name(d),
	        reason ? reason : buf);
	return d;
}

/* ---- syntax ---- */

TEST(parse_entries)
{
	gw_policy *p = gw_policy_new();
	char err[256];
	ASSERT_EQ(gw_policy_parse_list(p, GW_LIST_ALLOW,
	                               "*.pypi.org, github.com, 10.1.2.0/24, :443 "
	                               "example.com:8080\t10.9.0.1 [2001:db8::/32]:443, "
	                               "2606:4700::/32 [::1]:80 *:8000-8999 Files.Example.ORG.",
	                               err, sizeof err),
	          0);
	ASSERT_EQ(gw_policy_parse_list(p, GW_LIST_ALLOW, "", err, sizeof err), 0);
	static const char *const bad[] = {
	        "*foo.com",    "a.*.com",      "foo.*",
	        "10.1.2.3/24", "10.0.0.0/33",  "::/129",
	        ":0",          ":70000",       ":10-5",
	        ":",           "example.com:", "example.com:http",
	        "[::1",        "[::1]x",       "[example.com]",
	        "ex@mple.com", "300.1.1.1",    "1.2.3",
	        "a..b",        "-/8",          "10.0.0.0/",
	        "x.com:1-",    "*.",           "[10.0.0.1]:80",
	        "-a.com",      "a-.com",       "a.-b.com",
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(bad); i++) {
		err[0] = 0;
		if (gw_policy_parse_list(p, GW_LIST_DENY, bad[i], err, sizeof err) != -EINVAL)
			KT_FAIL("entry '%s' accepted", bad[i]);
		fprintf(stderr, "  '%s': %s\n", bad[i], err);
		ASSERT_CONTAINS(err, "'");
	}
	ASSERT_EQ(gw_policy_parse_list(p, GW_LIST_DENY, "10.1.2.3/24", err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "did you mean 10.1.2.0/24");
	gw_policy_free(p);

	/* All or nothing: a bad entry adds none of the list. */
	p = gw_policy_new();
	ASSERT_EQ(gw_policy_parse_list(p, GW_LIST_ALLOW, "a.com, b*.com", err, sizeof err),
	          -EINVAL);
	ASSERT_EQ(host(p, "a.com", 443, NULL), GW_DENY);
	gw_policy_free(p);
	gw_policy_free(NULL);
}

TEST(ini_keys)
{
	gw_policy *p = gw_policy_new();
	char err[256];
	ASSERT_EQ(gw_policy_max_conns(p), GW_DEFAULT_MAX_CONNS);
	ASSERT_EQ(gw_policy_connect_timeout_ms(p), GW_DEFAULT_CONNECT_TIMEOUT_MS);
	ASSERT_EQ(gw_policy_idle_timeout_ms(p), GW_DEFAULT_IDLE_TIMEOUT_MS);
	ASSERT_EQ(gw_policy_set(p, "allow", "*.pypi.org, :443", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_set(p, "allow", "github.com", err, sizeof err), 0); /* appends */
	ASSERT_EQ(gw_policy_set(p, "deny", "evil.pypi.org", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_set(p, "max_conns", "8", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_set(p, "connect_timeout", "1500ms", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_set(p, "idle_timeout", "2m", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_max_conns(p), 8);
	ASSERT_EQ(gw_policy_connect_timeout_ms(p), 1500);
	ASSERT_EQ(gw_policy_idle_timeout_ms(p), 120000);
	ASSERT_EQ(gw_policy_set(p, "idle_timeout", "30", err, sizeof err), 0); /* seconds */
	ASSERT_EQ(gw_policy_idle_timeout_ms(p), 30000);
	ASSERT_EQ(host(p, "files.pypi.org", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "github.com", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "evil.pypi.org", 443, NULL), GW_DENY);

	ASSERT_EQ(gw_policy_set(p, "alow", "x.com", err, sizeof err), -ENOENT);
	ASSERT_CONTAINS(err, "unknown");
	ASSERT_EQ(gw_policy_set(p, "allow", "x.com, *bad", err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "allow: '*bad'");
	ASSERT_EQ(gw_policy_set(p, "max_conns", "-1", err, sizeof err), -EINVAL);
	ASSERT_EQ(gw_policy_set(p, "max_conns", "many", err, sizeof err), -EINVAL);
	ASSERT_EQ(gw_policy_set(p, "connect_timeout", "0", err, sizeof err), -EINVAL);
	ASSERT_EQ(gw_policy_set(p, "connect_timeout", "soon", err, sizeof err), -EINVAL);
	ASSERT_EQ(gw_policy_set(p, "allow_private", "maybe", err, sizeof err), -EINVAL);
	ASSERT_EQ(gw_policy_set(p, "allow_private", "true", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_max_conns(p), 8); /* a failed set changes nothing */
	gw_policy_free(p);
}

/* ---- SSRF: the acceptance list, against a policy that allows everything public ---- */

TEST(ssrf_literals_refused)
{
	gw_policy *p = allow_all();
	static const struct {
		const char *host, *why;
	} cases[] = {
	        {"127.0.0.1", "loopback"},
	        {"169.254.169.254", "metadata"},
	        {"10.0.0.1", "private"},
	        {"[::ffff:127.0.0.1]", "IPv4-mapped"},
	        {"::ffff:127.0.0.1", "embeds loopback 127.0.0.1"},
	        {"::1", "loopback"},
	        {"[::1]", "loopback"},
	        {"0.0.0.0", "unspecified"},
	        {"::", "unspecified"},
	        {"100.64.0.1", "CGNAT"},
	        {"fe80::1", "link-local"},
	        {"[::ffff:10.0.0.1]", "embeds private 10.0.0.1"},
	        {"[::ffff:169.254.169.254]", "embeds metadata"},
	        {"172.16.5.4", "private"},
	        {"192.168.1.1", "private"},
	        {"127.255.255.254", "loopback"},
	        {"169.254.1.1", "link-local"},
	        {"169.254.170.2", "metadata"},
	        {"100.100.100.200", "metadata"},
	        {"fd00:ec2::254", "metadata"},
	        {"fc00::1", "private"},
	        {"fd12:3456::1", "private"},
	        {"224.0.0.1", "multicast"},
	        {"ff02::1", "multicast"},
	        {"255.255.255.255", "broadcast"},
	        {"240.0.0.1", "reserved"},
	        {"192.0.2.1", "documentation"},
	        {"2001:db8::1", "documentation"},
	        {"198.18.0.1", "benchmarking"},
	        {"::7f00:1", "IPv4-compatible"},
	        {"64:ff9b::7f00:1", "NAT64 address"},
	        {"64:ff9b::a9fe:a9fe", "embeds metadata 169.254.169.254"},
	        {"2002:7f00:1::1", "6to4"},
	        {"2002:a00:1::", "embeds private 10.0.0.1"},
	        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"},
	        {"fec0::1", "site-local"},
	        {"100::1", "discard-only"},
	        {"4000::1", "reserved"},
	        {"127.0.0.1.", "loopback"},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(cases); i++) {
		char reason[GW_REASON_LEN];
		if (host(p, cases[i].host, 443, reason) != GW_DENY)
			KT_FAIL("%s was allowed: %s", cases[i].host, reason);
		ASSERT_CONTAINS(reason, cases[i].why);
	}
	/* The same addresses, reached by a name the policy allows (a rebinding answer). */
	ASSERT_EQ(addr(p, "evil.example", "127.0.0.1", 443, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "evil.example", "169.254.169.254", 80, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "evil.example", "10.0.0.1", 443, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "evil.example", "::ffff:127.0.0.1", 443, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "evil.example", "::1", 443, NULL), GW_DENY);
	/* ... while public addresses pass, including NAT64 and 6to4 of public IPv4. */
	ASSERT_EQ(host(p, "93.184.216.34", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "2606:2800:220:1::1", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "64:ff9b::808:808", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "2002:808:808::1", 443, NULL), GW_ALLOW);
	ASSERT_EQ(addr(p, "example.org", "93.184.216.34", 443, NULL), GW_ALLOW);
	/* A mapped address is refused even when what it embeds is public. */
	ASSERT_EQ(host(p, "::ffff:8.8.8.8", 443, NULL), GW_DENY);
	gw_policy_free(p);
}

TEST(ssrf_noncanonical_and_malformed_refused)
{
	gw_policy *p = allow_all();
	static const char *const bad[] = {
	        "127.1", "2130706433",  "0x7f.0.0.1",   "0177.0.0.1", "0x7f000001", "127.0.1",
	        "10.1",  "[127.0.0.1]", "fe80::1%eth0", "a b",        "evil.com/x", "",
	        "[]",    "[::1",        "..",           "a..b",       "x@y.com",    "-",
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(bad); i++)
		if (host(p, bad[i], 443, NULL) != GW_DENY)
			KT_FAIL("'%s' was allowed", bad[i]);
	char reason[GW_REASON_LEN];
	ASSERT_EQ(host(p, "127.1", 80, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "non-canonical");
	ASSERT_EQ(host(p, "example.com", 0, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "port 0");
	gw_policy_free(p);
}

TEST(ssrf_name_resolving_to_loopback)
{
	gw_policy *p = allow_all();
	char reason[GW_REASON_LEN];
	ASSERT_EQ(host(p, "localhost", 80, reason), GW_ALLOW); /* the name alone is fine ... */
	gw_verdict v;
	ASSERT_EQ(gw_policy_decide(p, "localhost", 80, &v), 0);
	fprintf(stderr, "  decide localhost -> %s %s: %s\n", gw_decision_name(v.decision), v.addr,
	        v.reason);
	ASSERT_EQ(v.decision, GW_DENY); /* ... its address is not */
	ASSERT_CONTAINS(v.reason, "loopback");
	ASSERT(!strcmp(v.addr, "127.0.0.1") || !strcmp(v.addr, "::1"));
	ASSERT_EQ(v.naddrs, 0);
	/* Literals through the whole path. */
	ASSERT_EQ(gw_policy_decide(p, "169.254.169.254", 80, &v), 0);
	ASSERT_EQ(v.decision, GW_DENY);
	ASSERT_CONTAINS(v.reason, "metadata");
	ASSERT_STR_EQ(v.addr, "169.254.169.254");
	ASSERT_EQ(gw_policy_decide(p, "[::ffff:127.0.0.1]", 80, &v), 0);
	ASSERT_EQ(v.decision, GW_DENY);
	ASSERT_STR_EQ(v.addr, "::ffff:127.0.0.1");
	ASSERT_EQ(gw_policy_decide(p, "bad..name", 80, &v), 0);
	ASSERT_EQ(v.decision, GW_DENY);
	ASSERT_STR_EQ(v.addr, "");
	ASSERT_EQ(gw_policy_decide(p, "93.184.216.34", 8443, &v), 0);
	ASSERT_EQ(v.decision, GW_ALLOW);
	ASSERT_EQ(v.naddrs, 1);
	ASSERT_STR_EQ(v.addr, "93.184.216.34");
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&v.addrs[0].ss;
	ASSERT_EQ(s4->sin_family, AF_INET);
	ASSERT_EQ(ntohs(s4->sin_port), 8443);
	ASSERT_EQ(v.addrs[0].len, sizeof(struct sockaddr_in));
	gw_policy_free(p);
}

TEST(resolve)
{
	gw_addr a[GW_MAX_ADDRS];
	size_t n = 0;
	ASSERT_EQ(gw_resolve("localhost", 8080, a, GW_MAX_ADDRS, &n), 0);
	ASSERT_GE(n, 1);
	for (size_t i = 0; i < n; i++) {
		char s[GW_ADDRSTRLEN];
		gw_addr_str((struct sockaddr *)&a[i].ss, s, sizeof s);
		ASSERT(!strcmp(s, "127.0.0.1") || !strcmp(s, "::1"));
		ASSERT_EQ(ntohs(((struct sockaddr_in *)&a[i].ss)->sin_port), 8080);
		for (size_t j = 0; j < i; j++) /* no duplicates */
			ASSERT(a[i].len != a[j].len || memcmp(&a[i].ss, &a[j].ss, a[i].len));
	}
	ASSERT_EQ(gw_resolve("[::1]", 443, a, 1, &n), 0);
	ASSERT_EQ(n, 1);
	ASSERT_EQ(a[0].ss.ss_family, AF_INET6);
	ASSERT_EQ(gw_resolve("", 443, a, 1, &n), -EINVAL);
	int rv = gw_resolve("no-such-host.invalid", 443, a, 1, &n);
	ASSERT(rv == -ENOENT || rv == -EAGAIN);
	gw_policy *p = allow_all();
	gw_verdict v;
	ASSERT_EQ(gw_policy_decide(p, "no-such-host.invalid", 443, &v), rv);
	ASSERT_EQ(v.decision, GW_DENY);
	ASSERT_CONTAINS(v.reason, "cannot resolve");
	gw_policy_free(p);
}

/* ---- explicit allows ---- */

TEST(explicit_allow_lifts_builtin)
{
	char reason[GW_REASON_LEN];
	gw_policy *p = policy("10.1.2.0/24, 169.254.0.0/16", NULL);
	ASSERT_EQ(host(p, "10.1.2.5", 5432, reason), GW_ALLOW);
	ASSERT_CONTAINS(reason, "10.1.2.0/24");
	ASSERT_EQ(host(p, "10.1.3.5", 5432, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "private");
	ASSERT_EQ(host(p, "169.254.1.1", 80, NULL), GW_ALLOW);
	/* Metadata sits in its own /32: the link-local /16 does not lift it. */
	ASSERT_EQ(host(p, "169.254.169.254", 80, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "metadata");
	/* The IPv4 allow does not lift the IPv4-mapped form. */
	ASSERT_EQ(host(p, "::ffff:10.1.2.5", 5432, NULL), GW_DENY);
	/* A name resolving into the allowed range is fine; the name need not be listed. */
	ASSERT_EQ(host(p, "db.internal", 5432, reason), GW_ALLOW);
	ASSERT_EQ(addr(p, "db.internal", "10.1.2.7", 5432, NULL), GW_ALLOW);
	ASSERT_EQ(addr(p, "db.internal", "10.1.9.7", 5432, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "db.internal", "8.8.8.8", 53, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "not in allow list");
	gw_policy_free(p);

	p = policy("169.254.169.254/32, ::ffff:10.1.2.0/120", NULL);
	ASSERT_EQ(host(p, "169.254.169.254", 80, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "::ffff:10.1.2.5", 80, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "::ffff:10.1.3.5", 80, NULL), GW_DENY);
	gw_policy_free(p);

	/* Allowing everything never lifts a special range: a wider CIDR is not "inside" it. */
	p = policy("0.0.0.0/0, ::/0, 0.0.0.0/1, 8.0.0.0/7", NULL);
	ASSERT_EQ(host(p, "10.0.0.1", 80, NULL), GW_DENY);
	ASSERT_EQ(host(p, "9.9.9.9", 80, NULL), GW_ALLOW);
	gw_policy_free(p);

	/* A port-limited allow lifts the range on those ports only. */
	p = policy("10.1.2.0/24:5432", NULL);
	ASSERT_EQ(host(p, "10.1.2.5", 5432, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "10.1.2.5", 22, NULL), GW_DENY);
	gw_policy_free(p);

	/* Loopback can be lifted only by naming it. */
	p = policy("127.0.0.1/32:8080", NULL);
	ASSERT_EQ(host(p, "127.0.0.1", 8080, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "127.0.0.2", 8080, NULL), GW_DENY);
	ASSERT_EQ(host(p, "[::1]", 8080, NULL), GW_DENY);
	gw_policy_free(p);
}

TEST(allow_private_flag)
{
	char err[128];
	gw_policy *p = policy("*.corp.example", NULL);
	ASSERT_EQ(addr(p, "db.corp.example", "10.9.9.9", 5432, NULL), GW_DENY);
	ASSERT_EQ(gw_policy_set(p, "allow_private", "true", err, sizeof err), 0);
	ASSERT_EQ(addr(p, "db.corp.example", "10.9.9.9", 5432, NULL), GW_ALLOW);
	ASSERT_EQ(addr(p, "db.corp.example", "192.168.1.2", 5432, NULL), GW_ALLOW);
	ASSERT_EQ(addr(p, "db.corp.example", "fd00::5", 5432, NULL), GW_ALLOW);
	/* Only the private class: not loopback, link-local, metadata, CGNAT or mapped. */
	ASSERT_EQ(addr(p, "db.corp.example", "127.0.0.1", 5432, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "db.corp.example", "169.254.169.254", 80, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "db.corp.example", "fd00:ec2::254", 80, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "db.corp.example", "100.64.0.1", 80, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "db.corp.example", "::ffff:10.9.9.9", 80, NULL), GW_DENY);
	/* And it allows nothing by itself: the name or address must still be listed. */
	ASSERT_EQ(host(p, "10.9.9.9", 5432, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "other.example", "10.9.9.9", 5432, NULL), GW_DENY);
	gw_policy_free(p);
}

/* ---- names, deny before allow, ports ---- */

TEST(wildcards)
{
	gw_policy *p = policy("*.example.com", NULL);
	ASSERT_EQ(host(p, "a.example.com", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "a.b.example.com", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "A.Example.COM.", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "example.com", 443, NULL), GW_DENY);
	ASSERT_EQ(host(p, "badexample.com", 443, NULL), GW_DENY);
	ASSERT_EQ(host(p, "a.badexample.com", 443, NULL), GW_DENY);
	ASSERT_EQ(host(p, "example.com.evil.net", 443, NULL), GW_DENY);
	ASSERT_EQ(host(p, "a.example.co", 443, NULL), GW_DENY);
	char reason[GW_REASON_LEN];
	ASSERT_EQ(host(p, "github.com", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "not in allow list");
	gw_policy_free(p);

	p = policy("example.com", NULL);
	ASSERT_EQ(host(p, "example.com", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "EXAMPLE.com.", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "a.example.com", 443, NULL), GW_DENY);
	/* "*" is any name, but not an address: those need CIDRs. */
	gw_policy_free(p);
	p = policy("*", NULL);
	ASSERT_EQ(host(p, "anything.example", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "93.184.216.34", 443, NULL), GW_DENY);
	gw_policy_free(p);
	/* An empty policy allows nothing. */
	p = gw_policy_new();
	ASSERT_EQ(host(p, "example.com", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "not in allow list");
	ASSERT_EQ(host(p, "93.184.216.34", 443, NULL), GW_DENY);
	gw_policy_free(p);
}

TEST(deny_beats_allow)
{
	char reason[GW_REASON_LEN];
	gw_policy *p = policy("*.example.com, 0.0.0.0/0", "bad.example.com, 93.184.0.0/16");
	ASSERT_EQ(host(p, "good.example.com", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "bad.example.com", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "deny list");
	ASSERT_EQ(host(p, "x.bad.example.com", 443, NULL), GW_ALLOW); /* exact, not wildcard */
	ASSERT_EQ(host(p, "93.184.216.34", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "93.184.0.0/16");
	ASSERT_EQ(addr(p, "good.example.com", "93.184.216.34", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "deny list");
	ASSERT_EQ(addr(p, "good.example.com", "94.1.1.1", 443, NULL), GW_ALLOW);
	/* A deny CIDR also catches its addresses inside IPv6 forms (NAT64 here). */
	gw_policy_free(p);
	p = policy("*, ::/0", "93.184.0.0/16");
	ASSERT_EQ(addr(p, "x.example", "64:ff9b::5db8:d822", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "deny list");
	gw_policy_free(p);

	p = policy("a.example.com", "*.example.com");
	ASSERT_EQ(host(p, "a.example.com", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "*.example.com");
	gw_policy_free(p);
	/* An explicit allow of a special range loses to a deny of it too. */
	p = policy("10.1.2.0/24", "10.1.2.128/25");
	ASSERT_EQ(host(p, "10.1.2.5", 80, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "10.1.2.200", 80, NULL), GW_DENY);
	gw_policy_free(p);
}

TEST(ports)
{
	char reason[GW_REASON_LEN];
	gw_policy *p = policy("github.com:22, *.pypi.org, :443, :8000-8999", NULL);
	ASSERT_EQ(host(p, "github.com", 22, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "github.com", 443, reason), GW_DENY); /* its own port only */
	ASSERT_CONTAINS(reason, "port 443 is not allowed for github.com");
	ASSERT_EQ(host(p, "files.pypi.org", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "files.pypi.org", 8000, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "files.pypi.org", 8999, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "files.pypi.org", 9000, NULL), GW_DENY);
	ASSERT_EQ(host(p, "files.pypi.org", 80, NULL), GW_DENY);
	gw_policy_free(p);

	/* With an allow CIDR, a name proceeds to resolution (it might land inside it) ... */
	p = policy("github.com:22, 10.1.2.0/24, :443", NULL);
	ASSERT_EQ(host(p, "github.com", 443, NULL), GW_ALLOW);
	/* ... and is refused when it does not. */
	ASSERT_EQ(addr(p, "github.com", "140.82.121.4", 443, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "port 443 is not allowed for github.com");
	ASSERT_EQ(addr(p, "github.com", "140.82.121.4", 22, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "10.1.2.3", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "10.1.2.3", 5432, NULL), GW_DENY);
	ASSERT_EQ(host(p, "other.example", 5432, reason), GW_DENY); /* no CIDR admits 5432 */
	ASSERT_CONTAINS(reason, "not in allow list");
	gw_policy_free(p);

	/* Without port-only allow entries, an entry allows every port. */
	p = policy("example.com", ":25, smtp.example.com:587, :6660-6669");
	ASSERT_EQ(host(p, "example.com", 8443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "example.com", 25, reason), GW_DENY);
	ASSERT_CONTAINS(reason, "deny list: port 25");
	ASSERT_EQ(host(p, "example.com", 6667, NULL), GW_DENY);
	ASSERT_EQ(addr(p, "example.com", "93.184.216.34", 25, NULL), GW_DENY);
	gw_policy_free(p);
	p = policy("*.example.com", "smtp.example.com:587");
	ASSERT_EQ(host(p, "smtp.example.com", 587, NULL), GW_DENY);
	ASSERT_EQ(host(p, "smtp.example.com", 465, NULL), GW_ALLOW);
	gw_policy_free(p);
	p = policy("[2606:4700::/32]:443", NULL);
	ASSERT_EQ(host(p, "2606:4700::1111", 443, NULL), GW_ALLOW);
	ASSERT_EQ(host(p, "2606:4700::1111", 80, NULL), GW_DENY);
	gw_policy_free(p);
}

/* ---- connection cap ---- */

TEST(conn_cap)
{
	char err[128];
	gw_policy *p = gw_policy_new();
	ASSERT_EQ(gw_policy_set(p, "max_conns", "2", err, sizeof err), 0);
	ASSERT_EQ(gw_policy_conn_acquire(p), 0);
	ASSERT_EQ(gw_policy_conn_acquire(p), 0);
	ASSERT_EQ(gw_policy_conn_acquire(p), -EAGAIN);
	ASSERT_EQ(gw_policy_conns(p), 2);
	gw_policy_conn_release(p);
	ASSERT_EQ(gw_policy_conn_acquire(p), 0);
	gw_policy_conn_release(p);
	gw_policy_conn_release(p);
	ASSERT_EQ(gw_policy_conns(p), 0);
	ASSERT_EQ(gw_policy_set(p, "max_conns", "0", err, sizeof err), 0); /* no cap */
	for (int i = 0; i < 1000; i++)
		ASSERT_EQ(gw_policy_conn_acquire(p), 0);
	ASSERT_EQ(gw_policy_conns(p), 1000);
	gw_policy_free(p);
}

struct capw {
	gw_policy *p;
	atomic_int *live, *peak;
	int got, refused;
};

static void *
cap_worker(void *arg)
{
	struct capw *w = arg;
	for (int i = 0; i < 20000; i++) {
		if (gw_policy_conn_acquire(w->p) < 0) {
			w->refused++;
			continue;
		}
		w->got++;
		int now = atomic_fetch_add(w->live, 1) + 1;
		int pk = atomic_load(w->peak);
		while (now > pk && !atomic_compare_exchange_weak(w->peak, &pk, now))
			;
		atomic_fetch_sub(w->live, 1);
		gw_policy_conn_release(w->p);
	}
	return NULL;
}

TEST(conn_cap_threads)
{
	char err[128];
	gw_policy *p = gw_policy_new();
	ASSERT_EQ(gw_policy_set(p, "max_conns", "3", err, sizeof err), 0);
	atomic_int live = 0, peak = 0;
	struct capw w[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct capw){p, &live, &peak, 0, 0};
		ASSERT_EQ(pthread_create(&th[i], NULL, cap_worker, &w[i]), 0);
	}
	int got = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		got += w[i].got;
	}
	ASSERT_LE(atomic_load(&peak), 3);
	ASSERT_GT(got, 0);
	ASSERT_EQ(gw_policy_conns(p), 0);
	gw_policy_free(p);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
