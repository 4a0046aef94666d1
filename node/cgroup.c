/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's cgroup v2 subtree. Discovery reads /proc/self/{mountinfo,cgroup}
 * for the cgroup2 mount and our place in it, and asks libcgroup which
 * controllers sit on v1 hierarchies (hybrid hosts); it runs once at start, so
 * it may allocate and build paths. Everything after that (mkdir, kill, move,
 * stats, limits, rmdir) is plain *at() syscalls on directory fds with small
 * stack buffers, as crun and systemd do: no libcgroup and no path building
 * beyond a single name on the claim path. Teardown follows the field notes:
 * cgroup.kill, then rmdir retried while the last tasks leave (EBUSY).
 */
#include "cgroup.h"

#include "kl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libcgroup.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* A crashed run's tree can hold many sandboxes; give their tasks time to exit. */
#define CG_LEFTOVER_TIMEOUT_MS 5000
#define CG_DESTROY_TIMEOUT_MS  5000
#define CG_MAX_V2_MOUNTS       8
#define CG_CPU_PERIOD_US       100000
#define CG_CPU_MIN_QUOTA_US    1000

static const struct cg_ctrl_name {
	unsigned bit;
	const char *v2; /* name in cgroup.controllers */
	const char *v1; /* name of the v1 hierarchy's controller */
} cg_ctrls[] = {
        {CG_CTRL_MEMORY, "memory", "memory"},
        {CG_CTRL_PIDS, "pids", "pids"},
        {CG_CTRL_CPU, "cpu", "cpu"},
        {CG_CTRL_IO, "io", "blkio"},
};

/* ---- small file helpers (hot path: stack buffers, one syscall each) ---- */

/* Read a small cgroup file in one read(2) and NUL-terminate it. kernfs
 * returns the whole seq_file in the first read when the buffer is large
 * enough, and every file read here is far below the buffers used. */
static ssize_t
read_small_at(int dirfd, const char *name, char *buf, size_t len)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	ssize_t n;
	do
		n = read(fd, buf, len - 1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return n;
}

/* cgroupfs writes are all-or-nothing: a short write means the knob refused. */
static int
write_at(int dirfd, const char *name, const char *s)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	size_t len = strlen(s);
	ssize_t n;
	do
		n = write(fd, s, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* Find "key value" on its own line; the space after key keeps "max" from
 * matching "max.imposed". */
static bool
kv_get(const char *buf, const char *key, uint64_t *val)
{
	size_t kl = strlen(key);
	for (const char *p = buf; p && *p;) {
		if (!strncmp(p, key, kl) && p[kl] == ' ') {
			*val = strtoull(p + kl + 1, NULL, 10);
			return true;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return false;
}

static int
sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return 0;
}

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Token list ("memory pids" or "rw,cpu,cpuacct") to a CG_CTRL_* mask. */
static unsigned
ctrl_mask_of(const char *list, const char *seps, bool v1)
{
	unsigned mask = 0;
	const char *p = list;
	while (*p) {
		size_t n = strcspn(p, seps);
		for (size_t i = 0; i < KL_ARRAY_SIZE(cg_ctrls); i++) {
			const char *nm = v1 ? cg_ctrls[i].v1 : cg_ctrls[i].v2;
			if (strlen(nm) == n && !strncmp(p, nm, n))
				mask |= cg_ctrls[i].bit;
		}
		p += n;
		p += strspn(p, seps);
	}
	return mask;
}

const char *
cg_ctrl_names(unsigned mask, char *buf, size_t len)
{
	size_t off = 0;
	if (len)
		buf[0] = 0;
	for (size_t i = 0; i < KL_ARRAY_SIZE(cg_ctrls); i++) {
		if (!(mask & cg_ctrls[i].bit) || off >= len)
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? " " : "", cg_ctrls[i].v2);
		off += n > 0 ? (size_t)n : 0;
	}
	return buf;
}

/* "+memory +pids" (or "-...") into subtree_control in one write: the kernel
 * applies all or none. */
static int
write_subtree_control(int dirfd, unsigned mask, char sign)
{
	char buf[64];
	size_t off = 0;
	for (size_t i = 0; i < KL_ARRAY_SIZE(cg_ctrls); i++) {
		if (!(mask & cg_ctrls[i].bit))
			continue;
		int n = snprintf(buf + off, sizeof buf - off, "%s%c%s", off ? " " : "", sign,
		                 cg_ctrls[i].v2);
		off += (size_t)n;
	}
	if (!off)
		return 0;
	return write_at(dirfd, "cgroup.subtree_control", buf);
}

/* ---- discovery (startup only: heap and paths are fine here) ---- */

struct cg_mounts {
	int n;
	struct {
		char root[PATH_MAX];  /* the mount's root inside the hierarchy */
		char point[PATH_MAX]; /* where it is mounted */
	} v2[CG_MAX_V2_MOUNTS];
	unsigned v1; /* controllers named in v1 mounts' super options */
};

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void
unescape_octal(char *s)
{
	char *w = s;
	for (char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = 0;
}

static void
parse_mountinfo_line(char *line, struct cg_mounts *m)
{
	char *tok[64], *save = NULL;
	int n = 0, sep = -1;
	for (char *t = strtok_r(line, " \n", &save); t && n < 64; t = strtok_r(NULL, " \n", &save))
		tok[n++] = t;
	for (int i = 6; i < n; i++)
		if (!strcmp(tok[i], "-")) {
			sep = i;
			break;
		}
	if (sep < 0 || sep + 3 >= n)
		return;
	const char *fstype = tok[sep + 1];
	if (!strcmp(fstype, "cgroup")) {
		m->v1 |= ctrl_mask_of(tok[sep + 3], ",", true);
	} else if (!strcmp(fstype, "cgroup2") && m->n < CG_MAX_V2_MOUNTS) {
		unescape_octal(tok[3]);
		unescape_octal(tok[4]);
		kl_strlcpy(m->v2[m->n].root, tok[3], PATH_MAX);
		kl_strlcpy(m->v2[m->n].point, tok[4], PATH_MAX);
		m->n++;
	}
}

static int
read_mountinfo(struct cg_mounts *m)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0)
		parse_mountinfo_line(line, m);
	fclose(f);
	return 0;
}

/* Our cgroup as /proc/self/cgroup's "0::" line shows it. */
static int
read_proc_cgroup(char *out, size_t len)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -errno;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	int r = -ENOENT;
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = 0;
		kl_strlcpy(out, line + 3, len);
		r = 0;
		break;
	}
	fclose(f);
	return r;
}

/* /proc/self/cgroup paths are relative to the hierarchy (or cgroup namespace)
 * root; a mount of a sub-tree (containers without a cgroup namespace) has
 * that sub-tree as its root, which must be cut off. false: not below it. */
static bool
strip_mount_root(const char *root, const char *cg, char *out, size_t len)
{
	size_t rl = strlen(root);
	if (!strcmp(root, "/")) {
		kl_strlcpy(out, cg, len);
		return true;
	}
	if (strncmp(cg, root, rl) || (cg[rl] != '/' && cg[rl] != 0))
		return false;
	kl_strlcpy(out, cg[rl] ? cg + rl : "/", len);
	return true;
}

static void
join_path(char *out, size_t len, const char *a, const char *b)
{
	/* "/" as the relative part means the mount itself. */
	if (!strcmp(b, "/"))
		snprintf(out, len, "%s", a);
	else if (!strcmp(a, "/"))
		snprintf(out, len, "%s", b);
	else
		snprintf(out, len, "%s%s", a, b);
}

static int
pick_self(const struct cg_mounts *m, cg_discovery *d)
{
	char cg[PATH_MAX], rel[PATH_MAX], abs[PATH_MAX * 2];
	int r = read_proc_cgroup(cg, sizeof cg);
	if (r < 0)
		return r;
	for (int i = 0; i < m->n; i++) {
		if (!strip_mount_root(m->v2[i].root, cg, rel, sizeof rel))
			continue;
		join_path(abs, sizeof abs, m->v2[i].point, rel);
		if (access(abs, F_OK) < 0)
			continue;
		kl_strlcpy(d->mount, m->v2[i].point, sizeof d->mount);
		kl_strlcpy(d->self, rel, sizeof d->self);
		return 0;
	}
	return -ENOENT;
}

static int
pick_override(const struct cg_mounts *m, const char *override, cg_discovery *d)
{
	char real[PATH_MAX];
	if (!realpath(override, real))
		return -errno;
	size_t best = 0;
	int bi = -1;
	for (int i = 0; i < m->n; i++) {
		const char *pt = m->v2[i].point;
		size_t pl = strlen(pt);
		if (!strcmp(pt, "/"))
			pl = 0;
		if (strncmp(real, pt, pl) || (real[pl] != '/' && real[pl] != 0))
			continue;
		if (bi < 0 || pl > best) {
			best = pl;
			bi = i;
		}
	}
	if (bi < 0)
		return -EINVAL;
	kl_strlcpy(d->mount, m->v2[bi].point, sizeof d->mount);
	kl_strlcpy(d->self, real[best] ? real + best : "/", sizeof d->self);
	return 0;
}

static void
quiet_logger(void *userdata, int level, const char *fmt, va_list ap)
{
	/* libcgroup logs to stdout by default, and on hybrid hosts it complains
	 * about hierarchies it does not understand: the node decides what to say. */
}

static bool
is_v2_point(const struct cg_mounts *m, const char *path)
{
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->v2[i].point, path))
			return true;
	return false;
}

/* Controllers libcgroup finds mounted somewhere that is not a cgroup2 mount.
 * cgroup_init() can fail on odd hybrid setups; mountinfo still answers. */
static unsigned
libcgroup_v1_bound(const struct cg_mounts *m)
{
	cgroup_set_logger(quiet_logger, CGROUP_LOG_ERROR, NULL);
	if (cgroup_init() != 0)
		return 0;
	void *h = NULL;
	_cleanup_free_ struct cgroup_mount_point *mp = kl_xcalloc(1, sizeof *mp);
	unsigned mask = 0;
	int r = cgroup_get_controller_begin(&h, mp);
	while (r == 0) {
		if (!is_v2_point(m, mp->path))
			mask |= ctrl_mask_of(mp->name, ",", true);
		r = cgroup_get_controller_next(&h, mp);
	}
	if (h)
		cgroup_get_controller_end(&h);
	return mask;
}

static bool
kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;
	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

/* cgroup.kill exists in every non-root cgroup of a 5.14+ kernel but never in
 * the hierarchy's root, which is where we sit on many hosts: look at the
 * root, then at any child; with no child, trust the kernel version. */
static bool
detect_kill(int rootfd)
{
	if (faccessat(rootfd, "cgroup.kill", F_OK, 0) == 0)
		return true;
	int dfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0)
		return kernel_at_least(5, 14);
	DIR *dir = fdopendir(dfd);
	if (!dir) {
		close(dfd);
		return kernel_at_least(5, 14);
	}
	int found = -1;
	struct dirent *de;
	while (found < 0 && (de = readdir(dir))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		_cleanup_close_ int cfd =
		        openat(rootfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cfd >= 0)
			found = faccessat(cfd, "cgroup.kill", F_OK, 0) == 0;
	}
	closedir(dir);
	return found < 0 ? kernel_at_least(5, 14) : found;
}

int
cg_discover(const char *root_override, cg_discovery *ret)
{
	_cleanup_free_ struct cg_mounts *m = kl_xcalloc(1, sizeof *m);
	_cleanup_free_ cg_discovery *d = kl_xcalloc(1, sizeof *d);
	int r = read_mountinfo(m);
	if (r < 0)
		return r;
	if (m->n == 0)
		return -ENOENT; /* cgroup v2 is required */
	r = root_override ? pick_override(m, root_override, d) : pick_self(m, d);
	if (r < 0)
		return r;

	char path[PATH_MAX * 2], buf[512];
	join_path(path, sizeof path, d->mount, d->self);
	_cleanup_close_ int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	ssize_t n = read_small_at(rootfd, "cgroup.controllers", buf, sizeof buf);
	if (n < 0)
		return (int)n;
	d->available = ctrl_mask_of(buf, " \n", false);
	d->v1_bound = m->v1 | libcgroup_v1_bound(m);
	d->kill_supported = detect_kill(rootfd);
	*ret = *d;
	return 0;
}

/* ---- hot path ---- */

int
cg_mkdir(int parentfd, const char *name, uid_t uid, gid_t gid, unsigned ctrl, int *ret_fd)
{
	bool created = true;
	int r;
	if (mkdirat(parentfd, name, 0755) < 0) {
		if (errno != EEXIST)
			return -errno;
		created = false;
	}
	_cleanup_close_ int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	if (uid != (uid_t)-1) {
		/* Delegation for clone3(CLONE_INTO_CGROUP) by that user; the
		 * directory itself stays root's, so the user cannot create
		 * sub-cgroups or change limits. */
		if (fchownat(fd, "cgroup.procs", uid, gid, 0) < 0) {
			r = -errno;
			goto fail;
		}
		if (fchownat(fd, "cgroup.threads", uid, gid, 0) < 0 && errno != ENOENT) {
			r = -errno;
			goto fail;
		}
	}
	if (ctrl) {
		r = write_subtree_control(fd, ctrl, '+');
		if (r < 0)
			goto fail;
	}
	*ret_fd = steal_fd(fd);
	return 0;
fail:
	if (created)
		unlinkat(parentfd, name, AT_REMOVEDIR);
	return r;
}

int
cg_rmdir(int parentfd, const char *name)
{
	if (unlinkat(parentfd, name, AT_REMOVEDIR) < 0)
		return -errno;
	return 0;
}

int
cg_move(int dirfd, pid_t pid)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%d", (int)pid);
	return write_at(dirfd, "cgroup.procs", buf);
}

int
cg_populated(int dirfd)
{
	char buf[128];
	uint64_t v;
	ssize_t n = read_small_at(dirfd, "cgroup.events", buf, sizeof buf);
	if (n < 0)
		return (int)n;
	if (!kv_get(buf, "populated", &v))
		return -EINVAL;
	return v != 0;
}

/* SIGKILL every pid cgroup.procs lists; the file can exceed one buffer, so
 * numbers are carried across reads. */
static int
kill_listed(int dirfd, unsigned *found)
{
	_cleanup_close_ int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	char buf[4096];
	long cur = -1;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] >= '0' && buf[i] <= '9') {
				cur = (cur < 0 ? 0 : cur * 10) + (buf[i] - '0');
			} else if (cur >= 0) {
				kill((pid_t)cur, SIGKILL);
				(*found)++;
				cur = -1;
			}
		}
	}
	if (cur >= 0) {
		kill((pid_t)cur, SIGKILL);
		(*found)++;
	}
	return 0;
}

static int
kill_tree(int dirfd, unsigned *found)
{
	int r = kill_listed(dirfd, found);
	if (r < 0)
		return r;
	int dfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0)
		return -errno;
	DIR *dir = fdopendir(dfd);
	if (!dir) {
		r = -errno;
		close(dfd);
		return r;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		_cleanup_close_ int cfd =
		        openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cfd < 0)
			continue; /* removed under us */
		r = kill_tree(cfd, found);
		if (r < 0)
			break;
	}
	closedir(dir);
	return r < 0 ? r : 0;
}

int
cg_kill_procs(int dirfd)
{
	/* A process forked between our read and our kill shows up in the next
	 * round; a killed one cannot fork any more, so this converges. Killed
	 * tasks stay listed until they exit, which is what we wait for. */
	for (int round = 0; round < 2000; round++) {
		unsigned found = 0;
		int r = kill_tree(dirfd, &found);
		if (r < 0)
			return r;
		if (!found)
			return 0;
		sleep_ms(1);
	}
	return -EBUSY;
}

int
cg_kill(int dirfd)
{
	int r = write_at(dirfd, "cgroup.kill", "1");
	if (r == -ENOENT)
		return cg_kill_procs(dirfd); /* kernel < 5.14 */
	return r;
}

int
cg_read_stats(int dirfd, cg_stats *ret)
{
	cg_stats st = {0};
	char buf[1024];
	ssize_t n = read_small_at(dirfd, "cpu.stat", buf, sizeof buf);
	if (n >= 0) {
		kv_get(buf, "usage_usec", &st.cpu_usec);
		kv_get(buf, "nr_throttled", &st.nr_throttled);
		kv_get(buf, "throttled_usec", &st.throttled_usec);
	} else if (n != -ENOENT) {
		return (int)n;
	}
	n = read_small_at(dirfd, "memory.peak", buf, sizeof buf);
	if (n > 0)
		st.mem_peak = strtoull(buf, NULL, 10);
	n = read_small_at(dirfd, "memory.events", buf, sizeof buf);
	if (n > 0) {
		kv_get(buf, "oom", &st.ooms);
		kv_get(buf, "oom_kill", &st.oom_kills);
	}
	n = read_small_at(dirfd, "pids.events", buf, sizeof buf);
	if (n > 0)
		kv_get(buf, "max", &st.pids_max_events);
	*ret = st;
	return 0;
}

int
cg_set_weight(int dirfd, uint32_t weight)
{
	char buf[16];
	uint64_t w = (uint64_t)weight * 100;
	snprintf(buf, sizeof buf, "%" PRIu64, KL_MAX(KL_MIN(w, 10000u), 1u));
	return write_at(dirfd, "cpu.weight", buf);
}

int
cg_set_limits(int dirfd, unsigned mask, const cg_limits *l)
{
	char buf[48];
	int r;
	/* Refuse before writing anything, so a refused call changes nothing. */
	if ((l->memory_bytes && !(mask & CG_CTRL_MEMORY)) || (l->pids && !(mask & CG_CTRL_PIDS)) ||
	    (l->cpu_millicores && !(mask & CG_CTRL_CPU)))
		return -EOPNOTSUPP;
	if (mask & CG_CTRL_MEMORY) {
		if (l->memory_bytes)
			snprintf(buf, sizeof buf, "%" PRIu64, l->memory_bytes);
		else
			snprintf(buf, sizeof buf, "max");
		r = write_at(dirfd, "memory.max", buf);
		if (r < 0)
			return r;
		/* Without swap accounting (swapaccount=0) the file is absent and
		 * there is no swap to limit. */
		r = write_at(dirfd, "memory.swap.max", "0");
		if (r < 0 && r != -ENOENT)
			return r;
	}
	if (mask & CG_CTRL_PIDS) {
		if (l->pids)
			snprintf(buf, sizeof buf, "%" PRIu32, l->pids);
		else
			snprintf(buf, sizeof buf, "max");
		r = write_at(dirfd, "pids.max", buf);
		if (r < 0)
			return r;
	}
	if (mask & CG_CTRL_CPU) {
		if (l->cpu_millicores) {
			uint64_t q = (uint64_t)l->cpu_millicores * (CG_CPU_PERIOD_US / 1000);
			snprintf(buf, sizeof buf, "%" PRIu64 " %d", KL_MAX(q, CG_CPU_MIN_QUOTA_US),
			         CG_CPU_PERIOD_US);
		} else {
			snprintf(buf, sizeof buf, "max %d", CG_CPU_PERIOD_US);
		}
		r = write_at(dirfd, "cpu.max", buf);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- removal (blocking: shutdown and crash cleanup) ---- */

/* rmdir fails with EBUSY for 5-15 ms after cgroup.kill while the last tasks
 * exit; kill again now and then in case something slipped in. */
static int
rmdir_retry(int parentfd, const char *name, int fd, int64_t deadline)
{
	for (unsigned i = 1;; i++) {
		if (unlinkat(parentfd, name, AT_REMOVEDIR) == 0)
			return 0;
		if (errno == ENOENT)
			return 0;
		if (errno != EBUSY && errno != EINTR)
			return -errno;
		if (now_ms() >= deadline)
			return -EBUSY;
		if (i % 64 == 0)
			cg_kill(fd);
		sleep_ms(1);
	}
}

static int remove_subtree(int parentfd, const char *name, int64_t deadline);

/* Remove every child cgroup; repeat the scan until none is left, since
 * kernfs readdir need not show entries created or removed while it runs. */
static int
remove_children(int fd, int64_t deadline)
{
	int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3), count = 0, r = 0;
	if (dfd < 0)
		return -errno;
	DIR *dir = fdopendir(dfd);
	if (!dir) {
		r = -errno;
		close(dfd);
		return r;
	}
	for (bool again = true; again && r >= 0;) {
		again = false;
		rewinddir(dir);
		struct dirent *de;
		while (r >= 0 && (de = readdir(dir))) {
			if (de->d_type != DT_DIR || de->d_name[0] == '.')
				continue;
			r = remove_subtree(fd, de->d_name, deadline);
			if (r >= 0)
				count += r;
			again = true;
		}
		if (again && now_ms() >= deadline)
			r = -EBUSY;
	}
	closedir(dir);
	return r < 0 ? r : count;
}

static int
remove_subtree(int parentfd, const char *name, int64_t deadline)
{
	_cleanup_close_ int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int count = remove_children(fd, deadline);
	if (count < 0)
		return count;
	int r = rmdir_retry(parentfd, name, fd, deadline);
	return r < 0 ? r : count + 1;
}

int
cg_remove_tree(int parentfd, const char *name, int timeout_ms)
{
	_cleanup_close_ int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	/* One kill covers the whole subtree, and cgroup.kill also catches
	 * tasks forking while it runs. */
	int r = cg_kill(fd);
	if (r < 0 && r != -ENOENT)
		return r;
	return remove_subtree(parentfd, name, now_ms() + timeout_ms);
}

/* ---- the node's tree ---- */

static bool
valid_name(const char *name)
{
	size_t n = strlen(name);
	return n > 0 && n <= NAME_MAX - 5 && !strchr(name, '/') && !strchr(name, '\n') &&
	       strcmp(name, ".") && strcmp(name, "..");
}

/* Are we inside <mount><self>/<dir>? Then reclaiming it would kill us. */
static int
self_inside(const cg_discovery *d, const char *dir)
{
	_cleanup_free_ struct cg_mounts *m = kl_xcalloc(1, sizeof *m);
	char cg[PATH_MAX], rel[PATH_MAX], tree[PATH_MAX + NAME_MAX + 2];
	int r = read_mountinfo(m);
	if (r < 0)
		return r;
	r = read_proc_cgroup(cg, sizeof cg);
	if (r < 0)
		return r;
	for (int i = 0; i < m->n; i++) {
		if (strcmp(m->v2[i].point, d->mount) ||
		    !strip_mount_root(m->v2[i].root, cg, rel, sizeof rel))
			continue;
		snprintf(tree, sizeof tree, "%s/%s", strcmp(d->self, "/") ? d->self : "", dir);
		size_t tl = strlen(tree);
		return !strncmp(rel, tree, tl) && (rel[tl] == '/' || rel[tl] == 0);
	}
	return 0;
}

/* Turn controllers on one at a time down root -> kiln-<name> -> tenants, so
 * one refusal (other processes in the root, an RT thread blocking cpu) costs
 * only that controller. */
static void
enable_controllers(node_cg *cg, unsigned want)
{
	char buf[256];
	unsigned before = 0;
	if (read_small_at(cg->parentfd, "cgroup.subtree_control", buf, sizeof buf) >= 0)
		before = ctrl_mask_of(buf, " \n", false);
	for (size_t i = 0; i < KL_ARRAY_SIZE(cg_ctrls); i++) {
		unsigned c = cg_ctrls[i].bit;
		if (!(want & c))
			continue;
		if (!(before & c)) {
			if (write_subtree_control(cg->parentfd, c, '+') < 0)
				continue;
			cg->root_added |= c;
		}
		if (write_subtree_control(cg->rootfd, c, '+') < 0 ||
		    write_subtree_control(cg->tenantsfd, c, '+') < 0)
			continue;
		cg->enabled |= c;
	}
}

int
cg_tree_open(const cg_discovery *d, const char *name, unsigned want, bool move_self, node_cg *ret)
{
	char dir[NAME_MAX + 1], root[PATH_MAX * 2];
	if (!valid_name(name))
		return -EINVAL;
	snprintf(dir, sizeof dir, "kiln-%s", name);
	join_path(root, sizeof root, d->mount, d->self);
	node_cg cg = {.rootfd = -1, .daemonfd = -1, .poolfd = -1, .tenantsfd = -1};
	int n = snprintf(cg.path, sizeof cg.path, "%s/%s", root, dir);
	if (n < 0 || (size_t)n >= sizeof cg.path)
		return -ENAMETOOLONG;
	cg.parentfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg.parentfd < 0)
		return -errno;
	/* Until kiln-<name>/ is ours, failures must not touch it: it may hold
	 * the caller, or a tree we could not clean. */
	int removed = self_inside(d, dir);
	if (removed > 0)
		removed = -EBUSY;
	else if (removed == 0)
		removed = cg_remove_tree(cg.parentfd, dir, CG_LEFTOVER_TIMEOUT_MS);
	if (removed < 0) {
		close(cg.parentfd);
		return removed;
	}
	int r;
	if ((r = cg_mkdir(cg.parentfd, dir, (uid_t)-1, (gid_t)-1, 0, &cg.rootfd)) < 0 ||
	    (r = cg_mkdir(cg.rootfd, "daemon", (uid_t)-1, (gid_t)-1, 0, &cg.daemonfd)) < 0 ||
	    (r = cg_mkdir(cg.rootfd, "pool", (uid_t)-1, (gid_t)-1, 0, &cg.poolfd)) < 0 ||
	    (r = cg_mkdir(cg.rootfd, "tenants", (uid_t)-1, (gid_t)-1, 0, &cg.tenantsfd)) < 0)
		goto fail;
	/* First out of the delegated root, then controllers: a non-root cgroup
	 * holding processes may not enable controllers for its children. */
	if (move_self) {
		r = cg_move(cg.daemonfd, getpid());
		if (r < 0)
			goto fail;
		cg.moved = true;
	}
	enable_controllers(&cg, want & d->available);
	*ret = cg;
	return removed;
fail:
	cg_tree_destroy(&cg);
	return r;
}

int
cg_tree_destroy(node_cg *cg)
{
	if (!cg || cg->parentfd < 0)
		return 0;
	int r = 0, rr;
	if (cg->rootfd >= 0) {
		/* Everything but daemon/ first, so the controllers can be turned
		 * off again: the root must have none in subtree_control before
		 * we may move back into it (no internal processes rule). */
		if ((rr = cg_remove_tree(cg->rootfd, "tenants", CG_DESTROY_TIMEOUT_MS)) < 0)
			r = rr;
		if ((rr = cg_remove_tree(cg->rootfd, "pool", CG_DESTROY_TIMEOUT_MS)) < 0 && !r)
			r = rr;
		/* One by one: a controller can be on here but have failed
		 * further down, so it is missing from cg->enabled. */
		for (size_t i = 0; i < KL_ARRAY_SIZE(cg_ctrls); i++)
			write_subtree_control(cg->rootfd, cg_ctrls[i].bit, '-');
	}
	/* The hierarchy's root (no cgroup.type) may hold processes whatever its
	 * subtree_control says, and unrelated siblings (system.slice) may use
	 * what it enables: leave it alone there. */
	if (cg->root_added && faccessat(cg->parentfd, "cgroup.type", F_OK, 0) == 0)
		write_subtree_control(cg->parentfd, cg->root_added, '-');
	bool stuck = false;
	if (cg->moved) {
		rr = cg_move(cg->parentfd, getpid());
		if (rr < 0) {
			/* Killing the tree now would kill us: leave it to the next
			 * start's leftover cleanup. */
			stuck = true;
			r = rr;
		} else {
			cg->moved = false;
		}
	}
	kl_close(&cg->daemonfd);
	kl_close(&cg->poolfd);
	kl_close(&cg->tenantsfd);
	kl_close(&cg->rootfd);
	if (!stuck) {
		const char *dir = strrchr(cg->path, '/');
		rr = cg_remove_tree(cg->parentfd, dir ? dir + 1 : cg->path, CG_DESTROY_TIMEOUT_MS);
		if (rr < 0 && !r)
			r = rr;
	}
	kl_close(&cg->parentfd);
	cg->enabled = cg->root_added = 0;
	return r;
}
