/* SPDX-License-Identifier: Apache-2.0 */
/* Per-process and per-node resource accounting for tests (see kt_proc.h). */
#include "kt_proc.h"

#include "kt_node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

long
kt_proc_pss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long v = -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "Pss:", 4)) {
			v = atol(line + 4);
			break;
		}
	fclose(f);
	return v;
}

long
kt_proc_status_kib(pid_t pid, const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl)) {
			v = atol(line + kl);
			break;
		}
	fclose(f);
	return v;
}

int
kt_proc_fd_count(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return pid == getpid() ? n - 1 : n; /* not opendir's own fd */
}

int
kt_node_uid_range(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int k = -1;
	struct dirent *e;
	while (k < 0 && (e = readdir(d))) {
		char lp[400], target[300];
		snprintf(lp, sizeof lp, "%s/%s", path, e->d_name);
		ssize_t n = readlink(lp, target, sizeof target - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		int v;
		if (sscanf(target, "/run/kiln/uids-%d.lock", &v) == 1)
			k = v;
	}
	closedir(d);
	return k;
}

unsigned
kt_uid_lo(int k)
{
	return (1u << 28) + (unsigned)k * 65536u;
}

int
kt_range_procs(int k, bool *ret_free)
{
	char path[64];
	snprintf(path, sizeof path, "/run/kiln/uids-%d.lock", k);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	bool free_ = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;
	int n = kt_count_uid_procs(kt_uid_lo(k), kt_uid_lo(k) + 65536u);
	if (fd >= 0)
		close(fd); /* drops the lock, if we took it */
	if (ret_free)
		*ret_free = free_;
	return n;
}

const char *
kt_cgroup_mount(void)
{
	return access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0 ? "/sys/fs/cgroup/unified"
	                                                                : "/sys/fs/cgroup";
}

int
kt_node_cgroups(const char *name, int *ret_tenants)
{
	char tree[512];
	snprintf(tree, sizeof tree, "%s/kiln-%s", kt_cgroup_mount(), name);
	if (ret_tenants)
		*ret_tenants = 0;
	if (access(tree, F_OK) != 0)
		return 0;
	int n = 1 + kt_count_cgroups(tree);
	/* tenants/<tenant>: one per tenant that ever had a session here */
	char tdir[600];
	snprintf(tdir, sizeof tdir, "%s/tenants", tree);
	DIR *d = opendir(tdir);
	struct dirent *e;
	int t = 0;
	while (d && (e = readdir(d)))
		t += e->d_type == DT_DIR && e->d_name[0] != '.';
	if (d)
		closedir(d);
	if (ret_tenants)
		*ret_tenants = t;
	return n - t;
}

int
kt_mount_count(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	char line[4096];
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		char point[4096];
		if (sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1 &&
		    !strncmp(point, "/run/netns", 10))
			continue;
		n++;
	}
	fclose(f);
	return n;
}

int
kt_private_mounts(void)
{
	if (unshare(CLONE_NEWNS) < 0)
		return -errno;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	return 0;
}

bool
kt_child_alive(pid_t pid)
{
	return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

const char *
kt_wait_text(int st, char *buf, size_t len)
{
	if (st == -1)
		snprintf(buf, len, "still running");
	else if (WIFEXITED(st))
		snprintf(buf, len, "exit %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "status %#x", st);
	return buf;
}

static int
cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

long
kt_median(const long *v, int n)
{
	if (n <= 0)
		return -1;
	long *c = malloc(sizeof *c * (size_t)n);
	memcpy(c, v, sizeof *c * (size_t)n);
	qsort(c, (size_t)n, sizeof *c, cmp_long);
	long m = c[n / 2];
	free(c);
	return m;
}

bool
kt_asan_build(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return true;
#else
	return false;
#endif
#else
	return false;
#endif
}

void
kt_asan_quarantine(int mb)
{
	if (!kt_asan_build())
		return;
	const char *o = getenv("ASAN_OPTIONS");
	char buf[2048];
	snprintf(buf, sizeof buf, "%s%squarantine_size_mb=%d", o ? o : "", o && *o ? ":" : "", mb);
	setenv("ASAN_OPTIONS", buf, 1);
}

void
kt_node_counts(pid_t pid, const char *name, int *procs, int *cgroups)
{
	int k = kt_node_uid_range(pid);
	*procs = k < 0 ? -1 : kt_range_procs(k, NULL);
	*cgroups = kt_node_cgroups(name, NULL);
}
