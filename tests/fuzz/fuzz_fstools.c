/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_fstools: the file tools' pure helpers (node/fstools.h), which take
 * agent input straight from a ToolCall: paths, edit strings, view ranges,
 * insert positions, glob patterns and grep regexes. The first byte picks
 * the helper; the rest is cut into NUL-separated strings and integers
 * (fuzz.h's reader). Each helper is checked against an independent, naive
 * model or a property it promises:
 *
 *  0 fs_abs_path: the result is absolute, lexically clean and idempotent,
 *    fits the buffer, and a relative path never leaves the working directory;
 *  1 fs_glob_match: a path matches itself with every metacharacter escaped,
 *    also inside a {a,b} group and after **; * matches one segment; ** all;
 *  2 fs_regex_translate: errors are INVALID_ARGUMENT; a pattern made of
 *    escaped literals translates to a regex that glibc compiles and that
 *    matches the literal text; arbitrary translations are compiled too;
 *  3 fs_replace: equals a naive left-to-right replacement, with the
 *    documented errors for zero and several occurrences;
 *  4 fs_view_slice / fs_number_lines: the slice is inside the buffer, starts
 *    at line `start` and holds at most end - start + 1 lines; numbered lines
 *    are "%6d\t" prefixed and clipping keeps at most max_characters;
 *  5 fs_insert_lines: equals a naive line splice;
 *  6 fs_utf8_valid: agrees with a strict reference decoder;
 *  7 fs_count_occurrences: agrees with a naive count;
 *  8 fs_clip_text: the kept text is a prefix of at most max characters.
 */
#include "fuzz.h"

#include "fstools.h"

#include <limits.h>
#include <regex.h>

/* ---- 0: paths ---- */

static int
clean_abs(const char *p)
{
	if (p[0] != '/')
		return 0;
	if (!strcmp(p, "/"))
		return 1;
	if (p[strlen(p) - 1] == '/' || strstr(p, "//"))
		return 0;
	for (const char *s = p; *s; s = strchrnul(s + 1, '/')) {
		const char *e = strchrnul(s + 1, '/');
		size_t n = (size_t)(e - s - 1);
		if ((n == 1 && s[1] == '.') || (n == 2 && s[1] == '.' && s[2] == '.'))
			return 0;
	}
	return 1;
}

static void
abs_path_case(fz_reader *in)
{
	uint8_t cap = fz_u8(in);
	size_t outlen = cap ? (size_t)cap * 8 : PATH_MAX;
	char *workdir = fz_str(in, NULL), *path = fz_str(in, NULL);
	char *out = malloc(outlen);
	fs_result r = {0};
	int rc = fs_abs_path(workdir, path, out, outlen, &r);
	if (rc < 0) {
		FZ_CHECK(rc == -1 && r.code == KILN__CODE__INVALID_ARGUMENT && r.message &&
		                 *r.message,
		         "abs_path error %d code %d", rc, r.code);
		goto done;
	}
	FZ_CHECK(rc == 0 && strlen(out) < outlen, "abs_path %d, %zu of %zu bytes", rc, strlen(out),
	         outlen);
	FZ_CHECK(clean_abs(out), "'%s' -> '%s' is not clean", path, out);
	char again[PATH_MAX];
	fs_result r2 = {0};
	FZ_CHECK(fs_abs_path("/", out, again, sizeof again, &r2) == 0 && !strcmp(again, out),
	         "not idempotent: '%s'", out);
	if (path[0] != '/') {
		char wd[PATH_MAX] = "/";
		if (*workdir && fs_abs_path("/", workdir, wd, sizeof wd, &r2) < 0) {
			fs_result_fini(&r2);
			goto done;
		}
		size_t n = strlen(wd);
		FZ_CHECK(n == 1 || !strcmp(out, wd) || (!strncmp(out, wd, n) && out[n] == '/'),
		         "relative '%s' escaped '%s' to '%s'", path, wd, out);
	}
	fs_result_fini(&r2);
done:
	fs_result_fini(&r);
	free(out);
	free(workdir);
	free(path);
}

/* ---- 1: globs ---- */

/* A path as the walker produces it: relative, no empty segments. */
static int
walk_path(const char *p)
{
	return *p && p[0] != '/' && p[strlen(p) - 1] != '/' && !strstr(p, "//");
}

static char *
glob_escape(const char *pre, const char *path, const char *post)
{
	size_t n = strlen(path);
	char *s = malloc(strlen(pre) + 2 * n + strlen(post) + 1), *q = s;
	q = stpcpy(q, pre);
	for (const char *p = path; *p; p++) {
		if (strchr("*?[]{}\\,!^-", *p))
			*q++ = '\\';
		*q++ = *p;
	}
	strcpy(q, post);
	return s;
}

static void
glob_case(fz_reader *in)
{
	char *pat = fz_str(in, NULL), *path = fz_str(in, NULL);
	bool m = fs_glob_match(pat, path);
	(void)m;
	if (walk_path(path)) {
		static const char *const wrap[][2] = {{"", ""}, {"{", ",\x01}"}, {"**/", ""}};
		for (size_t i = 0; i < 3; i++) {
			char *e = glob_escape(wrap[i][0], path, wrap[i][1]);
			FZ_CHECK(fs_glob_match(e, path), "'%s' does not match '%s'", e, path);
			free(e);
		}
		FZ_CHECK(fs_glob_match("**", path), "** misses '%s'", path);
		FZ_CHECK(fs_glob_match("*", path) == !strchr(path, '/'), "* vs '%s'", path);
	}
	free(pat);
	free(path);
}

/* ---- 2: regexes ---- */

static void
regex_case(fz_reader *in)
{
	size_t plen, slen;
	char *pat = fz_str(in, &plen), *subj = fz_str(in, &slen);
	if (plen > 256 || slen > 256)
		goto out;
	char *ere = NULL;
	int cflags = 0;
	fs_result r = {0};
	if (fs_regex_translate(pat, &ere, &cflags, &r) < 0) {
		FZ_CHECK(r.code == KILN__CODE__INVALID_ARGUMENT && r.message &&
		                 !strncmp(r.message, "invalid regex", 13),
		         "translate error %d '%s'", r.code, r.message);
		fs_result_fini(&r);
	} else {
		FZ_CHECK(ere && (cflags & (REG_EXTENDED | REG_NEWLINE)) ==
		                         (REG_EXTENDED | REG_NEWLINE),
		         "flags %x", cflags);
		regex_t re;
		if (regcomp(&re, ere, cflags) == 0) {
			regexec(&re, subj, 0, NULL, 0);
			regfree(&re);
		}
		free(ere);
	}
	/* The subject as a pattern of literals: it must match itself. */
	if (strchr(subj, '\n'))
		goto out;
	char *lit = malloc(2 * slen + 1), *q = lit;
	for (const char *p = subj; *p; p++) {
		if (strchr(".[]{}()*+?^$|\\", *p))
			*q++ = '\\';
		*q++ = *p;
	}
	*q = 0;
	FZ_CHECK(fs_regex_translate(lit, &ere, &cflags, &r) == 0, "literal '%s' refused: %s", lit,
	         r.message);
	regex_t re;
	int rc = regcomp(&re, ere, cflags);
	FZ_CHECK(rc == 0, "literal '%s' -> '%s' does not compile: %d", lit, ere, rc);
	FZ_CHECK(regexec(&re, subj, 0, NULL, 0) == 0, "'%s' -> '%s' does not match '%s'", lit, ere,
	         subj);
	regfree(&re);
	free(ere);
	free(lit);
out:
	free(pat);
	free(subj);
}

/* ---- 3, 7: replace and count ---- */

static size_t
naive_count(const char *b, size_t n, const char *o, size_t on)
{
	size_t c = 0;
	for (size_t i = 0; on && i + on <= n;) {
		if (!memcmp(b + i, o, on)) {
			c++;
			i += on;
		} else {
			i++;
		}
	}
	return c;
}

static void
replace_case(fz_reader *in)
{
	bool all = fz_u8(in) & 1;
	size_t bl, ol, nl;
	char *buf = fz_str(in, &bl), *old = fz_str(in, &ol), *new_ = fz_str(in, &nl);
	char *out = NULL;
	size_t outlen = 0;
	uint32_t count = 0;
	fs_result r = {0};
	size_t n = naive_count(buf, bl, old, ol);
	FZ_CHECK(!ol || fs_count_occurrences(buf, bl, old, ol) == n, "count differs");
	int rc = fs_replace(buf, bl, old, ol, new_, nl, all, "f.txt", &out, &outlen, &count, &r);
	if (!ol || n == 0 || (n > 1 && !all)) {
		FZ_CHECK(rc == -1 && r.message, "expected a refusal (n=%zu all=%d)", n, all);
		FZ_CHECK(r.code == (ol ? KILN__CODE__TOOL_ERROR : KILN__CODE__INVALID_ARGUMENT),
		         "code %d", r.code);
		goto out;
	}
	FZ_CHECK(rc == 0 && count == n, "replace rc %d count %u of %zu", rc, count, n);
	char *want = malloc(bl + n * nl + 1), *q = want;
	for (size_t i = 0; i < bl;) {
		if (ol && i + ol <= bl && !memcmp(buf + i, old, ol)) {
			q = mempcpy(q, new_, nl);
			i += ol;
		} else {
			*q++ = buf[i++];
		}
	}
	FZ_CHECK(outlen == (size_t)(q - want) && !memcmp(out, want, outlen) && !out[outlen],
	         "replacement differs from the naive one");
	free(want);
out:
	fs_result_fini(&r);
	free(out);
	free(buf);
	free(old);
	free(new_);
}

/* ---- 4: view ranges and numbered views ---- */

static size_t
count_nl(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += s[i] == '\n';
	return c;
}

static void
view_case(fz_reader *in)
{
	uint8_t sel = fz_u8(in);
	size_t nrange = sel % 4;
	int64_t range[3] = {(int64_t)fz_u64(in, 8), (int64_t)fz_u64(in, 8), 0};
	if (sel & 4) { /* small numbers, where the lines are */
		range[0] = (int8_t)range[0];
		range[1] = (int8_t)range[1];
	}
	uint32_t max_chars = (uint32_t)fz_u64(in, 2);
	size_t len;
	char *buf = fz_str(in, &len);
	size_t off = 0, n = 0;
	fs_result r = {0};
	if (fs_view_slice(buf, len, range, nrange, &off, &n, &r) == 0) {
		FZ_CHECK(off <= len && n <= len - off, "slice %zu+%zu of %zu", off, n, len);
		FZ_CHECK(off == 0 || buf[off - 1] == '\n', "slice starts mid-line");
		if (nrange == 2) {
			FZ_CHECK(range[0] >= 1 && count_nl(buf, off) == (size_t)range[0] - 1,
			         "slice starts at the wrong line");
			if (range[1] > 0)
				FZ_CHECK(count_nl(buf + off, n) <= (uint64_t)(range[1] - range[0]),
				         "slice holds too many lines");
		} else {
			FZ_CHECK(nrange == 0 && off == 0 && n == len, "no range: whole buffer");
		}
	} else {
		FZ_CHECK(r.message && (r.code == KILN__CODE__INVALID_ARGUMENT ||
		                       r.code == KILN__CODE__TOOL_ERROR),
		         "view_slice error");
	}
	fs_result_fini(&r);
	if (fs_number_lines(buf, len, range, nrange, max_chars, &r) == 0) {
		FZ_CHECK(r.text && strlen(r.text) == r.text_len, "numbered text");
		if (!r.truncated) {
			FZ_CHECK(count_nl(r.text, r.text_len) ==
			                 count_nl(buf + off, n) + (n && buf[off + n - 1] != '\n'),
			         "numbered lines differ");
			for (const char *p = r.text; *p; p = strchr(p, '\n') + 1) {
				const char *tab = strchr(p, '\t');
				FZ_CHECK(tab && tab - p >= 6, "line without a number");
			}
		} else {
			FZ_CHECK(max_chars && strstr(r.text, "<response clipped>"), "clip note");
		}
	}
	fs_result_fini(&r);
	free(buf);
}

/* ---- 5: insert ---- */

static void
insert_case(fz_reader *in)
{
	int64_t after = (int8_t)fz_u8(in);
	size_t len, tl;
	char *buf = fz_str(in, &len), *text = fz_str(in, &tl);
	char *out = NULL;
	size_t outlen = 0;
	fs_result r = {0};
	size_t lines = count_nl(buf, len) + (len && buf[len - 1] != '\n');
	int rc = fs_insert_lines(buf, len, after, text, tl, &out, &outlen, &r);
	if (after < 0 || (uint64_t)after > lines) {
		FZ_CHECK(rc == -1 && r.code == KILN__CODE__TOOL_ERROR, "insert at %lld of %zu",
		         (long long)after, lines);
		goto out;
	}
	FZ_CHECK(rc == 0, "insert refused");
	/* Naive: the first `after` lines, the text as whole lines, the rest. */
	char *want = malloc(len + tl + 3), *q = want;
	size_t pos = 0;
	for (int64_t i = 0; i < after; i++) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		pos = nl ? (size_t)(nl - buf) + 1 : len;
	}
	q = mempcpy(q, buf, pos);
	if (pos == len && len && buf[len - 1] != '\n')
		*q++ = '\n';
	q = mempcpy(q, text, tl);
	if (!tl || text[tl - 1] != '\n')
		*q++ = '\n';
	q = mempcpy(q, buf + pos, len - pos);
	FZ_CHECK(outlen == (size_t)(q - want) && !memcmp(out, want, outlen) && !out[outlen],
	         "insert differs from the naive splice");
	free(want);
out:
	fs_result_fini(&r);
	free(out);
	free(buf);
	free(text);
}

/* ---- 6, 8: UTF-8 ---- */

/* RFC 3629, byte by byte. */
static bool
ref_utf8(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t k;
		uint8_t lo = 0x80, hi = 0xbf;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			if (c == 0xe0)
				lo = 0xa0;
			if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			if (c == 0xf0)
				lo = 0x90;
			if (c == 0xf4)
				hi = 0x8f;
		} else {
			return false;
		}
		if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t j = 2; j <= k; j++)
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
		i += k + 1;
	}
	return true;
}

static void
utf8_case(fz_reader *in)
{
	size_t n;
	uint8_t *b = fz_rest(in, &n);
	FZ_CHECK(fs_utf8_valid((const char *)b, n) == ref_utf8(b, n), "utf8 verdicts differ");
	free(b);
}

static size_t
chars(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((uint8_t)s[i] & 0xc0) != 0x80;
	return c;
}

static void
clip_case(fz_reader *in)
{
	uint32_t max = (uint32_t)fz_u64(in, 2);
	size_t n;
	fs_result r = {0};
	r.text = fz_str(in, &n);
	r.text_len = n;
	char *orig = malloc(n + 1);
	memcpy(orig, r.text, n + 1);
	fs_clip_text(&r, max);
	if (!max || chars(orig, n) <= max) {
		FZ_CHECK(!r.truncated && r.text_len == n && !memcmp(r.text, orig, n), "unclipped");
	} else {
		char note[256];
		snprintf(note, sizeof note,
		         "<response clipped><NOTE>Only the first %u characters are shown "
		         "(max_characters). Use view_range, or a narrower path, to see the "
		         "rest.</NOTE>\n",
		         max);
		size_t nn = strlen(note);
		FZ_CHECK(r.truncated && r.text_len >= nn && !strcmp(r.text + r.text_len - nn, note),
		         "clip without the note");
		/* What precedes the note: a prefix of the text, plus a '\n' when the
		 * prefix did not end a line. */
		size_t kept = r.text_len - nn;
		FZ_CHECK(kept >= 1 && r.text[kept - 1] == '\n', "no line break before the note");
		FZ_CHECK(!memcmp(r.text, orig, kept - 1), "kept text is not a prefix");
		FZ_CHECK(chars(orig, kept - 1) <= max, "kept %zu characters, max %u",
		         chars(orig, kept - 1), max);
	}
	fs_result_fini(&r);
	free(orig);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_reader in = {data, size};
	switch (fz_u8(&in) % 9) {
	case 0:
		abs_path_case(&in);
		break;
	case 1:
		glob_case(&in);
		break;
	case 2:
		regex_case(&in);
		break;
	case 3:
	case 7:
		replace_case(&in);
		break;
	case 4:
		view_case(&in);
		break;
	case 5:
		insert_case(&in);
		break;
	case 6:
		utf8_case(&in);
		break;
	default:
		clip_case(&in);
		break;
	}
	return 0;
}
