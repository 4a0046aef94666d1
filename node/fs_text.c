/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The file tools' pure text helpers: UTF-8 validation, view ranges, cat -n
 * numbering and max_characters clipping, line insertion and exact-string
 * replacement. No I/O and no global state, so the node's io_uring code can
 * use them around its own reads and writes; every size that an input could
 * inflate (replace_all, a long insert) is checked against FS_WRITE_MAX
 * before anything is allocated.
 */
#include "fstools.h"

#include "kl_util.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

bool
fs_utf8_valid(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *)buf, *e = s + len;
	while (s < e) {
		unsigned c = *s;
		if (c < 0x80) {
			s++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if ((size_t)(e - s) <= n)
			return false;
		for (size_t i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += n + 1;
	}
	return true;
}

/* Lines: the newline-terminated ones plus an unterminated tail. */
static size_t
count_lines(const char *buf, size_t len)
{
	size_t n = 0;
	for (const char *p = buf, *e = buf + len; p < e; n++) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		if (!nl)
			return n + 1;
		p = nl + 1;
	}
	return n;
}

/* Offset where line `line` (1-based) starts; len if the text is shorter. */
static size_t
line_offset(const char *buf, size_t len, uint64_t line)
{
	size_t off = 0;
	for (; line > 1 && off < len; line--) {
		const char *nl = memchr(buf + off, '\n', len - off);
		if (!nl)
			return len;
		off = (size_t)(nl - buf) + 1;
	}
	return off;
}

int
fs_view_slice(const char *buf, size_t len, const int64_t *range, size_t nrange, size_t *off,
              size_t *outlen, fs_result *r)
{
	if (nrange == 0) {
		*off = 0;
		*outlen = len;
		return 0;
	}
	if (nrange != 2) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT,
		        "Invalid `view_range`. It should be a list of two integers.");
		return -1;
	}
	int64_t start = range[0], end = range[1];
	size_t n = count_lines(buf, len);
	if (start < 1 || (uint64_t)start > KL_MAX(n, 1)) {
		fs_fail(r, start < 1 ? KILN__CODE__INVALID_ARGUMENT : KILN__CODE__TOOL_ERROR,
		        "Invalid `view_range`: [%" PRId64 ", %" PRId64
		        "]. Its first element `%" PRId64
		        "` should be within the range of lines of the file: [1, %zu]",
		        start, end, start, n);
		return -1;
	}
	if (end > 0 && end < start) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT,
		        "Invalid `view_range`: [%" PRId64 ", %" PRId64
		        "]. Its second element `%" PRId64
		        "` should be larger or equal than its first `%" PRId64 "`",
		        start, end, end, start);
		return -1;
	}
	size_t a = line_offset(buf, len, (uint64_t)start), b = len;
	/* Like the reference ("\n".join of the lines): the newline ending the
	 * last line shown is not part of a slice that stops before the end. */
	if (end > 0 && (uint64_t)end <= n) {
		b = line_offset(buf, len, (uint64_t)end + 1);
		if (b > a && buf[b - 1] == '\n')
			b--;
	}
	*off = a;
	*outlen = b - a;
	return 0;
}

static size_t
utf8_chars(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xc0) != 0x80;
	return c;
}

/* Bytes of s that hold at most max characters, cut at a character start. */
static size_t
utf8_prefix(const char *s, size_t n, size_t max)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++) {
		if (((unsigned char)s[i] & 0xc0) != 0x80 && c++ == max)
			return i;
	}
	return n;
}

void
fs_clip_text(fs_result *r, uint32_t max_chars)
{
	if (!max_chars || !r->text || utf8_chars(r->text, r->text_len) <= max_chars)
		return;
	size_t keep = utf8_prefix(r->text, r->text_len, max_chars);
	/* Whole lines when at least one fits: a half line reads as content. */
	const char *nl = memrchr(r->text, '\n', keep);
	if (nl)
		keep = (size_t)(nl - r->text) + 1;
	fs_buf b = {0};
	fs_buf_add(&b, r->text, keep);
	if (keep && r->text[keep - 1] != '\n')
		fs_buf_add(&b, "\n", 1);
	fs_buf_printf(&b,
	              "<response clipped><NOTE>Only the first %u characters are shown "
	              "(max_characters). Use view_range, or a narrower path, to see the "
	              "rest.</NOTE>\n",
	              max_chars);
	fs_buf_to_text(&b, r);
	r->truncated = true;
}

int
fs_number_lines(const char *buf, size_t len, const int64_t *range, size_t nrange,
                uint32_t max_chars, fs_result *r)
{
	size_t off, n;
	if (fs_view_slice(buf, len, range, nrange, &off, &n, r) < 0)
		return -1;
	int64_t line = nrange == 2 ? range[0] : 1;
	fs_buf b = {0};
	for (const char *p = buf + off, *e = p + n; p < e; line++) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		const char *le = nl ? nl : e;
		fs_buf_printf(&b, "%6" PRId64 "\t", line);
		fs_buf_add(&b, p, (size_t)(le - p));
		fs_buf_add(&b, "\n", 1);
		p = nl ? nl + 1 : e;
	}
	fs_buf_to_text(&b, r);
	fs_clip_text(r, max_chars);
	return 0;
}

int
fs_insert_lines(const char *buf, size_t len, int64_t after, const char *text, size_t textlen,
                char **out, size_t *outlen, fs_result *r)
{
	size_t n = count_lines(buf, len);
	if (after < 0 || (uint64_t)after > n) {
		fs_fail(r, KILN__CODE__TOOL_ERROR,
		        "Invalid `insert_line` parameter: %" PRId64
		        ". It should be within the range of lines of the file: [0, %zu]",
		        after, n);
		return -1;
	}
	size_t pos = line_offset(buf, len, (uint64_t)after + 1);
	/* The inserted text is whole lines: it ends with a newline, and the
	 * line it follows gets one if it was the file's unterminated last. */
	bool nl_before = pos == len && len && buf[len - 1] != '\n';
	bool nl_after = !textlen || text[textlen - 1] != '\n';
	size_t total = len + textlen + nl_before + nl_after;
	if (textlen > FS_WRITE_MAX || total > FS_WRITE_MAX) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "the result would be larger than %u MiB",
		        FS_WRITE_MAX >> 20);
		return -1;
	}
	char *o = kl_xmalloc(total + 1), *q = o;
	q = mempcpy(q, buf, pos);
	if (nl_before)
		*q++ = '\n';
	q = mempcpy(q, text, textlen);
	if (nl_after)
		*q++ = '\n';
	q = mempcpy(q, buf + pos, len - pos);
	*q = 0;
	*out = o;
	*outlen = total;
	return 0;
}

size_t
fs_count_occurrences(const char *buf, size_t len, const char *needle, size_t nlen)
{
	size_t n = 0;
	const char *p = buf, *e = buf + len;
	while ((size_t)(e - p) >= nlen) {
		const char *q = memmem(p, (size_t)(e - p), needle, nlen);
		if (!q)
			break;
		n++;
		p = q + nlen;
	}
	return n;
}

/* Size after nrep replacements, or -EFBIG past FS_WRITE_MAX (checked before
 * allocating: a 1-byte old_string and a long new one multiply quickly). */
static int
replaced_size(size_t len, size_t oldlen, size_t newlen, size_t nrep, size_t *ret)
{
	if (len > FS_WRITE_MAX || newlen > FS_WRITE_MAX)
		return -EFBIG;
	size_t base = len - nrep * oldlen;
	if (newlen && nrep > (FS_WRITE_MAX - base) / newlen)
		return -EFBIG;
	*ret = base + nrep * newlen;
	return 0;
}

static char *
replace_n(const char *buf, size_t len, const char *old, size_t oldlen, const char *new_,
          size_t newlen, size_t nrep, size_t outlen)
{
	char *out = kl_xmalloc(outlen + 1), *q = out;
	const char *p = buf, *e = buf + len;
	for (size_t i = 0; i < nrep; i++) {
		const char *m = memmem(p, (size_t)(e - p), old, oldlen);
		q = mempcpy(q, p, (size_t)(m - p));
		q = mempcpy(q, new_, newlen);
		p = m + oldlen;
	}
	q = mempcpy(q, p, (size_t)(e - p));
	*q = 0;
	return out;
}

int
fs_replace(const char *buf, size_t len, const char *old, size_t oldlen, const char *new_,
           size_t newlen, bool replace_all, const char *display_path, char **out, size_t *outlen,
           uint32_t *count, fs_result *r)
{
	if (!oldlen) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "old_string must not be empty");
		return -1;
	}
	size_t n = fs_count_occurrences(buf, len, old, oldlen);
	if (n == 0) {
		fs_fail(r, KILN__CODE__TOOL_ERROR, "old_string not found in %s", display_path);
		return -1;
	}
	if (n > 1 && !replace_all) {
		fs_fail(r, KILN__CODE__TOOL_ERROR,
		        "old_string appears %zu times in %s (must be unique); add context or set "
		        "replace_all",
		        n, display_path);
		return -1;
	}
	size_t nrep = replace_all ? n : 1, size;
	if (replaced_size(len, oldlen, newlen, nrep, &size) < 0) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "the result would be larger than %u MiB",
		        FS_WRITE_MAX >> 20);
		return -1;
	}
	*out = replace_n(buf, len, old, oldlen, new_, newlen, nrep, size);
	*outlen = size;
	*count = (uint32_t)KL_MIN(nrep, UINT32_MAX);
	return 0;
}
