/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File tools (read, write, edit, glob, grep and the text-editor form) that run
 * inside the node, with no process spawned, against a sandbox's root
 * directory. Every path is resolved with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS) relative to the sandbox root fd, so `..`, absolute
 * symlinks and /proc magic links can never lead outside the sandbox; files on
 * procfs, sysfs, cgroupfs, devpts and device/FIFO/socket nodes are refused.
 * All filesystem access runs with the sandbox's host uid/gid as the thread's
 * fsuid/fsgid (so permission checks are the sandbox user's, and created files
 * belong to it).
 *
 * Two layers:
 *  - pure helpers (no I/O): path normalisation, view ranges, edits, glob and
 *    grep matching, numbered views. The node's io_uring code uses them around
 *    its own reads and writes.
 *  - synchronous operations on a root fd (fs_open_read, fs_write_prepare, ...,
 *    and fs_run for whole tools). Safe to call from any thread; they switch
 *    the calling thread's fsuid/fsgid for their duration and restore it.
 *
 * Behaviour follows ../shared/TOOLS.md (the agent toolset and the text editor
 * tool); docs/tools.md lists where kiln differs.
 */
#ifndef NODE_FSTOOLS_H
#define NODE_FSTOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kiln.pb-c.h"

#define FS_READ_MAX      (256u << 10) /* read: larger files are refused (TOOLS.md) */
#define FS_GLOB_MAX      200          /* glob: newest-first matches kept */
#define FS_GREP_MAX      (100u << 10) /* grep: output cap */
#define FS_GREP_LINE_MAX 2000         /* grep: longer lines are skipped */
#define FS_WRITE_MAX     (64u << 20)  /* write/edit: largest content accepted */
#define FS_WALK_MAX      100000       /* glob/grep: most directory entries visited */
#define FS_WALK_DEPTH    64           /* glob/grep: deepest directory level entered */
#define FS_GREP_SCAN_MAX (1ull << 30) /* grep: most file bytes read by one call */
#define FS_GREP_TIME_MS  30000        /* grep: most time one call searches */
#define FS_GLOB_ALTS     256          /* glob: most patterns one {a,b} pattern expands to */

typedef struct fs_root {
	int rootfd; /* dirfd of the sandbox's "/" (O_PATH is fine); not owned */
	uid_t uid;  /* host uid the sandbox's files belong to */
	gid_t gid;
	const char *workdir; /* absolute path inside the sandbox, e.g. "/workspace" */
	bool fsync;          /* fsync written files before the rename */
} fs_root;

/* The outcome of a file tool. Heap strings; free with fs_result_fini. */
typedef struct fs_result {
	int code;      /* KILN__CODE__OK, _TOOL_ERROR, _INVALID_ARGUMENT (_INTERNAL: creds) */
	bool is_error; /* as the agent should see it (code != OK) */
	char *text;    /* tool output (file text, matches, listing); may be NULL */
	size_t text_len;
	char *message; /* error text, or a confirmation ("wrote 12 bytes to a.txt") */
	uint32_t replacements;
	bool truncated; /* output was cut (grep cap, glob cap, max_characters) */
} fs_result;

/* Free r's strings and zero it. The pure helpers below expect a zeroed (or
 * finalised) r; the tools (fs_run, fs_tool_*) zero r themselves on entry,
 * without freeing what it held. */
void fs_result_fini(fs_result *r);
/* Set r to an error (code, printf-style message), dropping any text it held.
 * Returns 0 so callers can `return`. */
int fs_fail(fs_result *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- pure helpers ---- */

/* Turn a tool path into an absolute path inside the sandbox. Relative paths
 * are taken from workdir; a relative path whose `..` segments climb above
 * workdir is refused ("path escapes the working directory"). Absolute paths
 * are kept (they resolve inside the sandbox root). Empty paths and paths
 * longer than PATH_MAX are refused (a NUL byte ends the C string, so nothing
 * after one is ever seen). Output is lexically cleaned ("a//b/./c" ->
 * "a/b/c", `..` against the string). Returns 0 or fills r and returns -1. */
int fs_abs_path(const char *workdir, const char *path, char *out, size_t outlen, fs_result *r);

/* Check that buf is valid UTF-8 (no overlongs, no surrogates). */
bool fs_utf8_valid(const char *buf, size_t len);

/* read's view_range: lines [start, end] (1-based, inclusive; end <= 0 means
 * to the end). Writes the slice offset and length into *off and *outlen. Errors (start < 1,
 * start past the end, end < start) fill r and return -1. */
int fs_view_slice(const char *buf, size_t len, const int64_t *range, size_t nrange, size_t *off,
                  size_t *outlen, fs_result *r);

/* edit / str_replace: replace old with new in buf. Without replace_all, old
 * must occur exactly once; zero and n > 1 occurrences are distinct errors
 * ("old_string not found in FILE" / "old_string appears N times in FILE (must
 * be unique); add context or set replace_all"). Empty old is refused. On
 * success *out is a new heap buffer and *count the number of replacements. */
int fs_replace(const char *buf, size_t len, const char *old, size_t oldlen, const char *new_,
               size_t newlen, bool replace_all, const char *display_path, char **out,
               size_t *outlen, uint32_t *count, fs_result *r);

/* Non-overlapping occurrences of needle (nlen > 0) in buf, counted left to
 * right as Python's str.count does: what edit's uniqueness rule counts. */
size_t fs_count_occurrences(const char *buf, size_t len, const char *needle, size_t nlen);

/* text editor `view` of a file: "%6d\t%s\n" numbered lines (cat -n style) of
 * the view range; cut to max_chars (0 = no cap) with a truncation note. */
int fs_number_lines(const char *buf, size_t len, const int64_t *range, size_t nrange,
                    uint32_t max_chars, fs_result *r);

/* text editor `insert`: insert text after line `after` (0 = at the start). */
int fs_insert_lines(const char *buf, size_t len, int64_t after, const char *text, size_t textlen,
                    char **out, size_t *outlen, fs_result *r);

/* doublestar match of a slash-separated relative path against a pattern
 * ("**" matches zero or more whole segments; "*", "?", "[...]" within one
 * segment, and they match leading dots too). */
bool fs_glob_match(const char *pattern, const char *path);

/* grep's dialect (docs/tools.md): translate a ripgrep-style pattern to POSIX
 * ERE for regcomp. A leading "(?i)" becomes REG_ICASE; \d, \D, \t, \xHH,
 * "(?:" and the \d \w \s escapes inside [...] are rewritten; lazy
 * quantifiers become greedy (same lines match). Look-around, other inline
 * flags, \p{...} and back-references are refused, and so are patterns that
 * glibc would take too long to compile (stacked quantifiers, deep nesting,
 * large expanded repetitions: docs/tools.md). On success *ret is a heap string and
 * *ret_cflags the regcomp flags (REG_EXTENDED | REG_NEWLINE [| REG_ICASE]);
 * else r is filled (INVALID_ARGUMENT) and -1 returned. */
int fs_regex_translate(const char *pattern, char **ret, int *ret_cflags, fs_result *r);

/* Cut r->text to at most max_chars characters (code points), at the last
 * line break that fits when there is one, and append a "<response clipped>"
 * note; sets r->truncated. max_chars = 0: no cap. */
void fs_clip_text(fs_result *r, uint32_t max_chars);

/* A growing NUL-terminated output buffer (aborts on OOM, like kl_xmalloc). */
typedef struct fs_buf {
	char *p;
	size_t len;
	size_t cap;
} fs_buf;
void fs_buf_add(fs_buf *b, const void *s, size_t n);
void fs_buf_printf(fs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Move the contents into r->text / r->text_len ("" when empty); b is reset. */
void fs_buf_to_text(fs_buf *b, fs_result *r);
void fs_buf_fini(fs_buf *b);

/* Prefix r->message with "op: " (the tool's name), as the reference toolset
 * words every error. No-op when op or the message is NULL. */
void fs_msg_prefix(fs_result *r, const char *op);

/* Lower-case reason for an errno value, in the reference toolset's words
 * ("no such file or directory", "permission denied", ...). Static string. */
const char *fs_errstr(int err);

/* ---- synchronous operations on a sandbox root ---- */

/* Resolve `path` (already absolute inside the sandbox) for reading: a regular
 * file on an allowed filesystem. Returns an O_RDONLY|O_CLOEXEC fd and its
 * size, or fills r ("no such file", "is a directory", "not a regular file",
 * "file is larger than 256 KiB; read a slice with head, tail or sed", ...).
 * max = 0 means FS_READ_MAX. Returns 0, or -1 with r filled. */
int fs_open_read(const fs_root *root, const char *abspath, size_t max, int *ret_fd,
                 size_t *ret_size, fs_result *r);

/* Prepare an atomic write of `abspath`: create missing parent directories
 * (mode 0755, owned by the sandbox user), open the parent, and create a
 * temporary file next to the target (O_EXCL, mode 0644 or the existing
 * file's mode). The caller writes the data to *ret_tmpfd, then calls
 * fs_write_commit (or fs_write_abort). A symlink as the last component is
 * followed (inside the sandbox), so the file it names is replaced, not the
 * link. Returns 0, or -1 with r filled (w then holds no fds). */
typedef struct fs_write {
	int dirfd; /* parent directory */
	int tmpfd; /* the temporary file, O_WRONLY */
	char tmpname[64];
	char name[256]; /* final name in dirfd */
	bool existed;   /* the target existed before */
} fs_write;
int fs_write_prepare(const fs_root *root, const char *abspath, fs_write *w, fs_result *r);
/* fsync (if root->fsync) and rename over the target; closes the fds (also
 * on failure, when the temporary file is removed). Returns 0 or -1. */
int fs_write_commit(const fs_root *root, fs_write *w, fs_result *r);
/* Remove the temporary file and close the fds. */
void fs_write_abort(const fs_root *root, fs_write *w);

/* The building blocks the tools share (fs_walk.c uses them too). Each
 * returns an fd or 0 on success, -errno on failure; none switches creds. */

/* openat2(dirfd, path, flags | O_CLOEXEC, RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS): dirfd acts as "/" for `..` and absolute symlinks.
 * Retries EAGAIN/EINTR (a concurrent rename makes the kernel refuse). */
int fs_openat2(int dirfd, const char *path, int flags, mode_t mode);
/* Reopen an O_PATH fd with real open flags through /proc/self/fd (the type
 * was checked on the O_PATH fd, so no FIFO or device is ever opened). Needs
 * /proc mounted in the caller's mount namespace. */
int fs_reopen(int pathfd, int flags);
/* -EPERM if fd lives on a pseudo filesystem the tools refuse (procfs, sysfs,
 * cgroupfs, devpts, debugfs, securityfs, bpf, ...), naming it in *ret_name
 * (may be NULL); 0 for ordinary filesystems. */
int fs_check_fs(int fd, const char **ret_name);
/* Open directory `abspath` of the sandbox for reading (getdents): -ENOTDIR
 * if it is not one, -EPERM (with *ret_name) on a refused filesystem. */
int fs_open_dir(int rootfd, const char *abspath, int *ret_fd, const char **ret_name);
/* Open entry `name` of dirfd without following a symlink, only if it is of
 * type `type` (S_IFREG or S_IFDIR) on an allowed filesystem; -EINVAL for
 * another type. flags: O_RDONLY (| O_DIRECTORY). */
int fs_open_child(int dirfd, const char *name, mode_t type, int flags);

/* text editor `view` of a directory (fs_walk.c): the entries up to two levels
 * below `abspath`, hidden ones (".*") left out, one absolute path a line
 * after a header line, cut to max_chars (0 = no cap). The caller has
 * switched creds. Returns 0 or fills r and returns -1. */
int fs_dir_view(const fs_root *root, const char *abspath, uint32_t max_chars, fs_result *r);

/* Run one whole file tool synchronously: read, write, edit, glob, grep or
 * editor (view/create/str_replace/insert). `call` must have one of those
 * oneof cases set; anything else is INVALID_ARGUMENT. Always fills r. */
void fs_run(const fs_root *root, const Kiln__ToolCall *call, fs_result *r);

/* Individual tools (fs_run dispatches to them). */
void fs_tool_read(const fs_root *root, const Kiln__ReadInput *in, fs_result *r);
void fs_tool_write(const fs_root *root, const Kiln__WriteInput *in, fs_result *r);
void fs_tool_edit(const fs_root *root, const Kiln__EditInput *in, fs_result *r);
void fs_tool_glob(const fs_root *root, const Kiln__GlobInput *in, fs_result *r);
void fs_tool_grep(const fs_root *root, const Kiln__GrepInput *in, fs_result *r);
void fs_tool_editor(const fs_root *root, const Kiln__EditorInput *in, fs_result *r);

/* Switch the calling thread's fsuid/fsgid to the sandbox user (and back).
 * setfsuid clears CAP_DAC_OVERRIDE & co. from the effective set while active. */
typedef struct fs_creds {
	uid_t olduid;
	gid_t oldgid;
} fs_creds;
void fs_creds_enter(const fs_root *root, fs_creds *saved);
void fs_creds_leave(const fs_creds *saved);
/* fs_creds_enter, then read the ids back (setfsuid reports no error): if the
 * switch did not take, restore, fill r (INTERNAL) and return -1. */
int fs_creds_enter_checked(const fs_root *root, fs_creds *saved, fs_result *r);

#endif
