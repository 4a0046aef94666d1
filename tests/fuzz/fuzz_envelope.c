/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_envelope: the wire boundary. Every nng message the scheduler (node and
 * client sockets), a node's direct listener and membership client, and
 * libkiln receive goes through kl_env_decode; this target feeds it arbitrary
 * bytes and then does what those receivers do with a decoded Envelope:
 *
 *  - the decode result is one of the documented errors, consistent with
 *    kl_env_peek_version (a refused version is named, a size limit holds);
 *  - the error reply a server sends for undecodable input decodes back;
 *  - a generic walk over the protobuf-c descriptors reaches every present
 *    sub-message, string, bytes field, repeated element and oneof member
 *    (ASan checks every byte), checking the oneof cases and counts;
 *  - re-encoding is stable: encode, decode, encode gives the same bytes and
 *    the same message kind (the node re-packs NodeWork internally);
 *  - the scheduler's tenant code: token authentication matches exactly the
 *    tenant whose token equals the request's, and requested limits are
 *    resolved within the tenant's caps or refused;
 *  - the CLI's renderings of replies (JSON and text) keep every field, and
 *    base64 output decodes back to the bytes it encodes.
 */
#include "fuzz.h"

#include "cli.h"
#include "kl_proto.h"
#include "tenants.h"

#include <errno.h>

/* ---- the generic walk ---- */

static size_t
elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default: /* 32-bit integers, float, bool (protobuf_c_boolean), enums */
		return 4;
	}
}

struct walk {
	uint64_t sum; /* of everything read, so nothing is optimised away */
	size_t fields;
};

static void walk_msg(const ProtobufCMessage *m, int depth, struct walk *w);

static void
walk_value(const ProtobufCFieldDescriptor *f, const void *p, int depth, struct walk *w)
{
	w->fields++;
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		FZ_CHECK(s, "%s: NULL string", f->name);
		w->sum += strlen(s);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		FZ_CHECK(!b->len || b->data, "%s: %zu bytes at NULL", f->name, b->len);
		for (size_t i = 0; i < b->len; i++)
			w->sum += b->data[i];
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
		if (!sub)
			break;
		FZ_CHECK(sub->descriptor == f->descriptor, "%s: wrong descriptor", f->name);
		walk_msg(sub, depth + 1, w);
		break;
	}
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		if (f->descriptor == &kiln__code__descriptor) {
			const char *name = kl_code_name(v);
			FZ_CHECK(name, "no name for code %d", v);
			if (strcmp(name, "UNKNOWN"))
				FZ_CHECK(kl_code_from_name(name) == v, "code %d named %s", v, name);
			int en = kiln_code_errno(v);
			FZ_CHECK(en <= 0 && (en == 0) == (v == KILN__CODE__OK), "code %d: errno %d",
			         v, en);
		}
		w->sum += (unsigned)v;
		break;
	}
	default: {
		uint64_t v = 0;
		memcpy(&v, p, elem_size(f->type));
		w->sum += v;
		break;
	}
	}
}

/* Is the oneof case stored at offset q one of the descriptor's members? */
static int
oneof_case_ok(const ProtobufCMessageDescriptor *d, unsigned q, uint32_t c)
{
	if (c == 0)
		return 1;
	for (unsigned i = 0; i < d->n_fields; i++)
		if ((d->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    d->fields[i].quantifier_offset == q && d->fields[i].id == c)
			return 1;
	return 0;
}

static void
walk_msg(const ProtobufCMessage *m, int depth, struct walk *w)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	FZ_CHECK(depth < 32, "nesting %d in %s: kiln's schema has no recursion", depth, d->name);
	FZ_CHECK(protobuf_c_message_check(m), "%s fails protobuf_c_message_check", d->name);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = base + f->offset;
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t c = *(const uint32_t *)(base + f->quantifier_offset);
			FZ_CHECK(oneof_case_ok(d, f->quantifier_offset, c), "%s: oneof case %u",
			         d->name, c);
			if (c != f->id)
				continue;
			if (f->type == PROTOBUF_C_TYPE_MESSAGE)
				FZ_CHECK(*(void *const *)p, "%s.%s: case set, no message", d->name,
				         f->name);
			walk_value(f, p, depth, w);
		} else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(const char *const *)p;
			FZ_CHECK(!n || arr, "%s.%s: %zu elements at NULL", d->name, f->name, n);
			for (size_t k = 0; k < n; k++) {
				const char *el = arr + k * elem_size(f->type);
				if (f->type == PROTOBUF_C_TYPE_MESSAGE)
					FZ_CHECK(*(void *const *)el, "%s.%s[%zu] NULL", d->name,
					         f->name, k);
				walk_value(f, el, depth, w);
			}
		} else {
			walk_value(f, p, depth, w);
		}
	}
}

/* ---- the scheduler's tenant checks ---- */

static sched_config cfg;
static sched_tenants tenants;

/* Field k of a Limits, in proto order. */
static uint64_t
lim_get(const Kiln__Limits *l, int k)
{
	if (!l)
		return 0;
	switch (k) {
	case 0:
		return l->memory_bytes;
	case 1:
		return l->pids;
	case 2:
		return l->cpu_millicores;
	case 3:
		return l->workspace_bytes;
	case 4:
		return l->call_timeout_ms;
	case 5:
		return l->output_bytes;
	default:
		return l->idle_ttl_ms;
	}
}

#define NLIMITS 7

/* Requested limits are refused exactly when one is over the tenant's cap;
 * otherwise what was asked is kept and every capped field ends within its cap. */
static void
limits_check(const Kiln__Limits *req)
{
	for (uint32_t i = 0; i < tenants.n; i++) {
		const sched_tenant_cfg *c = tenants.v[i].cfg;
		Kiln__Limits out = KILN__LIMITS__INIT;
		char err[256] = "";
		int r = sched_tenant_limits(&tenants.v[i], req, &out, err, sizeof err);
		int over = 0;
		for (int k = 0; k < NLIMITS; k++)
			over |= lim_get(&c->max, k) && lim_get(req, k) > lim_get(&c->max, k);
		FZ_CHECK((r == -EPERM) == over, "tenant %s: r=%d over=%d", c->name, r, over);
		if (r < 0) {
			FZ_CHECK(*err, "tenant %s: refusal without a message", c->name);
			continue;
		}
		for (int k = 0; k < NLIMITS; k++) {
			uint64_t want = lim_get(req, k), max = lim_get(&c->max, k);
			uint64_t got = lim_get(&out, k);
			FZ_CHECK(!max || (got && got <= max),
			         "tenant %s field %d: %llu not within cap %llu", c->name, k,
			         (unsigned long long)got, (unsigned long long)max);
			FZ_CHECK(!want || got == want, "tenant %s field %d changed", c->name, k);
		}
	}
}

static void
client_request(const Kiln__ClientRequest *cr)
{
	const sched_tenant *t = sched_tenants_auth(&tenants, cr->token);
	const sched_tenant *want = NULL;
	for (uint32_t i = 0; i < tenants.n; i++)
		if (*cr->token && !strcmp(tenants.v[i].cfg->token, cr->token))
			want = &tenants.v[i];
	FZ_CHECK(t == want, "token '%.40s' authenticated as %s, expected %s", cr->token,
	         t ? t->cfg->name : "nobody", want ? want->cfg->name : "nobody");
	if (cr->op_case == KILN__CLIENT_REQUEST__OP_OPEN)
		limits_check(cr->open->limits);
	else if (cr->op_case == KILN__CLIENT_REQUEST__OP_CALL)
		limits_check(cr->call->limits);
}

/* ---- the CLI's renderings of replies ---- */

static int
b64val(char c)
{
	const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(a, c) : NULL;
	return p ? (int)(p - a) : -1;
}

/* A bytes field rendered as JSON: utf-8 text equal to the bytes, or base64
 * that decodes to them. */
static void
json_bytes_check(json_t *o, const char *key, const ProtobufCBinaryData *b)
{
	char enckey[64];
	snprintf(enckey, sizeof enckey, "%s_encoding", key);
	json_t *v = json_object_get(o, key);
	const char *enc = json_string_value(json_object_get(o, enckey));
	FZ_CHECK(json_is_string(v) && enc, "%s missing", key);
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (!strcmp(enc, "utf-8")) {
		FZ_CHECK(n == b->len && (!n || !memcmp(s, b->data, n)), "%s text differs", key);
		return;
	}
	FZ_CHECK(!strcmp(enc, "base64") && n % 4 == 0, "%s: encoding %s, %zu chars", key, enc, n);
	size_t out = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v4[4];
		for (int k = 0; k < 4; k++)
			v4[k] = s[i + k] == '=' ? 0 : b64val(s[i + k]);
		uint32_t x = (uint32_t)v4[0] << 18 | (uint32_t)v4[1] << 12 | (uint32_t)v4[2] << 6 |
		             (uint32_t)v4[3];
		FZ_CHECK(v4[0] >= 0 && v4[1] >= 0 && v4[2] >= 0 && v4[3] >= 0, "bad base64");
		int nb = s[i + 2] == '=' ? 1 : s[i + 3] == '=' ? 2 : 3;
		for (int k = 0; k < nb; k++, out++)
			FZ_CHECK(out < b->len && b->data[out] == (uint8_t)(x >> (16 - 8 * k)),
			         "%s: base64 differs at byte %zu", key, out);
	}
	FZ_CHECK(out == b->len, "%s: base64 holds %zu of %zu bytes", key, out, b->len);
}

/* JSON text of o must parse back to an equal value. Takes o. */
static void
json_round_trip(json_t *o)
{
	FZ_CHECK(o, "renderer returned NULL");
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	FZ_CHECK(s, "json_dumps failed");
	json_error_t e;
	/* "\u0000" is valid JSON (bytes fields may hold NULs); jansson asks. */
	json_t *back = json_loads(s, JSON_ALLOW_NUL, &e);
	FZ_CHECK(back && json_equal(o, back), "JSON does not parse back: %s", e.text);
	json_decref(back);
	free(s);
	json_decref(o);
}

static void
has_keys(json_t *o, const char *const *keys)
{
	for (size_t i = 0; keys[i]; i++)
		FZ_CHECK(json_object_get(o, keys[i]), "JSON lacks \"%s\"", keys[i]);
}

static void
result_render(const Kiln__ToolResult *r)
{
	static const char *const keys[] = {"job_id",    "code",      "message", "exit_code",
	                                   "signal",    "node_id",   "output",  "stderr",
	                                   "truncated", "timed_out", NULL};
	json_t *o = cli_json_result(r);
	has_keys(o, keys);
	json_bytes_check(o, "output", &r->output);
	json_bytes_check(o, "stderr", &r->stderr);
	json_round_trip(o);
	for (int process = 0; process < 2; process++) {
		int code = cli_result_exit(r, process);
		FZ_CHECK(code >= 0 && code <= 255, "exit code %d", code);
	}
	char *out = NULL, *err = NULL;
	size_t no, ne;
	cli cl = {.out = open_memstream(&out, &no), .err = open_memstream(&err, &ne)};
	FZ_CHECK(cl.out && cl.err, "open_memstream");
	int code = cli_result_print(&cl, r, KILN__TOOL_CALL__TOOL_EXEC);
	FZ_CHECK(code == cli_result_exit(r, true), "printed exit %d, computed %d", code,
	         cli_result_exit(r, true));
	fclose(cl.out);
	fclose(cl.err);
	FZ_CHECK(no >= r->output.len, "stdout lost bytes: %zu < %zu", no, r->output.len);
	FZ_CHECK(ne >= r->stderr.len, "stderr lost bytes: %zu < %zu", ne, r->stderr.len);
	free(out);
	free(err);
}

static void
session_keys(json_t *o)
{
	static const char *const keys[] = {"session_id", "tenant", "template",
	                                   "node_id",    "limits", NULL};
	has_keys(o, keys);
}

static void
reply_render(const Kiln__ClientReply *cr)
{
	char *out = NULL;
	size_t no;
	cli cl = {.out = open_memstream(&out, &no)};
	cl.err = cl.out;
	FZ_CHECK(cl.out, "open_memstream");
	json_t *o;
	switch (cr->reply_case) {
	case KILN__CLIENT_REPLY__REPLY_RESULT:
		result_render(cr->result);
		break;
	case KILN__CLIENT_REPLY__REPLY_STATUS:
		o = cli_json_status(cr->status);
		json_t *nodes = json_object_get(o, "nodes");
		FZ_CHECK(json_array_size(nodes) == cr->status->n_nodes, "nodes lost");
		for (size_t i = 0; i < cr->status->n_nodes; i++) {
			static const char *const keys[] = {"node_id", "state", "labels", NULL};
			json_t *n = json_array_get(nodes, i);
			has_keys(n, keys);
			FZ_CHECK(!cr->status->nodes[i]->n_labels ||
			                 json_object_size(json_object_get(n, "labels")),
			         "node %zu: labels lost", i);
		}
		json_round_trip(o);
		cli_status_print(&cl, cr->status);
		break;
	case KILN__CLIENT_REPLY__REPLY_LIST:
		o = cli_json_sessions(cr->list);
		json_t *a = json_object_get(o, "sessions");
		FZ_CHECK(json_array_size(a) == cr->list->n_sessions, "sessions lost");
		for (size_t i = 0; i < cr->list->n_sessions; i++)
			session_keys(json_array_get(a, i));
		json_round_trip(o);
		cli_sessions_print(&cl, cr->list, 1700000000000ull);
		break;
	case KILN__CLIENT_REPLY__REPLY_OPENED:
		o = cli_json_opened(cr->opened);
		if (cr->opened->session)
			session_keys(json_object_get(o, "session"));
		json_round_trip(o);
		break;
	default:
		break;
	}
	fclose(cl.out);
	free(out);
}

/* ---- the target ---- */

static void
setup(void)
{
	static int done;
	if (done)
		return;
	done = 1;
	sched_config_dev(&cfg);
	FZ_CHECK(sched_tenants_init(&tenants, &cfg) == 0, "dev tenants");
}

/* What a server answers to input it cannot take must itself decode. */
static void
error_reply_check(int r)
{
	uint8_t *b;
	size_t n;
	Kiln__Code code =
	        r == -EPROTO ? KILN__CODE__VERSION_MISMATCH : KILN__CODE__INVALID_ARGUMENT;
	FZ_CHECK(kl_env_encode_error(code, kl_env_strerror(r), 0, &b, &n) == 0, "encode error");
	Kiln__Envelope *e = NULL;
	FZ_CHECK(kl_env_decode(b, n, KL_MAX_MSG, &e, NULL) == 0, "error reply does not decode");
	FZ_CHECK(e->msg_case == KILN__ENVELOPE__MSG_ERROR && e->error->code == code &&
	                 !strcmp(e->error->message, kl_env_strerror(r)),
	         "error reply changed");
	kiln__envelope__free_unpacked(e, NULL);
	free(b);
}

static void
round_trip(const Kiln__Envelope *e)
{
	Kiln__Envelope copy = *e;
	uint8_t *b1, *b2;
	size_t n1, n2;
	FZ_CHECK(kl_env_encode(&copy, &b1, &n1) == 0, "re-encode failed");
	FZ_CHECK(n1 == kiln__envelope__get_packed_size(e), "packed size %zu vs %zu", n1,
	         kiln__envelope__get_packed_size(e));
	Kiln__Envelope *e2 = NULL;
	int r = kl_env_decode(b1, n1, KL_MAX_MSG, &e2, NULL);
	FZ_CHECK(r == 0, "re-encoded envelope does not decode: %d", r);
	FZ_CHECK(e2->msg_case == e->msg_case, "kind %d became %d", e->msg_case, e2->msg_case);
	FZ_CHECK(kl_env_encode(e2, &b2, &n2) == 0, "second encode failed");
	FZ_CHECK(n1 == n2 && !memcmp(b1, b2, n1), "encoding not stable (%zu vs %zu bytes)", n1, n2);
	kiln__envelope__free_unpacked(e2, NULL);
	free(b1);
	free(b2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	Kiln__Envelope *e = NULL;
	uint32_t ver = 0xdeadbeef;
	int64_t peek = kl_env_peek_version(data, size);
	FZ_CHECK(peek == -EBADMSG || (peek >= 0 && peek <= UINT32_MAX), "peek %lld",
	         (long long)peek);
	if (size) {
		int r = kl_env_decode(data, size, size - 1, &e, &ver);
		FZ_CHECK(r == -EMSGSIZE && !e, "over the limit: %d", r);
	}
	int r = kl_env_decode(data, size, KL_MAX_MSG, &e, &ver);
	FZ_CHECK(r == 0 || r == -EPROTO || r == -EBADMSG, "decode returned %d", r);
	/* A refused version is named: the first field 1, or a later one that
	 * contradicts it (protobuf keeps the last). */
	FZ_CHECK(r != -EPROTO || (peek >= 0 && ver != KL_PROTO_VERSION &&
	                          (ver == (uint32_t)peek || peek == KL_PROTO_VERSION)),
	         "version refusal: peek %lld ver %u", (long long)peek, ver);
	FZ_CHECK(r != -EBADMSG || !e, "error with a message");
	if (r < 0) {
		error_reply_check(r);
		return 0;
	}
	FZ_CHECK(e && e->msg_case != KILN__ENVELOPE__MSG__NOT_SET, "no body");
	FZ_CHECK(e->version == KL_PROTO_VERSION, "accepted version %u", e->version);
	struct walk w = {0};
	walk_msg(&e->base, 0, &w);
	round_trip(e);
	switch (e->msg_case) {
	case KILN__ENVELOPE__MSG_CLIENT_REQUEST:
		client_request(e->client_request);
		break;
	case KILN__ENVELOPE__MSG_CLIENT_REPLY:
		reply_render(e->client_reply);
		break;
	case KILN__ENVELOPE__MSG_NODE_REPLY:
		if (e->node_reply->reply_case == KILN__NODE_REPLY__REPLY_RESULT)
			result_render(e->node_reply->result);
		break;
	default:
		break;
	}
	kiln__envelope__free_unpacked(e, NULL);
	return 0;
}
