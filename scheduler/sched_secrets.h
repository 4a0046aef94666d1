/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cluster-side secrets: resolved by reference ("kiln-secret:NAME" as an
 * environment value) for tenants allowed to use them, and scrubbed from
 * results before they leave the scheduler. See sched_secrets.c.
 */
#ifndef SCHED_SECRETS_H
#define SCHED_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.pb-c.h"
#include "sched_config.h"

#define SCHED_SECRET_PREFIX "kiln-secret:"

/* If value references a secret: 1 with *ret_value set and its bit added to
 * *mask; -EACCES (message in err) if tenant may not use it or it does not
 * exist; 0 if value is not a reference. */
int sched_secret_resolve(const sched_config *cfg, const char *tenant, const char *value,
                         const char **ret_value, uint64_t *mask, char *err, size_t errlen);
/* Resolve every reference among env entries (heap strings, replaced in place). */
int sched_secret_resolve_env(const sched_config *cfg, const char *tenant,
                             Kiln__SessionOpen__EnvEntry **env, size_t n, uint64_t *mask, char *err,
                             size_t errlen);
int sched_secret_resolve_exec_env(const sched_config *cfg, const char *tenant,
                                  Kiln__ExecInput__EnvEntry **env, size_t n, uint64_t *mask,
                                  char *err, size_t errlen);
/* Replace the masked secrets' values in r's output, stderr and message with
 * "[secret:NAME]". r's buffers must be heap (protobuf-c unpacked). */
bool sched_secret_scrub(const sched_config *cfg, uint64_t mask, Kiln__ToolResult *r);

#endif
