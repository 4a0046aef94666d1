/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A string-keyed hash map (separate chaining, power-of-two buckets, grows at
 * load factor 1). Keys are copied; values are opaque pointers the caller
 * owns. Not thread-safe. Used for session, node and tenant tables.
 */
#ifndef KL_MAP_H
#define KL_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct kl_map_ent {
	struct kl_map_ent *next;
	uint64_t hash;
	void *val;
	char key[];
} kl_map_ent;

typedef struct kl_map {
	kl_map_ent **b;
	size_t nb, n;
} kl_map;

void kl_map_init(kl_map *m);
/* Frees the entries (not the values). */
void kl_map_fini(kl_map *m);
void *kl_map_get(const kl_map *m, const char *key);
/* Insert or replace; returns the previous value (or NULL). */
void *kl_map_put(kl_map *m, const char *key, void *val);
/* Remove; returns the value (or NULL). */
void *kl_map_del(kl_map *m, const char *key);
static inline size_t
kl_map_size(const kl_map *m)
{
	return m->n;
}

/* Iteration: for (kl_map_ent *e = kl_map_first(m, &i); e; e = kl_map_next(m, &i, e)).
 * Deleting the current entry while iterating is not allowed; collect keys first. */
kl_map_ent *kl_map_first(const kl_map *m, size_t *i);
kl_map_ent *kl_map_next(const kl_map *m, size_t *i, kl_map_ent *e);

uint64_t kl_hash_str(const char *s);

#endif
