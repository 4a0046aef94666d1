/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's journal: what it must remember across its own crash so that
 * no call runs twice and no finished result is lost (docs/gateway.md,
 * "Journal").
 *
 * One file: the 8 bytes "KILNGWJ1", then records appended in order (a
 * non-empty file that does not start so is refused, never overwritten):
 *
 *   SESSION  token (32 bytes) and connection epoch: the tunnel session the
 *            gateway resumes after a restart
 *   ACCEPT   plane_id: written before the request goes to the scheduler
 *   RESULT   plane_id and the framed TunnelReply, once the call is done
 *   ACK      plane_id: the plane acknowledged its result; forget it
 *
 * Every record is [type u8][0 u8 x3][length u32][crc32 u32][payload], the
 * integers big-endian, the CRC (IEEE 802.3) over type, length and payload.
 * Reading stops at the first record that is cut short or fails its CRC (a
 * crash in the middle of a write): everything before it counts, nothing
 * after it.
 *
 * A plane id ACCEPTed with no RESULT was running when the gateway died: its
 * outcome is unknown. gw_journal_open hands such ids to the caller with no
 * reply; the gateway answers them NODE_LOST (and journals that answer), and
 * never submits them again.
 *
 * Appends are write(2)s, so a killed gateway loses nothing the kernel has.
 * With sync set, each ACCEPT and RESULT is also fdatasync'd before the call
 * is submitted or the result sent, which covers a machine crash too, at the
 * cost of a disk flush per call.
 */
#ifndef GW_JOURNAL_H
#define GW_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_JOURNAL_TOKEN 32

typedef struct gw_journal gw_journal;

/* An entry the journal still holds: reply NULL if the call was running. */
typedef struct gw_journal_entry {
	uint64_t plane_id;
	const uint8_t *reply;
	size_t reply_len;
} gw_journal_entry;

/* Called by gw_journal_open for each live entry, in the order they were
 * accepted; reply (if any) is the caller's to keep (malloc'd). */
typedef void (*gw_journal_each_fn)(void *arg, uint64_t plane_id, uint8_t *reply, size_t reply_len);

/* Open (creating it if missing) and replay path. If it held a session,
 * token and *epoch are set from it and *had_session is true; otherwise
 * token is left as given and *epoch is 0. Then the file is rewritten with
 * only what is live (a fresh file, renamed over the old one). 0, or -errno
 * with err. */
int gw_journal_open(const char *path, bool sync, uint8_t token[GW_JOURNAL_TOKEN], uint64_t *epoch,
                    bool *had_session, gw_journal_each_fn each, void *arg, gw_journal **ret,
                    char *err, size_t errlen);
/* Each returns 0 or -errno (the record may not be on disk: the caller must
 * not act as if it were). */
int gw_journal_session(gw_journal *j, const uint8_t token[GW_JOURNAL_TOKEN], uint64_t epoch);
int gw_journal_accept(gw_journal *j, uint64_t plane_id);
int gw_journal_result(gw_journal *j, uint64_t plane_id, const uint8_t *reply, size_t len);
int gw_journal_ack(gw_journal *j, uint64_t plane_id);
/* True when dead records outweigh live ones enough that a rewrite pays. */
bool gw_journal_wants_rewrite(const gw_journal *j);
/* Replace the file with a session record and the given entries. */
int gw_journal_rewrite(gw_journal *j, const uint8_t token[GW_JOURNAL_TOKEN], uint64_t epoch,
                       const gw_journal_entry *ents, size_t n);
/* Bytes in the file now. */
uint64_t gw_journal_bytes(const gw_journal *j);
void gw_journal_close(gw_journal *j);

#endif
