/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire envelope: encode with the current protocol version, decode with a
 * size limit and a version check that runs before the body is parsed (field 1
 * is read by hand), so a peer from another version gets a clear
 * VERSION_MISMATCH instead of a parse error. Also names for result codes.
 */
#ifndef KL_PROTO_H
#define KL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.pb-c.h"

#define KL_PROTO_VERSION ((uint32_t)KILN__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT)
/* Largest message any kiln socket accepts (a write's content plus framing). */
#define KL_MAX_MSG (72u << 20)

/* Decode an Envelope from buf. Errors: -EMSGSIZE (len > max), -EPROTO (version
 * is not ours; *ret_version tells which), -EBADMSG (not a valid Envelope or no
 * body). On success *ret must be freed with kiln__envelope__free_unpacked(e, NULL). */
int kl_env_decode(const void *buf, size_t len, size_t max, Kiln__Envelope **ret,
                  uint32_t *ret_version);
/* The version field of an encoded envelope without parsing the rest (0 if absent,
 * -EBADMSG if the bytes cannot be an envelope). */
int64_t kl_env_peek_version(const void *buf, size_t len);
/* Sets e->version and packs into a malloc'ed buffer the caller frees. */
int kl_env_encode(Kiln__Envelope *e, uint8_t **ret, size_t *ret_len);
/* The same with an explicit version (tests of the version check). */
int kl_env_encode_as(Kiln__Envelope *e, uint32_t version, uint8_t **ret, size_t *ret_len);
/* Packs an ErrorReply envelope (for answering undecodable input). */
int kl_env_encode_error(Kiln__Code code, const char *msg, uint32_t retry_after_ms, uint8_t **ret,
                        size_t *ret_len);
/* Human text for a decode error: "message too large (N > M bytes)" etc. */
const char *kl_env_strerror(int err);

const char *kl_code_name(int code);
/* Parse "NODE_LOST" etc.; -1 if unknown. */
int kl_code_from_name(const char *name);

#endif
