/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bash tool: one persistent `bash --noprofile --norc` per session, in its
 * own cgroup leaf (shell-<n>), with stdout and stderr on one pipe. Commands
 * do not go through the shell's stdin (which, like every command's, is
 * /dev/null): the node writes the command into a memfd the shell holds as fd
 * 202 and writes a newline to a trigger pipe (fd 200). The driver loop reads
 * the memfd through /proc/self/fd/202 (a seekable file, so bash reads it in
 * one go instead of a byte at a time) and `eval`s it in the shell itself, so
 * cwd, environment and background jobs persist; it then prints `$?` on a
 * status pipe (fd 201). The status arriving ends the call; output already
 * in the pipe is drained first (the pending read is cancelled, then the pipe
 * is read without waiting until it is empty). A timeout or restart kills the
 * leaf: the shell and everything it started. Output printed between calls
 * (background jobs) is carried into the next call's output.
 */
#include "node_impl.h"

#include "kl_clock.h"
#include "kl_log.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#define BASH_CMD_MAX (1u << 20)

static const char driver[] = "while builtin read -r __kiln_t <&200; do\n"
                             "  IFS= builtin read -r -d '' __kiln_cmd </proc/self/fd/202\n"
                             "  builtin eval \"$__kiln_cmd\" </dev/null 200<&- 201>&- 202<&-\n"
                             "  builtin printf '%d\\n' \"$?\" >&201\n"
                             "done\n";

static void shell_read(shell *sh);
static void status_read(shell *sh);
static void bash_maybe_finish(shell *sh);

static void
shell_release(node_ref *r)
{
	shell *sh = kl_container_of(r, shell, ref);
	kl_tail_fini(&sh->tail);
	free(sh->buf);
	free(sh);
}

/* Detach and kill the session's shell. Its in-flight reads and writes are
 * cancelled; their completions find sh->s == NULL and do nothing, and the
 * last one frees it. */
void
shell_fini(session *s)
{
	shell *sh = s->sh;
	node *n = s->n;
	if (!sh)
		return;
	s->sh = NULL;
	sh->s = NULL;
	loop_cancel(&n->loop, &sh->out_op);
	loop_cancel(&n->loop, &sh->st_op);
	loop_cancel(&n->loop, &sh->cmd_op);
	loop_cancel(&n->loop, &sh->trig_op);
	if (sh->leaf_fd >= 0) {
		cg_kill(sh->leaf_fd);
		if (s->sb && s->sb->sessfd >= 0)
			graveyard_add(n, s->sb->sessfd, sh->leaf);
	}
	kl_close(&sh->leaf_fd);
	kl_close(&sh->out_r);
	kl_close(&sh->status_r);
	kl_close(&sh->trig_w);
	kl_close(&sh->memfd);
	node_ref_put(&sh->ref);
}

void
bash_kill_shell(session *s)
{
	if (s->sh && s->sh->leaf_fd >= 0)
		cg_kill(s->sh->leaf_fd);
}

static int
shell_spawn(session *s)
{
	sandbox *sb = s->sb;
	int po[2] = {-1, -1}, ps[2] = {-1, -1}, pt[2] = {-1, -1};
	static uint32_t seq;
	shell *sh = kl_xcalloc(1, sizeof *sh);
	sh->ref.refs = 1;
	sh->ref.release = shell_release;
	sh->s = s;
	sh->out_r = sh->status_r = sh->trig_w = sh->memfd = -1;
	sh->pending_status = -1;
	size_t cap = s->lim.output_bytes && s->lim.output_bytes < BASH_OUTPUT_CAP
	                     ? s->lim.output_bytes
	                     : BASH_OUTPUT_CAP;
	kl_tail_init(&sh->tail, cap);
	sh->buf = kl_xmalloc(CHUNK);
	s->sh = sh;
	snprintf(sh->leaf, sizeof sh->leaf, "shell-%u", ++seq);
	int r = cg_mkdir(sb->sessfd, sh->leaf, sb->uid, sb->gid, 0, &sh->leaf_fd);
	if (r < 0)
		return r;
	sh->memfd = memfd_create("kiln-cmd", MFD_CLOEXEC);
	if (sh->memfd < 0 || pipe2(po, O_CLOEXEC) < 0 || pipe2(ps, O_CLOEXEC) < 0 ||
	    pipe2(pt, O_CLOEXEC) < 0) {
		r = -errno;
		kl_close(&po[0]), kl_close(&po[1]), kl_close(&ps[0]), kl_close(&ps[1]);
		kl_close(&pt[0]), kl_close(&pt[1]);
		return r;
	}
	int fds[6] = {fcntl(sh->leaf_fd, F_DUPFD_CLOEXEC, 3),
	              po[1],
	              fcntl(po[1], F_DUPFD_CLOEXEC, 3),
	              pt[0],
	              ps[1],
	              fcntl(sh->memfd, F_DUPFD_CLOEXEC, 3)};
	int32_t map[6] = {-1, 1, 2, 200, 201, 202};
	static const char *const argv[] = {"/bin/bash", "--noprofile", "--norc", "-c",
	                                   driver,      "kiln-shell",  NULL};
	sh->out_r = po[0];
	sh->status_r = ps[0];
	sh->trig_w = pt[1];
	r = call_spawn(NULL, s, argv, NULL, fds, map, 6, &sh->spawn_id);
	if (r < 0)
		return r;
	sh->state = SH_STARTING;
	shell_read(sh);
	status_read(sh);
	return 0;
}

/* ---- reading output and status ---- */

static shell *
op_shell(node_op *op)
{
	return kl_container_of(op->owner, shell, ref);
}

static void
drain_nowait(shell *sh)
{
	for (;;) {
		struct iovec iov = {sh->buf, CHUNK};
		ssize_t k = preadv2(sh->out_r, &iov, 1, -1, RWF_NOWAIT);
		if (k < 0 && errno == EOPNOTSUPP) {
			/* Pipes take RWF_NOWAIT only on newer kernels (not
			 * Debian 12's 6.1). No read of ours is in flight now,
			 * so reading what FIONREAD counts cannot block. */
			int avail = 0;
			if (ioctl(sh->out_r, FIONREAD, &avail) < 0 || avail <= 0)
				return;
			k = read(sh->out_r, sh->buf, KL_MIN((size_t)avail, (size_t)CHUNK));
		}
		if (k <= 0) {
			if (k == 0)
				sh->out_eof = true;
			return;
		}
		kl_tail_write(&sh->tail, sh->buf, (size_t)k);
	}
}

static bool
bash_call_running(shell *sh)
{
	session *s = sh->s;
	return s && s->cur && s->cur->kind == CK_BASH && !s->cur->done;
}

static void
out_done(node_op *op, int res, uint32_t flags)
{
	shell *sh = op_shell(op);
	if (!sh->s)
		return; /* detached */
	if (res > 0)
		kl_tail_write(&sh->tail, sh->buf, (size_t)res);
	else if (res != -ECANCELED && res != -EINTR)
		sh->out_eof = true;
	if (sh->pending_status >= 0 && bash_call_running(sh) && !sh->out_eof)
		drain_nowait(sh); /* the status came: the command's output is in the pipe */
	if (sh->pending_status >= 0 || sh->out_eof) {
		bash_maybe_finish(sh);
		return;
	}
	shell_read(sh);
}

static void
shell_read(shell *sh)
{
	node *n = sh->s->n;
	struct io_uring_sqe *sqe = loop_sqe(&n->loop);
	io_uring_prep_read(sqe, sh->out_r, sh->buf, CHUNK, (uint64_t)-1);
	loop_bind(&n->loop, sqe, &sh->out_op, out_done, &sh->ref);
}

static void
st_done(node_op *op, int res, uint32_t flags)
{
	shell *sh = op_shell(op);
	if (!sh->s)
		return;
	if (res <= 0) {
		sh->st_eof = true;
		bash_maybe_finish(sh);
		return;
	}
	sh->stlen += (size_t)res;
	char *nl = memchr(sh->st, '\n', sh->stlen);
	if (nl) {
		*nl = 0;
		int status = atoi(sh->st);
		size_t rest = sh->stlen - (size_t)(nl + 1 - sh->st);
		memmove(sh->st, nl + 1, rest);
		sh->stlen = rest;
		if (bash_call_running(sh)) {
			sh->pending_status = status;
			/* Let the pending output read complete (or cancel it) first. */
			if (sh->out_op.busy)
				loop_cancel(&sh->s->n->loop, &sh->out_op);
			else
				bash_maybe_finish(sh);
		}
	} else if (sh->stlen >= sizeof sh->st - 1) {
		sh->stlen = 0; /* garbage written by the sandbox: drop it */
	}
	if (sh->s)
		status_read(sh);
}

static void
status_read(shell *sh)
{
	node *n = sh->s->n;
	struct io_uring_sqe *sqe = loop_sqe(&n->loop);
	io_uring_prep_read(sqe, sh->status_r, sh->st + sh->stlen,
	                   (unsigned)(sizeof sh->st - 1 - sh->stlen), (uint64_t)-1);
	loop_bind(&n->loop, sqe, &sh->st_op, st_done, &sh->ref);
}

/* ---- finishing a call ---- */

static void
bash_maybe_finish(shell *sh)
{
	session *s = sh->s;
	if (!s)
		return;
	bool died = sh->exited && sh->out_eof;
	if (bash_call_running(sh)) {
		call *c = s->cur;
		if (sh->pending_status >= 0 && !sh->out_op.busy) {
			c->exit_code = sh->pending_status;
			sh->pending_status = -1;
			call_finish(c);
		} else if (died) {
			c->shell_died = true;
			c->exit_code = WIFEXITED(sh->wstatus) ? WEXITSTATUS(sh->wstatus) : -1;
			call_finish(c);
		}
	} else {
		sh->pending_status = -1;
	}
	if (s->sh != sh)
		return;
	if (died) {
		shell_fini(s);
		return;
	}
	if (!sh->out_eof && !sh->out_op.busy)
		shell_read(sh);
}

void
bash_on_init_msg(session *s, const struct ki_hdr *h, const uint8_t *msg, uint32_t len)
{
	shell *sh = s->sh;
	if (h->type == KI_SPAWNED) {
		sh->state = SH_READY;
		sh->pid = h->a;
		return;
	}
	if (h->type == KI_SPAWN_FAILED) {
		KL_LOG(KL_ERROR, NODE_COMPONENT, "session=%s: starting bash failed at stage %d: %s",
		       s->id, h->b, strerror(h->a));
		/* The call reports why, not an exit status of a shell that never ran. */
		sh->spawn_err = h->a ? h->a : EIO;
		sh->spawn_stage = h->b;
		sh->exited = true;
		sh->wstatus = 127 << 8;
		bash_maybe_finish(sh);
		return;
	}
	if (h->type == KI_EXITED) {
		sh->exited = true;
		sh->wstatus = h->b;
		sh->state = SH_DEAD;
		/* Background jobs keep the pipe open: kill the leaf so EOF comes. */
		cg_kill(sh->leaf_fd);
		bash_maybe_finish(sh);
	}
}

/* ---- starting a call ---- */

static void
cmd_written(node_op *op, int res, uint32_t flags)
{
	shell *sh = op_shell(op);
	if (res < 0 && res != -ECANCELED && sh->s)
		KL_LOG(KL_WARN, NODE_COMPONENT, "session=%s: sending the command failed: %s",
		       sh->s->id, strerror(-res));
}

/* err: EINVAL for a bad input (INVALID_ARGUMENT), else what failed on the
 * node (INTERNAL: e.g. EMFILE when the node is out of descriptors). */
static void
bash_fail(call *c, int err, const char *msg)
{
	kl_strlcpy(c->spawn_text, msg, sizeof c->spawn_text);
	c->spawn_err = err;
	call_finish(c);
}

void
bash_start(call *c)
{
	session *s = c->s;
	Kiln__BashInput *in = c->tc->bash;
	if (in->restart) {
		shell_fini(s);
		c->bash_restart = true;
		call_finish(c);
		return;
	}
	size_t len = strlen(in->command);
	if (len == 0)
		return bash_fail(c, EINVAL, "no command provided (set command, or restart)");
	if (len > BASH_CMD_MAX)
		return bash_fail(c, EINVAL, "command is longer than 1 MiB");
	if (!s->sh) {
		int r = shell_spawn(s);
		if (r < 0) {
			char m[128];
			snprintf(m, sizeof m, "starting bash failed: %s", strerror(-r));
			shell_fini(s);
			return bash_fail(c, -r, m);
		}
	}
	shell *sh = s->sh;
	cg_stats st;
	memset(&st, 0, sizeof st);
	cg_read_stats(sh->leaf_fd, &st);
	sh->cpu_before = st.cpu_usec;
	sh->oom_before = st.oom_kills;
	c->shell_ref = sh;
	node_ref_get(&sh->ref);
	if (ftruncate(sh->memfd, 0) < 0)
		return bash_fail(c, errno, "cannot reset the command buffer");
	node *n = s->n;
	struct io_uring_sqe *sqe = loop_sqe(&n->loop);
	io_uring_prep_write(sqe, sh->memfd, in->command, (unsigned)len, 0);
	io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
	loop_bind(&n->loop, sqe, &sh->cmd_op, cmd_written, &sh->ref);
	static const char nl = '\n';
	sqe = loop_sqe(&n->loop);
	io_uring_prep_write(sqe, sh->trig_w, &nl, 1, (uint64_t)-1);
	loop_bind(&n->loop, sqe, &sh->trig_op, cmd_written, &sh->ref);
}

void
bash_result(call *c, Kiln__ToolResult *r, char *msg, size_t msglen)
{
	shell *sh = c->shell_ref;
	if (c->bash_restart) {
		snprintf(msg, msglen, "tool has been restarted.");
		r->exit_code = 0;
		return;
	}
	if (c->spawn_err || !sh) {
		r->code = c->spawn_err == EINVAL ? KILN__CODE__INVALID_ARGUMENT
		                                 : KILN__CODE__INTERNAL;
		snprintf(msg, msglen, "%s", c->spawn_text);
		return;
	}
	cg_stats st;
	memset(&st, 0, sizeof st);
	if (sh->leaf_fd >= 0)
		cg_read_stats(sh->leaf_fd, &st);
	r->cpu_usec = st.cpu_usec >= sh->cpu_before ? st.cpu_usec - sh->cpu_before : 0;
	r->peak_memory_bytes = st.mem_peak;
	/* The leaf lives as long as the shell: only this call's kills count. */
	r->oom_killed = st.oom_kills > sh->oom_before;
	/* The output, prefixed like the reference tool when its head was lost. */
	kl_tail *t = &sh->tail;
	bool trunc = kl_tail_truncated(t);
	static const char note[] = "[output truncated]\n";
	size_t pre = trunc ? sizeof note - 1 : 0;
	r->output.len = pre + t->len;
	r->output.data = kl_xmalloc(r->output.len + 1);
	memcpy(r->output.data, note, pre);
	kl_tail_copy(t, r->output.data + pre);
	r->output_total = t->total;
	r->truncated = trunc;
	kl_tail_reset(t);
	r->exit_code = c->exit_code;
	if (c->shell_died && !c->timed_out && !c->cancelled) {
		if (WIFSIGNALED(sh->wstatus))
			r->signal = WTERMSIG(sh->wstatus);
		snprintf(msg, msglen,
		         "the shell exited (status %d); the next call starts a new shell",
		         r->exit_code);
	}
	if (c->shell_died && sh->spawn_err) { /* it never ran */
		r->code = KILN__CODE__INTERNAL;
		r->exit_code = -1;
		snprintf(msg, msglen, "starting bash failed at stage %d: %s", sh->spawn_stage,
		         strerror(sh->spawn_err));
	}
	if (r->oom_killed)
		snprintf(msg, msglen,
		         "killed by the out-of-memory killer (memory limit %llu bytes)",
		         (unsigned long long)c->s->lim.memory_bytes);
}
