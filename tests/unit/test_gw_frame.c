/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for scheduler/gateway/gw_frame.c: the header's byte layout, the
 * per-type validation table (lengths, flags, stream 0 or not, the reserved
 * bit, unknown critical and ignorable types), whole-frame splitting, HELLO
 * settings with every refusal, OPEN kinds and their headers, WINDOW_UPDATE,
 * RST and GOAWAY texts (control characters never reach a log), encoder
 * bounds, and the message framing of CONTROL and WORK streams.
 */
#include "test.h"

#include <errno.h>

#include "gw_frame.h"

TEST(header_layout)
{
	uint8_t b[GW_HDR_LEN];
	gw_fhdr_encode(b, 0x01020304, GW_T_DATA, GW_F_FIN, 0x05060708);
	const uint8_t want[] = {1, 2, 3, 4, 0x01, 0x01, 5, 6, 7, 8};
	ASSERT_EQ(memcmp(b, want, sizeof want), 0);
	struct gw_fhdr h;
	gw_fhdr_parse(b, &h);
	ASSERT_EQ(h.len, 0x01020304);
	ASSERT_EQ(h.type, GW_T_DATA);
	ASSERT_EQ(h.flags, GW_F_FIN);
	ASSERT_EQ(h.sid, 0x05060708);
}

struct hcase {
	uint32_t len;
	uint8_t type, flags;
	uint32_t sid;
	int want;      /* 0, 1 (skip) or -EPROTO */
	uint32_t code; /* when -EPROTO */
	const char *why;
};

TEST(header_rules)
{
	static const struct hcase cases[] = {
	        {16384, GW_T_DATA, 0, 1, 0, 0, NULL},
	        {16385, GW_T_DATA, 0, 1, -EPROTO, GW_E_FRAME_SIZE, "DATA frame of 16385 bytes"},
	        {0, GW_T_DATA, GW_F_FIN, 3, 0, 0, NULL},
	        {0, GW_T_DATA, 0, 3, -EPROTO, GW_E_PROTOCOL, "empty DATA frame without FIN"},
	        {10, GW_T_DATA, 0, 0, -EPROTO, GW_E_PROTOCOL, "DATA frame on stream 0"},
	        {10, GW_T_DATA, 0x02, 1, -EPROTO, GW_E_PROTOCOL, "undefined flags 0x02"},
	        {10, GW_T_DATA, 0, 0x80000001u, -EPROTO, GW_E_PROTOCOL, "reserved stream id bit"},
	        {8, GW_T_PING, 0, 0, 0, 0, NULL},
	        {9, GW_T_PING, 0, 0, -EPROTO, GW_E_FRAME_SIZE, "exceeds the limit of 8"},
	        {7, GW_T_PONG, 0, 0, -EPROTO, GW_E_FRAME_SIZE, "shorter than 8"},
	        {8, GW_T_PING, 0, 1, -EPROTO, GW_E_PROTOCOL, "PING frame on stream 1 (must be 0)"},
	        {8, GW_T_PING, GW_F_FIN, 0, -EPROTO, GW_E_PROTOCOL, "undefined flags"},
	        {0xffffffffu, GW_T_PING, 0, 0, -EPROTO, GW_E_FRAME_SIZE, "4294967295 bytes"},
	        {4, GW_T_WINDOW, 0, 0, 0, 0, NULL},
	        {4, GW_T_WINDOW, 0, 7, 0, 0, NULL},
	        {5, GW_T_WINDOW, 0, 7, -EPROTO, GW_E_FRAME_SIZE, "WINDOW_UPDATE frame of 5"},
	        {4, GW_T_RST, 0, 0, -EPROTO, GW_E_PROTOCOL, "RST frame on stream 0"},
	        {4 + GW_MSG_MAX, GW_T_RST, 0, 1, 0, 0, NULL},
	        {5 + GW_MSG_MAX, GW_T_RST, 0, 1, -EPROTO, GW_E_FRAME_SIZE, "RST frame of 517"},
	        {8, GW_T_GOAWAY, 0, 0, 0, 0, NULL},
	        {8, GW_T_GOAWAY, 0, 2, -EPROTO, GW_E_PROTOCOL, "GOAWAY frame on stream 2"},
	        {GW_HELLO_MAX, GW_T_HELLO, 0, 0, 0, 0, NULL},
	        {GW_HELLO_MAX + 1, GW_T_HELLO, 0, 0, -EPROTO, GW_E_FRAME_SIZE,
	         "HELLO frame of 4097"},
	        {0, GW_T_OPEN, 0, 1, -EPROTO, GW_E_FRAME_SIZE, "OPEN frame of 0 bytes"},
	        {1 + GW_META_MAX, GW_T_OPEN, GW_F_FIN, 1, 0, 0, NULL},
	        {2 + GW_META_MAX, GW_T_OPEN, 0, 1, -EPROTO, GW_E_FRAME_SIZE, "OPEN frame of 1026"},
	        {100, 0x09, 0, 0, -EPROTO, GW_E_PROTOCOL, "unknown frame type 0x09"},
	        {100, 0x7f, 0, 5, -EPROTO, GW_E_PROTOCOL, "unknown frame type 0x7f"},
	        {100, 0x85, 0xff, 5, 1, 0, NULL},
	        {16385, 0x85, 0, 5, -EPROTO, GW_E_FRAME_SIZE, "ignorable frame type 0x85"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct hcase *c = &cases[i];
		struct gw_fhdr h = {c->len, c->type, c->flags, c->sid};
		struct gw_err e = {0};
		int r = gw_fhdr_check(&h, 16384, &e);
		if (r != c->want)
			KT_FAIL("case %zu: got %d, want %d (%s)", i, r, c->want, e.msg);
		if (c->want < 0) {
			ASSERT_EQ(e.code, c->code);
			ASSERT_CONTAINS(e.msg, c->why);
		}
	}
}

TEST(frame_split)
{
	uint8_t b[64];
	int n1 = gw_ping_encode(b, sizeof b, GW_T_PING, 0x1122334455667788ull);
	ASSERT_EQ(n1, 18);
	int n2 = gw_window_encode(b + n1, sizeof b - (size_t)n1, 3, 4096);
	ASSERT_EQ(n2, 14);
	struct gw_frame f;
	struct gw_err e;
	for (int k = 0; k < n1; k++)
		ASSERT_EQ(gw_frame_decode(b, (size_t)k, 16384, &f, &e), 0);
	ASSERT_EQ(gw_frame_decode(b, (size_t)(n1 + n2), 16384, &f, &e), n1);
	ASSERT_EQ(f.h.type, GW_T_PING);
	ASSERT_EQ(gw_get64(f.payload), 0x1122334455667788ll);
	ASSERT_EQ(gw_frame_decode(b + n1, (size_t)n2, 16384, &f, &e), n2);
	ASSERT_EQ(f.h.type, GW_T_WINDOW);
	ASSERT_EQ(f.h.sid, 3);
	uint32_t inc = 0;
	ASSERT_EQ(gw_window_decode(f.payload, f.h.len, &inc, &e), 0);
	ASSERT_EQ(inc, 4096);
	/* A bad header is refused as soon as its 10 bytes are there. */
	gw_fhdr_encode(b, 1u << 30, GW_T_DATA, 0, 1);
	ASSERT_EQ(gw_frame_decode(b, GW_HDR_LEN, 16384, &f, &e), -EPROTO);
	ASSERT_EQ(e.code, GW_E_FRAME_SIZE);
}

static int
hello_rt(const struct gw_hello *in, struct gw_hello *out, struct gw_err *e)
{
	uint8_t b[GW_HDR_LEN + GW_HELLO_MAX];
	int n = gw_hello_encode(b, sizeof b, in);
	ASSERT_GT(n, GW_HDR_LEN);
	struct gw_frame f;
	ASSERT_EQ(gw_frame_decode(b, (size_t)n, 16384, &f, e), n);
	ASSERT_EQ(f.h.type, GW_T_HELLO);
	ASSERT_EQ(f.h.sid, 0);
	return gw_hello_decode(f.payload, f.h.len, out, e);
}

TEST(hello_round_trip)
{
	struct gw_hello h, o;
	struct gw_err e;
	gw_hello_init(&h, GW_ROLE_GATEWAY);
	h.flags = GW_HELLO_F_RESUME;
	h.max_frame = 65536;
	h.stream_window = 2u << 20;
	h.conn_window = 32u << 20;
	h.max_streams = 77;
	h.ping_interval_ms = 20000;
	h.epoch = 0x0102030405060708ull;
	h.token_len = GW_TOKEN_MAX;
	for (unsigned i = 0; i < GW_TOKEN_MAX; i++)
		h.token[i] = (uint8_t)(i * 7);
	ASSERT_EQ(hello_rt(&h, &o, &e), 0);
	ASSERT_EQ(o.version, GW_VERSION);
	ASSERT_EQ(o.role, GW_ROLE_GATEWAY);
	ASSERT_EQ(o.flags, GW_HELLO_F_RESUME);
	ASSERT_EQ(o.max_frame, 65536);
	ASSERT_EQ(o.stream_window, 2u << 20);
	ASSERT_EQ(o.conn_window, 32u << 20);
	ASSERT_EQ(o.max_streams, 77);
	ASSERT_EQ(o.ping_interval_ms, 20000);
	ASSERT_EQ(o.epoch, 0x0102030405060708ll);
	ASSERT_EQ(o.token_len, GW_TOKEN_MAX);
	ASSERT_EQ(memcmp(o.token, h.token, GW_TOKEN_MAX), 0);
	/* No token: none on the wire, none decoded. */
	gw_hello_init(&h, GW_ROLE_PLANE);
	ASSERT_EQ(hello_rt(&h, &o, &e), 0);
	ASSERT_EQ(o.role, GW_ROLE_PLANE);
	ASSERT_EQ(o.token_len, 0);
	ASSERT_EQ(o.epoch, 0);
	ASSERT_EQ(o.max_frame, GW_FRAME_DEFAULT);
	/* The encoder refuses what the decoder would. */
	uint8_t b[64];
	h.role = 9;
	ASSERT_EQ(gw_hello_encode(b, sizeof(b), &h), -EINVAL);
	h.role = GW_ROLE_PLANE;
	ASSERT_EQ(gw_hello_encode(b, 20, &h), -ENOBUFS);
}

/* A HELLO payload: the fixed part and then raw TLV bytes. */
static size_t
hello_raw(uint8_t *p, const char *magic, uint16_t version, uint8_t role, uint8_t flags,
          const uint8_t *tlv, size_t tlvlen)
{
	memcpy(p, magic, 4);
	p[4] = (uint8_t)(version >> 8);
	p[5] = (uint8_t)version;
	p[6] = role;
	p[7] = flags;
	if (tlvlen)
		memcpy(p + 8, tlv, tlvlen);
	return 8 + tlvlen;
}

static void
hello_refused(const uint8_t *tlv, size_t tlvlen, uint32_t code, const char *why)
{
	uint8_t p[600];
	struct gw_hello o;
	struct gw_err e = {0};
	size_t n = hello_raw(p, GW_MAGIC, 1, GW_ROLE_GATEWAY, 0, tlv, tlvlen);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), -EPROTO);
	ASSERT_EQ(e.code, code);
	ASSERT_CONTAINS(e.msg, why);
}

TEST(hello_hostile)
{
	uint8_t p[600];
	struct gw_hello o;
	struct gw_err e;
	size_t n = hello_raw(p, "HTTP", 1, GW_ROLE_GATEWAY, 0, NULL, 0);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), -EPROTO);
	ASSERT_CONTAINS(e.msg, "magic");
	n = hello_raw(p, GW_MAGIC, 0, GW_ROLE_GATEWAY, 0, NULL, 0);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), -EPROTO);
	ASSERT_EQ(e.code, GW_E_VERSION);
	n = hello_raw(p, GW_MAGIC, 1, 3, 0, NULL, 0);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), -EPROTO);
	ASSERT_CONTAINS(e.msg, "unknown role 3");
	n = hello_raw(p, GW_MAGIC, 1, GW_ROLE_PLANE, 0x80, NULL, 0);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), -EPROTO);
	ASSERT_CONTAINS(e.msg, "undefined flags 0x80");
	ASSERT_EQ(gw_hello_decode(p, 7, &o, &e), -EPROTO);
	/* A later version is accepted: the connection runs at ours. */
	n = hello_raw(p, GW_MAGIC, 2, GW_ROLE_PLANE, 0, NULL, 0);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), 0);
	ASSERT_EQ(o.version, 2);

	const uint8_t cut_hdr[] = {0, 1, 0};
	hello_refused(cut_hdr, sizeof cut_hdr, GW_E_PROTOCOL, "setting header cut at byte 8");
	const uint8_t long_val[] = {0, 1, 0, 8, 0, 0};
	hello_refused(long_val, sizeof long_val, GW_E_PROTOCOL, "claims 8 bytes, 2 remain");
	const uint8_t dup[] = {0, 4, 0, 4, 0, 0, 0, 9, 0, 4, 0, 4, 0, 0, 0, 9};
	hello_refused(dup, sizeof dup, GW_E_PROTOCOL, "repeats setting 0x0004");
	const uint8_t small_frame[] = {0, 1, 0, 4, 0, 0, 0x0f, 0xff};
	hello_refused(small_frame, sizeof small_frame, GW_E_PROTOCOL, "max frame 4095 outside");
	const uint8_t big_frame[] = {0, 1, 0, 4, 0, 0x10, 0, 1};
	hello_refused(big_frame, sizeof big_frame, GW_E_PROTOCOL, "max frame 1048577 outside");
	const uint8_t win0[] = {0, 2, 0, 4, 0, 0, 0, 0};
	hello_refused(win0, sizeof win0, GW_E_PROTOCOL, "stream window 0 outside");
	const uint8_t win31[] = {0, 3, 0, 4, 0x80, 0, 0, 0};
	hello_refused(win31, sizeof win31, GW_E_PROTOCOL, "connection window 2147483648");
	const uint8_t short32[] = {0, 5, 0, 2, 0, 1};
	hello_refused(short32, sizeof short32, GW_E_PROTOCOL, "has 2 bytes, not 4");
	const uint8_t epoch4[] = {0, 0x10, 0, 4, 0, 0, 0, 1};
	hello_refused(epoch4, sizeof epoch4, GW_E_PROTOCOL, "epoch has 4 bytes");
	uint8_t tok[4 + 257] = {0, 0x11, 0x01, 0x01};
	hello_refused(tok, sizeof tok, GW_E_PROTOCOL, "token of 257 bytes");
	const uint8_t streams0[] = {0, 4, 0, 4, 0, 0, 0, 0};
	hello_refused(streams0, sizeof streams0, GW_E_PROTOCOL, "max streams 0");

	/* Unknown settings are skipped, known ones after them still count. */
	const uint8_t unknown[] = {0x12, 0x34, 0, 3, 9, 9, 9, 0, 4, 0, 4, 0, 0, 0, 5};
	n = hello_raw(p, GW_MAGIC, 1, GW_ROLE_GATEWAY, 0, unknown, sizeof unknown);
	ASSERT_EQ(gw_hello_decode(p, n, &o, &e), 0);
	ASSERT_EQ(o.max_streams, 5);
}

static void
open_refused(uint8_t kind, const void *meta, size_t len, uint32_t code, const char *why)
{
	uint8_t p[GW_META_MAX + 2];
	struct gw_open o;
	struct gw_err e = {0};
	p[0] = kind;
	if (len)
		memcpy(p + 1, meta, len);
	ASSERT_EQ(gw_open_decode(p, 1 + len, &o, &e), -EPROTO);
	ASSERT_EQ(e.code, code);
	ASSERT_CONTAINS(e.msg, why);
	uint8_t f[GW_HDR_LEN + GW_META_MAX + 2];
	ASSERT_EQ(gw_open_encode(f, sizeof f, 1, 0, kind, meta, len), -EINVAL);
}

TEST(open_kinds)
{
	uint8_t f[64];
	struct gw_frame fr;
	struct gw_open o;
	struct gw_err e;
	const uint8_t job[] = {0, 0, 0, 0, 0, 0, 0x30, 0x39, 'x'};
	int n = gw_open_encode(f, sizeof f, 7, GW_F_FIN, GW_KIND_WORK, job, sizeof job);
	ASSERT_EQ(n, GW_HDR_LEN + 1 + 9);
	ASSERT_EQ(gw_frame_decode(f, (size_t)n, 16384, &fr, &e), n);
	ASSERT_EQ(fr.h.flags, GW_F_FIN);
	ASSERT_EQ(gw_open_decode(fr.payload, fr.h.len, &o, &e), 0);
	ASSERT_EQ(o.kind, GW_KIND_WORK);
	ASSERT_EQ(o.meta_len, 9);
	ASSERT_EQ(gw_get64(o.meta), 12345);
	n = gw_open_encode(f, sizeof f, 1, 0, GW_KIND_MCP, "git.internal-1_a", 16);
	ASSERT_EQ(gw_frame_decode(f, (size_t)n, 16384, &fr, &e), n);
	ASSERT_EQ(gw_open_decode(fr.payload, fr.h.len, &o, &e), 0);
	ASSERT_EQ(o.kind, GW_KIND_MCP);
	ASSERT_EQ(memcmp(o.meta, "git.internal-1_a", 16), 0);
	n = gw_open_encode(f, sizeof f, 1, 0, GW_KIND_CONTROL, NULL, 0);
	ASSERT_EQ(n, GW_HDR_LEN + 1);

	open_refused(GW_KIND_CONTROL, "x", 1, GW_E_PROTOCOL, "CONTROL stream with a 1-byte");
	open_refused(GW_KIND_WORK, "1234567", 7, GW_E_PROTOCOL, "lacks the job id");
	open_refused(GW_KIND_MCP, "a/b", 3, GW_E_PROTOCOL, "byte 0x2f at 1");
	open_refused(GW_KIND_MCP, "a\nb", 3, GW_E_PROTOCOL, "byte 0x0a at 1");
	char longname[GW_ROUTE_MAX + 1];
	memset(longname, 'a', sizeof longname);
	open_refused(GW_KIND_MCP, longname, sizeof longname, GW_E_PROTOCOL, "65 bytes");
	open_refused(GW_KIND_MCP, NULL, 0, GW_E_PROTOCOL, "0 bytes");
	open_refused(9, NULL, 0, GW_E_REFUSED, "unknown stream kind 9");
	open_refused(0, NULL, 0, GW_E_REFUSED, "unknown stream kind 0");
	ASSERT_EQ(gw_open_encode(f, sizeof f, 0, 0, GW_KIND_CONTROL, NULL, 0), -EINVAL);
	ASSERT_EQ(gw_open_encode(f, sizeof f, 1, 0x02, GW_KIND_CONTROL, NULL, 0), -EINVAL);
	ASSERT_EQ(gw_open_encode(f, 10, 1, 0, GW_KIND_CONTROL, NULL, 0), -ENOBUFS);
	ASSERT_EQ(gw_open_decode(f, 0, &o, &e), -EPROTO);
}

TEST(window_values)
{
	uint8_t p[4];
	uint32_t inc = 99;
	struct gw_err e;
	gw_put32(p, 0);
	ASSERT_EQ(gw_window_decode(p, 4, &inc, &e), -EPROTO);
	ASSERT_CONTAINS(e.msg, "increment 0 outside");
	ASSERT_EQ(inc, 99); /* outputs only on success */
	gw_put32(p, 0x80000000u);
	ASSERT_EQ(gw_window_decode(p, 4, &inc, &e), -EPROTO);
	gw_put32(p, 0x7fffffffu);
	ASSERT_EQ(gw_window_decode(p, 4, &inc, &e), 0);
	ASSERT_EQ(inc, 0x7fffffff);
	ASSERT_EQ(gw_window_decode(p, 3, &inc, &e), -EPROTO);
	uint8_t f[32];
	ASSERT_EQ(gw_window_encode(f, sizeof f, 0, 0), -EINVAL);
	ASSERT_EQ(gw_window_encode(f, sizeof f, 0, 0x80000000u), -EINVAL);
	ASSERT_EQ(gw_window_encode(f, 13, 0, 1), -ENOBUFS);
}

TEST(rst_goaway_text)
{
	uint8_t f[GW_HDR_LEN + 8 + GW_MSG_MAX];
	struct gw_frame fr;
	struct gw_err e;
	char msg[GW_MSG_MAX + 1];
	uint32_t code = 0, last = 0;
	int n = gw_rst_encode(f, sizeof f, 5, GW_E_CANCEL, "bye\nlog: injected\x1b[0m");
	ASSERT_EQ(gw_frame_decode(f, (size_t)n, 16384, &fr, &e), n);
	ASSERT_EQ(gw_rst_decode(fr.payload, fr.h.len, &code, msg, sizeof msg, &e), 0);
	ASSERT_EQ(code, GW_E_CANCEL);
	ASSERT_STR_EQ(msg, "bye?log: injected?[0m");
	/* Cut to the caller's buffer. */
	char small[4];
	ASSERT_EQ(gw_rst_decode(fr.payload, fr.h.len, &code, small, sizeof small, &e), 0);
	ASSERT_STR_EQ(small, "bye");
	/* Texts over GW_MSG_MAX are cut by the encoder, so frames stay valid. */
	char big[GW_MSG_MAX + 100];
	memset(big, 'z', sizeof big - 1);
	big[sizeof big - 1] = 0;
	n = gw_goaway_encode(f, sizeof f, 41, GW_E_INTERNAL, big);
	ASSERT_EQ(n, GW_HDR_LEN + 8 + GW_MSG_MAX);
	ASSERT_EQ(gw_frame_decode(f, (size_t)n, 16384, &fr, &e), n);
	ASSERT_EQ(gw_goaway_decode(fr.payload, fr.h.len, &last, &code, msg, sizeof msg, &e), 0);
	ASSERT_EQ(last, 41);
	ASSERT_EQ(code, GW_E_INTERNAL);
	ASSERT_EQ(strlen(msg), GW_MSG_MAX);
	gw_put32(f + GW_HDR_LEN, 0x80000000u);
	ASSERT_EQ(gw_goaway_decode(f + GW_HDR_LEN, 8, &last, &code, msg, sizeof msg, &e), -EPROTO);
	ASSERT_CONTAINS(e.msg, "reserved bit");
	ASSERT_EQ(gw_goaway_encode(f, sizeof f, 0x80000000u, 0, NULL), -EINVAL);
	ASSERT_EQ(gw_rst_encode(f, sizeof f, 0, 0, NULL), -EINVAL);
	ASSERT_EQ(gw_rst_encode(f, 15, 1, 0, "hi"), -ENOBUFS);
	ASSERT_EQ(gw_ping_encode(f, sizeof f, GW_T_DATA, 1), -EINVAL);
	ASSERT_EQ(gw_data_hdr_encode(f, sizeof f, 1, 0, 0), -EINVAL);
	ASSERT_EQ(gw_data_hdr_encode(f, sizeof f, 1, GW_F_FIN, 0), GW_HDR_LEN);
}

TEST(names)
{
	ASSERT_STR_EQ(gw_code_name(GW_E_NONE), "NO_ERROR");
	ASSERT_STR_EQ(gw_code_name(GW_E_FLOW_CONTROL), "FLOW_CONTROL_ERROR");
	ASSERT_STR_EQ(gw_code_name(GW_E_TIMEOUT), "TIMEOUT");
	ASSERT_STR_EQ(gw_code_name(11), "UNKNOWN_ERROR");
	ASSERT_STR_EQ(gw_code_name(GW_E_APP + 3), "APPLICATION_ERROR");
	ASSERT_STR_EQ(gw_type_name(GW_T_WINDOW), "WINDOW_UPDATE");
	ASSERT_STR_EQ(gw_type_name(0x90), "IGNORABLE");
	ASSERT_STR_EQ(gw_type_name(0x10), "UNKNOWN");
	ASSERT_STR_EQ(gw_kind_name(GW_KIND_MCP), "MCP");
}

TEST(ctl_messages)
{
	uint8_t b[256];
	struct gw_ctl_msg m = {0};
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, 3);
	const uint8_t hdr[] = {0, 0, 0, 3, 0, 1, 0, 0};
	ASSERT_EQ(memcmp(b, hdr, sizeof hdr), 0);
	memcpy(b + GW_CTL_HDR_LEN, "abc", 3);
	gw_ctl_hdr_encode(b + GW_CTL_HDR_LEN + 3, 0x8001, 0);
	for (size_t k = 0; k < GW_CTL_HDR_LEN + 3; k++)
		ASSERT_EQ(gw_ctl_parse(b, k, 0, &m), 0);
	ASSERT_EQ(m.len, 0); /* outputs only on success */
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, 0, &m), GW_CTL_HDR_LEN + 3);
	ASSERT_EQ(m.type, GW_CTL_ENVELOPE);
	ASSERT_EQ(m.len, 3);
	ASSERT_EQ(memcmp(m.body, "abc", 3), 0);
	ASSERT_EQ(gw_ctl_parse(b + GW_CTL_HDR_LEN + 3, GW_CTL_HDR_LEN, 0, &m), GW_CTL_HDR_LEN);
	ASSERT_EQ(m.type, 0x8001);
	ASSERT_EQ(m.len, 0);
	/* Limits: the caller's (default 1 MiB), never above GW_CTL_BODY_MAX. */
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, 2, &m), -EMSGSIZE);
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, GW_CTL_BODY_DEFAULT);
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, 0, &m), 0); /* allowed, incomplete */
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, GW_CTL_BODY_DEFAULT + 1);
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, 0, &m), -EMSGSIZE);
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, GW_CTL_BODY_MAX, &m), 0);
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, GW_CTL_BODY_MAX + 1);
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, 0xffffffffu, &m), -EMSGSIZE);
	gw_ctl_hdr_encode(b, GW_CTL_ENVELOPE, 0);
	b[7] = 1;
	ASSERT_EQ(gw_ctl_parse(b, sizeof b, 0, &m), -EBADMSG);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
