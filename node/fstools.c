/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The file tools' path handling, pure text helpers, and the read, write, edit
 * and text-editor tools. A tool path is first cleaned lexically (fs_abs_path,
 * which also refuses relative paths that climb out of the working directory),
 * then resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from
 * the sandbox root fd as O_PATH, so the file's type and filesystem are checked
 * before anything is really opened (a FIFO or a device is never opened), and
 * only then reopened through /proc/self/fd with the real flags. Writes go to
 * a temporary file beside the target and are renamed over it. Everything
 * that touches the filesystem runs with the sandbox user's fsuid/fsgid.
 * Directory walks (glob, grep, the editor's directory view) are in fs_walk.c.
 */
#include "fstools.h"

#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

/* Hops followed by hand when a write's last component is a symlink: the
 * kernel's own limit for one path resolution. */
#define FS_SYMLINK_MAX 40
/* write_file's "create found the file there" (r is left for the caller). */
#define FS_EXISTS (-2)
/* Lines of context around an editor change in the snippet it returns (ref). */
#define FS_SNIPPET_LINES 4
/* How much of a user string (old_str) an error message quotes. */
#define FS_QUOTE_MAX 200

#ifndef CONFIGFS_MAGIC
#define CONFIGFS_MAGIC 0x62656570
#endif
#define FUSECTL_MAGIC   0x65735543
#define MQUEUE_MAGIC    0x19800202
#define NFSD_MAGIC      0x6e667364
#define RPCPIPEFS_MAGIC 0x67596969

/* Filesystems whose "files" are kernel interfaces, not data: reading them
 * leaks host state and writing them changes it. A denylist (rather than an
 * allowlist) so that any real filesystem a template uses keeps working. */
static const struct {
	uint32_t magic;
	const char *name;
} pseudo_fs[] = {
        {PROC_SUPER_MAGIC, "procfs"},
        {SYSFS_MAGIC, "sysfs"},
        {CGROUP_SUPER_MAGIC, "cgroupfs"},
        {CGROUP2_SUPER_MAGIC, "cgroup2fs"},
        {DEVPTS_SUPER_MAGIC, "devpts"},
        {DEBUGFS_MAGIC, "debugfs"},
        {TRACEFS_MAGIC, "tracefs"},
        {SECURITYFS_MAGIC, "securityfs"},
        {SELINUX_MAGIC, "selinuxfs"},
        {SMACK_MAGIC, "smackfs"},
        {AAFS_MAGIC, "apparmorfs"},
        {BPF_FS_MAGIC, "bpffs"},
        {PSTOREFS_MAGIC, "pstore"},
        {EFIVARFS_MAGIC, "efivarfs"},
        {BINFMTFS_MAGIC, "binfmt_misc"},
        {NSFS_MAGIC, "nsfs"},
        {PIPEFS_MAGIC, "pipefs"},
        {SOCKFS_MAGIC, "sockfs"},
        {ANON_INODE_FS_MAGIC, "anon_inodefs"},
        {BDEVFS_MAGIC, "bdev"},
        {RDTGROUP_SUPER_MAGIC, "resctrl"},
        {AUTOFS_SUPER_MAGIC, "autofs"},
        {OPENPROM_SUPER_MAGIC, "openpromfs"},
        {USBDEVICE_SUPER_MAGIC, "usbfs"},
        {BINDERFS_SUPER_MAGIC, "binderfs"},
        {DMA_BUF_MAGIC, "dmabuf"},
        {DEVMEM_MAGIC, "devmem"},
        {SECRETMEM_MAGIC, "secretmem"},
        {XENFS_SUPER_MAGIC, "xenfs"},
        {CONFIGFS_MAGIC, "configfs"},
        {FUSECTL_MAGIC, "fusectl"},
        {MQUEUE_MAGIC, "mqueue"},
        {NFSD_MAGIC, "nfsd"},
        {RPCPIPEFS_MAGIC, "rpc_pipefs"},
};

/* ---- results and buffers ---- */

static char *vfmt(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

static char *
vfmt(const char *fmt, va_list ap)
{
	char *s;
	if (vasprintf(&s, fmt, ap) < 0) {
		fprintf(stderr, "kiln: out of memory formatting a message\n");
		abort();
	}
	return s;
}

void
fs_result_fini(fs_result *r)
{
	if (!r)
		return;
	free(r->text);
	free(r->message);
	memset(r, 0, sizeof(*r));
}

int
fs_fail(fs_result *r, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = vfmt(fmt, ap);
	va_end(ap);
	fs_result_fini(r);
	r->code = code;
	r->is_error = code != KILN__CODE__OK;
	r->message = msg;
	return 0;
}

static void fs_ok(fs_result *r, const char *fmt, ...) KL_PRINTF(2, 3);

/* Success with a confirmation message; text and counters are kept. */
static void
fs_ok(fs_result *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = vfmt(fmt, ap);
	va_end(ap);
	free(r->message);
	r->message = msg;
	r->code = KILN__CODE__OK;
	r->is_error = false;
}

void
fs_msg_prefix(fs_result *r, const char *op)
{
	if (!op || !r->message)
		return;
	char *m = kl_xasprintf("%s: %s", op, r->message);
	free(r->message);
	r->message = m;
}

static void
fs_buf_reserve(fs_buf *b, size_t n)
{
	if (b->len + n + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n + 1)
		cap *= 2;
	b->p = kl_xrealloc(b->p, cap);
	b->cap = cap;
}

void
fs_buf_add(fs_buf *b, const void *s, size_t n)
{
	fs_buf_reserve(b, n);
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

void
fs_buf_printf(fs_buf *b, const char *fmt, ...)
{
	va_list ap, aq;
	va_start(ap, fmt);
	va_copy(aq, ap);
	int n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (n < 0)
		abort();
	fs_buf_reserve(b, (size_t)n);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
fs_buf_to_text(fs_buf *b, fs_result *r)
{
	free(r->text);
	r->text = b->p ? b->p : kl_xstrdup("");
	r->text_len = b->len;
	memset(b, 0, sizeof(*b));
}

void
fs_buf_fini(fs_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

const char *
fs_errstr(int err)
{
	switch (err < 0 ? -err : err) {
	case ENOENT:
		return "no such file or directory";
	case ENOTDIR:
		return "not a directory";
	case EISDIR:
		return "is a directory";
	case EACCES:
	case EPERM:
		return "permission denied";
	case EEXIST:
		return "file already exists";
	case ELOOP:
		return "too many levels of symbolic links";
	case ENAMETOOLONG:
		return "file name too long";
	case ENOSPC:
		return "no space left on device";
	case EDQUOT:
		return "disk quota exceeded";
	case EROFS:
		return "read-only file system";
	case EXDEV:
		return "path escapes the sandbox";
	default: {
		const char *s = strerrordesc_np(err < 0 ? -err : err);
		return s ? s : "unknown error";
	}
	}
}

/* ---- credentials ---- */

void
fs_creds_enter(const fs_root *root, fs_creds *saved)
{
	saved->oldgid = (gid_t)setfsgid(root->gid);
	saved->olduid = (uid_t)setfsuid(root->uid);
}

void
fs_creds_leave(const fs_creds *saved)
{
	setfsuid(saved->olduid);
	setfsgid(saved->oldgid);
}

int
fs_creds_enter_checked(const fs_root *root, fs_creds *saved, fs_result *r)
{
	fs_creds_enter(root, saved);
	/* An invalid id makes the call fail and return the current one. */
	uid_t u = (uid_t)setfsuid((uid_t)-1);
	gid_t g = (gid_t)setfsgid((gid_t)-1);
	if (u == root->uid && g == root->gid)
		return 0;
	fs_creds_leave(saved);
	fs_fail(r, KILN__CODE__INTERNAL, "cannot act as the sandbox user %u:%u",
	        (unsigned)root->uid, (unsigned)root->gid);
	return -1;
}

/* ---- resolution inside the root ---- */

int
fs_openat2(int dirfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
	        .flags = (uint64_t)(flags | O_CLOEXEC),
	        .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
	        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	for (int i = 0; i < 32; i++) {
		long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
	return -EAGAIN;
}

int
fs_reopen(int pathfd, int flags)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", pathfd);
	int fd = open(p, flags | O_CLOEXEC | O_NOCTTY);
	return fd < 0 ? -errno : fd;
}

int
fs_check_fs(int fd, const char **ret_name)
{
	struct statfs sf;
	if (fstatfs(fd, &sf) < 0)
		return -errno;
	for (size_t i = 0; i < KL_ARRAY_SIZE(pseudo_fs); i++) {
		if ((uint32_t)sf.f_type == pseudo_fs[i].magic) {
			if (ret_name)
				*ret_name = pseudo_fs[i].name;
			return -EPERM;
		}
	}
	return 0;
}

int
fs_open_dir(int rootfd, const char *abspath, int *ret_fd, const char **ret_name)
{
	_cleanup_close_ int pfd = fs_openat2(rootfd, abspath, O_PATH, 0);
	if (pfd < 0)
		return pfd;
	struct stat st;
	if (fstat(pfd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	int e = fs_check_fs(pfd, ret_name);
	if (e < 0)
		return e;
	int fd = fs_reopen(pfd, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return fd;
	*ret_fd = fd;
	return 0;
}

int
fs_open_child(int dirfd, const char *name, mode_t type, int flags)
{
	_cleanup_close_ int pfd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	struct stat st;
	if (fstat(pfd, &st) < 0)
		return -errno;
	if ((st.st_mode & S_IFMT) != type)
		return -EINVAL;
	int e = fs_check_fs(pfd, NULL);
	if (e < 0)
		return e;
	return fs_reopen(pfd, flags);
}

/* ---- paths ---- */

static void
path_pop(char *out, size_t *len)
{
	while (*len > 1 && out[*len - 1] != '/')
		(*len)--;
	if (*len > 1)
		(*len)--;
	out[*len] = 0;
}

/* Append src's components to the clean absolute path out[0, *len),
 * resolving "." and ".." lexically. With guard, a ".." that climbs above
 * where src started fails with -EXDEV. */
static int
path_push(char *out, size_t cap, size_t *len, const char *src, bool guard)
{
	int depth = 0;
	const char *p = src;
	for (;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (guard && --depth < 0)
				return -EXDEV;
			path_pop(out, len);
		} else if (!(n == 1 && p[0] == '.')) {
			if (n > NAME_MAX || *len + n + 2 > cap)
				return -ENAMETOOLONG;
			if (*len > 1)
				out[(*len)++] = '/';
			memcpy(out + *len, p, n);
			*len += n;
			out[*len] = 0;
			depth++;
		}
		p = e;
	}
	return 0;
}

int
fs_abs_path(const char *workdir, const char *path, char *out, size_t outlen, fs_result *r)
{
	if (!path || !*path) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "path is empty");
		return -1;
	}
	if (strnlen(path, PATH_MAX) >= PATH_MAX) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "path is longer than %d bytes",
		        PATH_MAX - 1);
		return -1;
	}
	char buf[PATH_MAX] = "/";
	size_t len = 1;
	int e = 0;
	if (path[0] != '/')
		e = path_push(buf, sizeof(buf), &len, workdir && *workdir ? workdir : "/", false);
	if (!e)
		e = path_push(buf, sizeof(buf), &len, path, path[0] != '/');
	if (e == -EXDEV) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "%s: path escapes the working directory",
		        path);
		return -1;
	}
	if (e < 0 || len >= outlen) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "%s: file name too long", path);
		return -1;
	}
	memcpy(out, buf, len + 1);
	return 0;
}

/* ---- one operation on one path ---- */

/* What every tool carries: the agent's path (for messages, as it wrote it)
 * and the cleaned absolute path inside the sandbox. */
typedef struct fs_op {
	const fs_root *root;
	const char *op;      /* the tool's name, prefixed to messages; NULL: none */
	const char *display; /* the path as the agent wrote it */
	fs_result *r;
	char abs[PATH_MAX];
} fs_op;

static int op_fail(fs_op *o, int code, const char *fmt, ...) KL_PRINTF(3, 4);

/* "op: path: reason"; returns -1 for `return op_fail(...)`. */
static int
op_fail(fs_op *o, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *why = vfmt(fmt, ap);
	va_end(ap);
	if (o->op)
		fs_fail(o->r, code, "%s: %s: %s", o->op, o->display, why);
	else
		fs_fail(o->r, code, "%s: %s", o->display, why);
	return -1;
}

static int
op_errno(fs_op *o, int err)
{
	return op_fail(o, KILN__CODE__TOOL_ERROR, "%s", fs_errstr(err));
}

static const char *
str_or_empty(const char *s)
{
	return s ? s : "";
}

/* Clean the path, then act as the sandbox user (the caller leaves). */
static int
op_begin(fs_op *o, const fs_root *root, const char *op, const char *path, fs_result *r, fs_creds *c)
{
	memset(r, 0, sizeof(*r));
	o->root = root;
	o->op = op;
	o->display = str_or_empty(path);
	o->r = r;
	if (fs_abs_path(root->workdir, path, o->abs, sizeof(o->abs), r) < 0) {
		fs_msg_prefix(r, op);
		return -1;
	}
	return fs_creds_enter_checked(root, c, r);
}

static int
fail_too_large(fs_op *o, uint64_t size, size_t max)
{
	char lim[32];
	if (max % 1024 == 0)
		snprintf(lim, sizeof(lim), "%zu KiB", max / 1024);
	else
		snprintf(lim, sizeof(lim), "%zu bytes", max);
	const char *hint = o->op && !strcmp(o->op, "edit")
	                           ? "edit it with sed or awk in bash"
	                           : "read a slice with head, tail or sed in bash";
	if (size)
		return op_fail(o, KILN__CODE__TOOL_ERROR,
		               "file is larger than %s (%" PRIu64 " bytes); %s", lim, size, hint);
	return op_fail(o, KILN__CODE__TOOL_ERROR, "file is larger than %s; %s", lim, hint);
}

static int
open_read_op(fs_op *o, size_t max, int *ret_fd, size_t *ret_size)
{
	_cleanup_close_ int pfd = fs_openat2(o->root->rootfd, o->abs, O_PATH, 0);
	if (pfd < 0)
		return op_errno(o, pfd);
	struct stat st;
	if (fstat(pfd, &st) < 0)
		return op_errno(o, -errno);
	if (S_ISDIR(st.st_mode))
		return op_fail(o, KILN__CODE__TOOL_ERROR, "is a directory");
	if (!S_ISREG(st.st_mode))
		return op_fail(o, KILN__CODE__TOOL_ERROR, "not a regular file");
	const char *fsname = NULL;
	int e = fs_check_fs(pfd, &fsname);
	if (e == -EPERM)
		return op_fail(o, KILN__CODE__TOOL_ERROR, "refusing a file on %s", fsname);
	if (e < 0)
		return op_errno(o, e);
	if ((uint64_t)st.st_size > max)
		return fail_too_large(o, (uint64_t)st.st_size, max);
	int fd = fs_reopen(pfd, O_RDONLY);
	if (fd < 0)
		return op_errno(o, fd);
	*ret_fd = fd;
	*ret_size = (size_t)st.st_size;
	return 0;
}

int
fs_open_read(const fs_root *root, const char *abspath, size_t max, int *ret_fd, size_t *ret_size,
             fs_result *r)
{
	fs_op o = {.root = root, .display = abspath, .r = r};
	if (kl_strlcpy(o.abs, abspath, sizeof(o.abs)) >= sizeof(o.abs)) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "path is too long");
		return -1;
	}
	fs_creds c;
	if (fs_creds_enter_checked(root, &c, r) < 0)
		return -1;
	int ret = open_read_op(&o, max ? max : FS_READ_MAX, ret_fd, ret_size);
	fs_creds_leave(&c);
	return ret;
}

/* Read all of fd, refusing more than max bytes (-EFBIG): the size checked on
 * open is only a hint for a file that may be growing. */
static int
read_all(int fd, size_t hint, size_t max, char **ret, size_t *ret_len)
{
	size_t cap = KL_MIN(hint, max) + 1, len = 0;
	_cleanup_free_ char *buf = kl_xmalloc(cap + 1);
	for (;;) {
		if (len == cap) {
			if (cap > max)
				return -EFBIG;
			cap = KL_MIN(cap * 2, max + 1);
			buf = kl_xrealloc(buf, cap + 1);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > max)
		return -EFBIG;
	buf[len] = 0;
	*ret = steal_ptr(buf);
	*ret_len = len;
	return 0;
}

/* The whole file as UTF-8 text, at most FS_READ_MAX bytes. */
static int
read_text(fs_op *o, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	size_t size;
	if (open_read_op(o, FS_READ_MAX, &fd, &size) < 0)
		return -1;
	char *buf = NULL;
	size_t len = 0;
	int e = read_all(fd, size, FS_READ_MAX, &buf, &len);
	if (e == -EFBIG)
		return fail_too_large(o, 0, FS_READ_MAX);
	if (e < 0)
		return op_errno(o, e);
	if (!fs_utf8_valid(buf, len)) {
		free(buf);
		return op_fail(o, KILN__CODE__TOOL_ERROR, "not valid UTF-8 text");
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* ---- atomic writes ---- */

/* One missing component of a parent path: mkdir it in cur (as the sandbox
 * user, so it owns it) and open it without following a symlink. */
static int
make_dir_step(fs_op *o, int cur, const char *pfx, const char *name)
{
	int fd = fs_openat2(o->root->rootfd, pfx, O_PATH | O_DIRECTORY, 0);
	if (fd >= 0)
		return fd;
	if (fd == -ENOTDIR)
		return op_fail(o, KILN__CODE__TOOL_ERROR, "%s is not a directory", pfx);
	if (fd != -ENOENT)
		return op_fail(o, KILN__CODE__TOOL_ERROR, "%s: %s", pfx, fs_errstr(fd));
	bool created = mkdirat(cur, name, 0755) == 0;
	if (!created && errno != EEXIST)
		return op_fail(o, KILN__CODE__TOOL_ERROR, "cannot create directory %s: %s", pfx,
		               fs_errstr(errno));
	fd = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		/* Lost a race, or a dangling symlink sits there: resolve it like
		 * any other path, inside the root. */
		fd = fs_openat2(o->root->rootfd, pfx, O_PATH | O_DIRECTORY, 0);
		if (fd < 0)
			return op_fail(o, KILN__CODE__TOOL_ERROR, "cannot create directory %s: %s",
			               pfx, fs_errstr(fd));
		return fd;
	}
	/* The node's umask must not decide the sandbox's modes. */
	if (created)
		(void)fchmod(fd, 0755);
	return fd;
}

/* Walk `parent` from the root one component at a time, creating what is
 * missing. */
static int
make_parents(fs_op *o, const char *parent)
{
	char pfx[PATH_MAX] = "/";
	size_t plen = 1;
	int cur = fs_openat2(o->root->rootfd, "/", O_PATH | O_DIRECTORY, 0);
	if (cur < 0)
		return op_errno(o, cur);
	for (const char *p = parent;;) {
		while (*p == '/')
			p++;
		if (!*p)
			return cur;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (plen > 1)
			pfx[plen++] = '/';
		memcpy(pfx + plen, p, n);
		plen += n;
		pfx[plen] = 0;
		char name[NAME_MAX + 1];
		memcpy(name, p, n);
		name[n] = 0;
		int next = make_dir_step(o, cur, pfx, name);
		close(cur);
		if (next < 0)
			return -1;
		cur = next;
		p = e;
	}
}

/* The directory a write goes to; with create, missing ones are made. */
static int
open_parent(fs_op *o, const char *parent, bool create)
{
	int fd = fs_openat2(o->root->rootfd, parent, O_PATH | O_DIRECTORY, 0);
	if (create && (fd == -ENOENT || fd == -ENOTDIR))
		fd = make_parents(o, parent);
	else if (fd < 0)
		return op_errno(o, fd);
	if (fd < 0)
		return -1;
	const char *fsname = NULL;
	int e = fs_check_fs(fd, &fsname);
	if (e < 0) {
		close(fd);
		if (e == -EPERM)
			return op_fail(o, KILN__CODE__TOOL_ERROR, "refusing a file on %s", fsname);
		return op_errno(o, e);
	}
	return fd;
}

static void
split_parent(const char *path, char *parent, const char **name)
{
	const char *slash = strrchr(path, '/');
	size_t plen = slash == path ? 1 : (size_t)(slash - path);
	memcpy(parent, path, plen);
	parent[plen] = 0;
	*name = slash + 1;
}

/* The next path after a last-component symlink. Not cleaned: openat2
 * resolves its `..` physically, as it does for reads of the same path, so a
 * read and a write through a link always name the same file. */
static int
follow_link(int dfd, const char *name, const char *parent, char *path)
{
	char tgt[PATH_MAX];
	ssize_t n = readlinkat(dfd, name, tgt, sizeof(tgt) - 1);
	if (n < 0)
		return -errno;
	tgt[n] = 0;
	int len = tgt[0] == '/' ? snprintf(path, PATH_MAX, "%s", tgt)
	                        : snprintf(path, PATH_MAX, "%s/%s", parent, tgt);
	return len >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Where the data goes: the parent directory and final name of o->abs, a
 * last-component symlink followed by hand (inside the root) so that the
 * file it names is replaced rather than the link. Only the agent's own path
 * gets missing parents created (a shell's `>` through a dangling link does
 * not create directories either). */
static int
write_target(fs_op *o, fs_write *w, struct stat *st, bool *exists)
{
	char path[PATH_MAX], parent[PATH_MAX];
	memcpy(path, o->abs, strlen(o->abs) + 1);
	for (int hops = 0;; hops++) {
		const char *name;
		split_parent(path, parent, &name);
		if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
			return op_fail(o, KILN__CODE__TOOL_ERROR, "is a directory");
		int dfd = open_parent(o, parent, hops == 0);
		if (dfd < 0)
			return -1;
		*exists = fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) == 0;
		int e = *exists || errno == ENOENT ? 0 : -errno;
		if (!e && (!*exists || !S_ISLNK(st->st_mode))) {
			w->dirfd = dfd;
			memcpy(w->name, name, strlen(name) + 1);
			return 0;
		}
		if (!e)
			e = hops < FS_SYMLINK_MAX ? follow_link(dfd, name, parent, path) : -ELOOP;
		close(dfd);
		if (e < 0)
			return op_errno(o, e);
	}
}

static void
tmp_name(char *out, size_t size)
{
	static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[12];
	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
		             ((uint64_t)gettid() << 17);
		for (size_t i = 0; i < sizeof(rnd); i++, x = x * 6364136223846793005ull + 1)
			rnd[i] = (unsigned char)(x >> 33);
	}
	char s[sizeof(rnd) + 1];
	for (size_t i = 0; i < sizeof(rnd); i++)
		s[i] = set[rnd[i] % (sizeof(set) - 1)];
	s[sizeof(rnd)] = 0;
	snprintf(out, size, ".kiln-tmp-%s", s);
}

static int
make_tmp(fs_op *o, fs_write *w, mode_t mode)
{
	for (int i = 0; i < 16; i++) {
		tmp_name(w->tmpname, sizeof(w->tmpname));
		int fd = openat(w->dirfd, w->tmpname,
		                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0) {
			w->tmpname[0] = 0;
			return op_errno(o, -errno);
		}
		/* Explicit mode: the node's umask is not the sandbox's. */
		if (fchmod(fd, mode) < 0) {
			int e = -errno;
			close(fd);
			unlinkat(w->dirfd, w->tmpname, 0);
			w->tmpname[0] = 0;
			return op_errno(o, e);
		}
		w->tmpfd = fd;
		return 0;
	}
	w->tmpname[0] = 0;
	return op_fail(o, KILN__CODE__TOOL_ERROR, "cannot create a temporary file");
}

static int
write_prepare_op(fs_op *o, fs_write *w)
{
	memset(w, 0, sizeof(*w));
	w->dirfd = w->tmpfd = -1;
	struct stat st;
	bool exists;
	if (write_target(o, w, &st, &exists) < 0)
		return -1;
	mode_t mode = 0644;
	if (exists) {
		int e = 0;
		if (S_ISDIR(st.st_mode))
			e = op_fail(o, KILN__CODE__TOOL_ERROR, "is a directory");
		else if (!S_ISREG(st.st_mode))
			e = op_fail(o, KILN__CODE__TOOL_ERROR, "not a regular file");
		/* rename(2) needs only the directory writable: honour the file's
		 * own permissions as an in-place write would. */
		else if (syscall(SYS_faccessat2, w->dirfd, w->name, W_OK,
		                 AT_EACCESS | AT_SYMLINK_NOFOLLOW) < 0)
			e = op_errno(o, -errno);
		if (e < 0) {
			kl_close(&w->dirfd);
			return -1;
		}
		mode = st.st_mode & 0777;
	}
	if (make_tmp(o, w, mode) < 0) {
		kl_close(&w->dirfd);
		return -1;
	}
	w->existed = exists;
	return 0;
}

int
fs_write_prepare(const fs_root *root, const char *abspath, fs_write *w, fs_result *r)
{
	fs_op o = {.root = root, .display = abspath, .r = r};
	w->dirfd = w->tmpfd = -1;
	if (kl_strlcpy(o.abs, abspath, sizeof(o.abs)) >= sizeof(o.abs)) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "path is too long");
		return -1;
	}
	fs_creds c;
	if (fs_creds_enter_checked(root, &c, r) < 0)
		return -1;
	int ret = write_prepare_op(&o, w);
	fs_creds_leave(&c);
	return ret;
}

static void
abort_op(fs_write *w)
{
	kl_close(&w->tmpfd);
	if (w->dirfd >= 0 && w->tmpname[0])
		unlinkat(w->dirfd, w->tmpname, 0);
	w->tmpname[0] = 0;
	kl_close(&w->dirfd);
}

void
fs_write_abort(const fs_root *root, fs_write *w)
{
	fs_creds c;
	fs_creds_enter(root, &c);
	abort_op(w);
	fs_creds_leave(&c);
}

static int
rename_into_place(fs_write *w, unsigned flags)
{
	if (renameat2(w->dirfd, w->tmpname, w->dirfd, w->name, flags) == 0)
		return 0;
	if (errno != EINVAL || !(flags & RENAME_NOREPLACE))
		return -errno;
	/* A filesystem without RENAME_NOREPLACE: link(2) never replaces either. */
	if (linkat(w->dirfd, w->tmpname, w->dirfd, w->name, 0) < 0)
		return -errno;
	unlinkat(w->dirfd, w->tmpname, 0);
	return 0;
}

/* Best effort: the rename is durable once the directory is synced. */
static void
sync_dir(int dirfd)
{
	int fd = fs_reopen(dirfd, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

static int
commit_op(fs_op *o, fs_write *w, unsigned flags)
{
	int e = 0;
	if (o->root->fsync && fsync(w->tmpfd) < 0)
		e = -errno;
	/* close() reports delayed write errors on some filesystems. */
	if (close(w->tmpfd) < 0 && !e)
		e = -errno;
	w->tmpfd = -1;
	if (!e)
		e = rename_into_place(w, flags);
	if (e < 0) {
		abort_op(w);
		if (e == -EEXIST && (flags & RENAME_NOREPLACE))
			return FS_EXISTS;
		return op_errno(o, e);
	}
	if (o->root->fsync)
		sync_dir(w->dirfd);
	w->tmpname[0] = 0;
	kl_close(&w->dirfd);
	return 0;
}

int
fs_write_commit(const fs_root *root, fs_write *w, fs_result *r)
{
	fs_op o = {.root = root, .display = w->name, .r = r};
	fs_creds c;
	if (fs_creds_enter_checked(root, &c, r) < 0) {
		fs_write_abort(root, w);
		return -1;
	}
	int ret = commit_op(&o, w, 0);
	fs_creds_leave(&c);
	return ret;
}

/* Replace (or, with create, only create) the file at o->abs with data.
 * Returns 0, -1 with r filled, or FS_EXISTS (r untouched) when create
 * found the file there. */
static int
write_file(fs_op *o, const void *data, size_t len, bool create, bool *existed)
{
	fs_write w;
	if (write_prepare_op(o, &w) < 0)
		return -1;
	if (create && w.existed) {
		abort_op(&w);
		return FS_EXISTS;
	}
	int e = kl_write_all(w.tmpfd, data, len);
	if (e < 0) {
		abort_op(&w);
		return op_errno(o, e);
	}
	e = commit_op(o, &w, create ? RENAME_NOREPLACE : 0);
	if (e < 0)
		return e;
	if (existed)
		*existed = w.existed;
	return 0;
}

/* ---- the agent toolset: read, write, edit ---- */

void
fs_tool_read(const fs_root *root, const Kiln__ReadInput *in, fs_result *r)
{
	fs_op o;
	fs_creds c;
	if (!in) {
		memset(r, 0, sizeof(*r));
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "read: no input");
		return;
	}
	if (op_begin(&o, root, "read", in->file_path, r, &c) < 0)
		return;
	_cleanup_free_ char *buf = NULL;
	size_t len, off, n;
	if (read_text(&o, &buf, &len) == 0) {
		if (fs_view_slice(buf, len, in->view_range, in->n_view_range, &off, &n, r) < 0) {
			fs_msg_prefix(r, "read");
		} else {
			r->text = kl_xstrndup(buf + off, n);
			r->text_len = n;
		}
	}
	fs_creds_leave(&c);
}

static bool
ends_with_slash(const char *s)
{
	size_t n = strlen(s);
	return n && s[n - 1] == '/';
}

void
fs_tool_write(const fs_root *root, const Kiln__WriteInput *in, fs_result *r)
{
	fs_op o;
	fs_creds c;
	if (!in) {
		memset(r, 0, sizeof(*r));
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "write: no input");
		return;
	}
	if (op_begin(&o, root, "write", in->file_path, r, &c) < 0)
		return;
	size_t len = in->content.len;
	if (len > FS_WRITE_MAX)
		op_fail(&o, KILN__CODE__INVALID_ARGUMENT,
		        "content is %zu bytes, larger than the %u MiB limit", len,
		        FS_WRITE_MAX >> 20);
	else if (ends_with_slash(o.display))
		op_fail(&o, KILN__CODE__INVALID_ARGUMENT, "names a directory, not a file");
	else if (write_file(&o, in->content.data, len, false, NULL) == 0)
		fs_ok(r, "wrote %zu bytes to %s", len, o.display);
	fs_creds_leave(&c);
}

void
fs_tool_edit(const fs_root *root, const Kiln__EditInput *in, fs_result *r)
{
	fs_op o;
	fs_creds c;
	if (!in) {
		memset(r, 0, sizeof(*r));
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "edit: no input");
		return;
	}
	if (op_begin(&o, root, "edit", in->file_path, r, &c) < 0)
		return;
	const char *old = str_or_empty(in->old_string), *new_ = str_or_empty(in->new_string);
	_cleanup_free_ char *buf = NULL, *out = NULL;
	size_t len, outlen;
	uint32_t count;
	if (!*old) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "edit: old_string must not be empty");
	} else if (read_text(&o, &buf, &len) == 0) {
		if (fs_replace(buf, len, old, strlen(old), new_, strlen(new_), in->replace_all,
		               o.display, &out, &outlen, &count, r) < 0) {
			fs_msg_prefix(r, "edit");
		} else if (write_file(&o, out, outlen, false, NULL) == 0) {
			r->replacements = count;
			fs_ok(r, "edited %s (%u replacement%s)", o.display, count,
			      count == 1 ? "" : "s");
		}
	}
	fs_creds_leave(&c);
}

/* ---- the text editor form ---- */

/* Prepend a header line to r->text. */
static void
text_prepend(fs_result *r, const char *head)
{
	fs_buf b = {0};
	fs_buf_add(&b, head, strlen(head));
	if (r->text)
		fs_buf_add(&b, r->text, r->text_len);
	fs_buf_to_text(&b, r);
}

static void
editor_view(fs_op *o, const Kiln__EditorInput *in)
{
	_cleanup_close_ int pfd = fs_openat2(o->root->rootfd, o->abs, O_PATH, 0);
	struct stat st;
	if (pfd == -ENOENT) {
		fs_fail(o->r, KILN__CODE__TOOL_ERROR,
		        "The path %s does not exist. Please provide a valid path.", o->display);
		return;
	}
	if (pfd >= 0 && fstat(pfd, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (in->n_view_range)
			fs_fail(o->r, KILN__CODE__INVALID_ARGUMENT,
			        "The `view_range` parameter is not allowed when `path` points to "
			        "a directory.");
		else
			fs_dir_view(o->root, o->abs, in->max_characters, o->r);
		return;
	}
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (read_text(o, &buf, &len) < 0)
		return;
	if (fs_number_lines(buf, len, in->view_range, in->n_view_range, in->max_characters, o->r) <
	    0)
		return;
	_cleanup_free_ char *head =
	        kl_xasprintf("Here's the result of running `cat -n` on %s:\n", o->abs);
	text_prepend(o->r, head);
}

static void
editor_create(fs_op *o, const Kiln__EditorInput *in)
{
	const char *text = str_or_empty(in->file_text);
	size_t len = strlen(text);
	if (len > FS_WRITE_MAX) {
		op_fail(o, KILN__CODE__INVALID_ARGUMENT,
		        "file_text is %zu bytes, larger than the %u MiB limit", len,
		        FS_WRITE_MAX >> 20);
		return;
	}
	int e = write_file(o, text, len, true, NULL);
	if (e == FS_EXISTS)
		fs_fail(o->r, KILN__CODE__TOOL_ERROR,
		        "File already exists at: %s. Cannot overwrite files using command "
		        "`create`.",
		        o->display);
	if (e < 0)
		return;
	fs_ok(o->r, "File created successfully at: %s", o->display);
	o->r->text = kl_xasprintf("File created successfully at: %s", o->display);
	o->r->text_len = strlen(o->r->text);
}

static size_t
count_newlines(const char *s, size_t n)
{
	size_t c = 0;
	for (const char *p = s, *e = s + n; (p = memchr(p, '\n', (size_t)(e - p))); p++)
		c++;
	return c;
}

/* The reference's answer to an edit: the changed lines with some context,
 * numbered, so the agent can check the result without another view. */
static void
editor_snippet(fs_op *o, const char *buf, size_t len, int64_t first, int64_t last, const char *what,
               const char *advice)
{
	int64_t lines = (int64_t)count_newlines(buf, len) + (len && buf[len - 1] != '\n');
	int64_t start = KL_MAX(KL_MIN(first, lines), 1);
	int64_t range[2] = {start, KL_MAX(last, start)};
	fs_result sn = {0};
	fs_number_lines(buf, len, range, 2, 0, &sn);
	fs_buf b = {0};
	fs_buf_printf(&b,
	              "The file %s has been edited. Here's the result of running `cat -n` on %s:\n",
	              o->abs, what);
	if (sn.text)
		fs_buf_add(&b, sn.text, sn.text_len);
	fs_buf_printf(&b, "%s", advice);
	fs_result_fini(&sn);
	fs_buf_to_text(&b, o->r);
}

/* "in lines [3, 7, 12]" for the several-matches error. */
static char *
occurrence_lines(const char *buf, size_t len, const char *old, size_t oldlen)
{
	fs_buf b = {0};
	fs_buf_add(&b, "[", 1);
	size_t line = 1, shown = 0;
	const char *p = buf, *e = buf + len, *counted = buf;
	for (const char *m; (m = memmem(p, (size_t)(e - p), old, oldlen)); p = m + oldlen) {
		line += count_newlines(counted, (size_t)(m - counted));
		counted = m;
		if (shown++ == 20) {
			fs_buf_add(&b, ", ...", 5);
			break;
		}
		fs_buf_printf(&b, "%s%zu", shown > 1 ? ", " : "", line);
	}
	fs_buf_add(&b, "]", 1);
	return b.p;
}

/* The reference's errors for none and for several matches. */
static int
editor_check_unique(fs_op *o, const char *buf, size_t len, const char *old, size_t oldlen)
{
	size_t n = fs_count_occurrences(buf, len, old, oldlen);
	int q = (int)KL_MIN(oldlen, (size_t)FS_QUOTE_MAX);
	const char *more = oldlen > FS_QUOTE_MAX ? "..." : "";
	if (n == 0) {
		fs_fail(o->r, KILN__CODE__TOOL_ERROR,
		        "No replacement was performed, old_str `%.*s%s` did not appear verbatim in "
		        "%s.",
		        q, old, more, o->display);
		return -1;
	}
	if (n > 1) {
		_cleanup_free_ char *lines = occurrence_lines(buf, len, old, oldlen);
		fs_fail(o->r, KILN__CODE__TOOL_ERROR,
		        "No replacement was performed. Multiple occurrences of old_str `%.*s%s` in "
		        "lines %s. Please ensure it is unique",
		        q, old, more, lines);
		return -1;
	}
	return 0;
}

static void
editor_str_replace(fs_op *o, const Kiln__EditorInput *in)
{
	const char *old = str_or_empty(in->old_str), *new_ = str_or_empty(in->new_str);
	size_t oldlen = strlen(old), newlen = strlen(new_), len, outlen;
	uint32_t count;
	if (!oldlen) {
		fs_fail(o->r, KILN__CODE__INVALID_ARGUMENT,
		        "Parameter `old_str` is required for command: str_replace");
		return;
	}
	_cleanup_free_ char *buf = NULL, *out = NULL;
	if (read_text(o, &buf, &len) < 0 || editor_check_unique(o, buf, len, old, oldlen) < 0)
		return;
	if (fs_replace(buf, len, old, oldlen, new_, newlen, false, o->display, &out, &outlen,
	               &count, o->r) < 0 ||
	    write_file(o, out, outlen, false, NULL) < 0)
		return;
	const char *m = memmem(buf, len, old, oldlen);
	int64_t at = (int64_t)count_newlines(buf, (size_t)(m - buf)) + 1;
	_cleanup_free_ char *what = kl_xasprintf("a snippet of %s", o->abs);
	editor_snippet(o, out, outlen, at - FS_SNIPPET_LINES,
	               at + FS_SNIPPET_LINES + (int64_t)count_newlines(new_, newlen), what,
	               "Review the changes and make sure they are as expected. Edit the file again "
	               "if necessary.");
	o->r->replacements = 1;
	fs_ok(o->r, "edited %s (1 replacement)", o->display);
}

static void
editor_insert(fs_op *o, const Kiln__EditorInput *in)
{
	/* insert_text in current docs, new_str in older ones. */
	const char *text = str_or_empty(in->insert_text);
	if (!*text && in->has_new_str)
		text = str_or_empty(in->new_str);
	else if (!*text) {
		fs_fail(o->r, KILN__CODE__INVALID_ARGUMENT,
		        "Parameter `insert_text` is required for command: insert");
		return;
	}
	_cleanup_free_ char *buf = NULL, *out = NULL;
	size_t len, outlen, textlen = strlen(text);
	if (read_text(o, &buf, &len) < 0)
		return;
	if (fs_insert_lines(buf, len, in->insert_line, text, textlen, &out, &outlen, o->r) < 0)
		return;
	if (write_file(o, out, outlen, false, NULL) < 0)
		return;
	int64_t added =
	        (int64_t)count_newlines(text, textlen) + (!textlen || text[textlen - 1] != '\n');
	editor_snippet(o, out, outlen, in->insert_line - FS_SNIPPET_LINES + 1,
	               in->insert_line + added + FS_SNIPPET_LINES, "a snippet of the edited file",
	               "Review the changes and make sure they are as expected (correct "
	               "indentation, no duplicate lines, etc). Edit the file again if necessary.");
	fs_ok(o->r, "edited %s (inserted after line %" PRId64 ")", o->display, in->insert_line);
}

void
fs_tool_editor(const fs_root *root, const Kiln__EditorInput *in, fs_result *r)
{
	fs_op o;
	fs_creds c;
	memset(r, 0, sizeof(*r));
	const char *cmd = in ? str_or_empty(in->command) : "";
	bool known = !strcmp(cmd, "view") || !strcmp(cmd, "create") ||
	             !strcmp(cmd, "str_replace") || !strcmp(cmd, "insert");
	if (!known) {
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT,
		        "Unrecognized command %s. The allowed commands for the "
		        "str_replace_based_edit_tool tool are: view, create, str_replace, insert",
		        *cmd ? cmd : "(none)");
		return;
	}
	if (op_begin(&o, root, NULL, in->path, r, &c) < 0)
		return;
	if (!strcmp(cmd, "view"))
		editor_view(&o, in);
	else if (!strcmp(cmd, "create"))
		editor_create(&o, in);
	else if (!strcmp(cmd, "str_replace"))
		editor_str_replace(&o, in);
	else
		editor_insert(&o, in);
	fs_creds_leave(&c);
}

/* ---- dispatch ---- */

void
fs_run(const fs_root *root, const Kiln__ToolCall *call, fs_result *r)
{
	memset(r, 0, sizeof(*r));
	switch (call ? call->tool_case : KILN__TOOL_CALL__TOOL__NOT_SET) {
	case KILN__TOOL_CALL__TOOL_READ:
		fs_tool_read(root, call->read, r);
		break;
	case KILN__TOOL_CALL__TOOL_WRITE:
		fs_tool_write(root, call->write, r);
		break;
	case KILN__TOOL_CALL__TOOL_EDIT:
		fs_tool_edit(root, call->edit, r);
		break;
	case KILN__TOOL_CALL__TOOL_GLOB:
		fs_tool_glob(root, call->glob, r);
		break;
	case KILN__TOOL_CALL__TOOL_GREP:
		fs_tool_grep(root, call->grep, r);
		break;
	case KILN__TOOL_CALL__TOOL_EDITOR:
		fs_tool_editor(root, call->editor, r);
		break;
	default:
		fs_fail(r, KILN__CODE__INVALID_ARGUMENT, "not a file tool call (tool case %d)",
		        call ? (int)call->tool_case : 0);
		break;
	}
}
