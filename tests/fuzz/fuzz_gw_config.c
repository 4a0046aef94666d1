/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_gw_config: kiln-gateway's config file (scheduler/gateway/gw_config.c)
 * and, through its [egress TENANT] sections, the egress policy keys
 * (gw_policy_set, gw_policy_parse_list). The input is the file's text,
 * loaded with gw_config_load_string from a per-process directory holding
 * two token files (join.token, acme.token) for the *_file keys.
 *
 * Invariants:
 *  - a refused file gets -EINVAL and a message naming it, and leaves no
 *    identities, routes or policies behind (LeakSanitizer sees the rest);
 *  - an accepted one has what gw_config_load promises: a control plane
 *    host:port, the three TLS files, a join token when egress_listen is
 *    set, a token for every identity, an upstream for every route, a
 *    result bound; every path is absolute (relative ones were taken from
 *    the config's directory);
 *  - section names are unique and each is found by its lookup
 *    (gw_config_identity, _route, _egress): a repeated section is one entry;
 *  - loading the same text again, and loading it from a file with
 *    gw_config_load, gives the same config (or the same error);
 *  - each tenant's policy decides an IP literal by name exactly as by
 *    address (gw_policy_check_host vs gw_policy_check_addr), always with a
 *    reason, and refuses names with control characters.
 */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>

#include "gw_config.h"

static const char *dir;
static char file[128];

static void
setup(void)
{
	if (dir)
		return;
	dir = fz_tmpdir();
	const char *files[][2] = {{"join.token", "j0in-token-0123456789abcdef\n"},
	                          {"acme.token", "kt_acme_0123456789\n"}};
	for (size_t i = 0; i < 2; i++) {
		char p[128];
		snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
		FILE *f = fopen(p, "w");
		FZ_CHECK(f && fputs(files[i][1], f) >= 0 && fclose(f) == 0, "writing %s", p);
	}
	snprintf(file, sizeof file, "%s/gateway.ini", dir);
}

static void
check_path(const char *what, const char *v)
{
	FZ_CHECK(!v[0] || v[0] == '/', "%s '%s' is relative", what, v);
}

/* IP literals: the name-level decision is the address-level one. */
static void
check_policy(const gw_policy *p)
{
	static const char *const ips[] = {"127.0.0.1",       "10.1.2.3", "8.8.8.8",
	                                  "169.254.169.254", "::1",      "2606:4700::1111",
	                                  "::ffff:10.0.0.1", "fd00::1"};
	static const uint16_t ports[] = {443, 80, 22};
	for (size_t i = 0; i < sizeof ips / sizeof *ips; i++) {
		for (size_t k = 0; k < 3; k++) {
			struct sockaddr_storage ss = {0};
			if (strchr(ips[i], ':')) {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
				s6->sin6_family = AF_INET6;
				s6->sin6_port = htons(ports[k]);
				inet_pton(AF_INET6, ips[i], &s6->sin6_addr);
			} else {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
				s4->sin_family = AF_INET;
				s4->sin_port = htons(ports[k]);
				inet_pton(AF_INET, ips[i], &s4->sin_addr);
			}
			gw_decision a = 2, b = 2;
			char ra[GW_REASON_LEN] = "", rb[GW_REASON_LEN] = "";
			FZ_CHECK(gw_policy_check_host(p, ips[i], ports[k], &a, ra, sizeof ra) == 0,
			         "check_host");
			FZ_CHECK(gw_policy_check_addr(p, ips[i], (struct sockaddr *)&ss, &b, rb,
			                              sizeof rb) == 0,
			         "check_addr");
			FZ_CHECK(a == b && !strcmp(ra, rb),
			         "%s port %u: by name %s (%s), by address %s (%s)", ips[i],
			         ports[k], gw_decision_name(a), ra, gw_decision_name(b), rb);
			FZ_CHECK(ra[0], "no reason for %s", ips[i]);
		}
	}
	static const char *const bad[] = {"evil\x01.example.com", "a\x1b[2J.com", "x y.com", ""};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		gw_decision d = 2;
		char r[GW_REASON_LEN] = "";
		FZ_CHECK(gw_policy_check_host(p, bad[i], 443, &d, r, sizeof r) == 0 &&
		                 d == GW_DENY && r[0],
		         "'%s' is %s", bad[i], gw_decision_name(d));
	}
}

static void
check_config(const gw_config *c)
{
	FZ_CHECK(c->plane_host[0] && c->plane_port, "no control plane");
	FZ_CHECK(c->ca_file[0] && c->cert_file[0] && c->key_file[0], "TLS files missing");
	FZ_CHECK(!c->egress_listen[0] || c->join_token[0], "egress_listen without a join token");
	FZ_CHECK(c->max_results >= 1, "max_results 0");
	check_path("ca_file", c->ca_file);
	check_path("cert_file", c->cert_file);
	check_path("key_file", c->key_file);
	check_path("audit_log", c->audit_log);
	check_path("journal", c->journal);
	for (int i = 0; i < c->nidentities; i++) {
		const gw_identity *id = &c->identities[i];
		FZ_CHECK(id->name[0] && id->token[0], "identity %d", i);
		FZ_CHECK(gw_config_identity(c, id->name) == id, "[identity %s] twice", id->name);
	}
	for (int i = 0; i < c->nroutes; i++) {
		const gw_route *r = &c->routes[i];
		FZ_CHECK(r->name[0] && r->host[0] && r->port, "route %d", i);
		FZ_CHECK(gw_config_route(c, r->name) == r, "[route %s] twice", r->name);
	}
	for (int i = 0; i < c->negress; i++) {
		const gw_egress_cfg *e = &c->egress[i];
		FZ_CHECK(e->tenant[0] && e->policy, "egress %d", i);
		FZ_CHECK(gw_config_egress(c, e->tenant) == e->policy, "[egress %s] twice",
		         e->tenant);
		check_policy(e->policy);
	}
}

static void
same_config(const gw_config *a, const gw_config *b)
{
	FZ_CHECK(!memcmp(a, b, offsetof(gw_config, identities)), "the same text loads differently");
	for (int i = 0; i < a->nidentities; i++)
		FZ_CHECK(!memcmp(&a->identities[i], &b->identities[i], sizeof *a->identities),
		         "identity %d differs", i);
	for (int i = 0; i < a->nroutes; i++)
		FZ_CHECK(!memcmp(&a->routes[i], &b->routes[i], sizeof *a->routes),
		         "route %d differs", i);
	for (int i = 0; i < a->negress; i++) {
		const gw_policy *p = a->egress[i].policy, *q = b->egress[i].policy;
		FZ_CHECK(!strcmp(a->egress[i].tenant, b->egress[i].tenant) &&
		                 gw_policy_max_conns(p) == gw_policy_max_conns(q) &&
		                 gw_policy_connect_timeout_ms(p) ==
		                         gw_policy_connect_timeout_ms(q) &&
		                 gw_policy_idle_timeout_ms(p) == gw_policy_idle_timeout_ms(q),
		         "egress %d differs", i);
	}
}

/* The *_file keys read files: keep the fuzzer off devices and kernel files. */
static bool
names_special_files(const uint8_t *d, size_t n)
{
	static const char *const bad[] = {"/dev", "/proc", "/sys", "/run"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		if (memmem(d, n, bad[i], strlen(bad[i])))
			return true;
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536 || names_special_files(data, size))
		return 0;
	setup();
	char *text = malloc(size ? size : 1); /* exact size: ASan sees reads past the end */
	memcpy(text, data, size);
	gw_config c, c2, c3;
	char err[1024] = "", err2[1024] = "", err3[1024] = "";
	int r = gw_config_load_string(text, size, "gateway.ini", dir, &c, err, sizeof err);
	FZ_CHECK(r == 0 || r == -EINVAL, "load: %d", r);
	int r2 = gw_config_load_string(text, size, "gateway.ini", dir, &c2, err2, sizeof err2);
	FZ_CHECK(r2 == r && !strcmp(err, err2), "loads differently: '%s' then '%s'", err, err2);
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FZ_CHECK(fd >= 0 && write(fd, text, size) == (ssize_t)size && close(fd) == 0, "write");
	int r3 = gw_config_load(file, &c3, err3, sizeof err3);
	size_t dl = strlen(dir) + 1;
	FZ_CHECK(r3 == r && (r == 0 || (!strncmp(err3, dir, dl - 1) && !strcmp(err3 + dl, err))),
	         "from a file: %d '%s', from text: %d '%s'", r3, err3, r, err);
	if (r < 0) {
		FZ_CHECK(!strncmp(err, "gateway.ini: ", 13) && err[13], "error '%s'", err);
		FZ_CHECK(!c.identities && !c.routes && !c.egress && !c.nidentities && !c.nroutes &&
		                 !c.negress,
		         "a refused config kept entries");
	} else {
		check_config(&c);
		same_config(&c, &c2);
		same_config(&c, &c3);
		gw_config_fini(&c);
		gw_config_fini(&c2);
		gw_config_fini(&c3);
	}
	free(text);
	return 0;
}
