/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_uring loop plumbing: SQE acquisition, op binding with owner references,
 * timeouts, cancellation, and CQE dispatch. The ring is set up single-issuer
 * with deferred task running when the kernel offers it: completions are only
 * processed when this thread asks, which is exactly the loop's model.
 */
#include "loop.h"

#include "kl_util.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int
loop_init(node_loop *l, unsigned entries)
{
	struct io_uring_params p;
	memset(l, 0, sizeof *l);
	memset(&p, 0, sizeof p);
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
	          IORING_SETUP_R_DISABLED;
	p.cq_entries = entries * 4;
	int r = io_uring_queue_init_params(entries, &l->ring, &p);
	if (r == -EINVAL) { /* older kernel: plain ring */
		memset(&p, 0, sizeof p);
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 4;
		r = io_uring_queue_init_params(entries, &l->ring, &p);
	}
	return r;
}

int
loop_enable(node_loop *l)
{
	if (!(l->ring.flags & IORING_SETUP_R_DISABLED))
		return 0;
	/* liburing 2.3 has no io_uring_enable_rings(): register directly. */
	long r = syscall(__NR_io_uring_register, l->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
	                 NULL, 0);
	return r < 0 ? -errno : 0;
}

void
loop_fini(node_loop *l)
{
	io_uring_queue_exit(&l->ring);
}

struct io_uring_sqe *
loop_sqe(node_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	while (!sqe) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

void
loop_bind(node_loop *l, struct io_uring_sqe *sqe, node_op *op, node_op_cb *cb, node_ref *owner)
{
	op->cb = cb;
	op->owner = owner;
	op->busy = true;
	if (owner)
		node_ref_get(owner);
	io_uring_sqe_set_data(sqe, op);
	l->inflight++;
}

void
loop_timeout(node_loop *l, node_op *op, uint64_t ms, node_op_cb *cb, node_ref *owner)
{
	struct io_uring_sqe *sqe = loop_sqe(l);
	op->ts.tv_sec = (long long)(ms / 1000);
	op->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &op->ts, 0, 0);
	loop_bind(l, sqe, op, cb, owner);
}

void
loop_cancel(node_loop *l, node_op *op)
{
	if (!op->busy)
		return;
	struct io_uring_sqe *sqe = loop_sqe(l);
	io_uring_prep_cancel(sqe, op, 0);
	io_uring_sqe_set_data(sqe, NULL); /* its own completion is ignored */
	io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
}

static void
dispatch(node_loop *l, struct io_uring_cqe *cqe)
{
	node_op *op = io_uring_cqe_get_data(cqe);
	if (!op)
		return; /* a cancel request's own completion */
	int res = cqe->res;
	uint32_t flags = cqe->flags;
	node_ref *owner = op->owner;
	if (!(flags & IORING_CQE_F_MORE)) {
		op->busy = false;
		l->inflight--;
	}
	l->ops_completed++;
	op->cb(op, res, flags);
	if (!(flags & IORING_CQE_F_MORE) && owner)
		node_ref_put(owner);
}

int
loop_run_once(node_loop *l, int timeout_ms)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {timeout_ms / 1000, (long long)(timeout_ms % 1000) * 1000000};
	int r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, timeout_ms >= 0 ? &ts : NULL,
	                                         NULL);
	if (r < 0 && r != -ETIME && r != -EINTR)
		return r;
	int n = 0;
	/* The copy lets a callback submit (and even reap) without invalidating cqe. */
	while (io_uring_peek_cqe(&l->ring, &cqe) == 0) {
		struct io_uring_cqe copy = *cqe;
		io_uring_cqe_seen(&l->ring, cqe);
		dispatch(l, &copy);
		n++;
	}
	return n;
}
