/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Envelope encoding and decoding with a pre-parse version check.
 */
#include "kl_proto.h"

#include "kl_util.h"

#include <errno.h>
#include <stdbool.h>

int64_t
kl_env_peek_version(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (len == 0)
		return 0;
	/* protobuf-c writes fields in number order; version is field 1, varint. */
	if (p[0] != 0x08)
		return (p[0] >> 3) > 1 ? 0 : -EBADMSG;
	uint64_t v = 0;
	for (size_t i = 1, shift = 0; i < len && i < 11; i++, shift += 7) {
		v |= (uint64_t)(p[i] & 0x7f) << shift;
		if (!(p[i] & 0x80))
			return v > UINT32_MAX ? -EBADMSG : (int64_t)v;
	}
	return -EBADMSG;
}

/*
 * protobuf-c accepts field number 0 when the tag is a multi-byte varint (its
 * check reads only the first byte) and keeps the field as an unknown one,
 * which packs back as a one-byte tag 0 that no parser accepts: the scheduler
 * would forward a call its node cannot decode, and the node re-packs its
 * work too. Such a message is refused at the boundary (found by
 * fuzz_envelope). True if m or a message below it holds one.
 */
static bool
has_field_zero(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			return true;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *v =
			        *(ProtobufCMessage *const *const *)(base + f->offset);
			for (size_t k = 0; k < n; k++)
				if (has_field_zero(v[k]))
					return true;
		} else {
			const ProtobufCMessage *sub =
			        *(ProtobufCMessage *const *)(base + f->offset);
			if (sub && has_field_zero(sub))
				return true;
		}
	}
	return false;
}

int
kl_env_decode(const void *buf, size_t len, size_t max, Kiln__Envelope **ret, uint32_t *ret_version)
{
	if (len > max)
		return -EMSGSIZE;
	int64_t v = kl_env_peek_version(buf, len);
	if (v < 0)
		return -EBADMSG;
	if (ret_version)
		*ret_version = (uint32_t)v;
	if ((uint32_t)v != KL_PROTO_VERSION)
		return -EPROTO;
	Kiln__Envelope *e = kiln__envelope__unpack(NULL, len, buf);
	if (!e)
		return -EBADMSG;
	/* A repeated field 1 passes the peek (the first) while protobuf keeps the
	 * last: check what was parsed too (found by fuzz_envelope). */
	if (e->version != KL_PROTO_VERSION) {
		if (ret_version)
			*ret_version = e->version;
		kiln__envelope__free_unpacked(e, NULL);
		return -EPROTO;
	}
	if (e->msg_case == KILN__ENVELOPE__MSG__NOT_SET || has_field_zero(&e->base)) {
		kiln__envelope__free_unpacked(e, NULL);
		return -EBADMSG;
	}
	*ret = e;
	return 0;
}

int
kl_env_encode(Kiln__Envelope *e, uint8_t **ret, size_t *ret_len)
{
	return kl_env_encode_as(e, KL_PROTO_VERSION, ret, ret_len);
}

int
kl_env_encode_as(Kiln__Envelope *e, uint32_t version, uint8_t **ret, size_t *ret_len)
{
	e->version = version;
	size_t n = kiln__envelope__get_packed_size(e);
	if (n > KL_MAX_MSG)
		return -EMSGSIZE;
	uint8_t *b = kl_xmalloc(n);
	kiln__envelope__pack(e, b);
	*ret = b;
	*ret_len = n;
	return 0;
}

int
kl_env_encode_error(Kiln__Code code, const char *msg, uint32_t retry_after_ms, uint8_t **ret,
                    size_t *ret_len)
{
	Kiln__ErrorReply er = KILN__ERROR_REPLY__INIT;
	er.code = code;
	er.message = (char *)msg;
	er.retry_after_ms = retry_after_ms;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_ERROR;
	e.error = &er;
	return kl_env_encode(&e, ret, ret_len);
}

const char *
kl_env_strerror(int err)
{
	switch (err) {
	case -EMSGSIZE:
		return "message too large";
	case -EPROTO:
		return "protocol version mismatch";
	case -EBADMSG:
		return "malformed message (not a kiln Envelope)";
	default:
		return strerror(-err);
	}
}

static const char *const code_names[] = {
        "OK",
        "TOOL_ERROR",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
        "NODE_LOST",
        "UNAVAILABLE",
        "VERSION_MISMATCH",
        "FAILED_PRECONDITION",
        "INTERNAL",
};

const char *
kl_code_name(int code)
{
	if (code < 0 || (size_t)code >= KL_ARRAY_SIZE(code_names))
		return "UNKNOWN";
	return code_names[code];
}

int
kl_code_from_name(const char *name)
{
	for (size_t i = 0; i < KL_ARRAY_SIZE(code_names); i++)
		if (!strcmp(name, code_names[i]))
			return (int)i;
	return -1;
}
