/* SPDX-License-Identifier: Apache-2.0 */
/*
 * String hash map with FNV-1a hashing and chained buckets.
 */
#include "kl_map.h"

#include "kl_util.h"

uint64_t
kl_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

void
kl_map_init(kl_map *m)
{
	m->nb = 16;
	m->n = 0;
	m->b = kl_xcalloc(m->nb, sizeof *m->b);
}

void
kl_map_fini(kl_map *m)
{
	for (size_t i = 0; i < m->nb; i++) {
		kl_map_ent *e = m->b[i];
		while (e) {
			kl_map_ent *nx = e->next;
			free(e);
			e = nx;
		}
	}
	free(m->b);
	m->b = NULL;
	m->nb = m->n = 0;
}

static kl_map_ent **
find(const kl_map *m, const char *key, uint64_t h)
{
	kl_map_ent **p = &m->b[h & (m->nb - 1)];
	while (*p && ((*p)->hash != h || strcmp((*p)->key, key)))
		p = &(*p)->next;
	return p;
}

void *
kl_map_get(const kl_map *m, const char *key)
{
	kl_map_ent **p = find(m, key, kl_hash_str(key));
	return *p ? (*p)->val : NULL;
}

static void
grow(kl_map *m)
{
	size_t nb = m->nb * 2;
	kl_map_ent **b = kl_xcalloc(nb, sizeof *b);
	for (size_t i = 0; i < m->nb; i++) {
		kl_map_ent *e = m->b[i];
		while (e) {
			kl_map_ent *nx = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
			e = nx;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

void *
kl_map_put(kl_map *m, const char *key, void *val)
{
	uint64_t h = kl_hash_str(key);
	kl_map_ent **p = find(m, key, h);
	if (*p) {
		void *old = (*p)->val;
		(*p)->val = val;
		return old;
	}
	size_t kl = strlen(key);
	kl_map_ent *e = kl_xmalloc(sizeof *e + kl + 1);
	memcpy(e->key, key, kl + 1);
	e->hash = h;
	e->val = val;
	e->next = NULL;
	*p = e;
	if (++m->n > m->nb)
		grow(m);
	return NULL;
}

void *
kl_map_del(kl_map *m, const char *key)
{
	kl_map_ent **p = find(m, key, kl_hash_str(key));
	if (!*p)
		return NULL;
	kl_map_ent *e = *p;
	void *v = e->val;
	*p = e->next;
	free(e);
	m->n--;
	return v;
}

kl_map_ent *
kl_map_first(const kl_map *m, size_t *i)
{
	for (*i = 0; *i < m->nb; (*i)++)
		if (m->b[*i])
			return m->b[*i];
	return NULL;
}

kl_map_ent *
kl_map_next(const kl_map *m, size_t *i, kl_map_ent *e)
{
	if (e->next)
		return e->next;
	for ((*i)++; *i < m->nb; (*i)++)
		if (m->b[*i])
			return m->b[*i];
	return NULL;
}
