/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the file tools (node/fstools.c, fs_text.c, fs_walk.c). Each
 * test builds a fake sandbox in a mkdtemp directory: TOP/root is the sandbox
 * root (workspace/, etc/passwd, tmp/) and TOP/secret sits beside it, where no
 * tool may ever reach. Run as root (as CI does), the tools act as uid/gid
 * 12345 so ownership and permission checks are real; as another user they
 * act as that user. The /proc and /sys checks bind-mount them into the fake
 * root inside a private mount namespace in a child process.
 */
#include "test.h"

#include "fstools.h"
#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <regex.h>
#include <sched.h>
#include <signal.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SECRET "TOP SECRET: outside the sandbox\n"
#define PASSWD "root:x:0:0:fake sandbox root:/root:/bin/sh\n"

static struct {
	char top[64];
	char root[128];
	int rootfd;
	fs_root r;
} F;

static uid_t
t_uid(void)
{
	return geteuid() == 0 ? 12345 : geteuid();
}

static gid_t
t_gid(void)
{
	return geteuid() == 0 ? 12345 : getegid();
}

/* Host path of a path inside the fake root (a few rotating buffers). */
static const char *
hp(const char *rel)
{
	static char bufs[8][PATH_MAX];
	static int i;
	char *b = bufs[i++ % 8];
	snprintf(b, PATH_MAX, "%s/%s", F.root, rel);
	return b;
}

static void
host_mkdir(const char *rel, mode_t mode, bool own)
{
	ASSERT_EQ(mkdir(hp(rel), mode), 0);
	ASSERT_EQ(chmod(hp(rel), mode), 0);
	if (own)
		ASSERT_EQ(chown(hp(rel), t_uid(), t_gid()), 0);
}

static void
host_write_n(const char *rel, const void *data, size_t len, bool own)
{
	int fd = open(hp(rel), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(kl_write_all(fd, data, len), 0);
	if (own)
		ASSERT_EQ(fchown(fd, t_uid(), t_gid()), 0);
	close(fd);
}

static void
host_write(const char *rel, const char *s)
{
	host_write_n(rel, s, strlen(s), true);
}

/* Whole file as a heap string, or NULL if it cannot be read. */
static char *
host_read(const char *rel)
{
	char *buf = NULL;
	if (kl_read_file_at(AT_FDCWD, hp(rel), 64 << 20, &buf, NULL) < 0)
		return NULL;
	return buf;
}

static void
host_symlink(const char *target, const char *rel)
{
	ASSERT_EQ(symlink(target, hp(rel)), 0);
}

static void
set_mtime(const char *rel, time_t sec)
{
	struct timespec ts[2] = {{sec, 0}, {sec, 0}};
	ASSERT_EQ(utimensat(AT_FDCWD, hp(rel), ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void
fx_setup(void)
{
	snprintf(F.top, sizeof(F.top), "/tmp/kiln-fs-XXXXXX");
	ASSERT(mkdtemp(F.top));
	ASSERT_EQ(chmod(F.top, 0711), 0);
	snprintf(F.root, sizeof(F.root), "%s/root", F.top);
	ASSERT_EQ(mkdir(F.root, 0755), 0);
	ASSERT_EQ(chmod(F.root, 0755), 0);
	host_mkdir("workspace", 0755, true);
	host_mkdir("etc", 0755, false);
	host_write_n("etc/passwd", PASSWD, strlen(PASSWD), false);
	host_mkdir("tmp", 01777, false);
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/secret", F.top);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(kl_write_all(fd, SECRET, strlen(SECRET)), 0);
	close(fd);
	F.rootfd = open(F.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	ASSERT_GE(F.rootfd, 0);
	F.r = (fs_root){.rootfd = F.rootfd,
	                .uid = t_uid(),
	                .gid = t_gid(),
	                .workdir = "/workspace",
	                .fsync = true};
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void
fx_teardown(void)
{
	close(F.rootfd);
	ASSERT_EQ(nftw(F.top, rm_one, 64, FTW_DEPTH | FTW_PHYS), 0);
}

/* ---- tool call helpers ---- */

static fs_result
t_read(const char *path, int64_t a, int64_t b)
{
	int64_t range[2] = {a, b};
	Kiln__ReadInput in = KILN__READ_INPUT__INIT;
	in.file_path = (char *)path;
	if (a || b) {
		in.n_view_range = 2;
		in.view_range = range;
	}
	fs_result r;
	fs_tool_read(&F.r, &in, &r);
	return r;
}

static fs_result
t_write_n(const char *path, const void *data, size_t len)
{
	Kiln__WriteInput in = KILN__WRITE_INPUT__INIT;
	in.file_path = (char *)path;
	in.content.data = (uint8_t *)data;
	in.content.len = len;
	fs_result r;
	fs_tool_write(&F.r, &in, &r);
	return r;
}

static fs_result
t_write(const char *path, const char *s)
{
	return t_write_n(path, s, strlen(s));
}

static fs_result
t_edit(const char *path, const char *old, const char *new_, bool all)
{
	Kiln__EditInput in = KILN__EDIT_INPUT__INIT;
	in.file_path = (char *)path;
	in.old_string = (char *)old;
	in.new_string = (char *)new_;
	in.replace_all = all;
	fs_result r;
	fs_tool_edit(&F.r, &in, &r);
	return r;
}

static fs_result
t_glob(const char *pattern, const char *path)
{
	Kiln__GlobInput in = KILN__GLOB_INPUT__INIT;
	in.pattern = (char *)pattern;
	if (path)
		in.path = (char *)path;
	fs_result r;
	fs_tool_glob(&F.r, &in, &r);
	return r;
}

static fs_result
t_grep(const char *pattern, const char *path)
{
	Kiln__GrepInput in = KILN__GREP_INPUT__INIT;
	in.pattern = (char *)pattern;
	if (path)
		in.path = (char *)path;
	fs_result r;
	fs_tool_grep(&F.r, &in, &r);
	return r;
}

static fs_result
t_editor(Kiln__EditorInput *in)
{
	fs_result r;
	fs_tool_editor(&F.r, in, &r);
	return r;
}

#define ASSERT_OK(r)                                                         \
	do {                                                                 \
		if ((r).code != KILN__CODE__OK || (r).is_error)              \
			KT_FAIL("expected OK, got code %d: %s", (r).code,    \
			        (r).message ? (r).message : "(no message)"); \
	} while (0)

#define ASSERT_ERR(r, c, needle)                        \
	do {                                            \
		ASSERT_EQ((r).code, (c));               \
		ASSERT((r).is_error);                   \
		ASSERT_CONTAINS((r).message, (needle)); \
	} while (0)

static int
count_char(const char *s, char c)
{
	int n = 0;
	for (; s && *s; s++)
		n += *s == c;
	return n;
}

/* Any ".kiln-tmp-" file left in a directory of the fake root? */
static bool
has_tmp_files(const char *rel)
{
	fs_result r = t_glob("**/.kiln-tmp-*", rel);
	bool found = r.text && !strstr(r.text, "no matches");
	fs_result_fini(&r);
	return found;
}

/* ---- pure helpers ---- */

TEST(abs_path_cleaning_and_escapes)
{
	char out[PATH_MAX];
	fs_result r = {0};
	ASSERT_EQ(fs_abs_path("/workspace", "a//b/./c", out, sizeof(out), &r), 0);
	ASSERT_STR_EQ(out, "/workspace/a/b/c");
	ASSERT_EQ(fs_abs_path("/workspace", "a/../b/", out, sizeof(out), &r), 0);
	ASSERT_STR_EQ(out, "/workspace/b");
	ASSERT_EQ(fs_abs_path("/workspace", "/x/../y", out, sizeof(out), &r), 0);
	ASSERT_STR_EQ(out, "/y");
	/* Absolute paths are clamped to the sandbox root, lexically too. */
	ASSERT_EQ(fs_abs_path("/workspace", "/../../secret", out, sizeof(out), &r), 0);
	ASSERT_STR_EQ(out, "/secret");
	ASSERT_EQ(fs_abs_path("/workspace", ".", out, sizeof(out), &r), 0);
	ASSERT_STR_EQ(out, "/workspace");
	ASSERT_EQ(fs_abs_path("/", "../x", out, sizeof(out), &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "path escapes the working directory");
	fs_result_fini(&r);
	ASSERT_EQ(fs_abs_path("/workspace", "../../secret", out, sizeof(out), &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "../../secret: path escapes the working");
	fs_result_fini(&r);
	/* Climbing out and back in is still an escape attempt. */
	ASSERT_EQ(fs_abs_path("/workspace", "a/../../workspace/x", out, sizeof(out), &r), -1);
	fs_result_fini(&r);
	ASSERT_EQ(fs_abs_path("/workspace", "", out, sizeof(out), &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "path is empty");
	fs_result_fini(&r);
	char *lng = kl_xmalloc(10001);
	memset(lng, 'a', 10000);
	lng[10000] = 0;
	ASSERT_EQ(fs_abs_path("/workspace", lng, out, sizeof(out), &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "longer than");
	fs_result_fini(&r);
	lng[300] = 0; /* one component longer than NAME_MAX */
	ASSERT_EQ(fs_abs_path("/workspace", lng, out, sizeof(out), &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "file name too long");
	fs_result_fini(&r);
	free(lng);
	/* The output buffer is respected. */
	char small[8];
	ASSERT_EQ(fs_abs_path("/workspace", "abc", small, sizeof(small), &r), -1);
	fs_result_fini(&r);
}

TEST(utf8_validation)
{
	ASSERT(fs_utf8_valid("plain ascii\n", 12));
	ASSERT(fs_utf8_valid("", 0));
	ASSERT(fs_utf8_valid("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 12));
	ASSERT(!fs_utf8_valid("\xc0\x80", 2));         /* overlong NUL */
	ASSERT(!fs_utf8_valid("\xe0\x80\xaf", 3));     /* overlong '/' */
	ASSERT(!fs_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
	ASSERT(!fs_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	ASSERT(!fs_utf8_valid("\xe2\x82", 2));         /* truncated */
	ASSERT(!fs_utf8_valid("a\x80", 2));            /* stray continuation */
	ASSERT(!fs_utf8_valid("\xff", 1));
	ASSERT(fs_utf8_valid("a\0b", 3)); /* NUL is valid UTF-8 */
}

static char *
slice(const char *buf, const int64_t *range, size_t n, fs_result *r)
{
	size_t off, len;
	if (fs_view_slice(buf, strlen(buf), range, n, &off, &len, r) < 0)
		return NULL;
	return kl_xstrndup(buf + off, len);
}

TEST(view_ranges)
{
	const char *t = "a\nb\nc\n";
	fs_result r = {0};
	char *s;
#define SLICE_IS(a, b, want)             \
	do {                             \
		int64_t rg[2] = {a, b};  \
		s = slice(t, rg, 2, &r); \
		ASSERT_STR_EQ(s, want);  \
		free(s);                 \
	} while (0)
	SLICE_IS(1, 2, "a\nb");
	SLICE_IS(2, -1, "b\nc\n");
	SLICE_IS(2, 0, "b\nc\n");
	SLICE_IS(3, 3, "c");
	SLICE_IS(2, 10, "b\nc\n"); /* end past the end: clamped */
	t = "a\nb";
	SLICE_IS(2, 2, "b");
	t = "";
	SLICE_IS(1, -1, "");
	t = "a\nb\nc\n";
	int64_t bad1[2] = {0, 1}, bad2[2] = {4, 5}, bad3[2] = {3, 2}, one[1] = {1};
	int64_t huge[2] = {INT64_MAX, INT64_MIN};
	ASSERT(!slice(t, bad1, 2, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "first element `0`");
	ASSERT(!slice(t, bad2, 2, &r));
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "[1, 3]");
	ASSERT(!slice(t, bad3, 2, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "second element `2`");
	ASSERT(!slice(t, one, 1, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "list of two integers");
	ASSERT(!slice(t, huge, 2, &r));
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "9223372036854775807");
	s = slice(t, NULL, 0, &r);
	ASSERT_STR_EQ(s, t);
	free(s);
	fs_result_fini(&r);
#undef SLICE_IS
}

TEST(numbered_lines_and_clipping)
{
	fs_result r = {0};
	ASSERT_EQ(fs_number_lines("a\nb\n", 4, NULL, 0, 0, &r), 0);
	ASSERT_STR_EQ(r.text, "     1\ta\n     2\tb\n");
	ASSERT_EQ(r.text_len, strlen(r.text));
	fs_result_fini(&r);
	int64_t rg[2] = {2, 3};
	ASSERT_EQ(fs_number_lines("a\nb\nc\nd", 7, rg, 2, 0, &r), 0);
	ASSERT_STR_EQ(r.text, "     2\tb\n     3\tc\n");
	ASSERT(!r.truncated);
	fs_result_fini(&r);
	/* 100 numbered lines of 15 characters: a 64-character cap keeps 4. */
	fs_buf b = {0};
	for (int i = 0; i < 100; i++)
		fs_buf_printf(&b, "line %02d\n", i);
	ASSERT_EQ(fs_number_lines(b.p, b.len, NULL, 0, 64, &r), 0);
	ASSERT(r.truncated);
	ASSERT_CONTAINS(r.text, "     4\tline 03\n<response clipped>");
	ASSERT_NOT_CONTAINS(r.text, "line 04");
	fs_result_fini(&r);
	/* Characters, not bytes: "é" is one. */
	r.text = kl_xstrdup("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
	r.text_len = 8;
	fs_clip_text(&r, 4);
	ASSERT(!r.truncated);
	fs_clip_text(&r, 3);
	ASSERT(r.truncated);
	ASSERT_EQ(strncmp(r.text, "\xc3\xa9\xc3\xa9\xc3\xa9\n<response clipped>", 25), 0);
	fs_result_fini(&r);
	fs_buf_fini(&b);
}

static char *
ins(const char *buf, int64_t after, const char *text, fs_result *r)
{
	char *out;
	size_t len;
	if (fs_insert_lines(buf, strlen(buf), after, text, strlen(text), &out, &len, r) < 0)
		return NULL;
	ASSERT_EQ(len, strlen(out));
	return out;
}

TEST(insert_lines)
{
	fs_result r = {0};
	char *s;
	ASSERT_STR_EQ(s = ins("a\nb\n", 0, "x", &r), "x\na\nb\n");
	free(s);
	ASSERT_STR_EQ(s = ins("a\nb\n", 1, "x\n", &r), "a\nx\nb\n");
	free(s);
	ASSERT_STR_EQ(s = ins("a\nb\n", 2, "x\ny", &r), "a\nb\nx\ny\n");
	free(s);
	ASSERT_STR_EQ(s = ins("a\nb", 2, "x", &r), "a\nb\nx\n");
	free(s);
	ASSERT_STR_EQ(s = ins("", 0, "x", &r), "x\n");
	free(s);
	ASSERT(!ins("a\nb\n", 3, "x", &r));
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "[0, 2]");
	ASSERT(!ins("a\n", -1, "x", &r));
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "`insert_line` parameter: -1");
	ASSERT(!ins("a\n", INT64_MIN, "x", &r));
	fs_result_fini(&r);
}

TEST(replace_rules)
{
	fs_result r = {0};
	char *out;
	size_t len;
	uint32_t n = 99;
	const char *t = "foo bar foo baz foo";
	ASSERT_EQ(fs_replace(t, strlen(t), "bar", 3, "BAR", 3, false, "f.txt", &out, &len, &n, &r),
	          0);
	ASSERT_STR_EQ(out, "foo BAR foo baz foo");
	ASSERT_EQ(n, 1);
	free(out);
	ASSERT_EQ(fs_replace(t, strlen(t), "foo", 3, "x", 1, false, "f.txt", &out, &len, &n, &r),
	          -1);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR,
	           "old_string appears 3 times in f.txt (must be unique)");
	ASSERT_EQ(fs_replace(t, strlen(t), "qux", 3, "x", 1, false, "f.txt", &out, &len, &n, &r),
	          -1);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "old_string not found in f.txt");
	ASSERT_EQ(fs_replace(t, strlen(t), "", 0, "x", 1, true, "f.txt", &out, &len, &n, &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "must not be empty");
	ASSERT_EQ(fs_replace(t, strlen(t), "foo", 3, "", 0, true, "f.txt", &out, &len, &n, &r), 0);
	ASSERT_STR_EQ(out, " bar  baz ");
	ASSERT_EQ(len, 10);
	ASSERT_EQ(n, 3);
	free(out);
	/* Non-overlapping, left to right, like Python's count/replace. */
	ASSERT_EQ(fs_count_occurrences("aaaa", 4, "aa", 2), 2);
	ASSERT_EQ(fs_replace("aaa", 3, "aa", 2, "b", 1, true, "f", &out, &len, &n, &r), 0);
	ASSERT_STR_EQ(out, "ba");
	free(out);
	/* A size blow-up is refused before anything is allocated. */
	size_t big = 1 << 20;
	char *nw = kl_xmalloc(big);
	memset(nw, 'x', big);
	char hundred[101];
	memset(hundred, 'a', 100);
	hundred[100] = 0;
	ASSERT_EQ(fs_replace(hundred, 100, "a", 1, nw, big, true, "f", &out, &len, &n, &r), -1);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "larger than 64 MiB");
	free(nw);
	fs_result_fini(&r);
}

TEST(glob_matching)
{
	static const struct {
		const char *pat, *path;
		bool want;
	} cases[] = {
	        {"**/*.c", "a.c", true},
	        {"**/*.c", "x/y/a.c", true},
	        {"**/*.c", "x/y/a.h", false},
	        {"*.c", "a.c", true},
	        {"*.c", "x/a.c", false},
	        {"src/**", "src", true},
	        {"src/**", "src/a/b", true},
	        {"src/**", "srcx/a", false},
	        {"a/**/b", "a/b", true},
	        {"a/**/b", "a/x/y/b", true},
	        {"a/**/b", "a/x/y/c", false},
	        {"**/x/**/y", "p/x/q/r/y", true},
	        {"?.c", "ab.c", false},
	        {"?.c", "\xc3\xa9.c", true}, /* one character, two bytes */
	        {"[a-c].txt", "b.txt", true},
	        {"[a-c].txt", "d.txt", false},
	        {"[!a].txt", "a.txt", false},
	        {"[!a].txt", "b.txt", true},
	        {"[]].txt", "].txt", true},
	        {"*", ".hidden", true},
	        {"**", "a/.git/config", true},
	        {"{a,b}/*.{c,h}", "b/x.h", true},
	        {"{a,b}/*.{c,h}", "c/x.h", false},
	        {"{src,lib/x}/*.c", "lib/x/m.c", true},
	        {"{a}.c", "{a}.c", true},
	        {"\\*.c", "*.c", true},
	        {"\\*.c", "a.c", false},
	        {"a*b*c", "aXbYc", true},
	        {"a*b*c", "aXbY", false},
	        {"[", "[", true},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(cases); i++) {
		if (fs_glob_match(cases[i].pat, cases[i].path) != cases[i].want)
			KT_FAIL("fs_glob_match(\"%s\", \"%s\") != %d", cases[i].pat, cases[i].path,
			        cases[i].want);
	}
	/* No exponential backtracking. */
	char pat[256], path[256];
	snprintf(pat, sizeof(pat), "%s", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b");
	memset(path, 'a', 200);
	path[200] = 0;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	ASSERT(!fs_glob_match(pat, path));
	clock_gettime(CLOCK_MONOTONIC, &b);
	ASSERT_LT(b.tv_sec - a.tv_sec, 2);
	/* A pattern that would expand past the budget matches nothing. */
	ASSERT(!fs_glob_match("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}x", "abababababx"));
}

static char *
tr(const char *pat, int *cflags, fs_result *r)
{
	char *out = NULL;
	if (fs_regex_translate(pat, &out, cflags, r) < 0)
		return NULL;
	return out;
}

TEST(regex_dialect)
{
	fs_result r = {0};
	int cf = 0;
	char *s;
#define TR_IS(pat, want)                \
	do {                            \
		s = tr(pat, &cf, &r);   \
		ASSERT_STR_EQ(s, want); \
		free(s);                \
	} while (0)
	TR_IS("\\d+", "[0-9]+");
	TR_IS("\\D", "[^0-9]");
	TR_IS("(?:ab)+c", "(ab)+c");
	TR_IS("a+?b", "a+b");
	TR_IS("a{2,3}?b", "a{2,3}b");
	TR_IS("x}?", "x}?");
	TR_IS("[\\d_]", "[0-9_]");
	TR_IS("[^\\s\\]x]", "[^][:space:]x]");
	TR_IS("[a\\-z]", "[az-]");
	TR_IS("\\x41\\x2e", "A\\.");
	TR_IS("\\w+\\s", "\\w+\\s");
	TR_IS("a\\tb", "a\tb");
	ASSERT_EQ(cf, REG_EXTENDED | REG_NEWLINE);
	TR_IS("(?i)foo", "foo");
	ASSERT_EQ(cf, REG_EXTENDED | REG_NEWLINE | REG_ICASE);
	ASSERT(!tr("(?=x)", &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "look-around");
	ASSERT(!tr("a(?i)b", &cf, &r));
	ASSERT(!tr("\\p{L}", &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "Unicode classes");
	ASSERT(!tr("[abc", &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "unterminated");
	ASSERT(!tr("\\xZZ", &cf, &r));
	ASSERT(!tr("a\\x00", &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "malformed \\x escape");
	fs_result_fini(&r);
#undef TR_IS
}

/* Regression (fuzz_fstools): glibc's regcomp overflowed the worker's stack
 * on deeply nested or stacked patterns (the node died), took minutes on
 * nested repetitions, and regexec is exponential with back-references; grep
 * workers are shared by every tenant. The translator bounds all of them. */
TEST(regex_bounds)
{
	fs_result r = {0};
	int cf = 0;
	char *big = malloc(200002), *s;
	memset(big, '*', 200001);
	big[0] = 'a';
	big[200001] = 0;
	ASSERT(!tr(big, &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "longer than 4096 bytes");
	big[3000] = 0; /* "a*****...": stacked quantifiers */
	ASSERT(!tr(big, &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "a quantifier cannot follow another");
	ASSERT(!tr("a+?*", &cf, &r));
	ASSERT(!tr("a+{2}", &cf, &r));
	memset(big, '(', 2000); /* "(((((...a" */
	big[2000] = 'a';
	big[2001] = 0;
	ASSERT(!tr(big, &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "nested too deeply");
	ASSERT(!tr("(a*){3000}", &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "too large once its repetitions");
	ASSERT(!tr("((a{100}){100}){100}", &cf, &r));
	ASSERT(!tr("[0-9]++++++++++++++++++++w", &cf, &r));
	ASSERT(!tr("(.*)(.*)\\2\\1", &cf, &r));
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "back-references");
	/* What agents write still passes, lazy marks included. */
	static const char *const ok[] = {
	        "^\\s*(pub\\s+)?fn\\s+\\w+",
	        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
	        "x{500}",
	        "(foo|bar|baz)+?qux",
	        "a{2,3}?b*?c??",
	        "((a|b)c)*d",
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(ok); i++) {
		s = tr(ok[i], &cf, &r);
		ASSERT(s != NULL);
		regex_t re;
		ASSERT_EQ(regcomp(&re, s, cf), 0);
		regfree(&re);
		free(s);
	}
	fs_result_fini(&r);
	free(big);
}

/* ---- read ---- */

TEST(read_files)
{
	fx_setup();
	host_write("workspace/hello.txt", "one\ntwo\nthree\n");
	fs_result r = t_read("hello.txt", 0, 0);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "one\ntwo\nthree\n");
	ASSERT_EQ(r.text_len, 14);
	fs_result_fini(&r);
	r = t_read("/workspace/./hello.txt", 2, 3);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "two\nthree");
	fs_result_fini(&r);
	r = t_read("hello.txt", 2, -1);
	ASSERT_STR_EQ(r.text, "two\nthree\n");
	fs_result_fini(&r);
	r = t_read("hello.txt", 9, 10);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "read: Invalid `view_range`");
	fs_result_fini(&r);
	host_write("workspace/empty", "");
	r = t_read("empty", 0, 0);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "");
	fs_result_fini(&r);
	/* The public building block: an fd and the size. */
	int fd = -1;
	size_t size = 0;
	ASSERT_EQ(fs_open_read(&F.r, "/workspace/hello.txt", 0, &fd, &size, &r), 0);
	ASSERT_EQ(size, 14);
	char buf[32] = {0};
	ASSERT_EQ(read(fd, buf, sizeof(buf)), 14);
	close(fd);
	ASSERT_EQ(fs_open_read(&F.r, "/workspace/hello.txt", 10, &fd, &size, &r), -1);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "larger than 10 bytes");
	fs_result_fini(&r);
	fx_teardown();
}

TEST(read_errors)
{
	fx_setup();
	fs_result r = t_read("nope.txt", 0, 0);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "read: nope.txt: no such file or directory");
	fs_result_fini(&r);
	host_mkdir("workspace/dir", 0755, true);
	r = t_read("dir", 0, 0);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "read: dir: is a directory");
	fs_result_fini(&r);
	host_write_n("workspace/latin1.txt", "caf\xe9\n", 5, true);
	r = t_read("latin1.txt", 0, 0);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not valid UTF-8");
	fs_result_fini(&r);
	/* The size limit applies to the whole file, even with a view_range. */
	size_t n = FS_READ_MAX + 1;
	char *big = kl_xmalloc(n);
	memset(big, 'x', n);
	host_write_n("workspace/big.txt", big, n, true);
	host_write_n("workspace/exact.txt", big, n - 1, true);
	free(big);
	r = t_read("big.txt", 1, 1);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "larger than 256 KiB (262145 bytes)");
	ASSERT_CONTAINS(r.message, "head, tail or sed");
	fs_result_fini(&r);
	r = t_read("exact.txt", 0, 0);
	ASSERT_OK(r);
	ASSERT_EQ(r.text_len, FS_READ_MAX);
	fs_result_fini(&r);
	r = t_read("../../secret", 0, 0);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "read: ../../secret: path escapes");
	fs_result_fini(&r);
	r = t_read("", 0, 0);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "read: path is empty");
	fs_result_fini(&r);
	/* Unreadable for the sandbox user (only meaningful when we are root). */
	if (geteuid() == 0) {
		host_write_n("workspace/root-only", "x", 1, false);
		ASSERT_EQ(chmod(hp("workspace/root-only"), 0600), 0);
		r = t_read("root-only", 0, 0);
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "permission denied");
		fs_result_fini(&r);
	}
	fx_teardown();
}

static void
alarm_handler(int sig)
{
	(void)sig;
	static const char msg[] = "FAIL: a file tool blocked (FIFO opened?)\n";
	ssize_t n = write(2, msg, sizeof(msg) - 1);
	(void)n;
	_exit(1);
}

TEST(fifo_and_device_are_never_opened)
{
	fx_setup();
	signal(SIGALRM, alarm_handler);
	alarm(20);
	ASSERT_EQ(mkfifo(hp("workspace/fifo"), 0666), 0);
	ASSERT_EQ(chown(hp("workspace/fifo"), t_uid(), t_gid()), 0);
	fs_result r = t_read("fifo", 0, 0);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "read: fifo: not a regular file");
	fs_result_fini(&r);
	r = t_write("fifo", "data");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not a regular file");
	fs_result_fini(&r);
	r = t_edit("fifo", "a", "b", false);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not a regular file");
	fs_result_fini(&r);
	struct stat st;
	ASSERT_EQ(lstat(hp("workspace/fifo"), &st), 0);
	ASSERT(S_ISFIFO(st.st_mode));
	/* grep walks past it (and glob lists it by name). */
	host_write("workspace/a.txt", "data\n");
	r = t_grep("data", NULL);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "/workspace/a.txt:1:data\n");
	fs_result_fini(&r);
	r = t_glob("fif*", NULL);
	ASSERT_STR_EQ(r.text, "/workspace/fifo\n");
	fs_result_fini(&r);
	if (geteuid() == 0) {
		host_mkdir("dev", 0755, false);
		ASSERT_EQ(mknod(hp("dev/null"), S_IFCHR | 0666, makedev(1, 3)), 0);
		host_symlink("/dev/null", "workspace/devlink");
		r = t_read("/dev/null", 0, 0);
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not a regular file");
		fs_result_fini(&r);
		r = t_read("devlink", 0, 0);
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not a regular file");
		fs_result_fini(&r);
		r = t_write("devlink", "x");
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not a regular file");
		fs_result_fini(&r);
		ASSERT_EQ(lstat(hp("dev/null"), &st), 0);
		ASSERT(S_ISCHR(st.st_mode));
		r = t_grep("x", "/dev");
		ASSERT_STR_EQ(r.text, "no matches\n");
		fs_result_fini(&r);
	} else {
		fprintf(stderr, "  (device node part skipped: mknod needs root)\n");
	}
	alarm(0);
	fx_teardown();
}

/* ---- nothing outside the root ---- */

TEST(paths_never_leave_the_root)
{
	fx_setup();
	host_symlink("/../../secret", "workspace/abs-up");
	host_symlink("../secret", "workspace/rel-up");
	host_symlink("../../../../../../secret", "workspace/deep-up");
	host_symlink("c2", "workspace/c1");
	host_symlink("sub/c3", "workspace/c2");
	host_mkdir("workspace/sub", 0755, true);
	host_symlink("../../../../secret", "workspace/sub/c3");
	host_symlink("/etc/passwd", "workspace/pw-abs");
	host_symlink("../../../../etc/passwd", "workspace/pw-rel");
	host_symlink("../..", "workspace/up");
	const char *no_secret[] = {"/../secret", "/../../../secret", "abs-up", "rel-up", "deep-up",
	                           "c1",         "up/secret"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(no_secret); i++) {
		fs_result r = t_read(no_secret[i], 0, 0);
		if (r.code != KILN__CODE__TOOL_ERROR || !strstr(r.message, "no such file"))
			KT_FAIL("read %s: code %d, %s / %s", no_secret[i], r.code, r.message,
			        r.text ? r.text : "");
		ASSERT(!r.text);
		fs_result_fini(&r);
	}
	fs_result r = t_read("../../secret", 0, 0);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "escapes the working directory");
	fs_result_fini(&r);
	const char *passwd[] = {"/etc/passwd", "pw-abs", "pw-rel", "up/etc/passwd",
	                        "/../../etc/passwd"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(passwd); i++) {
		r = t_read(passwd[i], 0, 0);
		ASSERT_OK(r);
		ASSERT_STR_EQ(r.text, PASSWD);
		fs_result_fini(&r);
	}
	/* A write through an escaping symlink lands inside the root. */
	host_symlink("../../../../tmp/out.txt", "workspace/wl");
	r = t_write("wl", "landed\n");
	ASSERT_OK(r);
	fs_result_fini(&r);
	char *got = host_read("tmp/out.txt");
	ASSERT_STR_EQ(got, "landed\n");
	free(got);
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/tmp/out.txt", F.top);
	ASSERT_EQ(access(p, F_OK), -1);
	struct stat st;
	ASSERT_EQ(lstat(hp("workspace/wl"), &st), 0);
	ASSERT(S_ISLNK(st.st_mode));
	/* Walks never follow links: the secret and passwd stay unseen. */
	r = t_grep("TOP SECRET|fake sandbox", NULL);
	ASSERT_STR_EQ(r.text, "no matches\n");
	fs_result_fini(&r);
	r = t_glob("up/**", NULL);
	ASSERT_STR_EQ(r.text, "/workspace/up\n");
	fs_result_fini(&r);
	/* An explicit path through a link resolves inside the root. */
	r = t_grep("fake sandbox", "up/etc");
	ASSERT_STR_EQ(r.text, "/workspace/up/etc/passwd:1:" PASSWD);
	fs_result_fini(&r);
	/* The C string ends at a NUL: what follows can never be seen. */
	host_write("workspace/hello.txt", "hi\n");
	r = t_read("hello.txt\0/../../../secret", 0, 0);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "hi\n");
	fs_result_fini(&r);
	fx_teardown();
}

/* Runs in a child with its own mount namespace: /proc and /sys bind-mounted
 * into the fake root. Assertion failures abort the child. */
static void
proc_checks(void)
{
	if (unshare(CLONE_NEWNS) < 0)
		_exit(errno == EPERM ? 77 : 10);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		_exit(errno == EPERM ? 77 : 11);
	if (mount("/proc", hp("proc"), NULL, MS_BIND | MS_REC, NULL) < 0)
		_exit(12);
	bool sys = mount("/sys", hp("sys"), NULL, MS_BIND | MS_REC, NULL) == 0;
	/* A root fd from before the unshare would not see the new mounts. */
	close(F.rootfd);
	F.rootfd = F.r.rootfd = open(F.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	ASSERT_GE(F.rootfd, 0);
	host_symlink("/proc/self/root/etc/hostname", "workspace/magic");
	const char *magic[] = {"/proc/self/root/etc/passwd", "/proc/1/root/etc/passwd",
	                       "/proc/self/cwd/secret", "/proc/self/fd/0", "magic"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(magic); i++) {
		fs_result r = t_read(magic[i], 0, 0);
		if (!r.is_error || r.text)
			KT_FAIL("read %s succeeded: %s", magic[i], r.text);
		/* Another process's /proc dir may already be closed to us. */
		if (!strstr(r.message, "too many levels of symbolic links") &&
		    !(i == 1 && strstr(r.message, "permission denied")))
			KT_FAIL("read %s: unexpected error %s", magic[i], r.message);
		fs_result_fini(&r);
	}
	const char *procfiles[] = {"/proc/self/status", "/proc/self/environ", "/proc/version",
	                           "/workspace/../proc/self/maps"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(procfiles); i++) {
		fs_result r = t_read(procfiles[i], 0, 0);
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "refusing a file on procfs");
		fs_result_fini(&r);
	}
	fs_result r = t_write("/proc/self/comm", "pwned");
	ASSERT(r.is_error);
	fs_result_fini(&r);
	r = t_grep("Pid", "/proc/self");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "refusing a directory on procfs");
	fs_result_fini(&r);
	r = t_glob("*", "/proc");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "refusing a directory on procfs");
	fs_result_fini(&r);
	Kiln__EditorInput ed = KILN__EDITOR_INPUT__INIT;
	ed.command = "view";
	ed.path = "/proc";
	r = t_editor(&ed);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "refusing a directory on procfs");
	fs_result_fini(&r);
	/* A walk from "/" skips the pseudo filesystems mounted inside. */
	r = t_grep("^Name:", "/");
	ASSERT_NOT_CONTAINS(r.text, "/proc/");
	fs_result_fini(&r);
	if (sys && access("/sys/kernel/uevent_seqnum", R_OK) == 0) {
		r = t_read("/sys/kernel/uevent_seqnum", 0, 0);
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "refusing a file on sysfs");
		fs_result_fini(&r);
	}
	_exit(0);
}

TEST(proc_and_sys_are_refused)
{
	if (geteuid() != 0) {
		fprintf(stderr, "  skipped: needs root for a private mount namespace\n");
		return;
	}
	fx_setup();
	host_mkdir("proc", 0555, false);
	host_mkdir("sys", 0555, false);
	fflush(stderr);
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0)
		proc_checks();
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		fprintf(stderr, "  skipped: unshare(CLONE_NEWNS) not permitted here\n");
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		KT_FAIL("proc checks failed in the child (status 0x%x)", st);
	fx_teardown();
}

/* ---- write ---- */

TEST(write_creates_owned_files_atomically)
{
	fx_setup();
	mode_t old = umask(077); /* the node's umask must not leak into the sandbox */
	fs_result r = t_write("hello.txt", "hello world\n");
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.message, "wrote 12 bytes to hello.txt");
	fs_result_fini(&r);
	char *got = host_read("workspace/hello.txt");
	ASSERT_STR_EQ(got, "hello world\n");
	free(got);
	struct stat st;
	ASSERT_EQ(fstatat(AT_FDCWD, hp("workspace/hello.txt"), &st, AT_SYMLINK_NOFOLLOW), 0);
	ASSERT_EQ(st.st_uid, t_uid());
	ASSERT_EQ(st.st_gid, t_gid());
	ASSERT_EQ(st.st_mode & 07777, 0644);
	/* Parents are created, each owned by the sandbox user. */
	r = t_write("/workspace/a/b/c/deep.txt", "x");
	ASSERT_OK(r);
	fs_result_fini(&r);
	const char *dirs[] = {"workspace/a", "workspace/a/b", "workspace/a/b/c"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(dirs); i++) {
		ASSERT_EQ(fstatat(AT_FDCWD, hp(dirs[i]), &st, AT_SYMLINK_NOFOLLOW), 0);
		ASSERT(S_ISDIR(st.st_mode));
		ASSERT_EQ(st.st_uid, t_uid());
		ASSERT_EQ(st.st_gid, t_gid());
		ASSERT_EQ(st.st_mode & 07777, 0755);
	}
	umask(old);
	/* Overwrite: a new inode renamed into place, the old mode kept. */
	ASSERT_EQ(chmod(hp("workspace/hello.txt"), 0751), 0);
	struct stat before;
	ASSERT_EQ(stat(hp("workspace/hello.txt"), &before), 0);
	r = t_write("hello.txt", "");
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.message, "wrote 0 bytes to hello.txt");
	fs_result_fini(&r);
	ASSERT_EQ(stat(hp("workspace/hello.txt"), &st), 0);
	ASSERT_NE(st.st_ino, before.st_ino);
	ASSERT_EQ(st.st_mode & 07777, 0751);
	ASSERT_EQ(st.st_size, 0);
	/* Binary content is written as is. */
	r = t_write_n("bin", "\0\1\2\xff", 4);
	ASSERT_OK(r);
	fs_result_fini(&r);
	ASSERT_EQ(stat(hp("workspace/bin"), &st), 0);
	ASSERT_EQ(st.st_size, 4);
	ASSERT(!has_tmp_files("/workspace"));
	/* Through a symlink: the target changes, the link stays. */
	host_write("workspace/target.txt", "old\n");
	host_symlink("target.txt", "workspace/link");
	r = t_write("link", "new\n");
	ASSERT_OK(r);
	fs_result_fini(&r);
	got = host_read("workspace/target.txt");
	ASSERT_STR_EQ(got, "new\n");
	free(got);
	ASSERT_EQ(lstat(hp("workspace/link"), &st), 0);
	ASSERT(S_ISLNK(st.st_mode));
	/* A link's `..` is resolved as the kernel does for a read (physically:
	 * dl/l is x/sub/l, so ../t.txt is x/t.txt), never lexically. */
	host_mkdir("workspace/x", 0755, true);
	host_mkdir("workspace/x/sub", 0755, true);
	host_write("workspace/x/t.txt", "X\n");
	host_symlink("../t.txt", "workspace/x/sub/l");
	host_symlink("x/sub", "workspace/dl");
	r = t_read("dl/l", 0, 0);
	ASSERT_STR_EQ(r.text, "X\n");
	fs_result_fini(&r);
	r = t_write("dl/l", "Y\n");
	ASSERT_OK(r);
	fs_result_fini(&r);
	got = host_read("workspace/x/t.txt");
	ASSERT_STR_EQ(got, "Y\n");
	free(got);
	ASSERT_EQ(access(hp("workspace/t.txt"), F_OK), -1);
	/* A dangling link creates its target, but not missing directories. */
	host_symlink("made.txt", "workspace/dangling");
	host_symlink("nodir/made.txt", "workspace/dangling2");
	r = t_write("dangling", "m");
	ASSERT_OK(r);
	fs_result_fini(&r);
	got = host_read("workspace/made.txt");
	ASSERT_STR_EQ(got, "m");
	free(got);
	r = t_write("dangling2", "m");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "write: dangling2: no such file or directory");
	fs_result_fini(&r);
	/* A link loop ends. */
	host_symlink("loop2", "workspace/loop1");
	host_symlink("loop1", "workspace/loop2");
	r = t_write("loop1", "x");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "too many levels of symbolic links");
	fs_result_fini(&r);
	fx_teardown();
}

TEST(write_errors)
{
	fx_setup();
	host_mkdir("workspace/adir", 0755, true);
	host_write("workspace/file.txt", "x");
	fs_result r = t_write("adir", "x");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "write: adir: is a directory");
	fs_result_fini(&r);
	r = t_write("file.txt/sub/x.txt", "x");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "/workspace/file.txt is not a directory");
	fs_result_fini(&r);
	r = t_write("newdir/", "x");
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "names a directory");
	fs_result_fini(&r);
	ASSERT_EQ(access(hp("workspace/newdir"), F_OK), -1);
	r = t_write("/", "x");
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "write: /: names a directory");
	fs_result_fini(&r);
	r = t_write("/workspace/.", "x");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "is a directory");
	fs_result_fini(&r);
	char small[8] = "x";
	r = t_write_n("huge", small, (size_t)FS_WRITE_MAX + 1); /* refused before reading */
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "larger than the 64 MiB limit");
	fs_result_fini(&r);
	r = t_write("../escape.txt", "x");
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "escapes the working directory");
	fs_result_fini(&r);
	if (geteuid() == 0) {
		/* The sandbox user may not write root's files or directories. */
		r = t_write("/etc/passwd", "pwned");
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "permission denied");
		fs_result_fini(&r);
		char *got = host_read("etc/passwd");
		ASSERT_STR_EQ(got, PASSWD);
		free(got);
		r = t_write("/etc/new/x.txt", "x");
		ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "cannot create directory /etc/new");
		fs_result_fini(&r);
	}
	/* A read-only file is not replaced just because the directory is
	 * writable. */
	ASSERT_EQ(chmod(hp("workspace/file.txt"), 0444), 0);
	r = t_write("file.txt", "y");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "permission denied");
	fs_result_fini(&r);
	ASSERT(!has_tmp_files("/workspace"));
	fx_teardown();
}

TEST(write_prepare_commit_abort)
{
	fx_setup();
	host_write("workspace/f.txt", "original\n");
	fs_write w;
	fs_result r = {0};
	ASSERT_EQ(fs_write_prepare(&F.r, "/workspace/f.txt", &w, &r), 0);
	ASSERT(w.existed);
	ASSERT_STR_EQ(w.name, "f.txt");
	ASSERT_EQ(strncmp(w.tmpname, ".kiln-tmp-", 10), 0);
	ASSERT_EQ(kl_write_all(w.tmpfd, "half", 4), 0);
	ASSERT(has_tmp_files("/workspace"));
	fs_write_abort(&F.r, &w);
	ASSERT_EQ(w.dirfd, -1);
	ASSERT_EQ(w.tmpfd, -1);
	ASSERT(!has_tmp_files("/workspace"));
	char *got = host_read("workspace/f.txt");
	ASSERT_STR_EQ(got, "original\n");
	free(got);
	ASSERT_EQ(fs_write_prepare(&F.r, "/workspace/new.txt", &w, &r), 0);
	ASSERT(!w.existed);
	ASSERT_EQ(kl_write_all(w.tmpfd, "whole\n", 6), 0);
	ASSERT_EQ(fs_write_commit(&F.r, &w, &r), 0);
	got = host_read("workspace/new.txt");
	ASSERT_STR_EQ(got, "whole\n");
	free(got);
	ASSERT(!has_tmp_files("/workspace"));
	ASSERT_EQ(fs_write_prepare(&F.r, "/workspace", &w, &r), -1);
	ASSERT_EQ(w.dirfd, -1);
	ASSERT_EQ(w.tmpfd, -1);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "is a directory");
	fs_result_fini(&r);
	fx_teardown();
}

/* ---- edit ---- */

TEST(edit_rules)
{
	fx_setup();
	host_write("workspace/f.txt", "alpha beta\nbeta gamma\n");
	ASSERT_EQ(chmod(hp("workspace/f.txt"), 0600), 0);
	fs_result r = t_edit("f.txt", "alpha", "ALPHA", false);
	ASSERT_OK(r);
	ASSERT_EQ(r.replacements, 1);
	ASSERT_STR_EQ(r.message, "edited f.txt (1 replacement)");
	fs_result_fini(&r);
	char *got = host_read("workspace/f.txt");
	ASSERT_STR_EQ(got, "ALPHA beta\nbeta gamma\n");
	free(got);
	r = t_edit("f.txt", "beta", "B", false);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR,
	           "edit: old_string appears 2 times in f.txt (must be unique)");
	fs_result_fini(&r);
	r = t_edit("f.txt", "delta", "D", false);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "edit: old_string not found in f.txt");
	fs_result_fini(&r);
	r = t_edit("f.txt", "", "D", true);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "must not be empty");
	fs_result_fini(&r);
	got = host_read("workspace/f.txt");
	ASSERT_STR_EQ(got, "ALPHA beta\nbeta gamma\n"); /* failed edits change nothing */
	free(got);
	r = t_edit("f.txt", "beta", "B", true);
	ASSERT_OK(r);
	ASSERT_EQ(r.replacements, 2);
	ASSERT_STR_EQ(r.message, "edited f.txt (2 replacements)");
	fs_result_fini(&r);
	got = host_read("workspace/f.txt");
	ASSERT_STR_EQ(got, "ALPHA B\nB gamma\n");
	free(got);
	struct stat st;
	ASSERT_EQ(stat(hp("workspace/f.txt"), &st), 0);
	ASSERT_EQ(st.st_mode & 07777, 0600);
	ASSERT_EQ(st.st_uid, t_uid());
	r = t_edit("missing.txt", "a", "b", false);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "edit: missing.txt: no such file or directory");
	fs_result_fini(&r);
	host_write_n("workspace/latin1.txt", "caf\xe9\n", 5, true);
	r = t_edit("latin1.txt", "caf", "CAF", false);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "not valid UTF-8");
	fs_result_fini(&r);
	size_t n = FS_READ_MAX + 10;
	char *big = kl_xmalloc(n);
	memset(big, 'x', n);
	host_write_n("workspace/big.txt", big, n, true);
	free(big);
	r = t_edit("big.txt", "x", "y", false);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "sed or awk");
	fs_result_fini(&r);
	ASSERT(!has_tmp_files("/workspace"));
	fx_teardown();
}

/* ---- glob ---- */

TEST(glob_order_cap_and_paths)
{
	fx_setup();
	host_mkdir("workspace/g", 0755, true);
	char rel[64];
	for (int i = 0; i < 250; i++) {
		snprintf(rel, sizeof(rel), "workspace/g/f%03d.txt", i);
		host_write(rel, "x");
		set_mtime(rel, 1700000000 + i * 10);
	}
	fs_result r = t_glob("**/*.txt", NULL);
	ASSERT_OK(r);
	ASSERT(r.truncated);
	ASSERT_EQ(strncmp(r.text, "/workspace/g/f249.txt\n/workspace/g/f248.txt\n", 44), 0);
	ASSERT_CONTAINS(r.text, "/workspace/g/f050.txt\n[showing the 200 most recently");
	ASSERT_NOT_CONTAINS(r.text, "f049");
	ASSERT_CONTAINS(r.text, "of 250 matches");
	ASSERT_EQ(count_char(r.text, '\n'), 201);
	fs_result_fini(&r);
	/* Equal times: by path. Directories match too; the path argument
	 * prefixes the output. */
	host_mkdir("workspace/t", 0755, true);
	host_mkdir("workspace/t/sub.txt", 0755, true);
	host_write("workspace/t/b.txt", "x");
	host_write("workspace/t/a.txt", "x");
	host_write("workspace/t/c.md", "x");
	set_mtime("workspace/t/a.txt", 1800000000);
	set_mtime("workspace/t/b.txt", 1800000000);
	set_mtime("workspace/t/sub.txt", 1600000000);
	r = t_glob("*.txt", "t");
	ASSERT_OK(r);
	ASSERT(!r.truncated);
	ASSERT_STR_EQ(r.text, "/workspace/t/a.txt\n/workspace/t/b.txt\n/workspace/t/sub.txt\n");
	fs_result_fini(&r);
	r = t_glob("./t/{*.md,a.*}", "/workspace");
	ASSERT_STR_EQ(r.text, "/workspace/t/a.txt\n/workspace/t/c.md\n");
	fs_result_fini(&r);
	r = t_glob("*.nothing", NULL);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "no matches\n");
	fs_result_fini(&r);
	fx_teardown();
}

TEST(glob_refusals)
{
	fx_setup();
	host_write("workspace/f.txt", "x");
	fs_result r = t_glob("/etc/*", NULL);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "absolute pattern not permitted");
	fs_result_fini(&r);
	r = t_glob("../*", NULL);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "'..' is not permitted");
	fs_result_fini(&r);
	r = t_glob("a/../../b", NULL);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "'..' is not permitted");
	fs_result_fini(&r);
	r = t_glob("", NULL);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "pattern is empty");
	fs_result_fini(&r);
	r = t_glob("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}", NULL);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "more than 256 alternatives");
	fs_result_fini(&r);
	r = t_glob("*", "f.txt");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "glob: f.txt: not a directory");
	fs_result_fini(&r);
	r = t_glob("*", "../..");
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "escapes the working directory");
	fs_result_fini(&r);
	r = t_glob("*", "missing");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "no such file or directory");
	fs_result_fini(&r);
	/* A 4000-star pattern costs nothing much. */
	char *stars = kl_xmalloc(4001);
	memset(stars, '*', 4000);
	stars[4000] = 0;
	r = t_glob(stars, NULL);
	ASSERT_STR_EQ(r.text, "/workspace/f.txt\n");
	fs_result_fini(&r);
	free(stars);
	fx_teardown();
}

TEST(walk_depth_limit)
{
	fx_setup();
	char rel[PATH_MAX] = "workspace";
	for (int i = 1; i <= FS_WALK_DEPTH + 6; i++) {
		strcat(rel, "/d");
		host_mkdir(rel, 0755, true);
		if (i == 10 || i == FS_WALK_DEPTH + 6) {
			char f[PATH_MAX + 16];
			snprintf(f, sizeof(f), "%s/x.txt", rel);
			host_write(f, "needle\n");
		}
	}
	fs_result r = t_glob("**/x.txt", NULL);
	ASSERT_OK(r);
	ASSERT(r.truncated);
	ASSERT_EQ(count_char(r.text, '\n'), 2);
	ASSERT_CONTAINS(r.text, "/d/d/d/d/d/d/d/d/d/d/x.txt\n[directories more than 64 levels");
	fs_result_fini(&r);
	r = t_grep("needle", NULL);
	ASSERT(r.truncated);
	ASSERT_EQ(count_char(r.text, '\n'), 2);
	ASSERT_CONTAINS(r.text, "/x.txt:1:needle\n[directories more than 64 levels");
	fs_result_fini(&r);
	fx_teardown();
}

TEST(walk_entry_cap)
{
	fx_setup();
	host_mkdir("workspace/big", 0755, true);
	int dfd = open(hp("workspace/big"), O_PATH | O_DIRECTORY | O_CLOEXEC);
	ASSERT_GE(dfd, 0);
	char name[32];
	for (int i = 0; i < FS_WALK_MAX + 10; i++) {
		snprintf(name, sizeof(name), "e%06d", i);
		ASSERT_EQ(mknodat(dfd, name, S_IFREG | 0644, 0), 0);
	}
	close(dfd);
	fs_result r = t_glob("big/e00000[0-4]", NULL);
	ASSERT_OK(r);
	ASSERT(r.truncated);
	ASSERT_EQ(count_char(r.text, '\n'), 6);
	ASSERT_CONTAINS(r.text, "/workspace/big/e000000\n");
	ASSERT_CONTAINS(r.text, "[stopped after 100000 directory entries");
	fs_result_fini(&r);
	fx_teardown();
}

/* ---- grep ---- */

TEST(grep_output_and_skips)
{
	fx_setup();
	host_mkdir("workspace/src", 0755, true);
	host_mkdir("workspace/.git", 0755, true);
	host_mkdir("workspace/node_modules", 0755, true);
	host_write("workspace/src/b.c", "int main(void)\n{\n\treturn 42;\n}\n");
	host_write("workspace/src/a.c", "static int x = 7;\r\nint main;\n");
	host_write("workspace/.git/config", "int main\n");
	host_write("workspace/node_modules/m.js", "int main\n");
	host_write("workspace/.hidden", "int main hidden\n");
	host_write_n("workspace/bin.dat", "int main\0\n", 10, true);
	fs_buf b = {0};
	fs_buf_add(&b, "int main long ", 14);
	for (int i = 0; i < FS_GREP_LINE_MAX; i++)
		fs_buf_add(&b, "y", 1);
	fs_buf_add(&b, "\nint main short\n", 16);
	host_write_n("workspace/long.txt", b.p, b.len, true);
	fs_buf_fini(&b);
	fs_result r = t_grep("int main", NULL);
	ASSERT_OK(r);
	ASSERT(!r.truncated);
	ASSERT_STR_EQ(r.text, "/workspace/.hidden:1:int main hidden\n"
	                      "/workspace/long.txt:2:int main short\n"
	                      "/workspace/src/a.c:2:int main;\n"
	                      "/workspace/src/b.c:1:int main(void)\n");
	fs_result_fini(&r);
	/* ripgrep escapes, (?i), CR stripped, a single file as path. */
	r = t_grep("(?i)RETURN \\d+;$", "src");
	ASSERT_STR_EQ(r.text, "/workspace/src/b.c:3:\treturn 42;\n");
	fs_result_fini(&r);
	r = t_grep("x = \\d;$", "/workspace/src/a.c");
	ASSERT_STR_EQ(r.text, "/workspace/src/a.c:1:static int x = 7;\n");
	fs_result_fini(&r);
	r = t_grep("^(?:int|static)\\s", "src/b.c");
	ASSERT_STR_EQ(r.text, "/workspace/src/b.c:1:int main(void)\n");
	fs_result_fini(&r);
	/* An explicit path into a skipped directory is searched. */
	r = t_grep("main", ".git");
	ASSERT_STR_EQ(r.text, "/workspace/.git/config:1:int main\n");
	fs_result_fini(&r);
	r = t_grep("no such text", NULL);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "no matches\n");
	fs_result_fini(&r);
	r = t_grep("a(b", NULL);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "grep: invalid regex");
	fs_result_fini(&r);
	r = t_grep("x", "nope");
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "grep: nope: no such file or directory");
	fs_result_fini(&r);
	r = t_grep("x", "../../x");
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "grep: ../../x: path escapes");
	fs_result_fini(&r);
	fx_teardown();
}

TEST(grep_output_cap)
{
	fx_setup();
	fs_buf b = {0};
	for (int i = 0; i < 5000; i++)
		fs_buf_printf(&b, "match line %04d with some padding text here\n", i);
	host_write_n("workspace/many.txt", b.p, b.len, true);
	fs_buf_fini(&b);
	fs_result r = t_grep("match", NULL);
	ASSERT_OK(r);
	ASSERT(r.truncated);
	ASSERT_LE(r.text_len, FS_GREP_MAX + 100);
	ASSERT_GT(r.text_len, FS_GREP_MAX - 200);
	ASSERT_CONTAINS(r.text, "/workspace/many.txt:1:match line 0000 ");
	ASSERT_CONTAINS(r.text, "\n[output truncated at 102400 bytes]\n");
	/* Cut at a line boundary: the line before the note is whole. */
	char *note = strstr(r.text, "[output truncated");
	ASSERT_EQ(strncmp(note - 5, "here\n", 5), 0);
	fs_result_fini(&r);
	fx_teardown();
}

/* ---- the text editor form ---- */

TEST(editor_view)
{
	fx_setup();
	host_write("workspace/f.txt", "one\ntwo\nthree\n");
	host_mkdir("workspace/d", 0755, true);
	host_mkdir("workspace/d/e", 0755, true);
	host_mkdir("workspace/.hid", 0755, true);
	host_write("workspace/d/e/too-deep.txt", "x");
	host_write("workspace/d/x.txt", "x");
	host_write("workspace/d/.secret", "x");
	Kiln__EditorInput in = KILN__EDITOR_INPUT__INIT;
	in.command = "view";
	in.path = "f.txt";
	fs_result r = t_editor(&in);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "Here's the result of running `cat -n` on /workspace/f.txt:\n"
	                      "     1\tone\n     2\ttwo\n     3\tthree\n");
	fs_result_fini(&r);
	int64_t rg[2] = {2, -1};
	in.view_range = rg;
	in.n_view_range = 2;
	r = t_editor(&in);
	ASSERT_CONTAINS(r.text, ":\n     2\ttwo\n     3\tthree\n");
	ASSERT_NOT_CONTAINS(r.text, "one");
	fs_result_fini(&r);
	in.n_view_range = 0;
	in.max_characters = 12;
	r = t_editor(&in);
	ASSERT(r.truncated);
	ASSERT_CONTAINS(r.text, "     1\tone\n<response clipped>");
	fs_result_fini(&r);
	in.max_characters = 0;
	in.path = "/workspace";
	r = t_editor(&in);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "Here's the files and directories up to 2 levels deep in "
	                      "/workspace, excluding hidden items:\n"
	                      "/workspace\n/workspace/d\n/workspace/d/e\n/workspace/d/x.txt\n"
	                      "/workspace/f.txt\n");
	fs_result_fini(&r);
	in.n_view_range = 2;
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "not allowed when `path` points to a dir");
	fs_result_fini(&r);
	in.n_view_range = 0;
	in.path = "nope";
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "The path nope does not exist.");
	fs_result_fini(&r);
	fx_teardown();
}

TEST(editor_create_replace_insert)
{
	fx_setup();
	Kiln__EditorInput in = KILN__EDITOR_INPUT__INIT;
	in.command = "create";
	in.path = "/workspace/new/n.txt";
	in.file_text = "a\nb\nc\nb\n";
	fs_result r = t_editor(&in);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.message, "File created successfully at: /workspace/new/n.txt");
	fs_result_fini(&r);
	struct stat st;
	ASSERT_EQ(stat(hp("workspace/new/n.txt"), &st), 0);
	ASSERT_EQ(st.st_uid, t_uid());
	ASSERT_EQ(st.st_mode & 0777, 0644);
	in.file_text = "other";
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR,
	           "File already exists at: /workspace/new/n.txt. Cannot overwrite");
	fs_result_fini(&r);
	char *got = host_read("workspace/new/n.txt");
	ASSERT_STR_EQ(got, "a\nb\nc\nb\n");
	free(got);

	in.command = "str_replace";
	in.old_str = "b";
	in.new_str = "B";
	in.has_new_str = true;
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR,
	           "Multiple occurrences of old_str `b` in lines [2, 4]");
	fs_result_fini(&r);
	in.old_str = "zzz";
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "old_str `zzz` did not appear verbatim");
	fs_result_fini(&r);
	in.old_str = "c\n";
	in.new_str = "C1\nC2\n";
	r = t_editor(&in);
	ASSERT_OK(r);
	ASSERT_EQ(r.replacements, 1);
	ASSERT_CONTAINS(r.text,
	                "has been edited. Here's the result of running `cat -n` on a "
	                "snippet of /workspace/new/n.txt:\n     1\ta\n     2\tb\n     3\tC1\n"
	                "     4\tC2\n     5\tb\nReview the changes");
	fs_result_fini(&r);
	got = host_read("workspace/new/n.txt");
	ASSERT_STR_EQ(got, "a\nb\nC1\nC2\nb\n");
	free(got);

	in.command = "insert";
	in.insert_line = 1;
	in.insert_text = "ins";
	in.has_new_str = false;
	r = t_editor(&in);
	ASSERT_OK(r);
	ASSERT_CONTAINS(r.text, "     1\ta\n     2\tins\n     3\tb\n");
	fs_result_fini(&r);
	/* The older field name. */
	in.insert_text = "";
	in.new_str = "top";
	in.has_new_str = true;
	in.insert_line = 0;
	r = t_editor(&in);
	ASSERT_OK(r);
	fs_result_fini(&r);
	got = host_read("workspace/new/n.txt");
	ASSERT_STR_EQ(got, "top\na\nins\nb\nC1\nC2\nb\n");
	free(got);
	in.insert_line = 99;
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__TOOL_ERROR, "[0, 7]");
	fs_result_fini(&r);
	in.has_new_str = false;
	in.insert_line = 0;
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "`insert_text` is required");
	fs_result_fini(&r);

	in.command = "undo_edit";
	r = t_editor(&in);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "Unrecognized command undo_edit");
	fs_result_fini(&r);
	ASSERT(!has_tmp_files("/workspace"));
	fx_teardown();
}

/* ---- dispatch and credentials ---- */

TEST(run_dispatch_and_creds)
{
	fx_setup();
	host_write("workspace/f.txt", "dispatched\n");
	uid_t fsuid = (uid_t)setfsuid((uid_t)-1);
	gid_t fsgid = (gid_t)setfsgid((gid_t)-1);
	Kiln__ReadInput rd = KILN__READ_INPUT__INIT;
	rd.file_path = "f.txt";
	Kiln__ToolCall call = KILN__TOOL_CALL__INIT;
	call.tool_case = KILN__TOOL_CALL__TOOL_READ;
	call.read = &rd;
	fs_result r;
	fs_run(&F.r, &call, &r);
	ASSERT_OK(r);
	ASSERT_STR_EQ(r.text, "dispatched\n");
	fs_result_fini(&r);
	Kiln__BashInput bash = KILN__BASH_INPUT__INIT;
	call.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	call.bash = &bash;
	fs_run(&F.r, &call, &r);
	ASSERT_ERR(r, KILN__CODE__INVALID_ARGUMENT, "not a file tool");
	fs_result_fini(&r);
	fs_run(&F.r, NULL, &r);
	ASSERT_EQ(r.code, KILN__CODE__INVALID_ARGUMENT);
	fs_result_fini(&r);
	/* Every tool put the thread's fs ids back. */
	ASSERT_EQ((uid_t)setfsuid((uid_t)-1), fsuid);
	ASSERT_EQ((gid_t)setfsgid((gid_t)-1), fsgid);
	if (geteuid() == 0) {
		fs_creds c;
		ASSERT_EQ(fs_creds_enter_checked(&F.r, &c, &r), 0);
		ASSERT_EQ((uid_t)setfsuid((uid_t)-1), t_uid());
		ASSERT_EQ((gid_t)setfsgid((gid_t)-1), t_gid());
		fs_creds_leave(&c);
		ASSERT_EQ((uid_t)setfsuid((uid_t)-1), 0);
		/* A process that cannot take the ids gets an error, not a tool
		 * running with its own: a child drops root first. */
		pid_t pid = fork();
		ASSERT_GE(pid, 0);
		if (pid == 0) {
			if (setresgid(4321, 4321, 4321) < 0 || setresuid(4321, 4321, 4321) < 0)
				_exit(10);
			call.tool_case = KILN__TOOL_CALL__TOOL_READ;
			call.read = &rd;
			fs_run(&F.r, &call, &r);
			_exit(r.code == KILN__CODE__INTERNAL &&
			                      strstr(r.message,
			                             "cannot act as the sandbox user 12345")
			              ? 0
			              : 11);
		}
		int st;
		ASSERT_EQ(waitpid(pid, &st, 0), pid);
		ASSERT(WIFEXITED(st));
		ASSERT_EQ(WEXITSTATUS(st), 0);
	}
	fx_teardown();
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
