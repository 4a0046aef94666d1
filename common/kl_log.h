/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Structured logging for the daemons: `ts level component msg key=value ...`
 * on stderr. KL_LOG checks the level before formatting. Libraries return
 * errors; only daemons and their top-level loops log. Thread-safe (one write(2)
 * per line).
 */
#ifndef KL_LOG_H
#define KL_LOG_H

#include "kl_util.h"

enum kl_level { KL_ERROR = 0, KL_WARN = 1, KL_INFO = 2, KL_DEBUG = 3 };

extern int kl_log_level;

void kl_log_write(int level, const char *component, const char *fmt, ...) KL_PRINTF(3, 4);
/* Set from a name (error|warn|info|debug); returns -EINVAL for an unknown name. */
int kl_log_set_level(const char *name);

#define KL_LOG(level, component, ...)                                    \
	do {                                                             \
		if (kl_unlikely((level) <= kl_log_level))                \
			kl_log_write((level), (component), __VA_ARGS__); \
	} while (0)

#endif
