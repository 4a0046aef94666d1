/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench-tunnel: the egress tunnel on loopback, each number beside a
 * baseline measured in the same run (../shared/DESIGN.md: 80% or more of
 * stunnel's throughput over one connection; a small call's p99 under 5 ms
 * while a 100 MB transfer shares the tunnel). Two gw_mux endpoints, one in
 * the gateway's role and one in the plane's, talk over a real TLS 1.3
 * connection made by gw_tls (client certificate, pinned CA, hostname check)
 * with throwaway certificates made by the openssl CLI; each endpoint is
 * pumped by its own thread with poll(), the way kiln-gateway's loop pumps it
 * (gw_tunnel.c). Measured, interleaved run by run:
 *
 *   kiln mux     one WORK stream, gateway -> plane, N bytes as fast as flow
 *                control allows (gw_mux_write from a buffer, gw_mux_read
 *                into one);
 *   kiln relay   the same tunnel carrying a TCP connection end to end like
 *                stunnel does: a TCP source -> plane (gw_relay) -> MCP stream
 *                -> gateway (gw_relay) -> a TCP sink;
 *   raw TLS      gw_tls alone, no mux: the ceiling for one TLS connection;
 *   stunnel      a client-mode and a server-mode stunnel, a TCP source and a
 *                sink, the same certificates, TLS 1.3 and ciphersuite;
 *
 * then head-of-line blocking: small request/response round trips on one
 * stream, first on an idle tunnel, then while 100 MB transfers run back to
 * back on another stream. Prints a table and optionally JSON.
 */
#include "tunnel_bench.h"

#include "gw_frame.h"
#include "gw_tls.h"

#include "kl_clock.h"
#include "kl_util.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#define NT 5 /* throughput sections */
enum { S_KILN = 1, S_KILNGW = 2, S_RELAY = 4, S_TLS = 8, S_STUNNEL = 16, S_HOL = 32, S_ALL = 63 };

static const char *const section_names[] = {"kiln", "kiln-gw", "relay", "tls", "stunnel", "hol"};

struct tb_globals tb;

volatile sig_atomic_t tb_interrupted;

static void
on_signal(int sig)
{
	tb_interrupted = 1;
}

/* Busy and total jiffies of all CPUs (/proc/stat). */
static void
cpu_sample(uint64_t *busy, uint64_t *total)
{
	char buf[512];
	unsigned long long v[8] = {0};
	*busy = *total = 0;
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return;
	if (fgets(buf, sizeof buf, f) &&
	    sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
	           &v[4], &v[5], &v[6], &v[7]) >= 4) {
		for (int i = 0; i < 8; i++)
			*total += v[i];
		*busy = *total - v[3] - v[4];
	}
	fclose(f);
}

/* This process's CPU seconds, its reaped children's included. */
static double
self_cpu_s(void)
{
	struct rusage a, b;
	getrusage(RUSAGE_SELF, &a);
	getrusage(RUSAGE_CHILDREN, &b);
	return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec +
	                b.ru_stime.tv_sec) +
	       (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
	                b.ru_stime.tv_usec) /
	               1e6;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
median(const double *v, int n)
{
	double s[MAX_RUNS];
	if (n <= 0)
		return NAN;
	memcpy(s, v, sizeof *v * (size_t)n);
	qsort(s, (size_t)n, sizeof *s, cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* A throwaway CA and two leaves it signs (EC P-256, two days): the plane's
 * server certificate for plane.test and the gateway's client certificate.
 * The same files serve stunnel. */
static int
make_certs(char *err, size_t errlen)
{
	static const char script[] =
	        "set -e; cd '%s'; umask 077\n"
	        "ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n"
	        "openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj '/CN=kiln bench "
	        "CA' -addext 'basicConstraints=critical,CA:TRUE' -addext "
	        "'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null\n"
	        "leaf() {\n"
	        "  openssl req -new $ec -keyout $1.key -out $1.csr -subj \"/CN=$2\" 2>/dev/null\n"
	        "  printf '%%s\\n' \"$3\" >$1.ext\n"
	        "  openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -set_serial "
	        "0x$(openssl rand -hex 8) -days 2 -extfile $1.ext -out $1.crt 2>/dev/null\n"
	        "}\n"
	        "leaf server " PLANE_NAME " 'subjectAltName=DNS:" PLANE_NAME
	        "\nextendedKeyUsage=serverAuth'\n"
	        "leaf client bench 'extendedKeyUsage=clientAuth'\n";
	char cmd[2048];
	snprintf(cmd, sizeof cmd, script, tb.dir);
	int st = system(cmd);
	if (st != 0) {
		snprintf(err, errlen, "making certificates with the openssl CLI failed (status %d)",
		         st);
		return -EIO;
	}
	snprintf(tb.ca, sizeof tb.ca, "%s/ca.crt", tb.dir);
	snprintf(tb.srv_crt, sizeof tb.srv_crt, "%s/server.crt", tb.dir);
	snprintf(tb.srv_key, sizeof tb.srv_key, "%s/server.key", tb.dir);
	snprintf(tb.cli_crt, sizeof tb.cli_crt, "%s/client.crt", tb.dir);
	snprintf(tb.cli_key, sizeof tb.cli_key, "%s/client.key", tb.dir);
	return 0;
}

/* gw_tls's contexts, exactly as the gateway and the plane simulator make
 * them, restricted to the one ciphersuite every side must use. */
static int
make_ctx(char *err, size_t errlen)
{
	gw_tls_dial_cfg dc = {.ca_file = tb.ca, .cert_file = tb.cli_crt, .key_file = tb.cli_key};
	if (!(tb.cctx = gw_tls_client_ctx(&dc, err, errlen)) ||
	    !(tb.sctx = gw_tls_server_ctx(tb.srv_crt, tb.srv_key, tb.ca, err, errlen)))
		return -EINVAL;
	if (tb.o.read_ahead) { /* an experiment: gw_tls leaves read-ahead off */
		SSL_CTX_set_read_ahead(tb.cctx, 1);
		SSL_CTX_set_read_ahead(tb.sctx, 1);
	}
	if (SSL_CTX_set_ciphersuites(tb.cctx, tb.o.suite) != 1 ||
	    SSL_CTX_set_ciphersuites(tb.sctx, tb.o.suite) != 1) {
		snprintf(err, errlen, "OpenSSL does not know the ciphersuite %s", tb.o.suite);
		return -EINVAL;
	}
	return 0;
}

/* ---- the report ---- */

struct results {
	int n[NT];
	struct tb_tput t[NT][MAX_RUNS]; /* kiln, kiln-gw, relay, tls, stunnel */
	bool hol;
	struct tb_hol_result idle, loaded, loaded_gw; /* loaded_gw: gw_tunnel.c's pump */
	double load_before[3], load_after[3];
	double other_cpu; /* share of all CPUs used by other processes, 0..1; -1 unknown */
	int repeated;     /* runs repeated because others used too much CPU */
	double wall_s;
};

static const char *const tput_names[NT] = {
        "kiln mux (gw_mux over gw_tls, gateway -> plane)",
        "kiln mux, pump_out as gw_tunnel.c ships it",
        "kiln relay (TCP -> plane -> gateway -> TCP)",
        "raw TLS (gw_tls, no mux)",
        "stunnel (TCP -> client -> server -> TCP)",
};

static double
tput_median(const struct results *R, int k)
{
	double v[MAX_RUNS];
	for (int i = 0; i < R->n[k]; i++)
		v[i] = R->t[k][i].mb_s;
	return median(v, R->n[k]);
}

/* CPU seconds per GB of one side over the runs (medians). */
static double
cpu_per_gb(const struct results *R, int k, int side)
{
	double v[MAX_RUNS];
	for (int i = 0; i < R->n[k]; i++) {
		const struct tb_tput *t = &R->t[k][i];
		double c = side == 0   ? t->cpu_a
		           : side == 1 ? t->cpu_b
		           : side == 2 ? t->cpu_src
		                       : t->cpu_snk;
		v[i] = c / ((double)tb.o.bytes / 1e9);
	}
	return median(v, R->n[k]);
}

/* Which side each section's two CPU figures belong to. */
static const char *const sides[NT][2] = {{"gateway", "plane"},
                                         {"gateway", "plane"},
                                         {"plane", "gateway"},
                                         {"sender", "receiver"},
                                         {"client", "server"}};

static void
print_ratio(const struct results *R, const char *what, int a, int b, bool target)
{
	if (!R->n[a] || !R->n[b])
		return;
	double ratio = tput_median(R, a) / tput_median(R, b);
	printf("  ratio %-42s %7.2fx%s\n", what, ratio,
	       !target        ? ""
	       : ratio >= 0.8 ? "  target >= 0.80x: PASS"
	                      : "  target >= 0.80x: MISS");
}

static void
print_tput(const struct results *R)
{
	printf("\nthroughput: %.0f MB per run, %d run(s) each, interleaved; median (min-max), "
	       "CPU s per GB, the most other processes used of the CPUs during a run\n",
	       (double)tb.o.bytes / MB, tb.o.runs);
	for (int k = 0; k < NT; k++) {
		if (!R->n[k])
			continue;
		double lo = INFINITY, hi = 0, other = 0;
		for (int i = 0; i < R->n[k]; i++) {
			lo = fmin(lo, R->t[k][i].mb_s);
			hi = fmax(hi, R->t[k][i].mb_s);
			other = fmax(other, R->t[k][i].other);
		}
		printf("  %-48s %7.1f MB/s (%.0f-%.0f)  CPU %s %.2f, %s %.2f", tput_names[k],
		       tput_median(R, k), lo, hi, sides[k][0], cpu_per_gb(R, k, 0), sides[k][1],
		       cpu_per_gb(R, k, 1));
		if (k == 2 || k == 4)
			printf(", source+sink %.2f", cpu_per_gb(R, k, 2) + cpu_per_gb(R, k, 3));
		printf("; others <= %.0f%%%s\n", 100 * other, other > 0.1 ? " (noisy)" : "");
	}
	print_ratio(R, "kiln mux / stunnel", 0, 4, true);
	print_ratio(R, "kiln mux (shipped pump) / stunnel", 1, 4, true);
	print_ratio(R, "kiln relay / stunnel (same topology)", 2, 4, true);
	print_ratio(R, "raw TLS / stunnel", 3, 4, false);
	print_ratio(R, "kiln mux / raw TLS", 0, 3, false);
}

static void
print_hist_row(const char *label, const kl_hist *h, double other)
{
	printf("  %-28s p50 %7.3f  p90 %7.3f  p99 %7.3f  max %7.3f ms  (%llu; others %.0f%%)\n",
	       label, (double)kl_hist_percentile(h, 50) / 1e6,
	       (double)kl_hist_percentile(h, 90) / 1e6, (double)kl_hist_percentile(h, 99) / 1e6,
	       (double)h->max / 1e6, (unsigned long long)h->count, 100 * other);
}

static void
print_hol(const struct results *R)
{
	printf("\nhead-of-line: %zu-byte request/response round trips on one stream (gap %u us), "
	       "measured at the plane\n",
	       tb.o.msg, tb.o.gap_us);
	print_hist_row("idle tunnel", &R->idle.rtt, R->idle.other);
	print_hist_row("beside 100 MB transfers", &R->loaded.rtt, R->loaded.other);
	print_hist_row("the same, gw_tunnel.c's pump", &R->loaded_gw.rtt, R->loaded_gw.other);
	double p99 = (double)kl_hist_percentile(&R->loaded.rtt, 99) / 1e6;
	double i99 = (double)kl_hist_percentile(&R->idle.rtt, 99) / 1e6;
	double i50 = (double)kl_hist_percentile(&R->idle.rtt, 50) / 1e6;
	printf("  transfers of %.0f MB beside them: %llu completed, %.1f MB/s while measured\n",
	       (double)tb.o.hol_bytes / MB, (unsigned long long)R->loaded.transfers,
	       R->loaded.bulk_mb_s);
	printf("  ratio loaded / idle: p50 %.2fx, p99 %.2fx\n",
	       (double)kl_hist_percentile(&R->loaded.rtt, 50) / 1e6 / i50, p99 / i99);
	printf("  small call p99 beside the transfer: %.3f ms  target < 5 ms: %s\n", p99,
	       p99 < 5 ? "PASS" : "MISS");
	p99 = (double)kl_hist_percentile(&R->loaded_gw.rtt, 99) / 1e6;
	printf("  the same with gw_tunnel.c's pump: %.3f ms  target < 5 ms: %s\n", p99,
	       p99 < 5 ? "PASS" : "MISS");
}

static void
print_report(const struct results *R)
{
	printf("\nTLS 1.3 ciphersuite asked: %s; negotiated: kiln %s, raw TLS %s, stunnel client "
	       "%s, stunnel server %s\n",
	       tb.o.suite, tb.suite_kiln[0] ? tb.suite_kiln : "-",
	       tb.suite_tls[0] ? tb.suite_tls : "-", tb.suite_st_cli[0] ? tb.suite_st_cli : "-",
	       tb.suite_st_srv[0] ? tb.suite_st_srv : "-");
	if (R->n[4])
		printf("stunnel: %s (%s)\n", tb.stunnel_exe, tb.stunnel_version);
	if (R->n[0] || R->n[1] || R->n[2] || R->n[3] || R->n[4])
		print_tput(R);
	if (R->hol)
		print_hol(R);
	printf("\nmachine: %ld CPUs; load average %.2f %.2f %.2f before, %.2f %.2f %.2f after; "
	       "other processes used %.0f%% of the CPUs during the run%s (%.0f s)\n",
	       sysconf(_SC_NPROCESSORS_ONLN), R->load_before[0], R->load_before[1],
	       R->load_before[2], R->load_after[0], R->load_after[1], R->load_after[2],
	       R->other_cpu * 100,
	       R->other_cpu > 0.1 ? " -- a noisy run: compare ratios, or run again later" : "",
	       R->wall_s);
	if (R->repeated)
		printf("%d run(s) were repeated because other processes used more than %.0f%% of "
		       "the CPUs during them\n",
		       R->repeated, 100 * tb.o.max_noise);
}

static json_t *
hist_json(const kl_hist *h, double other)
{
	return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count,
	                 "p50_ms", (double)kl_hist_percentile(h, 50) / 1e6, "p90_ms",
	                 (double)kl_hist_percentile(h, 90) / 1e6, "p99_ms",
	                 (double)kl_hist_percentile(h, 99) / 1e6, "p999_ms",
	                 (double)kl_hist_percentile(h, 99.9) / 1e6, "max_ms", (double)h->max / 1e6,
	                 "mean_ms", kl_hist_mean(h) / 1e6, "other_cpu_share", other);
}

static json_t *
tput_json(const struct results *R, int k)
{
	json_t *runs = json_array();
	for (int i = 0; i < R->n[k]; i++) {
		const struct tb_tput *t = &R->t[k][i];
		json_array_append_new(runs, json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "mb_s",
		                                      t->mb_s, "secs", t->secs, "cpu_send_s",
		                                      t->cpu_a, "cpu_recv_s", t->cpu_b,
		                                      "cpu_source_s", t->cpu_src, "cpu_sink_s",
		                                      t->cpu_snk, "other_cpu_share", t->other));
	}
	return json_pack("{s:s,s:f,s:o}", "what", tput_names[k], "median_mb_s", tput_median(R, k),
	                 "runs", runs);
}

static int
write_json(const struct results *R, const char *path)
{
	static const char *const keys[NT] = {"kiln_mux", "kiln_mux_shipped_pump", "kiln_relay",
	                                     "raw_tls", "stunnel"};
	struct utsname u;
	uname(&u);
	json_t *j = json_pack(
	        "{s:s,s:i,s:{s:i,s:s,s:[f,f,f],s:[f,f,f],s:f},s:{s:I,s:i,s:I,s:i,s:i,s:i,s:s},"
	        "s:{s:s,s:s,s:s,s:s,s:s},s:f}",
	        "tool", "kiln-bench-tunnel", "schema", 1, "host", "cpus",
	        (int)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "load_before",
	        R->load_before[0], R->load_before[1], R->load_before[2], "load_after",
	        R->load_after[0], R->load_after[1], R->load_after[2], "other_cpu_share",
	        R->other_cpu, "options", "bytes", (json_int_t)tb.o.bytes, "runs", tb.o.runs,
	        "hol_bytes", (json_int_t)tb.o.hol_bytes, "round_trips", tb.o.round_trips, "msg",
	        (int)tb.o.msg, "gap_us", (int)tb.o.gap_us, "ciphersuite", tb.o.suite, "negotiated",
	        "kiln", tb.suite_kiln, "raw_tls", tb.suite_tls, "stunnel_client", tb.suite_st_cli,
	        "stunnel_server", tb.suite_st_srv, "stunnel_version", tb.stunnel_version, "wall_s",
	        R->wall_s);
	json_object_set_new(j, "repeated_runs", json_integer(R->repeated));
	json_object_set_new(json_object_get(j, "options"), "pump",
	                    json_string(tb.o.pump_gateway ? "gateway" : "continue"));
	json_object_set_new(json_object_get(j, "options"), "pump_budget",
	                    json_integer((json_int_t)tb.o.pump_budget));
	json_t *tp = json_object();
	for (int k = 0; k < NT; k++)
		if (R->n[k])
			json_object_set_new(tp, keys[k], tput_json(R, k));
	json_object_set_new(j, "throughput", tp);
	if (R->n[4]) {
		json_t *ra = json_object();
		for (int k = 0; k < 4; k++)
			if (R->n[k])
				json_object_set_new(
				        ra, keys[k],
				        json_real(tput_median(R, k) / tput_median(R, 4)));
		json_object_set_new(j, "ratio_to_stunnel", ra);
	}
	if (R->hol)
		json_object_set_new(j, "head_of_line",
		                    json_pack("{s:o,s:o,s:f,s:I,s:f,s:f}", "idle",
		                              hist_json(&R->idle.rtt, R->idle.other), "loaded",
		                              hist_json(&R->loaded.rtt, R->loaded.other),
		                              "bulk_mb_s", R->loaded.bulk_mb_s, "transfers",
		                              (json_int_t)R->loaded.transfers, "cpu_gateway_s",
		                              R->loaded.cpu_gw, "cpu_plane_s", R->loaded.cpu_pl));
	if (R->hol)
		json_object_set_new(json_object_get(j, "head_of_line"), "loaded_gateway_pump",
		                    hist_json(&R->loaded_gw.rtt, R->loaded_gw.other));
	int r = json_dump_file(j, path, JSON_INDENT(1)) == 0 ? 0 : -EIO;
	json_decref(j);
	return r;
}

/* ---- options ---- */

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: kiln-bench-tunnel [options]\n"
	        "\n"
	        "The egress tunnel on loopback, beside baselines measured in the same run\n"
	        "(../shared/DESIGN.md: 80%% or more of stunnel's throughput over one connection;\n"
	        "a small call's p99 under 5 ms while a 100 MB transfer shares the tunnel). Two\n"
	        "gw_mux endpoints (gateway and plane roles), each pumped by its own thread with\n"
	        "poll() like kiln-gateway's loop, over one real TLS 1.3 connection made by gw_tls\n"
	        "(client certificate, pinned CA, throwaway certificates from the openssl CLI).\n"
	        "\n"
	        "Sections (interleaved run by run, each on a fresh connection):\n"
	        "  kiln     one WORK stream sends N bytes gateway -> plane as fast as flow\n"
	        "           control allows (gw_mux_write from a buffer, gw_mux_read into one)\n"
	        "  kiln-gw  the same with pump_out as gw_tunnel.c ships it (see --pump)\n"
	        "  relay    a TCP source -> plane (gw_relay) -> MCP stream -> gateway\n"
	        "           (gw_relay) -> a TCP sink: the same topology as stunnel\n"
	        "  tls      gw_tls alone, no mux: one TLS connection's ceiling\n"
	        "  stunnel  the baseline: a TCP source -> stunnel client -> stunnel server -> a\n"
	        "           TCP sink, same certificates, TLS 1.3 only, the same ciphersuite\n"
	        "  hol      request/response round trips of --msg bytes on one stream, on an\n"
	        "           idle tunnel, then while --hol-bytes transfers run back to back on\n"
	        "           another stream (gateway -> plane, the direction replies take),\n"
	        "           and again with gw_tunnel.c's pump on the gateway's side\n"
	        "Throughput is timed from the first byte written (the connection is up and\n"
	        "idle before) to the last byte read; MB = 10^6 bytes.\n"
	        "\n"
	        "Options:\n"
	        "  -b, --bytes N          bytes per throughput run (default 1G; K, M, G = 2^10..)\n"
	        "  -r, --runs R           rounds of the throughput sections (default 3); the\n"
	        "                         report gives the median\n"
	        "  -k, --round-trips K    round trips per head-of-line run (default 1000)\n"
	        "  -m, --msg S            bytes of each request and reply (default 200)\n"
	        "      --gap-us U         pause between round trips (default 1000, so 1000 of\n"
	        "                         them span several transfers; 0: back to back)\n"
	        "      --hol-bytes N      size of each transfer beside them (default 100000000)\n"
	        "      --warm-bytes N     round trips start once this much of the transfer has\n"
	        "                         arrived (default 4M)\n"
	        "  -c, --ciphersuite S    the TLS 1.3 ciphersuite every side must use (default\n"
	        "                         TLS_AES_256_GCM_SHA384, what the gateway negotiates\n"
	        "                         with OpenSSL's defaults)\n"
	        "      --stunnel PATH     the stunnel binary (default: stunnel4 or stunnel in\n"
	        "                         PATH; Debian package stunnel4)\n"
	        "  -o, --only LIST        sections, comma-separated: kiln,kiln-gw,relay,tls,\n"
	        "                         stunnel,hol (default: all)\n"
	        "      --max-frame N      mux MAX_FRAME (default 16384)\n"
	        "      --stream-window N  mux stream window (default 1M)\n"
	        "      --conn-window N    mux connection window (default 16M)\n"
	        "      --out-batch N      mux output batch (default 64K)\n"
	        "      --pump MODE        continue (default): after a short SSL_write (one TLS\n"
	        "                         record) ask the mux for the rest at once; gateway:\n"
	        "                         go back to poll() first, as gw_tunnel.c's pump_out\n"
	        "                         does today (every section then, not just kiln-gw)\n"
	        "      --pump-budget N    continue: go back to poll() after N bytes written, so\n"
	        "                         input (a small request) is read between batches\n"
	        "                         (default 64K; 0: only on EAGAIN)\n"
	        "      --read-ahead       turn on OpenSSL's read-ahead for the kiln and raw TLS\n"
	        "                         sections (gw_tls leaves it off: two read()s per record)\n"
	        "      --max-noise P      a run during which other processes used more than P%%\n"
	        "                         of the CPUs (/proc/stat) is run again (default 10)\n"
	        "      --retries N        ... at most N times (default 2); the report says how\n"
	        "                         many were repeated and the most noise a kept run saw\n"
	        "  -j, --json FILE        also write the results as JSON\n"
	        "      --keep             keep the temporary directory (certificates, stunnel\n"
	        "                         configs and logs)\n"
	        "  -h, --help             this help\n"
	        "\n"
	        "Exit status: 0 when every section ran (targets met or not), 1 when one failed,\n"
	        "2 for a usage error, 130 when interrupted.\n");
}

static int
size_arg(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *ret)
{
	char *end;
	errno = 0;
	double d = strtod(v, &end);
	double mul = *end == 'K' || *end == 'k'   ? 1024.0
	             : *end == 'M' || *end == 'm' ? 1048576.0
	             : *end == 'G' || *end == 'g' ? 1073741824.0
	                                          : 1.0;
	if (mul > 1)
		end++;
	if (errno || end == v || *end || d * mul < (double)lo || d * mul > (double)hi) {
		fprintf(stderr, "kiln-bench-tunnel: %s wants %llu to %llu, got '%s'\n", opt,
		        (unsigned long long)lo, (unsigned long long)hi, v);
		return -1;
	}
	*ret = (uint64_t)(d * mul);
	return 0;
}

static int
only_arg(const char *v, unsigned *ret)
{
	char buf[128];
	snprintf(buf, sizeof buf, "%s", v);
	*ret = 0;
	for (char *s, *t = strtok_r(buf, ",", &s); t; t = strtok_r(NULL, ",", &s)) {
		int i = 0;
		while (i < NT + 1 && strcmp(t, section_names[i]))
			i++;
		if (i == NT + 1) {
			fprintf(stderr,
			        "kiln-bench-tunnel: --only: unknown section '%s' (kiln, kiln-gw, "
			        "relay, "
			        "tls, stunnel, hol)\n",
			        t);
			return -1;
		}
		*ret |= 1u << i;
	}
	return *ret ? 0 : -1;
}

static int
parse(int argc, char **argv, struct tb_opts *o)
{
	static const struct option lo[] = {{"bytes", 1, 0, 'b'},
	                                   {"runs", 1, 0, 'r'},
	                                   {"round-trips", 1, 0, 'k'},
	                                   {"msg", 1, 0, 'm'},
	                                   {"gap-us", 1, 0, 'G'},
	                                   {"hol-bytes", 1, 0, 'H'},
	                                   {"warm-bytes", 1, 0, 'W'},
	                                   {"ciphersuite", 1, 0, 'c'},
	                                   {"stunnel", 1, 0, 'S'},
	                                   {"only", 1, 0, 'o'},
	                                   {"max-frame", 1, 0, 'F'},
	                                   {"stream-window", 1, 0, 'w'},
	                                   {"conn-window", 1, 0, 'C'},
	                                   {"out-batch", 1, 0, 'O'},
	                                   {"json", 1, 0, 'j'},
	                                   {"keep", 0, 0, 'K'},
	                                   {"pump", 1, 0, 'P'},
	                                   {"pump-budget", 1, 0, 'B'},
	                                   {"max-noise", 1, 0, 'N'},
	                                   {"read-ahead", 0, 0, 'A'},
	                                   {"retries", 1, 0, 'T'},
	                                   {"help", 0, 0, 'h'},
	                                   {0, 0, 0, 0}};
	int c;
	uint64_t v;
	while ((c = getopt_long(argc, argv, "b:r:k:m:c:o:j:h", lo, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'b':
			bad = size_arg("--bytes", optarg, 1 << 20, 1ull << 40, &o->bytes);
			break;
		case 'r':
			bad = size_arg("--runs", optarg, 1, MAX_RUNS, &v);
			o->runs = (int)v;
			break;
		case 'k':
			bad = size_arg("--round-trips", optarg, 1, 10000000, &v);
			o->round_trips = (int)v;
			break;
		case 'm':
			bad = size_arg("--msg", optarg, 1, MSG_MAX, &v);
			o->msg = (size_t)v;
			break;
		case 'G':
			bad = size_arg("--gap-us", optarg, 0, 10000000, &v);
			o->gap_us = (uint32_t)v;
			break;
		case 'H':
			bad = size_arg("--hol-bytes", optarg, 1 << 20, 1ull << 40, &o->hol_bytes);
			break;
		case 'W':
			bad = size_arg("--warm-bytes", optarg, 0, 1ull << 32, &o->warm_bytes);
			break;
		case 'c':
			o->suite = optarg;
			break;
		case 'S':
			o->stunnel = optarg;
			break;
		case 'o':
			bad = only_arg(optarg, &o->only);
			break;
		case 'F':
			bad = size_arg("--max-frame", optarg, GW_FRAME_MIN, GW_FRAME_MAX, &v);
			o->max_frame = (uint32_t)v;
			break;
		case 'w':
			bad = size_arg("--stream-window", optarg, GW_WINDOW_MIN, GW_WINDOW_MAX, &v);
			o->stream_window = (uint32_t)v;
			break;
		case 'C':
			bad = size_arg("--conn-window", optarg, GW_WINDOW_MIN, GW_WINDOW_MAX, &v);
			o->conn_window = (uint32_t)v;
			break;
		case 'O':
			bad = size_arg("--out-batch", optarg, 1024, 64 << 20, &v);
			o->out_batch = (size_t)v;
			break;
		case 'j':
			o->json = optarg;
			break;
		case 'K':
			o->keep = true;
			break;
		case 'N':
			bad = size_arg("--max-noise", optarg, 0, 100, &v);
			o->max_noise = (double)v / 100;
			break;
		case 'T':
			bad = size_arg("--retries", optarg, 0, 100, &v);
			o->retries = (int)v;
			break;
		case 'A':
			o->read_ahead = true;
			break;
		case 'B':
			bad = size_arg("--pump-budget", optarg, 0, 1ull << 32, &v);
			o->pump_budget = (size_t)v;
			break;
		case 'P':
			o->pump_gateway = !strcmp(optarg, "gateway");
			if (!o->pump_gateway && strcmp(optarg, "continue")) {
				fprintf(stderr, "kiln-bench-tunnel: --pump: continue or gateway\n");
				return -1;
			}
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -1;
		}
		if (bad)
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, "kiln-bench-tunnel: unexpected argument '%s' (see --help)\n",
		        argv[optind]);
		return -1;
	}
	return 0;
}

/* ---- main ---- */

static void
progress(const char *what, int run, const struct tb_tput *t)
{
	fprintf(stderr,
	        "kiln-bench-tunnel: %-8s run %d: %7.1f MB/s (%.2f s; other processes used %.0f%% "
	        "of the CPUs)\n",
	        what, run + 1, t->mb_s, t->secs, 100 * t->other);
}

/* Noise: the share of all CPUs that other processes used over an interval
 * (/proc/stat busy time minus ours; children not reaped yet come as extra). */
struct meter {
	uint64_t busy, total;
	double self;
};

static void
meter_start(struct meter *m)
{
	cpu_sample(&m->busy, &m->total);
	m->self = self_cpu_s();
}

static double
meter_other(const struct meter *m, double extra)
{
	uint64_t busy, total;
	cpu_sample(&busy, &total);
	double tck = (double)sysconf(_SC_CLK_TCK), self = self_cpu_s() - m->self + extra;
	if (total <= m->total)
		return -1;
	return fmax(((double)(busy - m->busy) / tck - self) / ((double)(total - m->total) / tck),
	            0);
}

/* One throughput run of section k, repeated (up to --retries times) while
 * other processes used more than --max-noise of the CPUs during it. */
static int
one_run(struct results *R, int k, int round, char *err, size_t errlen)
{
	typedef int (*runner)(struct tb_tput *, char *, size_t);
	static const runner fns[NT] = {tb_run_kiln, tb_run_kiln_gw, tb_run_relay, tb_run_tls,
	                               tb_run_stunnel};
	struct tb_tput *t = &R->t[k][R->n[k]];
	for (int a = 0;; a++) {
		struct meter mt;
		meter_start(&mt);
		memset(t, 0, sizeof *t);
		int r = fns[k](t, err, errlen);
		/* stunnel's processes are not reaped yet: their CPU comes as extra */
		t->other = meter_other(&mt, k == 4 ? t->cpu_a + t->cpu_b : 0);
		if (r < 0)
			return r;
		progress(section_names[k], round, t);
		if (t->other <= tb.o.max_noise || a >= tb.o.retries || tb_interrupted)
			break;
		R->repeated++;
	}
	R->n[k]++;
	return 0;
}

static int
run_throughput(struct results *R)
{
	static const unsigned bits[NT] = {S_KILN, S_KILNGW, S_RELAY, S_TLS, S_STUNNEL};
	char err[1024];
	for (int i = 0; i < tb.o.runs && !tb_interrupted; i++)
		for (int k = 0; k < NT && !tb_interrupted; k++) {
			if (!(tb.o.only & bits[k]))
				continue;
			if (one_run(R, k, i, err, sizeof err) < 0) {
				fprintf(stderr, "kiln-bench-tunnel: %s: %s\n", section_names[k],
				        err);
				return -1;
			}
		}
	return 0;
}

static int
run_hol(struct results *R)
{
	static const char *const what[3] = {"on an idle tunnel", "beside transfers",
	                                    "beside transfers, gw_tunnel.c's pump"};
	struct tb_hol_result *res[3] = {&R->idle, &R->loaded, &R->loaded_gw};
	char err[1024];
	for (int i = 0; i < 3 && !tb_interrupted; i++)
		for (int a = 0;; a++) {
			struct meter mt;
			meter_start(&mt);
			if (tb_run_hol(i > 0, i == 2, res[i], err, sizeof err) < 0) {
				fprintf(stderr, "kiln-bench-tunnel: hol (%s): %s\n", what[i], err);
				return -1;
			}
			res[i]->other = meter_other(&mt, 0);
			fprintf(stderr,
			        "kiln-bench-tunnel: head-of-line: %d round trips %s: p99 %.3f ms "
			        "(other processes used %.0f%% of the CPUs)\n",
			        tb.o.round_trips, what[i],
			        (double)kl_hist_percentile(&res[i]->rtt, 99) / 1e6,
			        100 * res[i]->other);
			if (res[i]->other <= tb.o.max_noise || a >= tb.o.retries || tb_interrupted)
				break;
			R->repeated++;
		}
	R->hol = !tb_interrupted;
	return 0;
}

static int
run_all(struct results *R)
{
	char err[1024];
	if ((tb.o.only & S_STUNNEL) && tb_stunnel_start(err, sizeof err) < 0) {
		fprintf(stderr, "kiln-bench-tunnel: %s\n", err);
		return -1;
	}
	int r = run_throughput(R);
	tb_stunnel_stop();
	if (r < 0 || tb_interrupted || !(tb.o.only & S_HOL))
		return r;
	return run_hol(R);
}

static void
remove_dir(void)
{
	char cmd[300];
	if (!tb.dir[0])
		return;
	if (tb.o.keep) {
		fprintf(stderr, "kiln-bench-tunnel: files kept in %s\n", tb.dir);
		return;
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tb.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "kiln-bench-tunnel: could not remove %s\n", tb.dir);
}

static int
setup(void)
{
	char err[1024];
	snprintf(tb.dir, sizeof tb.dir, "/tmp/kiln-bench-tunnel-XXXXXX");
	if (!mkdtemp(tb.dir)) {
		fprintf(stderr, "kiln-bench-tunnel: mkdtemp: %s\n", strerror(errno));
		tb.dir[0] = 0;
		return -1;
	}
	if (make_certs(err, sizeof err) < 0 || make_ctx(err, sizeof err) < 0) {
		fprintf(stderr, "kiln-bench-tunnel: %s\n", err);
		return -1;
	}
	for (size_t i = 0; i < sizeof tb.src; i++) /* incompressible, not that TLS 1.3 cares */
		tb.src[i] = (uint8_t)(i * 2654435761u >> 13);
	return 0;
}

int
main(int argc, char **argv)
{
	tb.o = (struct tb_opts){.bytes = 1ull << 30,
	                        .runs = 3,
	                        .hol_bytes = 100000000,
	                        .round_trips = 1000,
	                        .msg = 200,
	                        .gap_us = 1000,
	                        .pump_budget = 64 << 10,
	                        .max_noise = 0.1,
	                        .retries = 2,
	                        .warm_bytes = 4 << 20,
	                        .suite = "TLS_AES_256_GCM_SHA384",
	                        .only = S_ALL};
	int r = parse(argc, argv, &tb.o);
	if (r)
		return r > 0 ? 0 : 2;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct results *R = kl_xcalloc(1, sizeof *R);
	getloadavg(R->load_before, 3);
	uint64_t t0 = kl_now_ns();
	struct meter mt;
	meter_start(&mt);
	r = setup() < 0 ? -1 : run_all(R);
	R->other_cpu = meter_other(&mt, 0);
	R->wall_s = (double)(kl_now_ns() - t0) / 1e9;
	getloadavg(R->load_after, 3);
	if (R->n[0] || R->n[1] || R->n[2] || R->n[3] || R->n[4] || R->hol) {
		print_report(R);
		if (tb.o.json && write_json(R, tb.o.json) < 0) {
			fprintf(stderr, "kiln-bench-tunnel: cannot write %s\n", tb.o.json);
			r = -1;
		}
	}
	SSL_CTX_free(tb.cctx);
	SSL_CTX_free(tb.sctx);
	remove_dir();
	free(R);
	if (tb_interrupted)
		return 130;
	return r < 0 ? 1 : 0;
}
