/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's io_uring event loop. Every in-flight operation is a node_op
 * embedded in the object that owns it; its address is the SQE's user_data and
 * its callback runs exactly once per CQE (multishot ops run until a CQE
 * without IORING_CQE_F_MORE). An op holds a reference on its owner (a
 * node_ref) while in flight, so an object torn down with ops outstanding is
 * freed only after their completions (-ECANCELED) arrive. Cancellation is
 * explicit: loop_cancel() submits an ASYNC_CANCEL for the op.
 *
 * One thread owns a loop; nothing here is thread-safe. Other threads reach
 * the loop through a kl_mbox whose eventfd the loop reads.
 */
#ifndef NODE_LOOP_H
#define NODE_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct node_ref {
	int refs;
	void (*release)(struct node_ref *r); /* called when refs drops to 0 */
} node_ref;

static inline void
node_ref_get(node_ref *r)
{
	r->refs++;
}

static inline void
node_ref_put(node_ref *r)
{
	if (--r->refs == 0 && r->release)
		r->release(r);
}

typedef struct node_op node_op;
typedef void node_op_cb(node_op *op, int res, uint32_t cqe_flags);

struct node_op {
	node_op_cb *cb;
	node_ref *owner;             /* may be NULL for ops owned by the loop's creator */
	bool busy;                   /* submitted and not completed */
	struct __kernel_timespec ts; /* for timeout ops */
};

typedef struct node_loop {
	struct io_uring ring;
	bool stop;
	uint64_t ops_completed;
	int inflight; /* ops bound and not yet completed */
} node_loop;

int loop_init(node_loop *l, unsigned entries);
/* Enable the ring on the thread that will run it (it is created disabled so
 * that thread becomes its single issuer). */
int loop_enable(node_loop *l);
void loop_fini(node_loop *l);

/* A fresh SQE (submits pending ones first if the queue is full; never NULL). */
struct io_uring_sqe *loop_sqe(node_loop *l);
/* Bind a prepared SQE to op: sets user_data, marks busy, takes a ref on owner. */
void loop_bind(node_loop *l, struct io_uring_sqe *sqe, node_op *op, node_op_cb *cb,
               node_ref *owner);
/* A relative timeout of ms milliseconds. */
void loop_timeout(node_loop *l, node_op *op, uint64_t ms, node_op_cb *cb, node_ref *owner);
/* Ask the kernel to cancel op if it is in flight (its callback still runs). */
void loop_cancel(node_loop *l, node_op *op);
/* Submit and wait for at least one completion (or the timeout), then dispatch
 * every available CQE. Returns the number dispatched or -errno. */
int loop_run_once(node_loop *l, int timeout_ms);

#endif
