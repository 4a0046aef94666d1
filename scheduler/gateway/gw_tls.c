/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tunnel TLS (see gw_tls.h). The dial is synchronous on purpose: the gateway
 * has nothing else to do on its tunnel thread until the connection is up
 * (results keep arriving through its mailbox meanwhile), and a blocking dial
 * with per-step timeouts turns every failure into one clear message.
 */
#include "gw_tls.h"

#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

static void
ssl_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t n = strlen(buf), start = n;
	while ((e = ERR_get_error()) && n + 2 < len) {
		char one[256];
		ERR_error_string_n(e, one, sizeof one);
		n += (size_t)snprintf(buf + n, len - n, "%s%s", n > start ? "; " : "", one);
	}
}

SSL_CTX *
gw_tls_client_ctx(const gw_tls_dial_cfg *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	err[0] = 0;
	if (!ctx) {
		snprintf(err, errlen, "TLS: cannot create a context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	/* The mux hands us iovecs and consumes what was written. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Only the pinned CA: never the system store. */
	if (!cfg->ca_file || SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
		snprintf(err, errlen, "TLS: cannot load the control plane's CA from %s: ",
		         cfg->ca_file ? cfg->ca_file : "(ca_file not set)");
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cfg->cert_file && SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
		snprintf(err, errlen, "TLS: cannot load our certificate %s: ", cfg->cert_file);
		goto fail;
	}
	if (cfg->key_file &&
	    (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
	     SSL_CTX_check_private_key(ctx) != 1)) {
		snprintf(err, errlen,
		         "TLS: cannot load our key %s (or it does not match %s): ", cfg->key_file,
		         cfg->cert_file ? cfg->cert_file : "the certificate");
		goto fail;
	}
	return ctx;
fail:
	ssl_errors(err, errlen);
	SSL_CTX_free(ctx);
	return NULL;
}

static int
wait_fd(int fd, short ev, int timeout_ms)
{
	struct pollfd p = {fd, ev, 0};
	int r;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	return r > 0 ? 0 : r == 0 ? -ETIMEDOUT : -errno;
}

static int
tcp_connect(const char *host, uint16_t port, int timeout_ms, int *ret_fd, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char ps[8];
	snprintf(ps, sizeof ps, "%u", port);
	int g = getaddrinfo(host, ps, &hints, &res);
	if (g) {
		snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(g));
		return -EHOSTUNREACH;
	}
	int r = -ECONNREFUSED;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
			r = -errno;
			close(fd);
			continue;
		}
		r = wait_fd(fd, POLLOUT, timeout_ms);
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr)
			r = -soerr;
		if (r == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			*ret_fd = fd;
			freeaddrinfo(res);
			return 0;
		}
		close(fd);
	}
	freeaddrinfo(res);
	snprintf(err, errlen, "cannot connect to %s:%u: %s", host, port, strerror(-r));
	return r;
}

/* CONNECT through an HTTPS proxy: the tunnel to the control plane then runs
 * inside the proxy's TCP connection. */
static int
proxy_connect(int fd, const gw_tls_dial_cfg *cfg, char *err, size_t errlen)
{
	char req[512], resp[1024];
	int n = snprintf(req, sizeof req, "CONNECT %s:%u HTTP/1.1\r\nHost: %s:%u\r\n\r\n",
	                 cfg->host, cfg->port, cfg->host, cfg->port);
	if (kl_write_all(fd, req, (size_t)n) < 0 && errno != EAGAIN) {
		snprintf(err, errlen, "proxy %s:%u: sending CONNECT failed", cfg->proxy_host,
		         cfg->proxy_port);
		return -EIO;
	}
	size_t got = 0;
	while (got < sizeof resp - 1) {
		if (wait_fd(fd, POLLIN, cfg->timeout_ms) < 0) {
			snprintf(err, errlen, "proxy %s:%u: no answer to CONNECT", cfg->proxy_host,
			         cfg->proxy_port);
			return -ETIMEDOUT;
		}
		/* One byte at a time: nothing past the header may be consumed. */
		ssize_t k = recv(fd, resp + got, 1, 0);
		if (k <= 0) {
			snprintf(err, errlen, "proxy %s:%u closed the connection during CONNECT",
			         cfg->proxy_host, cfg->proxy_port);
			return -ECONNRESET;
		}
		got++;
		resp[got] = 0;
		if (got >= 4 && !strcmp(resp + got - 4, "\r\n\r\n"))
			break;
	}
	int status = 0;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
		char *eol = strstr(resp, "\r\n");
		if (eol)
			*eol = 0;
		snprintf(err, errlen, "proxy %s:%u refused CONNECT %s:%u: %.200s", cfg->proxy_host,
		         cfg->proxy_port, cfg->host, cfg->port, resp);
		return -ECONNREFUSED;
	}
	return 0;
}

static void
verify_text(SSL *ssl, char *err, size_t errlen)
{
	long v = SSL_get_verify_result(ssl);
	size_t n = strlen(err);
	if (v == X509_V_ERR_HOSTNAME_MISMATCH)
		snprintf(err + n, errlen - n,
		         ": the certificate does not name this server (hostname mismatch): check "
		         "server_name");
	else if (v != X509_V_OK)
		snprintf(err + n, errlen - n,
		         ": certificate verify failed (%s): the control plane's certificate is not "
		         "signed by ca_file",
		         X509_verify_cert_error_string(v));
}

/* TLS 1.3 completes the client's handshake before the server has checked the
 * client certificate: its verdict -- session tickets, or an alert refusing
 * the certificate -- arrives just after. Wait briefly for it, so a refusal
 * is reported as what it is instead of as a tunnel that breaks at once. */
static int
server_verdict(SSL *ssl, int fd, const gw_tls_dial_cfg *cfg, char *err, size_t errlen)
{
	if (wait_fd(fd, POLLIN, KL_MIN(cfg->timeout_ms, 2000)) < 0)
		return 0; /* nothing (a server that sends no tickets): carry on */
	char b;
	size_t got;
	int k = SSL_peek_ex(ssl, &b, 1, &got);
	int e = SSL_get_error(ssl, k);
	if (k == 1 || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	snprintf(err, errlen, "TLS: the control plane %s:%u refused our client certificate %s (",
	         cfg->host, cfg->port, cfg->cert_file ? cfg->cert_file : "(none)");
	size_t n = strlen(err);
	ssl_errors(err, errlen - 1);
	if (strlen(err) == n)
		strncat(err, "it closed the connection", errlen - strlen(err) - 1);
	strncat(err, "): check that cert_file is signed by the CA the control plane trusts",
	        errlen - strlen(err) - 1);
	return -EACCES;
}

int
gw_tls_dial(SSL_CTX *ctx, const gw_tls_dial_cfg *cfg, SSL **ret_ssl, int *ret_fd, char *err,
            size_t errlen)
{
	int fd = -1, r;
	const char *name = cfg->server_name ? cfg->server_name : cfg->host;
	err[0] = 0;
	if (cfg->proxy_host) {
		if ((r = tcp_connect(cfg->proxy_host, cfg->proxy_port, cfg->timeout_ms, &fd, err,
		                     errlen)) < 0)
			return r;
		/* The proxy dialogue is simplest blocking. */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		if ((r = proxy_connect(fd, cfg, err, errlen)) < 0) {
			close(fd);
			return r;
		}
	} else if ((r = tcp_connect(cfg->host, cfg->port, cfg->timeout_ms, &fd, err, errlen)) < 0) {
		return r;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, name);
	SSL_set1_host(ssl, name); /* hostname verification */
	for (;;) {
		int k = SSL_connect(ssl);
		if (k == 1)
			break;
		int e = SSL_get_error(ssl, k);
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
		    wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, cfg->timeout_ms) == 0)
			continue;
		snprintf(err, errlen, "TLS handshake with %s:%u failed", cfg->host, cfg->port);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			snprintf(err + strlen(err), errlen - strlen(err), ": timed out");
		verify_text(ssl, err, errlen);
		size_t n = strlen(err);
		snprintf(err + n, errlen - n, " (");
		ssl_errors(err, errlen - 1);
		if (strlen(err) == n + 2) /* no OpenSSL reason: the peer just hung up */
			strncat(err, "the peer closed the connection", errlen - strlen(err) - 1);
		strncat(err, ")", errlen - strlen(err) - 1);
		SSL_free(ssl);
		close(fd);
		return -EPROTO;
	}
	if ((r = server_verdict(ssl, fd, cfg, err, errlen)) < 0) {
		SSL_free(ssl);
		close(fd);
		return r;
	}
	*ret_ssl = ssl;
	*ret_fd = fd;
	return 0;
}

SSL_CTX *
gw_tls_server_ctx(const char *cert_file, const char *key_file, const char *client_ca, char *err,
                  size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	err[0] = 0;
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
		snprintf(err, errlen, "TLS server setup (%s, %s, %s): ", cert_file, key_file,
		         client_ca);
		ssl_errors(err, errlen);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return ctx;
}

int
gw_tls_accept(SSL_CTX *ctx, int fd, int timeout_ms, SSL **ret_ssl, char *cn, size_t cnlen,
              char *err, size_t errlen)
{
	err[0] = 0;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	for (;;) {
		int k = SSL_accept(ssl);
		if (k == 1)
			break;
		int e = SSL_get_error(ssl, k);
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
		    wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, timeout_ms) == 0)
			continue;
		snprintf(err, errlen, "TLS accept failed: ");
		ssl_errors(err, errlen);
		SSL_free(ssl);
		return -EPROTO;
	}
	cn[0] = 0;
	X509 *peer = SSL_get1_peer_certificate(ssl);
	if (peer) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn,
		                          (int)cnlen);
		X509_free(peer);
	}
	*ret_ssl = ssl;
	return 0;
}

static ssize_t
io_result(SSL *s, int k, short *want, char *err, size_t errlen)
{
	int e = SSL_get_error(s, k);
	if (e == SSL_ERROR_WANT_READ) {
		*want = POLLIN;
		return -EAGAIN;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		*want = POLLOUT;
		return -EAGAIN;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	err[0] = 0;
	if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
		snprintf(err, errlen, "connection lost: %s", errno ? strerror(errno) : "EOF");
		return -ECONNRESET;
	}
	snprintf(err, errlen, "TLS: ");
	ssl_errors(err, errlen);
	return -EIO;
}

ssize_t
gw_tls_read(SSL *s, void *buf, size_t len, short *want, char *err, size_t errlen)
{
	size_t got = 0;
	int k = SSL_read_ex(s, buf, len, &got);
	return k == 1 ? (ssize_t)got : io_result(s, k, want, err, errlen);
}

ssize_t
gw_tls_write(SSL *s, const void *buf, size_t len, short *want, char *err, size_t errlen)
{
	size_t put = 0;
	int k = SSL_write_ex(s, buf, len, &put);
	return k == 1 ? (ssize_t)put : io_result(s, k, want, err, errlen);
}

void
gw_tls_close(SSL *s, int fd)
{
	if (s) {
		SSL_shutdown(s);
		SSL_free(s);
	}
	if (fd >= 0)
		close(fd);
}
