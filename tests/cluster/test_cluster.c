/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A scheduler and three nodes as real processes over loopback TCP: 1,000
 * sessions spread across the nodes, session affinity, token authentication
 * of clients and nodes, tenant isolation, quotas, protocol version
 * mismatches on both sides, and node drain.
 */
#include "test.h"

#include "kl_proto.h"
#include "kl_util.h"
#include "kt_cluster.h"
#include "kt_node.h"

#include <fcntl.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static kt_cluster cl;

TEST(setup)
{
	kt_require_sandboxes();
	kt_cluster_init(&cl, NULL);
	kt_cluster_start_sched(&cl);
	const char *warm[] = {"--warm", "16", "--refill-rate", "1000", NULL};
	for (int i = 0; i < 3; i++)
		kt_cluster_add_node(&cl, warm);
}

static int
node_index(const char *id)
{
	for (int i = 0; i < cl.nnodes; i++)
		if (!strcmp(cl.names[i], id))
			return i;
	return -1;
}

TEST(thousand_sessions_spread_with_affinity)
{
	enum { N = 1000 };
	static char *ids[N];
	static int where[N];
	int per_node[KT_MAX_NODES] = {0};
	kiln_client *k = kt_cluster_client(&cl, KT_ALPHA);
	for (int i = 0; i < N; i++) {
		Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
		Kiln__SessionOpened *op = NULL;
		if (kiln_session_open_full(k, &o, &op) < 0)
			KT_FAIL("open %d: %s", i, kiln_last_error()->message);
		ASSERT_EQ(op->code, 0);
		ids[i] = strdup(op->session->session_id);
		where[i] = node_index(op->session->node_id);
		ASSERT_GE(where[i], 0);
		per_node[where[i]]++;
		kiln_opened_free(op);
	}
	for (int i = 0; i < cl.nnodes; i++) {
		fprintf(stderr, "node %d holds %d sessions\n", i, per_node[i]);
		ASSERT_GT(per_node[i], N / 10); /* spread, not piled on one node */
	}
	/* Every later call of a session runs on its node. */
	for (int i = 0; i < N; i += 7) {
		Kiln__ToolResult *r;
		ASSERT_EQ(kiln_bash(k, ids[i], "echo $((6*7))", 0, &r), 0);
		ASSERT_EQ(r->code, 0);
		ASSERT_EQ(r->output.len, 3);
		ASSERT_EQ(node_index(r->node_id), where[i]);
		kiln_result_free(r);
		ASSERT_EQ(kiln_write(k, ids[i], "f.txt", "x", 1, &r), 0);
		ASSERT_EQ(node_index(r->node_id), where[i]);
		kiln_result_free(r);
	}
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(kiln_session_close(k, ids[i]), 0);
		free(ids[i]);
	}
	kiln_close(k);
}

TEST(bad_client_token_is_refused)
{
	kiln_client *k = kt_cluster_client(&cl, "not-a-token");
	char *sid = NULL;
	ASSERT_LT(kiln_session_open(k, NULL, NULL, &sid, NULL, 0), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__UNAUTHENTICATED);
	ASSERT_CONTAINS(kiln_last_error()->message, "token refused");
	kiln_close(k);
}

TEST(tenants_cannot_reach_each_other)
{
	kiln_client *a = kt_cluster_client(&cl, KT_ALPHA), *b = kt_cluster_client(&cl, KT_BETA);
	char *sid;
	ASSERT_EQ(kiln_session_open(a, NULL, NULL, &sid, NULL, 0), 0);
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_write(a, sid, "secret", "alpha-only", 10, &r), 0);
	kiln_result_free(r);
	/* beta knows the id: a call, a read, a close and a cancel all find nothing. */
	ASSERT_LT(kiln_read(b, sid, "secret", 0, 0, &r), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	ASSERT_NOT_CONTAINS(kiln_last_error()->message, "alpha-only");
	ASSERT_LT(kiln_bash(b, sid, "cat secret", 0, &r), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	ASSERT_LT(kiln_session_close(b, sid), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__NOT_FOUND);
	/* ...and the session is intact for its owner. */
	ASSERT_EQ(kiln_read(a, sid, "secret", 0, 0, &r), 0);
	ASSERT_EQ(r->output.len, 10);
	kiln_result_free(r);
	Kiln__SessionListReply *l;
	ASSERT_EQ(kiln_session_list(b, &l), 0);
	for (size_t i = 0; i < l->n_sessions; i++)
		ASSERT(strcmp(l->sessions[i]->session_id, sid) != 0);
	kiln_list_free(l);
	ASSERT_EQ(kiln_session_close(a, sid), 0);
	free(sid);
	kiln_close(a);
	kiln_close(b);
}

TEST(quotas)
{
	kiln_client *k = kt_cluster_client(&cl, KT_SMALL);
	char *s1, *s2, *s3;
	ASSERT_EQ(kiln_session_open(k, NULL, NULL, &s1, NULL, 0), 0);
	ASSERT_EQ(kiln_session_open(k, NULL, NULL, &s2, NULL, 0), 0);
	ASSERT_LT(kiln_session_open(k, NULL, NULL, &s3, NULL, 0), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__RESOURCE_EXHAUSTED);
	ASSERT_GT(kiln_last_error()->retry_after_ms, 0);
	/* Limits above the tenant's maximum are refused. */
	Kiln__Limits big = KILN__LIMITS__INIT;
	big.memory_bytes = 8ull << 30;
	ASSERT_EQ(kiln_session_close(k, s2), 0);
	ASSERT_LT(kiln_session_open(k, NULL, &big, &s3, NULL, 0), 0);
	ASSERT_EQ(kiln_last_error()->code, KILN__CODE__PERMISSION_DENIED);
	/* The submit rate (5/s, burst 5): a quick burst of 20 calls sees refusals
	 * with a retry-after, not a queue that grows. */
	int ok = 0, refused = 0;
	for (int i = 0; i < 20; i++) {
		Kiln__ToolResult *r;
		if (kiln_bash(k, s1, "true", 0, &r) == 0) {
			ok++;
			kiln_result_free(r);
		} else {
			ASSERT_EQ(kiln_last_error()->code, KILN__CODE__RESOURCE_EXHAUSTED);
			ASSERT_GT(kiln_last_error()->retry_after_ms, 0);
			refused++;
		}
	}
	fprintf(stderr, "rate limit: %d accepted, %d refused\n", ok, refused);
	ASSERT_GT(refused, 0);
	ASSERT_LE(ok, 8);
	ASSERT_EQ(kiln_session_close(k, s1), 0);
	free(s1);
	free(s2);
	kiln_close(k);
}

TEST(node_with_bad_join_token_is_refused)
{
	char log[512], tok[512];
	snprintf(tok, sizeof tok, "%s/bad.token", cl.dir);
	FILE *f = fopen(tok, "w");
	fputs("wrong\n", f);
	fclose(f);
	snprintf(log, sizeof log, "%s/badnode.log", cl.dir);
	char exe[4200];
	snprintf(exe, sizeof exe, "%s/kiln-node", cl.bindir);
	const char *argv[] = {exe, "--scheduler", cl.node_url, "--token-file",
	                      tok, "--name",      "intruder",  "--allow-unenforced-limits",
	                      NULL};
	pid_t p = kt_spawn(argv, log);
	int st = kt_wait_pid(p, 10000);
	ASSERT(st != -1);
	ASSERT(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	char *text;
	size_t len;
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, log, 1 << 20, &text, &len), 0);
	ASSERT_CONTAINS(text, "join token refused");
	free(text);
}

TEST(node_with_other_protocol_version_is_refused)
{
	char log[512];
	snprintf(log, sizeof log, "%s/vnode.log", cl.dir);
	const char *extra[] = {"--protocol-version", "2", NULL};
	pid_t p = kt_cluster_spawn_node(&cl, "future-node", extra, log);
	int st = kt_wait_pid(p, 10000);
	ASSERT(st != -1);
	ASSERT(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	char *text;
	size_t len;
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, log, 1 << 20, &text, &len), 0);
	ASSERT_CONTAINS(text, "VERSION_MISMATCH");
	ASSERT_CONTAINS(text, "speaks 1");
	free(text);
}

TEST(client_with_other_protocol_version_is_refused)
{
	nng_socket s;
	ASSERT_EQ(nng_req0_open(&s), 0);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
	ASSERT_EQ(nng_dial(s, cl.client_url, NULL, 0), 0);
	Kiln__StatusRequest sr = KILN__STATUS_REQUEST__INIT;
	Kiln__ClientRequest req = KILN__CLIENT_REQUEST__INIT;
	req.token = KT_ALPHA;
	req.op_case = KILN__CLIENT_REQUEST__OP_STATUS;
	req.status = &sr;
	Kiln__Envelope e = KILN__ENVELOPE__INIT;
	e.msg_case = KILN__ENVELOPE__MSG_CLIENT_REQUEST;
	e.client_request = &req;
	uint8_t *buf;
	size_t len;
	ASSERT_EQ(kl_env_encode_as(&e, 9, &buf, &len), 0);
	ASSERT_EQ(nng_send(s, buf, len, 0), 0);
	free(buf);
	void *rb;
	size_t rl;
	ASSERT_EQ(nng_recv(s, &rb, &rl, NNG_FLAG_ALLOC), 0);
	Kiln__Envelope *d;
	ASSERT_EQ(kl_env_decode(rb, rl, KL_MAX_MSG, &d, NULL), 0);
	nng_free(rb, rl);
	ASSERT_EQ(d->msg_case, KILN__ENVELOPE__MSG_CLIENT_REPLY);
	ASSERT_EQ(d->client_reply->reply_case, KILN__CLIENT_REPLY__REPLY_ERROR);
	ASSERT_EQ(d->client_reply->error->code, KILN__CODE__VERSION_MISMATCH);
	ASSERT_CONTAINS(d->client_reply->error->message, "sent 9");
	kiln__envelope__free_unpacked(d, NULL);
	/* Garbage gets a clear error too, and the scheduler keeps serving. */
	ASSERT_EQ(nng_send(s, "\xff\xfe garbage", 10, 0), 0);
	ASSERT_EQ(nng_recv(s, &rb, &rl, NNG_FLAG_ALLOC), 0);
	nng_free(rb, rl);
	nng_close(s);
	kiln_client *k = kt_cluster_client(&cl, KT_ALPHA);
	Kiln__StatusReply *st;
	ASSERT_EQ(kiln_status(k, &st), 0);
	kiln_status_free(st);
	kiln_close(k);
}

TEST(drain)
{
	kiln_client *adm = kt_cluster_client(&cl, KT_ADMIN);
	kiln_client *k = kt_cluster_client(&cl, KT_ALPHA);
	/* A session on node 2, then drain node 2. */
	char *sid = NULL;
	Kiln__SessionOpened *op = NULL;
	for (int i = 0; i < 50; i++) {
		Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
		ASSERT_EQ(kiln_session_open_full(k, &o, &op), 0);
		if (node_index(op->session->node_id) == 2) {
			sid = strdup(op->session->session_id);
			kiln_opened_free(op);
			break;
		}
		ASSERT_EQ(kiln_session_close(k, op->session->session_id), 0);
		kiln_opened_free(op);
	}
	ASSERT(sid != NULL);
	ASSERT_EQ(kiln_node_admin(adm, cl.names[2], "drain"), 0);
	/* No new session lands there... */
	for (int i = 0; i < 20; i++) {
		Kiln__SessionOpen o = KILN__SESSION_OPEN__INIT;
		ASSERT_EQ(kiln_session_open_full(k, &o, &op), 0);
		ASSERT_NE(node_index(op->session->node_id), 2);
		ASSERT_EQ(kiln_session_close(k, op->session->session_id), 0);
		kiln_opened_free(op);
	}
	/* ...its session still works... */
	Kiln__ToolResult *r;
	ASSERT_EQ(kiln_bash(k, sid, "echo still-here", 0, &r), 0);
	ASSERT_EQ(node_index(r->node_id), 2);
	kiln_result_free(r);
	/* ...and once it is empty the node exits by itself, cleanly. */
	ASSERT_EQ(kiln_session_close(k, sid), 0);
	int st = kt_wait_pid(cl.nodes[2], 15000);
	ASSERT(st != -1);
	ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	cl.nodes[2] = 0;
	free(sid);
	kiln_close(k);
	kiln_close(adm);
}

TEST(teardown)
{
	kt_cluster_stop(&cl);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
