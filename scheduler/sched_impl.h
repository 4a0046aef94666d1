/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's internal structures, shared by sched.c (the logic: nodes,
 * sessions, jobs, placement, dispatch, failures), sched_client.c (client
 * requests) and sched_net.c (nng contexts and sending). Everything below is
 * protected by sched.mu unless noted.
 */
#ifndef SCHED_IMPL_H
#define SCHED_IMPL_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fairq.h"
#include "kiln.pb-c.h"
#include "kl_list.h"
#include "kl_audit.h"
#include "kl_map.h"
#include "kiln_sched.h"
#include "tenants.h"

#define SCHED_COMPONENT "scheduler"

/* Session ids of one-shot calls: nodes report them like any other session,
 * and a restarted scheduler must tell them apart (see rebuild_sessions). */
#define SCHED_ONESHOT_PREFIX "e-"

typedef struct sctx sctx;
typedef struct snode snode;
typedef struct ssess ssess;
typedef struct sjob sjob;

/* ---- an nng REP context (sched_net.c) ---- */

enum sctx_kind { SC_NODE, SC_CLIENT };
enum sctx_state { SC_RECV, SC_BUSY, SC_PARKED, SC_SEND, SC_DEAD };
enum sctx_park { PK_NONE, PK_WORK, PK_HB, PK_CLIENT };

struct sctx {
	sched *s;
	enum sctx_kind kind;
	enum sctx_state state;
	enum sctx_park park;
	nng_ctx ctx;
	nng_aio *aio;
	nng_pipe pipe; /* the peer of the request being served */
	kl_list link;  /* node->parked_work, or s->sendq */
	kl_list all;
	uint64_t deadline_ms; /* parked: reply by then */
	snode *node;          /* parked for this node */
	uint64_t request_id;  /* client request being served */
	nng_msg *out;         /* reply waiting to be sent */
	size_t unsent;        /* bytes its reply adds to its pipe's unsent total */
	bool close_pipe;      /* that total passed the limit: close the pipe */
};

/* ---- nodes ---- */

enum snode_state { N_READY, N_DRAINING, N_DEAD };

typedef struct stmpl {
	char name[64];
	uint32_t warm, target, creating;
} stmpl;

struct snode {
	char id[128];
	uint64_t incarnation;
	nng_pipe pipe;
	enum snode_state state;
	bool removing;
	uint32_t slots, max_sessions, running, free_slots;
	uint32_t nsessions, pending_opens;
	bool limits_enforced;
	int ntmpl;
	stmpl tmpl[8];
	char software[64];
	uint64_t last_hb_ms, registered_ms, calls_done;
	kl_list parked_work; /* sctx waiting for work from this node */
	uint32_t nparked;
	sctx *parked_hb;  /* heartbeat held until control or timeout */
	kl_list ctrl;     /* sitem: opens/closes, before calls */
	kl_list hbq;      /* sitem: cancels and closes riding on heartbeats */
	fairq *fq;        /* ready sessions, by tenant */
	kl_map inflight;  /* job key -> sjob running here */
	kl_list sessions; /* ssess on this node */
	kl_list link;
	char **labels; /* "k=v" */
	size_t nlabels;
};

/* ---- sessions ---- */

enum ssess_state { S_OPENING, S_OPEN, S_CLOSING };

struct ssess {
	char id[72];
	sched_tenant *tenant;
	snode *node;
	char template_[64];
	Kiln__Limits lim;
	Kiln__SessionOpen *open; /* what to send the node (heap copy) */
	enum ssess_state state;
	bool ephemeral; /* one-shot call: closed after its call */
	bool open_sent;
	kl_list calls; /* sjob waiting */
	uint32_t ncalls;
	sjob *inflight;
	fairq_item fq;
	bool in_fq;
	sctx *open_ctx;  /* client waiting for the open */
	sctx *close_ctx; /* client waiting for the close */
	uint64_t created_ms, last_used_ms, calls_done;
	kl_list node_link;
	int retries;
	bool counted;         /* counted in node->nsessions */
	bool close_pending;   /* close asked while opening */
	uint64_t secret_mask; /* secrets injected into it: scrubbed from its results */
};

/* ---- jobs ---- */

enum sjob_state { J_QUEUED, J_RUNNING };

struct sjob {
	uint64_t id;        /* cluster-unique, what nodes see */
	uint64_t client_id; /* the client's ToolCall.job_id */
	char key[24];       /* hex of id: key in s->jobs and node->inflight */
	char ckey[96];      /* tenant/client_id: key in s->client_jobs */
	sched_tenant *tenant;
	ssess *sess;
	sctx *cctx;               /* client waiting for the result */
	Kiln__ClientRequest *req; /* owns the ToolCall */
	enum sjob_state state;
	uint64_t t_submit_ns, deadline_ms;
	kl_list link;         /* sess->calls */
	uint64_t secret_mask; /* the session's secrets and the call's own */
};

/* Items queued for a node outside the fair queue. */
enum sitem_kind { SI_OPEN, SI_CLOSE, SI_CANCEL };

typedef struct sitem {
	kl_list link;
	enum sitem_kind kind;
	char session_id[72];
	uint64_t job_id;
	ssess *sess; /* SI_OPEN */
} sitem;

/* ---- the scheduler ---- */

struct sched {
	pthread_mutex_t mu;
	sched_config cfg;
	sched_tenants tenants;
	nng_socket node_sock, client_sock;
	nng_listener listeners[4];
	int nlisteners;
	kl_list ctxs;                    /* every sctx */
	uint32_t node_recv, client_recv; /* contexts waiting in recv */
	uint32_t node_ctxs, client_ctxs;
	kl_list sendq; /* sctx with a reply to send once unlocked */
	kl_map nodes;  /* id -> snode */
	kl_list node_list;
	kl_map sessions;    /* id -> ssess */
	kl_map jobs;        /* key -> sjob */
	kl_map client_jobs; /* tenant/client id -> sjob */
	kl_map removed;     /* node id -> incarnation (uint64_t *) removed by the operator */
	kl_map lost;        /* node id -> incarnation (uint64_t *) declared lost */
	kl_map unsent;      /* client pipe id -> bytes of replies not yet sent (sched_net.c) */
	uint32_t queued, inflight;
	uint64_t next_job;
	uint64_t placements, calls_done, node_lost, rejected;
	uint64_t started_ms;
	uint64_t rng;
	bool stopping, stopped;
	pthread_t ticker;
	pthread_cond_t tick_cond;
	bool ticker_running;
	kl_audit *audit; /* tool calls and admin actions (NULL: no audit log) */
};

/* sched_net.c */
int sched_net_start(sched *s, const char *extra_node_url, const char *extra_client_url, char *err,
                    size_t errlen);
void sched_net_stop(sched *s);
/* Queue an Envelope as the reply of ctx (under the lock; sent by sched_flush). */
void sctx_reply_env(sctx *c, Kiln__Envelope *e);
void sctx_reply_client(sctx *c, Kiln__ClientReply *r);
void sctx_reply_error(sctx *c, int code, const char *msg, uint32_t retry_after_ms);
/* Send everything queued (call without the lock). */
void sched_flush(sched *s);

/* sched.c */
void sched_on_node_msg(sched *s, sctx *c, Kiln__Envelope *e);
void sched_on_node_pipe_gone(sched *s, nng_pipe p);
void sched_tick(sched *s);
snode *sched_place(sched *s, const char *template_, snode *avoid);
void sched_kick(sched *s, snode *n);
void sess_ready(sched *s, ssess *ss);
/* Forget a session: queued calls fail with code/msg, waiting clients are answered. */
void sess_free(sched *s, ssess *ss, int code, const char *msg);
void node_queue_ctrl(snode *n, enum sitem_kind k, ssess *ss, const char *sid, uint64_t job);
void job_finish_client(sched *s, sjob *j, Kiln__ToolResult *r);
void job_fail(sched *s, sjob *j, int code, const char *msg, uint32_t retry_after_ms);
uint64_t sched_now_ms(void);
void sched_seed(sched *s);
void limits_copy(Kiln__Limits *dst, const Kiln__Limits *src);
void sched_remove_node(sched *s, snode *n);
/* Answer the node's held heartbeat now if there is control for it. */
void sched_hb_flush(sched *s, snode *n);
void sched_node_free(snode *n);
void sched_status(sched *s, sctx *c, sched_tenant *only);

/* sched_client.c */
void sched_on_client_msg(sched *s, sctx *c, Kiln__Envelope *e);
void sched_client_opened(sched *s, ssess *ss, const Kiln__SessionOpened *o);

#endif
