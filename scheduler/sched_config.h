/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's configuration: listen URLs, cluster tokens, timers, and the
 * tenants with their API tokens, weights, quotas and session limit caps. It is
 * read from an INI file (inih) by a strict loader: unknown sections and keys,
 * duplicate keys, malformed or out-of-range values and over-long lines are
 * errors that name the line, because a typo in a quota must never pass
 * silently. The format is documented in docs/config.md. `kiln dev` uses the
 * embedded default from sched_config_dev() instead of a file.
 */
#ifndef SCHED_CONFIG_H
#define SCHED_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.pb-c.h"

#define SCHED_TENANT_NAME_MAX 63  /* longest tenant name (it names a cgroup directory) */
#define SCHED_TOKEN_MAX       255 /* longest token, API, join or admin */
#define SCHED_WEIGHT_MAX      1000

typedef struct sched_tenant_cfg {
	char name[64];
	char token[256];        /* API token (token = ... or token_file = path, trimmed) */
	uint32_t weight;        /* default 1, 1..1000 */
	uint32_t max_sessions;  /* default 100 */
	uint32_t max_inflight;  /* calls queued+running, default 64 */
	uint32_t rate;          /* submits per second (token bucket), default 100; 0 = no limit */
	uint32_t burst;         /* default 2*rate */
	uint32_t queue_limit;   /* most calls waiting in the scheduler, default 4*max_inflight */
	Kiln__Limits max;       /* largest per-session limits; 0 fields = no cap */
	Kiln__Limits defaults;  /* for fields a request leaves 0; 0 = the node template's default */
	Kiln__Limits aggregate; /* all the tenant's sessions on one node together (0: none) */
} sched_tenant_cfg;

/* A secret kept on the cluster side: sessions reference it by name (an
 * environment value "kiln-secret:NAME"); the scheduler injects the value
 * and scrubs it from every output before it leaves (docs/secrets.md). */
typedef struct sched_secret_cfg {
	char name[64];
	char value[4096];
	char tenants[1024]; /* tenants allowed to use it: names separated by commas/blanks */
} sched_secret_cfg;

typedef struct sched_config {
	char node_url[256];         /* where nodes dial: default tcp://0.0.0.0:7070 */
	char client_url[256];       /* where clients connect: default tcp://127.0.0.1:7071 */
	char join_token[256];       /* join_token = / join_token_file = ; required unless dev */
	char admin_token[256];      /* admin_token = / admin_token_file = ; empty: no admin ops */
	uint32_t heartbeat_ms;      /* 1000 */
	uint32_t dead_after_ms;     /* 3000 */
	uint32_t poll_ms;           /* how long a node's work request is held, 5000 */
	uint32_t max_queued;        /* all tenants, 100000 */
	uint32_t idle_ttl_ms;       /* session idle TTL default, 30 min */
	uint32_t shutdown_grace_ms; /* 10000 */
	bool dev;                   /* made by sched_config_dev(): well-known tokens */
	char audit_log[4096]; /* hash-chained audit log of calls and admin actions ("": none) */
	char audit_fsync[32]; /* none | every | interval:MS (docs/audit.md); "" = every */
	int nsecrets;
	struct sched_secret_cfg *secrets; /* heap array */
	int ntenants;
	sched_tenant_cfg *tenants; /* heap array */
} sched_config;

/* Fill *c with the defaults above and no tenants. Needs no sched_config_fini()
 * until tenants are added, but calling it is always safe. */
void sched_config_init(sched_config *c);

/*
 * Load a configuration: the defaults, overridden by the file (or string).
 * On success *c is overwritten (it must not hold tenants: fini it first) and
 * the caller owns it; on failure *c is untouched.
 *
 * Relative token_file paths are resolved against the directory of `path`
 * (against the working directory for a string). The file may be at most
 * 1 MiB.
 *
 * Errors: -EINVAL for any problem with the content, including unreadable
 * token files, with a message in err such as
 * "config line 12: max_memory: not a size: '2X'" (the caller adds the path);
 * for load_file, -errno when the file itself cannot be read
 * ("config: cannot read '<path>': <strerror>"). err may be NULL.
 * Thread-safe: no global state is touched (inih's option globals included).
 */
int sched_config_load_file(const char *path, sched_config *c, char *err, size_t errlen);
int sched_config_load_string(const char *text, sched_config *c, char *err, size_t errlen);

/* The embedded default for `kiln dev`: tenant "dev" (token "kiln-dev-token", weight 1,
 * generous quotas, no rate limit), plus tenants "acme" (weight 2) and "globex"
 * (weight 1) used by the demo (tokens "kiln-dev-acme", "kiln-dev-globex", with
 * modest quotas and caps: acme max memory 2 GiB, globex 1 GiB), admin token
 * "kiln-dev-admin", join token "kiln-dev-join". Because those tokens are public,
 * nodes are listened for on loopback only (tcp://127.0.0.1:7070). Sets c->dev. */
void sched_config_dev(sched_config *c);

/* Free the tenants and wipe every token from memory. Accepts a zeroed or
 * already finalized config; leaves *c as after sched_config_init(). */
void sched_config_fini(sched_config *c);

/*
 * Value syntax shared with the CLI. All return 0 and write *ret on success,
 * -EINVAL for garbage (including signs and empty strings), -ERANGE when the
 * value does not fit 64 bits.
 *   size:     an integer or decimal with an optional binary unit: 512, 64K, 1.5G,
 *             2GiB, 4M (K/M/G/T = 2^10..2^40, case-insensitive, "B"/"iB" allowed);
 *             it must come to a whole number of bytes.
 *   duration: ms, s, m, h, with a plain number meaning seconds: 1500ms, 90s,
 *             1.5m, 2h, 30; the result, in ms, must be whole.
 *   cpu:      millicores (2000m) or CPUs (2, 0.5 = 500m); whole millicores.
 */
int sched_parse_size(const char *s, uint64_t *ret);
int sched_parse_duration_ms(const char *s, uint64_t *ret);
int sched_parse_cpu(const char *s, uint64_t *ret);

/* Exact, human forms for messages: "2 GiB", "1536 MiB", "123 bytes"; "10m",
 * "90s", "1500ms"; "2000m". Truncates to n like snprintf. */
void sched_fmt_size(uint64_t bytes, char *buf, size_t n);
void sched_fmt_duration(uint64_t ms, char *buf, size_t n);
void sched_fmt_cpu(uint64_t millicores, char *buf, size_t n);

#endif
