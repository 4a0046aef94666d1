/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Intrusive circular doubly-linked lists (the kernel's list_head idea): O(1)
 * insert and unlink, no allocation. Header-only.
 */
#ifndef KL_LIST_H
#define KL_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kl_list {
	struct kl_list *next, *prev;
} kl_list;

#define KL_LIST_INIT(name)       \
	{                        \
		&(name), &(name) \
	}

static inline void
kl_list_init(kl_list *l)
{
	l->next = l->prev = l;
}

static inline bool
kl_list_empty(const kl_list *l)
{
	return l->next == l;
}

/* True if the node is linked into some list (nodes are kept self-linked when out). */
static inline bool
kl_list_linked(const kl_list *n)
{
	return n->next && n->next != n;
}

static inline void
kl_list_add_tail(kl_list *head, kl_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void
kl_list_add_head(kl_list *head, kl_list *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

static inline void
kl_list_del(kl_list *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = n;
}

static inline kl_list *
kl_list_pop(kl_list *head)
{
	if (kl_list_empty(head))
		return NULL;
	kl_list *n = head->next;
	kl_list_del(n);
	return n;
}

#define kl_list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define kl_list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

#define kl_list_for_each_safe(pos, tmp, head)                            \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif
