/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Clocks: monotonic nanoseconds for latency (nng_clock() counts ms only) and
 * wall-clock milliseconds for deadlines that cross process boundaries.
 */
#ifndef KL_CLOCK_H
#define KL_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t
kl_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
kl_now_us(void)
{
	return kl_now_ns() / 1000;
}

static inline uint64_t
kl_now_ms(void)
{
	return kl_now_ns() / 1000000;
}

static inline uint64_t
kl_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
