// SPDX-License-Identifier: Apache-2.0
//
// A real MCP client (the official SDK's Streamable HTTP transport) for
// tests/tunnel/test_tunnel.c: it talks to kiln-plane-sim's local route port,
// so every byte crosses the egress tunnel to the private MCP server behind
// kiln-gateway. It runs initialize, tools/list, tools/call (echo), a call
// whose progress notifications stream back over SSE while it runs, and waits
// for a server notification on the standalone GET SSE stream; then it ends
// the session. It prints one JSON verdict line on stdout and exits 0 when
// every step succeeded, 1 otherwise.
//
//   node tests/tunnel/mcp_client.mjs http://127.0.0.1:PORT/mcp tests/mcp
//
// The second argument is the directory whose node_modules hold the SDK
// (scripts/setup installs it there from tests/mcp/package-lock.json).

import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const [url, mcpDir] = process.argv.slice(2);
if (!url || !mcpDir) {
	console.error("usage: node mcp_client.mjs URL MCP_DIR");
	process.exit(2);
}
const require = createRequire(join(resolve(mcpDir), "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { LoggingMessageNotificationSchema } = require("@modelcontextprotocol/sdk/types.js");

const verdict = { ok: false, url, steps: {} };
const done = (code) => {
	console.log(JSON.stringify(verdict));
	process.exit(code);
};
const overall = setTimeout(() => {
	verdict.error = "timed out after 90 s";
	done(1);
}, 90000);

const text = (res) => (res.content || []).filter((c) => c.type === "text").map((c) => c.text).join("");

try {
	const transport = new StreamableHTTPClientTransport(new URL(url));
	const client = new Client({ name: "kiln-tunnel-test", version: "1.0.0" });
	const logs = [];
	let gotLog;
	const firstLog = new Promise((r) => (gotLog = r));
	client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
		logs.push({ level: n.params.level, t: Date.now() });
		gotLog();
	});

	// initialize (+ notifications/initialized; the SDK then opens the GET SSE stream)
	await client.connect(transport);
	verdict.steps.initialize = {
		server: client.getServerVersion(),
		session: transport.sessionId || null,
		protocol: transport.protocolVersion || null,
	};

	// tools/list
	const tools = await client.listTools();
	const names = tools.tools.map((t) => t.name);
	verdict.steps.tools_list = { count: names.length, has_echo: names.includes("echo"), names };

	// tools/call
	const echo = await client.callTool({ name: "echo", arguments: { message: "through the kiln tunnel" } });
	verdict.steps.tools_call = { text: text(echo), is_error: !!echo.isError };

	// A call answered as an SSE stream: progress notifications arrive while it runs.
	const progress = [];
	const t0 = Date.now();
	const lr = await client.callTool(
		{ name: "trigger-long-running-operation", arguments: { duration: 2, steps: 4 } },
		undefined,
		{ onprogress: (p) => progress.push({ progress: p.progress, total: p.total, ms: Date.now() - t0 }), timeout: 60000 },
	);
	const resultMs = Date.now() - t0;
	verdict.steps.sse_progress = {
		count: progress.length,
		progress,
		result_ms: resultMs,
		// Streamed, not buffered: the first notification came well before the result.
		spread_ms: progress.length ? progress[progress.length - 1].ms - progress[0].ms : 0,
		text: text(lr),
	};

	// The standalone GET SSE stream: server-initiated log messages, unrelated to a request.
	await client.setLoggingLevel("debug");
	await client.callTool({ name: "toggle-simulated-logging", arguments: {} });
	const timedOut = await Promise.race([firstLog.then(() => false), new Promise((r) => setTimeout(() => r(true), 20000))]);
	verdict.steps.sse_standalone = { messages: logs.length, timed_out: timedOut };
	await client.callTool({ name: "toggle-simulated-logging", arguments: {} });

	await transport.terminateSession();
	await client.close();
	const s = verdict.steps;
	verdict.ok =
		!!s.initialize.session &&
		s.tools_list.has_echo &&
		s.tools_call.text === "Echo: through the kiln tunnel" &&
		s.sse_progress.count >= 2 &&
		s.sse_standalone.messages >= 1;
	clearTimeout(overall);
	done(verdict.ok ? 0 : 1);
} catch (e) {
	verdict.error = String((e && e.stack) || e);
	clearTimeout(overall);
	done(1);
}
