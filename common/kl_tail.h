/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A bounded "keep the last N bytes" buffer for process output. Memory grows
 * geometrically with what was written, never past the cap, so a quiet call
 * costs little and a `yes` flood costs exactly the cap. Counts every byte
 * written so results can report the total and whether the head was lost.
 */
#ifndef KL_TAIL_H
#define KL_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kl_tail {
	uint8_t *buf;
	size_t cap;   /* the most bytes ever kept */
	size_t alloc; /* bytes allocated (<= cap) */
	size_t len;   /* bytes held (<= alloc) */
	size_t start; /* index of the oldest byte once the ring wrapped */
	uint64_t total;
} kl_tail;

void kl_tail_init(kl_tail *t, size_t cap);
void kl_tail_fini(kl_tail *t);
void kl_tail_reset(kl_tail *t);
void kl_tail_write(kl_tail *t, const void *p, size_t n);
static inline bool
kl_tail_truncated(const kl_tail *t)
{
	return t->total > t->len;
}
/* Copy the kept bytes, oldest first, into out (t->len bytes). */
void kl_tail_copy(const kl_tail *t, uint8_t *out);

#endif
