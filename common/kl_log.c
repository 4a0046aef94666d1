/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The log sink: formats one line per call into a stack buffer and writes it
 * with a single write(2) so lines from different threads never interleave.
 * KILN_LOG=debug|info|warn|error in the environment sets the initial level.
 */
#include "kl_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

int kl_log_level = KL_INFO;

static const char *const names[] = {"error", "warn", "info", "debug"};

__attribute__((constructor)) static void
kl_log_init(void)
{
	const char *e = getenv("KILN_LOG");
	if (e)
		kl_log_set_level(e);
}

int
kl_log_set_level(const char *name)
{
	for (size_t i = 0; i < KL_ARRAY_SIZE(names); i++) {
		if (!strcmp(name, names[i])) {
			kl_log_level = (int)i;
			return 0;
		}
	}
	return -EINVAL;
}

void
kl_log_write(int level, const char *component, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof line,
	                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
	                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	                 (long)(tv.tv_usec / 1000),
	                 names[level < 0   ? 0
	                       : level > 3 ? 3
	                                   : level],
	                 component);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : KL_MIN((size_t)m, sizeof line - (size_t)n - 2));
	line[len++] = '\n';
	kl_write_all(2, line, len);
}
