/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Log-linear histogram. Values below 2^SUB map 1:1 to the first 2^SUB
 * buckets. Above, with shift = msb - SUB + 1, the value's top SUB bits
 * (v >> shift, in [2^(SUB-1), 2^SUB)) pick one of 2^(SUB-1) buckets in the
 * group `shift`; groups follow each other without gaps.
 */
#include "kl_hist.h"

#include <string.h>

void
kl_hist_init(kl_hist *h)
{
	memset(h, 0, sizeof *h);
	h->min = UINT64_MAX;
}

int
kl_hist_bucket_of(uint64_t v)
{
	if (v < (1ull << KL_HIST_SUB))
		return (int)v;
	int msb = 63 - __builtin_clzll(v); /* >= SUB */
	if (msb >= KL_HIST_MAXLOG)
		return KL_HIST_BUCKETS - 1;
	int shift = msb - KL_HIST_SUB + 1; /* >= 1 */
	int sub = (int)(v >> shift);       /* in [2^(SUB-1), 2^SUB) */
	return (shift << (KL_HIST_SUB - 1)) + sub;
}

uint64_t
kl_hist_bucket_high(int i)
{
	if (i < (1 << KL_HIST_SUB))
		return (uint64_t)i;
	int shift = (i >> (KL_HIST_SUB - 1)) - 1;
	uint64_t sub = (uint64_t)(i - (shift << (KL_HIST_SUB - 1))); /* in [2^(SUB-1), 2^SUB) */
	return ((sub + 1) << shift) - 1;
}

void
kl_hist_record(kl_hist *h, uint64_t v)
{
	int i = kl_hist_bucket_of(v);
	if (i >= KL_HIST_BUCKETS)
		i = KL_HIST_BUCKETS - 1;
	h->b[i]++;
	h->count++;
	h->sum += (double)v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void
kl_hist_merge(kl_hist *dst, const kl_hist *src)
{
	if (!src->count)
		return;
	for (int i = 0; i < KL_HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t
kl_hist_percentile(const kl_hist *h, double p)
{
	if (!h->count)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 100)
		return h->max;
	uint64_t want = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
	if (want < 1)
		want = 1;
	uint64_t seen = 0;
	for (int i = 0; i < KL_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t v = kl_hist_bucket_high(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

double
kl_hist_mean(const kl_hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}
