/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every fuzz target shares: FZ_CHECK, an invariant that aborts with both
 * the expression and a message (libFuzzer then saves the input as a crash),
 * and fz_reader, which cuts a fuzz input into the pieces a target needs
 * (a selector byte, integers, NUL-separated strings) so that one input
 * drives a call with several arguments.
 */
#ifndef KILN_FUZZ_H
#define KILN_FUZZ_H

#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_CHECK(cond, ...)                                                                  \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "INVARIANT %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                        \
			fprintf(stderr, "\n");                                               \
			abort();                                                             \
		}                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_reader {
	const uint8_t *p;
	size_t n;
} fz_reader;

static inline uint8_t
fz_u8(fz_reader *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static inline uint64_t
fz_u64(fz_reader *r, int bytes)
{
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v = v << 8 | fz_u8(r);
	return v;
}

/* The next field, up to a NUL byte (or the end), as a fresh heap copy with
 * exactly len + 1 bytes, so ASan sees any read past its end. */
static inline char *
fz_str(fz_reader *r, size_t *ret_len)
{
	const uint8_t *e = r->n ? memchr(r->p, 0, r->n) : NULL;
	size_t len = e ? (size_t)(e - r->p) : r->n;
	char *s = malloc(len + 1);
	if (!s)
		abort();
	if (len)
		memcpy(s, r->p, len);
	s[len] = 0;
	r->p += len + (e != NULL);
	r->n -= len + (e != NULL);
	if (ret_len)
		*ret_len = len;
	return s;
}

/* The rest of the input as an exact-size heap copy (not NUL-terminated). */
static inline uint8_t *
fz_rest(fz_reader *r, size_t *ret_len)
{
	uint8_t *b = malloc(r->n ? r->n : 1);
	if (!b)
		abort();
	if (r->n)
		memcpy(b, r->p, r->n);
	*ret_len = r->n;
	r->p += r->n;
	r->n = 0;
	return b;
}

/* A directory of this process's own (under /dev/shm when there is one, so
 * that files cost no disk), removed with everything in it at exit. For the
 * targets whose code under test reads or writes files. */
static char fz_dir_path[64];

static inline int
fz_rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path); /* what cannot go stays: a leftover in a temp dir */
	return 0;
}

static inline void
fz_rm_dir(void)
{
	if (fz_dir_path[0])
		nftw(fz_dir_path, fz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline const char *
fz_tmpdir(void)
{
	if (fz_dir_path[0])
		return fz_dir_path;
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(fz_dir_path, sizeof fz_dir_path, "%s/kiln-fuzz-XXXXXX", base);
	if (!mkdtemp(fz_dir_path)) {
		perror("mkdtemp");
		abort();
	}
	atexit(fz_rm_dir);
	return fz_dir_path;
}

#endif
