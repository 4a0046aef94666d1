/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Out-of-line parts of kl_util.h: allocation wrappers that abort on OOM and
 * small whole-file helpers used for procfs and cgroupfs knobs.
 */
#include "kl_util.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>

static void
kl_oom(size_t n)
{
	fprintf(stderr, "kiln: out of memory allocating %zu bytes\n", n);
	abort();
}

void *
kl_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		kl_oom(n);
	return p;
}

void *
kl_xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		kl_oom(n * m);
	return p;
}

void *
kl_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		kl_oom(n);
	return q;
}

char *
kl_xstrdup(const char *s)
{
	return kl_xstrndup(s, strlen(s));
}

char *
kl_xstrndup(const char *s, size_t n)
{
	char *p = kl_xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *
kl_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		kl_oom(0);
	return s;
}

int
kl_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
kl_read_file_at(int dirfd, const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	size_t cap = max < 4096 ? max : 4096, len = 0;
	char *buf = kl_xmalloc(cap + 1);
	for (;;) {
		if (len == cap) {
			if (cap >= max)
				break;
			cap = cap * 2 > max ? max : cap * 2;
			buf = kl_xrealloc(buf, cap + 1);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			free(buf);
			return e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	*ret = buf;
	if (ret_len)
		*ret_len = len;
	return 0;
}

int
kl_write_file_at(int dirfd, const char *path, const char *s)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, s, strlen(s));
	if (n < 0)
		return -errno;
	return 0;
}
