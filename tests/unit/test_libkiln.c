/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for libkiln's wire behaviour, without a scheduler. A scripted
 * peer (a bare nng REP socket on an ipc path, one canned answer per test, no
 * scheduler logic) receives what the client really sends, so the tests check
 * the encoded requests with kl_env_decode, how each kind of answer maps to
 * return values and kiln_last_error(), and the transport failures: refused
 * connections, a peer that drops the connection mid-request (never re-sent),
 * timeouts, large messages, asynchronous calls and closing with calls in
 * flight. The last tests drive the CLI through the same peer.
 */
#include "test.h"

#include "cli.h"
#include "kiln.h"
#include "kl_proto.h"
#include "kl_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the scripted peer ---- */

typedef struct peer peer;
/* Answer one request: return the reply message, or NULL to drop the connection. */
typedef nng_msg *peer_fn(peer *p, const Kiln__ClientRequest *req);

struct peer {
	nng_socket sock;
	char url[128];
	pthread_t thread;
	peer_fn *fn;
	int serve;               /* requests to answer */
	bool hold;               /* keep the last request unanswered until peer_stop */
	Kiln__Envelope *got[16]; /* what arrived, decoded */
	int ngot;
	void *arg;
};

static int peer_seq;

static nng_msg *
msg_of(Kiln__Envelope *e)
{
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode(e, &buf, &len), 0);
	nng_msg *m;
	ASSERT_EQ(nng_msg_alloc(&m, len), 0);
	memcpy(nng_msg_body(m), buf, len);
	free(buf);
	return m;
}

static nng_msg *
reply_of(const Kiln__ClientRequest *req, Kiln__ClientReply *r)
{
	r->request_id = req->request_id;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REPLY;
	e.client_reply = r;
	return msg_of(&e);
}

static nng_msg *
error_reply(const Kiln__ClientRequest *req, int code, const char *msg, uint32_t retry)
{
	Kiln__ErrorReply er = KILN__ERROR_REPLY__INIT;
	er.code = code;
	er.message = (char *)msg;
	er.retry_after_ms = retry;
	Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
	r.reply_case = KILN__CLIENT_REPLY__REPLY_ERROR;
	r.error = &er;
	return reply_of(req, &r);
}

static nng_msg *
result_reply(const Kiln__ClientRequest *req, Kiln__ToolResult *res)
{
	Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
	r.reply_case = KILN__CLIENT_REPLY__REPLY_RESULT;
	r.result = res;
	return reply_of(req, &r);
}

static void *
peer_main(void *arg)
{
	peer *p = arg;
	for (int i = 0; i < p->serve || p->hold; i++) {
		nng_msg *m;
		if (nng_recvmsg(p->sock, &m, 0) != 0)
			return NULL;
		Kiln__Envelope *e;
		uint32_t v;
		ASSERT_EQ(kl_env_decode(nng_msg_body(m), nng_msg_len(m), KL_MAX_MSG, &e, &v), 0);
		nng_msg_free(m);
		ASSERT_EQ(e->msg_case, KILN__ENVELOPE__MSG_CLIENT_REQUEST);
		ASSERT_LT(p->ngot, 16);
		p->got[p->ngot++] = e;
		if (i >= p->serve)
			return NULL; /* hold: never answer; peer_stop closes the socket */
		nng_msg *reply = p->fn(p, e->client_request);
		if (!reply) {
			nng_close(p->sock); /* drop the connection mid-request */
			return NULL;
		}
		ASSERT_EQ(nng_sendmsg(p->sock, reply, 0), 0);
	}
	return NULL;
}

/* Listen on a fresh ipc path and answer `serve` requests with fn. */
static void
peer_start(peer *p, peer_fn *fn, int serve)
{
	memset(p, 0, sizeof(*p));
	p->fn = fn;
	p->serve = serve;
	snprintf(p->url, sizeof p->url, "ipc:///tmp/kiln-test-libkiln-%d-%d.sock", (int)getpid(),
	         peer_seq++);
	ASSERT_EQ(nng_rep0_open(&p->sock), 0);
	/* As the scheduler must: nng's 1 MiB default would drop large requests. */
	ASSERT_EQ(nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, KL_MAX_MSG), 0);
	ASSERT_EQ(nng_listen(p->sock, p->url, NULL, 0), 0);
}

static void
peer_go(peer *p)
{
	ASSERT_EQ(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void
peer_stop(peer *p)
{
	nng_close(p->sock); /* wakes a receive that waits; closing twice is harmless */
	pthread_join(p->thread, NULL);
	unlink(p->url + strlen("ipc://"));
}

/* Free what the peer received (after the test looked at it). */
static void
peer_free(peer *p)
{
	for (int i = 0; i < p->ngot; i++)
		kiln__envelope__free_unpacked(p->got[i], NULL);
	p->ngot = 0;
}

static kiln_client *
client_of(peer *p, const char *token)
{
	kiln_client *c;
	char err[256];
	if (kiln_connect(p->url, token, &c, err, sizeof err) != 0)
		KT_FAIL("connect %s: %s", p->url, err);
	return c;
}

/* ---- connecting ---- */

static int
closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

TEST(connect_refused)
{
	char url[64], err[256] = "", want[128];
	snprintf(url, sizeof url, "tcp://127.0.0.1:%d", closed_port());
	kiln_client *c = (kiln_client *)0x1;
	ASSERT_EQ(kiln_connect(url, "t", &c, err, sizeof err), -ECONNREFUSED);
	ASSERT(c == (kiln_client *)0x1); /* outputs only on success */
	snprintf(want, sizeof want, "no scheduler at %s (connection refused)", url);
	ASSERT_STR_EQ(err, want);
	ASSERT_STR_EQ(kiln_last_error()->message, want);
	ASSERT_EQ(kiln_last_error()->err, -ECONNREFUSED);
	ASSERT_EQ(kiln_last_error()->code, KILN_NO_ANSWER);
	ASSERT(!kiln_last_error()->outcome_unknown);
	ASSERT_EQ(kiln_connect("inproc://kiln-nobody", NULL, &c, NULL, 0), -ECONNREFUSED);
	ASSERT_EQ(kiln_connect("tcp://no-port", NULL, &c, err, sizeof err), -EINVAL);
	ASSERT_CONTAINS(err, "invalid scheduler address 'tcp://no-port'");
	ASSERT_EQ(kiln_connect("carrier-pigeon://x", NULL, &c, err, 4), -ENOTSUP);
	ASSERT_STR_EQ(err, "uns"); /* truncated to errlen */
	kiln_close(NULL);
}

TEST(code_errnos_distinct)
{
	ASSERT_EQ(kiln_code_errno(KILN__CODE__OK), 0);
	for (int a = 1; a <= KILN__CODE__INTERNAL; a++) {
		ASSERT_LT(kiln_code_errno(a), 0);
		for (int b = a + 1; b <= KILN__CODE__INTERNAL; b++)
			if (a != KILN__CODE__TOOL_ERROR && b != KILN__CODE__TOOL_ERROR &&
			    kiln_code_errno(a) == kiln_code_errno(b))
				KT_FAIL("%s and %s share errno %d", kl_code_name(a),
				        kl_code_name(b), kiln_code_errno(a));
	}
	ASSERT_EQ(kiln_code_errno(KILN__CODE__UNAUTHENTICATED), -EKEYREJECTED);
	ASSERT_EQ(kiln_code_errno(KILN__CODE__RESOURCE_EXHAUSTED), -EAGAIN);
	ASSERT_EQ(kiln_code_errno(KILN__CODE__NOT_FOUND), -ENOENT);
	ASSERT_EQ(kiln_code_errno(99), -EREMOTEIO);
}

TEST(job_ids)
{
	uint64_t a = kiln_job_id_new(), b = kiln_job_id_new();
	ASSERT_NE(a, 0);
	ASSERT_NE(b, 0);
	ASSERT_NE(a, b);
}

/* ---- what goes on the wire ---- */

static nng_msg *
answer_exec(peer *p, const Kiln__ClientRequest *req)
{
	Kiln__ToolResult res = KILN__TOOL_RESULT__INIT;
	res.job_id = req->call->job_id;
	res.code = KILN__CODE__TOOL_ERROR;
	res.is_error = true;
	res.exit_code = 3;
	res.output.data = (uint8_t *)"hi\n";
	res.output.len = 3;
	res.node_id = "node-x";
	return result_reply(req, &res);
}

TEST(exec_request_encoding)
{
	peer p;
	peer_start(&p, answer_exec, 1);
	peer_go(&p);
	kiln_client *c = client_of(&p, "tok");
	const char *argv[] = {"sh", "-c", "echo hi; exit 3", NULL};
	Kiln__ToolResult *r = NULL;
	ASSERT_EQ(kiln_exec(c, "S1", argv, 1500, &r), 0);
	ASSERT_EQ(kiln_last_error()->err, 0);
	ASSERT_EQ(r->code, KILN__CODE__TOOL_ERROR);
	ASSERT_EQ(r->exit_code, 3);
	ASSERT_EQ(r->output.len, 3);
	ASSERT(!memcmp(r->output.data, "hi\n", 3));
	ASSERT_STR_EQ(r->node_id, "node-x");
	peer_stop(&p);

	ASSERT_EQ(p.ngot, 1);
	Kiln__Envelope *e = p.got[0];
	ASSERT_EQ(e->version, KL_PROTO_VERSION);
	Kiln__ClientRequest *req = e->client_request;
	ASSERT_STR_EQ(req->token, "tok");
	ASSERT_NE(req->request_id, 0);
	ASSERT_EQ(req->op_case, KILN__CLIENT_REQUEST__OP_CALL);
	Kiln__ToolCall *tc = req->call;
	ASSERT_NE(tc->job_id, 0);
	ASSERT_EQ(r->job_id, tc->job_id);
	ASSERT_STR_EQ(tc->session_id, "S1");
	ASSERT_EQ(tc->timeout_ms, 1500);
	ASSERT_EQ(tc->tool_case, KILN__TOOL_CALL__TOOL_EXEC);
	ASSERT_EQ(tc->exec->n_argv, 3);
	ASSERT_STR_EQ(tc->exec->argv[0], "sh");
	ASSERT_STR_EQ(tc->exec->argv[2], "echo hi; exit 3");
	kiln_result_free(r);
	kiln_close(c);
	peer_free(&p);
}

static nng_msg *
answer_ok_result(peer *p, const Kiln__ClientRequest *req)
{
	Kiln__ToolResult res = KILN__TOOL_RESULT__INIT;
	res.job_id = req->call->job_id;
	res.message = "ok";
	return result_reply(req, &res);
}

TEST(tool_request_encoding)
{
	peer p;
	peer_start(&p, answer_ok_result, 4);
	peer_go(&p);
	kiln_client *c = client_of(&p, NULL);
	Kiln__ToolResult *r;
	/* A one-shot call: job id kept, NULL session sent as "", template and limits kept. */
	Kiln__BashInput bi = KILN__BASH_INPUT__INIT;
	bi.command = "true";
	Kiln__Limits lim = KILN__LIMITS__INIT;
	lim.memory_bytes = 64 << 20;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.job_id = 77;
	tc.session_id = NULL;
	tc.template_ = "python";
	tc.limits = &lim;
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = &bi;
	ASSERT_EQ(kiln_call(c, &tc, &r), 0);
	ASSERT_EQ(r->job_id, 77);
	ASSERT_EQ(tc.job_id, 77); /* the caller's call is only read */
	kiln_result_free(r);
	ASSERT_EQ(kiln_read(c, "S", "a.txt", 2, 0, &r), 0);
	kiln_result_free(r);
	ASSERT_EQ(kiln_edit(c, "S", "a.txt", "x", "y", true, &r), 0);
	kiln_result_free(r);
	ASSERT_EQ(kiln_grep(c, "S", "TODO", NULL, &r), 0);
	kiln_result_free(r);
	peer_stop(&p);
	ASSERT_EQ(p.ngot, 4);
	Kiln__ClientRequest *q = p.got[0]->client_request;
	ASSERT_STR_EQ(q->token, "");
	ASSERT_STR_EQ(q->call->session_id, "");
	ASSERT_STR_EQ(q->call->template_, "python");
	ASSERT_EQ(q->call->limits->memory_bytes, 64 << 20);
	ASSERT_STR_EQ(q->call->bash->command, "true");
	q = p.got[1]->client_request;
	ASSERT_NE(q->request_id, p.got[0]->client_request->request_id);
	ASSERT_EQ(q->call->tool_case, KILN__TOOL_CALL__TOOL_READ);
	ASSERT_EQ(q->call->read->n_view_range, 2);
	ASSERT_EQ(q->call->read->view_range[0], 2);
	ASSERT_EQ(q->call->read->view_range[1], 0);
	q = p.got[2]->client_request;
	ASSERT(q->call->edit->replace_all);
	ASSERT_STR_EQ(q->call->edit->new_string, "y");
	q = p.got[3]->client_request;
	ASSERT_STR_EQ(q->call->grep->pattern, "TODO");
	ASSERT_STR_EQ(q->call->grep->path, "");

	/* A call without a tool never leaves the client. */
	Kiln__ToolCall empty = KILN__TOOL_CALL__INIT;
	ASSERT_EQ(kiln_call(c, &empty, &r), -EINVAL);
	ASSERT_CONTAINS(kiln_last_error()->message, "names no tool");
	kiln_close(c);
	peer_free(&p);
}

/* ---- answers and their mapping ---- */

static nng_msg *
answer_refusals(peer *p, const Kiln__ClientRequest *req)
{
	switch (p->ngot) {
	case 1:
		return error_reply(req, KILN__CODE__RESOURCE_EXHAUSTED, "queue full", 250);
	case 2:
		return error_reply(req, KILN__CODE__UNAUTHENTICATED, "token refused", 0);
	case 3: {
		/* A bare Envelope.error: the scheduler could not read the request. */
		Kiln__ErrorReply er = KILN__ERROR_REPLY__INIT;
		er.code = KILN__CODE__VERSION_MISMATCH;
		er.message = "scheduler speaks 1, client 9";
		Kiln__Envelope e = KILN__ENVELOPE__INIT;
		e.msg_case = KILN__ENVELOPE__MSG_ERROR;
		e.error = &er;
		return msg_of(&e);
	}
	default:
		return error_reply(req, KILN__CODE__NODE_LOST, "node-a stopped answering", 0);
	}
}

TEST(refusals)
{
	peer p;
	peer_start(&p, answer_refusals, 4);
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	Kiln__ToolResult *r = (Kiln__ToolResult *)0x1;
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EAGAIN);
	ASSERT(r == (Kiln__ToolResult *)0x1);
	const kiln_error *e = kiln_last_error();
	ASSERT_EQ(e->err, -EAGAIN);
	ASSERT_EQ(e->code, KILN__CODE__RESOURCE_EXHAUSTED);
	ASSERT_EQ(e->retry_after_ms, 250);
	ASSERT(!e->outcome_unknown);
	ASSERT_STR_EQ(e->message, "RESOURCE_EXHAUSTED: queue full");
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EKEYREJECTED);
	ASSERT_EQ(e->code, KILN__CODE__UNAUTHENTICATED);
	ASSERT_EQ(e->retry_after_ms, 0);
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EPROTO);
	ASSERT_EQ(e->code, KILN__CODE__VERSION_MISMATCH);
	ASSERT_CONTAINS(e->message, "scheduler speaks 1");
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EHOSTDOWN);
	ASSERT(e->outcome_unknown);
	peer_stop(&p);
	kiln_close(c);
	peer_free(&p);
}

static nng_msg *
answer_bad(peer *p, const Kiln__ClientRequest *req)
{
	switch (p->ngot) {
	case 1: {
		/* Version 2 on the wire: field 1, varint 2, then anything. */
		static const uint8_t v2[] = {0x08, 0x02, 0xa2, 0x01, 0x00};
		nng_msg *m;
		nng_msg_alloc(&m, 0);
		nng_msg_append(m, v2, sizeof v2);
		return m;
	}
	case 2: {
		nng_msg *m;
		nng_msg_alloc(&m, 0);
		nng_msg_append(m, "\x08\x01garbage", 9);
		return m;
	}
	case 3: {
		/* An answer to another request. */
		Kiln__ToolResult res = KILN__TOOL_RESULT__INIT;
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_RESULT;
		r.result = &res;
		r.request_id = req->request_id + 1000;
		Kiln__Envelope e = KILN__ENVELOPE__INIT;
		e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REPLY;
		e.client_reply = &r;
		return msg_of(&e);
	}
	default: {
		/* A status where a result was due. */
		Kiln__StatusReply s = KILN__STATUS_REPLY__INIT;
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_STATUS;
		r.status = &s;
		return reply_of(req, &r);
	}
	}
}

TEST(bad_answers)
{
	peer p;
	peer_start(&p, answer_bad, 4);
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	Kiln__ToolResult *r;
	const kiln_error *e = kiln_last_error();
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EPROTO);
	ASSERT_CONTAINS(e->message, "the scheduler speaks kiln protocol version 2, this client "
	                            "version 1");
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EBADMSG);
	ASSERT(e->outcome_unknown);
	ASSERT_CONTAINS(e->message, "bad reply from the scheduler");
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EBADMSG);
	ASSERT_CONTAINS(e->message, "it answers request");
	ASSERT_EQ(kiln_bash(c, "S", "ls", 0, &r), -EBADMSG);
	ASSERT_CONTAINS(e->message, "'status' where 'result' was due");
	peer_stop(&p);
	kiln_close(c);
	peer_free(&p);
}

static nng_msg *
answer_admin(peer *p, const Kiln__ClientRequest *req)
{
	switch (req->op_case) {
	case KILN__CLIENT_REQUEST__OP_OPEN: {
		Kiln__SessionInfo si = KILN__SESSION_INFO__INIT;
		si.session_id = "s-42";
		si.node_id = "node-a";
		Kiln__SessionOpened o = KILN__SESSION_OPENED__INIT;
		o.session = &si;
		o.warm = true;
		if (!strcmp(req->open->template_, "none")) {
			o.code = KILN__CODE__NOT_FOUND;
			o.message = "no template 'none'";
			o.session = NULL;
		}
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_OPENED;
		r.opened = &o;
		return reply_of(req, &r);
	}
	case KILN__CLIENT_REQUEST__OP_CLOSE: {
		Kiln__SessionClosed sc = KILN__SESSION_CLOSED__INIT;
		if (strcmp(req->close->session_id, "s-42")) {
			sc.code = KILN__CODE__NOT_FOUND;
			sc.message = "no session";
		}
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_CLOSED;
		r.closed = &sc;
		return reply_of(req, &r);
	}
	case KILN__CLIENT_REQUEST__OP_CANCEL:
		return error_reply(
		        req, req->cancel->job_id == 5 ? KILN__CODE__OK : KILN__CODE__NOT_FOUND, "",
		        0);
	case KILN__CLIENT_REQUEST__OP_NODE_ADMIN:
		return error_reply(req, KILN__CODE__PERMISSION_DENIED, "admin token required", 0);
	case KILN__CLIENT_REQUEST__OP_LIST: {
		Kiln__SessionInfo si = KILN__SESSION_INFO__INIT;
		si.session_id = "s-42";
		Kiln__SessionInfo *list[] = {&si};
		Kiln__SessionListReply l = KILN__SESSION_LIST_REPLY__INIT;
		l.n_sessions = 1;
		l.sessions = list;
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_LIST;
		r.list = &l;
		return reply_of(req, &r);
	}
	default: {
		Kiln__StatusReply s = KILN__STATUS_REPLY__INIT;
		s.scheduler = "scripted";
		s.placements = 9;
		Kiln__ClientReply r = KILN__CLIENT_REPLY__INIT;
		r.reply_case = KILN__CLIENT_REPLY__REPLY_STATUS;
		r.status = &s;
		return reply_of(req, &r);
	}
	}
}

TEST(sessions_and_admin)
{
	peer p;
	peer_start(&p, answer_admin, 10);
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	char *sid = NULL, err[128] = "";
	Kiln__Limits lim = KILN__LIMITS__INIT;
	lim.pids = 10;
	ASSERT_EQ(kiln_session_open(c, "default", &lim, &sid, err, sizeof err), 0);
	ASSERT_STR_EQ(sid, "s-42");
	free(sid);
	ASSERT_EQ(kiln_session_open(c, "none", NULL, &sid, err, sizeof err), -ENOENT);
	ASSERT_STR_EQ(err, "NOT_FOUND: no template 'none'");
	ASSERT_EQ(kiln_session_close(c, "s-42"), 0);
	ASSERT_EQ(kiln_session_close(c, "s-43"), -ENOENT);
	ASSERT_EQ(kiln_cancel(c, 5), 0);
	ASSERT_EQ(kiln_cancel(c, 6), -ENOENT);
	ASSERT_EQ(kiln_node_admin(c, "node-a", "drain"), -EACCES);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__PERMISSION_DENIED);
	Kiln__SessionListReply *l;
	ASSERT_EQ(kiln_session_list(c, &l), 0);
	ASSERT_EQ(l->n_sessions, 1);
	ASSERT_STR_EQ(l->sessions[0]->session_id, "s-42");
	kiln_list_free(l);
	Kiln__StatusReply *s;
	ASSERT_EQ(kiln_status(c, &s), 0);
	ASSERT_STR_EQ(s->scheduler, "scripted");
	ASSERT_EQ(s->placements, 9);
	kiln_status_free(s);
	/* The generic form returns any ClientReply as it came. */
	Kiln__StatusRequest sr = KILN__STATUS_REQUEST__INIT;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.op_case = KILN__CLIENT_REQUEST__OP_STATUS;
	req.status = &sr;
	req.request_id = 4242;
	Kiln__ClientReply *rep;
	ASSERT_EQ(kiln_request(c, &req, &rep), 0);
	ASSERT_EQ(rep->request_id, 4242);
	ASSERT_EQ(rep->reply_case, KILN__CLIENT_REPLY__REPLY_STATUS);
	kiln_reply_free(rep);
	peer_stop(&p);
	Kiln__ClientRequest *q = p.got[0]->client_request;
	ASSERT_EQ(q->op_case, KILN__CLIENT_REQUEST__OP_OPEN);
	ASSERT_STR_EQ(q->open->template_, "default");
	ASSERT_EQ(q->open->limits->pids, 10);
	kiln_close(c);
	peer_free(&p);
}

/* ---- transport failures ---- */

static nng_msg *
answer_drop(peer *p, const Kiln__ClientRequest *req)
{
	return NULL;
}

TEST(lost_connection_is_not_resent)
{
	peer p;
	peer_start(&p, answer_drop, 1);
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_bash(c, "S", "touch x", 0, &r), -ECONNRESET);
	const kiln_error *e = kiln_last_error();
	ASSERT(e->outcome_unknown);
	ASSERT_CONTAINS(e->message, "lost connection to the scheduler at ipc://");
	ASSERT_CONTAINS(e->message, "the call's outcome is unknown");
	pthread_join(p.thread, NULL);
	/* A new listener on the same address must never see that request again. */
	nng_socket s2;
	ASSERT_EQ(nng_rep0_open(&s2), 0);
	ASSERT_EQ(nng_socket_set_ms(s2, NNG_OPT_RECVTIMEO, 700), 0);
	unlink(p.url + strlen("ipc://"));
	ASSERT_EQ(nng_listen(s2, p.url, NULL, 0), 0);
	nng_msg *m;
	ASSERT_EQ(nng_recvmsg(s2, &m, 0), NNG_ETIMEDOUT);
	nng_close(s2);
	unlink(p.url + strlen("ipc://"));
	kiln_close(c);
	peer_free(&p);
}

TEST(reply_timeout_and_send_timeout)
{
	peer p;
	peer_start(&p, answer_drop, 0);
	p.hold = true;
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	kiln_set_timeout(c, 200);
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_bash(c, "S", "sleep 100", 0, &r), -ETIMEDOUT);
	ASSERT(kiln_last_error()->outcome_unknown);
	ASSERT_CONTAINS(kiln_last_error()->message, "within 200 ms: the call's outcome is unknown");
	peer_stop(&p); /* the listener is gone: the next request cannot be sent */
	kiln_set_send_timeout(c, 200);
	/* Until the client sees the pipe close, a request may still go out on it and
	 * come back as a lost connection: that is the honest answer then. */
	int rv = -ECONNRESET;
	for (int i = 0; i < 10 && rv == -ECONNRESET; i++)
		rv = kiln_bash(c, "S", "ls", 0, &r);
	ASSERT_EQ(rv, -ENOTCONN);
	ASSERT(!kiln_last_error()->outcome_unknown);
	ASSERT_CONTAINS(kiln_last_error()->message, "the request was not sent");
	kiln_close(c);
	peer_free(&p);
}

#define BIG (3u << 20)

static nng_msg *
answer_big(peer *p, const Kiln__ClientRequest *req)
{
	ASSERT_EQ(req->call->write->content.len, BIG);
	Kiln__ToolResult res = KILN__TOOL_RESULT__INIT;
	res.output.len = BIG;
	res.output.data = kl_xmalloc(BIG);
	memset(res.output.data, 'z', BIG);
	nng_msg *m = result_reply(req, &res);
	free(res.output.data);
	return m;
}

TEST(large_messages)
{
	/* Both ways over nng's 1 MiB default receive limit. */
	peer p;
	peer_start(&p, answer_big, 1);
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	uint8_t *content = kl_xmalloc(BIG);
	memset(content, 'a', BIG);
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_write(c, "S", "big", content, BIG, &r), 0);
	ASSERT_EQ(r->output.len, BIG);
	ASSERT_EQ(r->output.data[BIG - 1], 'z');
	kiln_result_free(r);
	/* Too large for any kiln message: refused before sending. */
	size_t huge = KL_MAX_MSG + 1;
	content = kl_xrealloc(content, huge);
	memset(content, 'b', huge);
	ASSERT_EQ(kiln_write(c, "S", "huge", content, huge, &r), -EMSGSIZE);
	ASSERT_CONTAINS(kiln_last_error()->message, "request too large");
	free(content);
	peer_stop(&p);
	ASSERT_EQ(p.ngot, 1);
	kiln_close(c);
	peer_free(&p);
}

/* ---- asynchronous calls ---- */

struct done {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int calls;
	int err;
	kiln_error last;
	Kiln__ToolResult *res;
};

static void
on_result(void *arg, int err, Kiln__ToolResult *res)
{
	struct done *d = arg;
	pthread_mutex_lock(&d->lock);
	d->calls++;
	d->err = err;
	d->last = *kiln_last_error();
	d->res = res;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void
done_init(struct done *d)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
}

static void
done_wait(struct done *d, int calls)
{
	pthread_mutex_lock(&d->lock);
	while (d->calls < calls)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

static Kiln__ToolCall
bash_call(Kiln__BashInput *in, const char *cmd)
{
	Kiln__BashInput b = KILN__BASH_INPUT__INIT;
	*in = b;
	in->command = (char *)cmd;
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = "S";
	tc.tool_case = KILN__TOOL_CALL__TOOL_BASH;
	tc.bash = in;
	return tc;
}

TEST(async_result_and_loss)
{
	peer p;
	peer_start(&p, answer_ok_result, 1);
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	Kiln__BashInput in;
	Kiln__ToolCall tc = bash_call(&in, "echo");
	struct done d;
	done_init(&d);
	ASSERT_EQ(kiln_call_async(c, &tc, on_result, &d), 0);
	done_wait(&d, 1);
	ASSERT_EQ(d.err, 0);
	ASSERT_EQ(d.last.err, 0);
	ASSERT(d.res != NULL);
	ASSERT_STR_EQ(d.res->message, "ok");
	kiln_result_free(d.res);
	pthread_join(p.thread, NULL);
	/* The same peer now drops the connection on the next request. */
	p.fn = answer_drop;
	p.serve = 2;
	peer_go(&p);
	done_init(&d);
	ASSERT_EQ(kiln_call_async(c, &tc, on_result, &d), 0);
	done_wait(&d, 1);
	ASSERT_EQ(d.err, -ECONNRESET);
	ASSERT(d.res == NULL);
	ASSERT(d.last.outcome_unknown);
	ASSERT_CONTAINS(d.last.message, "lost connection");
	peer_stop(&p);
	kiln_close(c);
	ASSERT_EQ(d.calls, 1); /* exactly once */
	peer_free(&p);
}

TEST(async_close_in_flight)
{
	peer p;
	peer_start(&p, answer_drop, 0);
	p.hold = true;
	peer_go(&p);
	kiln_client *c = client_of(&p, "t");
	Kiln__BashInput in;
	Kiln__ToolCall tc = bash_call(&in, "sleep 100");
	struct done d[8];
	for (int i = 0; i < 8; i++) {
		done_init(&d[i]);
		ASSERT_EQ(kiln_call_async(c, &tc, on_result, &d[i]), 0);
	}
	/* Wait until the held request arrived, so at least one is past sending. */
	for (int i = 0; i < 500 && !__atomic_load_n(&p.ngot, __ATOMIC_ACQUIRE); i++)
		usleep(2000);
	ASSERT_EQ(p.ngot, 1);
	kiln_close(c); /* returns only after every callback has */
	for (int i = 0; i < 8; i++) {
		ASSERT_EQ(d[i].calls, 1);
		ASSERT_EQ(d[i].err, -ECANCELED);
		ASSERT(d[i].res == NULL);
	}
	peer_stop(&p);
	peer_free(&p);
}

/* ---- the CLI through the peer ---- */

static nng_msg *
answer_cli_run(peer *p, const Kiln__ClientRequest *req)
{
	Kiln__ToolResult res = KILN__TOOL_RESULT__INIT;
	res.job_id = req->call->job_id;
	res.is_error = true;
	res.exit_code = 3;
	res.output.data = (uint8_t *)"out\n";
	res.output.len = 4;
	res.stderr.data = (uint8_t *)"err\n";
	res.stderr.len = 4;
	return result_reply(req, &res);
}

/* Run the CLI with argv; out and err are heap strings the caller frees. */
static int
cli_run(char **argv, char **out, char **err)
{
	size_t ol, el;
	FILE *o = open_memstream(out, &ol), *e = open_memstream(err, &el);
	int argc = 0;
	while (argv[argc])
		argc++;
	int rv = cli_main(argc, argv, o, e);
	fclose(o);
	fclose(e);
	return rv;
}

TEST(cli_run_passes_through)
{
	unsetenv("KILN_TOKEN");
	unsetenv("KILN_TOKEN_FILE");
	peer p;
	peer_start(&p, answer_cli_run, 1);
	peer_go(&p);
	char *out, *err;
	char *argv[] = {"kiln", "--scheduler", p.url, "run", "--limit", "memory=64M,pids=10",
	                "-e",   "A=1",         "sh",  "-c",  "exit 3",  NULL};
	ASSERT_EQ(cli_run(argv, &out, &err), 3);
	ASSERT_STR_EQ(out, "out\n");
	ASSERT_STR_EQ(err, "err\n");
	free(out);
	free(err);
	peer_stop(&p);
	Kiln__ClientRequest *q = p.got[0]->client_request;
	ASSERT_STR_EQ(q->token, CLI_DEV_TOKEN);
	ASSERT_STR_EQ(q->call->session_id, "");
	ASSERT_NE(q->call->job_id, 0);
	ASSERT_EQ(q->call->limits->memory_bytes, 64 << 20);
	ASSERT_EQ(q->call->limits->pids, 10);
	ASSERT_EQ(q->call->exec->n_argv, 3);
	ASSERT_STR_EQ(q->call->exec->argv[2], "exit 3");
	ASSERT_EQ(q->call->exec->n_env, 1);
	ASSERT_STR_EQ(q->call->exec->env[0]->key, "A");
	ASSERT_STR_EQ(q->call->exec->env[0]->value, "1");
	peer_free(&p);
}

static nng_msg *
answer_unauth(peer *p, const Kiln__ClientRequest *req)
{
	return error_reply(req, KILN__CODE__UNAUTHENTICATED, "token refused", 0);
}

TEST(cli_token_refused)
{
	unsetenv("KILN_TOKEN_FILE");
	setenv("KILN_TOKEN", "wrong", 1);
	peer p;
	peer_start(&p, answer_unauth, 1);
	peer_go(&p);
	char *out, *err;
	char *argv[] = {"kiln", "--scheduler", p.url, "bash", "S", "ls", "-la", NULL};
	ASSERT_EQ(cli_run(argv, &out, &err), CLI_EXIT_NOPERM);
	ASSERT_STR_EQ(out, "");
	ASSERT_STR_EQ(err, "kiln: the scheduler refused the token (UNAUTHENTICATED): token "
	                   "refused. The token came from KILN_TOKEN. Pass a tenant token with "
	                   "--token TOKEN, --token-file FILE or KILN_TOKEN.\n");
	free(out);
	free(err);
	peer_stop(&p);
	ASSERT_STR_EQ(p.got[0]->client_request->token, "wrong");
	ASSERT_STR_EQ(p.got[0]->client_request->call->bash->command, "ls -la");
	unsetenv("KILN_TOKEN");
	peer_free(&p);
}

TEST(cli_sessions)
{
	peer p;
	peer_start(&p, answer_admin, 3);
	peer_go(&p);
	char *out, *err;
	char *a1[] = {"kiln", "--scheduler", p.url, "session", "open", "--limit", "cpu=1.5", NULL};
	ASSERT_EQ(cli_run(a1, &out, &err), 0);
	ASSERT_STR_EQ(out, "s-42\n");
	ASSERT_CONTAINS(err, "does not enforce resource limits");
	free(out);
	free(err);
	char *a2[] = {"kiln", "--scheduler", p.url, "session", "close", "s-9", NULL};
	ASSERT_EQ(cli_run(a2, &out, &err), CLI_EXIT_NOTFOUND);
	ASSERT_CONTAINS(err, "kiln: NOT_FOUND: no session. `kiln session list` shows");
	free(out);
	free(err);
	char *a3[] = {"kiln", "--json", "--scheduler", p.url, "session", "list", NULL};
	ASSERT_EQ(cli_run(a3, &out, &err), 0);
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);
	ASSERT(j != NULL);
	ASSERT_STR_EQ(json_string_value(json_object_get(
	                      json_array_get(json_object_get(j, "sessions"), 0), "session_id")),
	              "s-42");
	json_decref(j);
	free(out);
	free(err);
	peer_stop(&p);
	ASSERT_EQ(p.got[0]->client_request->open->limits->cpu_millicores, 1500);
	peer_free(&p);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
