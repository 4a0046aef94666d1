/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Built-in workload profiles: what one agent does, as setup calls (run once
 * per session, not measured) and a cycle of steps (measured, repeated).
 * `coding` is a coding agent on a small C project in git: bash with git, ls,
 * grep, python3 and make, and the file tools read, write, edit, glob and
 * grep. `shell` is bash- and exec-heavy, `file` uses the file tools only,
 * `true` runs `exec true` (the floor: the cost of a call itself). Each
 * step's think_ms is the gap before it in --replay mode. Edits flip between
 * two strings on alternate cycles, so an agent's sequence stays valid however
 * long it runs. Also the conversion of a step into a Kiln__ToolCall.
 */
#include "bench.h"

#include "kl_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const bench_tool_names[BT_NTOOLS] = {"bash", "exec", "read", "write",
                                                 "edit", "glob", "grep"};

int
bench_tool_of(const char *name)
{
	for (int i = 0; i < BT_NTOOLS; i++)
		if (!strcmp(bench_tool_names[i], name))
			return i;
	return -1;
}

const char *const bench_profile_names[] = {"coding", "shell", "file", "true", NULL};
const char *const bench_profile_help[] = {
        "git, ls, grep, python3, make+cc; file tools",
        "bash pipelines (sort, awk, sed, wc) and exec",
        "read, write, edit, glob, grep only",
        "exec true: the cost of a call itself",
        NULL,
};

static const char main_c[] = "#include <stdio.h>\n"
                             "\n"
                             "static int value = 1;\n"
                             "\n"
                             "int\n"
                             "main(void)\n"
                             "{\n"
                             "\tprintf(\"value %d\\n\", value);\n"
                             "\treturn 0;\n"
                             "}\n";

static const char makefile[] = "app: src/main.c\n\tcc -O0 -o app src/main.c\n";

/* A ~2 KiB note, rewritten by the agent. */
static char notes[2048];

static void
fill_notes(void)
{
	if (notes[0])
		return;
	size_t n = 0;
	for (int i = 0; n + 64 < sizeof notes; i++)
		n += (size_t)snprintf(notes + n, sizeof notes - n,
		                      "- step %03d: looked at src/main.c, value is fine\n", i);
}

static bench_step
bash(const char *cmd, uint32_t think)
{
	return (bench_step){.tool = BT_BASH, .text = kl_xstrdup(cmd), .think_ms = think};
}

static bench_step
exec1(const char *a0, const char *a1, uint32_t think)
{
	bench_step s = {.tool = BT_EXEC, .think_ms = think};
	s.argv = kl_xcalloc(3, sizeof *s.argv);
	s.argv[s.argc++] = kl_xstrdup(a0);
	if (a1)
		s.argv[s.argc++] = kl_xstrdup(a1);
	return s;
}

static bench_step
rd(const char *path, int64_t a, int64_t b, uint32_t think)
{
	bench_step s = {.tool = BT_READ, .text = kl_xstrdup(path), .think_ms = think};
	if (a) {
		s.range[0] = a;
		s.range[1] = b;
		s.nrange = 2;
	}
	return s;
}

static bench_step
wr(const char *path, const char *content, uint32_t think)
{
	return (bench_step){.tool = BT_WRITE,
	                    .text = kl_xstrdup(path),
	                    .text2 = kl_xstrdup(content),
	                    .think_ms = think};
}

static bench_step
ed(const char *path, const char *old, const char *new_, uint32_t think)
{
	return (bench_step){.tool = BT_EDIT,
	                    .text = kl_xstrdup(path),
	                    .text2 = kl_xstrdup(old),
	                    .text3 = kl_xstrdup(new_),
	                    .flip = true,
	                    .think_ms = think};
}

static bench_step
find(enum bench_tool tool, const char *pattern, const char *path, uint32_t think)
{
	return (bench_step){.tool = tool,
	                    .text = kl_xstrdup(pattern),
	                    .text2 = path ? kl_xstrdup(path) : NULL,
	                    .think_ms = think};
}

static void
set_steps(bench_script *sc, const bench_step *setup, int nsetup, const bench_step *steps,
          int nsteps)
{
	sc->setup = kl_xcalloc((size_t)nsetup + 1, sizeof *sc->setup);
	if (nsetup)
		memcpy(sc->setup, setup, sizeof *setup * (size_t)nsetup);
	sc->nsetup = nsetup;
	sc->steps = kl_xcalloc((size_t)nsteps, sizeof *sc->steps);
	memcpy(sc->steps, steps, sizeof *steps * (size_t)nsteps);
	sc->nsteps = nsteps;
}

static void
profile_coding(bench_script *sc)
{
	fill_notes();
	const bench_step setup[] = {
	        bash("mkdir -p repo/src && cd repo && git init -q . && "
	             "git config user.email agent@example.com && git config user.name agent",
	             0),
	        wr("repo/src/main.c", main_c, 0),
	        wr("repo/Makefile", makefile, 0),
	        bash("cd /workspace/repo && git add -A && git commit -qm init && make -s", 0),
	};
	const bench_step steps[] = {
	        bash("cd /workspace/repo && git status --short", 800),
	        rd("repo/src/main.c", 0, 0, 1500),
	        find(BT_GREP, "value", "repo/src", 1200),
	        ed("repo/src/main.c", "static int value = 1;", "static int value = 2;", 2500),
	        bash("cd /workspace/repo && make -s && ./app", 900),
	        bash("cd /workspace/repo && ls -la src", 600),
	        wr("repo/notes.md", notes, 2000),
	        bash("cd /workspace/repo && grep -rn value src | head -5", 700),
	        bash("python3 -c 'import json; print(json.dumps({\"sum\": sum(range(1000))}))'",
	             1500),
	        find(BT_GLOB, "repo/**/*.c", NULL, 500),
	        bash("cd /workspace/repo && git add -A && git commit -qm step && "
	             "git log --oneline | wc -l",
	             1800),
	        rd("repo/notes.md", 1, 10, 900),
	};
	snprintf(sc->name, sizeof sc->name, "coding");
	set_steps(sc, setup, (int)KL_ARRAY_SIZE(setup), steps, (int)KL_ARRAY_SIZE(steps));
}

static void
profile_shell(bench_script *sc)
{
	const bench_step setup[] = {
	        bash("seq 1 5000 > data.txt && mkdir -p logs", 0),
	};
	const bench_step steps[] = {
	        bash("wc -l data.txt", 300),
	        bash("sort -n -r data.txt | head -3", 400),
	        bash("grep -c 7 data.txt", 300),
	        exec1("ls", "-la", 200),
	        bash("awk '{s+=$1} END {print s}' data.txt", 500),
	        exec1("true", NULL, 200),
	        bash("sed -n 100,110p data.txt | tr '\\n' ' '", 300),
	        bash("date +%s >> logs/run.log && tail -1 logs/run.log", 400),
	        bash("echo $((RANDOM % 100)) | tee -a logs/n.log > /dev/null; wc -l < logs/n.log",
	             300),
	        exec1("uname", "-a", 200),
	};
	snprintf(sc->name, sizeof sc->name, "shell");
	set_steps(sc, setup, (int)KL_ARRAY_SIZE(setup), steps, (int)KL_ARRAY_SIZE(steps));
}

static void
profile_file(bench_script *sc)
{
	fill_notes();
	const bench_step setup[] = {
	        wr("proj/src/main.c", main_c, 0),
	        wr("proj/README.md", notes, 0),
	        wr("proj/src/util.c", "int util(void) { return 42; }\n", 0),
	};
	const bench_step steps[] = {
	        rd("proj/src/main.c", 0, 0, 800),
	        find(BT_GREP, "value", "proj", 600),
	        ed("proj/src/main.c", "static int value = 1;", "static int value = 2;", 1500),
	        rd("proj/README.md", 1, 20, 700),
	        find(BT_GLOB, "proj/**/*.c", NULL, 400),
	        wr("proj/notes.md", notes, 1200),
	        rd("proj/notes.md", 0, 0, 500),
	        ed("proj/src/util.c", "return 42;", "return 43;", 900),
	};
	snprintf(sc->name, sizeof sc->name, "file");
	set_steps(sc, setup, (int)KL_ARRAY_SIZE(setup), steps, (int)KL_ARRAY_SIZE(steps));
}

static void
profile_true(bench_script *sc)
{
	const bench_step steps[] = {exec1("true", NULL, 100)};
	snprintf(sc->name, sizeof sc->name, "true");
	set_steps(sc, NULL, 0, steps, 1);
}

int
bench_workload_profile(const char *name, bench_workload *w, char *err, size_t errlen)
{
	static void (*const fns[])(bench_script *) = {profile_coding, profile_shell, profile_file,
	                                              profile_true};
	for (int i = 0; bench_profile_names[i]; i++) {
		if (strcmp(bench_profile_names[i], name))
			continue;
		memset(w, 0, sizeof *w);
		snprintf(w->name, sizeof w->name, "%s", name);
		w->scripts = kl_xcalloc(1, sizeof *w->scripts);
		w->nscripts = 1;
		fns[i](&w->scripts[0]);
		return 0;
	}
	snprintf(err, errlen, "unknown profile %s (coding, shell, file, true)", name);
	return -EINVAL;
}

static void
step_free(bench_step *s)
{
	free(s->text);
	free(s->text2);
	free(s->text3);
	for (int i = 0; i < s->argc; i++)
		free(s->argv[i]);
	free(s->argv);
}

void
bench_workload_free(bench_workload *w)
{
	for (int i = 0; i < w->nscripts; i++) {
		bench_script *sc = &w->scripts[i];
		for (int j = 0; j < sc->nsetup; j++)
			step_free(&sc->setup[j]);
		for (int j = 0; j < sc->nsteps; j++)
			step_free(&sc->steps[j]);
		free(sc->setup);
		free(sc->steps);
	}
	free(w->scripts);
	memset(w, 0, sizeof *w);
}

void
bench_step_call(const bench_step *s, uint64_t cycle, bench_call_buf *b, Kiln__ToolCall *tc)
{
	kiln__tool_call__init(tc);
	switch (s->tool) {
	case BT_BASH:
		kiln__bash_input__init(&b->bash);
		b->bash.command = s->text;
		b->bash.timeout_ms = s->timeout_ms;
		tc->tool_case = KILN__TOOL_CALL__TOOL_BASH;
		tc->bash = &b->bash;
		break;
	case BT_EXEC:
		kiln__exec_input__init(&b->exec);
		b->exec.argv = s->argv;
		b->exec.n_argv = (size_t)s->argc;
		tc->timeout_ms = s->timeout_ms;
		tc->tool_case = KILN__TOOL_CALL__TOOL_EXEC;
		tc->exec = &b->exec;
		break;
	case BT_READ:
		kiln__read_input__init(&b->read);
		b->read.file_path = s->text;
		if (s->nrange == 2) {
			b->range[0] = s->range[0];
			b->range[1] = s->range[1];
			b->read.view_range = b->range;
			b->read.n_view_range = 2;
		}
		tc->tool_case = KILN__TOOL_CALL__TOOL_READ;
		tc->read = &b->read;
		break;
	case BT_WRITE:
		kiln__write_input__init(&b->write);
		b->write.file_path = s->text;
		b->write.content.data = (uint8_t *)s->text2;
		b->write.content.len = s->text2 ? strlen(s->text2) : 0;
		tc->tool_case = KILN__TOOL_CALL__TOOL_WRITE;
		tc->write = &b->write;
		break;
	case BT_EDIT: {
		bool swap = s->flip && (cycle & 1);
		kiln__edit_input__init(&b->edit);
		b->edit.file_path = s->text;
		b->edit.old_string = swap ? s->text3 : s->text2;
		b->edit.new_string = swap ? s->text2 : s->text3;
		b->edit.replace_all = s->replace_all;
		tc->tool_case = KILN__TOOL_CALL__TOOL_EDIT;
		tc->edit = &b->edit;
		break;
	}
	case BT_GLOB:
		kiln__glob_input__init(&b->glob);
		b->glob.pattern = s->text;
		b->glob.path = s->text2 ? s->text2 : "";
		tc->tool_case = KILN__TOOL_CALL__TOOL_GLOB;
		tc->glob = &b->glob;
		break;
	case BT_GREP:
		kiln__grep_input__init(&b->grep);
		b->grep.pattern = s->text;
		b->grep.path = s->text2 ? s->text2 : "";
		tc->tool_case = KILN__TOOL_CALL__TOOL_GREP;
		tc->grep = &b->grep;
		break;
	default:
		break;
	}
}
