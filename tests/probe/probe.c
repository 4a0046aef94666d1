/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-probe: one hostile action per run, for tests/node/test_isolation.c
 * (catalogue: docs/probes.md). `kiln-probe NAME [ARG]` attempts the action
 * NAME from inside a sandbox and prints exactly one line: `NAME: OK <detail>`
 * when it was denied or contained, `NAME: ESCAPED <detail>` when it got
 * through, or `NAME: FAIL <detail>` when the sandbox is not as expected in a
 * way that is not an escape (a writable path that should be, a missing
 * device). The exit status is 0, 1 or 2 to match.
 *
 * Calls the seccomp filter denies are made with arguments for which the
 * kernel itself would answer differently (EFAULT, EBADF, success...), so a
 * missing rule shows as ESCAPED even where another layer (no capabilities)
 * would still refuse the call. Where the kernel's own answer is the filter's
 * errno, the detail says so ("also: caps"). Static and uninstrumented: it
 * runs inside template roots, like kiln-sandbox-init.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/kcmp.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Set in an int argument: the kernel drops it, a 64-bit compare in the filter does not. */
#define HI_BIT (1ul << 32)

static const char *pname;
static int last_errno; /* errno of the last TRY() */

#define TRY(call)                       \
	({                              \
		errno = 0;              \
		long _r = (long)(call); \
		last_errno = errno;     \
		_r;                     \
	})

/* ---- verdicts ---- */

enum { V_OK, V_ESCAPED, V_FAIL };

/* What one probe found: the worst verdict and the notes that explain it. */
struct chk {
	int worst;
	size_t len;
	char text[3072];
};

__attribute__((format(printf, 3, 4))) static void
note(struct chk *c, int v, const char *fmt, ...)
{
	va_list ap;
	if (v > c->worst)
		c->worst = v;
	if (c->len + 8 >= sizeof c->text)
		return;
	if (c->len) {
		memcpy(c->text + c->len, "; ", 2);
		c->len += 2;
	}
	va_start(ap, fmt);
	int n = vsnprintf(c->text + c->len, sizeof c->text - c->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->len += (size_t)n < sizeof c->text - c->len ? (size_t)n
		                                              : sizeof c->text - c->len - 1;
}

static int
finish(const struct chk *c)
{
	static const char *const word[] = {"OK", "ESCAPED", "FAIL"};
	printf("%s: %s %s\n", pname, word[c->worst], c->len ? c->text : "-");
	fflush(stdout);
	return c->worst;
}

static const char *
en(int e)
{
	const char *s = e ? strerrorname_np(e) : "no error";
	return s ? s : "E?";
}

/* A call the seccomp filter must answer with `want`. */
static void
expect_errno(struct chk *c, const char *what, long r, int want)
{
	if (r >= 0)
		note(c, V_ESCAPED, "%s succeeded (%ld)", what, r);
	else if (last_errno != want)
		note(c, V_ESCAPED, "%s reached the kernel: %s (the filter answers %s)", what,
		     en(last_errno), en(want));
	else
		note(c, V_OK, "%s: %s", what, en(want));
}

/* An action that must fail, whatever the errno (reported). */
static void
expect_fail(struct chk *c, const char *what, long r)
{
	if (r >= 0)
		note(c, V_ESCAPED, "%s succeeded", what);
	else
		note(c, V_OK, "%s: %s", what, en(last_errno));
}

/* Run fn in a child; returns its exit status word (for signals: SIGSYS = killed by the
 * filter's bad-architecture action). */
static int
in_child(int (*fn)(void))
{
	fflush(stdout);
	pid_t p = fork();
	if (p < 0)
		return -1;
	if (p == 0)
		_exit(fn());
	int st;
	while (waitpid(p, &st, 0) < 0 && errno == EINTR)
		;
	return st;
}

/* Child exit codes: 0 = the call succeeded, 1..254 = its errno. */
static int
child_result(long r)
{
	return r >= 0 ? 0 : (last_errno > 0 && last_errno < 255 ? last_errno : 254);
}

static void
expect_child_errno(struct chk *c, const char *what, int st, int want)
{
	if (st == -1)
		note(c, V_FAIL, "%s: fork: %s", what, en(errno));
	else if (WIFSIGNALED(st))
		note(c, WTERMSIG(st) == SIGSYS ? V_OK : V_FAIL, "%s: child killed by %s", what,
		     sigabbrev_np(WTERMSIG(st)));
	else if (WEXITSTATUS(st) == 0)
		note(c, V_ESCAPED, "%s succeeded", what);
	else if (WEXITSTATUS(st) != want)
		note(c, V_ESCAPED, "%s reached the kernel: %s (the filter answers %s)", what,
		     en(WEXITSTATUS(st)), en(want));
	else
		note(c, V_OK, "%s: %s", what, en(want));
}

static int
read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = 0;
	ssize_t n;
	while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	return (int)len;
}

/* ---- seccomp: io_uring, mounts, ptrace ---- */

static int
p_io_uring_setup(int argc, char **argv)
{
	struct chk c = {0};
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	long r = TRY(syscall(SYS_io_uring_setup, 4, &p));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "io_uring_setup(4)", r, ENOSYS);
	return finish(&c);
}

static int
p_io_uring_enter(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "io_uring_enter(bad fd)",
	             TRY(syscall(SYS_io_uring_enter, 9999, 1, 0, 0, NULL, 0)), ENOSYS);
	return finish(&c);
}

static int
p_io_uring_register(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "io_uring_register(bad fd)",
	             TRY(syscall(SYS_io_uring_register, 9999, 0, NULL, 0)), ENOSYS);
	return finish(&c);
}

static int
p_mount(int argc, char **argv)
{
	struct chk c = {0};
	mkdir("/tmp/kiln-mnt", 0755);
	expect_fail(&c, "mount tmpfs on /tmp/kiln-mnt",
	            TRY(mount("none", "/tmp/kiln-mnt", "tmpfs", 0, NULL)));
	expect_fail(&c, "remount / read-write",
	            TRY(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL)));
	expect_fail(&c, "bind / onto /tmp/kiln-mnt",
	            TRY(mount("/", "/tmp/kiln-mnt", NULL, MS_BIND | MS_REC, NULL)));
	/* No target: the kernel says EFAULT before any permission check. */
	expect_errno(&c, "mount(NULL target)", TRY(syscall(SYS_mount, NULL, NULL, NULL, 0, NULL)),
	             EPERM);
	return finish(&c);
}

static int
p_umount2(int argc, char **argv)
{
	struct chk c = {0};
	expect_fail(&c, "umount2(/proc, MNT_DETACH)", TRY(umount2("/proc", MNT_DETACH)));
	expect_errno(&c, "umount2(NULL)", TRY(syscall(SYS_umount2, NULL, 0)), EPERM);
	return finish(&c);
}

static int
p_pivot_root(int argc, char **argv)
{
	struct chk c = {0};
	/* The kernel checks CAP_SYS_ADMIN first, so both layers answer EPERM. */
	expect_errno(&c, "pivot_root(/tmp, /tmp) (also: caps)",
	             TRY(syscall(SYS_pivot_root, "/tmp", "/tmp")), EPERM);
	return finish(&c);
}

static int
p_new_mount_api(int argc, char **argv)
{
	struct chk c = {0};
	/* Without OPEN_TREE_CLONE, open_tree needs no privilege at all. */
	long r = TRY(syscall(SYS_open_tree, AT_FDCWD, "/workspace", 0));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "open_tree(/workspace)", r, EPERM);
	r = TRY(syscall(SYS_fsopen, "tmpfs", 0));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "fsopen(tmpfs) (also: caps)", r, EPERM);
	expect_errno(&c, "mount_setattr(bad size)",
	             TRY(syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, NULL, 0)), EPERM);
	return finish(&c);
}

static int
traceme(void)
{
	return child_result(TRY(ptrace(PTRACE_TRACEME, 0, NULL, NULL)));
}

static int
p_ptrace(int argc, char **argv)
{
	struct chk c = {0};
	expect_child_errno(&c, "PTRACE_TRACEME", in_child(traceme), EPERM);
	/* init is non-dumpable as well: the kernel would say EPERM too. */
	long r = TRY(ptrace(PTRACE_ATTACH, 1, NULL, NULL));
	if (r == 0)
		ptrace(PTRACE_DETACH, 1, NULL, NULL);
	expect_errno(&c, "PTRACE_ATTACH to pid 1", r, EPERM);
	/* Our own child: the kernel alone would allow this. */
	pid_t kid = fork();
	if (kid == 0) {
		pause();
		_exit(0);
	}
	r = TRY(ptrace(PTRACE_ATTACH, kid, NULL, NULL));
	expect_errno(&c, "PTRACE_ATTACH to our child", r, EPERM);
	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	char buf[16] = "kiln", out[16];
	struct iovec lo = {out, sizeof out}, re = {buf, sizeof buf};
	expect_errno(&c, "process_vm_readv(self)",
	             TRY(syscall(SYS_process_vm_readv, getpid(), &lo, 1, &re, 1, 0)), EPERM);
	return finish(&c);
}

/* ---- seccomp: kernel interfaces ---- */

static int
p_kexec_load(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "kexec_load", TRY(syscall(SYS_kexec_load, 0, 0, NULL, 0)), EPERM);
	expect_errno(&c, "kexec_file_load", TRY(syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0)),
	             EPERM);
	return finish(&c);
}

static int
p_bpf(int argc, char **argv)
{
	struct chk c = {0};
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 4;
	a.max_entries = 1;
	long r = TRY(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "bpf(BPF_MAP_CREATE)", r, EPERM);
	return finish(&c);
}

static int
p_perf_event_open(int argc, char **argv)
{
	struct chk c = {0};
	struct perf_event_attr pa;
	memset(&pa, 0, sizeof pa);
	pa.type = PERF_TYPE_SOFTWARE;
	pa.size = sizeof pa;
	pa.config = PERF_COUNT_SW_CPU_CLOCK;
	pa.disabled = 1;
	pa.exclude_kernel = 1;
	pa.exclude_hv = 1;
	long r = TRY(syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "perf_event_open(sw clock, self)", r, EPERM);
	return finish(&c);
}

static int
p_keyctl(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "keyctl(GET_KEYRING_ID session)",
	             TRY(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)),
	             EPERM);
	return finish(&c);
}

static int
p_add_key(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(
	        &c, "add_key(user)",
	        TRY(syscall(SYS_add_key, "user", "kiln-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING)),
	        EPERM);
	return finish(&c);
}

static int
p_request_key(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "request_key(user)",
	             TRY(syscall(SYS_request_key, "user", "kiln-probe", NULL, 0)), EPERM);
	return finish(&c);
}

static int
p_modules(int argc, char **argv)
{
	struct chk c = {0};
	/* The kernel checks CAP_SYS_MODULE (init namespace) first: EPERM either way. */
	expect_errno(&c, "init_module (also: caps)", TRY(syscall(SYS_init_module, NULL, 0, "")),
	             EPERM);
	expect_errno(&c, "finit_module (also: caps)", TRY(syscall(SYS_finit_module, -1, "", 0)),
	             EPERM);
	expect_errno(&c, "delete_module (also: caps)", TRY(syscall(SYS_delete_module, "kiln", 0)),
	             EPERM);
	return finish(&c);
}

static int
p_syslog(int argc, char **argv)
{
	struct chk c = {0};
	char buf[256];
	expect_errno(&c, "syslog(READ_ALL) (also: dmesg_restrict)",
	             TRY(klogctl(3, buf, sizeof buf)), EPERM);
	return finish(&c);
}

static int
p_reboot(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "reboot(CAD_OFF) (also: caps)",
	             TRY(syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
	                         LINUX_REBOOT_CMD_CAD_OFF, NULL)),
	             EPERM);
	return finish(&c);
}

static int
p_userfaultfd(int argc, char **argv)
{
	struct chk c = {0};
	long r = TRY(syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "userfaultfd(USER_MODE_ONLY)", r, EPERM);
	return finish(&c);
}

static int
p_pidfd_getfd(int argc, char **argv)
{
	struct chk c = {0};
	int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (pfd < 0) {
		note(&c, V_FAIL, "pidfd_open(self): %s", en(errno));
		return finish(&c);
	}
	long r = TRY(syscall(SYS_pidfd_getfd, pfd, 1, 0));
	if (r >= 0)
		close((int)r);
	expect_errno(&c, "pidfd_getfd(self, 1)", r, EPERM);
	expect_errno(&c, "kcmp(self, self, FILE)",
	             TRY(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 1, 1)), EPERM);
	close(pfd);
	return finish(&c);
}

/* ---- seccomp: namespaces and clone ---- */

static int
unshare_user(void)
{
	return child_result(TRY(unshare(CLONE_NEWUSER)));
}

static int
p_unshare(int argc, char **argv)
{
	struct chk c = {0};
	expect_child_errno(&c, "unshare(CLONE_NEWUSER)", in_child(unshare_user), EPERM);
	return finish(&c);
}

static int
p_clone_newuser(int argc, char **argv)
{
	struct chk c = {0};
	fflush(stdout);
	long r = TRY(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, NULL, NULL, 0));
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	expect_errno(&c, "clone(CLONE_NEWUSER)", r, EPERM);
	r = TRY(syscall(SYS_clone, (HI_BIT << 1) | CLONE_NEWUSER | SIGCHLD, 0, NULL, NULL, 0));
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	expect_errno(&c, "clone(CLONE_NEWUSER | bit 33)", r, EPERM);
	return finish(&c);
}

/* struct clone_args (CLONE_ARGS_SIZE_VER0); <linux/sched.h> clashes with <sched.h>. */
struct probe_clone_args {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static int
p_clone3(int argc, char **argv)
{
	struct chk c = {0};
	struct probe_clone_args ca;
	memset(&ca, 0, sizeof ca);
	ca.flags = CLONE_NEWUSER;
	ca.exit_signal = SIGCHLD;
	fflush(stdout);
	long r = TRY(syscall(SYS_clone3, &ca, sizeof ca));
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	expect_errno(&c, "clone3(CLONE_NEWUSER)", r, ENOSYS);
	return finish(&c);
}

static int
p_setns(int argc, char **argv)
{
	struct chk c = {0};
	expect_errno(&c, "setns(bad fd)", TRY(syscall(SYS_setns, 9999, 0)), EPERM);
	long r = TRY(open("/proc/1/ns/mnt", O_RDONLY | O_CLOEXEC));
	if (r >= 0) {
		note(&c, V_ESCAPED, "opened init's /proc/1/ns/mnt");
		long s = TRY(setns((int)r, 0));
		expect_errno(&c, "setns(init's mnt ns)", s, EPERM);
		close((int)r);
	} else {
		note(&c, V_OK, "open /proc/1/ns/mnt: %s", en(last_errno));
	}
	return finish(&c);
}

static int
p_chroot(int argc, char **argv)
{
	struct chk c = {0};
	expect_fail(&c, "chroot(/tmp)", TRY(chroot("/tmp")));
	/* A bad pointer: the kernel looks the path up (EFAULT) before checking caps. */
	expect_errno(&c, "chroot(NULL)", TRY(syscall(SYS_chroot, NULL)), EPERM);
	return finish(&c);
}

/* ---- seccomp: sockets and terminals ---- */

static void
try_socket(struct chk *c, const char *what, unsigned long family, unsigned long type, int proto,
           int want)
{
	long r = TRY(syscall(SYS_socket, family, type, proto));
	if (r >= 0)
		close((int)r);
	expect_errno(c, what, r, want);
}

static int
p_socket_netlink(int argc, char **argv)
{
	struct chk c = {0};
	try_socket(&c, "socket(AF_NETLINK, DGRAM, ROUTE)", AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE,
	           EAFNOSUPPORT);
	try_socket(&c, "socket(AF_NETLINK | bit 32, DGRAM, ROUTE)", HI_BIT | AF_NETLINK, SOCK_DGRAM,
	           NETLINK_ROUTE, EAFNOSUPPORT);
	try_socket(&c, "socket(AF_NETLINK, DGRAM, AUDIT)", AF_NETLINK, SOCK_DGRAM, NETLINK_AUDIT,
	           EAFNOSUPPORT);
	return finish(&c);
}

static int
p_socket_packet(int argc, char **argv)
{
	struct chk c = {0};
	/* Without the filter the kernel says EPERM (no CAP_NET_RAW). */
	try_socket(&c, "socket(AF_PACKET, DGRAM)", AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL),
	           EAFNOSUPPORT);
	try_socket(&c, "socket(AF_PACKET | bit 32, DGRAM)", HI_BIT | AF_PACKET, SOCK_DGRAM,
	           htons(ETH_P_ALL), EAFNOSUPPORT);
	return finish(&c);
}

static int
p_socket_vsock(int argc, char **argv)
{
	struct chk c = {0};
	/* vsock is not confined by the network namespace: on a VM host it reaches the
	 * hypervisor's services past the lo-only netns. Only the socket is created:
	 * nothing is dialled. */
	try_socket(&c, "socket(AF_VSOCK, STREAM)", AF_VSOCK, SOCK_STREAM, 0, EAFNOSUPPORT);
	try_socket(&c, "socket(AF_VSOCK | bit 32, DGRAM)", HI_BIT | AF_VSOCK, SOCK_DGRAM, 0,
	           EAFNOSUPPORT);
	return finish(&c);
}

static int
p_socket_raw(int argc, char **argv)
{
	struct chk c = {0};
	try_socket(&c, "socket(AF_INET, RAW, ICMP) (also: caps)", AF_INET, SOCK_RAW, IPPROTO_ICMP,
	           EPERM);
	try_socket(&c, "socket(AF_INET6, RAW|CLOEXEC, RAW) (also: caps)", AF_INET6,
	           SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW, EPERM);
	try_socket(&c, "socket(AF_INET, RAW | bit 32) (also: caps)", AF_INET, HI_BIT | SOCK_RAW,
	           IPPROTO_UDP, EPERM);
	return finish(&c);
}

static int
p_tiocsti(int argc, char **argv)
{
	struct chk c = {0};
	char name[128];
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name)) {
		note(&c, V_FAIL, "cannot open a pty via /dev/ptmx: %s", en(errno));
		return finish(&c);
	}
	/* We are a session leader without a terminal (init setsid()s tool processes): the
	 * pty becomes our controlling terminal, so the kernel alone would allow TIOCSTI.
	 * Closing it at the end hangs the session up: ignore that. */
	signal(SIGHUP, SIG_IGN);
	int s = open(name, O_RDWR | O_CLOEXEC);
	if (s < 0) {
		note(&c, V_FAIL, "open %s: %s", name, en(errno));
		return finish(&c);
	}
	ioctl(s, TIOCSCTTY, 0);
	char ch = '!';
	expect_errno(&c, "ioctl(TIOCSTI) on our pty", TRY(ioctl(s, TIOCSTI, &ch)), EPERM);
	expect_errno(&c, "ioctl(TIOCSTI | bit 32)",
	             TRY(syscall(SYS_ioctl, s, HI_BIT | TIOCSTI, &ch)), EPERM);
	close(s);
	close(m);
	return finish(&c);
}

/* ---- seccomp: foreign ABIs ---- */

static int
i386_unshare(void)
{
	long r;
	/* int $0x80 takes the i386 table: 310 is unshare there. */
	__asm__ volatile("int $0x80"
	                 : "=a"(r)
	                 : "a"(310L), "b"((long)CLONE_NEWUSER)
	                 : "memory", "r8", "r9", "r10", "r11");
	return r == 0 ? 0 : (r < 0 && r > -255 ? (int)-r : 254);
}

static int
x32_unshare(void)
{
	long r = TRY(syscall(0x40000000L | SYS_unshare, CLONE_NEWUSER));
	return child_result(r);
}

static int
p_foreign_abi(int argc, char **argv)
{
	struct chk c = {0};
	/* The filter only knows x86_64: other ABIs must hit its kill action (SIGSYS). */
	int st = in_child(i386_unshare);
	if (WIFEXITED(st) && WEXITSTATUS(st) == ENOSYS)
		note(&c, V_OK, "i386 unshare: ENOSYS (no IA32 emulation)");
	else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV)
		note(&c, V_OK, "i386 int 0x80: SIGSEGV (the kernel offers no i386 entry here)");
	else
		expect_child_errno(&c, "i386 (int 0x80) unshare(CLONE_NEWUSER)", st, 255);
	st = in_child(x32_unshare);
	if (WIFEXITED(st) && WEXITSTATUS(st) == ENOSYS)
		note(&c, V_OK, "x32 unshare: ENOSYS (kernel without x32)");
	else
		expect_child_errno(&c, "x32 unshare(CLONE_NEWUSER)", st, 255);
	return finish(&c);
}

/* ---- capabilities and privileges ---- */

static int
p_caps(int argc, char **argv)
{
	struct chk c = {0};
	char buf[8192], *l;
	if (read_small("/proc/self/status", buf, sizeof buf) < 0) {
		note(&c, V_FAIL, "read /proc/self/status: %s", en(errno));
		return finish(&c);
	}
	static const struct {
		const char *key, *want;
	} fields[] = {
	        {"CapInh:", "0000000000000000"},
	        {"CapPrm:", "0000000000000000"},
	        {"CapEff:", "0000000000000000"},
	        {"CapBnd:", "0000000000000000"},
	        {"CapAmb:", "0000000000000000"},
	        {"NoNewPrivs:", "1"},
	        {"Seccomp:", "2"},
	};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		char val[64] = "(missing)";
		size_t k = strlen(fields[i].key);
		for (l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
			if (!strncmp(l, fields[i].key, k))
				sscanf(l + k, " %63s", val);
		note(&c, strcmp(val, fields[i].want) ? V_ESCAPED : V_OK, "%s %s", fields[i].key,
		     val);
	}
	return finish(&c);
}

static int
p_cap_raise(int argc, char **argv)
{
	struct chk c = {0};
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	memset(d, 0xff, sizeof d);
	expect_fail(&c, "capset(all)", TRY(syscall(SYS_capset, &h, d)));
	expect_fail(&c, "PR_CAP_AMBIENT_RAISE(CAP_SYS_ADMIN)",
	            TRY(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0)));
	expect_fail(&c, "PR_SET_SECUREBITS(0)", TRY(prctl(PR_SET_SECUREBITS, 0, 0, 0, 0)));
	expect_fail(&c, "setuid(1000)", TRY(setuid(1000)));
	expect_fail(&c, "setgroups(1)", TRY(setgroups(1, (gid_t[]){1000})));
	expect_fail(&c, "sethostname", TRY(sethostname("kiln-evil", 9)));
	return finish(&c);
}

/* Run a setuid program with LD_SHOW_AUXV=1: ld.so prints AT_SECURE and AT_EUID (and
 * stays silent if the exec was a secure, privilege-changing one). */
static void
try_setuid(struct chk *c, const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return;
	int pfd[2];
	if (pipe(pfd) < 0)
		return;
	fflush(stdout);
	pid_t p = fork();
	if (p == 0) {
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		char *args[] = {(char *)path, "--help", NULL};
		char *env[] = {"LD_SHOW_AUXV=1", "PATH=/usr/bin:/bin", NULL};
		execve(path, args, env);
		_exit(127);
	}
	close(pfd[1]);
	char out[16384];
	size_t len = 0;
	ssize_t n;
	while (len + 1 < sizeof out && (n = read(pfd[0], out + len, sizeof out - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = 0;
	close(pfd[0]);
	waitpid(p, NULL, 0);
	const char *sec = strstr(out, "AT_SECURE:"), *eu = strstr(out, "AT_EUID:");
	long secure = sec ? strtol(sec + 10, NULL, 10) : -1,
	     euid = eu ? strtol(eu + 8, NULL, 10) : -1;
	int bad = secure != 0 || euid != (long)geteuid();
	note(c, bad ? V_ESCAPED : V_OK, "%s (mode %o, owner %u): AT_SECURE=%ld AT_EUID=%ld", path,
	     (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, secure, euid);
}

static int
p_setuid(int argc, char **argv)
{
	struct chk c = {0};
	static const char *const bins[] = {"/usr/bin/passwd", "/usr/bin/su",   "/usr/bin/mount",
	                                   "/usr/bin/newgrp", "/usr/bin/chsh", NULL};
	int found = 0;
	for (int i = 0; bins[i]; i++) {
		struct stat st;
		if (stat(bins[i], &st) == 0 && (st.st_mode & S_ISUID)) {
			found++;
			try_setuid(&c, bins[i]);
		}
	}
	struct statvfs sv;
	if (statvfs("/usr", &sv) == 0)
		note(&c, (sv.f_flag & ST_NOSUID) ? V_OK : V_ESCAPED, "/usr %s nosuid",
		     (sv.f_flag & ST_NOSUID) ? "is" : "is NOT");
	if (!found)
		note(&c, V_OK, "no setuid binary in the base image");
	return finish(&c);
}

static int
p_mknod(int argc, char **argv)
{
	struct chk c = {0};
	static const struct {
		const char *path;
		mode_t mode;
		unsigned maj, min;
	} nodes[] = {
	        {"/tmp/kiln-mem", S_IFCHR | 0666, 1, 1},
	        {"/workspace/kiln-sda", S_IFBLK | 0666, 8, 0},
	        {"/dev/kiln-null", S_IFCHR | 0666, 1, 3},
	};
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
		char what[96];
		snprintf(what, sizeof what, "mknod %s (%u,%u)", nodes[i].path, nodes[i].maj,
		         nodes[i].min);
		long r = TRY(
		        mknod(nodes[i].path, nodes[i].mode, makedev(nodes[i].maj, nodes[i].min)));
		if (r == 0)
			unlink(nodes[i].path);
		expect_fail(&c, what, r);
	}
	return finish(&c);
}

/* ---- procfs: host knobs and init ---- */

static void
try_write(struct chk *c, const char *path, const char *data)
{
	long fd = TRY(open(path, O_WRONLY | O_CLOEXEC));
	if (fd < 0) {
		note(c, V_OK, "open %s for writing: %s", path, en(last_errno));
		return;
	}
	long r = TRY(write((int)fd, data, strlen(data)));
	close((int)fd);
	if (r >= 0)
		note(c, V_ESCAPED, "wrote %s", path);
	else
		note(c, V_OK, "write %s: %s", path, en(last_errno));
}

static int
p_proc_sys_hostname(int argc, char **argv)
{
	struct chk c = {0};
	try_write(&c, "/proc/sys/kernel/hostname", "kiln-evil");
	return finish(&c);
}

static int
p_proc_sys_core_pattern(int argc, char **argv)
{
	struct chk c = {0};
	try_write(&c, "/proc/sys/kernel/core_pattern", "|/workspace/evil");
	try_write(&c, "/proc/sys/kernel/modprobe", "/workspace/evil");
	return finish(&c);
}

static int
p_sysrq_trigger(int argc, char **argv)
{
	struct chk c = {0};
	/* 'm' only dumps memory info to the kernel log: harmless if it got through. */
	try_write(&c, "/proc/sysrq-trigger", "m");
	return finish(&c);
}

static void
try_read(struct chk *c, const char *path)
{
	long fd = TRY(open(path, O_RDONLY | O_CLOEXEC));
	if (fd < 0) {
		note(c, V_OK, "open %s: %s", path, en(last_errno));
		return;
	}
	char buf[64];
	long r = TRY(pread((int)fd, buf, sizeof buf, 4096));
	close((int)fd);
	if (r > 0)
		note(c, V_ESCAPED, "read %ld bytes of %s", r, path);
	else
		note(c, V_OK, "opened %s but read: %s", path, r == 0 ? "EOF" : en(last_errno));
}

static int
p_proc1_environ(int argc, char **argv)
{
	struct chk c = {0};
	try_read(&c, "/proc/1/environ");
	return finish(&c);
}

static int
p_proc1_mem(int argc, char **argv)
{
	struct chk c = {0};
	try_read(&c, "/proc/1/mem");
	long fd = TRY(open("/proc/1/root", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (fd >= 0)
		close((int)fd);
	expect_fail(&c, "open /proc/1/root", fd);
	/* fd 3 is init's control socket to the node: the real prize. The fd directory of
	 * a non-dumpable task belongs to its user namespace's root, which is us, so it can
	 * be listed; following an entry needs ptrace access, which it must refuse. */
	char target[128];
	long k = TRY(readlink("/proc/1/fd/3", target, sizeof target - 1));
	if (k >= 0)
		note(&c, V_ESCAPED, "readlink /proc/1/fd/3 = %.*s", (int)k, target);
	else
		note(&c, V_OK, "readlink /proc/1/fd/3: %s", en(last_errno));
	fd = TRY(open("/proc/1/fd/3", O_RDWR | O_CLOEXEC));
	if (fd >= 0)
		close((int)fd);
	expect_fail(&c, "open /proc/1/fd/3 (init's control socket)", fd);
	fd = TRY(open("/proc/1/fdinfo/3", O_RDONLY | O_CLOEXEC));
	if (fd >= 0)
		close((int)fd);
	expect_fail(&c, "open /proc/1/fdinfo/3", fd);
	return finish(&c);
}

static int
p_etc_private(int argc, char **argv)
{
	struct chk c = {0};
	/* The base image binds host /etc entries: their root-only parts stay closed (host
	 * root is unmapped here, so we are "other" to them), and the rest is not there. */
	long fd = TRY(open("/etc/ssl/private", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (fd >= 0) {
		DIR *d = fdopendir((int)fd);
		struct dirent *e;
		int k = 0;
		while (d && (e = readdir(d)))
			k += e->d_name[0] != '.';
		if (d)
			closedir(d);
		note(&c, k ? V_ESCAPED : V_OK, "listed /etc/ssl/private: %d entries", k);
	} else {
		note(&c, V_OK, "open /etc/ssl/private: %s", en(last_errno));
	}
	static const char *const absent[] = {"/etc/shadow", "/etc/gshadow", "/etc/sudoers",
	                                     "/etc/ssh",    "/root/.ssh",   NULL};
	for (int i = 0; absent[i]; i++) {
		char buf[64];
		int r = read_small(absent[i], buf, sizeof buf);
		if (r >= 0)
			note(&c, V_ESCAPED, "read %d bytes of %s", r, absent[i]);
		else
			note(&c, V_OK, "%s: %s", absent[i], en(-r));
	}
	return finish(&c);
}

static int
p_kernel_memory(int argc, char **argv)
{
	struct chk c = {0};
	try_read(&c, "/proc/kcore");
	long fd = TRY(open("/proc/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC));
	if (fd >= 0)
		close((int)fd);
	expect_fail(&c, "open /proc/kmsg", fd);
	char buf[256];
	unsigned long long addr = 1;
	if (read_small("/proc/kallsyms", buf, sizeof buf) > 0 && sscanf(buf, "%llx", &addr) == 1)
		note(&c, addr ? V_ESCAPED : V_OK, "/proc/kallsyms addresses %s",
		     addr ? "visible" : "hidden");
	return finish(&c);
}

static char
init_state(void)
{
	char buf[512];
	if (read_small("/proc/1/stat", buf, sizeof buf) <= 0)
		return '?';
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

static int
p_kill_init(int argc, char **argv)
{
	struct chk c = {0};
	static const int sigs[] = {SIGKILL, SIGTERM, SIGINT, SIGSTOP, SIGSEGV};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		long r = TRY(kill(1, sigs[i]));
		usleep(20000);
		char st = init_state();
		int alive = kill(1, 0) == 0 && st != '?' && st != 'Z' && st != 'X';
		if (st == 'T' || st == 't')
			kill(1, SIGCONT);
		note(&c, alive && st != 'T' && st != 't' ? V_OK : V_ESCAPED,
		     "kill(1, %s) = %s, init state %c", sigabbrev_np(sigs[i]),
		     r == 0 ? "0" : en(last_errno), st);
	}
	return finish(&c);
}

/* ---- what the sandbox looks like ---- */

static int
p_pid1(int argc, char **argv)
{
	struct chk c = {0};
	char buf[256];
	int n = read_small("/proc/1/cmdline", buf, sizeof buf);
	const char *base = n > 0 ? strrchr(buf, '/') : NULL;
	base = base ? base + 1 : buf;
	note(&c, n > 0 && !strcmp(base, "kiln-sandbox-init") ? V_OK : V_FAIL, "pid 1 is \"%s\"",
	     n > 0 ? buf : "(unreadable)");
	return finish(&c);
}

static int
p_proc_pids(int argc, char **argv)
{
	struct chk c = {0};
	long host = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	char list[1024] = "";
	size_t len = 0;
	int k = 0;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char p[300], comm[64] = "?";
		snprintf(p, sizeof p, "/proc/%s/comm", e->d_name);
		if (read_small(p, comm, sizeof comm) > 0)
			comm[strcspn(comm, "\n")] = 0;
		k++;
		if (len + 80 < sizeof list)
			len += (size_t)snprintf(list + len, sizeof list - len, " %s:%s", e->d_name,
			                        comm);
	}
	if (d)
		closedir(d);
	int bad = k == 0 || k >= 10 || (host > 0 && k >= host);
	note(&c, bad ? V_ESCAPED : V_OK, "%d processes visible (host: %ld):%s", k, host, list);
	return finish(&c);
}

static void
check_map(struct chk *c, const char *path)
{
	char buf[256];
	unsigned long in, out, count;
	char extra;
	if (read_small(path, buf, sizeof buf) <= 0) {
		note(c, V_FAIL, "read %s: %s", path, en(errno));
		return;
	}
	int k = sscanf(buf, "%lu %lu %lu %c", &in, &out, &count, &extra);
	int bad = k != 3 || in != 0 || count != 1 || out < (1ul << 28) || out == 0;
	note(c, bad ? V_ESCAPED : V_OK, "%s %lu %lu %lu", path + 11, in, out, count);
}

static int
p_uid_map(int argc, char **argv)
{
	struct chk c = {0};
	check_map(&c, "/proc/self/uid_map");
	check_map(&c, "/proc/self/gid_map");
	return finish(&c);
}

static int
p_hostname(int argc, char **argv)
{
	struct chk c = {0};
	char h[256];
	if (gethostname(h, sizeof h) < 0) {
		note(&c, V_FAIL, "gethostname: %s", en(errno));
		return finish(&c);
	}
	const char *host = argc > 2 ? argv[2] : "";
	note(&c, !*host || !strcmp(h, host) ? V_ESCAPED : V_OK, "hostname \"%s\" (host: \"%s\")", h,
	     host);
	return finish(&c);
}

static int
p_rootfs_ro(int argc, char **argv)
{
	struct chk c = {0};
	static const char *const ro[] = {"/kiln-x",      "/usr/kiln-x", "/etc/kiln-x",
	                                 "/bin/kiln-x",  "/lib/kiln-x", "/var/kiln-x",
	                                 "/root/kiln-x", NULL};
	static const char *const rw[] = {"/workspace/kiln-x", "/tmp/kiln-x", "/dev/shm/kiln-x",
	                                 NULL};
	for (int i = 0; ro[i]; i++) {
		long fd = TRY(open(ro[i], O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644));
		if (fd >= 0) {
			close((int)fd);
			unlink(ro[i]);
			note(&c, V_ESCAPED, "created %s", ro[i]);
		} else {
			note(&c, last_errno == EROFS ? V_OK : V_FAIL, "%s: %s", ro[i],
			     en(last_errno));
		}
	}
	for (int i = 0; rw[i]; i++) {
		long fd = TRY(open(rw[i], O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
		if (fd >= 0) {
			close((int)fd);
			unlink(rw[i]);
			note(&c, V_OK, "%s writable", rw[i]);
		} else {
			note(&c, V_FAIL, "%s not writable: %s", rw[i], en(last_errno));
		}
	}
	return finish(&c);
}

static int
p_dev(int argc, char **argv)
{
	struct chk c = {0};
	static const struct {
		const char *name;
		mode_t type;
	} want[] = {
	        {"null", S_IFCHR},    {"zero", S_IFCHR},   {"full", S_IFCHR}, {"random", S_IFCHR},
	        {"urandom", S_IFCHR}, {"tty", S_IFCHR},    {"fd", S_IFLNK},   {"stdin", S_IFLNK},
	        {"stdout", S_IFLNK},  {"stderr", S_IFLNK}, {"ptmx", S_IFLNK}, {"pts", S_IFDIR},
	        {"shm", S_IFDIR},
	};
	int seen[sizeof want / sizeof want[0]] = {0};
	DIR *d = opendir("/dev");
	struct dirent *e;
	int extra = 0;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[300];
		struct stat st;
		snprintf(p, sizeof p, "/dev/%s", e->d_name);
		int known = 0;
		if (lstat(p, &st) == 0)
			for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
				if (!strcmp(want[i].name, e->d_name) &&
				    (st.st_mode & S_IFMT) == want[i].type)
					known = seen[i] = 1;
		if (!known) {
			extra++;
			note(&c, V_ESCAPED, "unexpected /dev/%s (mode %o)", e->d_name,
			     (unsigned)st.st_mode);
		}
	}
	if (d)
		closedir(d);
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (!seen[i])
			note(&c, V_FAIL, "missing /dev/%s", want[i].name);
	if (!extra)
		note(&c, V_OK, "/dev holds only the %zu expected entries",
		     sizeof want / sizeof want[0]);
	return finish(&c);
}

static int
p_no_sys(int argc, char **argv)
{
	struct chk c = {0};
	struct stat st;
	expect_fail(&c, "stat /sys", TRY(stat("/sys", &st)));
	expect_fail(&c, "stat /sys/fs/cgroup", TRY(stat("/sys/fs/cgroup", &st)));
	mkdir("/tmp/kiln-cg", 0755);
	expect_fail(&c, "mount cgroup2", TRY(mount("none", "/tmp/kiln-cg", "cgroup2", 0, NULL)));
	expect_fail(&c, "mount sysfs", TRY(mount("none", "/tmp/kiln-cg", "sysfs", 0, NULL)));
	char buf[16384];
	if (read_small("/proc/self/mountinfo", buf, sizeof buf) > 0) {
		int bad = strstr(buf, " - cgroup") || strstr(buf, " - sysfs") ||
		          strstr(buf, " - debugfs") || strstr(buf, " - securityfs");
		note(&c, bad ? V_ESCAPED : V_OK, "mountinfo %s cgroup/sys filesystems",
		     bad ? "has" : "has no");
	}
	return finish(&c);
}

static int
p_cgroup_ns(int argc, char **argv)
{
	struct chk c = {0};
	char buf[2048];
	int n = read_small("/proc/self/cgroup", buf, sizeof buf);
	if (n <= 0) {
		note(&c, V_FAIL, "read /proc/self/cgroup: %s", n ? en(-n) : "empty");
		return finish(&c);
	}
	/* "0::/" for the v2 hierarchy; a hybrid host adds v1 lines, which the namespace
	 * must show rooted too ("N:memory:/"), never as a host path. */
	int v2 = 0, lines = 0;
	for (char *l = buf, *e; *l; l = e + 1) {
		e = strchrnul(l, '\n');
		char *path = memrchr(l, ':', (size_t)(e - l));
		int rooted = path && e - path == 2 && path[1] == '/';
		v2 |= rooted && !strncmp(l, "0::", 3);
		lines++;
		if (!rooted)
			note(&c, V_ESCAPED, "host cgroup path visible: %.*s", (int)(e - l), l);
		if (!*e)
			break;
	}
	note(&c, v2 ? V_OK : V_ESCAPED, "%s; %d hierarchies, all rooted at /",
	     v2 ? "0::/" : "no 0::/ line", lines);
	return finish(&c);
}

static int
p_fds(int argc, char **argv)
{
	struct chk c = {0};
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int bad = 0;
	char list[256] = "";
	size_t len = 0;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		if (fd == dirfd(d))
			continue;
		char p[64], target[128] = "?";
		snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
		ssize_t k = readlink(p, target, sizeof target - 1);
		target[k > 0 ? k : 1] = 0;
		if (fd > 2 || !strncmp(target, "socket:", 7))
			bad = 1;
		if (len + 100 < sizeof list)
			len += (size_t)snprintf(list + len, sizeof list - len, " %d=%s", fd,
			                        target);
	}
	if (d)
		closedir(d);
	note(&c, bad ? V_ESCAPED : V_OK, "inherited fds:%s", list);
	return finish(&c);
}

/* ---- network ---- */

static int
p_net_ifaces(int argc, char **argv)
{
	struct chk c = {0};
	char buf[4096], names[256] = "";
	if (read_small("/proc/net/dev", buf, sizeof buf) <= 0) {
		note(&c, V_FAIL, "read /proc/net/dev: %s", en(errno));
		return finish(&c);
	}
	int k = 0, other = 0;
	char *line = strchr(buf, '\n');
	line = line ? strchr(line + 1, '\n') : NULL; /* two header lines */
	while (line && *++line) {
		char name[64];
		if (sscanf(line, " %63[^:]:", name) == 1) {
			k++;
			other |= strcmp(name, "lo") != 0;
			strncat(names, " ", sizeof names - strlen(names) - 1);
			strncat(names, name, sizeof names - strlen(names) - 1);
		}
		line = strchr(line, '\n');
	}
	note(&c, other ? V_ESCAPED : (k == 1 ? V_OK : V_FAIL), "interfaces:%s", names);
	return finish(&c);
}

static void
try_connect(struct chk *c, int family, int type, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, addr, &a->sin_addr);
		sl = sizeof *a;
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, addr, &a->sin6_addr);
		sl = sizeof *a;
	}
	char what[96];
	snprintf(what, sizeof what, "connect %s %s:%d", type == SOCK_STREAM ? "tcp" : "udp", addr,
	         port);
	int s = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		note(c, V_OK, "%s: socket: %s", what, en(errno));
		return;
	}
	long r = TRY(connect(s, (struct sockaddr *)&ss, sl));
	if (r == 0 && type == SOCK_DGRAM)
		r = TRY(send(s, "x", 1, 0));
	close(s);
	if (r >= 0 || last_errno == EINPROGRESS)
		note(c, V_ESCAPED, "%s: %s (a route exists)", what,
		     r >= 0 ? "sent" : "EINPROGRESS");
	else
		note(c, last_errno == ENETUNREACH ? V_OK : V_FAIL, "%s: %s", what, en(last_errno));
}

static int
p_connect(int argc, char **argv)
{
	struct chk c = {0};
	try_connect(&c, AF_INET, SOCK_STREAM, "10.0.0.1", 80);
	try_connect(&c, AF_INET, SOCK_STREAM, "1.1.1.1", 53);
	try_connect(&c, AF_INET, SOCK_DGRAM, "1.1.1.1", 53);
	try_connect(&c, AF_INET, SOCK_STREAM, "169.254.169.254", 80);
	try_connect(&c, AF_INET6, SOCK_STREAM, "2606:4700:4700::1111", 443);
	return finish(&c);
}

/* ---- cross-session helpers (run in two sessions by the test) ---- */

static int
p_shm_plant(int argc, char **argv)
{
	struct chk c = {0};
	key_t key = argc > 2 ? (key_t)strtol(argv[2], NULL, 0) : 0x6b696c6e;
	int id = shmget(key, 4096, IPC_CREAT | 0666);
	char *p = id >= 0 ? shmat(id, NULL, 0) : (char *)-1;
	if (p == (char *)-1) {
		note(&c, V_FAIL, "shmget/shmat %#x: %s", (unsigned)key, en(errno));
		return finish(&c);
	}
	strcpy(p, "kiln-shm-secret");
	shmdt(p);
	note(&c, V_OK, "planted SysV shm key %#x", (unsigned)key);
	return finish(&c);
}

static int
p_shm_find(int argc, char **argv)
{
	struct chk c = {0};
	key_t key = argc > 2 ? (key_t)strtol(argv[2], NULL, 0) : 0x6b696c6e;
	long id = TRY(shmget(key, 0, 0));
	if (id >= 0)
		note(&c, V_ESCAPED, "found SysV shm key %#x (id %ld)", (unsigned)key, id);
	else
		note(&c, last_errno == ENOENT ? V_OK : V_FAIL, "shmget %#x: %s", (unsigned)key,
		     en(last_errno));
	return finish(&c);
}

static socklen_t
abstract_addr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	size_t n = strnlen(name, sizeof a->sun_path - 2);
	memcpy(a->sun_path + 1, name, n);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static int
p_abstract_serve(int argc, char **argv)
{
	struct chk c = {0};
	struct sockaddr_un a;
	socklen_t sl = abstract_addr(&a, argc > 2 ? argv[2] : "kiln-probe");
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sl) < 0 || listen(s, 8) < 0) {
		note(&c, V_FAIL, "bind/listen: %s", en(errno));
		return finish(&c);
	}
	note(&c, V_OK, "listening on @%s", a.sun_path + 1);
	finish(&c);
	/* Serve for a minute: the test connects from this session and from another. */
	for (int i = 0; i < 600; i++) {
		int k = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (k >= 0) {
			(void)!write(k, "kiln-abstract-secret\n", 21);
			close(k);
		}
		usleep(100000);
	}
	return 0;
}

static int
p_abstract_connect(int argc, char **argv)
{
	struct chk c = {0};
	struct sockaddr_un a;
	socklen_t sl = abstract_addr(&a, argc > 2 ? argv[2] : "kiln-probe");
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	long r = TRY(connect(s, (struct sockaddr *)&a, sl));
	if (r == 0)
		note(&c, V_ESCAPED, "connected to @%s", a.sun_path + 1);
	else
		note(&c, last_errno == ECONNREFUSED ? V_OK : V_FAIL, "connect @%s: %s",
		     a.sun_path + 1, en(last_errno));
	close(s);
	return finish(&c);
}

/* ---- table ---- */

static const struct probe {
	const char *name;
	int (*fn)(int argc, char **argv);
} probes[] = {
        {"io_uring_setup", p_io_uring_setup},
        {"io_uring_enter", p_io_uring_enter},
        {"io_uring_register", p_io_uring_register},
        {"mount", p_mount},
        {"umount2", p_umount2},
        {"pivot_root", p_pivot_root},
        {"new_mount_api", p_new_mount_api},
        {"ptrace", p_ptrace},
        {"kexec_load", p_kexec_load},
        {"bpf", p_bpf},
        {"perf_event_open", p_perf_event_open},
        {"keyctl", p_keyctl},
        {"add_key", p_add_key},
        {"request_key", p_request_key},
        {"modules", p_modules},
        {"syslog", p_syslog},
        {"reboot", p_reboot},
        {"userfaultfd", p_userfaultfd},
        {"pidfd_getfd", p_pidfd_getfd},
        {"unshare", p_unshare},
        {"clone_newuser", p_clone_newuser},
        {"clone3", p_clone3},
        {"setns", p_setns},
        {"chroot", p_chroot},
        {"socket_netlink", p_socket_netlink},
        {"socket_packet", p_socket_packet},
        {"socket_vsock", p_socket_vsock},
        {"socket_raw", p_socket_raw},
        {"tiocsti", p_tiocsti},
        {"foreign_abi", p_foreign_abi},
        {"caps", p_caps},
        {"cap_raise", p_cap_raise},
        {"setuid", p_setuid},
        {"mknod", p_mknod},
        {"proc_sys_hostname", p_proc_sys_hostname},
        {"proc_sys_core_pattern", p_proc_sys_core_pattern},
        {"sysrq_trigger", p_sysrq_trigger},
        {"proc1_environ", p_proc1_environ},
        {"proc1_mem", p_proc1_mem},
        {"etc_private", p_etc_private},
        {"kernel_memory", p_kernel_memory},
        {"kill_init", p_kill_init},
        {"pid1", p_pid1},
        {"proc_pids", p_proc_pids},
        {"uid_map", p_uid_map},
        {"hostname", p_hostname},
        {"rootfs_ro", p_rootfs_ro},
        {"dev", p_dev},
        {"no_sys", p_no_sys},
        {"cgroup_ns", p_cgroup_ns},
        {"fds", p_fds},
        {"net_ifaces", p_net_ifaces},
        {"connect", p_connect},
        {"shm_plant", p_shm_plant},
        {"shm_find", p_shm_find},
        {"abstract_serve", p_abstract_serve},
        {"abstract_connect", p_abstract_connect},
};

int
main(int argc, char **argv)
{
	pname = argc > 1 ? argv[1] : "(none)";
	for (size_t i = 0; argc > 1 && i < sizeof probes / sizeof probes[0]; i++)
		if (!strcmp(probes[i].name, argv[1]))
			return probes[i].fn(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "list")) {
		for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
			printf("%s\n", probes[i].name);
		return 0;
	}
	printf("%s: FAIL unknown probe (try `list`)\n", pname);
	return V_FAIL;
}
