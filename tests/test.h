/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln's test harness: libuv-style assertions that print both sides and the
 * location, a skip helper (exit 77, with the reason), and a tiny runner:
 *
 *     TEST(name) { ASSERT_EQ(1 + 1, 2); }
 *     int main(int argc, char **argv) { return kt_run(argc, argv); }
 *
 * Tests registered with TEST run in declaration order; `prog NAME` runs one.
 * A failed assertion aborts the process (so a sanitizer or core dump shows
 * the stack), printing the failing expression first.
 */
#ifndef KILN_TEST_H
#define KILN_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*kt_fn)(void);
struct kt_case {
	const char *name;
	kt_fn fn;
};

#define KT_MAX 256
extern struct kt_case kt_cases[KT_MAX];
extern int kt_ncases;

#define TEST(name)                                                                    \
	static void test_##name(void);                                                \
	__attribute__((constructor)) static void kt_register_##name(void)             \
	{                                                                             \
		if (kt_ncases < KT_MAX)                                               \
			kt_cases[kt_ncases++] = (struct kt_case){#name, test_##name}; \
	}                                                                             \
	static void test_##name(void)

#define KT_FAIL(...)                                                 \
	do {                                                         \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
		fprintf(stderr, __VA_ARGS__);                        \
		fprintf(stderr, "\n");                               \
		fflush(stderr);                                      \
		abort();                                             \
	} while (0)

#define ASSERT(c)                                  \
	do {                                       \
		if (!(c))                          \
			KT_FAIL("ASSERT(%s)", #c); \
	} while (0)

#define KT_CMP_INT(a, op, b)                                                    \
	do {                                                                    \
		long long _a = (long long)(a), _b = (long long)(b);             \
		if (!(_a op _b))                                                \
			KT_FAIL("%s %s %s: %lld vs %lld", #a, #op, #b, _a, _b); \
	} while (0)

#define ASSERT_EQ(a, b) KT_CMP_INT(a, ==, b)
#define ASSERT_NE(a, b) KT_CMP_INT(a, !=, b)
#define ASSERT_LT(a, b) KT_CMP_INT(a, <, b)
#define ASSERT_LE(a, b) KT_CMP_INT(a, <=, b)
#define ASSERT_GT(a, b) KT_CMP_INT(a, >, b)
#define ASSERT_GE(a, b) KT_CMP_INT(a, >=, b)

#define ASSERT_STR_EQ(a, b)                                                               \
	do {                                                                              \
		const char *_a = (a), *_b = (b);                                          \
		if (!_a || !_b || strcmp(_a, _b))                                         \
			KT_FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, _a ? _a : "(null)", \
			        _b ? _b : "(null)");                                      \
	} while (0)

#define ASSERT_CONTAINS(hay, needle)                                                       \
	do {                                                                               \
		const char *_h = (hay), *_n = (needle);                                    \
		if (!_h || !strstr(_h, _n))                                                \
			KT_FAIL("%s contains %s: \"%.2000s\" lacks \"%s\"", #hay, #needle, \
			        _h ? _h : "(null)", _n);                                   \
	} while (0)

#define ASSERT_NOT_CONTAINS(hay, needle)                                                       \
	do {                                                                                   \
		const char *_h = (hay), *_n = (needle);                                        \
		if (_h && strstr(_h, _n))                                                      \
			KT_FAIL("%s lacks %s: \"%.2000s\" has \"%s\"", #hay, #needle, _h, _n); \
	} while (0)

/* Skip the whole test program: prints why and exits 77 (ctest: skipped). */
#define KT_SKIP(...)                          \
	do {                                  \
		fprintf(stderr, "SKIP: ");    \
		fprintf(stderr, __VA_ARGS__); \
		fprintf(stderr, "\n");        \
		exit(77);                     \
	} while (0)

int kt_run(int argc, char **argv);

#endif
