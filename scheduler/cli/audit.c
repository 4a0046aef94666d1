/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kiln audit verify FILE`: recompute an audit log's SHA-256 chain
 * (common/kl_audit.c) and say whether it is intact, with the records by
 * type and the head (seq:hash) to keep off the machine; otherwise the first
 * bad line and what happened to it. Works on a copy of the file, or on the
 * live log while the gateway appends (a record being written may show as a
 * torn last line). Exit 0 intact, 1 not intact, 64 usage, 66 unreadable.
 */
#include "cli.h"

#include "kl_audit.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

enum { OPT_ANCHOR = 256 };

static const char usage_audit[] =
        "usage: kiln audit verify FILE [--anchor SEQ:HASH] [--json]\n"
        "\n"
        "Recompute the audit log's SHA-256 hash chain from its genesis record, and\n"
        "report the first changed, removed, inserted, reordered or cut-short record.\n"
        "Prints the records by type and the head (SEQ:HASH of the last record).\n"
        "\n"
        "  --anchor SEQ:HASH  a head printed by an earlier verify and kept off this\n"
        "                     machine: the record SEQ must still have HASH, which also\n"
        "                     catches records cut off the end of the log\n"
        "  --json             one JSON object on stdout\n"
        "\n"
        "exit status: 0 intact; 1 not intact (the first bad line and why; a torn final\n"
        "line left by a crash mid-write is named as such); 64 usage; 66 unreadable file.\n"
        "The format and what the chain does and does not prove: docs/audit.md.\n";

static int audit_usage(cli *cl, const char *fmt, ...) KL_PRINTF(2, 3);

static int
audit_usage(cli *cl, const char *fmt, ...)
{
	va_list ap;
	fputs("kiln audit: ", cl->err);
	va_start(ap, fmt);
	vfprintf(cl->err, fmt, ap);
	va_end(ap);
	fputs(" (see `kiln audit --help`)\n", cl->err);
	return CLI_EXIT_USAGE;
}

static int
audit_opt(cli *cl, void *ctx, int key, const char *val)
{
	kl_audit_anchor *a = ctx;
	if (kl_audit_anchor_parse(val, a) < 0)
		return audit_usage(cl, "--anchor '%s': expected SEQ:HASH (64 hex digits)", val);
	return 0;
}

static void
print_types(FILE *f, const kl_audit_report *r)
{
	fputc('(', f);
	for (int i = 0; i < r->ntypes; i++)
		fprintf(f, "%s%s %" PRIu64, i ? ", " : "", r->types[i].type, r->types[i].n);
	fputc(')', f);
}

static json_t *
report_json(const char *path, int fault, const kl_audit_report *r)
{
	json_t *types = json_object();
	for (int i = 0; i < r->ntypes; i++)
		json_object_set_new(types, r->types[i].type,
		                    json_integer((json_int_t)r->types[i].n));
	json_t *j =
	        json_pack("{s:s, s:s, s:b, s:I, s:I, s:o}", "file", path, "status",
	                  kl_audit_fault_name(fault), "intact", fault == KL_AUDIT_INTACT, "records",
	                  (json_int_t)r->records, "lines", (json_int_t)r->lines, "types", types);
	if (r->records > 0) {
		char anchor[96];
		snprintf(anchor, sizeof anchor, "%" PRIu64 ":%s", r->head_seq, r->head_hash);
		json_object_set_new(j, "head",
		                    json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)r->head_seq,
		                              "hash", r->head_hash, "anchor", anchor));
	}
	if (fault != KL_AUDIT_INTACT)
		json_object_set_new(j, "error",
		                    json_pack("{s:I, s:s, s:s}", "line", (json_int_t)r->bad_line,
		                              "fault", kl_audit_fault_name(fault), "reason",
		                              r->reason));
	return j;
}

static int
audit_verify(cli *cl, const char *path, const kl_audit_anchor *anchor)
{
	kl_audit_report r;
	int fault = kl_audit_verify(path, anchor, &r);
	if (fault < 0)
		return cli_failf(cl, CLI_EXIT_NOTFOUND, "audit verify: cannot read %s", r.reason);
	if (cl->json)
		cli_json_print(cl, report_json(path, fault, &r));
	if (fault == KL_AUDIT_INTACT) {
		if (!cl->json) {
			fprintf(cl->out, "%s: intact, %" PRIu64 " records ", path, r.records);
			print_types(cl->out, &r);
			fprintf(cl->out,
			        "\nhead %" PRIu64 ":%s\n(keep the head off this machine; "
			        "`--anchor` it later to prove nothing was cut off the end)\n",
			        r.head_seq, r.head_hash);
		}
		return CLI_EXIT_OK;
	}
	fflush(cl->out);
	fprintf(cl->err, "kiln: %s: %s: %s\n", path,
	        fault == KL_AUDIT_TORN ? "torn final record" : "NOT INTACT", r.reason);
	if (r.records > 0) {
		if (r.bad_line > r.lines) /* an anchor past the end: every record verified */
			fprintf(cl->err, "kiln: all %" PRIu64 " records verify ", r.records);
		else
			fprintf(cl->err,
			        "kiln: %" PRIu64 " records before line %" PRIu64 " verify ",
			        r.records, r.bad_line);
		print_types(cl->err, &r);
		fprintf(cl->err, "; the last good one is %" PRIu64 ":%s\n", r.head_seq,
		        r.head_hash);
	}
	return CLI_EXIT_TOOL;
}

static int
cmd_audit(cli *cl, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";
	if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
		fputs(usage_audit, cl->out);
		return CLI_EXIT_OK;
	}
	if (strcmp(sub, "verify"))
		return audit_usage(cl, "expected verify%s%s%s", *sub ? ", not '" : "", sub,
		                   *sub ? "'" : "");
	static const cli_opt opts[] = {{"anchor", OPT_ANCHOR, true}, {NULL, 0, false}};
	kl_audit_anchor anchor = {0};
	char **pos = NULL;
	int npos = 0;
	int rv = cli_parse(cl, "audit verify", argc - 1, argv + 1, opts, -1, audit_opt, &anchor,
	                   &pos, &npos);
	if (rv == CLI_HELP) {
		fputs(usage_audit, cl->out);
		rv = CLI_EXIT_OK;
	} else if (rv == 0 && npos != 1) {
		rv = audit_usage(cl, "verify takes one FILE");
	} else if (rv == 0) {
		rv = audit_verify(cl, pos[0], anchor.hash[0] ? &anchor : NULL);
	}
	free(pos);
	return rv;
}

CLI_COMMAND(audit, "verify an audit log's hash chain (audit verify FILE)", cmd_audit)
