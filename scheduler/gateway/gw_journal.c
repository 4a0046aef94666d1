/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's journal (see gw_journal.h). */
#include "gw_journal.h"

#include "gw_frame.h"
#include "kl_log.h"
#include "kl_map.h"
#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define JN          "journal"
#define HDR         12
#define REC_MAX     (96u << 20) /* a framed reply is at most REQ_MAX-ish; refuse nonsense */
#define REWRITE_MIN (8u << 20)
#define MAGIC       "KILNGWJ1" /* the file's first 8 bytes */
#define MAGIC_LEN   8

enum { R_SESSION = 1, R_ACCEPT, R_RESULT, R_ACK };

struct gw_journal {
	char path[4096];
	int fd;
	bool sync;
	uint64_t bytes; /* in the file */
	uint64_t live;  /* bytes of records still needed */
	kl_map sizes;   /* plane id (hex) -> bytes of its records (uintptr_t) */
};

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib's) ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t
crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint32_t
rec_crc(uint8_t type, const uint8_t *lenbe, const uint8_t *a, size_t alen, const uint8_t *b,
        size_t blen)
{
	pthread_once(&crc_once, crc_init);
	uint32_t c = crc_update(0, &type, 1);
	c = crc_update(c, lenbe, 4);
	if (alen)
		c = crc_update(c, a, alen);
	if (blen)
		c = crc_update(c, b, blen);
	return c;
}

/* ---- writing ---- */

/* One record: payload a (alen) then b (blen). */
static int
rec_write(int fd, uint8_t type, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
          uint64_t *bytes)
{
	uint8_t h[HDR] = {type};
	gw_put32(h + 4, (uint32_t)(alen + blen));
	gw_put32(h + 8, rec_crc(type, h + 4, a, alen, b, blen));
	struct iovec iov[3] = {{h, HDR}, {(void *)a, alen}, {(void *)b, blen}};
	size_t total = HDR + alen + blen, done = 0;
	int i = 0;
	while (done < total) { /* writev, resuming after a short write */
		ssize_t w = writev(fd, iov + i, 3 - i);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)w;
		while (i < 3 && (size_t)w >= iov[i].iov_len) {
			w -= (ssize_t)iov[i].iov_len;
			i++;
		}
		if (i < 3) {
			iov[i].iov_base = (uint8_t *)iov[i].iov_base + w;
			iov[i].iov_len -= (size_t)w;
		}
	}
	*bytes += total;
	return 0;
}

/* A SESSION record's payload: the token, then the epoch. */
#define SESSION_LEN (GW_JOURNAL_TOKEN + 8)

static void
session_payload(uint8_t p[SESSION_LEN], const uint8_t *token, uint64_t epoch)
{
	memcpy(p, token, GW_JOURNAL_TOKEN);
	gw_put64(p + GW_JOURNAL_TOKEN, epoch);
}

static void
idkey(char key[24], uint64_t id)
{
	snprintf(key, 24, "%016llx", (unsigned long long)id);
}

static void
size_add(gw_journal *j, uint64_t id, size_t n)
{
	char key[24];
	idkey(key, id);
	uintptr_t v = (uintptr_t)kl_map_get(&j->sizes, key);
	kl_map_put(&j->sizes, key, (void *)(v + n));
	j->live += n;
}

static int
append(gw_journal *j, uint8_t type, uint64_t id, const uint8_t *b, size_t blen, bool sync)
{
	uint8_t idb[8];
	gw_put64(idb, id);
	uint64_t before = j->bytes;
	int r = rec_write(j->fd, type, idb, 8, b, blen, &j->bytes);
	if (r == 0 && sync && j->sync && fdatasync(j->fd) < 0)
		r = -errno;
	if (r < 0) {
		KL_LOG(KL_ERROR, JN, "%s: append failed: %s", j->path, strerror(-r));
		/* Cut off a partial record, so that later appends stay readable. */
		if (ftruncate(j->fd, (off_t)before) == 0)
			j->bytes = before;
		return r;
	}
	if (type == R_ACCEPT || type == R_RESULT)
		size_add(j, id, j->bytes - before);
	return 0;
}

int
gw_journal_session(gw_journal *j, const uint8_t token[GW_JOURNAL_TOKEN], uint64_t epoch)
{
	uint8_t p[SESSION_LEN];
	session_payload(p, token, epoch);
	int r = rec_write(j->fd, R_SESSION, p, sizeof p, NULL, 0, &j->bytes);
	if (r == 0 && j->sync && fdatasync(j->fd) < 0)
		r = -errno;
	return r;
}

int
gw_journal_accept(gw_journal *j, uint64_t plane_id)
{
	return append(j, R_ACCEPT, plane_id, NULL, 0, true);
}

int
gw_journal_result(gw_journal *j, uint64_t plane_id, const uint8_t *reply, size_t len)
{
	return append(j, R_RESULT, plane_id, reply, len, true);
}

int
gw_journal_ack(gw_journal *j, uint64_t plane_id)
{
	/* No flush: a lost ACK only means a result is delivered once more. */
	int r = append(j, R_ACK, plane_id, NULL, 0, false);
	char key[24];
	idkey(key, plane_id);
	uintptr_t v = (uintptr_t)kl_map_del(&j->sizes, key);
	j->live -= v;
	return r;
}

bool
gw_journal_wants_rewrite(const gw_journal *j)
{
	return j->bytes > REWRITE_MIN && j->bytes > 2 * j->live;
}

uint64_t
gw_journal_bytes(const gw_journal *j)
{
	return j->bytes;
}

static int
fsync_dir_of(const char *path)
{
	char d[4096];
	kl_strlcpy(d, path, sizeof d);
	int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int r = fsync(dfd) < 0 ? -errno : 0;
	close(dfd);
	return r;
}

/* Write a new file beside path, then rename it over path; j->fd becomes it. */
static int
rewrite(gw_journal *j, const uint8_t *token, uint64_t epoch, const gw_journal_entry *ents, size_t n)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.new", j->path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	uint64_t bytes = MAGIC_LEN;
	int r = kl_write_all(fd, MAGIC, MAGIC_LEN);
	kl_map sizes;
	kl_map_init(&sizes);
	uint64_t live = 0;
	if (r == 0 && token) {
		uint8_t p[SESSION_LEN];
		session_payload(p, token, epoch);
		r = rec_write(fd, R_SESSION, p, sizeof p, NULL, 0, &bytes);
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t idb[8];
		gw_put64(idb, ents[i].plane_id);
		uint64_t before = bytes;
		r = rec_write(fd, R_ACCEPT, idb, 8, NULL, 0, &bytes);
		if (r == 0 && ents[i].reply)
			r = rec_write(fd, R_RESULT, idb, 8, ents[i].reply, ents[i].reply_len,
			              &bytes);
		char key[24];
		idkey(key, ents[i].plane_id);
		kl_map_put(&sizes, key, (void *)(uintptr_t)(bytes - before));
		live += bytes - before;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, j->path) < 0)
		r = -errno;
	if (r == 0)
		r = fsync_dir_of(j->path);
	if (r < 0) {
		close(fd);
		unlink(tmp);
		kl_map_fini(&sizes);
		return r;
	}
	if (j->fd >= 0)
		close(j->fd);
	j->fd = fd;
	j->bytes = bytes;
	j->live = live;
	kl_map_fini(&j->sizes);
	j->sizes = sizes;
	return 0;
}

int
gw_journal_rewrite(gw_journal *j, const uint8_t token[GW_JOURNAL_TOKEN], uint64_t epoch,
                   const gw_journal_entry *ents, size_t n)
{
	uint64_t before = j->bytes;
	int r = rewrite(j, token, epoch, ents, n);
	if (r < 0)
		KL_LOG(KL_ERROR, JN, "%s: rewrite failed: %s (keeping the old file)", j->path,
		       strerror(-r));
	else
		KL_LOG(KL_INFO, JN, "%s: rewritten: %llu bytes -> %llu (%zu entries)", j->path,
		       (unsigned long long)before, (unsigned long long)j->bytes, n);
	return r;
}

/* ---- reading ---- */

typedef struct rent {
	uint64_t id;
	uint8_t *reply;
	size_t len;
	bool live;
} rent;

typedef struct replay {
	rent *v;
	size_t n, cap;
	kl_map idx; /* id -> index + 1 */
} replay;

static rent *
replay_get(replay *rp, uint64_t id, bool create)
{
	char key[24];
	idkey(key, id);
	uintptr_t i = (uintptr_t)kl_map_get(&rp->idx, key);
	if (i && rp->v[i - 1].live)
		return &rp->v[i - 1];
	if (!create)
		return NULL;
	if (rp->n == rp->cap) {
		rp->cap = rp->cap ? rp->cap * 2 : 256;
		rp->v = kl_xrealloc(rp->v, rp->cap * sizeof *rp->v);
	}
	rent *e = &rp->v[rp->n++];
	*e = (rent){.id = id, .live = true};
	kl_map_put(&rp->idx, key, (void *)(uintptr_t)rp->n);
	return e;
}

/* Replay the file; *session set if it held one. 0 or -errno. */
static int
replay_file(const char *path, replay *rp, uint8_t *token, uint64_t *epoch, bool *session, char *err,
            size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "journal %s: %s", path, strerror(errno));
		return -errno;
	}
	FILE *f = fdopen(fd, "rb");
	char magic[MAGIC_LEN];
	size_t got = fread(magic, 1, MAGIC_LEN, f);
	if (got == 0) { /* empty: a fresh journal */
		fclose(f);
		return 0;
	}
	if (got < MAGIC_LEN || memcmp(magic, MAGIC, MAGIC_LEN)) {
		fclose(f);
		snprintf(err, errlen,
		         "%s is not a kiln gateway journal (it does not start with " MAGIC
		         "); refusing to overwrite it",
		         path);
		return -EINVAL;
	}
	uint64_t off = MAGIC_LEN, nrec = 0;
	uint8_t *p = NULL;
	const char *stop = NULL;
	for (;;) {
		uint8_t h[HDR];
		got = fread(h, 1, HDR, f);
		if (got == 0)
			break;
		if (got < HDR) {
			stop = "a record header cut short";
			break;
		}
		uint32_t len = gw_get32(h + 4);
		if (len > REC_MAX || h[1] || h[2] || h[3]) {
			stop = "a malformed record header";
			break;
		}
		p = kl_xrealloc(p, len ? len : 1);
		if (fread(p, 1, len, f) != len) {
			stop = "a record cut short";
			break;
		}
		if (rec_crc(h[0], h + 4, p, len, NULL, 0) != gw_get32(h + 8)) {
			stop = "a record that fails its CRC";
			break;
		}
		if (h[0] == R_SESSION && len == SESSION_LEN) {
			memcpy(token, p, GW_JOURNAL_TOKEN);
			*epoch = gw_get64(p + GW_JOURNAL_TOKEN);
			*session = true;
		} else if ((h[0] == R_ACCEPT || h[0] == R_ACK) && len == 8) {
			uint64_t id = gw_get64(p);
			rent *e = replay_get(rp, id, h[0] == R_ACCEPT);
			if (h[0] == R_ACK && e) {
				e->live = false;
				free(e->reply);
				e->reply = NULL;
			}
		} else if (h[0] == R_RESULT && len >= 8) { /* an empty reply is one too */
			rent *e = replay_get(rp, gw_get64(p), true);
			free(e->reply);
			e->len = len - 8;
			e->reply = kl_xmalloc(e->len);
			memcpy(e->reply, p + 8, e->len);
		} else {
			stop = "an unknown record";
			break;
		}
		off += HDR + len;
		nrec++;
	}
	free(p);
	if (stop) {
		struct stat st;
		fstat(fd, &st);
		KL_LOG(KL_WARN, JN,
		       "%s: replay stops at byte %llu of %lld (%s: the gateway died mid-write?); "
		       "%llu records before it are kept",
		       path, (unsigned long long)off, (long long)st.st_size, stop,
		       (unsigned long long)nrec);
	}
	fclose(f);
	return 0;
}

int
gw_journal_open(const char *path, bool sync, uint8_t token[GW_JOURNAL_TOKEN], uint64_t *epoch,
                bool *had_session, gw_journal_each_fn each, void *arg, gw_journal **ret, char *err,
                size_t errlen)
{
	gw_journal *j = kl_xcalloc(1, sizeof *j);
	kl_strlcpy(j->path, path, sizeof j->path);
	j->fd = -1;
	j->sync = sync;
	kl_map_init(&j->sizes);
	replay rp = {0};
	kl_map_init(&rp.idx);
	*epoch = 0;
	*had_session = false;
	int r = replay_file(path, &rp, token, epoch, had_session, err, errlen);
	size_t nlive = 0;
	gw_journal_entry *ents = kl_xcalloc(rp.n + 1, sizeof *ents);
	for (size_t i = 0; i < rp.n; i++)
		if (rp.v[i].live)
			ents[nlive++] = (gw_journal_entry){rp.v[i].id, rp.v[i].reply, rp.v[i].len};
	if (r == 0 && (r = rewrite(j, *had_session ? token : NULL, *epoch, ents, nlive)) < 0)
		snprintf(err, errlen, "journal %s: cannot write it: %s", path, strerror(-r));
	free(ents);
	for (size_t i = 0; i < rp.n; i++) {
		if (r == 0 && rp.v[i].live)
			each(arg, rp.v[i].id, rp.v[i].reply, rp.v[i].len); /* reply is theirs now */
		else
			free(rp.v[i].reply);
	}
	free(rp.v);
	kl_map_fini(&rp.idx);
	if (r < 0) {
		gw_journal_close(j);
		return r;
	}
	KL_LOG(KL_INFO, JN, "%s: %zu calls carried over from before (%s)", path, nlive,
	       *had_session ? "the tunnel session resumes" : "a new tunnel session");
	*ret = j;
	return 0;
}

void
gw_journal_close(gw_journal *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	kl_map_fini(&j->sizes);
	free(j);
}
