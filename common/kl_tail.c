/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tail buffer: a linear buffer that doubles until it reaches the cap, then
 * turns into a ring that overwrites its oldest bytes.
 */
#include "kl_tail.h"

#include "kl_util.h"

void
kl_tail_init(kl_tail *t, size_t cap)
{
	memset(t, 0, sizeof *t);
	t->cap = cap;
}

void
kl_tail_fini(kl_tail *t)
{
	free(t->buf);
	memset(t, 0, sizeof *t);
}

void
kl_tail_reset(kl_tail *t)
{
	t->len = t->start = 0;
	t->total = 0;
}

static void
kl_tail_grow(kl_tail *t, size_t need)
{
	size_t a = t->alloc ? t->alloc : 4096;
	while (a < need)
		a *= 2;
	if (a > t->cap)
		a = t->cap;
	/* Only called while the ring has not wrapped (start == 0). */
	t->buf = kl_xrealloc(t->buf, a);
	t->alloc = a;
}

void
kl_tail_write(kl_tail *t, const void *p, size_t n)
{
	const uint8_t *s = p;
	t->total += n;
	if (!t->cap)
		return;
	if (n >= t->cap) { /* only the last cap bytes survive */
		if (t->alloc < t->cap)
			kl_tail_grow(t, t->cap);
		memcpy(t->buf, s + n - t->cap, t->cap);
		t->len = t->cap;
		t->start = 0;
		return;
	}
	if (t->len + n <= t->cap && t->start == 0) {
		if (t->len + n > t->alloc)
			kl_tail_grow(t, t->len + n);
		memcpy(t->buf + t->len, s, n);
		t->len += n;
		return;
	}
	/* Ring mode: the buffer is full-size; append at (start+len) mod cap. */
	if (t->alloc < t->cap)
		kl_tail_grow(t, t->cap);
	size_t end = (t->start + t->len) % t->cap;
	size_t first = KL_MIN(n, t->cap - end);
	memcpy(t->buf + end, s, first);
	memcpy(t->buf, s + first, n - first);
	size_t newlen = t->len + n;
	if (newlen > t->cap) {
		t->start = (t->start + (newlen - t->cap)) % t->cap;
		t->len = t->cap;
	} else {
		t->len = newlen;
	}
}

void
kl_tail_copy(const kl_tail *t, uint8_t *out)
{
	if (!t->len)
		return;
	size_t first = KL_MIN(t->len, t->cap - t->start);
	memcpy(out, t->buf + t->start, first);
	memcpy(out + first, t->buf, t->len - first);
}
