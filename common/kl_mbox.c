/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mailbox implementation. The eventfd is written only on the empty -> non-empty
 * transition, so a burst of posts costs one wakeup.
 */
#include "kl_mbox.h"

#include "kl_util.h"

#include <stdint.h>
#include <sys/eventfd.h>

int
kl_mbox_init(kl_mbox *m)
{
	m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->efd < 0)
		return -errno;
	pthread_mutex_init(&m->mu, NULL);
	m->head = NULL;
	m->tailp = &m->head;
	m->count = 0;
	return 0;
}

void
kl_mbox_fini(kl_mbox *m)
{
	kl_close(&m->efd);
	pthread_mutex_destroy(&m->mu);
}

void
kl_mbox_post(kl_mbox *m, kl_mbox_item *it)
{
	it->next = NULL;
	pthread_mutex_lock(&m->mu);
	int wake = m->head == NULL;
	*m->tailp = it;
	m->tailp = &it->next;
	m->count++;
	pthread_mutex_unlock(&m->mu);
	if (wake) {
		uint64_t one = 1;
		ssize_t n = write(m->efd, &one, sizeof one);
		(void)n; /* EAGAIN only when the counter is saturated: already awake */
	}
}

kl_mbox_item *
kl_mbox_take_all(kl_mbox *m)
{
	pthread_mutex_lock(&m->mu);
	kl_mbox_item *h = m->head;
	m->head = NULL;
	m->tailp = &m->head;
	m->count = 0;
	pthread_mutex_unlock(&m->mu);
	return h;
}
