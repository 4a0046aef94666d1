/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers for driving a real, in-process node synchronously: start one
 * (on this host it must accept unenforced limits), send NodeWork and wait for
 * the reply, and shorthands for sessions and tools. Replies are returned as
 * unpacked copies the caller frees with kt_free_reply / kt_free_result.
 */
#ifndef KT_NODE_H
#define KT_NODE_H

#include "kiln.pb-c.h"
#include "node.h"

/* Start a node with test defaults (target 2, allow unenforced limits on hosts
 * without memory/pids controllers). cfg may be NULL. */
node *kt_node_start(node_config *cfg);
void kt_node_stop(node *n);

Kiln__NodeReply *kt_node_do(node *n, const Kiln__NodeWork *w);
void kt_free_reply(Kiln__NodeReply *r);

/* Open a session; returns the SessionOpened code. */
int kt_open(node *n, const char *sid, const char *tenant);
int kt_open_limits(node *n, const char *sid, const char *tenant, const Kiln__Limits *lim);
int kt_close(node *n, const char *sid);

/* Tools: the result (free with kt_free_result). Output is NUL-terminated. */
Kiln__ToolResult *kt_bash(node *n, const char *sid, const char *cmd, uint32_t timeout_ms);
Kiln__ToolResult *kt_bash_restart(node *n, const char *sid);
Kiln__ToolResult *kt_exec(node *n, const char *sid, uint32_t timeout_ms, const char *const *argv);
Kiln__ToolResult *kt_read(node *n, const char *sid, const char *path);
Kiln__ToolResult *kt_write(node *n, const char *sid, const char *path, const void *data,
                           size_t len);
Kiln__ToolResult *kt_edit(node *n, const char *sid, const char *path, const char *old,
                          const char *new_, int all);
Kiln__ToolResult *kt_call(node *n, Kiln__ToolCall *tc);
void kt_free_result(Kiln__ToolResult *r);
/* The output as a C string (valid while r lives). */
const char *kt_out(const Kiln__ToolResult *r);

/* Counting what a node leaves behind. */
int kt_count_procs(void);              /* entries in /proc that are pids */
int kt_count_mounts(void);             /* lines of /proc/self/mountinfo */
int kt_count_cgroups(const char *dir); /* directories under dir, recursively */
/* Processes whose real uid is in [lo, hi). */
int kt_count_uid_procs(unsigned lo, unsigned hi);
/* Processes whose parent is this process (zombies included). */
int kt_count_children(void);
/* VmRSS of this process in KiB. */
long kt_rss_kib(void);
/* Skip (77) unless we are root and can create user namespaces. */
void kt_require_sandboxes(void);

#endif
