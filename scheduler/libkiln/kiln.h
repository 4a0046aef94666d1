/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkiln: the C client of a kiln cluster. A kiln_client holds one nng REQ
 * socket dialed to the scheduler's client URL; every request runs on its own
 * nng context, so one client serves any number of threads and asynchronous
 * calls at once. Requests and replies are the protobuf-c types of
 * proto/kiln.proto (Kiln__ToolCall, Kiln__ToolResult, ...). Delivery is
 * at-most-once: the socket never re-sends a request, and a connection lost
 * while a request is out is reported as such ("the call's outcome is
 * unknown") rather than retried. See docs/libkiln.md for an example program.
 *
 * Return convention (every int function): 0 on success; a negative errno on
 * failure. Failures come in two kinds, told apart by kiln_last_error()->code:
 * the scheduler answered with an error (code >= 0, a Kiln__Code) or no usable
 * answer arrived (code == KILN_NO_ANSWER: transport, encoding or local errors).
 * Tool outcomes are not failures: a call that ran returns 0 with the tool's
 * own code (TOOL_ERROR, DEADLINE_EXCEEDED, ...) inside the Kiln__ToolResult.
 * Outputs (ret_*) are written only on success.
 */
#ifndef KILN_H
#define KILN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_client kiln_client;

/* The default client URL of a scheduler (and of `kiln dev`). */
#define KILN_DEFAULT_URL "tcp://127.0.0.1:7071"

/* kiln_error.code when no answer from the scheduler explains the failure. */
#define KILN_NO_ANSWER (-1)

/*
 * Why the last libkiln call on this thread failed. Plain data (no lifecycle),
 * so it is a visible struct rather than an opaque type.
 */
typedef struct kiln_error {
	int err;                 /* the negative errno the call returned */
	int code;                /* Kiln__Code the scheduler answered with, or KILN_NO_ANSWER */
	uint32_t retry_after_ms; /* RESOURCE_EXHAUSTED: wait this long before retrying */
	bool outcome_unknown;    /* the request went out but no reply came: it may have run */
	char message[512];       /* one line, no trailing newline, never empty on failure */
} kiln_error;

/*
 * Thread-local: describes the most recent failed libkiln call made by the
 * calling thread, and is cleared (err == 0) by each call that succeeds. Inside
 * a kiln_result_cb it describes that asynchronous call. Never NULL; valid
 * until the thread's next libkiln call.
 */
const kiln_error *kiln_last_error(void);

/*
 * The negative errno libkiln returns when the scheduler answers with `code`:
 * INVALID_ARGUMENT -EINVAL, NOT_FOUND -ENOENT, PERMISSION_DENIED -EACCES,
 * UNAUTHENTICATED -EKEYREJECTED, RESOURCE_EXHAUSTED -EAGAIN,
 * DEADLINE_EXCEEDED -ETIMEDOUT, CANCELLED -ECANCELED, NODE_LOST -EHOSTDOWN,
 * UNAVAILABLE -EBUSY, VERSION_MISMATCH -EPROTO, FAILED_PRECONDITION -ENOTSUP,
 * anything else -EREMOTEIO. OK gives 0. Pure; any thread.
 */
int kiln_code_errno(int code);

/* ---- connection ---- */

/*
 * Dial the scheduler at url (NULL: KILN_DEFAULT_URL) and keep the token to
 * send with every request (NULL or "" sends none). Dials synchronously, so a
 * scheduler that is not there fails now: -ECONNREFUSED, -EINVAL (malformed
 * URL), -ENOTSUP (unknown transport), -EHOSTUNREACH, other -errno. On failure
 * a one-line message goes to err (if errlen > 0) and to kiln_last_error().
 * Once connected, a dropped connection is re-dialed in the background.
 * On success *ret is owned by the caller (kiln_close). Any thread.
 */
int kiln_connect(const char *url, const char *token, kiln_client **ret, char *err, size_t errlen);

/*
 * Close the socket, fail every request still in flight (-ECANCELED; their
 * callbacks run), wait for those callbacks to return, and free c. Accepts
 * NULL. Must not be called from a kiln_result_cb, nor while another thread
 * is still using c.
 */
void kiln_close(kiln_client *c);

/*
 * How long a request waits for its reply, in ms; 0 = forever (the default:
 * tool calls may run long). A reply that does not come in time fails the
 * request with -ETIMEDOUT and outcome_unknown set. Applies to requests
 * started after the call. Any thread.
 */
void kiln_set_timeout(kiln_client *c, uint32_t ms);

/*
 * How long a request may wait for a connection to the scheduler before it is
 * sent, in ms (default 10000; 0 = forever). A request that times out here
 * was never sent: -ENOTCONN, outcome_unknown false. Any thread.
 */
void kiln_set_send_timeout(kiln_client *c, uint32_t ms);

/* The URL c dialed (owned by c). */
const char *kiln_url(const kiln_client *c);

/* ---- generic requests ---- */

/*
 * Send any ClientRequest and wait for its reply. req is only read (the token
 * and request_id are filled in on a copy when req leaves them empty). Returns
 * 0 whenever the scheduler answered with a ClientReply, whatever its content
 * (an ErrorReply inside it included); *ret is then heap-allocated and freed
 * with kiln_reply_free. Fails on transport errors and when the scheduler
 * answered with a bare Envelope.error (the request could not be decoded or
 * the versions differ). Any thread; blocks.
 */
int kiln_request(kiln_client *c, const Kiln__ClientRequest *req, Kiln__ClientReply **ret);
/* Free a reply from kiln_request. Accepts NULL. */
void kiln_reply_free(Kiln__ClientReply *r);

/* ---- sessions ---- */

/*
 * Open a session with the template (NULL or "": "default") and limits (NULL:
 * the template's defaults). On success *ret_session_id is a heap string the
 * caller frees with free(). Fails when the scheduler refuses (the SessionOpened
 * code mapped by kiln_code_errno, e.g. -EAGAIN with retry_after_ms), with the
 * message also copied to err when errlen > 0. Any thread; blocks.
 */
int kiln_session_open(kiln_client *c, const char *template_, const Kiln__Limits *lim,
                      char **ret_session_id, char *err, size_t errlen);

/*
 * The full form: send open as given (template, limits, env; session_id and
 * tenant are the scheduler's to fill) and return the whole SessionOpened
 * (node, warm, claim time, limits_enforced), freed with kiln_opened_free.
 * Succeeds only when the session was opened (code OK). Any thread; blocks.
 */
int kiln_session_open_full(kiln_client *c, const Kiln__SessionOpen *open,
                           Kiln__SessionOpened **ret);
void kiln_opened_free(Kiln__SessionOpened *o);

/* Close a session: 0, or e.g. -ENOENT (no such session). Any thread; blocks. */
int kiln_session_close(kiln_client *c, const char *session_id);

/* The tenant's sessions (all sessions with the admin token); free with kiln_list_free. */
int kiln_session_list(kiln_client *c, Kiln__SessionListReply **ret);
void kiln_list_free(Kiln__SessionListReply *l);

/* ---- tool calls ---- */

/*
 * A random, nonzero 64-bit job id. Put it in ToolCall.job_id before a call
 * to be able to cancel it from another thread (kiln_cancel); calls that leave
 * job_id 0 get one of these. Any thread.
 */
uint64_t kiln_job_id_new(void);

/*
 * Run any tool call and wait for its result. call is only read. session_id
 * "" (or NULL) makes a one-shot call in a fresh session of call->template_
 * with call->limits. Returns 0 whenever the call produced a result, whatever
 * its code: check (*ret)->code (OK, TOOL_ERROR, DEADLINE_EXCEEDED, CANCELLED,
 * NODE_LOST, ...) and exit_code. Fails when the scheduler refused the call
 * (e.g. -ENOENT unknown session, -EAGAIN over quota, -EKEYREJECTED bad token)
 * or on transport errors. *ret is freed with kiln_result_free. Any thread; blocks.
 */
int kiln_call(kiln_client *c, const Kiln__ToolCall *call, Kiln__ToolResult **ret);
/* Free a result. Accepts NULL. */
void kiln_result_free(Kiln__ToolResult *r);

/*
 * Conveniences over kiln_call; session NULL or "" means a one-shot call with
 * the default template. timeout_ms 0 = the tool's or session's default.
 */
/* bash: one command in the session's persistent shell (stdout+stderr in output). */
int kiln_bash(kiln_client *c, const char *session, const char *command, uint32_t timeout_ms,
              Kiln__ToolResult **ret);
/* bash restart: kill the session's shell and everything it started. */
int kiln_bash_restart(kiln_client *c, const char *session, Kiln__ToolResult **ret);
/* exec: argv (NULL-terminated, argv[0] looked up in PATH) in a fresh process. */
int kiln_exec(kiln_client *c, const char *session, const char *const *argv, uint32_t timeout_ms,
              Kiln__ToolResult **ret);
/* read: the file's text; lines start..end (1-based, inclusive; end <= 0: to the
 * end of the file); start == 0 reads the whole file. */
int kiln_read(kiln_client *c, const char *session, const char *path, int64_t start, int64_t end,
              Kiln__ToolResult **ret);
/* write: replace the whole file with len bytes of data, creating parent directories. */
int kiln_write(kiln_client *c, const char *session, const char *path, const void *data, size_t len,
               Kiln__ToolResult **ret);
/* edit: replace old_string by new_string (exactly one occurrence unless replace_all). */
int kiln_edit(kiln_client *c, const char *session, const char *path, const char *old_string,
              const char *new_string, bool replace_all, Kiln__ToolResult **ret);
/* glob: doublestar pattern under path (NULL: the working directory). */
int kiln_glob(kiln_client *c, const char *session, const char *pattern, const char *path,
              Kiln__ToolResult **ret);
/* grep: regex pattern under path (NULL: the working directory). */
int kiln_grep(kiln_client *c, const char *session, const char *pattern, const char *path,
              Kiln__ToolResult **ret);

/*
 * Ask the scheduler to cancel the call with this job id (one of this
 * tenant's). The call itself then ends with code CANCELLED. 0 when the
 * scheduler accepted the cancel; -ENOENT when it knows no such job (finished
 * already, or never existed). Waits at most 10 s (or the kiln_set_timeout
 * value, if shorter) for the answer. Any thread; blocks briefly.
 */
int kiln_cancel(kiln_client *c, uint64_t job_id);

/*
 * Asynchronous tool call. The callback runs exactly once, on an nng thread,
 * with err 0 and the result (res owned by the callback: kiln_result_free), or
 * with err < 0 and res NULL; kiln_last_error() inside the callback says why.
 * The callback must not block (it holds an nng worker thread), must not call
 * the blocking libkiln functions and must not call kiln_close; it may start
 * further kiln_call_async calls.
 */
typedef void kiln_result_cb(void *arg, int err, Kiln__ToolResult *res);

/*
 * Start call (only read: it is encoded before this returns) and return at
 * once. 0: the callback will run. On failure (e.g. -EINVAL, -EMSGSIZE,
 * -ECANCELED after kiln_close began) the callback never runs. Any thread,
 * including a kiln_result_cb.
 */
int kiln_call_async(kiln_client *c, const Kiln__ToolCall *call, kiln_result_cb *cb, void *arg);

/* ---- cluster ---- */

/* The cluster's state as this token may see it; free with kiln_status_free. */
int kiln_status(kiln_client *c, Kiln__StatusReply **ret);
void kiln_status_free(Kiln__StatusReply *s);

/*
 * Administer a node (needs the scheduler's admin token): action "drain"
 * (take no new sessions, leave when empty) or "remove" (forget it now; its
 * calls end NODE_LOST). 0, -ENOENT (no such node), -EACCES (not an admin
 * token), -EINVAL (unknown action). Any thread; blocks.
 */
int kiln_node_admin(kiln_client *c, const char *node_id, const char *action);

#ifdef __cplusplus
}
#endif

#endif
