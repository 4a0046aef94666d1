/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encoding and hardened decoding of tunnel frames and CONTROL stream
 * messages (docs/tunnel.md is the specification this file implements).
 * Decoders never trust a length: every read is checked against the bytes
 * the caller holds, every field against the spec's range, and a refusal
 * always names the offending value.
 */
#include "gw_frame.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kl_util.h"

/* HELLO settings (TLV ids). */
enum {
	GW_S_MAX_FRAME = 0x0001,
	GW_S_STREAM_WINDOW = 0x0002,
	GW_S_CONN_WINDOW = 0x0003,
	GW_S_MAX_STREAMS = 0x0004,
	GW_S_PING_INTERVAL = 0x0005,
	GW_S_EPOCH = 0x0010,
	GW_S_TOKEN = 0x0011,
};

#define GW_HELLO_FIXED 8 /* magic, version, role, flags */

static int KL_PRINTF(3, 4) fail(struct gw_err *err, uint32_t code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return -EPROTO;
}

void
gw_fhdr_encode(uint8_t out[GW_HDR_LEN], uint32_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
	gw_put32(out, len);
	out[4] = type;
	out[5] = flags;
	gw_put32(out + 6, sid);
}

void
gw_fhdr_parse(const uint8_t buf[GW_HDR_LEN], struct gw_fhdr *ret)
{
	ret->len = gw_get32(buf);
	ret->type = buf[4];
	ret->flags = buf[5];
	ret->sid = gw_get32(buf + 6);
}

/* Per-type rules: payload bounds, allowed flags, whether the frame belongs to
 * a stream (sid != 0) or to the connection (sid == 0), or either (-1). */
struct type_rule {
	uint32_t min, max; /* max 0: DATA, bounded by the caller's max_data */
	uint8_t flags;
	int stream;
};

static const struct type_rule rules[] = {
        [GW_T_HELLO] = {GW_HELLO_FIXED, GW_HELLO_MAX, 0, 0},
        [GW_T_DATA] = {0, 0, GW_F_FIN, 1},
        [GW_T_OPEN] = {1, 1 + GW_META_MAX, GW_F_FIN, 1},
        [GW_T_WINDOW] = {4, 4, 0, -1},
        [GW_T_RST] = {4, 4 + GW_MSG_MAX, 0, 1},
        [GW_T_PING] = {8, 8, 0, 0},
        [GW_T_PONG] = {8, 8, 0, 0},
        [GW_T_GOAWAY] = {8, 8 + GW_MSG_MAX, 0, 0},
};

int
gw_fhdr_check(const struct gw_fhdr *h, uint32_t max_data, struct gw_err *err)
{
	if (h->sid > GW_SID_MAX)
		return fail(err, GW_E_PROTOCOL,
		            "%s frame with the reserved stream id bit set (0x%08x)",
		            gw_type_name(h->type), h->sid);
	if (h->type >= KL_ARRAY_SIZE(rules)) {
		if (!(h->type & GW_T_IGNORABLE))
			return fail(err, GW_E_PROTOCOL, "unknown frame type 0x%02x (%u bytes)",
			            h->type, h->len);
		if (h->len > max_data)
			return fail(err, GW_E_FRAME_SIZE,
			            "ignorable frame type 0x%02x of %u bytes exceeds %u", h->type,
			            h->len, max_data);
		return 1;
	}
	const struct type_rule *r = &rules[h->type];
	const char *name = gw_type_name(h->type);
	uint32_t max = r->max ? r->max : max_data;
	if (h->len > max)
		return fail(err, GW_E_FRAME_SIZE, "%s frame of %u bytes exceeds the limit of %u",
		            name, h->len, max);
	if (h->len < r->min)
		return fail(err, GW_E_FRAME_SIZE, "%s frame of %u bytes is shorter than %u", name,
		            h->len, r->min);
	if (h->flags & ~r->flags)
		return fail(err, GW_E_PROTOCOL, "%s frame with undefined flags 0x%02x", name,
		            h->flags & ~r->flags);
	if (r->stream == 0 && h->sid != 0)
		return fail(err, GW_E_PROTOCOL, "%s frame on stream %u (must be 0)", name, h->sid);
	if (r->stream == 1 && h->sid == 0)
		return fail(err, GW_E_PROTOCOL, "%s frame on stream 0", name);
	if (h->type == GW_T_DATA && h->len == 0 && !(h->flags & GW_F_FIN))
		return fail(err, GW_E_PROTOCOL, "empty DATA frame without FIN on stream %u",
		            h->sid);
	return 0;
}

int
gw_frame_decode(const void *buf, size_t len, uint32_t max_data, struct gw_frame *ret,
                struct gw_err *err)
{
	struct gw_fhdr h;
	if (len < GW_HDR_LEN)
		return 0;
	gw_fhdr_parse(buf, &h);
	int r = gw_fhdr_check(&h, max_data, err);
	if (r < 0)
		return r;
	if (len - GW_HDR_LEN < h.len)
		return 0;
	ret->h = h;
	ret->payload = (const uint8_t *)buf + GW_HDR_LEN;
	return (int)(GW_HDR_LEN + h.len);
}

/* ---- HELLO ---- */

void
gw_hello_init(struct gw_hello *h, uint8_t role)
{
	memset(h, 0, sizeof *h);
	h->version = GW_VERSION;
	h->role = role;
	h->max_frame = GW_FRAME_DEFAULT;
	h->stream_window = GW_STREAM_WINDOW_DEFAULT;
	h->conn_window = GW_CONN_WINDOW_DEFAULT;
	h->max_streams = GW_MAX_STREAMS_DEFAULT;
	h->ping_interval_ms = 15000;
}

static int
hello_setting(struct gw_hello *h, uint16_t id, const uint8_t *v, uint16_t len, struct gw_err *err)
{
	uint32_t x;
	switch (id) {
	case GW_S_MAX_FRAME:
	case GW_S_STREAM_WINDOW:
	case GW_S_CONN_WINDOW:
	case GW_S_MAX_STREAMS:
	case GW_S_PING_INTERVAL:
		if (len != 4)
			return fail(err, GW_E_PROTOCOL, "HELLO setting 0x%04x has %u bytes, not 4",
			            id, len);
		x = gw_get32(v);
		break;
	case GW_S_EPOCH:
		if (len != 8)
			return fail(err, GW_E_PROTOCOL, "HELLO epoch has %u bytes, not 8", len);
		h->epoch = gw_get64(v);
		return 0;
	case GW_S_TOKEN:
		if (len > GW_TOKEN_MAX)
			return fail(err, GW_E_PROTOCOL,
			            "HELLO session token of %u bytes exceeds %u", len,
			            GW_TOKEN_MAX);
		memcpy(h->token, v, len);
		h->token_len = len;
		return 0;
	default:
		return 0; /* unknown settings are ignored: that is how settings are added */
	}
	switch (id) {
	case GW_S_MAX_FRAME:
		if (x < GW_FRAME_MIN || x > GW_FRAME_MAX)
			return fail(err, GW_E_PROTOCOL, "HELLO max frame %u outside [%u, %u]", x,
			            GW_FRAME_MIN, GW_FRAME_MAX);
		h->max_frame = x;
		break;
	case GW_S_STREAM_WINDOW:
	case GW_S_CONN_WINDOW:
		if (x < GW_WINDOW_MIN || x > GW_WINDOW_MAX)
			return fail(err, GW_E_PROTOCOL, "HELLO %s window %u outside [%u, %u]",
			            id == GW_S_STREAM_WINDOW ? "stream" : "connection", x,
			            GW_WINDOW_MIN, GW_WINDOW_MAX);
		if (id == GW_S_STREAM_WINDOW)
			h->stream_window = x;
		else
			h->conn_window = x;
		break;
	case GW_S_MAX_STREAMS:
		if (x < 1)
			return fail(err, GW_E_PROTOCOL, "HELLO max streams 0");
		h->max_streams = x;
		break;
	default:
		h->ping_interval_ms = x;
		break;
	}
	return 0;
}

int
gw_hello_decode(const uint8_t *p, size_t n, struct gw_hello *ret, struct gw_err *err)
{
	struct gw_hello h;
	if (n < GW_HELLO_FIXED || memcmp(p, GW_MAGIC, 4))
		return fail(err, GW_E_PROTOCOL,
		            "HELLO without the \"" GW_MAGIC
		            "\" magic: the peer does not speak the kiln tunnel");
	gw_hello_init(&h, p[6]);
	h.version = (uint16_t)(p[4] << 8 | p[5]);
	h.flags = p[7];
	if (h.version == 0)
		return fail(err, GW_E_VERSION, "HELLO with version 0 (we speak %u)", GW_VERSION);
	if (h.role != GW_ROLE_GATEWAY && h.role != GW_ROLE_PLANE)
		return fail(err, GW_E_PROTOCOL, "HELLO with unknown role %u", h.role);
	if (h.flags & ~GW_HELLO_F_RESUME)
		return fail(err, GW_E_PROTOCOL, "HELLO with undefined flags 0x%02x",
		            h.flags & ~GW_HELLO_F_RESUME);
	uint64_t seen = 0; /* bit per known setting id, to refuse duplicates */
	for (size_t off = GW_HELLO_FIXED; off < n;) {
		if (n - off < 4)
			return fail(err, GW_E_PROTOCOL, "HELLO setting header cut at byte %zu",
			            off);
		uint16_t id = (uint16_t)(p[off] << 8 | p[off + 1]);
		uint16_t len = (uint16_t)(p[off + 2] << 8 | p[off + 3]);
		off += 4;
		if (len > n - off)
			return fail(err, GW_E_PROTOCOL,
			            "HELLO setting 0x%04x claims %u bytes, %zu remain", id, len,
			            n - off);
		if (id < 64) {
			if (seen & (1ull << id))
				return fail(err, GW_E_PROTOCOL, "HELLO repeats setting 0x%04x", id);
			seen |= 1ull << id;
		}
		int r = hello_setting(&h, id, p + off, len, err);
		if (r < 0)
			return r;
		off += len;
	}
	*ret = h;
	return 0;
}

static uint8_t *
put_tlv32(uint8_t *q, uint16_t id, uint32_t v)
{
	q[0] = (uint8_t)(id >> 8);
	q[1] = (uint8_t)id;
	q[2] = 0;
	q[3] = 4;
	gw_put32(q + 4, v);
	return q + 8;
}

int
gw_hello_encode(uint8_t *out, size_t cap, const struct gw_hello *h)
{
	if (h->token_len > GW_TOKEN_MAX || h->flags & ~GW_HELLO_F_RESUME ||
	    (h->role != GW_ROLE_GATEWAY && h->role != GW_ROLE_PLANE))
		return -EINVAL;
	size_t n = GW_HELLO_FIXED + 5 * 8 + 12 + (h->token_len ? 4u + h->token_len : 0);
	if (cap < GW_HDR_LEN + n)
		return -ENOBUFS;
	gw_fhdr_encode(out, (uint32_t)n, GW_T_HELLO, 0, 0);
	uint8_t *q = out + GW_HDR_LEN;
	memcpy(q, GW_MAGIC, 4);
	q[4] = (uint8_t)(h->version >> 8);
	q[5] = (uint8_t)h->version;
	q[6] = h->role;
	q[7] = h->flags;
	q += GW_HELLO_FIXED;
	q = put_tlv32(q, GW_S_MAX_FRAME, h->max_frame);
	q = put_tlv32(q, GW_S_STREAM_WINDOW, h->stream_window);
	q = put_tlv32(q, GW_S_CONN_WINDOW, h->conn_window);
	q = put_tlv32(q, GW_S_MAX_STREAMS, h->max_streams);
	q = put_tlv32(q, GW_S_PING_INTERVAL, h->ping_interval_ms);
	q[0] = 0;
	q[1] = GW_S_EPOCH;
	q[2] = 0;
	q[3] = 8;
	gw_put64(q + 4, h->epoch);
	q += 12;
	if (h->token_len) {
		q[0] = 0;
		q[1] = GW_S_TOKEN;
		q[2] = (uint8_t)(h->token_len >> 8);
		q[3] = (uint8_t)h->token_len;
		memcpy(q + 4, h->token, h->token_len);
	}
	return (int)(GW_HDR_LEN + n);
}

/* ---- OPEN ---- */

int
gw_open_check(uint8_t kind, const void *meta, size_t meta_len, struct gw_err *err)
{
	const uint8_t *m = meta;
	if (meta_len > GW_META_MAX)
		return fail(err, GW_E_PROTOCOL, "OPEN header of %zu bytes exceeds %u", meta_len,
		            GW_META_MAX);
	switch (kind) {
	case GW_KIND_CONTROL:
		if (meta_len)
			return fail(err, GW_E_PROTOCOL, "CONTROL stream with a %zu-byte header",
			            meta_len);
		return 0;
	case GW_KIND_WORK:
		if (meta_len < 8)
			return fail(err, GW_E_PROTOCOL,
			            "WORK stream header of %zu bytes lacks the job id", meta_len);
		return 0;
	case GW_KIND_MCP:
		if (meta_len < 1 || meta_len > GW_ROUTE_MAX)
			return fail(err, GW_E_PROTOCOL, "MCP route name of %zu bytes (1..%u)",
			            meta_len, GW_ROUTE_MAX);
		for (size_t i = 0; i < meta_len; i++) {
			uint8_t c = m[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
				return fail(err, GW_E_PROTOCOL,
				            "MCP route name with byte 0x%02x at %zu (allowed: "
				            "A-Z a-z 0-9 . _ -)",
				            c, i);
		}
		return 0;
	default:
		return fail(err, GW_E_REFUSED, "unknown stream kind %u", kind);
	}
}

int
gw_open_decode(const uint8_t *p, size_t n, struct gw_open *ret, struct gw_err *err)
{
	if (n < 1)
		return fail(err, GW_E_PROTOCOL, "OPEN without a kind");
	int r = gw_open_check(p[0], p + 1, n - 1, err);
	if (r < 0)
		return r;
	ret->kind = p[0];
	ret->meta = p + 1;
	ret->meta_len = n - 1;
	return 0;
}

int
gw_open_encode(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, uint8_t kind,
               const void *meta, size_t meta_len)
{
	if (sid == 0 || sid > GW_SID_MAX || flags & ~GW_F_FIN ||
	    gw_open_check(kind, meta, meta_len, NULL) < 0)
		return -EINVAL;
	if (cap < GW_HDR_LEN + 1 + meta_len)
		return -ENOBUFS;
	gw_fhdr_encode(out, (uint32_t)(1 + meta_len), GW_T_OPEN, flags, sid);
	out[GW_HDR_LEN] = kind;
	if (meta_len)
		memcpy(out + GW_HDR_LEN + 1, meta, meta_len);
	return (int)(GW_HDR_LEN + 1 + meta_len);
}

/* ---- WINDOW_UPDATE, RST, PING/PONG, GOAWAY ---- */

int
gw_window_decode(const uint8_t *p, size_t n, uint32_t *ret_inc, struct gw_err *err)
{
	if (n != 4)
		return fail(err, GW_E_FRAME_SIZE, "WINDOW_UPDATE of %zu bytes", n);
	uint32_t inc = gw_get32(p);
	if (inc == 0 || inc > GW_WINDOW_MAX)
		return fail(err, GW_E_PROTOCOL, "WINDOW_UPDATE increment %u outside [1, %u]", inc,
		            GW_WINDOW_MAX);
	*ret_inc = inc;
	return 0;
}

int
gw_window_encode(uint8_t *out, size_t cap, uint32_t sid, uint32_t inc)
{
	if (sid > GW_SID_MAX || inc == 0 || inc > GW_WINDOW_MAX)
		return -EINVAL;
	if (cap < GW_HDR_LEN + 4)
		return -ENOBUFS;
	gw_fhdr_encode(out, 4, GW_T_WINDOW, 0, sid);
	gw_put32(out + GW_HDR_LEN, inc);
	return GW_HDR_LEN + 4;
}

static void
copy_text(char *dst, size_t cap, const uint8_t *src, size_t n)
{
	if (!cap)
		return;
	if (n > cap - 1)
		n = cap - 1;
	for (size_t i = 0; i < n; i++)
		dst[i] = (src[i] < 0x20 || src[i] == 0x7f) ? '?' : (char)src[i];
	dst[n] = 0;
}

int
gw_rst_decode(const uint8_t *p, size_t n, uint32_t *ret_code, char *msg, size_t msgcap,
              struct gw_err *err)
{
	if (n < 4 || n > 4 + GW_MSG_MAX)
		return fail(err, GW_E_FRAME_SIZE, "RST of %zu bytes", n);
	*ret_code = gw_get32(p);
	copy_text(msg, msgcap, p + 4, n - 4);
	return 0;
}

int
gw_rst_encode(uint8_t *out, size_t cap, uint32_t sid, uint32_t code, const char *msg)
{
	size_t ml = msg ? strnlen(msg, GW_MSG_MAX) : 0;
	if (sid == 0 || sid > GW_SID_MAX)
		return -EINVAL;
	if (cap < GW_HDR_LEN + 4 + ml)
		return -ENOBUFS;
	gw_fhdr_encode(out, (uint32_t)(4 + ml), GW_T_RST, 0, sid);
	gw_put32(out + GW_HDR_LEN, code);
	if (ml)
		memcpy(out + GW_HDR_LEN + 4, msg, ml);
	return (int)(GW_HDR_LEN + 4 + ml);
}

int
gw_ping_encode(uint8_t *out, size_t cap, uint8_t type, uint64_t opaque)
{
	if (type != GW_T_PING && type != GW_T_PONG)
		return -EINVAL;
	if (cap < GW_HDR_LEN + 8)
		return -ENOBUFS;
	gw_fhdr_encode(out, 8, type, 0, 0);
	gw_put64(out + GW_HDR_LEN, opaque);
	return GW_HDR_LEN + 8;
}

int
gw_goaway_decode(const uint8_t *p, size_t n, uint32_t *ret_last, uint32_t *ret_code, char *msg,
                 size_t msgcap, struct gw_err *err)
{
	if (n < 8 || n > 8 + GW_MSG_MAX)
		return fail(err, GW_E_FRAME_SIZE, "GOAWAY of %zu bytes", n);
	uint32_t last = gw_get32(p);
	if (last > GW_SID_MAX)
		return fail(err, GW_E_PROTOCOL, "GOAWAY last stream id 0x%08x has the reserved bit",
		            last);
	*ret_last = last;
	*ret_code = gw_get32(p + 4);
	copy_text(msg, msgcap, p + 8, n - 8);
	return 0;
}

int
gw_goaway_encode(uint8_t *out, size_t cap, uint32_t last, uint32_t code, const char *msg)
{
	size_t ml = msg ? strnlen(msg, GW_MSG_MAX) : 0;
	if (last > GW_SID_MAX)
		return -EINVAL;
	if (cap < GW_HDR_LEN + 8 + ml)
		return -ENOBUFS;
	gw_fhdr_encode(out, (uint32_t)(8 + ml), GW_T_GOAWAY, 0, 0);
	gw_put32(out + GW_HDR_LEN, last);
	gw_put32(out + GW_HDR_LEN + 4, code);
	if (ml)
		memcpy(out + GW_HDR_LEN + 8, msg, ml);
	return (int)(GW_HDR_LEN + 8 + ml);
}

int
gw_data_hdr_encode(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, uint32_t len)
{
	if (sid == 0 || sid > GW_SID_MAX || flags & ~GW_F_FIN || (len == 0 && !flags))
		return -EINVAL;
	if (cap < GW_HDR_LEN)
		return -ENOBUFS;
	gw_fhdr_encode(out, len, GW_T_DATA, flags, sid);
	return GW_HDR_LEN;
}

/* ---- names ---- */

const char *
gw_code_name(uint32_t code)
{
	static const char *const names[] = {
	        "NO_ERROR",      "PROTOCOL_ERROR",    "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
	        "STREAM_CLOSED", "FRAME_SIZE_ERROR",  "REFUSED_STREAM", "CANCEL",
	        "VERSION_ERROR", "ENHANCE_YOUR_CALM", "TIMEOUT",
	};
	if (code < KL_ARRAY_SIZE(names))
		return names[code];
	return code >= GW_E_APP ? "APPLICATION_ERROR" : "UNKNOWN_ERROR";
}

const char *
gw_type_name(uint8_t type)
{
	switch (type) {
	case GW_T_HELLO:
		return "HELLO";
	case GW_T_DATA:
		return "DATA";
	case GW_T_OPEN:
		return "OPEN";
	case GW_T_WINDOW:
		return "WINDOW_UPDATE";
	case GW_T_RST:
		return "RST";
	case GW_T_PING:
		return "PING";
	case GW_T_PONG:
		return "PONG";
	case GW_T_GOAWAY:
		return "GOAWAY";
	default:
		return type & GW_T_IGNORABLE ? "IGNORABLE" : "UNKNOWN";
	}
}

const char *
gw_kind_name(uint8_t kind)
{
	switch (kind) {
	case GW_KIND_CONTROL:
		return "CONTROL";
	case GW_KIND_WORK:
		return "WORK";
	case GW_KIND_MCP:
		return "MCP";
	default:
		return "UNKNOWN";
	}
}

/* ---- stream messages ---- */

int
gw_ctl_parse(const void *buf, size_t len, uint32_t max, struct gw_ctl_msg *ret)
{
	const uint8_t *p = buf;
	if (!max)
		max = GW_CTL_BODY_DEFAULT;
	if (max > GW_CTL_BODY_MAX)
		max = GW_CTL_BODY_MAX;
	if (len < GW_CTL_HDR_LEN)
		return 0;
	uint32_t blen = gw_get32(p);
	if (blen > max)
		return -EMSGSIZE;
	uint16_t flags = (uint16_t)(p[6] << 8 | p[7]);
	if (flags)
		return -EBADMSG;
	if (len - GW_CTL_HDR_LEN < blen)
		return 0;
	ret->type = (uint16_t)(p[4] << 8 | p[5]);
	ret->flags = 0;
	ret->body = p + GW_CTL_HDR_LEN;
	ret->len = blen;
	return (int)(GW_CTL_HDR_LEN + blen);
}

void
gw_ctl_hdr_encode(uint8_t out[GW_CTL_HDR_LEN], uint16_t type, uint32_t body_len)
{
	gw_put32(out, body_len);
	out[4] = (uint8_t)(type >> 8);
	out[5] = (uint8_t)type;
	out[6] = 0;
	out[7] = 0;
}
