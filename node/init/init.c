/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-sandbox-init: pid 1 of every sandbox. The node clone3()s it into fresh
 * user, mount, pid, net, ipc and uts namespaces and execs this static binary
 * with the control socket on fd 3. It waits for KI_CONFIG (sent once the node
 * has written the uid/gid maps), builds the sandbox's root (tmpfs root,
 * read-only binds of the base image, /workspace and /tmp tmpfs with size
 * caps, minimal /dev, its own /proc), pivot_roots into it, brings lo up,
 * creates the egress proxy's listening sockets (127.0.0.1:3128 and
 * /run/kiln/proxy.sock, served by the node: docs/egress-node.md), and
 * answers KI_READY with them. From then on it spawns tool processes on request
 * (clone3 CLONE_VM|CLONE_VFORK|CLONE_INTO_CGROUP: no page-table copy), reaps
 * every child and orphan (PR_SET_CHILD_SUBREAPER is implicit for pid 1), and
 * reports exits. It exits when the control socket closes, which takes the
 * whole pid namespace down with it.
 *
 * Tool processes are set up in the vfork child: new session, a cgroup
 * namespace rooted at their job cgroup, fds, cwd, rlimits, all capabilities
 * dropped (bounding set, ambient, securebits NOROOT locked), no_new_privs and
 * the node's seccomp filter, then execve. This file is libc-only and linked
 * statically so it runs inside any template root.
 */
#include "../clone3.h"
#include "initparse.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTL_FD      3
#define NEWROOT     "/tmp"
#define MAX_CHILD   4096
#define CHILD_STACK (64 * 1024)

/* Aligned: messages are read and built through struct ki_hdr / ki_rec. */
static uint8_t rbuf[KI_MAX_MSG] __attribute__((aligned(8)));
static uint8_t wbuf[KI_MAX_MSG] __attribute__((aligned(8)));

static struct sock_filter *seccomp_prog;
static unsigned short seccomp_len;
/* Added by each tool process; the sandbox filter above is inherited from init. */
static struct sock_filter *child_prog;
static unsigned short child_len;
static int sealed;

/* Spawned processes we report on, by pid. Orphans are reaped silently. */
static struct {
	pid_t pid;
	uint64_t id;
} kids[MAX_CHILD];
static int nkids;

static void
send_msg(uint32_t type, uint64_t id, int32_t a, int32_t b, int32_t c, uint64_t x, uint64_t y,
         const char *text)
{
	ki_buf m;
	ki_begin(&m, wbuf, sizeof wbuf, type, id);
	struct ki_hdr *h = ki_hdr(&m);
	h->a = a;
	h->b = b;
	h->c = c;
	h->x = x;
	h->y = y;
	if (text)
		ki_put(&m, KT_TEXT, text, (uint32_t)strnlen(text, 1024), "", 1);
	uint32_t n = ki_end(&m);
	while (send(CTL_FD, wbuf, n, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
}

/* Fatal setup error: tell the node what failed, then exit. */
__attribute__((format(printf, 2, 3), noreturn)) static void
die(int err, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (err && n > 0 && (size_t)n < sizeof text)
		snprintf(text + n, sizeof text - (size_t)n, ": %s", strerror(err));
	send_msg(KI_ERROR, 0, err, 0, 0, 0, 0, text);
	_exit(1);
}

static int
recv_msg(int *fds, int *nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * KI_MAX_FDS)];
	struct iovec iov = {rbuf, sizeof rbuf};
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = cbuf,
	                    .msg_controllen = sizeof cbuf};
	ssize_t n;
	do
		n = recvmsg(CTL_FD, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	*nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (*nfds < KI_MAX_FDS)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	if (n <= 0)
		return n == 0 ? 0 : -errno;
	if (!ki_msg_ok(rbuf, (size_t)n))
		return -EBADMSG;
	return (int)n;
}

/* ---- sandbox setup ---- */

static void
xmount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data) < 0)
		die(errno, "mount %s on %s (%s)", src ? src : "none", dst, type ? type : "bind");
}

static void
set_attr(const char *path, uint64_t set, unsigned flags)
{
	struct mount_attr attr = {.attr_set = set};
	if (syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr) < 0)
		die(errno, "mount_setattr %s", path);
}

static void
mkdir_p_file(const char *path, int dir)
{
	if (dir) {
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			die(errno, "mkdir %s", path);
		return;
	}
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		die(errno, "create %s", path);
	close(fd);
}

/* Read-only, nosuid, nodev recursive bind of a host path into the new root. */
static void
bind_ro(const char *src, const char *rel)
{
	char dst[4096];
	struct stat st;
	if (stat(src, &st) < 0)
		die(errno, "bind source %s", src);
	snprintf(dst, sizeof dst, NEWROOT "/%s", rel);
	mkdir_p_file(dst, S_ISDIR(st.st_mode));
	xmount(src, dst, NULL, MS_BIND | MS_REC, NULL);
	set_attr(dst, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, AT_RECURSIVE);
}

static void
put_file(const char *rel, const char *content, size_t len)
{
	char dst[4096];
	snprintf(dst, sizeof dst, NEWROOT "/%s", rel);
	int fd = open(dst, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		die(errno, "create %s", dst);
	while (len) {
		ssize_t n = write(fd, content, len);
		if (n < 0)
			die(errno, "write %s", dst);
		content += n;
		len -= (size_t)n;
	}
	close(fd);
}

static void
setup_dev(void)
{
	static const char *const links[][2] = {
	        {"/proc/self/fd", "fd"},       {"/proc/self/fd/0", "stdin"},
	        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	        {"pts/ptmx", "ptmx"},
	};
	xmount("tmpfs", NEWROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=65536");
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
		char p[256];
		snprintf(p, sizeof p, NEWROOT "/dev/%s", links[i][1]);
		if (symlink(links[i][0], p) < 0)
			die(errno, "symlink %s", p);
	}
	mkdir_p_file(NEWROOT "/dev/pts", 1);
	xmount("devpts", NEWROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
	       "newinstance,ptmxmode=0666,mode=620");
	mkdir_p_file(NEWROOT "/dev/shm", 1);
	xmount("tmpfs", NEWROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
	       "mode=1777,size=67108864");
}

static void
bind_device(const char *name)
{
	char src[256], dst[256];
	if (strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, "."))
		die(EINVAL, "device name %s", name);
	snprintf(src, sizeof src, "/dev/%s", name);
	snprintf(dst, sizeof dst, NEWROOT "/dev/%s", name);
	mkdir_p_file(dst, 0);
	xmount(src, dst, NULL, MS_BIND, NULL);
	set_attr(dst, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, 0);
}

static void
setup_proc(void)
{
	mkdir_p_file(NEWROOT "/proc", 1);
	xmount("proc", NEWROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	/* Sysctls and sysrq stay read-only even for processes that regain a cap. */
	static const char *const ro[] = {NEWROOT "/proc/sys", NEWROOT "/proc/sysrq-trigger",
	                                 NEWROOT "/proc/irq", NEWROOT "/proc/bus"};
	for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) {
		if (access(ro[i], F_OK) < 0)
			continue;
		xmount(ro[i], ro[i], NULL, MS_BIND | MS_REC, NULL);
		set_attr(ro[i], MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
		         AT_RECURSIVE);
	}
}

static void
lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die(errno, "socket for lo");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		die(errno, "SIOCGIFFLAGS lo");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		die(errno, "SIOCSIFFLAGS lo");
	close(s);
}

/* ---- the egress proxy's listeners ---- */

/* Created here, in the sandbox's own network namespace and root, and handed
 * to the node with KI_READY (the node accepts on them and speaks the proxy
 * protocol itself): no helper process runs in the sandbox. */
static int proxy_fd[2] = {-1, -1}; /* KI_PROXY_TCP, KI_PROXY_UNIX */
static char proxy_why[256];

/* Bind the unix listener at KI_PROXY_PATH; 0 or -errno. */
static int
proxy_bind(int s)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strcpy(a.sun_path, KI_PROXY_PATH);
	mkdir("/run", 0755);
	mkdir(KI_PROXY_DIR, 0755);
	return bind(s, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0;
}

/* After pivot_root, while the root is still writable. Best effort: a template
 * whose /run cannot hold the socket still starts, with TCP only (the reason
 * goes to the node in KI_READY). */
static void
proxy_unix(void)
{
	const char *step = "bind " KI_PROXY_PATH;
	int covered = 0;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		step = "socket";
		goto fail;
	}
	int r = proxy_bind(s);
	if (r == -EROFS || r == -EADDRINUSE) {
		/* The template brings its own /run (a read-only bind, perhaps with a
		 * kiln directory in it): cover it with an empty one. */
		if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		          "mode=0755,size=65536") < 0) {
			step = "mount tmpfs on /run";
			goto fail;
		}
		covered = 1;
		r = proxy_bind(s);
	}
	if (r < 0) {
		errno = -r;
		goto fail;
	}
	step = "chmod " KI_PROXY_PATH;
	if (chmod(KI_PROXY_PATH, 0666) < 0)
		goto fail;
	step = "listen";
	if (listen(s, 128) < 0)
		goto fail;
	proxy_fd[1] = s;
	if (covered) /* read-only like the rest of the root */
		set_attr("/run", MOUNT_ATTR_RDONLY, 0);
	return;
fail:
	snprintf(proxy_why, sizeof proxy_why, "egress proxy unix socket: %s: %s", step,
	         strerror(errno));
	if (s >= 0)
		close(s);
}

/* After lo is up. The sandbox's netns is fresh, so this cannot collide. */
static void
proxy_tcp(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(KI_PROXY_PORT)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die(errno, "egress proxy socket");
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
		die(errno, "egress proxy bind 127.0.0.1:%d", KI_PROXY_PORT);
	if (listen(s, 128) < 0)
		die(errno, "egress proxy listen");
	proxy_fd[0] = s;
}

/* KI_READY, with the listeners as SCM_RIGHTS; init closes its copies. */
static void
send_ready(void)
{
	ki_buf m;
	union {
		char buf[CMSG_SPACE(sizeof(int) * 2)];
		struct cmsghdr align;
	} cm;
	int fds[2], nfds = 0, bits = 0;
	for (int i = 0; i < 2; i++)
		if (proxy_fd[i] >= 0) {
			fds[nfds++] = proxy_fd[i];
			bits |= i == 0 ? KI_PROXY_TCP : KI_PROXY_UNIX;
		}
	ki_begin(&m, wbuf, sizeof wbuf, KI_READY, 0);
	ki_hdr(&m)->a = getpid();
	ki_hdr(&m)->b = bits;
	if (proxy_why[0])
		ki_put_str(&m, KT_TEXT, proxy_why);
	struct iovec iov = {wbuf, ki_end(&m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		mh.msg_control = cm.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	while (sendmsg(CTL_FD, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
	for (int i = 0; i < 2; i++)
		if (proxy_fd[i] >= 0) {
			close(proxy_fd[i]);
			proxy_fd[i] = -1;
		}
}

/* One record of the mount plan, already validated (initparse.c). */
static void
apply_record(const struct ki_cfg_rec *c)
{
	switch (c->tag) {
	case KT_HOSTNAME:
		if (sethostname(c->str, strlen(c->str)) < 0)
			die(errno, "sethostname");
		break;
	case KT_DIR: {
		char p[4096];
		snprintf(p, sizeof p, NEWROOT "/%s", c->str);
		mkdir_p_file(p, 1);
		break;
	}
	case KT_BIND_RO:
		bind_ro(c->str, c->str2);
		break;
	case KT_SYMLINK: {
		char p[4096];
		snprintf(p, sizeof p, NEWROOT "/%s", c->str2);
		if (symlink(c->str, p) < 0 && errno != EEXIST)
			die(errno, "symlink %s", p);
		break;
	}
	case KT_FILE:
		put_file(c->str, c->str2, c->len2);
		break;
	case KT_DEVICE:
		bind_device(c->str);
		break;
	case KT_SECCOMP:
	case KT_SECCOMP_CHILD: {
		struct sock_filter *f = malloc(c->nfilter * sizeof(struct sock_filter));
		if (!f)
			die(ENOMEM, "seccomp filter");
		memcpy(f, c->filter, c->nfilter * sizeof(struct sock_filter));
		if (c->tag == KT_SECCOMP) {
			seccomp_prog = f;
			seccomp_len = (unsigned short)c->nfilter;
		} else {
			child_prog = f;
			child_len = (unsigned short)c->nfilter;
		}
		break;
	}
	}
}

static void
setup(uint32_t len)
{
	const struct ki_hdr *h = (const struct ki_hdr *)rbuf;
	char opts[128];

	if (h->type != KI_CONFIG)
		die(EPROTO, "expected config, got message type %u", h->type);
	xmount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	xmount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1048576");
	mkdir_p_file(NEWROOT "/workspace", 1);
	mkdir_p_file(NEWROOT "/tmp", 1);
	mkdir_p_file(NEWROOT "/dev", 1);
	setup_dev();
	uint32_t off = sizeof(struct ki_hdr);
	struct ki_cfg_rec c;
	const char *why;
	int k;
	while ((k = ki_config_next(rbuf, len, &off, &c, &why)) > 0)
		apply_record(&c);
	if (k < 0 && c.tag)
		die(EINVAL, "%s (record type %u)", why, c.tag);
	if (k < 0)
		die(EINVAL, "%s", why);
	if (h->a > 0)
		snprintf(opts, sizeof opts, "mode=0755,size=%llu,nr_inodes=%d",
		         (unsigned long long)h->x, h->a);
	else
		snprintf(opts, sizeof opts, "mode=0755,size=%llu", (unsigned long long)h->x);
	xmount("tmpfs", NEWROOT "/workspace", "tmpfs", MS_NOSUID | MS_NODEV, opts);
	snprintf(opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long)h->y);
	xmount("tmpfs", NEWROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts);
	setup_proc();

	if (chdir(NEWROOT) < 0)
		die(errno, "chdir new root");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		die(errno, "pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		die(errno, "detach old root");
	if (chdir("/") < 0)
		die(errno, "chdir /");
	proxy_unix();
	/* The root itself becomes read-only; /workspace, /tmp, /dev/shm stay writable. */
	set_attr("/", MOUNT_ATTR_RDONLY, 0);
	lo_up();
	proxy_tcp();
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* ---- spawning ---- */

static struct ki_spawn sp;
static char exe_buf[4096];

static int
resolve_exe(const char *name, char **envp)
{
	if (strchr(name, '/')) {
		sp.path = name;
		return 0;
	}
	const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (int i = 0; envp[i]; i++)
		if (!strncmp(envp[i], "PATH=", 5))
			path = envp[i] + 5;
	int err = ENOENT;
	while (*path) {
		const char *e = strchrnul(path, ':');
		int n = snprintf(exe_buf, sizeof exe_buf, "%.*s/%s", (int)(e - path),
		                 e == path ? "." : path, name);
		if (n > 0 && (size_t)n < sizeof exe_buf) {
			struct stat st;
			if (stat(exe_buf, &st) == 0 && S_ISREG(st.st_mode)) {
				if (access(exe_buf, X_OK) == 0) {
					sp.path = exe_buf;
					return 0;
				}
				err = EACCES;
			}
		}
		path = *e ? e + 1 : e;
	}
	return -err;
}

#define CHILD_FAIL(st, e)           \
	do {                        \
		sp.stage = (st);    \
		sp.err = (int)-(e); \
		return 127;         \
	} while (0)

/* Highest capability this kernel knows (read once at start): dropping
 * beyond it only costs failing prctl calls in every spawn. */
static int cap_last = 63;

static int
child_caps(void)
{
	long r;
	r = kl_sys5(SYS_prctl, PR_SET_SECUREBITS,
	            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
	                    SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
	                    SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
	            0, 0, 0);
	if (r < 0)
		return (int)r;
	for (int c = 0; c <= cap_last; c++) {
		r = kl_sys5(SYS_prctl, PR_CAPBSET_DROP, c, 0, 0, 0);
		if (r < 0 && r != -EINVAL)
			return (int)r;
	}
	kl_sys5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	r = kl_sys2(SYS_capset, &hdr, data);
	if (r < 0)
		return (int)r;
	r = kl_sys5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	return (int)r;
}

static int
child_fds(void)
{
	long r;
	int tmp[KI_MAX_FDS];
	int have_stdin = 0, above = 3;
	/* Move every passed fd above every target, then place. Just above:
	 * F_DUPFD fails with EINVAL at or past RLIMIT_NOFILE, which init
	 * inherits from the node (a node limited to 256 fds could otherwise
	 * start no tool at all). */
	for (int i = 0; i < sp.nfds; i++)
		if (sp.map[i] >= above)
			above = sp.map[i] + 1;
	for (int i = 0; i < sp.nfds; i++) {
		if (sp.map[i] < 0)
			continue;
		r = kl_sys3(SYS_fcntl, sp.fds[i], F_DUPFD, above);
		if (r < 0)
			return (int)r;
		tmp[i] = (int)r;
	}
	for (int i = 0; i < sp.nfds; i++) {
		if (sp.map[i] < 0)
			continue;
		r = kl_sys3(SYS_dup3, tmp[i], sp.map[i], 0);
		if (r < 0)
			return (int)r;
		if (sp.map[i] == 0)
			have_stdin = 1;
	}
	if (!have_stdin) {
		r = kl_sys4(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY, 0);
		if (r < 0)
			return (int)r;
		if (r != 0) {
			kl_sys3(SYS_dup3, r, 0, 0);
			kl_sys1(SYS_close, r);
		}
	}
	/* Close everything that is not a placed target. */
	int lo = 3;
	for (int fd = 3; fd < 1000; fd++) {
		int keep = 0;
		for (int i = 0; i < sp.nfds; i++)
			if (sp.map[i] == fd)
				keep = 1;
		if (keep) {
			if (fd > lo)
				kl_sys3(SYS_close_range, lo, fd - 1, 0);
			lo = fd + 1;
		}
	}
	kl_sys3(SYS_close_range, lo, ~0U, 0);
	return 0;
}

static int
spawn_child(void *unused)
{
	long r;
	sigset_t none;
	sigemptyset(&none);
	kl_sys4(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(uint64_t));
	r = kl_sys0(SYS_setsid);
	if (r < 0)
		CHILD_FAIL(KI_STAGE_SETUP, r);
	if (sp.flags & KI_SPAWN_CGROUPNS) {
		r = kl_sys1(SYS_unshare, CLONE_NEWCGROUP);
		if (r < 0)
			CHILD_FAIL(KI_STAGE_SETUP, r);
	}
	if ((r = child_fds()) < 0)
		CHILD_FAIL(KI_STAGE_SETUP, r);
	if ((r = kl_sys1(SYS_chdir, sp.cwd)) < 0)
		CHILD_FAIL(KI_STAGE_SETUP, r);
	kl_sys1(SYS_umask, sp.umask);
	for (int i = 0; i < sp.nrl; i++) {
		struct rlimit64 {
			uint64_t cur, max;
		} lim = {sp.rl[i].cur, sp.rl[i].max};
		if ((r = kl_sys4(SYS_prlimit64, 0, sp.rl[i].resource, &lim, NULL)) < 0)
			CHILD_FAIL(KI_STAGE_SETUP, r);
	}
	if ((r = child_caps()) < 0)
		CHILD_FAIL(KI_STAGE_SETUP, r);
	if (child_prog) {
		struct sock_fprog prog = {child_len, child_prog};
		r = kl_sys3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
		if (r < 0)
			CHILD_FAIL(KI_STAGE_SETUP, r);
	}
	r = kl_sys3(SYS_execve, sp.path, sp.argv, sp.envp);
	CHILD_FAIL(KI_STAGE_EXEC, r);
}

static void
close_spawn_fds(void)
{
	for (int i = 0; i < sp.nfds; i++)
		close(sp.fds[i]);
	sp.nfds = 0;
}

static void
do_spawn(uint32_t len, const int *fds, int nfds)
{
	static char *stack;
	uint64_t id = ((const struct ki_hdr *)rbuf)->id;
	/* Seal init with the sandbox filter before it runs tenant code: every tool
	 * process inherits it, so none compiles it again. Init needs nothing the
	 * filter denies after the claim (the workspace resize comes before). */
	if (!sealed && seccomp_prog) {
		struct sock_fprog prog = {seccomp_len, seccomp_prog};
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
			die(errno, "installing the sandbox's seccomp filter");
		sealed = 1;
	}
	int r = ki_parse_spawn(rbuf, len, fds, nfds, &sp);
	if (r < 0) {
		close_spawn_fds();
		send_msg(KI_SPAWN_FAILED, id, -r, KI_STAGE_SETUP, 0, 0, 0,
		         "malformed spawn request");
		return;
	}
	if ((r = resolve_exe(sp.argv[0], sp.envp)) < 0) {
		close_spawn_fds();
		send_msg(KI_SPAWN_FAILED, id, -r, KI_STAGE_RESOLVE, 0, 0, 0, sp.argv[0]);
		return;
	}
	if (nkids >= MAX_CHILD) {
		close_spawn_fds();
		send_msg(KI_SPAWN_FAILED, id, EAGAIN, KI_STAGE_CLONE, 0, 0, 0,
		         "too many processes");
		return;
	}
	if (!stack && !(stack = malloc(CHILD_STACK)))
		die(ENOMEM, "child stack");
	struct clone_args ca;
	memset(&ca, 0, sizeof ca);
	ca.flags = CLONE_VM | CLONE_VFORK | (sp.cgfd >= 0 ? CLONE_INTO_CGROUP : 0);
	ca.exit_signal = SIGCHLD;
	ca.stack = (uint64_t)(uintptr_t)stack;
	ca.stack_size = CHILD_STACK;
	ca.cgroup = (uint64_t)(sp.cgfd >= 0 ? sp.cgfd : 0);
	long pid = kl_clone3(&ca, sizeof ca, spawn_child, NULL);
	close_spawn_fds();
	if (pid < 0) {
		send_msg(KI_SPAWN_FAILED, id, (int)-pid, KI_STAGE_CLONE, 0, 0, 0, "clone3");
		return;
	}
	if (sp.err) { /* the child failed before execve and exited 127 */
		waitpid((pid_t)pid, NULL, 0);
		send_msg(KI_SPAWN_FAILED, id, sp.err, sp.stage, 0, 0, 0, sp.path);
		return;
	}
	kids[nkids].pid = (pid_t)pid;
	kids[nkids].id = id;
	nkids++;
	send_msg(KI_SPAWNED, id, (int32_t)pid, 0, 0, 0, 0, NULL);
}

static void
reap(void)
{
	for (;;) {
		int st;
		struct rusage ru;
		pid_t p = wait4(-1, &st, WNOHANG | __WALL, &ru);
		if (p <= 0)
			return;
		for (int i = 0; i < nkids; i++) {
			if (kids[i].pid != p)
				continue;
			uint64_t ut = (uint64_t)ru.ru_utime.tv_sec * 1000000 +
			              (uint64_t)ru.ru_utime.tv_usec;
			uint64_t stm = (uint64_t)ru.ru_stime.tv_sec * 1000000 +
			               (uint64_t)ru.ru_stime.tv_usec;
			send_msg(KI_EXITED, kids[i].id, p, st, (int32_t)ru.ru_maxrss, ut, stm,
			         NULL);
			kids[i] = kids[--nkids];
			break;
		}
	}
}

static void
do_resize(uint64_t id, uint64_t bytes)
{
	char opts[64];
	snprintf(opts, sizeof opts, "size=%llu", (unsigned long long)bytes);
	if (mount(NULL, "/workspace", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) < 0)
		send_msg(KI_FAIL, id, errno, 0, 0, 0, 0, "remount /workspace");
	else
		send_msg(KI_OK, id, 0, 0, 0, 0, 0, NULL);
}

int
main(void)
{
	int fds[KI_MAX_FDS], nfds;
	sigset_t mask;

	syscall(SYS_close_range, CTL_FD + 1, ~0U, 0);
	/* Ignored signals survive exec: the node ignores SIGPIPE, and tools must
	 * not inherit that (`yes | head` would print "Broken pipe"). */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char b[16] = "";
		if (read(fd, b, sizeof b - 1) > 0 && atoi(b) > 0 && atoi(b) < 64)
			cap_last = atoi(b);
		close(fd);
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_SETMASK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die(errno, "signalfd");

	int n = recv_msg(fds, &nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (n <= 0)
		_exit(n == 0 ? 0 : 1);
	setup((uint32_t)n);
	send_ready();

	struct pollfd pf[2] = {{CTL_FD, POLLIN, 0}, {sfd, POLLIN, 0}};
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die(errno, "poll");
		}
		if (pf[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) > 0)
				;
			reap();
		}
		if (!pf[0].revents)
			continue;
		n = recv_msg(fds, &nfds);
		if (n == 0 || (n < 0 && n != -EBADMSG))
			_exit(0); /* the node is gone: take the sandbox down */
		const struct ki_hdr *h = (const struct ki_hdr *)rbuf;
		if (n < 0) {
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			continue;
		}
		switch (h->type) {
		case KI_SPAWN:
			do_spawn((uint32_t)n, fds, nfds);
			break;
		case KI_RESIZE:
			do_resize(h->id, h->x);
			break;
		case KI_PING:
			send_msg(KI_PONG, h->id, 0, 0, 0, 0, 0, NULL);
			break;
		default:
			break;
		}
		if (h->type != KI_SPAWN)
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
	}
}
