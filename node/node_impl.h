/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal structures of the node, shared by its modules: sandbox.c (create,
 * control messages, destroy), pool.c (templates, warm pools, refill),
 * session.c (open/claim/close, idle TTL), call.c (exec), bash.c (the
 * persistent shell), fscall.c (file tools on the ring and on workers),
 * egress.c (the sandboxes' egress proxy) and node.c (lifecycle, mailbox,
 * dispatch). Everything here runs on the loop
 * thread unless marked otherwise.
 */
#ifndef NODE_IMPL_H
#define NODE_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "cgroup.h"
#include "egress.h"
#include "fstools.h"
#include "initproto.h"
#include "kl_list.h"
#include "kl_map.h"
#include "kl_mbox.h"
#include "kl_tail.h"
#include "loop.h"
#include "node.h"

#define NODE_COMPONENT     "node"
#define CHUNK              (32u << 10) /* pipe read size */
#define CLONE_STACK        (16u << 10)
#define DEFAULT_TIMEOUT_MS 120000u
#define BASH_OUTPUT_CAP    (100u << 10)

typedef struct node node;
typedef struct sandbox sandbox;
typedef struct session session;
typedef struct call call;

/* ---- templates and pools (pool.c) ---- */

typedef struct tmpl {
	node_template_cfg cfg;
	uint8_t *config; /* prebuilt KI_CONFIG body without the hostname record */
	uint32_t config_len;
	kl_list idle; /* sandboxes ready to claim, oldest first */
	uint32_t nidle, ncreating, nbusy;
	kl_list waiters; /* sessions waiting for a cold start */
} tmpl;

/* ---- sandboxes (sandbox.c) ---- */

enum sb_state { SB_CREATING, SB_IDLE, SB_CLAIMED, SB_DYING, SB_DEAD };

struct sandbox {
	node_ref ref;
	node *n;
	tmpl *t;
	kl_list link; /* tmpl->idle while idle */
	kl_list all;  /* node->sandboxes */
	enum sb_state state;
	uint32_t uid_slot;
	uid_t uid;
	gid_t gid;
	pid_t pid; /* init, in the node's pid namespace */
	int pidfd;
	int ctl; /* control socket */
	node_op ctl_op, pidfd_op;
	uint8_t *rbuf; /* KI_MAX_MSG receive buffer while claimed, small while idle */
	uint32_t rcap;
	char *stack; /* clone stack, freed once init runs */
	uint64_t t_start_ns, t_idle_ns;
	uint64_t next_id; /* spawn/request ids */
	session *s;       /* while claimed */
	bool reaped;
	int exit_status;
	/* claimed: */
	int rootfd;         /* O_PATH of /proc/<pid>/root */
	int sessfd, initfd; /* cgroup dirs tenants/<t>/<session>, .../init */
	struct tenant *tenant;
	uint64_t resize_id;
	/* egress proxy listeners from KI_READY (TCP, unix; -1: none), until the
	 * session's proxy takes them (egress.c) */
	int proxy_fd[2];
	struct msghdr ctl_mh; /* control receive: SCM_RIGHTS arrive with KI_READY */
	struct iovec ctl_iov;
	union {
		char buf[CMSG_SPACE(sizeof(int) * KI_MAX_FDS)];
		struct cmsghdr align;
	} ctl_cm;
};

/* ---- tenants' cgroup dirs (session.c) ---- */

typedef struct tenant {
	char name[72];
	int fd;
	int sessions;
} tenant;

/* ---- the persistent shell of a session (bash.c) ---- */

enum sh_state { SH_NONE, SH_STARTING, SH_READY, SH_DEAD };

typedef struct shell {
	node_ref ref; /* in-flight ops hold it; freed after the last completes */
	session *s;   /* NULL once detached (killed or replaced) */
	enum sh_state state;
	uint64_t spawn_id;
	pid_t pid;
	int out_r, status_r, trig_w, memfd;
	int leaf_fd;
	char leaf[32];
	node_op out_op, st_op, cmd_op, trig_op;
	uint8_t *buf; /* CHUNK */
	char st[64];
	size_t stlen;
	kl_tail tail; /* output since the last call ended */
	bool out_eof, st_eof, exited, out_paused;
	int wstatus;
	/* the leaf's cpu.stat usage and memory.events oom_kill at the call's start */
	uint64_t cpu_before, oom_before;
	int pending_status;         /* -1 none; else the exit status read from the status pipe */
	int spawn_err, spawn_stage; /* init could not start it (KI_SPAWN_FAILED) */
	node_op drain_op;
} shell;

/* ---- sessions (session.c) ---- */

enum ss_state { SS_OPENING, SS_OPEN, SS_CLOSING };

struct session {
	node_ref ref;
	node *n;
	char id[72];
	char tenant_name[72];
	tmpl *t;
	sandbox *sb;
	enum ss_state state;
	Kiln__Limits lim;        /* effective */
	Kiln__Limits tenant_lim; /* the tenant's aggregate on this node (if set) */
	bool tenant_lim_set;
	uint32_t tenant_weight; /* SessionOpen.tenant_weight (0: not given) */
	char **env;             /* "K=V" from open */
	size_t nenv;
	kl_list link;     /* node->sessions */
	kl_list waitlink; /* tmpl->waiters while waiting for a cold start */
	kl_list queue;    /* calls waiting to run, in order */
	uint32_t nqueued;
	call *cur;
	shell *sh; /* the persistent bash, NULL when none runs */
	uint64_t created_ms, last_used_ms, calls;
	uint32_t job_seq;
	uint64_t t_open_ns;
	bool warm;
	node_reply_fn *open_fn; /* pending open (cold start / resize) */
	void *open_arg;
	node_reply_fn *close_fn;
	void *close_arg;
	int pending_ops;
	egress_sess *egress; /* its proxy, while open (egress.c) */
};

/* ---- mailbox items (node.c) ---- */

enum mb_kind { MB_WORK = 1, MB_FSDONE, MB_RUN };

typedef struct mb_hdr {
	kl_mbox_item it; /* first: the mailbox links items through it */
	int kind;
} mb_hdr;

/* ---- calls (call.c, bash.c, fscall.c) ---- */

enum call_kind { CK_EXEC, CK_BASH, CK_FILE, CK_FILE_WORKER };

struct call {
	node_ref ref;
	kl_list link; /* session->queue while queued */
	node *n;
	session *s;
	Kiln__NodeWork *work; /* unpacked; owned */
	Kiln__ToolCall *tc;   /* work->call */
	node_reply_fn *fn;
	void *arg;
	enum call_kind kind;
	uint64_t t_submit_ns, t_start_ns;
	uint32_t timeout_ms;
	bool started, done, timed_out, cancelled;
	node_op timer_op;
	/* exec */
	uint64_t spawn_id;
	pid_t pid;
	bool spawned, exited;
	int wstatus;
	int out_r, err_r, in_w;
	node_op out_op, err_op, in_op, grace_op;
	uint8_t *obuf, *ebuf;
	kl_tail out, err;
	bool out_eof, err_eof;
	size_t in_off;
	int leaf_fd;
	char leaf[32];
	uint64_t cpu_before;
	/* spawn failure */
	int spawn_err, spawn_stage;
	char spawn_text[256];
	/* file tools */
	fs_root root;
	fs_result fres;
	fs_write w;
	int rfd;
	size_t rsize, rlen;
	uint8_t *data;
	char path[4096];
	node_op fs_op;
	int fs_step;
	mb_hdr mb;         /* worker completion, posted to the node's mailbox */
	int worker_rootfd; /* the worker's own copy of the sandbox root */
	/* bash */
	bool bash_restart;
	shell *shell_ref; /* the shell this bash call ran in (holds a ref) */
	int exit_code;
	bool shell_died;
};

/* ---- the node ---- */

typedef struct graveyard_ent {
	kl_list link;
	int parentfd;
	char name[80];
	uint64_t since_ns;
} graveyard_ent;

typedef struct mb_item {
	mb_hdr h;
	node_reply_fn *fn;
	void *arg;
	size_t len;
	uint8_t buf[];
} mb_item;

struct node {
	node_config cfg;
	char name[128];
	uint64_t incarnation;
	node_loop loop;
	kl_mbox mbox;
	node_op mbox_op;
	uint64_t mbox_val;
	node_op tick_op;
	node_ref self_ref; /* owner of loop-level ops */
	cg_discovery cgd;
	node_cg cg;
	unsigned enforced; /* CG_CTRL_* enforced */
	bool limits_enforced;
	char limits_text[256];
	tmpl tmpls[NODE_MAX_TEMPLATES];
	int ntmpl;
	uint8_t *seccomp;
	size_t seccomp_len;
	uint8_t *seccomp_child; /* the per-process add-on (clone3) */
	size_t seccomp_child_len;
	int init_fd;
	int proc_fd; /* /proc */
	/* host uid allocation */
	uint32_t uid_base, uid_count, uid_next;
	uint8_t *uid_used;
	int uid_lockfd;
	int name_lockfd; /* /run/kiln/node-<name>.lock: one node per name */
	/* tables */
	kl_map sessions; /* id -> session */
	kl_list session_list;
	uint32_t nsessions;
	kl_map tenants;    /* name -> tenant */
	kl_list sandboxes; /* every live sandbox */
	uint32_t nsandboxes;
	uint32_t admitted; /* calls queued or running */
	uint32_t running;
	/* refill */
	double tokens;
	uint64_t tokens_ns;
	kl_list graveyard;
	/* lifecycle */
	node_egress *egress; /* sandbox egress proxy (egress.c) */
	bool stopping, stopped;
	uint64_t stop_deadline_ns;
	volatile int stop_requested;
	pthread_t thread;
	bool threaded;
	/* file-tool workers */
	pthread_t workers[2];
	int nworkers;
	pthread_mutex_t wmu;
	pthread_cond_t wcond;
	kl_list wqueue;
	bool wstop;
	/* stats (snapshot under stats_mu) */
	pthread_mutex_t stats_mu;
	node_stats stats;
	uint64_t calls_done, created, destroyed, cold_starts, warm_claims, create_failures;
	double create_ms_sum;
	uint64_t create_n;
};

/* pool.c */
int pool_init(node *n, char *err, size_t errlen);
void pool_fini(node *n);
void pool_tick(node *n);
sandbox *pool_take(tmpl *t);
tmpl *pool_find(node *n, const char *name);
void pool_sandbox_ready(sandbox *sb);
void pool_sandbox_failed(tmpl *t);

/* sandbox.c */
int sandbox_create(node *n, tmpl *t, sandbox **ret);
void sandbox_destroy(sandbox *sb);
int sandbox_send(sandbox *sb, ki_buf *m, const int *fds, int nfds);
uint64_t sandbox_next_id(sandbox *sb);
int uid_alloc(node *n, uint32_t *slot);
void uid_free(node *n, uint32_t slot);

/* session.c */
void session_open(node *n, Kiln__SessionOpen *o, node_reply_fn *fn, void *arg);
void session_close(node *n, const char *id, node_reply_fn *fn, void *arg, int code,
                   const char *why);
void session_claim_ready(session *s, sandbox *sb);
void session_sandbox_died(session *s);
void session_on_init_msg(session *s, const struct ki_hdr *h, const uint8_t *msg, uint32_t len);
void session_tick(node *n);
void session_kick(session *s);
void session_reply_opened(session *s, int code, const char *msg);
session *session_find(node *n, const char *id);

/* call.c */
void call_submit(node *n, Kiln__NodeWork *w, node_reply_fn *fn, void *arg);
void call_cancel(node *n, uint64_t job_id);
void call_start(call *c);
void call_finish(call *c);
void call_reply_error(node *n, uint64_t job_id, node_reply_fn *fn, void *arg, int code,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void call_kill(call *c, bool timed_out);
void call_on_init_msg(call *c, const struct ki_hdr *h, const uint8_t *msg, uint32_t len);
void call_fill_result(call *c, Kiln__ToolResult *r);
int call_spawn(call *c, session *s, const char *const *argv, const char *const *extra_env,
               const int *fds, const int32_t *map, int nfds, uint64_t *ret_id);
void call_free(call *c);
const char *const *call_base_env(void);
void graveyard_add(node *n, int parentfd, const char *name);
void graveyard_sweep(node *n, bool force);

/* call.c (exec) */
void exec_start(call *c);

/* bash.c */
void bash_result(call *c, Kiln__ToolResult *r, char *msg, size_t msglen);
void bash_start(call *c);
void bash_on_init_msg(session *s, const struct ki_hdr *h, const uint8_t *msg, uint32_t len);
void bash_kill_shell(session *s);
void shell_fini(session *s);

/* fscall.c */
void fscall_result(call *c, Kiln__ToolResult *r, char *msg, size_t msglen);
void fscall_start(call *c);
void fscall_worker_done(node *n, call *c);
int workers_start(node *n);
void workers_stop(node *n);

/* node.c */
/* Run fn(n, arg) on the loop thread and wait for it (from another thread). */
void node_run_on_loop(node *n, void (*fn)(node *n, void *arg), void *arg);
void node_update_stats(node *n);
void node_maybe_finish_stop(node *n);

#endif
