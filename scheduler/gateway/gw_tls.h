/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS for the tunnel (OpenSSL): the gateway's outbound dial -- TLS 1.3 only,
 * a client certificate, the control plane's CA pinned (the system trust
 * store is never consulted), hostname verification, optionally through an
 * HTTPS proxy with CONNECT -- and the server side the control-plane
 * simulator uses (TLS 1.3, client certificates required). Failures come back
 * as one line a person can act on: which step failed and what to check.
 *
 * Threading: a context may be shared; an SSL object belongs to one thread.
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct gw_tls_dial_cfg {
	const char *host; /* the control plane */
	uint16_t port;
	const char *server_name; /* checked against its certificate (NULL: host) */
	const char *ca_file;     /* the only CA trusted for the control plane */
	const char *cert_file;   /* our client certificate (chain) */
	const char *key_file;
	const char *proxy_host; /* an HTTPS proxy to CONNECT through (NULL: none) */
	uint16_t proxy_port;
	int timeout_ms; /* TCP connect + proxy + handshake, each */
} gw_tls_dial_cfg;

/* A client context for cfg (CA, certificate, key loaded and checked).
 * NULL with a message in err. Free with SSL_CTX_free. */
SSL_CTX *gw_tls_client_ctx(const gw_tls_dial_cfg *cfg, char *err, size_t errlen);
/* Connect and handshake (blocking, bounded by timeout_ms per step). On
 * success *ret_ssl is ready and its fd (*ret_fd) non-blocking. -errno and a
 * message naming the step (connect, proxy, handshake, verification) and the
 * likely cause. */
int gw_tls_dial(SSL_CTX *ctx, const gw_tls_dial_cfg *cfg, SSL **ret_ssl, int *ret_fd, char *err,
                size_t errlen);

/* A server context that requires client certificates signed by client_ca. */
SSL_CTX *gw_tls_server_ctx(const char *cert_file, const char *key_file, const char *client_ca,
                           char *err, size_t errlen);
/* Finish a server handshake on an accepted socket (blocking, bounded). The
 * client certificate's subject CN goes to cn. */
int gw_tls_accept(SSL_CTX *ctx, int fd, int timeout_ms, SSL **ret_ssl, char *cn, size_t cnlen,
                  char *err, size_t errlen);

/* Non-blocking I/O: bytes moved, 0 at a clean close, -EAGAIN with *want set
 * to POLLIN or POLLOUT (what to wait for), or -EIO/-ECONNRESET with the
 * reason in err. */
ssize_t gw_tls_read(SSL *s, void *buf, size_t len, short *want, char *err, size_t errlen);
ssize_t gw_tls_write(SSL *s, const void *buf, size_t len, short *want, char *err, size_t errlen);

/* Close (best-effort close_notify) and free. Accepts NULL. */
void gw_tls_close(SSL *s, int fd);

#endif
