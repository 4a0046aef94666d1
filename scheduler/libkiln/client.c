/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkiln's transport: one nng REQ socket per client, one context and aio per
 * request (REQ allows one outstanding request per context), envelopes encoded
 * and checked with kl_proto, scheduler codes mapped to -errno with the details
 * kept in a thread-local kiln_error. The socket never re-sends: a request
 * whose connection drops fails with "outcome unknown" instead of running
 * twice. The tool wrappers over kiln_call live in tools.c.
 */
#include "kiln.h"

#include "kl_proto.h"
#include "kl_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

/* A request that finds no connection waits this long before it gives up unsent. */
#define SEND_TIMEOUT_DEFAULT_MS 10000u
/* kiln_cancel waits at most this long for its answer. */
#define CANCEL_TIMEOUT_MS 10000u

struct kiln_client {
	nng_socket sock;
	char *url;
	char *token;
	_Atomic uint32_t timeout_ms;
	_Atomic uint32_t send_timeout_ms;
	_Atomic uint64_t next_request_id;
	pthread_mutex_t lock; /* guards inflight */
	pthread_cond_t idle;  /* inflight dropped to 0 */
	unsigned inflight;    /* async calls whose callback has not returned */
	_Atomic bool closing; /* kiln_close began: no new calls, failures are "closed" */
};

static __thread kiln_error tls_err;

const kiln_error *
kiln_last_error(void)
{
	return &tls_err;
}

static void
err_clear(void)
{
	tls_err.err = 0;
	tls_err.code = KILN_NO_ANSWER;
	tls_err.retry_after_ms = 0;
	tls_err.outcome_unknown = false;
	tls_err.message[0] = 0;
}

/* Record a failure for kiln_last_error() and return err, so callers can `return err_set(...)`. */
static int err_set(int err, int code, uint32_t retry_after_ms, bool outcome_unknown,
                   const char *fmt, ...) KL_PRINTF(5, 6);

static int
err_set(int err, int code, uint32_t retry_after_ms, bool outcome_unknown, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_err.message, sizeof tls_err.message, fmt, ap);
	va_end(ap);
	tls_err.err = err;
	tls_err.code = code;
	tls_err.retry_after_ms = retry_after_ms;
	tls_err.outcome_unknown = outcome_unknown;
	return err;
}

int
kiln_code_errno(int code)
{
	switch (code) {
	case KILN__CODE__OK:
		return 0;
	case KILN__CODE__INVALID_ARGUMENT:
		return -EINVAL;
	case KILN__CODE__NOT_FOUND:
		return -ENOENT;
	case KILN__CODE__PERMISSION_DENIED:
		return -EACCES;
	case KILN__CODE__UNAUTHENTICATED:
		return -EKEYREJECTED;
	case KILN__CODE__RESOURCE_EXHAUSTED:
		return -EAGAIN;
	case KILN__CODE__DEADLINE_EXCEEDED:
		return -ETIMEDOUT;
	case KILN__CODE__CANCELLED:
		return -ECANCELED;
	case KILN__CODE__NODE_LOST:
		return -EHOSTDOWN;
	case KILN__CODE__UNAVAILABLE:
		return -EBUSY;
	case KILN__CODE__VERSION_MISMATCH:
		return -EPROTO;
	case KILN__CODE__FAILED_PRECONDITION:
		return -ENOTSUP;
	default:
		return -EREMOTEIO;
	}
}

/* The one place nng errors become errno values (CONVENTIONS: convert at the boundary). */
static int
nng_errno(int rv)
{
	if (rv & NNG_ESYSERR)
		return -(rv & ~NNG_ESYSERR);
	switch (rv) {
	case 0:
		return 0;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
	case NNG_ENOARG:
	case NNG_EAMBIGUOUS:
	case NNG_EBADTYPE:
		return -EINVAL;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECONNREFUSED:
		return -ECONNREFUSED;
	case NNG_ECLOSED:
	case NNG_ECANCELED:
		return -ECANCELED;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_ENOTSUP:
		return -ENOTSUP;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_ENOENT:
		return -ENOENT;
	case NNG_EPROTO:
		return -EPROTO;
	case NNG_EUNREACHABLE:
		return -EHOSTUNREACH;
	case NNG_EPERM:
	case NNG_EPEERAUTH:
		return -EACCES;
	case NNG_EMSGSIZE:
		return -EMSGSIZE;
	case NNG_ECONNABORTED:
		return -ECONNABORTED;
	case NNG_ECONNRESET:
	case NNG_ECONNSHUT:
		return -ECONNRESET;
	case NNG_ENOFILES:
		return -EMFILE;
	case NNG_ENOSPC:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

static nng_duration
ms_duration(uint32_t ms)
{
	return ms == 0 || ms > INT32_MAX ? NNG_DURATION_INFINITE : (nng_duration)ms;
}

/* ---- connection ---- */

static int
connect_error(const char *url, int rv)
{
	int err = nng_errno(rv);
	switch (rv) {
	case NNG_ECONNREFUSED:
		return err_set(err, KILN_NO_ANSWER, 0, false,
		               "no scheduler at %s (connection refused)", url);
	case NNG_EADDRINVAL:
	case NNG_EINVAL:
		return err_set(err, KILN_NO_ANSWER, 0, false,
		               "invalid scheduler address '%s' (expected tcp://HOST:PORT, "
		               "ipc:///PATH or inproc://NAME)",
		               url);
	case NNG_ENOTSUP:
		return err_set(err, KILN_NO_ANSWER, 0, false,
		               "unsupported transport in '%s' (use tcp://, ipc:// or inproc://)",
		               url);
	default:
		return err_set(err, KILN_NO_ANSWER, 0, false,
		               "cannot connect to the scheduler at %s: %s", url, nng_strerror(rv));
	}
}

static int
socket_setup(nng_socket s)
{
	int rv;
	/* Never re-send: nng would otherwise replay a request after 60 s or when the
	 * pipe closes, and run a tool call twice. Refuse to run without this. */
	if ((rv = nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0)
		return rv;
	/* nng's default cap (1 MiB) would drop the connection on a large result. */
	if ((rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, KL_MAX_MSG)) != 0)
		return rv;
	/* Come back quickly after a scheduler restart; requests wait for it. */
	if ((rv = nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 100)) != 0)
		return rv;
	return nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 2000);
}

int
kiln_connect(const char *url, const char *token, kiln_client **ret, char *err, size_t errlen)
{
	err_clear();
	if (!url || !*url)
		url = KILN_DEFAULT_URL;
	kiln_client *c = kl_xcalloc(1, sizeof(*c));
	int rv = nng_req0_open(&c->sock);
	if (rv != 0) {
		free(c);
		int e = err_set(nng_errno(rv), KILN_NO_ANSWER, 0, false,
		                "cannot open an nng REQ socket: %s", nng_strerror(rv));
		if (errlen)
			kl_strlcpy(err, tls_err.message, errlen);
		return e;
	}
	if ((rv = socket_setup(c->sock)) != 0) {
		err_set(nng_errno(rv), KILN_NO_ANSWER, 0, false, "cannot configure the socket: %s",
		        nng_strerror(rv));
		goto fail;
	}
	/* Synchronous dial: a missing scheduler is reported now, not at the first call. */
	if ((rv = nng_dial(c->sock, url, NULL, 0)) != 0) {
		connect_error(url, rv);
		goto fail;
	}
	c->url = kl_xstrdup(url);
	c->token = kl_xstrdup(token ? token : "");
	atomic_init(&c->timeout_ms, 0);
	atomic_init(&c->send_timeout_ms, SEND_TIMEOUT_DEFAULT_MS);
	atomic_init(&c->next_request_id, 1);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->idle, NULL);
	*ret = c;
	return 0;
fail:
	nng_close(c->sock);
	free(c);
	if (errlen)
		kl_strlcpy(err, tls_err.message, errlen);
	return tls_err.err;
}

void
kiln_close(kiln_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	atomic_store(&c->closing, true);
	pthread_mutex_unlock(&c->lock);
	/* Aborts every context's send or receive: pending callbacks run with ECLOSED. */
	nng_close(c->sock);
	pthread_mutex_lock(&c->lock);
	while (c->inflight > 0)
		pthread_cond_wait(&c->idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->lock);
	free(c->url);
	free(c->token);
	free(c);
}

void
kiln_set_timeout(kiln_client *c, uint32_t ms)
{
	atomic_store(&c->timeout_ms, ms);
}

void
kiln_set_send_timeout(kiln_client *c, uint32_t ms)
{
	atomic_store(&c->send_timeout_ms, ms);
}

const char *
kiln_url(const kiln_client *c)
{
	return c->url;
}

uint64_t
kiln_job_id_new(void)
{
	static _Atomic uint64_t fallback;
	uint64_t v = 0;
	while (v == 0) {
		if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
			/* No entropy yet (early boot): splitmix64 over time and a counter is
			 * still unique enough for an id the scheduler scopes to the tenant. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t z = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec +
			             atomic_fetch_add(&fallback, 0x9e3779b97f4a7c15ull);
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
			v = z ^ (z >> 31);
		}
	}
	return v;
}

/* ---- one request ---- */

/* Encode req (token and request id filled in on a copy) into an nng message. */
static int
request_msg(kiln_client *c, const Kiln__ClientRequest *req, uint64_t *ret_id, nng_msg **ret)
{
	Kiln__ClientRequest r = *req;
	if (!r.token || !*r.token)
		r.token = c->token;
	if (!r.request_id)
		r.request_id = atomic_fetch_add(&c->next_request_id, 1);
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REQUEST;
	e.client_request = &r;
	uint8_t *buf;
	size_t len;
	int rv = kl_env_encode(&e, &buf, &len);
	if (rv < 0)
		return err_set(rv, KILN_NO_ANSWER, 0, false,
		               "request too large (%zu bytes; a kiln message holds at most %u MiB)",
		               kiln__envelope__get_packed_size(&e), KL_MAX_MSG >> 20);
	nng_msg *m;
	if ((rv = nng_msg_alloc(&m, len)) != 0) {
		free(buf);
		return err_set(nng_errno(rv), KILN_NO_ANSWER, 0, false, "cannot allocate %zu bytes",
		               len);
	}
	memcpy(nng_msg_body(m), buf, len);
	free(buf);
	*ret_id = r.request_id;
	*ret = m;
	return 0;
}

/* A send that failed: the request never left, so its outcome is known (it did not run). */
static int
send_error(kiln_client *c, int rv)
{
	if (atomic_load(&c->closing))
		rv = NNG_ECLOSED;
	if (rv == NNG_ETIMEDOUT)
		return err_set(-ENOTCONN, KILN_NO_ANSWER, 0, false,
		               "not connected to the scheduler at %s (no connection within %" PRIu32
		               " ms); the request was not sent",
		               c->url, atomic_load(&c->send_timeout_ms));
	if (rv == NNG_ECLOSED)
		return err_set(-ECANCELED, KILN_NO_ANSWER, 0, false,
		               "the client was closed; the request was not sent");
	return err_set(nng_errno(rv), KILN_NO_ANSWER, 0, false,
	               "cannot send to the scheduler at %s: %s; the request was not sent", c->url,
	               nng_strerror(rv));
}

/* A receive that failed: the request went out, so it may have run. */
static int
recv_error(kiln_client *c, int rv, uint32_t timeout_ms)
{
	/* nng_close may close the pipe before the context: that is not a lost connection. */
	if (atomic_load(&c->closing))
		rv = NNG_ECLOSED;
	if (rv == NNG_ETIMEDOUT)
		return err_set(-ETIMEDOUT, KILN_NO_ANSWER, 0, true,
		               "no reply from the scheduler at %s within %" PRIu32
		               " ms: the call's outcome is unknown",
		               c->url, timeout_ms);
	if (rv == NNG_ECLOSED)
		return err_set(-ECANCELED, KILN_NO_ANSWER, 0, true,
		               "the client was closed while waiting for the reply: the call's "
		               "outcome is unknown");
	return err_set(-ECONNRESET, KILN_NO_ANSWER, 0, true,
	               "lost connection to the scheduler at %s (%s): the call's outcome is unknown",
	               c->url, nng_strerror(rv));
}

/* An error the scheduler answered with. NODE_LOST alone leaves the outcome open. */
static int
answer_error(int code, const char *msg, uint32_t retry_after_ms)
{
	int err = kiln_code_errno(code);
	if (err == 0)
		err = -EREMOTEIO; /* an error reply saying OK where a result was due */
	if (!msg || !*msg)
		msg = "(no message)";
	return err_set(err, code, retry_after_ms, code == KILN__CODE__NODE_LOST, "%s: %s",
	               kl_code_name(code), msg);
}

/* Decode a reply envelope (consumes m) and detach its ClientReply. */
static int
reply_decode(nng_msg *m, uint64_t request_id, Kiln__ClientReply **ret)
{
	Kiln__Envelope *e;
	uint32_t version = 0;
	int rv = kl_env_decode(nng_msg_body(m), nng_msg_len(m), KL_MAX_MSG, &e, &version);
	nng_msg_free(m);
	if (rv == -EPROTO)
		return err_set(-EPROTO, KILN_NO_ANSWER, 0, false,
		               "the scheduler speaks kiln protocol version %" PRIu32
		               ", this client version %" PRIu32
		               ": use a client from the scheduler's release",
		               version, KL_PROTO_VERSION);
	if (rv < 0)
		return err_set(rv, KILN_NO_ANSWER, 0, true,
		               "bad reply from the scheduler: %s; the call's outcome is unknown",
		               kl_env_strerror(rv));
	if (e->msg_case == KILN__ENVELOPE__MSG_ERROR) {
		rv = answer_error(e->error->code, e->error->message, e->error->retry_after_ms);
		kiln__envelope__free_unpacked(e, NULL);
		return rv;
	}
	if (e->msg_case != KILN__ENVELOPE__MSG_CLIENT_REPLY) {
		rv = err_set(-EBADMSG, KILN_NO_ANSWER, 0, true,
		             "bad reply from the scheduler: envelope field %d instead of a "
		             "client reply; the call's outcome is unknown",
		             (int)e->msg_case);
		kiln__envelope__free_unpacked(e, NULL);
		return rv;
	}
	Kiln__ClientReply *r = e->client_reply;
	if (r->request_id != 0 && r->request_id != request_id) {
		rv = err_set(-EBADMSG, KILN_NO_ANSWER, 0, true,
		             "bad reply from the scheduler: it answers request %" PRIu64
		             ", not %" PRIu64 "; the call's outcome is unknown",
		             r->request_id, request_id);
		kiln__envelope__free_unpacked(e, NULL);
		return rv;
	}
	/* protobuf-c frees only the selected oneof member: unselect it to keep r. */
	e->client_reply = NULL;
	e->msg_case = KILN__ENVELOPE__MSG__NOT_SET;
	kiln__envelope__free_unpacked(e, NULL);
	*ret = r;
	return 0;
}

/* Send, wait (at most timeout_ms, 0 = forever), receive, decode: a blocking
 * round trip on a private context. */
static int
roundtrip_in(kiln_client *c, const Kiln__ClientRequest *req, uint32_t timeout_ms,
             Kiln__ClientReply **ret)
{
	nng_msg *m;
	uint64_t id;
	int rv = request_msg(c, req, &id, &m);
	if (rv < 0)
		return rv;
	nng_ctx ctx;
	nng_aio *aio;
	if ((rv = nng_ctx_open(&ctx, c->sock)) != 0) {
		nng_msg_free(m);
		return send_error(c, rv);
	}
	if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
		nng_msg_free(m);
		nng_ctx_close(ctx);
		return send_error(c, rv);
	}
	nng_aio_set_msg(aio, m);
	nng_aio_set_timeout(aio, ms_duration(atomic_load(&c->send_timeout_ms)));
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		rv = send_error(c, rv);
		goto out;
	}
	nng_aio_set_timeout(aio, ms_duration(timeout_ms));
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0)
		rv = recv_error(c, rv, timeout_ms);
	else
		rv = reply_decode(nng_aio_get_msg(aio), id, ret);
out:
	nng_aio_free(aio);
	nng_ctx_close(ctx);
	return rv;
}

static int
roundtrip(kiln_client *c, const Kiln__ClientRequest *req, Kiln__ClientReply **ret)
{
	return roundtrip_in(c, req, atomic_load(&c->timeout_ms), ret);
}

static const char *
reply_case_name(int rc)
{
	switch (rc) {
	case KILN__CLIENT_REPLY__REPLY_OPENED:
		return "opened";
	case KILN__CLIENT_REPLY__REPLY_CLOSED:
		return "closed";
	case KILN__CLIENT_REPLY__REPLY_RESULT:
		return "result";
	case KILN__CLIENT_REPLY__REPLY_STATUS:
		return "status";
	case KILN__CLIENT_REPLY__REPLY_ERROR:
		return "error";
	case KILN__CLIENT_REPLY__REPLY_LIST:
		return "list";
	default:
		return "empty";
	}
}

/*
 * Check a reply against the case the request expects. An ErrorReply is a
 * failure unless it is the expected answer and says OK (cancel, node_admin).
 * Consumes r on failure.
 */
static int
reply_expect(Kiln__ClientReply *r, int want)
{
	if (r->reply_case == KILN__CLIENT_REPLY__REPLY_ERROR &&
	    !(want == KILN__CLIENT_REPLY__REPLY_ERROR && r->error->code == KILN__CODE__OK)) {
		int rv = answer_error(r->error->code, r->error->message, r->error->retry_after_ms);
		kiln_reply_free(r);
		return rv;
	}
	if ((int)r->reply_case != want) {
		int rv = err_set(-EBADMSG, KILN_NO_ANSWER, 0, true,
		                 "bad reply from the scheduler: '%s' where '%s' was due",
		                 reply_case_name(r->reply_case), reply_case_name(want));
		kiln_reply_free(r);
		return rv;
	}
	return 0;
}

/* A round trip that must come back as `want`. */
static int
request_expect(kiln_client *c, const Kiln__ClientRequest *req, int want, Kiln__ClientReply **ret)
{
	Kiln__ClientReply *r;
	int rv = roundtrip(c, req, &r);
	if (rv < 0)
		return rv;
	if ((rv = reply_expect(r, want)) < 0)
		return rv;
	*ret = r;
	return 0;
}

int
kiln_request(kiln_client *c, const Kiln__ClientRequest *req, Kiln__ClientReply **ret)
{
	err_clear();
	return roundtrip(c, req, ret);
}

void
kiln_reply_free(Kiln__ClientReply *r)
{
	if (r)
		kiln__client_reply__free_unpacked(r, NULL);
}

/* ---- sessions ---- */

int
kiln_session_open_full(kiln_client *c, const Kiln__SessionOpen *open, Kiln__SessionOpened **ret)
{
	err_clear();
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_OPEN;
	req.open = (Kiln__SessionOpen *)open;
	Kiln__ClientReply *r;
	int rv = request_expect(c, &req, KILN__CLIENT_REPLY__REPLY_OPENED, &r);
	if (rv < 0)
		return rv;
	Kiln__SessionOpened *o = r->opened;
	if (o->code != KILN__CODE__OK) {
		rv = answer_error(o->code, o->message, o->retry_after_ms);
		kiln_reply_free(r);
		return rv;
	}
	if (!o->session || !o->session->session_id || !*o->session->session_id) {
		kiln_reply_free(r);
		return err_set(-EBADMSG, KILN_NO_ANSWER, 0, true,
		               "bad reply from the scheduler: a session opened without an id");
	}
	r->opened = NULL;
	r->reply_case = KILN__CLIENT_REPLY__REPLY__NOT_SET;
	kiln_reply_free(r);
	*ret = o;
	return 0;
}

void
kiln_opened_free(Kiln__SessionOpened *o)
{
	if (o)
		kiln__session_opened__free_unpacked(o, NULL);
}

int
kiln_session_open(kiln_client *c, const char *template_, const Kiln__Limits *lim,
                  char **ret_session_id, char *err, size_t errlen)
{
	Kiln__SessionOpen open = KILN__SESSION_OPEN__INIT;
	open.template_ = (char *)(template_ ? template_ : "");
	open.limits = (Kiln__Limits *)lim;
	Kiln__SessionOpened *o;
	int rv = kiln_session_open_full(c, &open, &o);
	if (rv < 0) {
		if (errlen)
			kl_strlcpy(err, tls_err.message, errlen);
		return rv;
	}
	*ret_session_id = kl_xstrdup(o->session->session_id);
	kiln_opened_free(o);
	return 0;
}

int
kiln_session_close(kiln_client *c, const char *session_id)
{
	err_clear();
	Kiln__SessionClose sc = KILN__SESSION_CLOSE__INIT;
	sc.session_id = (char *)session_id;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_CLOSE;
	req.close = &sc;
	Kiln__ClientReply *r;
	int rv = request_expect(c, &req, KILN__CLIENT_REPLY__REPLY_CLOSED, &r);
	if (rv < 0)
		return rv;
	if (r->closed->code != KILN__CODE__OK)
		rv = answer_error(r->closed->code, r->closed->message, 0);
	kiln_reply_free(r);
	return rv;
}

int
kiln_session_list(kiln_client *c, Kiln__SessionListReply **ret)
{
	err_clear();
	Kiln__SessionList sl = KILN__SESSION_LIST__INIT;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_LIST;
	req.list = &sl;
	Kiln__ClientReply *r;
	int rv = request_expect(c, &req, KILN__CLIENT_REPLY__REPLY_LIST, &r);
	if (rv < 0)
		return rv;
	*ret = r->list;
	r->list = NULL;
	r->reply_case = KILN__CLIENT_REPLY__REPLY__NOT_SET;
	kiln_reply_free(r);
	return 0;
}

void
kiln_list_free(Kiln__SessionListReply *l)
{
	if (l)
		kiln__session_list_reply__free_unpacked(l, NULL);
}

/* ---- tool calls ---- */

/* The call request for tc: a copy with a job id and a non-NULL session. */
static int
call_request(const Kiln__ToolCall *tc, Kiln__ToolCall *copy, Kiln__ClientRequest *req)
{
	if (tc->tool_case == KILN__TOOL_CALL__TOOL__NOT_SET)
		return err_set(-EINVAL, KILN_NO_ANSWER, 0, false, "the call names no tool");
	*copy = *tc;
	if (!copy->job_id)
		copy->job_id = kiln_job_id_new();
	if (!copy->session_id)
		copy->session_id = (char *)"";
	req->op_case = KILN__CLIENT_REQUEST__OP_CALL;
	req->call = copy;
	return 0;
}

/* Take the ToolResult out of a checked reply. */
static Kiln__ToolResult *
result_detach(Kiln__ClientReply *r)
{
	Kiln__ToolResult *res = r->result;
	r->result = NULL;
	r->reply_case = KILN__CLIENT_REPLY__REPLY__NOT_SET;
	kiln_reply_free(r);
	return res;
}

int
kiln_call(kiln_client *c, const Kiln__ToolCall *call, Kiln__ToolResult **ret)
{
	err_clear();
	Kiln__ToolCall tc;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	int rv = call_request(call, &tc, &req);
	if (rv < 0)
		return rv;
	Kiln__ClientReply *r;
	if ((rv = request_expect(c, &req, KILN__CLIENT_REPLY__REPLY_RESULT, &r)) < 0)
		return rv;
	*ret = result_detach(r);
	return 0;
}

void
kiln_result_free(Kiln__ToolResult *r)
{
	if (r)
		kiln__tool_result__free_unpacked(r, NULL);
}

int
kiln_cancel(kiln_client *c, uint64_t job_id)
{
	err_clear();
	Kiln__Cancel cn = KILN__CANCEL__INIT;
	cn.job_id = job_id;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_CANCEL;
	req.cancel = &cn;
	/* A cancel is quick to answer; it must not hang its caller when the client
	 * waits forever for tool calls. */
	uint32_t t = atomic_load(&c->timeout_ms);
	if (t == 0 || t > CANCEL_TIMEOUT_MS)
		t = CANCEL_TIMEOUT_MS;
	Kiln__ClientReply *r;
	int rv = roundtrip_in(c, &req, t, &r);
	if (rv < 0 || (rv = reply_expect(r, KILN__CLIENT_REPLY__REPLY_ERROR)) < 0)
		return rv;
	kiln_reply_free(r);
	return 0;
}

/* ---- asynchronous calls ---- */

typedef struct kiln_async {
	kiln_client *c;
	nng_ctx ctx;
	nng_aio *aio;
	uint64_t request_id;
	uint32_t timeout_ms;
	bool sent;
	kiln_result_cb *cb;
	void *arg;
} kiln_async;

static void
async_finish(kiln_async *a, int err, Kiln__ToolResult *res)
{
	kiln_client *c = a->c;
	kiln_result_cb *cb = a->cb;
	void *arg = a->arg;
	/* Once kiln_close began, nng_close owns the contexts and may already have freed
	 * the socket under this one: closing it here too crashes nng 1.5.2. The lock
	 * keeps kiln_close from starting nng_close between the check and the close. */
	pthread_mutex_lock(&c->lock);
	if (!atomic_load(&c->closing))
		nng_ctx_close(a->ctx);
	pthread_mutex_unlock(&c->lock);
	/* nng_aio_free here would wait for this very callback: deadlock. */
	nng_aio_reap(a->aio);
	free(a);
	cb(arg, err, res);
	pthread_mutex_lock(&c->lock);
	if (--c->inflight == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
}

static void
async_step(void *arg)
{
	kiln_async *a = arg;
	kiln_client *c = a->c;
	int rv = nng_aio_result(a->aio);
	err_clear();
	if (!a->sent) {
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(a->aio));
			async_finish(a, send_error(c, rv), NULL);
			return;
		}
		a->sent = true;
		a->timeout_ms = atomic_load(&c->timeout_ms);
		nng_aio_set_timeout(a->aio, ms_duration(a->timeout_ms));
		nng_ctx_recv(a->ctx, a->aio);
		return;
	}
	if (rv != 0) {
		async_finish(a, recv_error(c, rv, a->timeout_ms), NULL);
		return;
	}
	Kiln__ClientReply *r;
	if ((rv = reply_decode(nng_aio_get_msg(a->aio), a->request_id, &r)) == 0)
		rv = reply_expect(r, KILN__CLIENT_REPLY__REPLY_RESULT);
	if (rv < 0) {
		async_finish(a, rv, NULL);
		return;
	}
	err_clear();
	async_finish(a, 0, result_detach(r));
}

int
kiln_call_async(kiln_client *c, const Kiln__ToolCall *call, kiln_result_cb *cb, void *arg)
{
	err_clear();
	Kiln__ToolCall tc;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	int rv = call_request(call, &tc, &req);
	if (rv < 0)
		return rv;
	/* Counted before touching the socket, so kiln_close waits for this call. */
	pthread_mutex_lock(&c->lock);
	bool closing = atomic_load(&c->closing);
	if (!closing)
		c->inflight++;
	pthread_mutex_unlock(&c->lock);
	if (closing)
		return err_set(-ECANCELED, KILN_NO_ANSWER, 0, false,
		               "the client is closing; the call was not sent");
	kiln_async *a = kl_xcalloc(1, sizeof(*a));
	a->c = c;
	a->cb = cb;
	a->arg = arg;
	nng_msg *m = NULL;
	if ((rv = request_msg(c, &req, &a->request_id, &m)) < 0)
		goto fail;
	if ((rv = nng_ctx_open(&a->ctx, c->sock)) != 0) {
		rv = send_error(c, rv);
		goto fail;
	}
	if ((rv = nng_aio_alloc(&a->aio, async_step, a)) != 0) {
		nng_ctx_close(a->ctx);
		rv = send_error(c, rv);
		goto fail;
	}
	nng_aio_set_msg(a->aio, m);
	nng_aio_set_timeout(a->aio, ms_duration(atomic_load(&c->send_timeout_ms)));
	nng_ctx_send(a->ctx, a->aio);
	return 0;
fail:
	if (m)
		nng_msg_free(m);
	free(a);
	pthread_mutex_lock(&c->lock);
	if (--c->inflight == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
	return rv;
}

/* ---- cluster ---- */

int
kiln_status(kiln_client *c, Kiln__StatusReply **ret)
{
	err_clear();
	Kiln__StatusRequest sr = KILN__STATUS_REQUEST__INIT;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_STATUS;
	req.status = &sr;
	Kiln__ClientReply *r;
	int rv = request_expect(c, &req, KILN__CLIENT_REPLY__REPLY_STATUS, &r);
	if (rv < 0)
		return rv;
	*ret = r->status;
	r->status = NULL;
	r->reply_case = KILN__CLIENT_REPLY__REPLY__NOT_SET;
	kiln_reply_free(r);
	return 0;
}

void
kiln_status_free(Kiln__StatusReply *s)
{
	if (s)
		kiln__status_reply__free_unpacked(s, NULL);
}

int
kiln_node_admin(kiln_client *c, const char *node_id, const char *action)
{
	err_clear();
	Kiln__NodeAdmin na = KILN__NODE_ADMIN__INIT;
	na.node_id = (char *)node_id;
	na.action = (char *)action;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_NODE_ADMIN;
	req.node_admin = &na;
	Kiln__ClientReply *r;
	int rv = request_expect(c, &req, KILN__CLIENT_REPLY__REPLY_ERROR, &r);
	if (rv < 0)
		return rv;
	kiln_reply_free(r);
	return 0;
}
