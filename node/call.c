/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tool calls: admission, ordering, the exec tool, and what every call shares
 * (timeouts, cancellation, results). An exec call gets its own cgroup leaf
 * (tenants/<t>/<session>/job-<n>), pipes for stdout/stderr (and stdin when
 * given), and is spawned by the sandbox's init straight into the leaf. The
 * pipes are read on the ring into bounded tail buffers, so the node's memory
 * stays bounded whatever a process prints. The call ends when the main
 * process exits (init's KI_EXITED): the leaf is killed at once, so a
 * background child holding the pipe open cannot hang it; the pipes then
 * reach EOF and the result is sent. A timeout or a cancel kills the leaf and
 * returns what was printed so far.
 */
#include "node_impl.h"

#include "kl_clock.h"
#include "kl_log.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define EXIT_GRACE_MS 2000 /* after the main process exits, longest wait for pipe EOF */

static const char *const base_env[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/workspace",
        "USER=root",
        "LOGNAME=root",
        "SHELL=/bin/bash",
        "TERM=dumb",
        "LANG=C.UTF-8",
        "TMPDIR=/tmp",
        "PAGER=cat",
        "GIT_PAGER=cat",
        NULL,
};

const char *const *
call_base_env(void)
{
	return base_env;
}

/* ---- graveyard: cgroups to remove once their last task has left ---- */

void
graveyard_add(node *n, int parentfd, const char *name)
{
	graveyard_ent *g = kl_xcalloc(1, sizeof *g);
	g->parentfd = fcntl(parentfd, F_DUPFD_CLOEXEC, 3);
	kl_strlcpy(g->name, name, sizeof g->name);
	g->since_ns = kl_now_ns();
	if (g->parentfd < 0) {
		free(g);
		return;
	}
	if (cg_rmdir(g->parentfd, g->name) == 0 || errno == ENOENT) {
		close(g->parentfd);
		free(g);
		return;
	}
	kl_list_add_tail(&n->graveyard, &g->link);
}

void
graveyard_sweep(node *n, bool force)
{
	kl_list *p, *tmp;
	kl_list_for_each_safe (p, tmp, &n->graveyard) {
		graveyard_ent *g = kl_list_entry(p, graveyard_ent, link);
		int r = force ? cg_remove_tree(g->parentfd, g->name, 2000)
		              : cg_remove_tree(g->parentfd, g->name, 0);
		if (r == 0 || r == -ENOENT || force) {
			if (r < 0 && r != -ENOENT)
				KL_LOG(KL_WARN, NODE_COMPONENT, "cgroup %s not removed: %s",
				       g->name, strerror(-r));
			kl_list_del(&g->link);
			close(g->parentfd);
			free(g);
		}
	}
}

/* ---- replies ---- */

void
call_reply_error(node *n, uint64_t job_id, node_reply_fn *fn, void *arg, int code, const char *fmt,
                 ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	Kiln__ToolResult r = KILN__TOOL_RESULT__INIT;
	r.job_id = job_id;
	r.code = code;
	r.message = msg;
	r.is_error = true;
	r.exit_code = -1;
	r.node_id = n->name;
	r.limits_enforced = n->limits_enforced;
	if (code == KILN__CODE__RESOURCE_EXHAUSTED)
		r.retry_after_ms = 500;
	Kiln__NodeReply rep = KILN__NODE_REPLY__INIT;
	rep.reply_case = KILN__NODE_REPLY__REPLY_RESULT;
	rep.result = &r;
	if (fn)
		fn(arg, &rep);
}

static void
call_release(node_ref *r)
{
	call *c = kl_container_of(r, call, ref);
	kl_tail_fini(&c->out);
	kl_tail_fini(&c->err);
	free(c->obuf);
	free(c->ebuf);
	free(c->data);
	fs_result_fini(&c->fres);
	if (c->shell_ref)
		node_ref_put(&c->shell_ref->ref);
	if (c->work)
		kiln__node_work__free_unpacked(c->work, NULL);
	free(c);
}

void
call_free(call *c)
{
	node_ref_put(&c->ref);
}

/* ---- admission ---- */

static uint32_t
pick_timeout(session *s, const Kiln__ToolCall *tc)
{
	uint32_t t = 0;
	if (tc->tool_case == KILN__TOOL_CALL__TOOL_BASH && tc->bash->timeout_ms)
		t = tc->bash->timeout_ms;
	if (!t)
		t = tc->timeout_ms;
	if (!t)
		t = s->lim.call_timeout_ms;
	if (!t)
		t = DEFAULT_TIMEOUT_MS;
	if (tc->deadline_unix_ms) {
		uint64_t now = kl_wall_ms();
		uint64_t left = tc->deadline_unix_ms > now ? tc->deadline_unix_ms - now : 0;
		if (left < t)
			t = (uint32_t)left;
	}
	return t;
}

void
call_submit(node *n, Kiln__NodeWork *w, node_reply_fn *fn, void *arg)
{
	Kiln__ToolCall *tc = w->call;
	uint64_t job = tc->job_id;
	session *s;
	int code = 0;
	const char *why = NULL;
	if (n->stopping) {
		code = KILN__CODE__UNAVAILABLE, why = "node is shutting down";
	} else if (!(s = session_find(n, tc->session_id)) || s->state == SS_CLOSING) {
		code = KILN__CODE__NOT_FOUND, why = "no such session on this node";
	} else if (tc->tool_case == KILN__TOOL_CALL__TOOL__NOT_SET) {
		code = KILN__CODE__INVALID_ARGUMENT, why = "the call names no tool";
	} else if (n->admitted >= n->cfg.max_calls) {
		code = KILN__CODE__RESOURCE_EXHAUSTED, why = "node is at its concurrent call limit";
	} else if (s->nqueued >= n->cfg.max_queue_per_session) {
		code = KILN__CODE__RESOURCE_EXHAUSTED,
		why = "too many calls queued for this session";
	} else if (tc->deadline_unix_ms && tc->deadline_unix_ms <= kl_wall_ms()) {
		code = KILN__CODE__DEADLINE_EXCEEDED,
		why = "deadline passed before the call started";
	}
	if (code) {
		call_reply_error(n, job, fn, arg, code, "%s", why);
		kiln__node_work__free_unpacked(w, NULL);
		return;
	}
	call *c = kl_xcalloc(1, sizeof *c);
	c->ref.refs = 1;
	c->ref.release = call_release;
	c->n = n;
	c->s = s;
	node_ref_get(&s->ref);
	c->work = w;
	c->tc = tc;
	c->fn = fn;
	c->arg = arg;
	c->t_submit_ns = kl_now_ns();
	c->out_r = c->err_r = c->in_w = c->leaf_fd = c->rfd = -1;
	c->w.dirfd = c->w.tmpfd = -1;
	switch (tc->tool_case) {
	case KILN__TOOL_CALL__TOOL_EXEC:
		c->kind = CK_EXEC;
		break;
	case KILN__TOOL_CALL__TOOL_BASH:
		c->kind = CK_BASH;
		break;
	case KILN__TOOL_CALL__TOOL_READ:
	case KILN__TOOL_CALL__TOOL_WRITE:
	case KILN__TOOL_CALL__TOOL_EDIT:
		c->kind = CK_FILE;
		break;
	default:
		c->kind = CK_FILE_WORKER;
		break;
	}
	kl_list_add_tail(&s->queue, &c->link);
	s->nqueued++;
	n->admitted++;
	session_kick(s);
}

void
call_cancel(node *n, uint64_t job_id)
{
	kl_list *p;
	kl_list_for_each (p, &n->session_list) {
		session *s = kl_list_entry(p, session, link);
		if (s->cur && s->cur->tc->job_id == job_id) {
			s->cur->cancelled = true;
			call_kill(s->cur, false);
			return;
		}
		kl_list *q;
		kl_list_for_each (q, &s->queue) {
			call *c = kl_list_entry(q, call, link);
			if (c->tc->job_id != job_id)
				continue;
			kl_list_del(&c->link);
			s->nqueued--;
			n->admitted--;
			call_reply_error(n, job_id, c->fn, c->arg, KILN__CODE__CANCELLED,
			                 "cancelled before it started");
			c->s = NULL;
			node_ref_put(&s->ref);
			call_free(c);
			return;
		}
	}
}

/* ---- timers ---- */

static void
timer_done(node_op *op, int res, uint32_t flags)
{
	call *c = kl_container_of(op, call, timer_op);
	if (res != -ETIME || c->done)
		return;
	c->timed_out = true;
	call_kill(c, true);
}

void
call_kill(call *c, bool timed_out)
{
	if (timed_out)
		c->timed_out = true;
	if (c->done)
		return;
	if (c->kind == CK_EXEC && c->leaf_fd >= 0)
		cg_kill(c->leaf_fd);
	else if (c->kind == CK_BASH && c->s)
		bash_kill_shell(c->s);
	/* File tools are short and bounded: they finish on their own; their
	 * result reports the cancel/timeout. */
}

void
call_start(call *c)
{
	node *n = c->n;
	session *s = c->s;
	c->started = true;
	c->t_start_ns = kl_now_ns();
	/* One line per execution: the integration tests count them per job id. */
	KL_LOG(KL_DEBUG, NODE_COMPONENT, "session=%s job=%llu start tool=%d", s->id,
	       (unsigned long long)c->tc->job_id, (int)c->tc->tool_case);
	s->last_used_ms = kl_wall_ms();
	s->calls++;
	n->running++;
	c->timeout_ms = pick_timeout(s, c->tc);
	if (c->timeout_ms == 0) {
		c->timed_out = true;
		call_finish(c);
		return;
	}
	if (c->kind == CK_EXEC || c->kind == CK_BASH)
		loop_timeout(&n->loop, &c->timer_op, c->timeout_ms, timer_done, &c->ref);
	switch (c->kind) {
	case CK_EXEC:
		exec_start(c);
		break;
	case CK_BASH:
		bash_start(c);
		break;
	default:
		fscall_start(c);
		break;
	}
}

/* ---- results ---- */

static uint8_t *
tail_bytes(kl_tail *t, size_t *len)
{
	*len = t->len;
	if (!t->len)
		return NULL;
	uint8_t *b = kl_xmalloc(t->len);
	kl_tail_copy(t, b);
	return b;
}

void
call_fill_result(call *c, Kiln__ToolResult *r)
{
	node *n = c->n;
	r->job_id = c->tc->job_id;
	r->node_id = n->name;
	r->limits_enforced = n->limits_enforced;
	r->duration_us = (kl_now_ns() - c->t_start_ns) / 1000;
	r->queue_us = (c->t_start_ns - c->t_submit_ns) / 1000;
	r->timed_out = c->timed_out;
	r->exit_code = -1;
}

static void
exec_result(call *c, Kiln__ToolResult *r, char *msg, size_t msglen)
{
	cg_stats st;
	memset(&st, 0, sizeof st);
	if (c->leaf_fd >= 0)
		cg_read_stats(c->leaf_fd, &st);
	r->cpu_usec = st.cpu_usec;
	r->peak_memory_bytes = st.mem_peak;
	r->oom_killed = st.oom_kills > 0;
	r->output.data = tail_bytes(&c->out, &r->output.len);
	r->stderr.data = tail_bytes(&c->err, &r->stderr.len);
	r->output_total = c->out.total;
	r->stderr_total = c->err.total;
	r->truncated = kl_tail_truncated(&c->out) || kl_tail_truncated(&c->err);
	if (c->spawn_err) {
		r->code = KILN__CODE__TOOL_ERROR;
		r->exit_code = c->spawn_err == ENOENT ? 127 : 126;
		snprintf(msg, msglen, "%s: %s", c->spawn_text, strerror(c->spawn_err));
		/* init's clone3 carries no RLIMIT_NPROC: EAGAIN is pids.max. */
		if (c->spawn_err == EAGAIN && c->s->lim.pids)
			snprintf(msg, msglen,
			         "%s: %s (the session is at its process limit, pids %u)",
			         c->spawn_text, strerror(c->spawn_err), c->s->lim.pids);
	} else if (c->exited) {
		if (WIFEXITED(c->wstatus))
			r->exit_code = WEXITSTATUS(c->wstatus);
		else if (WIFSIGNALED(c->wstatus))
			r->signal = WTERMSIG(c->wstatus);
	}
	if (r->oom_killed)
		snprintf(msg, msglen,
		         "killed by the out-of-memory killer (memory limit %llu bytes)",
		         (unsigned long long)c->s->lim.memory_bytes);
}

void
call_finish(call *c)
{
	if (c->done)
		return;
	c->done = true;
	node *n = c->n;
	session *s = c->s;
	node_loop *l = &n->loop;
	loop_cancel(l, &c->timer_op);
	loop_cancel(l, &c->grace_op);
	loop_cancel(l, &c->out_op);
	loop_cancel(l, &c->err_op);
	loop_cancel(l, &c->in_op);

	Kiln__ToolResult r = KILN__TOOL_RESULT__INIT;
	char msg[512] = "";
	call_fill_result(c, &r);
	if (c->kind == CK_EXEC)
		exec_result(c, &r, msg, sizeof msg);
	else if (c->kind == CK_BASH)
		bash_result(c, &r, msg, sizeof msg);
	else
		fscall_result(c, &r, msg, sizeof msg);
	if (c->timed_out) {
		r.code = KILN__CODE__DEADLINE_EXCEEDED;
		snprintf(msg, sizeof msg, "timed out after %u ms", c->timeout_ms);
	} else if (c->cancelled) {
		r.code = KILN__CODE__CANCELLED;
		snprintf(msg, sizeof msg, "cancelled");
	}
	if (r.code != KILN__CODE__OK ||
	    (r.exit_code != 0 && c->kind != CK_FILE && c->kind != CK_FILE_WORKER))
		r.is_error = true;
	r.message = msg;
	Kiln__NodeReply rep = KILN__NODE_REPLY__INIT;
	rep.reply_case = KILN__NODE_REPLY__REPLY_RESULT;
	rep.result = &r;
	if (c->fn)
		c->fn(c->arg, &rep);
	free(r.output.data);
	free(r.stderr.data);

	kl_close(&c->out_r);
	kl_close(&c->err_r);
	kl_close(&c->in_w);
	kl_close(&c->rfd);
	kl_close(&c->w.tmpfd); /* an unfinished write: the temp file goes with the tmpfs */
	kl_close(&c->w.dirfd);
	if (c->leaf_fd >= 0) {
		cg_kill(c->leaf_fd);
		kl_close(&c->leaf_fd);
		if (s && s->sb && s->sb->sessfd >= 0)
			graveyard_add(n, s->sb->sessfd, c->leaf);
	}
	n->running--;
	n->admitted--;
	n->calls_done++;
	if (s) {
		s->last_used_ms = kl_wall_ms();
		if (s->cur == c)
			s->cur = NULL;
		c->s = NULL;
		if (s->state == SS_OPEN)
			session_kick(s);
		node_ref_put(&s->ref);
	}
	node_ref_put(&c->ref);
	node_maybe_finish_stop(n);
}

/* ---- spawning through init ---- */

static bool
env_overridden(const char *kv, const char *const *later[], int nlater)
{
	size_t k = strcspn(kv, "=");
	for (int i = 0; i < nlater; i++)
		for (int j = 0; later[i] && later[i][j]; j++)
			if (!strncmp(later[i][j], kv, k) && later[i][j][k] == '=')
				return true;
	return false;
}

int
call_spawn(call *c, session *s, const char *const *argv, const char *const *extra_env,
           const int *fds, const int32_t *map, int nfds, uint64_t *ret_id)
{
	static uint8_t mem[KI_MAX_MSG];
	sandbox *sb = s->sb;
	ki_buf m;
	uint64_t id = sandbox_next_id(sb);
	ki_begin(&m, mem, sizeof mem, KI_SPAWN, id);
	ki_hdr(&m)->a = KI_SPAWN_CGROUPNS;
	ki_hdr(&m)->b = 022;
	for (int i = 0; argv[i]; i++)
		ki_put_str(&m, KT_ARG, argv[i]);
	/* The egress proxy's variables sit under the session's own, which may
	 * override them (to extend NO_PROXY, say). */
	const char *const *layers[4] = {base_env, egress_env(s), (const char *const *)s->env,
	                                extra_env};
	for (int L = 0; L < 4; L++)
		for (int i = 0; layers[L] && layers[L][i]; i++)
			if (!env_overridden(layers[L][i], layers + L + 1, 3 - L))
				ki_put_str(&m, KT_ENV, layers[L][i]);
	if (c && c->tc->tool_case == KILN__TOOL_CALL__TOOL_EXEC && *c->tc->exec->cwd)
		ki_put_str(&m, KT_CWD, c->tc->exec->cwd);
	uint64_t nproc = s->lim.pids ? s->lim.pids : 4096;
	struct ki_rlimit rl[] = {
	        {RLIMIT_NPROC, 0, nproc, nproc},
	        {RLIMIT_NOFILE, 0, 4096, 65536},
	        {RLIMIT_CORE, 0, 0, 0},
	};
	for (size_t i = 0; i < KL_ARRAY_SIZE(rl); i++)
		ki_put(&m, KT_RLIMIT, &rl[i], sizeof rl[i], NULL, 0);
	ki_put(&m, KT_FDMAP, map, (uint32_t)(sizeof(int32_t) * (size_t)nfds), NULL, 0);
	if (m.overflow) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return -E2BIG;
	}
	int r = sandbox_send(sb, &m, fds, nfds);
	if (r == 0)
		*ret_id = id;
	return r;
}

/* ---- exec ---- */

static void pipe_read(call *c, node_op *op, int fd, uint8_t *buf);

static void
maybe_done(call *c)
{
	if (c->exited && c->out_eof && c->err_eof)
		call_finish(c);
}

static void
read_done(node_op *op, int res, uint32_t flags)
{
	call *c = kl_container_of(op->owner, call, ref);
	bool is_out = op == &c->out_op;
	if (c->done)
		return;
	if (res > 0) {
		kl_tail_write(is_out ? &c->out : &c->err, is_out ? c->obuf : c->ebuf, (size_t)res);
		pipe_read(c, op, is_out ? c->out_r : c->err_r, is_out ? c->obuf : c->ebuf);
		return;
	}
	if (is_out)
		c->out_eof = true;
	else
		c->err_eof = true;
	maybe_done(c);
}

static void
pipe_read(call *c, node_op *op, int fd, uint8_t *buf)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->n->loop);
	io_uring_prep_read(sqe, fd, buf, CHUNK, (uint64_t)-1);
	loop_bind(&c->n->loop, sqe, op, read_done, &c->ref);
}

static void
stdin_done(node_op *op, int res, uint32_t flags)
{
	call *c = kl_container_of(op->owner, call, ref);
	Kiln__ExecInput *in = c->tc->exec;
	if (res > 0 && !c->done) {
		c->in_off += (size_t)res;
		if (c->in_off < in->stdin.len) {
			struct io_uring_sqe *sqe = loop_sqe(&c->n->loop);
			io_uring_prep_write(sqe, c->in_w, in->stdin.data + c->in_off,
			                    (unsigned)(in->stdin.len - c->in_off), (uint64_t)-1);
			loop_bind(&c->n->loop, sqe, &c->in_op, stdin_done, &c->ref);
			return;
		}
	}
	kl_close(&c->in_w); /* EOF for the process (or it stopped reading) */
}

static void
grace_done(node_op *op, int res, uint32_t flags)
{
	call *c = kl_container_of(op, call, grace_op);
	if (res == -ETIME && !c->done) {
		KL_LOG(KL_WARN, NODE_COMPONENT,
		       "job=%llu: output pipes still open %d ms after exit",
		       (unsigned long long)c->tc->job_id, EXIT_GRACE_MS);
		call_finish(c);
	}
}

void
call_on_init_msg(call *c, const struct ki_hdr *h, const uint8_t *msg, uint32_t len)
{
	if (c->done)
		return;
	if (h->type == KI_SPAWNED) {
		c->spawned = true;
		c->pid = h->a;
		if (c->timed_out || c->cancelled)
			cg_kill(c->leaf_fd);
		return;
	}
	if (h->type == KI_SPAWN_FAILED) {
		c->spawn_err = h->a ? h->a : EIO;
		c->spawn_stage = h->b;
		kl_strlcpy(c->spawn_text, ki_text(msg, len, "exec"), sizeof c->spawn_text);
		c->exited = true;
		/* init closed its copies of the pipes: EOF follows. */
		maybe_done(c);
		return;
	}
	if (h->type == KI_EXITED) {
		c->exited = true;
		c->wstatus = h->b;
		/* Leftover processes (background children) die with the leaf. */
		cg_kill(c->leaf_fd);
		if (!(c->out_eof && c->err_eof))
			loop_timeout(&c->n->loop, &c->grace_op, EXIT_GRACE_MS, grace_done, &c->ref);
		maybe_done(c);
	}
}

static void
exec_fail(call *c, int code, const char *what)
{
	kl_strlcpy(c->spawn_text, what, sizeof c->spawn_text);
	c->spawn_err = code;
	c->exited = c->out_eof = c->err_eof = true;
	call_finish(c);
}

void
exec_start(call *c)
{
	session *s = c->s;
	Kiln__ExecInput *in = c->tc->exec;
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
	if (in->n_argv == 0 || !*in->argv[0]) {
		exec_fail(c, EINVAL, "exec needs a non-empty argv");
		return;
	}
	if (in->stdin.len > (1u << 20)) {
		exec_fail(c, E2BIG, "stdin is larger than 1 MiB");
		return;
	}
	size_t cap = s->lim.output_bytes ? s->lim.output_bytes : (1u << 20);
	kl_tail_init(&c->out, cap);
	kl_tail_init(&c->err, cap);
	snprintf(c->leaf, sizeof c->leaf, "job-%u", ++s->job_seq);
	int r = cg_mkdir(s->sb->sessfd, c->leaf, s->sb->uid, s->sb->gid, 0, &c->leaf_fd);
	if (r < 0 || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 ||
	    (in->stdin.len && pipe2(pi, O_CLOEXEC) < 0)) {
		int e = r < 0 ? -r : errno;
		kl_close(&po[0]), kl_close(&po[1]), kl_close(&pe[0]), kl_close(&pe[1]);
		kl_close(&pi[0]), kl_close(&pi[1]);
		exec_fail(c, e, "setting up the job");
		return;
	}
	int fds[4], nfds = 0;
	int32_t map[4];
	fds[nfds] = fcntl(c->leaf_fd, F_DUPFD_CLOEXEC, 3), map[nfds++] = -1;
	fds[nfds] = po[1], map[nfds++] = 1;
	fds[nfds] = pe[1], map[nfds++] = 2;
	if (pi[0] >= 0)
		fds[nfds] = pi[0], map[nfds++] = 0;
	c->out_r = po[0];
	c->err_r = pe[0];
	c->in_w = pi[1];
	const char **env = kl_xcalloc(in->n_env + 1, sizeof *env);
	for (size_t i = 0; i < in->n_env; i++)
		env[i] = kl_xasprintf("%s=%s", in->env[i]->key, in->env[i]->value);
	const char **argv = kl_xcalloc(in->n_argv + 1, sizeof *argv);
	for (size_t i = 0; i < in->n_argv; i++)
		argv[i] = in->argv[i];
	r = call_spawn(c, s, argv, env, fds, map, nfds, &c->spawn_id);
	for (size_t i = 0; i < in->n_env; i++)
		free((char *)env[i]);
	free(env);
	free(argv);
	if (r < 0) {
		exec_fail(c, -r, r == -E2BIG ? "argument list too long" : "spawn");
		return;
	}
	c->obuf = kl_xmalloc(CHUNK);
	c->ebuf = kl_xmalloc(CHUNK);
	pipe_read(c, &c->out_op, c->out_r, c->obuf);
	pipe_read(c, &c->err_op, c->err_r, c->ebuf);
	if (c->in_w >= 0) {
		struct io_uring_sqe *sqe = loop_sqe(&c->n->loop);
		io_uring_prep_write(sqe, c->in_w, in->stdin.data, (unsigned)in->stdin.len,
		                    (uint64_t)-1);
		loop_bind(&c->n->loop, sqe, &c->in_op, stdin_done, &c->ref);
	}
}
