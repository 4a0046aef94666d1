/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File tools as node calls. read, write and edit run on the loop: the path is
 * resolved synchronously with the sandbox user's fs ids (openat2
 * RESOLVE_IN_ROOT on the sandbox root: dentry-cache work, no disk wait on the
 * tmpfs workspace), and the file's bytes move through io_uring READ / WRITE /
 * FSYNC; the final rename is a metadata operation done in place. glob, grep
 * and the text-editor form walk directories, which io_uring cannot do
 * (there is no getdents op), so they run on a small fixed pool of worker
 * threads (never one per call) that each switch to the sandbox's fs ids, and
 * post their result back to the loop's mailbox.
 */
#include "node_impl.h"

#include "kl_log.h"

#include <fcntl.h>
#include <stdio.h>

enum { FS_READ = 1, FS_WRITE, FS_FSYNC };

static void
fs_root_of(call *c, fs_root *root)
{
	sandbox *sb = c->s->sb;
	root->rootfd = sb->rootfd;
	root->uid = sb->uid;
	root->gid = sb->gid;
	root->workdir = "/workspace";
	root->fsync = false; /* fsync runs on the ring, see below */
}

void
fscall_result(call *c, Kiln__ToolResult *r, char *msg, size_t msglen)
{
	fs_result *f = &c->fres;
	r->code = f->code;
	r->is_error = f->is_error || f->code != KILN__CODE__OK;
	r->output.data = (uint8_t *)f->text;
	r->output.len = f->text ? f->text_len : 0;
	r->output_total = r->output.len;
	r->truncated = f->truncated;
	r->replacements = f->replacements;
	if (f->message)
		snprintf(msg, msglen, "%s", f->message);
	f->text = NULL; /* now owned by r, freed by call_finish */
	r->exit_code = 0;
}

/* ---- the write half (write, edit) ---- */

static void fs_write_step(call *c);

static void fs_done(node_op *op, int res, uint32_t flags);

static void
fs_submit(call *c, int step, struct io_uring_sqe *sqe)
{
	c->fs_step = step;
	loop_bind(&c->n->loop, sqe, &c->fs_op, fs_done, &c->ref);
}

static void
fs_finish_write(call *c)
{
	fs_root root;
	fs_root_of(c, &root);
	fs_creds cr;
	fs_creds_enter(&root, &cr);
	int r = fs_write_commit(&root, &c->w, &c->fres);
	fs_creds_leave(&cr);
	if (r == 0 && !c->fres.message) {
		c->fres.code = KILN__CODE__OK;
		c->fres.message = kl_xasprintf("Wrote %zu bytes to %s", c->rlen, c->path);
	}
	call_finish(c);
}

static void
fs_write_step(call *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->n->loop);
	if (c->in_off < c->rlen) {
		io_uring_prep_write(sqe, c->w.tmpfd, c->data + c->in_off,
		                    (unsigned)KL_MIN(c->rlen - c->in_off, 1u << 30), c->in_off);
		fs_submit(c, FS_WRITE, sqe);
		return;
	}
	if (c->n->cfg.fsync_writes) {
		io_uring_prep_fsync(sqe, c->w.tmpfd, 0);
		fs_submit(c, FS_FSYNC, sqe);
		return;
	}
	io_uring_prep_nop(sqe);
	fs_submit(c, FS_FSYNC, sqe);
}

/* Start writing c->data (c->rlen bytes) to c->path atomically. */
static void
fs_start_write(call *c)
{
	fs_root root;
	fs_root_of(c, &root);
	fs_creds cr;
	fs_creds_enter(&root, &cr);
	int r = fs_write_prepare(&root, c->path, &c->w, &c->fres);
	fs_creds_leave(&cr);
	if (r < 0) {
		call_finish(c);
		return;
	}
	c->in_off = 0;
	fs_write_step(c);
}

/* ---- the read half (read, edit) ---- */

static void
fs_after_read(call *c)
{
	Kiln__ToolCall *tc = c->tc;
	fs_result *f = &c->fres;
	if (!fs_utf8_valid((const char *)c->data, c->rlen)) {
		fs_fail(f, KILN__CODE__TOOL_ERROR, "%s is not valid UTF-8 text", c->path);
		call_finish(c);
		return;
	}
	if (tc->tool_case == KILN__TOOL_CALL__TOOL_READ) {
		size_t off, len;
		if (fs_view_slice((const char *)c->data, c->rlen, tc->read->view_range,
		                  tc->read->n_view_range, &off, &len, f) == 0) {
			f->code = KILN__CODE__OK;
			f->text = kl_xstrndup((const char *)c->data + off, len);
			f->text_len = len;
		}
		call_finish(c);
		return;
	}
	/* edit */
	Kiln__EditInput *in = tc->edit;
	char *out;
	size_t outlen;
	uint32_t count;
	if (fs_replace((const char *)c->data, c->rlen, in->old_string, strlen(in->old_string),
	               in->new_string, strlen(in->new_string), in->replace_all, in->file_path, &out,
	               &outlen, &count, f) < 0) {
		call_finish(c);
		return;
	}
	free(c->data);
	c->data = (uint8_t *)out;
	c->rlen = outlen;
	f->replacements = count;
	f->code = KILN__CODE__OK;
	f->message = kl_xasprintf("Replaced %u occurrence%s in %s", count, count == 1 ? "" : "s",
	                          in->file_path);
	fs_start_write(c);
}

static void
fs_read_more(call *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->n->loop);
	io_uring_prep_read(sqe, c->rfd, c->data + c->rlen, (unsigned)(c->rsize + 1 - c->rlen),
	                   c->rlen);
	fs_submit(c, FS_READ, sqe);
}

static void
fs_done(node_op *op, int res, uint32_t flags)
{
	call *c = kl_container_of(op, call, fs_op);
	if (c->done)
		return;
	if (res < 0) {
		fs_fail(&c->fres, KILN__CODE__TOOL_ERROR, "%s: %s", c->path, strerror(-res));
		if (c->w.tmpfd >= 0) {
			fs_root root;
			fs_root_of(c, &root);
			fs_creds cr;
			fs_creds_enter(&root, &cr);
			fs_write_abort(&root, &c->w);
			fs_creds_leave(&cr);
		}
		call_finish(c);
		return;
	}
	switch (c->fs_step) {
	case FS_READ:
		c->rlen += (size_t)res;
		if (res > 0 && c->rlen <= c->rsize) {
			fs_read_more(c); /* short read: keep going (the file may also grow) */
			return;
		}
		kl_close(&c->rfd);
		if (c->rlen > FS_READ_MAX) {
			fs_fail(&c->fres, KILN__CODE__TOOL_ERROR,
			        "%s is larger than %u KiB; read a slice with head, tail or sed",
			        c->path, FS_READ_MAX >> 10);
			call_finish(c);
			return;
		}
		fs_after_read(c);
		return;
	case FS_WRITE:
		c->in_off += (size_t)res;
		fs_write_step(c);
		return;
	case FS_FSYNC:
		fs_finish_write(c);
		return;
	}
}

static int
fs_begin_read(call *c, const char *tool_path)
{
	fs_root root;
	fs_root_of(c, &root);
	if (fs_abs_path(root.workdir, tool_path, c->path, sizeof c->path, &c->fres) < 0)
		return -1;
	fs_creds cr;
	fs_creds_enter(&root, &cr);
	int r = fs_open_read(&root, c->path, 0, &c->rfd, &c->rsize, &c->fres);
	fs_creds_leave(&cr);
	if (r < 0)
		return -1;
	c->data = kl_xmalloc(c->rsize + 2);
	c->rlen = 0;
	fs_read_more(c);
	return 0;
}

static void
fs_start_ring(call *c)
{
	Kiln__ToolCall *tc = c->tc;
	fs_root root;
	fs_root_of(c, &root);
	if (tc->tool_case == KILN__TOOL_CALL__TOOL_WRITE) {
		Kiln__WriteInput *in = tc->write;
		if (in->content.len > FS_WRITE_MAX) {
			fs_fail(&c->fres, KILN__CODE__INVALID_ARGUMENT,
			        "content is larger than %u MiB", FS_WRITE_MAX >> 20);
			call_finish(c);
			return;
		}
		if (fs_abs_path(root.workdir, in->file_path, c->path, sizeof c->path, &c->fres) <
		    0) {
			call_finish(c);
			return;
		}
		c->data = kl_xmalloc(in->content.len + 1);
		memcpy(c->data, in->content.data, in->content.len);
		c->rlen = in->content.len;
		fs_start_write(c);
		return;
	}
	const char *p = tc->tool_case == KILN__TOOL_CALL__TOOL_READ ? tc->read->file_path
	                                                            : tc->edit->file_path;
	if (tc->tool_case == KILN__TOOL_CALL__TOOL_EDIT && !*tc->edit->old_string) {
		fs_fail(&c->fres, KILN__CODE__INVALID_ARGUMENT, "old_string must not be empty");
		call_finish(c);
		return;
	}
	if (fs_begin_read(c, p) < 0)
		call_finish(c);
}

/* ---- worker pool (glob, grep, editor) ---- */

static void *
worker_main(void *arg)
{
	node *n = arg;
	for (;;) {
		pthread_mutex_lock(&n->wmu);
		while (!n->wstop && kl_list_empty(&n->wqueue))
			pthread_cond_wait(&n->wcond, &n->wmu);
		if (n->wstop && kl_list_empty(&n->wqueue)) {
			pthread_mutex_unlock(&n->wmu);
			return NULL;
		}
		call *c = kl_list_entry(kl_list_pop(&n->wqueue), call, link);
		pthread_mutex_unlock(&n->wmu);
		fs_run(&c->root, c->tc, &c->fres);
		close(c->worker_rootfd);
		c->mb.kind = MB_FSDONE;
		kl_mbox_post(&n->mbox, &c->mb.it);
	}
}

int
workers_start(node *n)
{
	pthread_mutex_init(&n->wmu, NULL);
	pthread_cond_init(&n->wcond, NULL);
	kl_list_init(&n->wqueue);
	for (int i = 0; i < 2; i++) {
		if (pthread_create(&n->workers[i], NULL, worker_main, n) != 0)
			return -EAGAIN;
		n->nworkers++;
	}
	return 0;
}

void
workers_stop(node *n)
{
	pthread_mutex_lock(&n->wmu);
	n->wstop = true;
	pthread_cond_broadcast(&n->wcond);
	pthread_mutex_unlock(&n->wmu);
	for (int i = 0; i < n->nworkers; i++)
		pthread_join(n->workers[i], NULL);
	n->nworkers = 0;
}

void
fscall_worker_done(node *n, call *c)
{
	if (!c->done)
		call_finish(c);
	node_ref_put(&c->ref); /* the worker's reference */
}

void
fscall_start(call *c)
{
	if (c->kind == CK_FILE) {
		fs_start_ring(c);
		return;
	}
	node *n = c->n;
	fs_root_of(c, &c->root);
	/* The worker gets its own root fd: a session closed meanwhile must not
	 * close (and let another file reuse) the descriptor it is walking. */
	c->worker_rootfd = fcntl(c->root.rootfd, F_DUPFD_CLOEXEC, 3);
	if (c->worker_rootfd < 0) {
		fs_fail(&c->fres, KILN__CODE__INTERNAL, "dup: %s", strerror(errno));
		call_finish(c);
		return;
	}
	c->root.rootfd = c->worker_rootfd;
	node_ref_get(&c->ref);
	pthread_mutex_lock(&n->wmu);
	kl_list_add_tail(&n->wqueue, &c->link);
	pthread_cond_signal(&n->wcond);
	pthread_mutex_unlock(&n->wmu);
}
