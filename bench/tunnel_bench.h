/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench-tunnel's shared declarations. The program is split by concern:
 * tunnel_bench.c (options, certificates, the report, main), tunnel_bench_net.c
 * (sockets, the TLS pair every kiln section runs over, the TCP source and
 * sink, and the baselines: raw TLS and stunnel) and tunnel_bench_mux.c (the
 * gw_mux endpoints and the kiln, relay and head-of-line sections).
 *
 * Threading: main runs the sections one after the other; a section starts
 * its threads (one per tunnel endpoint, source, sink) and joins them before
 * it returns. tb is written by main before any section and by a section's
 * main-thread code only, except the negotiated-suite strings, which a
 * section writes before its threads start.
 */
#ifndef KILN_TUNNEL_BENCH_H
#define KILN_TUNNEL_BENCH_H

#include <openssl/ssl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kl_hist.h"

#define MB         1e6 /* throughput is in MB/s: 10^6 bytes */
#define MAX_RUNS   50
#define MSG_MAX    65536
#define IO_CHUNK   65536
#define PLANE_NAME "plane.test"

struct tb_opts {
	uint64_t bytes;     /* per throughput run */
	int runs;           /* rounds of the throughput measurements */
	uint64_t hol_bytes; /* each transfer beside the round trips */
	int round_trips;
	size_t msg;
	uint32_t gap_us; /* between round trips */
	uint64_t warm_bytes;
	const char *suite;
	const char *stunnel;
	unsigned only;
	uint32_t max_frame, stream_window, conn_window;
	size_t out_batch;
	const char *json;
	bool keep;
	bool pump_gateway;  /* pump_out as gw_tunnel.c: back to poll() after a short write */
	size_t pump_budget; /* continue: back to poll() after this many bytes (0: never) */
	double max_noise;   /* a run during which others used more of the CPUs is repeated */
	int retries;        /* ... at most this many times */
	bool read_ahead;    /* SSL_CTX_set_read_ahead on the kiln and raw TLS contexts */
};

/* What every section shares: certificates, TLS contexts, the ciphersuites
 * each side negotiated, a buffer to send from. */
struct tb_globals {
	struct tb_opts o;
	char dir[128];
	char ca[256], srv_crt[256], srv_key[256], cli_crt[256], cli_key[256];
	SSL_CTX *cctx, *sctx;
	char suite_kiln[64], suite_tls[64], suite_st_cli[64], suite_st_srv[64];
	char stunnel_exe[256], stunnel_version[64];
	uint8_t src[IO_CHUNK];
};

extern struct tb_globals tb;
/* Set by SIGINT/SIGTERM: every loop stops at its next check. */
extern volatile sig_atomic_t tb_interrupted;

/* ---- tunnel_bench_net.c ---- */

double tb_thread_cpu_s(void);
/* user+system seconds of a process, -1 if it is gone. */
double tb_proc_cpu_s(pid_t pid);
void tb_nodelay(int fd);
/* A listening socket on 127.0.0.1 (port 0: any; *ret_port gets it), or -errno. */
int tb_listen_lo(int port, int *ret_port);
/* A connected socket to 127.0.0.1:port (TCP_NODELAY), or -errno. */
int tb_connect_lo(int port);

struct tb_conn {
	SSL *ssl;
	int fd;
};

/* One TLS 1.3 connection on loopback: gw (gw_tls_dial, the gateway's side)
 * and pl (gw_tls_accept, the plane's side), both non-blocking. */
int tb_tls_pair(struct tb_conn *gw, struct tb_conn *pl, char *err, size_t errlen);

/* One throughput run's result. */
struct tb_tput {
	double mb_s, secs;
	double cpu_a, cpu_b;     /* sender side, receiver side (threads or processes) */
	double cpu_src, cpu_snk; /* TCP source and sink threads (relay, stunnel) */
	double other;            /* share of all CPUs other processes used meanwhile */
};

void tb_tput_set(struct tb_tput *t, uint64_t bytes, uint64_t t0, uint64_t t1);

/* A TCP source and a sink around a tunnel (kiln relay, stunnel): the source
 * writes n bytes once the sink has its connection; the sink reads them and
 * sets *stop. Run each in its own thread. */
struct tb_tcp_ends {
	uint64_t n;
	int src_fd; /* connected by the caller, or -1: connect to src_port */
	int src_port;
	int sink_lfd; /* the sink accepts its one connection here */
	atomic_bool sink_connected;
	atomic_bool *stop;
	uint64_t t0, t1, got;
	double cpu_src, cpu_snk;
	int err;
};

void *tb_source_main(void *arg);
void *tb_sink_main(void *arg);

/* The sections: 0 and *t filled, or -errno with a message in err. */
int tb_run_tls(struct tb_tput *t, char *err, size_t errlen);
int tb_stunnel_start(char *err, size_t errlen);
int tb_run_stunnel(struct tb_tput *t, char *err, size_t errlen);
/* Stops the stunnel processes (accepts never-started). */
void tb_stunnel_stop(void);

/* ---- tunnel_bench_mux.c ---- */

int tb_run_kiln(struct tb_tput *t, char *err, size_t errlen);
int tb_run_kiln_gw(struct tb_tput *t, char *err, size_t errlen);
int tb_run_relay(struct tb_tput *t, char *err, size_t errlen);

struct tb_hol_result {
	kl_hist rtt;
	double bulk_mb_s, secs;
	uint64_t transfers;
	double cpu_gw, cpu_pl;
	double other; /* share of all CPUs other processes used meanwhile */
};

/* Round trips on an idle tunnel (load false) or beside transfers; with
 * pump_gateway the gateway's pump_out is gw_tunnel.c's. */
int tb_run_hol(bool load, bool pump_gateway, struct tb_hol_result *res, char *err, size_t errlen);

#endif
