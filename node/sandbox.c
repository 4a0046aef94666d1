/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sandbox lifecycle on the node side. Creation clone3()s the init binary into
 * new user/mount/pid/net/ipc/uts namespaces, straight into the pool cgroup
 * (CLONE_INTO_CGROUP) with a pidfd, using CLONE_VM without CLONE_VFORK: the
 * child shares the node's memory only until its execveat (a few raw syscalls
 * on a private stack), so the loop never copies page tables and never waits
 * for the exec. The node then writes the uid/gid maps (sandbox root -> one
 * unprivileged host id per sandbox) and sends KI_CONFIG; init answers
 * KI_READY. The control socket and the pidfd stay armed on the ring for the
 * sandbox's whole life: init's messages and its exit are ordinary
 * completions. Destruction kills init (and with it the pid namespace), reaps
 * it through the pidfd and removes its cgroups.
 */
#include "node_impl.h"

#include "clone3.h"
#include "kl_clock.h"
#include "kl_log.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define SB_RBUF 2048

struct child_arg {
	int ctl, exe;
};

static const char *const init_argv[] = {"kiln-sandbox-init", NULL};
static const char *const init_envp[] = {NULL};

/* Runs in the clone child on its own stack, sharing the node's memory:
 * raw syscalls only, then exec. No sanitizer or stack-protector code may run
 * here (no runtime state is valid in this child). */
__attribute__((no_sanitize("address", "undefined"), optimize("no-stack-protector"))) static int
sandbox_child(void *p)
{
	const struct child_arg *a = p;
	long ctl = kl_sys3(SYS_fcntl, a->ctl, F_DUPFD, 100);
	long exe = kl_sys3(SYS_fcntl, a->exe, F_DUPFD, 100);
	if (ctl < 0 || exe < 0)
		return 120;
	if (kl_sys3(SYS_dup3, ctl, 3, 0) < 0 || kl_sys3(SYS_dup3, exe, 4, 0) < 0)
		return 121;
	kl_sys3(SYS_close_range, 5, ~0U, 0);
	/* Wait until the node has written our uid/gid maps: execve recomputes
	 * capabilities from the uid, and an unmapped uid would lose them all. */
	char go;
	if (kl_sys3(SYS_read, 3, &go, 1) != 1)
		return 123;
	/* The maps do not change our ids: we still carry the host's root ids,
	 * unmapped here. Become the namespace's root (the sandbox's host id) and
	 * drop the host's supplementary groups before exec. */
	if (kl_sys2(SYS_setgroups, 0, NULL) < 0 || kl_sys3(SYS_setresgid, 0, 0, 0) < 0 ||
	    kl_sys3(SYS_setresuid, 0, 0, 0) < 0)
		return 124;
	kl_sys5(SYS_execveat, 4, "", init_argv, init_envp, AT_EMPTY_PATH);
	return 122;
}

int
uid_alloc(node *n, uint32_t *slot)
{
	for (uint32_t k = 0; k < n->uid_count; k++) {
		uint32_t i = (n->uid_next + k) % n->uid_count;
		if (!n->uid_used[i]) {
			n->uid_used[i] = 1;
			n->uid_next = (i + 1) % n->uid_count;
			*slot = i;
			return 0;
		}
	}
	return -EUSERS;
}

void
uid_free(node *n, uint32_t slot)
{
	if (slot < n->uid_count)
		n->uid_used[slot] = 0;
}

static int
write_proc(node *n, pid_t pid, const char *file, const char *s)
{
	char path[64];
	snprintf(path, sizeof path, "%d/%s", (int)pid, file);
	return kl_write_file_at(n->proc_fd, path, s);
}

static int
write_maps(sandbox *sb)
{
	char m[64];
	int r;
	snprintf(m, sizeof m, "0 %u 1\n", (unsigned)sb->uid);
	if ((r = write_proc(sb->n, sb->pid, "uid_map", m)) < 0)
		return r;
	/* setgroups stays allowed so the child can drop the host's groups; tool
	 * processes have no CAP_SETGID to use it. */
	snprintf(m, sizeof m, "0 %u 1\n", (unsigned)sb->gid);
	return write_proc(sb->n, sb->pid, "gid_map", m);
}

/* ---- sending on the ring ---- */

typedef struct send_op {
	node_op op;
	struct msghdr mh;
	struct iovec iov;
	int nfds;
	int fds[KI_MAX_FDS];
	union {
		char buf[CMSG_SPACE(sizeof(int) * KI_MAX_FDS)];
		struct cmsghdr align;
	} cm;
	uint32_t len;
	uint8_t data[];
} send_op;

static void
send_done(node_op *op, int res, uint32_t flags)
{
	send_op *s = kl_container_of(op, send_op, op);
	sandbox *sb = kl_container_of(op->owner, sandbox, ref);
	if (res < 0 && sb->state != SB_DYING && sb->state != SB_DEAD)
		KL_LOG(KL_WARN, NODE_COMPONENT, "sandbox pid=%d control send failed: %s",
		       (int)sb->pid, strerror(-res));
	for (int i = 0; i < s->nfds; i++)
		close(s->fds[i]);
	free(s);
}

/* Queue one message to init. Takes ownership of fds (closed when the send
 * completes: the kernel resolves SCM_RIGHTS fds when the sendmsg executes,
 * which may be after this returns). */
int
sandbox_send(sandbox *sb, ki_buf *m, const int *fds, int nfds)
{
	if (m->overflow || nfds > KI_MAX_FDS) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return -E2BIG;
	}
	uint32_t len = ki_end(m);
	send_op *s = kl_xcalloc(1, sizeof *s + len);
	memcpy(s->data, m->p, len);
	s->len = len;
	s->iov.iov_base = s->data;
	s->iov.iov_len = len;
	s->mh.msg_iov = &s->iov;
	s->mh.msg_iovlen = 1;
	s->nfds = nfds;
	if (nfds > 0) {
		memcpy(s->fds, fds, sizeof(int) * (size_t)nfds);
		s->mh.msg_control = s->cm.buf;
		s->mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&s->mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	struct io_uring_sqe *sqe = loop_sqe(&sb->n->loop);
	io_uring_prep_sendmsg(sqe, sb->ctl, &s->mh, MSG_NOSIGNAL);
	loop_bind(&sb->n->loop, sqe, &s->op, send_done, &sb->ref);
	return 0;
}

uint64_t
sandbox_next_id(sandbox *sb)
{
	return ++sb->next_id;
}

/* ---- teardown ---- */

static void
sandbox_release(node_ref *r)
{
	sandbox *sb = kl_container_of(r, sandbox, ref);
	free(sb->rbuf);
	free(sb->stack);
	free(sb);
}

static void
sandbox_finalize(sandbox *sb)
{
	node *n = sb->n;
	if (sb->state == SB_DEAD || !sb->reaped || sb->ctl_op.busy || sb->pidfd_op.busy)
		return;
	sb->state = SB_DEAD;
	kl_close(&sb->ctl);
	kl_close(&sb->pidfd);
	kl_close(&sb->rootfd);
	kl_close(&sb->initfd);
	kl_close(&sb->sessfd);
	kl_close(&sb->proxy_fd[0]);
	kl_close(&sb->proxy_fd[1]);
	uid_free(n, sb->uid_slot);
	kl_list_del(&sb->all);
	kl_list_del(&sb->link);
	n->nsandboxes--;
	n->destroyed++;
	node_ref_put(&sb->ref);
	node_maybe_finish_stop(n);
}

void
sandbox_destroy(sandbox *sb)
{
	if (sb->state == SB_DYING || sb->state == SB_DEAD)
		return;
	tmpl *t = sb->t;
	if (sb->state == SB_IDLE) {
		kl_list_del(&sb->link);
		t->nidle--;
	} else if (sb->state == SB_CREATING) {
		t->ncreating--;
	} else if (sb->state == SB_CLAIMED) {
		t->nbusy--;
	}
	sb->state = SB_DYING;
	/* Killing init ends the pid namespace: the kernel kills every process in it. */
	if (sb->sessfd >= 0)
		cg_kill(sb->sessfd);
	if (!sb->reaped && sb->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
	if (sb->ctl_op.busy)
		loop_cancel(&sb->n->loop, &sb->ctl_op);
	sandbox_finalize(sb);
}

/* ---- completions ---- */

static void arm_ctl(sandbox *sb);

static void
on_ready(sandbox *sb)
{
	node *n = sb->n;
	double ms = (double)(kl_now_ns() - sb->t_start_ns) / 1e6;
	n->create_ms_sum += ms;
	n->create_n++;
	n->created++;
	free(sb->stack); /* init has exec'd: the clone stack is no longer in use */
	sb->stack = NULL;
	sb->t->ncreating--;
	sb->state = SB_IDLE;
	sb->t_idle_ns = kl_now_ns();
	pool_sandbox_ready(sb);
	/* A creation slot just freed: refill now rather than at the next tick, so
	 * the refill rate is bound by the CPUs, not by the tick. */
	pool_tick(sb->n);
}

static void
create_failed(sandbox *sb)
{
	tmpl *t = sb->t;
	sb->n->create_failures++;
	sandbox_destroy(sb);
	pool_sandbox_failed(t);
}

static void
on_ctl_msg(sandbox *sb, uint32_t len)
{
	const struct ki_hdr *h = (const struct ki_hdr *)sb->rbuf;
	if (!ki_msg_ok(sb->rbuf, len)) {
		KL_LOG(KL_WARN, NODE_COMPONENT, "sandbox pid=%d sent a malformed message",
		       (int)sb->pid);
		return;
	}
	if (h->type == KI_ERROR) {
		KL_LOG(KL_ERROR, NODE_COMPONENT, "sandbox init failed: %s",
		       ki_text(sb->rbuf, len, "(no detail)"));
		if (sb->state == SB_CREATING)
			create_failed(sb);
		return;
	}
	if (sb->state == SB_CREATING) {
		if (h->type == KI_READY) {
			on_ready(sb);
			return;
		}
		KL_LOG(KL_WARN, NODE_COMPONENT,
		       "sandbox pid=%d: unexpected message %u during setup", (int)sb->pid, h->type);
		create_failed(sb);
		return;
	}
	if (sb->s)
		session_on_init_msg(sb->s, h, sb->rbuf, len);
}

/* Descriptors that came with the message just received (SCM_RIGHTS). */
static int
ctl_fds(sandbox *sb, int *fds)
{
	int n = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&sb->ctl_mh); c; c = CMSG_NXTHDR(&sb->ctl_mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (n < KI_MAX_FDS)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* A KI_READY during setup carries the egress proxy's listeners (KI_PROXY_*
 * bits, in order): keep them for the session's proxy. Any other descriptor
 * is closed: nothing else from init carries one. */
static void
take_proxy_fds(sandbox *sb, uint32_t len, int *fds, int nfds)
{
	const struct ki_hdr *h = (const struct ki_hdr *)sb->rbuf;
	int k = 0;
	if (sb->state == SB_CREATING && ki_msg_ok(sb->rbuf, len) && h->type == KI_READY) {
		int want = !!(h->b & KI_PROXY_TCP) + !!(h->b & KI_PROXY_UNIX);
		if (want == nfds) {
			if (h->b & KI_PROXY_TCP)
				sb->proxy_fd[0] = fds[k++];
			if (h->b & KI_PROXY_UNIX)
				sb->proxy_fd[1] = fds[k++];
		}
		if (want != nfds || !(h->b & KI_PROXY_UNIX))
			KL_LOG(KL_WARN, NODE_COMPONENT, "sandbox pid=%d: egress proxy: %s",
			       (int)sb->pid,
			       want != nfds ? "listener count mismatch"
			                    : ki_text(sb->rbuf, len, "no unix socket"));
	}
	for (; k < nfds; k++)
		close(fds[k]);
}

static void
ctl_done(node_op *op, int res, uint32_t flags)
{
	sandbox *sb = kl_container_of(op, sandbox, ctl_op);
	if (res > 0) {
		int fds[KI_MAX_FDS];
		int nfds = ctl_fds(sb, fds);
		take_proxy_fds(sb, (uint32_t)res, fds, nfds);
	}
	if (res > 0 && sb->state != SB_DYING && sb->state != SB_DEAD) {
		on_ctl_msg(sb, (uint32_t)res);
		if (sb->state != SB_DYING && sb->state != SB_DEAD)
			arm_ctl(sb);
		return;
	}
	if (sb->state == SB_DYING) {
		sandbox_finalize(sb);
		return;
	}
	/* EOF or error: init is gone (the pidfd completion reaps it). */
	if (res < 0 && res != -ECANCELED)
		KL_LOG(KL_WARN, NODE_COMPONENT, "sandbox pid=%d control socket: %s", (int)sb->pid,
		       strerror(-res));
}

static void
arm_ctl(sandbox *sb)
{
	struct io_uring_sqe *sqe = loop_sqe(&sb->n->loop);
	/* RECVMSG: KI_READY brings descriptors (the egress proxy's listeners). */
	sb->ctl_iov.iov_base = sb->rbuf;
	sb->ctl_iov.iov_len = sb->rcap;
	sb->ctl_mh.msg_iov = &sb->ctl_iov;
	sb->ctl_mh.msg_iovlen = 1;
	sb->ctl_mh.msg_control = sb->ctl_cm.buf;
	sb->ctl_mh.msg_controllen = sizeof sb->ctl_cm.buf;
	sb->ctl_mh.msg_flags = 0;
	io_uring_prep_recvmsg(sqe, sb->ctl, &sb->ctl_mh, MSG_CMSG_CLOEXEC);
	loop_bind(&sb->n->loop, sqe, &sb->ctl_op, ctl_done, &sb->ref);
}

static void
pidfd_done(node_op *op, int res, uint32_t flags)
{
	sandbox *sb = kl_container_of(op, sandbox, pidfd_op);
	siginfo_t si;
	memset(&si, 0, sizeof si);
	if (waitid((idtype_t)P_PIDFD, (id_t)sb->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid) {
		sb->reaped = true;
		sb->exit_status = si.si_status;
	} else if (res >= 0) {
		/* Spurious wakeup: wait again. */
		struct io_uring_sqe *sqe = loop_sqe(&sb->n->loop);
		io_uring_prep_poll_add(sqe, sb->pidfd, POLLIN);
		loop_bind(&sb->n->loop, sqe, &sb->pidfd_op, pidfd_done, &sb->ref);
		return;
	}
	enum sb_state was = sb->state;
	if (was == SB_CREATING) {
		KL_LOG(KL_ERROR, NODE_COMPONENT,
		       "sandbox init pid=%d exited during setup (status %d)", (int)sb->pid,
		       si.si_status);
		create_failed(sb);
		return;
	}
	if (was == SB_IDLE || was == SB_CLAIMED) {
		KL_LOG(KL_WARN, NODE_COMPONENT, "sandbox init pid=%d died (status %d)",
		       (int)sb->pid, si.si_status);
		session *s = sb->s;
		sandbox_destroy(sb);
		if (s)
			session_sandbox_died(s);
		return;
	}
	sandbox_finalize(sb);
}

/* ---- creation ---- */

static int
build_config(sandbox *sb, ki_buf *m, uint8_t *mem, uint32_t cap)
{
	tmpl *t = sb->t;
	char host[64];
	ki_begin(m, mem, cap, KI_CONFIG, 0);
	if (t->config_len + m->len > cap)
		return -E2BIG;
	memcpy(mem + m->len, t->config, t->config_len);
	m->len += t->config_len;
	snprintf(host, sizeof host, "kiln-%u", sb->uid_slot);
	ki_put_str(m, KT_HOSTNAME, host);
	struct ki_hdr *h = ki_hdr(m);
	h->x = t->cfg.workspace_bytes;
	h->y = t->cfg.tmp_bytes;
	return m->overflow ? -E2BIG : 0;
}

static int
spawn_init(sandbox *sb, int child_ctl)
{
	node *n = sb->n;
	struct child_arg *a = (struct child_arg *)(sb->stack + CLONE_STACK - 64);
	a->ctl = child_ctl;
	a->exe = n->init_fd;
	struct clone_args ca;
	memset(&ca, 0, sizeof ca);
	ca.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
	           CLONE_NEWUTS | CLONE_VM | CLONE_PIDFD | CLONE_INTO_CGROUP;
	ca.pidfd = (uint64_t)(uintptr_t)&sb->pidfd;
	ca.exit_signal = SIGCHLD;
	ca.stack = (uint64_t)(uintptr_t)sb->stack;
	ca.stack_size = CLONE_STACK - 128; /* the child_arg lives above the usable stack */
	ca.cgroup = (uint64_t)n->cg.poolfd;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	long pid = kl_clone3(&ca, sizeof ca, sandbox_child, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		return (int)pid;
	sb->pid = (pid_t)pid;
	return 0;
}

int
sandbox_create(node *n, tmpl *t, sandbox **ret)
{
	int sv[2], r;
	uint32_t slot;
	if ((r = uid_alloc(n, &slot)) < 0)
		return r;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		uid_free(n, slot);
		return r;
	}
	sandbox *sb = kl_xcalloc(1, sizeof *sb);
	sb->ref.refs = 1;
	sb->ref.release = sandbox_release;
	sb->n = n;
	sb->t = t;
	sb->uid_slot = slot;
	sb->uid = n->uid_base + slot;
	sb->gid = n->uid_base + slot;
	sb->ctl = sv[0];
	sb->pidfd = sb->rootfd = sb->sessfd = sb->initfd = -1;
	sb->proxy_fd[0] = sb->proxy_fd[1] = -1;
	sb->rcap = SB_RBUF;
	sb->rbuf = kl_xmalloc(sb->rcap);
	sb->stack = kl_xmalloc(CLONE_STACK);
	kl_list_init(&sb->link);
	sb->t_start_ns = kl_now_ns();
	r = spawn_init(sb, sv[1]);
	close(sv[1]);
	if (r < 0) {
		KL_LOG(KL_ERROR, NODE_COMPONENT, "clone3 of sandbox init failed: %s", strerror(-r));
		close(sv[0]);
		uid_free(n, slot);
		free(sb->rbuf);
		free(sb->stack);
		free(sb);
		return r;
	}
	sb->state = SB_CREATING;
	t->ncreating++;
	kl_list_add_tail(&n->sandboxes, &sb->all);
	n->nsandboxes++;
	/* The pidfd watch goes first: whatever happens next, the exit is seen. */
	struct io_uring_sqe *sqe = loop_sqe(&n->loop);
	io_uring_prep_poll_add(sqe, sb->pidfd, POLLIN);
	loop_bind(&n->loop, sqe, &sb->pidfd_op, pidfd_done, &sb->ref);
	static const char go = 'g';
	if ((r = write_maps(sb)) < 0 ||
	    (send(sb->ctl, &go, 1, MSG_DONTWAIT) != 1 && (r = -errno))) {
		KL_LOG(KL_ERROR, NODE_COMPONENT, "sandbox pid=%d: writing id maps failed: %s",
		       (int)sb->pid, strerror(-r));
		sandbox_destroy(sb);
		return r;
	}
	static uint8_t cfgbuf[KI_MAX_MSG];
	ki_buf m;
	if ((r = build_config(sb, &m, cfgbuf, sizeof cfgbuf)) < 0 ||
	    (r = sandbox_send(sb, &m, NULL, 0)) < 0) {
		sandbox_destroy(sb);
		return r;
	}
	arm_ctl(sb);
	if (ret)
		*ret = sb;
	return 0;
}
