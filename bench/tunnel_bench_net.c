/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-bench-tunnel's plumbing and baselines (tunnel_bench.h): loopback
 * sockets, the TLS 1.3 pair every kiln section runs over (gw_tls_dial
 * against gw_tls_accept, the gateway's and the simulator's own calls), the
 * TCP source and sink, and the two references: raw TLS (gw_tls alone, no
 * mux) and stunnel (a client-mode and a server-mode stunnel with the same
 * certificates, TLS 1.3 only and the same ciphersuite; its logs say what was
 * negotiated).
 */
#include "tunnel_bench.h"

#include "gw_tls.h"

#include "kl_clock.h"
#include "kl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---- */

double
tb_thread_cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* user+system seconds of a process, -1 if it is gone. */
double
tb_proc_cpu_s(pid_t pid)
{
	char path[64], buf[2048];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (!p ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

void
tb_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A listening socket on 127.0.0.1 (port 0: any); *port gets the port. */
int
tb_listen_lo(int port, int *ret_port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	socklen_t len = sizeof a;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	*ret_port = ntohs(a.sin_port);
	return fd;
}

/* A free port (bound and released: a small race remains). */
static int
free_port(void)
{
	int port = -1, fd = tb_listen_lo(0, &port);
	if (fd >= 0)
		close(fd);
	return fd >= 0 ? port : -1;
}

int
tb_connect_lo(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	tb_nodelay(fd);
	return fd;
}

/* ---- certificates and TLS contexts ---- */

struct acceptor {
	int lfd;
	struct tb_conn c;
	int rc;
	char err[512];
};

static void *
accept_main(void *arg)
{
	struct acceptor *a = arg;
	char cn[128];
	int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		a->rc = -errno;
		snprintf(a->err, sizeof a->err, "accept: %s", strerror(errno));
		return NULL;
	}
	tb_nodelay(fd);
	a->rc = gw_tls_accept(tb.sctx, fd, 10000, &a->c.ssl, cn, sizeof cn, a->err, sizeof a->err);
	if (a->rc < 0)
		close(fd);
	else
		a->c.fd = fd;
	return NULL;
}

/* One TLS 1.3 connection on loopback: gw (gw_tls_dial, the gateway's side)
 * and pl (gw_tls_accept, the plane's side), both non-blocking. */
int
tb_tls_pair(struct tb_conn *gw, struct tb_conn *pl, char *err, size_t errlen)
{
	struct acceptor a = {.rc = -1};
	int port;
	a.lfd = tb_listen_lo(0, &port);
	if (a.lfd < 0) {
		snprintf(err, errlen, "listen: %s", strerror(-a.lfd));
		return a.lfd;
	}
	pthread_t th;
	pthread_create(&th, NULL, accept_main, &a);
	gw_tls_dial_cfg dc = {.host = "127.0.0.1",
	                      .port = (uint16_t)port,
	                      .server_name = PLANE_NAME,
	                      .ca_file = tb.ca,
	                      .cert_file = tb.cli_crt,
	                      .key_file = tb.cli_key,
	                      .timeout_ms = 10000};
	int r = gw_tls_dial(tb.cctx, &dc, &gw->ssl, &gw->fd, err, errlen);
	if (r < 0)
		shutdown(a.lfd, SHUT_RDWR); /* the acceptor gives up */
	pthread_join(th, NULL);
	close(a.lfd);
	if (r == 0 && a.rc < 0) {
		gw_tls_close(gw->ssl, gw->fd);
		snprintf(err, errlen, "%s", a.err);
		return a.rc;
	}
	if (r < 0) {
		if (a.rc == 0)
			gw_tls_close(a.c.ssl, a.c.fd);
		return r;
	}
	*pl = a.c;
	return 0;
}

/* ---- TCP source and sink (kiln relay, stunnel) ---- */

/* The source writes once the sink has its connection: the tunnel is up end
 * to end before the clock starts, so no handshake is timed. */
void *
tb_source_main(void *arg)
{
	struct tb_tcp_ends *t = arg;
	double c0 = tb_thread_cpu_s();
	int fd = t->src_fd >= 0 ? t->src_fd : tb_connect_lo(t->src_port);
	if (fd < 0) {
		t->err = fd;
		atomic_store(t->stop, true);
		return NULL;
	}
	while (!atomic_load(&t->sink_connected) && !atomic_load(t->stop))
		usleep(200);
	t->t0 = kl_now_ns();
	uint64_t sent = 0;
	while (sent < t->n && !atomic_load(t->stop)) {
		ssize_t w = write(fd, tb.src, KL_MIN(sizeof tb.src, t->n - sent));
		if (w <= 0) {
			t->err = -errno;
			break;
		}
		sent += (uint64_t)w;
	}
	shutdown(fd, SHUT_WR);
	t->cpu_src = tb_thread_cpu_s() - c0;
	/* Hold the socket until the sink is done: closing early would reset it. */
	while (!atomic_load(t->stop))
		usleep(1000);
	close(fd);
	return NULL;
}

void *
tb_sink_main(void *arg)
{
	struct tb_tcp_ends *t = arg;
	static _Thread_local uint8_t buf[IO_CHUNK];
	double c0 = tb_thread_cpu_s();
	struct pollfd p = {t->sink_lfd, POLLIN, 0};
	while (!atomic_load(t->stop) && poll(&p, 1, 50) == 0)
		;
	int fd = atomic_load(t->stop) ? -1 : accept4(t->sink_lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		atomic_store(t->stop, true);
		return NULL;
	}
	atomic_store(&t->sink_connected, true);
	c0 = tb_thread_cpu_s();
	while (t->got < t->n) {
		ssize_t k = read(fd, buf, sizeof buf);
		if (k <= 0)
			break;
		t->got += (uint64_t)k;
	}
	t->t1 = kl_now_ns();
	t->cpu_snk = tb_thread_cpu_s() - c0;
	close(fd);
	atomic_store(t->stop, true);
	return NULL;
}

/* ---- section: raw TLS, gw_tls without the mux ---- */

struct rawtls {
	struct tb_conn s, r;
	uint64_t n, t0, t1, got;
	double cpu_s, cpu_r;
	atomic_bool stop;
	char err[320];
};

static bool
wait_io(int fd, short ev, atomic_bool *stop)
{
	struct pollfd p = {fd, ev, 0};
	while (!atomic_load(stop) && !tb_interrupted)
		if (poll(&p, 1, 50) > 0)
			return true;
	return false;
}

static void *
raw_send(void *arg)
{
	struct rawtls *x = arg;
	double c0 = tb_thread_cpu_s();
	uint64_t sent = 0;
	x->t0 = kl_now_ns();
	while (sent < x->n) {
		short want = 0;
		char err[256] = "stopped";
		ssize_t w = gw_tls_write(x->s.ssl, tb.src, KL_MIN(sizeof tb.src, x->n - sent),
		                         &want, err, sizeof err);
		if (w == -EAGAIN && wait_io(x->s.fd, want, &x->stop))
			continue;
		if (w <= 0) {
			snprintf(x->err, sizeof x->err, "raw TLS write: %s", err);
			break;
		}
		sent += (uint64_t)w;
	}
	x->cpu_s = tb_thread_cpu_s() - c0;
	return NULL;
}

static void *
raw_recv(void *arg)
{
	struct rawtls *x = arg;
	static _Thread_local uint8_t buf[IO_CHUNK];
	double c0 = tb_thread_cpu_s();
	while (x->got < x->n) {
		short want = 0;
		char err[256] = "stopped";
		ssize_t k = gw_tls_read(x->r.ssl, buf, sizeof buf, &want, err, sizeof err);
		if (k == -EAGAIN && wait_io(x->r.fd, want, &x->stop))
			continue;
		if (k <= 0) {
			snprintf(x->err, sizeof x->err, "raw TLS read: %s", k ? err : "EOF");
			break;
		}
		x->got += (uint64_t)k;
	}
	x->t1 = kl_now_ns();
	x->cpu_r = tb_thread_cpu_s() - c0;
	atomic_store(&x->stop, true);
	return NULL;
}

int
tb_run_tls(struct tb_tput *t, char *err, size_t errlen)
{
	struct rawtls x = {.n = tb.o.bytes};
	int r = tb_tls_pair(&x.s, &x.r, err, errlen);
	if (r < 0)
		return r;
	snprintf(tb.suite_tls, sizeof tb.suite_tls, "%s", SSL_get_cipher_name(x.s.ssl));
	pthread_t a, b;
	pthread_create(&b, NULL, raw_recv, &x);
	pthread_create(&a, NULL, raw_send, &x);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	gw_tls_close(x.s.ssl, x.s.fd);
	gw_tls_close(x.r.ssl, x.r.fd);
	if (x.got < x.n) {
		snprintf(err, errlen, "%s", x.err[0] ? x.err : "raw TLS: short transfer");
		return -EIO;
	}
	tb_tput_set(t, x.got, x.t0, x.t1);
	t->cpu_a = x.cpu_s;
	t->cpu_b = x.cpu_r;
	return 0;
}

/* ---- section: stunnel ---- */

static struct {
	pid_t cli, srv;
	int cli_port, srv_port, sink_lfd;
	char cli_log[256], srv_log[256];
} ST = {.cli = -1, .srv = -1, .sink_lfd = -1};

static bool
find_exe(const char *name, char *out, size_t n)
{
	if (strchr(name, '/')) {
		snprintf(out, n, "%s", name);
		return access(out, X_OK) == 0;
	}
	const char *path = getenv("PATH");
	char dirs[4096];
	snprintf(dirs, sizeof dirs, "%s:/usr/bin:/usr/sbin:/bin", path ? path : "");
	for (char *s, *d = strtok_r(dirs, ":", &s); d; d = strtok_r(NULL, ":", &s)) {
		snprintf(out, n, "%s/%s", d, name);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

static int
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");
	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -EIO;
}

/* One stunnel's config: client mode dials srv_port and checks the plane's
 * name; server mode requires a client certificate. Both TLS 1.3 only, the
 * one ciphersuite, the same CA and certificates as the kiln sections. */
static int
stunnel_conf(const char *path, bool client, int accept_port, int connect_port)
{
	char text[2048];
	snprintf(text, sizeof text,
	         "foreground = yes\npid =\ndebug = info\n"
	         "[%s]\n%s"
	         "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\n"
	         "cert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\n%s"
	         "sslVersionMin = TLSv1.3\nciphersuites = %s\n",
	         client ? "cli" : "srv", client ? "client = yes\n" : "", accept_port, connect_port,
	         client ? tb.cli_crt : tb.srv_crt, client ? tb.cli_key : tb.srv_key, tb.ca,
	         client ? "checkHost = " PLANE_NAME "\nsni = " PLANE_NAME "\n"
	                : "requireCert = yes\n",
	         tb.o.suite);
	return write_file(path, text);
}

static pid_t
spawn_logged(const char *exe, const char *conf, const char *log)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	pid_t parent = getpid(), p = fork();
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(exe, exe, conf, (char *)NULL);
		_exit(127);
	}
	close(fd);
	return p < 0 ? -errno : p;
}

/* The last line of path that holds needle, after it ("" if none). */
static void
log_find(const char *path, const char *needle, char *out, size_t n)
{
	char line[1024];
	FILE *f = fopen(path, "re");
	out[0] = 0;
	while (f && fgets(line, sizeof line, f)) {
		char *p = strstr(line, needle);
		if (p) {
			p += strlen(needle);
			p[strcspn(p, " \r\n")] = 0;
			snprintf(out, n, "%s", p);
		}
	}
	if (f)
		fclose(f);
}

void
tb_stunnel_stop(void)
{
	pid_t v[2] = {ST.cli, ST.srv};
	for (int i = 0; i < 2; i++)
		if (v[i] > 0) {
			kill(v[i], SIGTERM);
			waitpid(v[i], NULL, 0);
		}
	ST.cli = ST.srv = -1;
	if (ST.sink_lfd >= 0)
		close(ST.sink_lfd);
	ST.sink_lfd = -1;
}

int
tb_stunnel_start(char *err, size_t errlen)
{
	char ccf[256], scf[256], tmp[64];
	int sink_port;
	const char *want = tb.o.stunnel;
	if (!(want ? find_exe(want, tb.stunnel_exe, sizeof tb.stunnel_exe)
	           : find_exe("stunnel4", tb.stunnel_exe, sizeof tb.stunnel_exe) ||
	                      find_exe("stunnel", tb.stunnel_exe, sizeof tb.stunnel_exe))) {
		snprintf(err, errlen,
		         "stunnel not found (Debian: apt-get install stunnel4; or --stunnel PATH)");
		return -ENOENT;
	}
	ST.sink_lfd = tb_listen_lo(0, &sink_port);
	ST.cli_port = free_port();
	ST.srv_port = free_port();
	snprintf(ccf, sizeof ccf, "%s/stunnel-client.conf", tb.dir);
	snprintf(scf, sizeof scf, "%s/stunnel-server.conf", tb.dir);
	snprintf(ST.cli_log, sizeof ST.cli_log, "%s/stunnel-client.log", tb.dir);
	snprintf(ST.srv_log, sizeof ST.srv_log, "%s/stunnel-server.log", tb.dir);
	if (ST.sink_lfd < 0 || ST.cli_port < 0 || ST.srv_port < 0 ||
	    stunnel_conf(ccf, true, ST.cli_port, ST.srv_port) < 0 ||
	    stunnel_conf(scf, false, ST.srv_port, sink_port) < 0) {
		snprintf(err, errlen, "stunnel: setting up %s failed", tb.dir);
		return -EIO;
	}
	ST.srv = spawn_logged(tb.stunnel_exe, scf, ST.srv_log);
	ST.cli = spawn_logged(tb.stunnel_exe, ccf, ST.cli_log);
	for (int i = 0; i < 1000; i++) { /* both say so once they listen */
		char a[64], b[64];
		log_find(ST.cli_log, "Accepting new ", a, sizeof a);
		log_find(ST.srv_log, "Accepting new ", b, sizeof b);
		if (a[0] && b[0]) {
			log_find(ST.cli_log, "stunnel ", tmp, sizeof tmp);
			snprintf(tb.stunnel_version, sizeof tb.stunnel_version, "%s", tmp);
			return 0;
		}
		if (waitpid(ST.cli, NULL, WNOHANG) == ST.cli ||
		    waitpid(ST.srv, NULL, WNOHANG) == ST.srv)
			break;
		usleep(10000);
	}
	snprintf(err, errlen, "stunnel did not start: see %s and %s (--keep keeps them)",
	         ST.cli_log, ST.srv_log);
	return -EIO;
}

int
tb_run_stunnel(struct tb_tput *t, char *err, size_t errlen)
{
	atomic_bool stop = false;
	struct tb_tcp_ends te = {
	        .n = tb.o.bytes, .src_fd = -1, .src_port = ST.cli_port, .stop = &stop};
	te.sink_lfd = ST.sink_lfd;
	double c0 = tb_proc_cpu_s(ST.cli), s0 = tb_proc_cpu_s(ST.srv);
	pthread_t ts, tk;
	pthread_create(&tk, NULL, tb_sink_main, &te);
	pthread_create(&ts, NULL, tb_source_main, &te);
	pthread_join(ts, NULL);
	pthread_join(tk, NULL);
	double c1 = tb_proc_cpu_s(ST.cli), s1 = tb_proc_cpu_s(ST.srv);
	if (te.got < te.n) {
		snprintf(err, errlen, "stunnel: the sink got %llu of %llu bytes (%s)",
		         (unsigned long long)te.got, (unsigned long long)te.n,
		         te.err ? strerror(-te.err) : "see the stunnel logs");
		return -EIO;
	}
	tb_tput_set(t, te.got, te.t0, te.t1);
	t->cpu_a = c1 - c0;
	t->cpu_b = s1 - s0;
	t->cpu_src = te.cpu_src;
	t->cpu_snk = te.cpu_snk;
	log_find(ST.cli_log, "ciphersuite: ", tb.suite_st_cli, sizeof tb.suite_st_cli);
	log_find(ST.srv_log, "ciphersuite: ", tb.suite_st_srv, sizeof tb.suite_st_srv);
	return 0;
}

void
tb_tput_set(struct tb_tput *t, uint64_t bytes, uint64_t t0, uint64_t t1)
{
	t->secs = (double)(t1 - t0) / 1e9;
	t->mb_s = t->secs > 0 ? (double)bytes / MB / t->secs : 0;
}
