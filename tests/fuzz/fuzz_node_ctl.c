/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_node_ctl: the node's side of the control socket. A sandbox's init
 * runs code the node does not trust once tools have run in it (a tool can
 * do nothing to init directly, but the node must not depend on that), so
 * every datagram from it is checked: ki_msg_ok on the header
 * (sandbox.c on_ctl_msg), then ki_next over the records and ki_text for the
 * detail of KI_ERROR / KI_SPAWN_FAILED (sandbox.c, call.c), copied into the
 * call's fixed spawn_text buffer as call.c does.
 *
 * Invariants:
 *  - ki_msg_ok accepts exactly a whole header whose len is the datagram's;
 *  - the record walk advances in 8-byte steps, never leaves the message and
 *    stops; every record it returns, with its padding, fits;
 *  - ki_text is the fallback or a NUL-terminated KT_TEXT string inside the
 *    first record, and the bounded copy keeps a prefix of it;
 *  - rebuilding the walked records with the builder init uses (ki_begin,
 *    ki_put, ki_end) reproduces the message byte for byte, padding aside,
 *    when the walk consumed all of it.
 */
#include "fuzz.h"

#include "initproto.h"
#include "kl_util.h"

static uint8_t rebuilt[KI_MAX_MSG] __attribute__((aligned(8)));

#define MAX_RECS 8192

struct rec_span {
	uint32_t off; /* of the record header */
	uint32_t end; /* past its padding */
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rec_span span[MAX_RECS];
	fz_reader in = {data, size};
	if (in.n > KI_MAX_MSG)
		in.n = KI_MAX_MSG; /* the node's receive buffer while a session runs */
	size_t n;
	uint8_t *msg = fz_rest(&in, &n);
	uint32_t len = (uint32_t)n;
	struct ki_hdr h;
	memset(&h, 0, sizeof h);
	memcpy(&h, msg, n < sizeof h ? n : sizeof h);
	int ok = ki_msg_ok(msg, n);
	FZ_CHECK(ok == (n >= sizeof h && h.len == n), "ki_msg_ok %d for %zu bytes, len %u", ok, n,
	         h.len);
	if (n < sizeof h)
		goto out;
	/* Past the length check, as on_ctl_msg is for every well-formed message. */
	((struct ki_hdr *)msg)->len = len;

	uint32_t off = sizeof h;
	int nrec = 0;
	const struct ki_rec *r;
	for (;;) {
		uint32_t before = off;
		r = ki_next(msg, len, &off);
		if (!r) {
			FZ_CHECK(off == before, "offset moved on the end");
			break;
		}
		FZ_CHECK((const uint8_t *)r == msg + before, "record not at the offset");
		uint64_t need = sizeof *r + (((uint64_t)r->len + 7) & ~7ull);
		FZ_CHECK(off == before + need && off <= len && off % 8 == 0,
		         "step %u -> %u for a %u-byte record (len %u)", before, off, r->len, len);
		if (nrec < MAX_RECS)
			span[nrec] = (struct rec_span){before, off};
		nrec++;
	}
	FZ_CHECK(off >= sizeof h && off <= len, "walk ended at %u of %u", off, len);

	const char *fallback = "(no detail)";
	const char *text = ki_text(msg, len, fallback);
	if (text != fallback) {
		const struct ki_rec *first = (const struct ki_rec *)(msg + sizeof h);
		FZ_CHECK(nrec > 0 && first->tag == KT_TEXT, "text from a non-text record");
		FZ_CHECK(text == (const char *)(first + 1), "text not at the first record");
		FZ_CHECK(memchr(text, 0, first->len), "text not terminated inside its record");
	}
	char spawn_text[256];
	kl_strlcpy(spawn_text, text, sizeof spawn_text);
	size_t tl = strlen(spawn_text);
	FZ_CHECK(tl < sizeof spawn_text && !strncmp(spawn_text, text, tl), "bounded copy");

	if (off == len && nrec <= MAX_RECS) {
		ki_buf b;
		ki_begin(&b, rebuilt, sizeof rebuilt, h.type, h.id);
		struct ki_hdr *bh = ki_hdr(&b);
		bh->a = h.a, bh->b = h.b, bh->c = h.c, bh->d = h.d, bh->x = h.x, bh->y = h.y;
		for (int i = 0; i < nrec; i++) {
			const struct ki_rec *s = (const struct ki_rec *)(msg + span[i].off);
			ki_put(&b, s->tag, s + 1, s->len, NULL, 0);
		}
		FZ_CHECK(!b.overflow && ki_end(&b) == len, "rebuilt %u bytes of %u", b.len, len);
		FZ_CHECK(!memcmp(rebuilt, msg, sizeof(struct ki_hdr)), "header differs");
		for (int i = 0; i < nrec; i++) {
			const struct ki_rec *s = (const struct ki_rec *)(msg + span[i].off);
			const struct ki_rec *t = (const struct ki_rec *)(rebuilt + span[i].off);
			FZ_CHECK(s->tag == t->tag && s->len == t->len &&
			                 !memcmp(s + 1, t + 1, s->len),
			         "record %d differs", i);
		}
	}
out:
	free(msg);
	return 0;
}
