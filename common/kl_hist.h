/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A log-linear latency histogram in the spirit of HdrHistogram: values are
 * grouped by power of two, and each power is split into 2^KL_HIST_SUB linear
 * buckets, so any recorded value is reported within 1/2^KL_HIST_SUB (< 0.8%)
 * of the truth, from 1 to 2^KL_HIST_MAXLOG. Recording is O(1) and allocation
 * free; a histogram is a plain value (embed it, memset it, merge it). Not
 * thread-safe: one writer, or merge per-thread copies.
 */
#ifndef KL_HIST_H
#define KL_HIST_H

#include <stdint.h>

#define KL_HIST_SUB     7
#define KL_HIST_MAXLOG  44
#define KL_HIST_BUCKETS ((KL_HIST_MAXLOG - KL_HIST_SUB + 1) << KL_HIST_SUB)

typedef struct kl_hist {
	uint64_t count;
	uint64_t min, max;
	double sum;
	uint64_t b[KL_HIST_BUCKETS];
} kl_hist;

void kl_hist_init(kl_hist *h);
void kl_hist_record(kl_hist *h, uint64_t v);
void kl_hist_merge(kl_hist *dst, const kl_hist *src);
/* Value at percentile p (0..100): the upper edge of the bucket that holds it,
 * clamped to [min, max]. 0 for an empty histogram. */
uint64_t kl_hist_percentile(const kl_hist *h, double p);
double kl_hist_mean(const kl_hist *h);
/* Bucket index <-> value range, for CDF plots: iterate i from 0 to
 * KL_HIST_BUCKETS-1 and read h->b[i]. */
uint64_t kl_hist_bucket_high(int i);
int kl_hist_bucket_of(uint64_t v);

#endif
