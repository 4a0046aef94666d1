/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/: histogram accuracy, tail buffer, envelope version check. */
#include "test.h"

#include "kl_hist.h"
#include "kl_proto.h"
#include "kl_tail.h"
#include "kl_util.h"

#include <errno.h>

TEST(hist_buckets_round_trip)
{
	/* Every value lands in a bucket whose upper edge is >= it and within 1/64. */
	for (uint64_t v = 1; v < (1ull << 40); v = v * 3 + 1) {
		int i = kl_hist_bucket_of(v);
		uint64_t hi = kl_hist_bucket_high(i);
		ASSERT_GE(hi, v);
		ASSERT_LE(hi - v, v / 64 + 1);
		if (i > 0)
			ASSERT_LT(kl_hist_bucket_high(i - 1), v);
	}
}

TEST(hist_percentiles)
{
	static kl_hist h;
	kl_hist_init(&h);
	for (uint64_t v = 1; v <= 10000; v++)
		kl_hist_record(&h, v * 1000);
	ASSERT_EQ(h.count, 10000);
	ASSERT_EQ(h.min, 1000);
	ASSERT_EQ(h.max, 10000000);
	uint64_t p50 = kl_hist_percentile(&h, 50), p99 = kl_hist_percentile(&h, 99);
	ASSERT_GE(p50, 5000000 * 0.99);
	ASSERT_LE(p50, 5000000 * 1.01);
	ASSERT_GE(p99, 9900000 * 0.99);
	ASSERT_LE(p99, 9900000 * 1.01);
	ASSERT_EQ(kl_hist_percentile(&h, 100), 10000000);
	static kl_hist g;
	kl_hist_init(&g);
	kl_hist_record(&g, 7);
	kl_hist_merge(&g, &h);
	ASSERT_EQ(g.count, 10001);
	ASSERT_EQ(g.min, 7);
}

TEST(tail_keeps_last_bytes)
{
	kl_tail t;
	kl_tail_init(&t, 10);
	kl_tail_write(&t, "hello", 5);
	ASSERT(!kl_tail_truncated(&t));
	kl_tail_write(&t, " world!", 7);
	ASSERT(kl_tail_truncated(&t));
	ASSERT_EQ(t.total, 12);
	ASSERT_EQ(t.len, 10);
	char out[11] = {0};
	kl_tail_copy(&t, (uint8_t *)out);
	ASSERT_STR_EQ(out, "llo world!");
	for (int i = 0; i < 1000; i++)
		kl_tail_write(&t, "0123456789abc", 13);
	kl_tail_copy(&t, (uint8_t *)out);
	ASSERT_STR_EQ(out, "3456789abc");
	ASSERT_EQ(t.total, 12 + 13000);
	kl_tail_fini(&t);
}

TEST(tail_memory_is_bounded)
{
	kl_tail t;
	kl_tail_init(&t, 1 << 16);
	char buf[4096];
	memset(buf, 'y', sizeof buf);
	for (int i = 0; i < 10000; i++)
		kl_tail_write(&t, buf, sizeof buf);
	ASSERT_EQ(t.alloc, 1 << 16);
	ASSERT_EQ(t.len, 1 << 16);
	ASSERT_EQ(t.total, 4096ull * 10000);
	kl_tail_fini(&t);
}

TEST(envelope_round_trip_and_version)
{
	Kiln__Cancel c = KILN__CANCEL__INIT;
	c.job_id = 42;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CANCEL;
	w.cancel = &c;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_WORK;
	e.node_work = &w;
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode(&e, &buf, &len), 0);
	ASSERT_EQ(kl_env_peek_version(buf, len), KL_PROTO_VERSION);
	Kiln__Envelope *d = NULL;
	uint32_t v = 0;
	ASSERT_EQ(kl_env_decode(buf, len, KL_MAX_MSG, &d, &v), 0);
	ASSERT_EQ(d->node_work->cancel->job_id, 42);
	kiln__envelope__free_unpacked(d, NULL);
	/* Too large for the limit. */
	ASSERT_EQ(kl_env_decode(buf, len, len - 1, &d, &v), -EMSGSIZE);
	/* A future version is refused before parsing, and named. */
	buf[1] = 7;
	ASSERT_EQ(kl_env_decode(buf, len, KL_MAX_MSG, &d, &v), -EPROTO);
	ASSERT_EQ(v, 7);
	free(buf);
	/* Garbage. */
	uint8_t junk[] = {0x08, 0x01, 0xff, 0xff, 0xff};
	ASSERT_EQ(kl_env_decode(junk, sizeof junk, KL_MAX_MSG, &d, &v), -EBADMSG);
	/* Version only, no body. */
	uint8_t empty[] = {0x08, 0x01};
	ASSERT_EQ(kl_env_decode(empty, sizeof empty, KL_MAX_MSG, &d, &v), -EBADMSG);
	/* Missing version = 0 = mismatch. */
	ASSERT_EQ(kl_env_decode("", 0, KL_MAX_MSG, &d, &v), -EPROTO);
	ASSERT_EQ(v, 0);
}

/* Regression (fuzz_envelope): a second version field (protobuf keeps the
 * last) slipped past the check, which reads only the first. */
TEST(envelope_repeated_version_refused)
{
	Kiln__Cancel c = KILN__CANCEL__INIT;
	Kiln__NodeWork w = KILN__NODE_WORK__INIT;
	w.work_case = KILN__NODE_WORK__WORK_CANCEL;
	w.cancel = &c;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_NODE_WORK;
	e.node_work = &w;
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode(&e, &buf, &len), 0);
	uint8_t *two = malloc(len + 2);
	memcpy(two, buf, len);
	two[len] = 0x08; /* field 1, varint: version 7 */
	two[len + 1] = 7;
	Kiln__Envelope *d = NULL;
	uint32_t v = 0;
	ASSERT_EQ(kl_env_decode(two, len + 2, KL_MAX_MSG, &d, &v), -EPROTO);
	ASSERT_EQ(v, 7);
	ASSERT(d == NULL);
	free(two);
	free(buf);
}

/* Regression (fuzz_envelope): protobuf-c took a field number 0 written as a
 * multi-byte tag and kept it as an unknown field that packs back into bytes
 * no parser accepts, so a client's call could be forwarded to a node that
 * cannot decode it. Unknown fields with real numbers still pass. */
TEST(envelope_field_zero_refused)
{
	/* Envelope{version 1, node_work{cancel{job_id 42, <unknown fixed64>}}} */
	uint8_t msg[] = {0x08, 0x01, 0xf2, 0x01, 16, 0x22, 14, 0x08, 0x2a, 0x81, 0x80,
	                 0x80, 0x00, 1,    2,    3,  4,    5,  6,    7,    8};
	Kiln__Envelope *d = NULL;
	ASSERT_EQ(kl_env_decode(msg, sizeof msg, KL_MAX_MSG, &d, NULL), -EBADMSG);
	ASSERT(d == NULL);
	msg[9] = 0xf9; /* the same tag for field 15: a legitimate unknown field */
	ASSERT_EQ(kl_env_decode(msg, sizeof msg, KL_MAX_MSG, &d, NULL), 0);
	ASSERT_EQ(d->node_work->cancel->job_id, 42);
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode(d, &buf, &len), 0); /* and it survives a round trip */
	kiln__envelope__free_unpacked(d, NULL);
	ASSERT_EQ(kl_env_decode(buf, len, KL_MAX_MSG, &d, NULL), 0);
	ASSERT_EQ(d->node_work->cancel->job_id, 42);
	kiln__envelope__free_unpacked(d, NULL);
	free(buf);
}

TEST(consttime_eq)
{
	ASSERT(kl_consttime_eq("abc", 3, "abc", 3));
	ASSERT(!kl_consttime_eq("abc", 3, "abd", 3));
	ASSERT(!kl_consttime_eq("abc", 3, "abcd", 4));
	ASSERT(!kl_consttime_eq("", 0, "a", 1));
}

TEST(code_names)
{
	ASSERT_STR_EQ(kl_code_name(KILN__CODE__NODE_LOST), "NODE_LOST");
	ASSERT_EQ(kl_code_from_name("RESOURCE_EXHAUSTED"), KILN__CODE__RESOURCE_EXHAUSTED);
	ASSERT_EQ(kl_code_from_name("nope"), -1);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
