/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_cli_args: the kiln CLI's value parsers (scheduler/cli/args.c): sizes,
 * durations, CPU amounts, --limit specs and read's --range. The first byte
 * picks the parser, the rest is the argument.
 *
 * Invariants:
 *  - the CLI and the scheduler's config loader agree: where both accept the
 *    same size, duration (with an explicit unit) or CPU amount, they give the
 *    same value (the two parsers were written separately);
 *  - a number printed in decimal parses back to itself, with a K suffix to
 *    1024 times itself or -ERANGE;
 *  - a --limit spec gives the same limits as its comma-separated items
 *    applied one by one (later items win), and a refusal says why;
 *  - --range gives start >= 1 and end 0 (to the end), start (one line), or
 *    the number written after the colon.
 */
#include "fuzz.h"

#include "cli.h"
#include "sched_config.h"

#include <errno.h>
#include <inttypes.h>
#include <strings.h>

static int
has_suffix(const char *s, const char *const *sfx)
{
	size_t n = strlen(s);
	for (; *sfx; sfx++) {
		size_t k = strlen(*sfx);
		if (n > k && !strcasecmp(s + n - k, *sfx) && s[n - k - 1] >= '0' &&
		    s[n - k - 1] <= '9')
			return 1;
	}
	return 0;
}

static void
numbers_case(const char *s)
{
	uint64_t a = 0, b = 0;
	uint32_t a32 = 0;
	if (cli_parse_size(s, &a) == 0 && sched_parse_size(s, &b) == 0)
		FZ_CHECK(a == b, "size '%s': cli %" PRIu64 ", config %" PRIu64, s, a, b);
	static const char *const dur[] = {"ms", "s", "m", "h", NULL};
	if (has_suffix(s, dur) && cli_parse_duration_ms(s, &a32) == 0 &&
	    sched_parse_duration_ms(s, &b) == 0)
		FZ_CHECK(a32 == b, "duration '%s': cli %u, config %" PRIu64, s, a32, b);
	if (cli_parse_millicores(s, &a32) == 0 && sched_parse_cpu(s, &b) == 0)
		FZ_CHECK(a32 == b, "cpu '%s': cli %u, config %" PRIu64, s, a32, b);
}

static void
decimal_case(uint64_t v)
{
	char buf[32];
	uint64_t got = 0;
	snprintf(buf, sizeof buf, "%" PRIu64, v);
	FZ_CHECK(cli_parse_size(buf, &got) == 0 && got == v, "'%s' -> %" PRIu64, buf, got);
	snprintf(buf, sizeof buf, "%" PRIu64 "K", v);
	int r = cli_parse_size(buf, &got);
	if (v > UINT64_MAX / 1024)
		FZ_CHECK(r == -ERANGE, "'%s' overflows, got %d", buf, r);
	else
		FZ_CHECK(r == 0 && got == v * 1024, "'%s' -> %" PRIu64, buf, got);
}

static void
limits_case(const char *spec)
{
	Kiln__Limits whole = KILN__LIMITS__INIT, parts = KILN__LIMITS__INIT;
	char err[256] = "";
	int r = cli_parse_limits(spec, &whole, err, sizeof err);
	if (r < 0) {
		FZ_CHECK(r == -EINVAL && *err, "limits '%s': %d without a message", spec, r);
		return;
	}
	FZ_CHECK(r == 0, "limits returned %d", r);
	char *copy = strdup(spec), *save = NULL;
	for (char *it = strtok_r(copy, ",", &save); it; it = strtok_r(NULL, ",", &save))
		FZ_CHECK(cli_parse_limits(it, &parts, err, sizeof err) == 0,
		         "item '%s' of an accepted spec refused: %s", it, err);
	free(copy);
	FZ_CHECK(!memcmp(&whole, &parts, sizeof whole), "'%s': whole and items differ", spec);
}

static void
range_case(const char *s)
{
	int64_t a = 0, b = 0;
	if (cli_parse_range(s, &a, &b) < 0)
		return;
	FZ_CHECK(a >= 1, "range '%s' starts at %" PRId64, s, a);
	const char *colon = strchr(s, ':');
	if (!colon)
		FZ_CHECK(b == a, "'%s': one line, end %" PRId64, s, b);
	else if (!colon[1])
		FZ_CHECK(b == 0, "'%s': to the end, end %" PRId64, s, b);
	else
		FZ_CHECK(b == strtoll(colon + 1, NULL, 10), "'%s': end %" PRId64, s, b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_reader in = {data, size};
	uint8_t sel = fz_u8(&in);
	char *s = fz_str(&in, NULL);
	switch (sel % 4) {
	case 0: {
		numbers_case(s);
		uint64_t v = 0;
		memcpy(&v, s, strnlen(s, 8));
		decimal_case(v);
		decimal_case(v >> (v & 63));
		break;
	}
	case 1:
		limits_case(s);
		break;
	case 2:
		range_case(s);
		break;
	default:
		numbers_case(s);
		limits_case(s);
		break;
	}
	free(s);
	return 0;
}
