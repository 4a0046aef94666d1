/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secrets on the cluster side (docs/secrets.md). A session or an exec call
 * references a secret by an environment value "kiln-secret:NAME"; the
 * scheduler checks the tenant may use it, puts the value in the request it
 * sends the node (inside the cluster), and scrubs every occurrence of the
 * value from the call's output, stderr and message before the result leaves
 * the scheduler -- to any client, the gateway's tunnel included. Values
 * therefore never cross the tunnel in either direction.
 */
#include "sched_secrets.h"

#include "kl_util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static bool
tenant_allowed(const sched_secret_cfg *sc, const char *tenant)
{
	size_t tl = strlen(tenant);
	const char *p = sc->tenants;
	while (*p) {
		while (*p && (*p == ',' || isspace((unsigned char)*p)))
			p++;
		size_t n = strcspn(p, ", \t");
		if (n == tl && !memcmp(p, tenant, n))
			return true;
		if ((n == 1 && *p == '*'))
			return true;
		p += n;
	}
	return false;
}

int
sched_secret_resolve(const sched_config *cfg, const char *tenant, const char *value,
                     const char **ret_value, uint64_t *mask, char *err, size_t errlen)
{
	if (strncmp(value, SCHED_SECRET_PREFIX, sizeof SCHED_SECRET_PREFIX - 1))
		return 0;
	const char *name = value + sizeof SCHED_SECRET_PREFIX - 1;
	for (int i = 0; i < cfg->nsecrets && i < 64; i++) {
		const sched_secret_cfg *sc = &cfg->secrets[i];
		if (strcmp(sc->name, name))
			continue;
		if (!tenant_allowed(sc, tenant))
			break;
		*ret_value = sc->value;
		*mask |= 1ull << i;
		return 1;
	}
	/* Unknown and not-allowed look the same: names of other tenants' secrets
	 * are not disclosed. */
	snprintf(err, errlen, "secret '%.64s' is not available to tenant %s", name, tenant);
	return -EACCES;
}

/* Both env entry types have the same layout after the message header. */
#define RESOLVE_ENV(env, n)                                                                        \
	for (size_t i = 0; i < (n); i++) {                                                         \
		const char *v;                                                                     \
		int r = sched_secret_resolve(cfg, tenant, (env)[i]->value, &v, mask, err, errlen); \
		if (r < 0)                                                                         \
			return r;                                                                  \
		if (r > 0) {                                                                       \
			free((env)[i]->value);                                                     \
			(env)[i]->value = kl_xstrdup(v);                                           \
		}                                                                                  \
	}                                                                                          \
	return 0

int
sched_secret_resolve_env(const sched_config *cfg, const char *tenant,
                         Kiln__SessionOpen__EnvEntry **env, size_t n, uint64_t *mask, char *err,
                         size_t errlen)
{
	RESOLVE_ENV(env, n);
}

int
sched_secret_resolve_exec_env(const sched_config *cfg, const char *tenant,
                              Kiln__ExecInput__EnvEntry **env, size_t n, uint64_t *mask, char *err,
                              size_t errlen)
{
	RESOLVE_ENV(env, n);
}

/* Replace every occurrence of each masked secret in buf; also a secret's
 * tail at the very start (a kept output tail may begin mid-secret). */
static bool
scrub_buf(const sched_config *cfg, uint64_t mask, uint8_t **data, size_t *len)
{
	bool changed = false;
	for (int i = 0; i < cfg->nsecrets && i < 64; i++) {
		if (!(mask & (1ull << i)) || !*data || !*len)
			continue;
		const sched_secret_cfg *sc = &cfg->secrets[i];
		size_t sl = strlen(sc->value);
		char repl[80];
		int rl = snprintf(repl, sizeof repl, "[secret:%s]", sc->name);
		/* A truncated head: the longest suffix of the value (>= 4) the buffer starts with.
		 */
		for (size_t k = sl - 1; k >= 4 && k < sl; k--) {
			if (*len >= k && !memcmp(*data, sc->value + sl - k, k)) {
				uint8_t *nb = kl_xmalloc(*len - k + (size_t)rl + 1);
				memcpy(nb, repl, (size_t)rl);
				memcpy(nb + rl, *data + k, *len - k);
				free(*data);
				*data = nb;
				*len = *len - k + (size_t)rl;
				changed = true;
				break;
			}
		}
		uint8_t *hit;
		size_t off = 0;
		while ((hit = memmem(*data + off, *len - off, sc->value, sl))) {
			size_t pos = (size_t)(hit - *data);
			uint8_t *nb = kl_xmalloc(*len - sl + (size_t)rl + 1);
			memcpy(nb, *data, pos);
			memcpy(nb + pos, repl, (size_t)rl);
			memcpy(nb + pos + rl, *data + pos + sl, *len - pos - sl);
			free(*data);
			*data = nb;
			*len = *len - sl + (size_t)rl;
			off = pos + (size_t)rl;
			changed = true;
		}
	}
	return changed;
}

bool
sched_secret_scrub(const sched_config *cfg, uint64_t mask, Kiln__ToolResult *r)
{
	if (!mask)
		return false;
	bool changed = scrub_buf(cfg, mask, &r->output.data, &r->output.len);
	changed |= scrub_buf(cfg, mask, &r->stderr.data, &r->stderr.len);
	if (r->message && *r->message) {
		size_t ml = strlen(r->message);
		uint8_t *m = (uint8_t *)kl_xstrndup(r->message, ml);
		if (scrub_buf(cfg, mask, &m, &ml)) {
			free(r->message);
			r->message = kl_xstrndup((char *)m, ml);
			changed = true;
		}
		free(m);
	}
	return changed;
}
