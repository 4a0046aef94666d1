/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Privileged tests for node/cgroup.c on the real cgroup2 hierarchy: discovery
 * (checked against /proc and cgroupfs read independently, not against this
 * host's layout), the node tree and its leftover cleanup, delegation by
 * chowning cgroup.procs (a setuid child may clone3 into its own leaves and
 * only those), kill, populated, rmdir, move and stats; limit formatting runs
 * against a plain directory. Every cgroup created is named kiln-test-<pid>...
 * and the last test checks none is left. Needs root; skips (77) without
 * cgroup2.
 */
#include "test.h"

#include "cgroup.h"
#include "kl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_UID 54321
#define TEST_GID 54321

static cg_discovery disc;

static void root_path(const cg_discovery *d, char *out, size_t len);

/* A run that failed an assertion leaves its kiln-test-<pid>-* cgroups behind;
 * remove those whose process is gone, so failures do not pile up. */
static void
sweep_stale(const cg_discovery *d)
{
	char root[PATH_MAX];
	root_path(d, root, sizeof root);
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(rfd >= 0);
	DIR *dir = fdopendir(fcntl(rfd, F_DUPFD_CLOEXEC, 3));
	ASSERT(dir != NULL);
	struct dirent *de;
	while ((de = readdir(dir))) {
		int pid;
		if (sscanf(de->d_name, "kiln-test-%d-", &pid) != 1 || pid == getpid() ||
		    kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		int r = cg_remove_tree(rfd, de->d_name, 2000);
		fprintf(stderr, "     removed stale %s/%s: %d\n", root, de->d_name, r);
	}
	closedir(dir);
}

/* Discover once; skip the whole program where cgroup2 or root is missing. */
static const cg_discovery *
need_cgroup2(void)
{
	static bool done;
	if (done)
		return &disc;
	if (geteuid() != 0)
		KT_SKIP("cgroup tests need root (cgroupfs writes, setuid, chown)");
	int r = cg_discover(NULL, &disc);
	if (r == -ENOENT)
		KT_SKIP("no cgroup2 mount: the kernel or host lacks cgroup v2");
	ASSERT_EQ(r, 0);
	/* Orphans (the grandchildren the kill tests spawn) come back to us. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	done = true;
	sweep_stale(&disc);
	return &disc;
}

static void
root_path(const cg_discovery *d, char *out, size_t len)
{
	int n = snprintf(out, len, "%s%s", d->mount, strcmp(d->self, "/") ? d->self : "");
	ASSERT(n > 0 && (size_t)n < len);
}

static void
tree_name(char *out, size_t len, const char *what)
{
	snprintf(out, len, "test-%d-%s", (int)getpid(), what);
}

/* A failed assertion aborts the test: children must not outlive it (nor hold
 * ctest's output pipe open), so each one dies with its parent. */
static void
die_with_parent(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
}

static pid_t
clone_into(int cgfd)
{
	pid_t parent = getpid();
	struct clone_args a = {
	        .flags = CLONE_INTO_CGROUP,
	        .exit_signal = SIGCHLD,
	        .cgroup = (uint64_t)cgfd,
	};
	fflush(NULL);
	pid_t pid = (pid_t)syscall(SYS_clone3, &a, sizeof a);
	if (pid == 0)
		die_with_parent(parent);
	return pid;
}

static void
reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static int
wait_status(pid_t pid)
{
	int st = 0;
	pid_t r;
	do
		r = waitpid(pid, &st, 0);
	while (r < 0 && errno == EINTR);
	ASSERT_EQ(r, pid);
	return st;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Poll until cg_populated gives want (or 3 s pass); returns the last value. */
static int
wait_populated(int fd, int want)
{
	int v = -1;
	for (int i = 0; i < 3000; i++) {
		v = cg_populated(fd);
		if (v == want)
			break;
		sleep_ms(1);
	}
	return v;
}

/* Number of pids listed in fd/cgroup.procs. */
static int
count_procs(int fd)
{
	char *s = NULL;
	ASSERT_EQ(kl_read_file_at(fd, "cgroup.procs", 1 << 16, &s, NULL), 0);
	int n = 0;
	for (char *p = s; *p; p++)
		n += *p == '\n';
	free(s);
	return n;
}

/* The "0::" line of /proc/<pid>/cgroup, relative to the mount (root "/" only). */
static void
proc_cgroup(pid_t pid, char *out, size_t len)
{
	char path[64], *s = NULL;
	snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, path, 1 << 16, &s, NULL), 0);
	char *l = strstr(s, "0::");
	ASSERT(l != NULL);
	l += 3;
	l[strcspn(l, "\n")] = 0;
	kl_strlcpy(out, l, len);
	free(s);
}

/* A child that sleeps in the cgroup, with n grandchildren sleeping too. */
static pid_t
spawn_sleepers(int cgfd, int n)
{
	pid_t pid = clone_into(cgfd);
	ASSERT(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(null, 1);
		dup2(null, 2);
		pid_t me = getpid();
		for (int i = 0; i < n; i++)
			if (fork() == 0) {
				die_with_parent(me);
				break;
			}
		for (;;)
			pause();
	}
	for (int i = 0; i < 3000 && count_procs(cgfd) < n + 1; i++)
		sleep_ms(1);
	ASSERT_EQ(count_procs(cgfd), n + 1);
	return pid;
}

static unsigned
mask_of(const char *list, const char *seps, bool v1)
{
	static const char *v2n[] = {"cpu", "memory", "pids", "io"};
	static const char *v1n[] = {"cpu", "memory", "pids", "blkio"};
	unsigned m = 0;
	char *dup = kl_xstrdup(list), *save = NULL;
	for (char *t = strtok_r(dup, seps, &save); t; t = strtok_r(NULL, seps, &save))
		for (int i = 0; i < 4; i++)
			if (!strcmp(t, v1 ? v1n[i] : v2n[i]))
				m |= 1u << i; /* CG_CTRL_CPU, MEMORY, PIDS, IO in order */
	free(dup);
	return m;
}

TEST(ctrl_bits_match_test_order)
{
	/* mask_of relies on this order. */
	ASSERT_EQ(CG_CTRL_CPU, 1);
	ASSERT_EQ(CG_CTRL_MEMORY, 2);
	ASSERT_EQ(CG_CTRL_PIDS, 4);
	ASSERT_EQ(CG_CTRL_IO, 8);
	char buf[64];
	ASSERT_STR_EQ(cg_ctrl_names(CG_CTRL_CPU | CG_CTRL_MEMORY | CG_CTRL_PIDS, buf, sizeof buf),
	              "memory pids cpu");
	ASSERT_STR_EQ(cg_ctrl_names(0, buf, sizeof buf), "");
	ASSERT_STR_EQ(cg_ctrl_names(CG_CTRL_IO, buf, sizeof buf), "io");
}

TEST(discover_matches_proc)
{
	const cg_discovery *d = need_cgroup2();
	/* Independently: the cgroup2 mount and v1 controllers from mountinfo. */
	FILE *f = fopen("/proc/self/mountinfo", "re");
	ASSERT(f != NULL);
	char line[4096], mnt[PATH_MAX] = "", mroot[PATH_MAX] = "";
	unsigned v1 = 0;
	while (fgets(line, sizeof line, f)) {
		char *sep = strstr(line, " - ");
		ASSERT(sep != NULL);
		char fstype[64], src[256], opts[1024], root[PATH_MAX], point[PATH_MAX];
		if (sscanf(sep + 3, "%63s %255s %1023s", fstype, src, opts) != 3)
			continue;
		ASSERT_EQ(sscanf(line, "%*s %*s %*s %4095s %4095s", root, point), 2);
		if (!strcmp(fstype, "cgroup2") && !mnt[0]) {
			kl_strlcpy(mnt, point, sizeof mnt);
			kl_strlcpy(mroot, root, sizeof mroot);
		} else if (!strcmp(fstype, "cgroup")) {
			v1 |= mask_of(opts, ",", true);
		}
	}
	fclose(f);
	ASSERT_STR_EQ(d->mount, mnt);
	char self[PATH_MAX];
	proc_cgroup(getpid(), self, sizeof self);
	if (!strcmp(mroot, "/"))
		ASSERT_STR_EQ(d->self, self);
	ASSERT_EQ(d->v1_bound, v1);

	char root[PATH_MAX], *ctl = NULL;
	root_path(d, root, sizeof root);
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(rfd >= 0);
	ASSERT_EQ(kl_read_file_at(rfd, "cgroup.controllers", 4096, &ctl, NULL), 0);
	ASSERT_EQ(d->available, mask_of(ctl, " \n", false));
	fprintf(stderr, "     mount=%s self=%s controllers=\"%.*s\" v1_bound=%#x kill=%d\n",
	        d->mount, d->self, (int)strcspn(ctl, "\n"), ctl, d->v1_bound, d->kill_supported);
	free(ctl);
	/* A controller on a v1 hierarchy cannot also be offered by v2. */
	ASSERT_EQ(d->available & d->v1_bound, 0);

	struct utsname u;
	int ma = 0, mi = 0;
	ASSERT_EQ(uname(&u), 0);
	ASSERT_EQ(sscanf(u.release, "%d.%d", &ma, &mi), 2);
	ASSERT_EQ(d->kill_supported, ma > 5 || (ma == 5 && mi >= 14));
}

TEST(discover_override)
{
	const cg_discovery *d = need_cgroup2();
	char root[PATH_MAX], name[64], path[PATH_MAX + 128];
	root_path(d, root, sizeof root);
	snprintf(name, sizeof name, "kiln-test-%d-override", (int)getpid());
	snprintf(path, sizeof path, "%s/%s/", root, name); /* trailing slash on purpose */
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(rfd >= 0);
	ASSERT_EQ(mkdirat(rfd, name, 0755), 0);

	cg_discovery o;
	ASSERT_EQ(cg_discover(path, &o), 0);
	ASSERT_STR_EQ(o.mount, d->mount);
	char want[PATH_MAX + 64];
	snprintf(want, sizeof want, "%s/%s", strcmp(d->self, "/") ? d->self : "", name);
	ASSERT_STR_EQ(o.self, want);
	/* A child only gets what the parent's subtree_control passes down. */
	ASSERT_EQ(o.available & ~d->available, 0);
	ASSERT(o.kill_supported == d->kill_supported);
	ASSERT_EQ(cg_rmdir(rfd, name), 0);

	ASSERT_EQ(cg_discover(path, &o), -ENOENT);
	ASSERT_EQ(cg_discover("/proc", &o), -EINVAL);
}

TEST(tree_open_destroy)
{
	const cg_discovery *d = need_cgroup2();
	char name[64], root[PATH_MAX], before[PATH_MAX], now[PATH_MAX], want[PATH_MAX + 128];
	tree_name(name, sizeof name, "tree");
	root_path(d, root, sizeof root);
	proc_cgroup(getpid(), before, sizeof before);
	unsigned all = CG_CTRL_CPU | CG_CTRL_MEMORY | CG_CTRL_PIDS;

	node_cg cg;
	ASSERT_EQ(cg_tree_open(d, name, all, true, &cg), 0);
	snprintf(want, sizeof want, "%s/kiln-%s", root, name);
	ASSERT_STR_EQ(cg.path, want);
	struct stat st;
	ASSERT_EQ(stat(cg.path, &st), 0);
	ASSERT_EQ(fstatat(cg.rootfd, "daemon/cgroup.procs", &st, 0), 0);
	ASSERT_EQ(fstatat(cg.rootfd, "pool", &st, 0), 0);
	ASSERT_EQ(fstatat(cg.rootfd, "tenants", &st, 0), 0);
	ASSERT_EQ(fstatat(cg.poolfd, "cgroup.procs", &st, 0), 0);
	ASSERT_EQ(fstatat(cg.tenantsfd, "cgroup.procs", &st, 0), 0);
	ASSERT_EQ(faccessat(cg.rootfd, "cgroup.kill", F_OK, 0) == 0, d->kill_supported);

	/* We (all threads) now live in daemon/. */
	proc_cgroup(getpid(), now, sizeof now);
	ASSERT_CONTAINS(now, "/daemon");
	ASSERT_EQ(count_procs(cg.daemonfd), 1);
	ASSERT_EQ(cg_populated(cg.daemonfd), 1);

	/* enabled never claims more than asked and offered; from the v2 root
	 * (no internal processes rule) everything offered must succeed. */
	ASSERT_EQ(cg.enabled & ~(all & d->available), 0);
	if (!strcmp(d->self, "/"))
		ASSERT_EQ(cg.enabled, all & d->available);
	/* Tenants offer what was enabled to their children. */
	char *ctl = NULL;
	ASSERT_EQ(kl_read_file_at(cg.tenantsfd, "cgroup.subtree_control", 4096, &ctl, NULL), 0);
	ASSERT_EQ(mask_of(ctl, " \n", false), cg.enabled);
	free(ctl);

	/* Reclaiming our own tree would kill us: refused. */
	node_cg again;
	ASSERT_EQ(cg_tree_open(d, name, all, false, &again), -EBUSY);
	ASSERT_EQ(stat(cg.path, &st), 0);

	ASSERT_EQ(cg_tree_destroy(&cg), 0);
	ASSERT_EQ(stat(want, &st), -1);
	ASSERT_EQ(errno, ENOENT);
	proc_cgroup(getpid(), now, sizeof now);
	ASSERT_STR_EQ(now, before);
	ASSERT_EQ(cg.rootfd, -1);
	ASSERT_EQ(cg_tree_destroy(&cg), 0); /* twice is fine */
	ASSERT_EQ(cg_tree_destroy(NULL), 0);

	ASSERT_EQ(cg_tree_open(d, "a/b", 0, false, &cg), -EINVAL);
	ASSERT_EQ(cg_tree_open(d, "", 0, false, &cg), -EINVAL);
}

/* A delegated root that is not the hierarchy's root and holds the node
 * itself (systemd's Delegate=yes unit): the node must step into daemon/ and
 * back out again. */
TEST(tree_in_nonroot_delegation)
{
	const cg_discovery *d = need_cgroup2();
	char root[PATH_MAX], deleg[64], path[PATH_MAX + 64], before[PATH_MAX], now[PATH_MAX];
	root_path(d, root, sizeof root);
	proc_cgroup(getpid(), before, sizeof before);
	snprintf(deleg, sizeof deleg, "kiln-test-%d-unit", (int)getpid());
	snprintf(path, sizeof path, "%s/%s", root, deleg);
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(rfd >= 0);
	int ufd;
	ASSERT_EQ(cg_mkdir(rfd, deleg, (uid_t)-1, (gid_t)-1, 0, &ufd), 0);
	ASSERT_EQ(cg_move(ufd, 0), 0);

	cg_discovery o;
	ASSERT_EQ(cg_discover(path, &o), 0);
	ASSERT(o.kill_supported == d->kill_supported); /* found in the root itself */
	node_cg cg;
	unsigned all = CG_CTRL_CPU | CG_CTRL_MEMORY | CG_CTRL_PIDS;
	ASSERT_EQ(cg_tree_open(&o, "test-unit", all, true, &cg), 0);
	proc_cgroup(getpid(), now, sizeof now);
	ASSERT_CONTAINS(now, "/kiln-test-unit/daemon");
	ASSERT_EQ(count_procs(ufd), 0); /* the delegated root is empty now */
	ASSERT_EQ(cg.enabled & ~(all & o.available), 0);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
	proc_cgroup(getpid(), now, sizeof now);
	snprintf(path, sizeof path, "%s/%s", strcmp(before, "/") ? before : "", deleg);
	ASSERT_STR_EQ(now, path);
	struct stat st;
	ASSERT_EQ(fstatat(ufd, "kiln-test-unit", &st, 0), -1);
	/* Nothing of ours may stay enabled in the delegated root. */
	char *ctl = NULL;
	ASSERT_EQ(kl_read_file_at(ufd, "cgroup.subtree_control", 4096, &ctl, NULL), 0);
	ASSERT_EQ(mask_of(ctl, " \n", false), 0);
	free(ctl);

	ASSERT_EQ(cg_move(rfd, 0), 0);
	close(ufd);
	ASSERT_EQ(cg_rmdir(rfd, deleg), 0);
	proc_cgroup(getpid(), now, sizeof now);
	ASSERT_STR_EQ(now, before);
}

TEST(tree_open_reclaims_leftover)
{
	const cg_discovery *d = need_cgroup2();
	char name[64], dir[80], root[PATH_MAX];
	tree_name(name, sizeof name, "leftover");
	snprintf(dir, sizeof dir, "kiln-%s", name);
	root_path(d, root, sizeof root);
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(rfd >= 0);

	/* What a crashed node leaves: a nested tree with live processes. */
	int top, ten, t, s, job;
	ASSERT_EQ(cg_mkdir(rfd, dir, (uid_t)-1, (gid_t)-1, 0, &top), 0);
	ASSERT_EQ(cg_mkdir(top, "tenants", (uid_t)-1, (gid_t)-1, 0, &ten), 0);
	ASSERT_EQ(cg_mkdir(ten, "t1", (uid_t)-1, (gid_t)-1, 0, &t), 0);
	ASSERT_EQ(cg_mkdir(t, "s1", (uid_t)-1, (gid_t)-1, 0, &s), 0);
	ASSERT_EQ(cg_mkdir(s, "job-1", (uid_t)-1, (gid_t)-1, 0, &job), 0);
	pid_t a = spawn_sleepers(job, 2);
	int init;
	ASSERT_EQ(cg_mkdir(s, "init", (uid_t)-1, (gid_t)-1, 0, &init), 0);
	pid_t b = spawn_sleepers(init, 0);
	close(init);
	close(job);
	close(s);
	close(t);
	close(ten);
	ASSERT_EQ(cg_populated(top), 1);
	close(top);

	node_cg cg;
	int removed = cg_tree_open(d, name, 0, false, &cg);
	/* kiln-, tenants, t1, s1, job-1, init */
	ASSERT_EQ(removed, 6);
	int st = wait_status(a);
	ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	st = wait_status(b);
	ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	struct stat sb;
	ASSERT_EQ(fstatat(cg.tenantsfd, "t1", &sb, 0), -1);
	ASSERT_EQ(cg_populated(cg.rootfd), 0);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
	reap_orphans();
}

TEST(mkdir_chown_and_ctrl)
{
	const cg_discovery *d = need_cgroup2();
	char name[64];
	tree_name(name, sizeof name, "mkdir");
	node_cg cg;
	ASSERT_EQ(cg_tree_open(d, name, 0, false, &cg), 0);
	int a, b, again;
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "owned", TEST_UID, TEST_GID, 0, &a), 0);
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "plain", (uid_t)-1, (gid_t)-1, 0, &b), 0);
	struct stat st;
	ASSERT_EQ(fstatat(a, "cgroup.procs", &st, 0), 0);
	ASSERT_EQ(st.st_uid, TEST_UID);
	ASSERT_EQ(st.st_gid, TEST_GID);
	ASSERT_EQ(fstatat(a, "cgroup.threads", &st, 0), 0);
	ASSERT_EQ(st.st_uid, TEST_UID);
	/* The directory and the limit knobs stay root's. */
	ASSERT_EQ(fstat(a, &st), 0);
	ASSERT_EQ(st.st_uid, 0);
	ASSERT_EQ(fstatat(a, "cgroup.subtree_control", &st, 0), 0);
	ASSERT_EQ(st.st_uid, 0);
	ASSERT_EQ(fstatat(b, "cgroup.procs", &st, 0), 0);
	ASSERT_EQ(st.st_uid, 0);
	/* EEXIST is fine and yields a new fd on the same cgroup. */
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "owned", (uid_t)-1, (gid_t)-1, 0, &again), 0);
	struct stat s1, s2;
	ASSERT_EQ(fstat(a, &s1), 0);
	ASSERT_EQ(fstat(again, &s2), 0);
	ASSERT_EQ(s1.st_ino, s2.st_ino);
	close(again);
	close(a);
	close(b);

	/* A controller the parent does not pass down cannot be enabled, and the
	 * half-made cgroup is not left behind. */
	unsigned missing = (CG_CTRL_MEMORY | CG_CTRL_PIDS | CG_CTRL_CPU) & ~cg.enabled;
	if (missing) {
		int fd = -1;
		ASSERT_LT(cg_mkdir(cg.tenantsfd, "ctl", (uid_t)-1, (gid_t)-1, missing, &fd), 0);
		ASSERT_EQ(fd, -1);
		ASSERT_EQ(fstatat(cg.tenantsfd, "ctl", &st, 0), -1);
	}
	if (cg.enabled) {
		int fd;
		char *ctl = NULL;
		ASSERT_EQ(cg_mkdir(cg.tenantsfd, "ctl", (uid_t)-1, (gid_t)-1, cg.enabled, &fd), 0);
		ASSERT_EQ(kl_read_file_at(fd, "cgroup.subtree_control", 4096, &ctl, NULL), 0);
		ASSERT_EQ(mask_of(ctl, " \n", false), cg.enabled);
		free(ctl);
		close(fd);
	}
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
}

/* In the child (uid 54321): clone3 into fd; report 0 if the grandchild
 * started there, else errno. The grandchild checks where it landed. */
static int
try_clone_as_user(int fd, const char *suffix)
{
	pid_t p = clone_into(fd);
	if (p < 0)
		return errno;
	if (p == 0) {
		char path[PATH_MAX];
		proc_cgroup(getpid(), path, sizeof path);
		size_t pl = strlen(path), sl = strlen(suffix);
		_exit(pl >= sl && !strcmp(path + pl - sl, suffix) ? 0 : 99);
	}
	int st = 0;
	waitpid(p, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 98;
}

TEST(clone_into_delegated_leaf)
{
	const cg_discovery *d = need_cgroup2();
	char name[64];
	tree_name(name, sizeof name, "deleg");
	node_cg cg;
	ASSERT_EQ(cg_tree_open(d, name, 0, false, &cg), 0);
	/* tenants/t/s is the session, delegated to the sandbox user together
	 * with init/ and job-1/; job-2/ is not chowned and other/ sits outside
	 * the session (their common ancestor t/ is root's). */
	int t, s, init, job1, job2, other;
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "t", (uid_t)-1, (gid_t)-1, 0, &t), 0);
	ASSERT_EQ(cg_mkdir(t, "s", TEST_UID, TEST_GID, 0, &s), 0);
	ASSERT_EQ(cg_mkdir(s, "init", TEST_UID, TEST_GID, 0, &init), 0);
	ASSERT_EQ(cg_mkdir(s, "job-1", TEST_UID, TEST_GID, 0, &job1), 0);
	ASSERT_EQ(cg_mkdir(s, "job-2", (uid_t)-1, (gid_t)-1, 0, &job2), 0);
	ASSERT_EQ(cg_mkdir(t, "other", TEST_UID, TEST_GID, 0, &other), 0);

	int pfd[2];
	ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
	pid_t pid = clone_into(init);
	ASSERT(pid >= 0);
	if (pid == 0) {
		int res[3] = {-1, -1, -1};
		if (setgroups(0, NULL) == 0 && setgid(TEST_GID) == 0 && setuid(TEST_UID) == 0) {
			res[0] = try_clone_as_user(job1, "/s/job-1");
			res[1] = try_clone_as_user(job2, "/s/job-2");
			res[2] = try_clone_as_user(other, "/t/other");
		}
		ssize_t w = write(pfd[1], res, sizeof res);
		_exit(w == sizeof res ? 0 : 1);
	}
	close(pfd[1]);
	int res[3];
	ASSERT_EQ(read(pfd[0], res, sizeof res), (ssize_t)sizeof res);
	close(pfd[0]);
	ASSERT_EQ(WEXITSTATUS(wait_status(pid)), 0);
	ASSERT_EQ(res[0], 0);      /* target and common ancestor (s/) are delegated */
	ASSERT_EQ(res[1], EACCES); /* target's cgroup.procs is root's */
	ASSERT_EQ(res[2], EACCES); /* common ancestor t/ is root's */

	close(t);
	close(s);
	close(init);
	close(job1);
	close(job2);
	close(other);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
}

static void
check_kill(int (*killer)(int))
{
	const cg_discovery *d = need_cgroup2();
	char name[64];
	tree_name(name, sizeof name, killer == cg_kill ? "kill" : "killprocs");
	node_cg cg;
	ASSERT_EQ(cg_tree_open(d, name, 0, false, &cg), 0);
	int job, sub;
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "job", (uid_t)-1, (gid_t)-1, 0, &job), 0);
	ASSERT_EQ(cg_mkdir(job, "sub", (uid_t)-1, (gid_t)-1, 0, &sub), 0);
	pid_t a = spawn_sleepers(job, 3);
	pid_t b = spawn_sleepers(sub, 1); /* the kill covers descendants too */
	ASSERT_EQ(cg_populated(job), 1);
	ASSERT_EQ(cg_rmdir(job, "sub"), -EBUSY); /* populated */

	ASSERT_EQ(killer(job), 0);
	ASSERT_EQ(wait_populated(job, 0), 0);
	ASSERT_EQ(cg_populated(sub), 0);
	int st = wait_status(a);
	ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	st = wait_status(b);
	ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	reap_orphans();

	ASSERT_EQ(cg_rmdir(job, "sub"), 0);
	ASSERT_EQ(cg_rmdir(cg.tenantsfd, "job"), 0);
	ASSERT_EQ(cg_rmdir(cg.tenantsfd, "job"), -ENOENT);
	close(sub);
	close(job);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
}

TEST(kill_tree_and_rmdir)
{
	check_kill(cg_kill);
}

TEST(kill_fallback_procs)
{
	check_kill(cg_kill_procs);
}

TEST(move_and_populated)
{
	const cg_discovery *d = need_cgroup2();
	char name[64], where[PATH_MAX];
	tree_name(name, sizeof name, "move");
	node_cg cg;
	ASSERT_EQ(cg_tree_open(d, name, 0, false, &cg), 0);
	int leaf;
	ASSERT_EQ(cg_mkdir(cg.poolfd, "sb-1", (uid_t)-1, (gid_t)-1, 0, &leaf), 0);
	ASSERT_EQ(cg_populated(leaf), 0);
	fflush(NULL);
	pid_t parent = getpid(), pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		die_with_parent(parent);
		for (;;)
			pause();
	}
	ASSERT_EQ(cg_move(leaf, pid), 0);
	ASSERT_EQ(cg_populated(leaf), 1);
	proc_cgroup(pid, where, sizeof where);
	ASSERT_CONTAINS(where, "/pool/sb-1");
	ASSERT_EQ(count_procs(leaf), 1);
	/* The kernel's refusal comes back as -errno. */
	ASSERT_EQ(cg_move(leaf, 0x7ffffff0), -ESRCH);
	ASSERT_EQ(cg_kill(leaf), 0);
	int st = wait_status(pid);
	ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	ASSERT_EQ(wait_populated(leaf, 0), 0);
	close(leaf);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
}

TEST(stats_cpu_grows)
{
	const cg_discovery *d = need_cgroup2();
	char name[64];
	tree_name(name, sizeof name, "stats");
	node_cg cg;
	ASSERT_EQ(cg_tree_open(d, name, 0, false, &cg), 0);
	int leaf;
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "job", (uid_t)-1, (gid_t)-1, 0, &leaf), 0);
	cg_stats a, b;
	ASSERT_EQ(cg_read_stats(leaf, &a), 0);
	ASSERT_EQ(a.cpu_usec, 0);
	pid_t pid = clone_into(leaf);
	ASSERT(pid >= 0);
	if (pid == 0) {
		struct timespec ts;
		do
			clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
		while (ts.tv_sec == 0 && ts.tv_nsec < 50 * 1000000L);
		_exit(0);
	}
	ASSERT_EQ(WEXITSTATUS(wait_status(pid)), 0);
	ASSERT_EQ(wait_populated(leaf, 0), 0);
	ASSERT_EQ(cg_read_stats(leaf, &b), 0);
	ASSERT_GT(b.cpu_usec, a.cpu_usec);
	ASSERT_GE(b.cpu_usec, 40000);
	ASSERT_LT(b.cpu_usec, 10 * 1000000);
	/* No memory controller on the leaf's parent: the fields stay 0. */
	if (!(cg.enabled & CG_CTRL_MEMORY)) {
		ASSERT_EQ(b.mem_peak, 0);
		ASSERT_EQ(b.oom_kills, 0);
	}
	close(leaf);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
}

/* A plain directory standing in for a cgroup: formatting and parsing only. */
static int
fake_cgroup(char *path, size_t len, const char *const *files)
{
	snprintf(path, len, "/tmp/kiln-test-cgfake-XXXXXX");
	ASSERT(mkdtemp(path) != NULL);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(fd >= 0);
	for (int i = 0; files[i]; i += 2) {
		int f = openat(fd, files[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		ASSERT(f >= 0);
		ASSERT_EQ(kl_write_all(f, files[i + 1], strlen(files[i + 1])), 0);
		close(f);
	}
	return fd;
}

static void
fake_cleanup(int fd, const char *path)
{
	DIR *dir = fdopendir(fd);
	ASSERT(dir != NULL);
	struct dirent *de;
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.')
			ASSERT_EQ(unlinkat(fd, de->d_name, 0), 0);
	closedir(dir);
	ASSERT_EQ(rmdir(path), 0);
}

static void
assert_file(int fd, const char *name, const char *want)
{
	char *s = NULL;
	ASSERT_EQ(kl_read_file_at(fd, name, 4096, &s, NULL), 0);
	ASSERT_STR_EQ(s, want);
	free(s);
}

static const char *const limit_files[] = {
        "memory.max", "", "memory.swap.max", "", "pids.max", "", "cpu.max", "", NULL,
};

TEST(set_limits_format)
{
	char path[64];
	unsigned all = CG_CTRL_MEMORY | CG_CTRL_PIDS | CG_CTRL_CPU;
	int fd = fake_cgroup(path, sizeof path, limit_files);
	cg_limits l = {.memory_bytes = 512ull << 20, .pids = 100, .cpu_millicores = 1500};
	ASSERT_EQ(cg_set_limits(fd, all, &l), 0);
	assert_file(fd, "memory.max", "536870912");
	assert_file(fd, "memory.swap.max", "0");
	assert_file(fd, "pids.max", "100");
	assert_file(fd, "cpu.max", "150000 100000");
	fake_cleanup(fd, path);

	/* Zero means no limit; swap stays off. */
	fd = fake_cgroup(path, sizeof path, limit_files);
	cg_limits none = {0};
	ASSERT_EQ(cg_set_limits(fd, all, &none), 0);
	assert_file(fd, "memory.max", "max");
	assert_file(fd, "memory.swap.max", "0");
	assert_file(fd, "pids.max", "max");
	assert_file(fd, "cpu.max", "max 100000");
	fake_cleanup(fd, path);

	/* Tiny and huge quotas: the kernel's 1 ms floor; no 32-bit overflow. */
	fd = fake_cgroup(path, sizeof path, limit_files);
	cg_limits tiny = {.cpu_millicores = 1};
	ASSERT_EQ(cg_set_limits(fd, CG_CTRL_CPU, &tiny), 0);
	assert_file(fd, "cpu.max", "1000 100000");
	assert_file(fd, "memory.max", ""); /* not in mask: untouched */
	fake_cleanup(fd, path);
	fd = fake_cgroup(path, sizeof path, limit_files);
	cg_limits huge = {.cpu_millicores = 64000000, .memory_bytes = 1ull << 40};
	ASSERT_EQ(cg_set_limits(fd, CG_CTRL_CPU | CG_CTRL_MEMORY, &huge), 0);
	assert_file(fd, "cpu.max", "6400000000 100000");
	assert_file(fd, "memory.max", "1099511627776");
	assert_file(fd, "pids.max", "");
	fake_cleanup(fd, path);

	/* A limit without its controller is refused before anything is written. */
	fd = fake_cgroup(path, sizeof path, limit_files);
	ASSERT_EQ(cg_set_limits(fd, CG_CTRL_MEMORY | CG_CTRL_CPU, &l), -EOPNOTSUPP);
	ASSERT_EQ(cg_set_limits(fd, 0, &(cg_limits){.cpu_millicores = 1}), -EOPNOTSUPP);
	assert_file(fd, "memory.max", "");
	assert_file(fd, "cpu.max", "");
	ASSERT_EQ(cg_set_limits(fd, 0, &none), 0);
	fake_cleanup(fd, path);
}

TEST(set_limits_on_host)
{
	const cg_discovery *d = need_cgroup2();
	char name[64];
	tree_name(name, sizeof name, "limits");
	node_cg cg;
	unsigned all = CG_CTRL_MEMORY | CG_CTRL_PIDS | CG_CTRL_CPU;
	ASSERT_EQ(cg_tree_open(d, name, all, false, &cg), 0);
	int t, s;
	ASSERT_EQ(cg_mkdir(cg.tenantsfd, "t", (uid_t)-1, (gid_t)-1, cg.enabled, &t), 0);
	ASSERT_EQ(cg_mkdir(t, "s", (uid_t)-1, (gid_t)-1, 0, &s), 0);
	cg_limits mem = {.memory_bytes = 64 << 20};
	if (!(cg.enabled & CG_CTRL_MEMORY)) {
		/* Hybrid hosts: memory sits on v1, so the limit cannot be kept. */
		ASSERT_EQ(cg_set_limits(s, cg.enabled, &mem), -EOPNOTSUPP);
		struct stat st;
		ASSERT_EQ(fstatat(s, "memory.max", &st, 0), -1);
	} else {
		cg_limits l = {.memory_bytes = 64 << 20, .pids = 50, .cpu_millicores = 500};
		unsigned need = CG_CTRL_MEMORY;
		if (!(cg.enabled & CG_CTRL_PIDS))
			l.pids = 0;
		else
			need |= CG_CTRL_PIDS;
		if (!(cg.enabled & CG_CTRL_CPU))
			l.cpu_millicores = 0;
		else
			need |= CG_CTRL_CPU;
		ASSERT_EQ(cg_set_limits(s, cg.enabled, &l), 0);
		assert_file(s, "memory.max", "67108864\n");
		if (need & CG_CTRL_PIDS)
			assert_file(s, "pids.max", "50\n");
		if (need & CG_CTRL_CPU)
			assert_file(s, "cpu.max", "50000 100000\n");
	}
	close(s);
	close(t);
	ASSERT_EQ(cg_tree_destroy(&cg), 0);
}

TEST(stats_and_events_parse)
{
	static const char *const files[] = {
	        "cpu.stat",
	        "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 10\n"
	        "nr_throttled 3\nthrottled_usec 4567\nnr_bursts 0\nburst_usec 0\n",
	        "memory.peak",
	        "8388608\n",
	        "memory.events",
	        "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
	        "pids.events",
	        "max.imposed 9\nmax 5\n",
	        "cgroup.events",
	        "populated 1\nfrozen 0\n",
	        NULL,
	};
	char path[64];
	int fd = fake_cgroup(path, sizeof path, files);
	cg_stats st;
	ASSERT_EQ(cg_read_stats(fd, &st), 0);
	ASSERT_EQ(st.cpu_usec, 123456);
	ASSERT_EQ(st.nr_throttled, 3);
	ASSERT_EQ(st.throttled_usec, 4567);
	ASSERT_EQ(st.mem_peak, 8388608);
	ASSERT_EQ(st.ooms, 2);
	ASSERT_EQ(st.oom_kills, 1);
	ASSERT_EQ(st.pids_max_events, 5);
	ASSERT_EQ(cg_populated(fd), 1);
	fake_cleanup(fd, path);

	static const char *const empty[] = {"cgroup.events", "frozen 0\n", NULL};
	fd = fake_cgroup(path, sizeof path, empty);
	ASSERT_EQ(cg_read_stats(fd, &st), 0);
	ASSERT_EQ(st.cpu_usec, 0);
	ASSERT_EQ(st.mem_peak, 0);
	ASSERT_EQ(cg_populated(fd), -EINVAL);
	fake_cleanup(fd, path);
	ASSERT_EQ(cg_read_stats(-1, &st), -EBADF);
	ASSERT_EQ(cg_populated(-1), -EBADF);
}

TEST(remove_tree_counts)
{
	const cg_discovery *d = need_cgroup2();
	char root[PATH_MAX], name[64];
	root_path(d, root, sizeof root);
	snprintf(name, sizeof name, "kiln-test-%d-rm", (int)getpid());
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT(rfd >= 0);
	ASSERT_EQ(cg_remove_tree(rfd, name, 100), 0); /* absent */
	int top, x, y;
	ASSERT_EQ(cg_mkdir(rfd, name, (uid_t)-1, (gid_t)-1, 0, &top), 0);
	ASSERT_EQ(cg_mkdir(top, "x", (uid_t)-1, (gid_t)-1, 0, &x), 0);
	ASSERT_EQ(cg_mkdir(x, "y", (uid_t)-1, (gid_t)-1, 0, &y), 0);
	pid_t pid = spawn_sleepers(y, 1);
	for (int i = 0; i < 20; i++) {
		char n[16];
		int fd;
		snprintf(n, sizeof n, "c%d", i);
		ASSERT_EQ(cg_mkdir(top, n, (uid_t)-1, (gid_t)-1, 0, &fd), 0);
		close(fd);
	}
	close(y);
	close(x);
	close(top);
	ASSERT_EQ(cg_remove_tree(rfd, name, 5000), 23);
	int st = wait_status(pid);
	ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	reap_orphans();
}

/* Last: nothing this run created may remain. */
TEST(no_leftovers)
{
	const cg_discovery *d = need_cgroup2();
	char root[PATH_MAX], prefix[64];
	root_path(d, root, sizeof root);
	snprintf(prefix, sizeof prefix, "kiln-test-%d-", (int)getpid());
	DIR *dir = opendir(root);
	ASSERT(dir != NULL);
	struct dirent *de;
	while ((de = readdir(dir)))
		if (!strncmp(de->d_name, prefix, strlen(prefix)))
			KT_FAIL("leftover cgroup %s/%s", root, de->d_name);
	closedir(dir);
	dir = opendir("/tmp");
	ASSERT(dir != NULL);
	while ((de = readdir(dir)))
		if (!strncmp(de->d_name, "kiln-test-cgfake-", 17))
			fprintf(stderr, "     note: /tmp/%s exists (another run?)\n", de->d_name);
	closedir(dir);
	reap_orphans();
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
