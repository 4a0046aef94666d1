/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small helpers shared by every kiln component: cleanup attributes that keep
 * error paths short (systemd/bubblewrap style), steal_ptr, min/max, and
 * errno-preserving close. Header-only.
 */
#ifndef KL_UTIL_H
#define KL_UTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KL_ARRAY_SIZE(a)                   (sizeof(a) / sizeof((a)[0]))
#define KL_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define KL_MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define kl_likely(x)                       __builtin_expect(!!(x), 1)
#define kl_unlikely(x)                     __builtin_expect(!!(x), 0)
#define kl_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define KL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KL_UNUSED       __attribute__((unused))

static inline void
kl_freep(void *p)
{
	free(*(void **)p);
}

static inline void
kl_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

#define _cleanup_free_  __attribute__((cleanup(kl_freep)))
#define _cleanup_close_ __attribute__((cleanup(kl_closep)))

/* Take ownership out of a cleanup variable. */
#define steal_ptr(p)                      \
	({                                \
		__typeof__(p) _tmp = (p); \
		(p) = NULL;               \
		_tmp;                     \
	})
#define steal_fd(fd)             \
	({                       \
		int _tmp = (fd); \
		(fd) = -1;       \
		_tmp;            \
	})

/* Close if valid and set to -1. */
static inline void
kl_close(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Copy with truncation; always NUL-terminates when size > 0. Returns strlen(src). */
static inline size_t
kl_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);
	if (size) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = 0;
	}
	return n;
}

/* Constant-time comparison of two byte strings (length leaks, contents do not). */
static inline int
kl_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	const unsigned char *x = a, *y = b;
	size_t n = alen > blen ? alen : blen;
	unsigned char d = alen != blen;
	for (size_t i = 0; i < n; i++)
		d |= (i < alen ? x[i] : 0) ^ (i < blen ? y[i] : 0);
	return d == 0;
}

/* Allocation that never returns NULL: kiln aborts on OOM of its own small structures. */
void *kl_xmalloc(size_t n);
void *kl_xcalloc(size_t n, size_t m);
void *kl_xrealloc(void *p, size_t n);
char *kl_xstrdup(const char *s);
char *kl_xstrndup(const char *s, size_t n);
char *kl_xasprintf(const char *fmt, ...) KL_PRINTF(1, 2);

/* Write all of buf (retrying EINTR/short writes). 0 or -errno. */
int kl_write_all(int fd, const void *buf, size_t len);
/* Read a whole small file (at most max bytes) into a NUL-terminated heap buffer. */
int kl_read_file_at(int dirfd, const char *path, size_t max, char **ret, size_t *ret_len);
/* Write a short string to a file (e.g. a cgroup knob). 0 or -errno. */
int kl_write_file_at(int dirfd, const char *path, const char *s);

#endif
