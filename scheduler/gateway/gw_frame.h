/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Frames of the egress tunnel (docs/tunnel.md): the 10-byte header, the
 * payload of every frame type, and the message framing of the CONTROL
 * stream. Pure functions on caller buffers: nothing allocates, nothing keeps
 * state, every decoder bounds-checks and says why it refused in a gw_err
 * (the code to send in GOAWAY or RST, and a reason a person can read). The
 * multiplexer (gw_mux.h) is the only intended consumer of the decoders; tests
 * and fuzz targets use them too. Safe from any thread.
 */
#ifndef GW_FRAME_H
#define GW_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_VERSION 1
#define GW_MAGIC   "KLTN" /* first 4 bytes of every HELLO payload */

#define GW_HDR_LEN    10          /* length u32, type u8, flags u8, stream id u32; big-endian */
#define GW_SID_MAX    0x7fffffffu /* stream ids are 31 bits; the top bit must be 0 */
#define GW_WINDOW_MAX 0x7fffffffu

/* Frame payload sizes. max_frame is what a side accepts in one DATA frame; each
 * side announces its own in HELLO, within [GW_FRAME_MIN, GW_FRAME_MAX]. */
#define GW_FRAME_MIN     4096u
#define GW_FRAME_DEFAULT 16384u
#define GW_FRAME_MAX     (1u << 20)
#define GW_HELLO_MAX     4096u             /* HELLO payload */
#define GW_META_MAX      1024u             /* OPEN: the kind-specific header */
#define GW_MSG_MAX       512u              /* RST / GOAWAY reason text */
#define GW_TOKEN_MAX     256u              /* HELLO session token */
#define GW_ROUTE_MAX     64u               /* MCP route name */
#define GW_CTLPAY_MAX    (8u + GW_MSG_MAX) /* largest non-DATA, non-HELLO payload */

/* Flow control defaults (docs/tunnel.md, "Flow control"). */
#define GW_WINDOW_MIN            4096u
#define GW_STREAM_WINDOW_DEFAULT (1u << 20)
#define GW_CONN_WINDOW_DEFAULT   (16u << 20)
#define GW_MAX_STREAMS_DEFAULT   1024u

enum gw_type {
	GW_T_HELLO = 0x00,
	GW_T_DATA = 0x01,
	GW_T_OPEN = 0x02,
	GW_T_WINDOW = 0x03,
	GW_T_RST = 0x04,
	GW_T_PING = 0x05,
	GW_T_PONG = 0x06,
	GW_T_GOAWAY = 0x07,
};
/* An unknown type with this bit set is skipped; an unknown type without it is a
 * connection error. New optional frames get types >= 0x80. */
#define GW_T_IGNORABLE 0x80

#define GW_F_FIN 0x01 /* DATA, OPEN: the sender's last frame on this stream */

/* Error codes of RST and GOAWAY (u32 on the wire). Applications may use codes
 * >= GW_E_APP for their own resets. */
enum gw_code {
	GW_E_NONE = 0,
	GW_E_PROTOCOL = 1,
	GW_E_INTERNAL = 2,
	GW_E_FLOW_CONTROL = 3,
	GW_E_STREAM_CLOSED = 4,
	GW_E_FRAME_SIZE = 5,
	GW_E_REFUSED = 6, /* not processed: safe to retry elsewhere */
	GW_E_CANCEL = 7,
	GW_E_VERSION = 8,
	GW_E_CALM = 9,     /* the peer exceeded a resource limit */
	GW_E_TIMEOUT = 10, /* no HELLO in time, or the peer stopped answering PINGs */
	GW_E_APP = 0x100,
};

enum gw_role {
	GW_ROLE_GATEWAY = 1, /* the cluster's side: dials, opens odd stream ids */
	GW_ROLE_PLANE = 2,   /* the remote control plane: accepts, opens even ids */
};

enum gw_kind {
	GW_KIND_CONTROL = 1, /* the one control stream; meta empty */
	GW_KIND_WORK = 2,    /* one tool call; meta: u64 job id, then opaque bytes */
	GW_KIND_MCP = 3,     /* an HTTP tunnel to a private MCP server; meta: route name */
};

struct gw_fhdr {
	uint32_t len; /* payload bytes after the header */
	uint8_t type;
	uint8_t flags;
	uint32_t sid;
};

/* Why a decoder refused: the code for GOAWAY/RST and a NUL-terminated reason. */
struct gw_err {
	uint32_t code;
	char msg[200];
};

#define GW_HELLO_F_RESUME 0x01 /* gateway: please resume token; plane: resumed */

/* A HELLO's content. Settings a sender leaves out take the defaults above. */
struct gw_hello {
	uint16_t version;
	uint8_t role;
	uint8_t flags;
	uint32_t max_frame;     /* largest DATA payload this side accepts */
	uint32_t stream_window; /* initial window this side grants each stream */
	uint32_t conn_window;   /* initial connection window this side grants */
	uint32_t max_streams;   /* concurrent streams the other side may open */
	uint32_t ping_interval_ms;
	uint64_t epoch;
	uint16_t token_len;
	uint8_t token[GW_TOKEN_MAX];
};

/* A decoded OPEN: kind and meta point into the frame's payload. */
struct gw_open {
	uint8_t kind;
	const uint8_t *meta;
	size_t meta_len;
};

/* A whole frame in a buffer (gw_frame_decode): payload points into it. */
struct gw_frame {
	struct gw_fhdr h;
	const uint8_t *payload;
};

static inline uint32_t
gw_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t
gw_get64(const uint8_t *p)
{
	return (uint64_t)gw_get32(p) << 32 | gw_get32(p + 4);
}

static inline void
gw_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void
gw_put64(uint8_t *p, uint64_t v)
{
	gw_put32(p, (uint32_t)(v >> 32));
	gw_put32(p + 4, (uint32_t)v);
}

/* ---- header ---- */

void gw_fhdr_encode(uint8_t out[GW_HDR_LEN], uint32_t len, uint8_t type, uint8_t flags,
                    uint32_t sid);
/* Parse the first GW_HDR_LEN bytes of buf (no validation). */
void gw_fhdr_parse(const uint8_t buf[GW_HDR_LEN], struct gw_fhdr *ret);
/* Validate a header against the spec's per-type rules: payload length limits
 * (DATA up to max_data, which is what this side announced), allowed flags,
 * stream id 0 or not, the reserved top bit of the stream id. Returns 0 for a
 * known, valid frame, 1 for an unknown ignorable type (skip its payload), or
 * -EPROTO with err filled (every failure here is a connection error). */
int gw_fhdr_check(const struct gw_fhdr *h, uint32_t max_data, struct gw_err *err);

/* One whole frame from buf: >0 bytes used (*ret filled), 0 if buf holds less
 * than a whole frame, -EPROTO if the header is invalid (err filled). Only the
 * header is validated; decode the payload with the functions below. */
int gw_frame_decode(const void *buf, size_t len, uint32_t max_data, struct gw_frame *ret,
                    struct gw_err *err);

/* ---- payloads: decoders take the payload and its length, as checked by
 * gw_fhdr_check; they return 0 or -EPROTO with err filled ---- */

int gw_hello_decode(const uint8_t *p, size_t n, struct gw_hello *ret, struct gw_err *err);
/* Errors are stream errors (the mux resets the stream): unknown kind
 * (GW_E_REFUSED), bad meta for the kind (GW_E_PROTOCOL). */
int gw_open_decode(const uint8_t *p, size_t n, struct gw_open *ret, struct gw_err *err);
/* Whether meta is valid for kind (the same rules gw_open_decode applies). */
int gw_open_check(uint8_t kind, const void *meta, size_t meta_len, struct gw_err *err);
/* The increment, 1..GW_WINDOW_MAX; 0 or the top bit set is an error. */
int gw_window_decode(const uint8_t *p, size_t n, uint32_t *ret_inc, struct gw_err *err);
/* The reason text is copied into msg (NUL-terminated, control characters
 * replaced by '?', cut to msgcap - 1). */
int gw_rst_decode(const uint8_t *p, size_t n, uint32_t *ret_code, char *msg, size_t msgcap,
                  struct gw_err *err);
int gw_goaway_decode(const uint8_t *p, size_t n, uint32_t *ret_last, uint32_t *ret_code, char *msg,
                     size_t msgcap, struct gw_err *err);

/* ---- whole-frame encoders: write header + payload into out, return the
 * frame's size, -ENOBUFS if cap is too small, -EINVAL for arguments the spec
 * forbids. Reason texts longer than GW_MSG_MAX are cut. ---- */

int gw_hello_encode(uint8_t *out, size_t cap, const struct gw_hello *h);
int gw_open_encode(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, uint8_t kind,
                   const void *meta, size_t meta_len);
int gw_window_encode(uint8_t *out, size_t cap, uint32_t sid, uint32_t inc);
int gw_rst_encode(uint8_t *out, size_t cap, uint32_t sid, uint32_t code, const char *msg);
/* type is GW_T_PING or GW_T_PONG. */
int gw_ping_encode(uint8_t *out, size_t cap, uint8_t type, uint64_t opaque);
int gw_goaway_encode(uint8_t *out, size_t cap, uint32_t last, uint32_t code, const char *msg);
/* Only the header: the payload (len bytes) follows it. */
int gw_data_hdr_encode(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, uint32_t len);

/* A HELLO with the default settings for role. */
void gw_hello_init(struct gw_hello *h, uint8_t role);

const char *gw_code_name(uint32_t code);
const char *gw_type_name(uint8_t type);
const char *gw_kind_name(uint8_t kind);

/* ---- messages on CONTROL and WORK streams (docs/tunnel.md, "Stream
 * messages"): u32 body length, u16 type, u16 flags (0), body. The body of an
 * ENVELOPE is a kiln.proto Envelope: TunnelControl (RESUME, ACK) on the
 * CONTROL stream, TunnelRequest and TunnelReply on WORK streams. ---- */

#define GW_CTL_HDR_LEN      8
#define GW_CTL_BODY_DEFAULT (1u << 20)  /* limit when the caller gives none */
#define GW_CTL_BODY_MAX     (72u << 20) /* hard limit: KL_MAX_MSG, the largest Envelope */

enum gw_ctl_type {
	GW_CTL_ENVELOPE = 0x0001,
};
#define GW_CTL_IGNORABLE 0x8000 /* unknown types with this bit are skipped, others refused */

struct gw_ctl_msg {
	uint16_t type;
	uint16_t flags;
	const uint8_t *body;
	uint32_t len;
};

/* One message from the front of buf: >0 bytes used (*ret filled), 0 if more
 * bytes are needed, -EMSGSIZE if the body exceeds max (0: the default; never
 * above GW_CTL_BODY_MAX), -EBADMSG if the flags are not 0. The type is not
 * checked: the caller knows which it takes. The length is checked as soon as
 * the header is there, so a reader never buffers more than max + 8 bytes. */
int gw_ctl_parse(const void *buf, size_t len, uint32_t max, struct gw_ctl_msg *ret);
void gw_ctl_hdr_encode(uint8_t out[GW_CTL_HDR_LEN], uint16_t type, uint32_t body_len);

#endif
