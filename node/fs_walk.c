/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Directory walks for the file tools: glob (doublestar matching, newest
 * first), grep (POSIX ERE over text files, in ripgrep's `path:line:text`
 * shape) and the text editor's directory view. A walk starts from a directory
 * opened inside the sandbox root and opens every child relative to its
 * parent's fd with O_NOFOLLOW, re-checking the type and the filesystem on the
 * new fd: symlinks are listed by name but never followed (no loops and no
 * way out of the tree), and pseudo filesystems mounted inside the tree are
 * skipped. Entries are visited in name order, at most FS_WALK_MAX of them and
 * FS_WALK_DEPTH levels deep. The callers have switched to the sandbox user's
 * fsuid/fsgid.
 */
#include "fstools.h"

#include "kl_clock.h"
#include "kl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DENTS_BUF         (32u << 10) /* getdents64 buffer, shared by a walk's levels */
#define GREP_CHUNK        (64u << 10) /* grep's read size */
#define GREP_BINARY_PROBE 8192        /* a NUL in this many first bytes: binary, skipped */
#define BRACE_DEPTH       16          /* {a,b} groups one glob pattern may hold */

/* ---- the walker ---- */

enum { WALK_SKIP = 0, WALK_DESCEND = 1 };

typedef struct walk walk;
/* Called for every entry, w->rel holding its path below the walk's base;
 * returns WALK_DESCEND to enter a directory. Setting w->stop ends the walk. */
typedef int (*walk_fn)(walk *w, int dirfd, const char *name, unsigned char type);

struct walk {
	walk_fn fn;
	void *ctx;
	int maxdepth; /* deepest level visited (the base's entries are level 1) */
	size_t visited;
	size_t held; /* entries in the listings of the directories being walked */
	bool capped; /* stopped at FS_WALK_MAX entries */
	bool deep;   /* directories below FS_WALK_DEPTH were left out */
	bool stop;
	char *dents; /* DENTS_BUF bytes */
	size_t rellen;
	char rel[PATH_MAX];
};

typedef struct dent {
	size_t off; /* of the name in dlist.names */
	unsigned char type;
} dent;

typedef struct dlist {
	fs_buf names;
	dent *v;
	size_t n;
	size_t cap;
} dlist;

static int
dent_cmp(const void *a, const void *b, void *names)
{
	const dent *x = a, *y = b;
	return strcmp((const char *)names + x->off, (const char *)names + y->off);
}

/* All entries of dirfd (at most limit: 1 if there were more), sorted by
 * name, so that output does not depend on the filesystem's hash order. */
static int
list_dir(walk *w, int dirfd, size_t limit, dlist *l)
{
	int more = 0;
	for (;;) {
		ssize_t n = getdents64(dirfd, w->dents, DENTS_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		for (ssize_t off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(w->dents + off);
			off += d->d_reclen;
			if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
				continue;
			if (l->n == limit) {
				more = 1;
				goto done;
			}
			if (l->n == l->cap) {
				l->cap = l->cap ? l->cap * 2 : 64;
				l->v = kl_xrealloc(l->v, l->cap * sizeof(*l->v));
			}
			l->v[l->n++] = (dent){l->names.len, d->d_type};
			fs_buf_add(&l->names, d->d_name, strlen(d->d_name) + 1);
		}
	}
done:
	if (l->n)
		qsort_r(l->v, l->n, sizeof(*l->v), dent_cmp, l->names.p);
	return more;
}

static unsigned char
stat_type(int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return DT_UNKNOWN;
	return S_ISDIR(st.st_mode)   ? DT_DIR
	       : S_ISREG(st.st_mode) ? DT_REG
	       : S_ISLNK(st.st_mode) ? DT_LNK
	                             : DT_UNKNOWN;
}

static void walk_dir(walk *w, int dirfd, int depth);

static void
walk_descend(walk *w, int dirfd, const char *name, int depth)
{
	if (depth >= w->maxdepth) {
		w->deep |= depth >= FS_WALK_DEPTH;
		return;
	}
	int fd = fs_open_child(dirfd, name, S_IFDIR, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return; /* unreadable, replaced, or a pseudo filesystem: skip it */
	walk_dir(w, fd, depth + 1);
	close(fd);
}

static void
walk_dir(walk *w, int dirfd, int depth)
{
	dlist l = {0};
	/* What every level still holds counts too: nested listings may not add
	 * up to more than one walk's worth of names. */
	size_t used = KL_MAX(w->visited, w->held);
	int more = list_dir(w, dirfd, used > FS_WALK_MAX ? 1 : FS_WALK_MAX + 1 - used, &l);
	if (more < 0)
		goto out;
	w->capped |= more && w->held;
	w->held += l.n;
	size_t base = w->rellen;
	for (size_t i = 0; i < l.n && !w->stop; i++) {
		if (w->visited++ >= FS_WALK_MAX) {
			w->capped = w->stop = true;
			break;
		}
		const char *name = l.names.p + l.v[i].off;
		size_t len = strlen(name), sep = base ? 1 : 0;
		if (base + sep + len >= sizeof(w->rel))
			continue; /* no path names it: it cannot be reported */
		if (sep)
			w->rel[base] = '/';
		memcpy(w->rel + base + sep, name, len + 1);
		w->rellen = base + sep + len;
		unsigned char type = l.v[i].type;
		if (type == DT_UNKNOWN)
			type = stat_type(dirfd, name);
		if (w->fn(w, dirfd, name, type) == WALK_DESCEND && type == DT_DIR && !w->stop)
			walk_descend(w, dirfd, name, depth);
		w->rellen = base;
		w->rel[base] = 0;
	}
	w->held -= l.n;
out:
	fs_buf_fini(&l.names);
	free(l.v);
}

static void
walk_run(walk *w, int dirfd, int maxdepth)
{
	w->maxdepth = KL_MIN(maxdepth, FS_WALK_DEPTH);
	w->dents = kl_xmalloc(DENTS_BUF);
	w->rellen = 0;
	w->rel[0] = 0;
	walk_dir(w, dirfd, 1);
	free(w->dents);
	w->dents = NULL;
}

/* base + "/" + rel, for output lines ("/" + rel when base is the root). */
static void
join_path(char *out, size_t size, const char *base, const char *rel)
{
	snprintf(out, size, "%s%s%s", base, strcmp(base, "/") && *rel ? "/" : "", rel);
}

/* ---- doublestar matching ---- */

static const char *
seg_end(const char *s)
{
	return strchrnul(s, '/');
}

static const char *
seg_next(const char *e)
{
	return *e ? e + 1 : e;
}

static bool
is_dstar(const char *p, const char *pe)
{
	return pe - p == 2 && p[0] == '*' && p[1] == '*';
}

/* Bytes of the UTF-8 sequence at s (1 for a stray byte). */
static size_t
u8len(const char *s, const char *e)
{
	unsigned char c = (unsigned char)*s;
	size_t n = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	if (n > (size_t)(e - s))
		return 1;
	for (size_t i = 1; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			return 1;
	return n;
}

static uint32_t
u8dec(const char *s, size_t n)
{
	uint32_t cp = (unsigned char)s[0];
	if (n == 1)
		return cp;
	cp &= 0x7fu >> n;
	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | ((unsigned char)s[i] & 0x3f);
	return cp;
}

/* Past the ']' closing the class that opens at p, or NULL (a lone '['). */
static const char *
class_end(const char *p, const char *pe)
{
	const char *q = p + 1;
	if (q < pe && (*q == '!' || *q == '^'))
		q++;
	if (q < pe && *q == ']')
		q++;
	while (q < pe && *q != ']')
		q += *q == '\\' && q + 1 < pe ? 2 : 1;
	return q < pe ? q + 1 : NULL;
}

static const char *
class_char(const char *q, const char *e, uint32_t *cp)
{
	if (*q == '\\' && q + 1 < e)
		q++;
	size_t n = u8len(q, e);
	*cp = u8dec(q, n);
	return q + n;
}

static bool
class_match(const char *p, const char *end, uint32_t c)
{
	const char *q = p + 1, *e = end - 1;
	bool neg = q < e && (*q == '!' || *q == '^'), hit = false;
	if (neg)
		q++;
	while (q < e) {
		uint32_t lo, hi;
		q = class_char(q, e, &lo);
		hi = lo;
		if (q + 1 < e && *q == '-')
			q = class_char(q + 1, e, &hi);
		hit |= c >= lo && c <= hi;
	}
	return hit != neg;
}

/* One pattern element ('?', a class, a literal) against one character. */
static bool
elem_match(const char **pp, const char *pe, const char **ss, const char *se)
{
	const char *p = *pp, *s = *ss;
	size_t sn = u8len(s, se);
	if (*p == '[') {
		const char *end = class_end(p, pe);
		if (end) {
			if (!class_match(p, end, u8dec(s, sn)))
				return false;
			*pp = end, *ss = s + sn;
			return true;
		}
	}
	if (*p == '?') {
		*pp = p + 1, *ss = s + sn;
		return true;
	}
	if (*p == '\\' && p + 1 < pe)
		p++;
	size_t pn = u8len(p, pe);
	if (pn != sn || memcmp(p, s, pn))
		return false;
	*pp = p + pn, *ss = s + sn;
	return true;
}

/* One segment, '*' backtracking to the last star only: linear-ish, no
 * exponential blow-up on "*a*a*a*b". */
static bool
seg_match(const char *p, const char *pe, const char *s, const char *se)
{
	const char *star_p = NULL, *star_s = NULL;
	for (;;) {
		if (p < pe && *p == '*') {
			while (p < pe && *p == '*')
				p++;
			star_p = p, star_s = s;
			continue;
		}
		if (s == se)
			return p == pe;
		if (p < pe && elem_match(&p, pe, &s, se))
			continue;
		if (!star_p)
			return false;
		star_s += u8len(star_s, se);
		p = star_p, s = star_s;
	}
}

/* The same star algorithm one level up: "**" is a star over segments. */
static bool
match_nobrace(const char *pat, const char *path)
{
	const char *p = pat, *s = path, *bp = NULL, *bs = NULL;
	while (*s) {
		const char *pe = seg_end(p), *se = seg_end(s);
		if (is_dstar(p, pe)) {
			bp = p = seg_next(pe);
			bs = s;
			continue;
		}
		if (*p && seg_match(p, pe, s, se)) {
			p = seg_next(pe);
			s = seg_next(se);
			continue;
		}
		if (!bp)
			return false;
		bs = seg_next(seg_end(bs));
		p = bp, s = bs;
	}
	for (; *p; p = seg_next(seg_end(p)))
		if (!is_dstar(p, seg_end(p)))
			return false;
	return true;
}

/* Could something below directory `dir` match? (prunes the walk) */
static bool
could_descend(const char *pat, const char *dir)
{
	const char *p = pat, *s = dir;
	while (*s) {
		const char *pe = seg_end(p), *se = seg_end(s);
		if (is_dstar(p, pe))
			return true;
		if (!*p || !seg_match(p, pe, s, se))
			return false;
		p = seg_next(pe);
		s = seg_next(se);
	}
	return *p != 0;
}

/* The first top-level {a,b} group (one with a comma; "{a}" is literal). */
static bool
find_braces(const char *pat, const char **open, const char **close)
{
	const char *end = pat + strlen(pat), *o = NULL;
	int depth = 0;
	bool comma = false;
	for (const char *s = pat; *s; s++) {
		const char *ce;
		if (*s == '\\' && s[1])
			s++;
		else if (*s == '[' && (ce = class_end(s, end)))
			s = ce - 1;
		else if (*s == '{' && depth++ == 0)
			o = s, comma = false;
		else if (*s == ',' && depth == 1)
			comma = true;
		else if (*s == '}' && depth > 0 && --depth == 0 && comma) {
			*open = o, *close = s;
			return true;
		}
	}
	return false;
}

/* End of the alternative starting at a: the next top-level ',' or close. */
static const char *
alt_end(const char *a, const char *close)
{
	int depth = 0;
	for (const char *s = a; s < close; s++) {
		if (*s == '\\' && s + 1 < close)
			s++;
		else if (*s == '{')
			depth++;
		else if (*s == '}' && depth)
			depth--;
		else if (*s == ',' && !depth)
			return s;
	}
	return close;
}

typedef bool (*alt_fn)(void *ctx, const char *pat);

/* Call fn for each brace expansion of pat, at most *budget of them; 1 if fn
 * returned true, 0 when all were seen, -1 over budget or too deep. */
static int
brace_each(const char *pat, int *budget, int depth, alt_fn fn, void *ctx)
{
	const char *o, *c;
	if (!find_braces(pat, &o, &c)) {
		if (--*budget < 0)
			return -1;
		return fn(ctx, pat) ? 1 : 0;
	}
	if (depth >= BRACE_DEPTH)
		return -1;
	size_t plen = strlen(pat);
	_cleanup_free_ char *buf = kl_xmalloc(plen + 1);
	for (const char *a = o + 1;;) {
		const char *e = alt_end(a, c);
		char *q = mempcpy(buf, pat, (size_t)(o - pat));
		q = mempcpy(q, a, (size_t)(e - a));
		memcpy(q, c + 1, plen - (size_t)(c + 1 - pat) + 1);
		int ret = brace_each(buf, budget, depth + 1, fn, ctx);
		if (ret != 0 || e == c)
			return ret;
		a = e + 1;
	}
}

static bool
match_one(void *ctx, const char *pat)
{
	return match_nobrace(pat, ctx);
}

bool
fs_glob_match(const char *pattern, const char *path)
{
	int budget = FS_GLOB_ALTS;
	return brace_each(pattern, &budget, 0, match_one, (void *)path) == 1;
}

/* ---- glob ---- */

typedef struct glob_hit {
	char *rel;
	struct timespec mtime;
} glob_hit;

typedef struct glob_ctx {
	char **pats; /* the pattern's brace expansions */
	size_t npats;
	glob_hit *hits;
	size_t n;
	size_t cap;
} glob_ctx;

static bool
collect_alt(void *ctx, const char *pat)
{
	glob_ctx *g = ctx;
	g->pats = kl_xrealloc(g->pats, (g->npats + 1) * sizeof(*g->pats));
	g->pats[g->npats++] = kl_xstrdup(pat);
	return false;
}

static void
glob_ctx_fini(glob_ctx *g)
{
	for (size_t i = 0; i < g->npats; i++)
		free(g->pats[i]);
	for (size_t i = 0; i < g->n; i++)
		free(g->hits[i].rel);
	free(g->pats);
	free(g->hits);
}

static int
glob_refuse(fs_result *r, const char *why)
{
	fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "glob: %s", why);
	return -1;
}

/* Refuse absolute patterns and `..` (ref), drop "." and empty segments. */
static int
glob_clean(const char *pattern, char *out, size_t size, fs_result *r)
{
	if (!*pattern)
		return glob_refuse(r, "pattern is empty");
	if (pattern[0] == '/')
		return glob_refuse(r, "absolute pattern not permitted; pass the directory as path");
	if (strnlen(pattern, size) >= size)
		return glob_refuse(r, "pattern is too long");
	size_t len = 0;
	for (const char *p = pattern; *p;) {
		const char *e = seg_end(p);
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return glob_refuse(r, "'..' is not permitted in the pattern");
		if (n && !(n == 1 && p[0] == '.')) {
			if (len)
				out[len++] = '/';
			memcpy(out + len, p, n);
			len += n;
		}
		p = seg_next(e);
	}
	out[len] = 0;
	if (!len)
		return glob_refuse(r, "pattern names no files");
	return 0;
}

static int
glob_visit(walk *w, int dirfd, const char *name, unsigned char type)
{
	glob_ctx *g = w->ctx;
	bool match = false, descend = false;
	for (size_t i = 0; i < g->npats && !(match && descend); i++) {
		match = match || match_nobrace(g->pats[i], w->rel);
		descend = descend || (type == DT_DIR && could_descend(g->pats[i], w->rel));
	}
	struct stat st;
	if (match && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (g->n == g->cap) {
			g->cap = g->cap ? g->cap * 2 : 64;
			g->hits = kl_xrealloc(g->hits, g->cap * sizeof(*g->hits));
		}
		g->hits[g->n++] = (glob_hit){kl_xstrdup(w->rel), st.st_mtim};
	}
	return descend ? WALK_DESCEND : WALK_SKIP;
}

/* Newest first; equal times by path, so the order is stable. */
static int
hit_cmp(const void *a, const void *b)
{
	const glob_hit *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
	return strcmp(x->rel, y->rel);
}

static void
walk_notes(fs_buf *b, const walk *w, const char *what)
{
	if (w->capped)
		fs_buf_printf(b, "[stopped after %d directory entries; %s are incomplete]\n",
		              FS_WALK_MAX, what);
	if (w->deep)
		fs_buf_printf(b, "[directories more than %d levels deep were not searched]\n",
		              FS_WALK_DEPTH);
}

static void
glob_output(glob_ctx *g, const walk *w, const char *base, fs_result *r)
{
	fs_buf b = {0};
	char line[2 * PATH_MAX];
	if (g->n)
		qsort(g->hits, g->n, sizeof(*g->hits), hit_cmp);
	for (size_t i = 0; i < g->n && i < FS_GLOB_MAX; i++) {
		join_path(line, sizeof(line), base, g->hits[i].rel);
		fs_buf_printf(&b, "%s\n", line);
	}
	if (!g->n)
		fs_buf_printf(&b, "no matches\n");
	if (g->n > FS_GLOB_MAX)
		fs_buf_printf(&b,
		              "[showing the %d most recently modified of %zu matches; use a more "
		              "specific pattern or path]\n",
		              FS_GLOB_MAX, g->n);
	walk_notes(&b, w, "results");
	fs_buf_to_text(&b, r);
	r->truncated = g->n > FS_GLOB_MAX || w->capped || w->deep;
}

/* Why a walk's starting point was refused; fills r and returns -1. */
static int
walk_fail(fs_result *r, const char *op, const char *display, int err, const char *fsname, bool dir)
{
	if (err == -EPERM && fsname)
		fs_fail(r, KILN__CODE__TOOL_ERROR, "%s: %s: refusing a %s on %s", op, display,
		        dir ? "directory" : "file", fsname);
	else
		fs_fail(r, KILN__CODE__TOOL_ERROR, "%s: %s: %s", op, display, fs_errstr(err));
	return -1;
}

static void
glob_run(glob_ctx *g, const fs_root *root, const char *base, const char *display, fs_result *r)
{
	int fd;
	const char *fsname = NULL;
	int e = fs_open_dir(root->rootfd, base, &fd, &fsname);
	if (e < 0) {
		(void)walk_fail(r, "glob", display, e, fsname, true);
		return;
	}
	walk w = {.fn = glob_visit, .ctx = g};
	walk_run(&w, fd, FS_WALK_DEPTH);
	close(fd);
	glob_output(g, &w, base, r);
}

static const char *
default_path(const fs_root *root, const char *path)
{
	if (path && *path)
		return path;
	return root->workdir && *root->workdir ? root->workdir : "/";
}

void
fs_tool_glob(const fs_root *root, const Kiln__GlobInput *in, fs_result *r)
{
	memset(r, 0, sizeof(*r));
	char pat[PATH_MAX], base[PATH_MAX];
	if (!in || glob_clean(in->pattern ? in->pattern : "", pat, sizeof(pat), r) < 0)
		return;
	const char *display = default_path(root, in->path);
	if (fs_abs_path(root->workdir, display, base, sizeof(base), r) < 0) {
		fs_msg_prefix(r, "glob");
		return;
	}
	glob_ctx g = {0};
	int budget = FS_GLOB_ALTS;
	if (brace_each(pat, &budget, 0, collect_alt, &g) < 0) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT,
		        "glob: pattern expands to more than %d alternatives ({a,b} groups)",
		        FS_GLOB_ALTS);
	} else {
		fs_creds c;
		if (fs_creds_enter_checked(root, &c, r) == 0) {
			glob_run(&g, root, base, display, r);
			fs_creds_leave(&c);
		}
	}
	glob_ctx_fini(&g);
}

/* ---- grep's regex dialect ---- */

/*
 * glibc's regcomp parses recursively and copies every repeated
 * subexpression: a pattern nested or stacked a few thousand levels deep
 * ("((((a", "a****") overflows the worker thread's stack and takes the whole
 * node down, and nested or long repetitions ("(a*){3000}", "x+++++++++++++++")
 * take minutes and gigabytes to compile; with back-references regexec is
 * exponential ("(.*)(.*)\2\1" on an 80-byte line: half a minute). The grep
 * workers are a small shared pool, so one such call stalled every tenant's
 * glob and grep on the node (found by fuzz_fstools). The translator bounds
 * what it hands to regcomp: nesting depth, and the pattern's size with each
 * repetition expanded the way glibc expands it, where a nullable part (x*,
 * x?) counts double since its epsilon closures cost glibc quadratically.
 * Back-references are refused, as ripgrep refuses them. Real patterns stay
 * far below these limits.
 */
#define RE_MAX_LEN   4096 /* bytes of pattern */
#define RE_MAX_DEPTH 32   /* nested groups */
#define RE_MAX_SIZE  1000 /* nodes once repetitions are expanded */

typedef struct re_size {
	uint32_t sum[RE_MAX_DEPTH + 1];  /* per open group: its finished part */
	uint32_t last[RE_MAX_DEPTH + 1]; /* its last item, which a quantifier repeats */
	int depth;
} re_size;

static uint32_t
re_cap(uint64_t v)
{
	return v > RE_MAX_SIZE ? RE_MAX_SIZE + 1 : (uint32_t)v;
}

static void
re_item(re_size *z, uint32_t cost)
{
	z->sum[z->depth] = re_cap((uint64_t)z->sum[z->depth] + z->last[z->depth]);
	z->last[z->depth] = cost;
}

/* A quantifier on the last item: the item is copied `copies` times. */
static void
re_repeat(re_size *z, uint64_t copies, bool nullable)
{
	uint64_t c = (uint64_t)z->last[z->depth] * (nullable ? 2 : 1);
	z->last[z->depth] = re_cap(c * (copies ? copies : 1) + 1);
}

static uint32_t
re_total(const re_size *z)
{
	uint64_t t = 0;
	for (int d = 0; d <= z->depth; d++)
		t += (uint64_t)z->sum[d] + z->last[d];
	return re_cap(t);
}

/* The larger bound of the interval at p ("{n}", "{n,}", "{n,m}", "{,m}"):
 * how many copies of its operand glibc makes. */
static uint64_t
re_interval_copies(const char *p)
{
	uint64_t n = 0, m = 0;
	bool comma = false, have_m = false;
	for (p++; *p && *p != '}'; p++) {
		if (*p == ',') {
			comma = true;
		} else if (*p >= '0' && *p <= '9') {
			uint64_t *v = comma ? &m : &n;
			*v = KL_MIN(*v * 10 + (uint64_t)(*p - '0'), (uint64_t)RE_MAX_SIZE + 1);
			have_m |= comma;
		} else {
			break;
		}
	}
	return comma ? (have_m ? m : n + 1) : n;
}

static int
re_refuse(fs_result *r, const char *what)
{
	fs_fail(r, KILN__CODE__INVALID_ARGUMENT,
	        "invalid regex: %s (grep uses POSIX extended regular expressions; see "
	        "docs/tools.md)",
	        what);
	return -1;
}

static size_t
u8enc(uint32_t cp, char *out)
{
	static const unsigned char lead[] = {0, 0, 0xc0, 0xe0, 0xf0};
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	size_t n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
	for (size_t i = n - 1; i > 0; i--, cp >>= 6)
		out[i] = (char)(0x80 | (cp & 0x3f));
	out[0] = (char)(lead[n] | cp);
	return n;
}

/* \xHH or \x{H...} after the "\x" at *pp; -1 if malformed (or NUL, which
 * would end the pattern handed to regcomp). */
static long
parse_hex(const char **pp)
{
	const char *p = *pp;
	bool braced = *p == '{';
	long cp = 0;
	int n = 0;
	for (p += braced; *p && strchr("0123456789abcdefABCDEF", *p) && n < (braced ? 6 : 2);
	     p++, n++)
		cp = cp * 16 + (*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
	if (!n || (braced && *p++ != '}') || !cp || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*pp = p;
	return cp;
}

/* A code point as a literal, escaped where ERE would give it a meaning. */
static void
add_literal(fs_buf *b, uint32_t cp, bool in_class)
{
	char u[4];
	size_t n = u8enc(cp, u);
	if (!in_class && cp && cp < 0x80 && strchr(".[]{}()*+?^$|\\", (int)cp))
		fs_buf_add(b, "\\", 1);
	fs_buf_add(b, u, n);
}

/* An escape outside brackets; *pp at the backslash. */
static int
tr_escape(fs_buf *b, const char **pp, fs_result *r)
{
	const char *p = *pp;
	static const char *const ctl[][2] = {{"t", "\t"},    {"n", "\n"}, {"r", "\r"},
	                                     {"f", "\f"},    {"v", "\v"}, {"d", "[0-9]"},
	                                     {"D", "[^0-9]"}};
	for (size_t i = 0; i < KL_ARRAY_SIZE(ctl); i++) {
		if (p[1] == ctl[i][0][0]) {
			fs_buf_add(b, ctl[i][1], strlen(ctl[i][1]));
			*pp = p + 2;
			return 0;
		}
	}
	if (p[1] == 'x') {
		const char *q = p + 2;
		long cp = parse_hex(&q);
		if (cp < 0)
			return re_refuse(r, "malformed \\x escape");
		add_literal(b, (uint32_t)cp, false);
		*pp = q;
		return 0;
	}
	if (p[1] == 'p' || p[1] == 'P')
		return re_refuse(r, "Unicode classes (\\p{...}) are not supported");
	if (p[1] >= '1' && p[1] <= '9')
		return re_refuse(r, "back-references (\\1) are not supported");
	/* \w \s \b \< \1 and escaped punctuation: glibc's ERE knows them.
	 * A trailing backslash is left for regcomp to report. */
	fs_buf_add(b, p, p[1] ? 2 : 1);
	*pp = p + (p[1] ? 2 : 1);
	return 0;
}

/* A [...] class. POSIX takes backslashes in brackets literally, so escapes
 * are rewritten and ']' / '-' moved where POSIX reads them as members. */
static int
tr_class(fs_buf *b, const char **pp, fs_result *r)
{
	const char *s = *pp + 1;
	bool neg = *s == '^', rbracket = false, dash = false, caret = false;
	fs_buf items = {0};
	s += neg;
	for (bool first = true; *s != ']' || first; first = false) {
		if (!*s) {
			fs_buf_fini(&items);
			return re_refuse(r, "unterminated [ class");
		}
		if (*s == ']') {
			rbracket = true;
			s++;
		} else if (s[0] == '[' && s[1] == ':' && strstr(s + 2, ":]")) {
			const char *e = strstr(s + 2, ":]") + 2;
			fs_buf_add(&items, s, (size_t)(e - s));
			s = e;
		} else if (*s == '\\' && s[1]) {
			char c = s[1];
			s += 2;
			if (strchr("DWS", c)) {
				fs_buf_fini(&items);
				return re_refuse(r,
				                 "\\D, \\W and \\S are not supported inside [...]");
			}
			const char *rep = c == 'd'   ? "0-9"
			                  : c == 'w' ? "[:alnum:]_"
			                  : c == 's' ? "[:space:]"
			                  : c == 't' ? "\t"
			                  : c == 'n' ? "\n"
			                  : c == 'r' ? "\r"
			                             : NULL;
			if (rep)
				fs_buf_add(&items, rep, strlen(rep));
			else if (c == ']')
				rbracket = true;
			else if (c == '-')
				dash = true;
			else if (c == '^')
				caret = true;
			else
				fs_buf_add(&items, &c, 1);
		} else {
			fs_buf_add(&items, s++, 1);
		}
	}
	*pp = s + 1;
	if (!items.len && !rbracket && !dash && caret && !neg) {
		fs_buf_add(b, "\\^", 2);
		return 0;
	}
	fs_buf_printf(b, "[%s%s%s%s%s]", neg ? "^" : "", rbracket ? "]" : "",
	              items.p ? items.p : "", caret ? "^" : "", dash ? "-" : "");
	fs_buf_fini(&items);
	return 0;
}

#define RE_STACKED "a quantifier cannot follow another; group the first, as in (a+)*"

/* One token of the pattern outside brackets. *quant says whether it was a
 * quantifier (a '?' after one makes it lazy, which we drop); after_quant
 * whether the previous token was one. z tracks the size glibc will build. */
static int
tr_token(fs_buf *b, const char **pp, bool after_quant, bool *quant, bool *interval, re_size *z,
         fs_result *r)
{
	const char *p = *pp;
	*quant = false;
	switch (*p) {
	case '\\':
		re_item(z, 1);
		return tr_escape(b, pp, r);
	case '[':
		re_item(z, 1);
		return tr_class(b, pp, r);
	case '(':
		if (p[1] == '?' && p[2] != ':')
			return re_refuse(r, "look-around and inline flags other than a leading "
			                    "(?i) are not supported");
		if (z->depth == RE_MAX_DEPTH)
			return re_refuse(r, "groups are nested too deeply");
		z->depth++;
		z->sum[z->depth] = z->last[z->depth] = 0;
		*pp = p + (p[1] == '?' ? 3 : 1);
		fs_buf_add(b, "(", 1);
		return 0;
	case ')':
		if (z->depth > 0) {
			uint64_t g = (uint64_t)z->sum[z->depth] + z->last[z->depth] + 1;
			z->depth--;
			re_item(z, re_cap(g));
		} else {
			re_item(z, 1);
		}
		break;
	case '|':
		z->sum[z->depth] = re_cap((uint64_t)z->sum[z->depth] + z->last[z->depth] + 1);
		z->last[z->depth] = 0;
		break;
	case '{':
		*interval = (p[1] >= '0' && p[1] <= '9') || p[1] == ',';
		if (!*interval)
			re_item(z, 1);
		else if (after_quant)
			return re_refuse(r, RE_STACKED);
		else
			re_repeat(z, re_interval_copies(p), false);
		break;
	case '}':
		*quant = *interval;
		if (!*interval)
			re_item(z, 1);
		*interval = false;
		break;
	case '*':
	case '+':
	case '?':
		if (after_quant)
			return re_refuse(r, RE_STACKED);
		re_repeat(z, *p == '+' ? 2 : 1, *p != '+');
		*quant = true;
		break;
	default:
		/* An interval's digits are not items; anything else ends it. */
		if (*interval && !((*p >= '0' && *p <= '9') || *p == ','))
			*interval = false;
		if (!*interval)
			re_item(z, 1);
		break;
	}
	fs_buf_add(b, p, 1);
	*pp = p + 1;
	return 0;
}

int
fs_regex_translate(const char *pattern, char **ret, int *ret_cflags, fs_result *r)
{
	int cflags = REG_EXTENDED | REG_NEWLINE;
	const char *p = pattern ? pattern : "";
	if (strnlen(p, RE_MAX_LEN + 1) > RE_MAX_LEN)
		return re_refuse(r, "the pattern is longer than 4096 bytes");
	if (!strncmp(p, "(?i)", 4)) {
		cflags |= REG_ICASE;
		p += 4;
	}
	fs_buf b = {0};
	re_size z = {0};
	bool quant = false, lazy = false, interval = false;
	while (*p) {
		/* Lazy and greedy quantifiers match the same lines. A quantifier
		 * after the lazy mark is still stacked on the first. */
		if (lazy && *p == '?') {
			lazy = false;
			p++;
			continue;
		}
		if (tr_token(&b, &p, quant, &quant, &interval, &z, r) < 0) {
			fs_buf_fini(&b);
			return -1;
		}
		lazy = quant;
		if (re_total(&z) > RE_MAX_SIZE) {
			fs_buf_fini(&b);
			return re_refuse(r, "the pattern is too large once its repetitions are "
			                    "expanded");
		}
	}
	fs_buf_add(&b, "", 0);
	*ret = b.p;
	*ret_cflags = cflags;
	return 0;
}

/* ---- grep ---- */

typedef struct grep_ctx {
	regex_t re;
	fs_buf out;
	char *chunk; /* GREP_CHUNK bytes */
	char *line;  /* a line that spans reads, up to FS_GREP_LINE_MAX + 1 bytes */
	const char *base;
	uint64_t scanned;
	bool full;     /* FS_GREP_MAX of output */
	bool scan_cap; /* FS_GREP_SCAN_MAX read */
	/* FS_GREP_TIME_MS spent: a worker is shared by every tenant, and even a
	 * bounded regex can cost glibc milliseconds a line ("a{999}"). */
	bool time_cap;
	uint64_t deadline_ns;
	char path[2 * PATH_MAX];
} grep_ctx;

static void
grep_line(grep_ctx *g, uint64_t lineno, const char *s, size_t n)
{
	while (n && s[n - 1] == '\r')
		n--;
	if (n > FS_GREP_LINE_MAX)
		return;
	/* A NUL-terminated copy: REG_STARTEND alone would do for glibc, but
	 * sanitizers' regexec interceptors strlen() the subject. */
	if (s != g->line)
		memcpy(g->line, s, n);
	g->line[n] = 0;
	s = g->line;
	regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)n};
	int e = regexec(&g->re, s, 1, &m, REG_STARTEND);
	if (kl_now_ns() > g->deadline_ns)
		g->time_cap = true;
	if (e != 0)
		return;
	char num[32];
	int k = snprintf(num, sizeof(num), ":%" PRIu64 ":", lineno);
	size_t plen = strlen(g->path);
	if (g->out.len + plen + (size_t)k + n + 1 > FS_GREP_MAX) {
		g->full = true;
		return;
	}
	fs_buf_add(&g->out, g->path, plen);
	fs_buf_add(&g->out, num, (size_t)k);
	fs_buf_add(&g->out, s, n);
	fs_buf_add(&g->out, "\n", 1);
}

/* Fill the chunk (short only at end of file): the binary probe needs the
 * first 8 KiB in one piece. */
static ssize_t
read_chunk(int fd, char *buf, size_t size)
{
	size_t len = 0;
	while (len < size) {
		ssize_t n = read(fd, buf + len, size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return len ? (ssize_t)len : -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	return (ssize_t)len;
}

typedef struct grep_file {
	uint64_t lineno;
	size_t linelen;
	bool longline; /* the current line passed FS_GREP_LINE_MAX: skipped */
} grep_file;

static void
grep_chunk(grep_ctx *g, grep_file *f, const char *p, const char *e)
{
	while (p < e && !g->full && !g->time_cap) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		const char *le = nl ? nl : e;
		size_t k = (size_t)(le - p);
		if (nl && !f->linelen && !f->longline) {
			grep_line(g, ++f->lineno, p, k);
		} else {
			if (!f->longline && f->linelen + k <= FS_GREP_LINE_MAX + 1) {
				memcpy(g->line + f->linelen, p, k);
				f->linelen += k;
			} else {
				f->longline = true;
			}
			if (nl) {
				f->lineno++;
				if (!f->longline)
					grep_line(g, f->lineno, g->line, f->linelen);
				f->linelen = 0;
				f->longline = false;
			}
		}
		p = nl ? nl + 1 : e;
	}
}

static void
grep_fd(grep_ctx *g, int fd)
{
	grep_file f = {0};
	for (bool first = true;; first = false) {
		ssize_t n = read_chunk(fd, g->chunk, GREP_CHUNK);
		if (n <= 0)
			break;
		if (first && memchr(g->chunk, 0, KL_MIN((size_t)n, GREP_BINARY_PROBE)))
			return;
		g->scanned += (uint64_t)n;
		grep_chunk(g, &f, g->chunk, g->chunk + n);
		if (g->full || g->time_cap)
			return;
		if (g->scanned >= FS_GREP_SCAN_MAX) {
			g->scan_cap = true;
			return;
		}
		if ((size_t)n < GREP_CHUNK)
			break;
	}
	if (f.linelen && !f.longline)
		grep_line(g, f.lineno + 1, g->line, f.linelen);
}

static int
grep_visit(walk *w, int dirfd, const char *name, unsigned char type)
{
	grep_ctx *g = w->ctx;
	if (type == DT_DIR)
		return strcmp(name, ".git") && strcmp(name, "node_modules") ? WALK_DESCEND
		                                                            : WALK_SKIP;
	if (type != DT_REG)
		return WALK_SKIP; /* symlinks are not followed; FIFOs, devices never opened */
	int fd = fs_open_child(dirfd, name, S_IFREG, O_RDONLY);
	if (fd < 0)
		return WALK_SKIP;
	join_path(g->path, sizeof(g->path), g->base, w->rel);
	grep_fd(g, fd);
	close(fd);
	w->stop = g->full || g->scan_cap || g->time_cap;
	return WALK_SKIP;
}

/* path may name a directory (walked) or one regular file. */
static int
grep_target(grep_ctx *g, const fs_root *root, walk *w, const char *display, fs_result *r)
{
	_cleanup_close_ int pfd = fs_openat2(root->rootfd, g->base, O_PATH, 0);
	struct stat st;
	if (pfd < 0 || fstat(pfd, &st) < 0)
		return walk_fail(r, "grep", display, pfd < 0 ? pfd : -errno, NULL, false);
	bool dir = S_ISDIR(st.st_mode);
	if (!dir && !S_ISREG(st.st_mode)) {
		fs_fail(r, KILN__CODE__TOOL_ERROR, "grep: %s: not a regular file", display);
		return -1;
	}
	const char *fsname = NULL;
	int e = fs_check_fs(pfd, &fsname);
	int fd = e < 0 ? e : fs_reopen(pfd, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
	if (fd < 0)
		return walk_fail(r, "grep", display, fd, fsname, dir);
	if (dir) {
		walk_run(w, fd, FS_WALK_DEPTH);
	} else {
		kl_strlcpy(g->path, g->base, sizeof(g->path));
		grep_fd(g, fd);
	}
	close(fd);
	return 0;
}

static void
grep_run(grep_ctx *g, const fs_root *root, const char *display, fs_result *r)
{
	walk w = {.fn = grep_visit, .ctx = g};
	g->chunk = kl_xmalloc(GREP_CHUNK);
	g->line = kl_xmalloc(FS_GREP_LINE_MAX + 2);
	g->deadline_ns = kl_now_ns() + FS_GREP_TIME_MS * 1000000ull;
	if (grep_target(g, root, &w, display, r) == 0) {
		if (!g->out.len)
			fs_buf_printf(&g->out, "no matches\n");
		if (g->full)
			fs_buf_printf(&g->out, "[output truncated at %u bytes]\n", FS_GREP_MAX);
		if (g->scan_cap)
			fs_buf_printf(
			        &g->out,
			        "[stopped after reading %llu MiB of files; narrow the path]\n",
			        FS_GREP_SCAN_MAX >> 20);
		if (g->time_cap)
			fs_buf_printf(&g->out,
			              "[stopped after %u s of searching; narrow the path or "
			              "simplify the pattern]\n",
			              FS_GREP_TIME_MS / 1000);
		walk_notes(&g->out, &w, "matches");
		fs_buf_to_text(&g->out, r);
		r->truncated = g->full || g->scan_cap || g->time_cap || w.capped || w.deep;
	}
	free(g->chunk);
	free(g->line);
	fs_buf_fini(&g->out);
}

void
fs_tool_grep(const fs_root *root, const Kiln__GrepInput *in, fs_result *r)
{
	memset(r, 0, sizeof(*r));
	if (!in) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "grep: no input");
		return;
	}
	char base[PATH_MAX];
	const char *display = default_path(root, in->path);
	if (fs_abs_path(root->workdir, display, base, sizeof(base), r) < 0) {
		fs_msg_prefix(r, "grep");
		return;
	}
	_cleanup_free_ char *ere = NULL;
	int cflags;
	if (fs_regex_translate(in->pattern, &ere, &cflags, r) < 0) {
		fs_msg_prefix(r, "grep");
		return;
	}
	grep_ctx g = {.base = base};
	int e = regcomp(&g.re, ere, cflags | REG_NOSUB);
	if (e) {
		char why[256];
		regerror(e, &g.re, why, sizeof(why));
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "grep: invalid regex: %s", why);
		return;
	}
	fs_creds c;
	if (fs_creds_enter_checked(root, &c, r) == 0) {
		grep_run(&g, root, display, r);
		fs_creds_leave(&c);
	}
	regfree(&g.re);
}

/* ---- the text editor's directory view ---- */

typedef struct view_ctx {
	fs_buf out;
	const char *base;
	char line[2 * PATH_MAX];
} view_ctx;

static int
view_visit(walk *w, int dirfd, const char *name, unsigned char type)
{
	view_ctx *v = w->ctx;
	if (name[0] == '.')
		return WALK_SKIP;
	join_path(v->line, sizeof(v->line), v->base, w->rel);
	fs_buf_printf(&v->out, "%s\n", v->line);
	return type == DT_DIR ? WALK_DESCEND : WALK_SKIP;
}

int
fs_dir_view(const fs_root *root, const char *abspath, uint32_t max_chars, fs_result *r)
{
	int fd;
	const char *fsname = NULL;
	int e = fs_open_dir(root->rootfd, abspath, &fd, &fsname);
	if (e < 0) {
		if (e == -EPERM && fsname)
			fs_fail(r, KILN__CODE__TOOL_ERROR, "%s: refusing a directory on %s",
			        abspath, fsname);
		else
			fs_fail(r, KILN__CODE__TOOL_ERROR, "%s: %s", abspath, fs_errstr(e));
		return -1;
	}
	view_ctx v = {.base = abspath};
	fs_buf_printf(&v.out,
	              "Here's the files and directories up to 2 levels deep in %s, excluding "
	              "hidden items:\n%s\n",
	              abspath, abspath);
	walk w = {.fn = view_visit, .ctx = &v};
	walk_run(&w, fd, 2);
	close(fd);
	walk_notes(&v.out, &w, "entries");
	fs_buf_to_text(&v.out, r);
	r->truncated = w.capped;
	fs_clip_text(r, max_chars);
	return 0;
}
