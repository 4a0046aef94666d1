/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A mailbox that hands items from any thread (nng callbacks, API callers) to
 * one event-loop thread: an intrusive list under a mutex plus an eventfd the
 * loop keeps a read armed on (io_uring). Posting is O(1); the loop takes the
 * whole batch at once. The mailbox never frees items: the consumer does.
 */
#ifndef KL_MBOX_H
#define KL_MBOX_H

#include <pthread.h>
#include <stddef.h>

typedef struct kl_mbox_item {
	struct kl_mbox_item *next;
} kl_mbox_item;

typedef struct kl_mbox {
	pthread_mutex_t mu;
	kl_mbox_item *head, **tailp;
	size_t count;
	int efd; /* eventfd, EFD_CLOEXEC|EFD_NONBLOCK; the loop reads it */
} kl_mbox;

int kl_mbox_init(kl_mbox *m);
void kl_mbox_fini(kl_mbox *m);
/* Any thread. Wakes the loop when the mailbox goes from empty to non-empty. */
void kl_mbox_post(kl_mbox *m, kl_mbox_item *it);
/* Loop thread: take every queued item, oldest first (NULL if none). */
kl_mbox_item *kl_mbox_take_all(kl_mbox *m);

#endif
