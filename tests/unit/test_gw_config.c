/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the gateway's config loader (scheduler/gateway/gw_config.c)
 * and its egress request parser (gw_egress_parse), including the regressions
 * fuzzing found (docs/fuzzing.md, findings 6-8): a repeated section adds to
 * the first instead of making an entry no lookup finds; a CONNECT target
 * with control bytes, or too long to keep whole, is not host:port.
 */
#include "test.h"

#include <errno.h>

#include "gw_config.h"
#include "gw_egress.h"
#include "gw_policy.h"
#include "kl_util.h"

static const char base[] = "[gateway]\n"
                           "control_plane = plane.example:443\n"
                           "ca_file = /etc/kiln/ca.crt\n"
                           "cert_file = /etc/kiln/gw.crt\n"
                           "key_file = /etc/kiln/gw.key\n"
                           "scheduler = tcp://127.0.0.1:7100\n"
                           "journal = gw.journal\n"
                           "journal_fsync = every\n"
                           "[identity acme]\n"
                           "token = t-acme\n";

static int
load(const char *extra, gw_config *c, char *err, size_t errlen)
{
	char *text = kl_xasprintf("%s%s", base, extra);
	int r = gw_config_load_string(text, strlen(text), "gw.ini", "/var/lib/kiln", c, err,
	                              errlen);
	free(text);
	return r;
}

TEST(loads_and_resolves_paths)
{
	gw_config c;
	char err[512] = "";
	if (load("", &c, err, sizeof err) < 0)
		KT_FAIL("%s", err);
	ASSERT_STR_EQ(c.plane_host, "plane.example");
	ASSERT_EQ(c.plane_port, 443);
	ASSERT_STR_EQ(c.journal, "/var/lib/kiln/gw.journal");
	ASSERT(c.journal_fsync);
	ASSERT(gw_config_identity(&c, "acme") != NULL);
	ASSERT(gw_config_identity(&c, "nobody") == NULL);
	gw_config_fini(&c);
}

TEST(refusals_name_the_line)
{
	gw_config c;
	char err[512] = "";
	ASSERT_EQ(load("[gateway]\njournal_fsync = sometimes\n", &c, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "gw.ini");
	ASSERT_CONTAINS(err, "journal_fsync");
	ASSERT_EQ(load("[gateway]\nnot_a_key = 1\n", &c, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "unknown key 'not_a_key'");
}

/* Finding 8: [egress acme] again after another [egress] section. */
TEST(repeated_section_adds_to_the_first)
{
	gw_config c;
	char err[512] = "";
	if (load("[egress acme]\nallow = *.example.org\n"
	         "[egress ci]\nallow = pypi.org\n"
	         "[egress acme]\ndeny = evil.example.org\n",
	         &c, err, sizeof err) < 0)
		KT_FAIL("%s", err);
	ASSERT_EQ(c.negress, 2);
	gw_policy *p = gw_config_egress(&c, "acme");
	ASSERT(p != NULL);
	gw_verdict v;
	gw_policy_decide(p, "evil.example.org", 443, &v);
	ASSERT_NE(v.decision, GW_ALLOW); /* the second section's deny counts */
	ASSERT_CONTAINS(v.reason, "deny");
	gw_config_fini(&c);
}

TEST(egress_parse)
{
	gw_egress_req r;
	ASSERT_EQ(gw_egress_parse("CONNECT pypi.org:443 HTTP/1.1\r\n"
	                          "X-Kiln-Node-Token: tok\r\nX-Kiln-Tenant: acme\r\n"
	                          "X-Kiln-Session: s-1\r\n\r\n",
	                          &r),
	          0);
	ASSERT_STR_EQ(r.host, "pypi.org");
	ASSERT_EQ(r.port, 443);
	ASSERT(r.has_token);
	ASSERT_STR_EQ(r.token, "tok");
	ASSERT_STR_EQ(r.tenant, "acme");
	ASSERT_STR_EQ(r.session, "s-1");
	ASSERT_EQ(gw_egress_parse("GET http://x/ HTTP/1.1\r\n\r\n", &r), -EBADMSG);
	/* No port, a port out of range: parsed, but not host:port. */
	ASSERT_EQ(gw_egress_parse("CONNECT pypi.org HTTP/1.1\r\n\r\n", &r), 0);
	ASSERT_EQ(r.port, 0);
	ASSERT_EQ(gw_egress_parse("CONNECT pypi.org:70000 HTTP/1.1\r\n\r\n", &r), 0);
	ASSERT_EQ(r.port, 0);
	/* Finding 6: DEL and ESC in the target never reach the policy or a log. */
	ASSERT_EQ(gw_egress_parse("CONNECT evil\x7f.org:443 HTTP/1.1\r\n\r\n", &r), 0);
	ASSERT_EQ(r.port, 0);
	ASSERT_EQ(gw_egress_parse("CONNECT a\x1b[2J.org:443 HTTP/1.1\r\n\r\n", &r), 0);
	ASSERT_EQ(r.port, 0);
	/* Finding 7: a target too long to keep whole is refused, not cut. */
	char head[1200];
	int n = snprintf(head, sizeof head, "CONNECT ");
	for (int i = 0; i < 600; i++)
		head[n++] = 'a';
	snprintf(head + n, sizeof head - (size_t)n, ".org:443 HTTP/1.1\r\n\r\n");
	ASSERT_EQ(gw_egress_parse(head, &r), 0);
	ASSERT_EQ(r.port, 0);
	ASSERT_STR_EQ(r.host, "");
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
