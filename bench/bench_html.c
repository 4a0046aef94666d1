/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTML report: one self-contained file (inline CSS, inline SVG, no
 * script, no fonts, no network) that opens in any browser. Charts are SVG
 * written by hand: the latency CDF per tool (y on a "nines" scale so that
 * p99 and p99.9 are visible), throughput and p99 against offered load from
 * the sweep, p99 per tenant (with and without the flood when the fairness
 * run ran), and throughput against node processes. The same charts can be
 * written as standalone .svg files (--svg-dir), which render on GitHub.
 */
#include "bench.h"

#include "kl_util.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define W  640
#define H  360
#define ML 64 /* plot margins */
#define MR 150
#define MT 36
#define MB 48

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                     "#9467bd", "#8c564b", "#e377c2", "#17becf"};

static void
esc(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

static void
svg_open(FILE *f, int w, int h, const char *title)
{
	fprintf(f,
	        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
	        "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\" "
	        "font-size=\"12\">\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
	        "<text x=\"%d\" y=\"20\" font-size=\"14\" font-weight=\"bold\">",
	        w, h, w, h, w, h, ML);
	esc(f, title);
	fputs("</text>\n", f);
}

static void
frame(FILE *f, int w, int h, const char *xlabel, const char *ylabel)
{
	fprintf(f,
	        "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
	        "stroke=\"#444\"/>\n",
	        ML, MT, w - ML - MR, h - MT - MB);
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
	        ML + (w - ML - MR) / 2, h - 10, xlabel);
	fprintf(f,
	        "<text x=\"14\" y=\"%d\" text-anchor=\"middle\" "
	        "transform=\"rotate(-90 14 %d)\">%s</text>\n",
	        MT + (h - MT - MB) / 2, MT + (h - MT - MB) / 2, ylabel);
}

static void
gridline(FILE *f, double x1, double y1, double x2, double y2)
{
	fprintf(f,
	        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\" "
	        "stroke-width=\"1\"/>\n",
	        x1, y1, x2, y2);
}

static void
legend(FILE *f, int w, int i, const char *color, const char *text)
{
	double x = w - MR + 12, y = MT + 8 + 18 * i;
	fprintf(f,
	        "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"4\" fill=\"%s\"/>"
	        "<text x=\"%.0f\" y=\"%.0f\">",
	        x, y, color, x + 16, y + 5);
	esc(f, text);
	fputs("</text>\n", f);
}

static const char *
ms_label(double ms, char *buf, size_t n)
{
	if (ms < 1)
		snprintf(buf, n, "%gus", ms * 1000);
	else if (ms < 1000)
		snprintf(buf, n, "%gms", ms);
	else
		snprintf(buf, n, "%gs", ms / 1000);
	return buf;
}

/* The smallest 1, 2, 2.5 or 5 times a power of ten at or above v. */
static double
nice_max(double v)
{
	if (v <= 0)
		return 1;
	double p = pow(10, floor(log10(v)));
	static const double steps[] = {1, 2, 2.5, 5, 10};
	for (int i = 0; i < 5; i++)
		if (steps[i] * p >= v * 0.999)
			return steps[i] * p;
	return 10 * p;
}

static const char *
fmt_num(double v, char *buf, size_t n)
{
	if (fabs(v) >= 100 || v == floor(v))
		snprintf(buf, n, "%.0f", v);
	else if (fabs(v) >= 10)
		snprintf(buf, n, "%.1f", v);
	else
		snprintf(buf, n, "%.2f", v);
	return buf;
}

/* ---- 1. latency CDF per tool ---- */

/* y for a cumulative fraction on the nines scale: 0 -> 0, 0.9 -> 1, 0.99 -> 2. */
static double
nines(double frac)
{
	double c = 1 - frac;
	return c < 1e-4 ? 4 : -log10(c);
}

static const bench_run *
chart_run(const bench_results *R)
{
	if (R->main_run >= 0)
		return &R->runs[R->main_run];
	if (R->swept && R->capacity_run >= 0)
		return &R->runs[R->capacity_run];
	return R->nruns ? &R->runs[0] : NULL;
}

static void
svg_cdf(FILE *f, const bench_results *R)
{
	const bench_run *run = chart_run(R);
	char title[160], lbl[32];
	if (!run)
		return;
	const bench_metrics *m = run->m;
	snprintf(title, sizeof title, "Latency CDF per tool (%s run, from intended send time)",
	         run->name);
	svg_open(f, W, H, title);
	double lo = 1e9, hi = 0;
	for (int t = 0; t < BT_NTOOLS; t++)
		if (m->tool[t].count) {
			lo = fmin(lo, (double)m->tool[t].min / 1e6);
			hi = fmax(hi, (double)m->tool[t].max / 1e6);
		}
	if (hi <= 0) {
		fputs("<text x=\"100\" y=\"100\">no results</text></svg>\n", f);
		return;
	}
	double d0 = floor(log10(fmax(lo, 1e-3))), d1 = ceil(log10(hi));
	if (d1 <= d0)
		d1 = d0 + 1;
	double pw = W - ML - MR, ph = H - MT - MB, ymax = 4;
#define PX(ms) (ML + (log10(fmax(ms, 1e-3)) - d0) / (d1 - d0) * pw)
#define PY(fr) (MT + ph - nines(fr) / ymax * ph)
	for (double d = d0; d <= d1; d++) {
		double x = ML + (d - d0) / (d1 - d0) * pw;
		gridline(f, x, MT, x, MT + ph);
		fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", x,
		        MT + ph + 16, ms_label(pow(10, d), lbl, sizeof lbl));
	}
	static const char *const ylab[] = {"0%", "90%", "99%", "99.9%", "99.99%"};
	for (int i = 0; i <= 4; i++) {
		double y = MT + ph - i / ymax * ph;
		gridline(f, ML, y, ML + pw, y);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 4,
		        y + 4, ylab[i]);
	}
	frame(f, W, H, "latency (log scale)", "calls at or below");
	int li = 0;
	for (int t = 0; t < BT_NTOOLS; t++) {
		const kl_hist *h = &m->tool[t];
		if (!h->count)
			continue;
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
		        colors[t]);
		uint64_t seen = 0;
		double prev = 0;
		for (int i = 0; i < KL_HIST_BUCKETS; i++) {
			if (!h->b[i])
				continue;
			double ms = (double)kl_hist_bucket_high(i) / 1e6;
			if (ms > (double)h->max / 1e6)
				ms = (double)h->max / 1e6;
			fprintf(f, "%.1f,%.1f ", PX(ms), PY(prev));
			seen += h->b[i];
			prev = (double)seen / (double)h->count;
			fprintf(f, "%.1f,%.1f ", PX(ms), PY(prev));
		}
		fputs("\"/>\n", f);
		char text[64];
		snprintf(text, sizeof text, "%s p99 %s", bench_tool_names[t],
		         ms_label(round(bench_us(h, 99) / 10) / 100, lbl, sizeof lbl));
		legend(f, W, li++, colors[t], text);
	}
#undef PX
#undef PY
	fputs("</svg>\n", f);
}

/* ---- 2. sweep: throughput and p99 against offered load ---- */

static void
svg_sweep(FILE *f, const bench_results *R)
{
	char title[160], lbl[32];
	snprintf(title, sizeof title, "Throughput and p99 against offered load (SLO %.0f ms)",
	         R->slo_ms);
	int w = 2 * W - MR, h = H;
	svg_open(f, w, h, title);
	double xmax = 0, ymax = 0, pmax = 0, pmin = 1e12;
	for (int i = R->sweep_first; i <= R->sweep_last; i++) {
		const bench_run *r = &R->runs[i];
		double p99 = bench_us(&r->m->all, 99) / 1000;
		xmax = fmax(xmax, r->load.rate);
		ymax = fmax(ymax, (double)r->m->total.results / r->m->window_s);
		pmax = fmax(pmax, p99);
		if (p99 > 0)
			pmin = fmin(pmin, p99);
	}
	ymax = nice_max(fmax(ymax, xmax) * 1.05);
	xmax = nice_max(xmax * 1.05);
	pmax = fmax(pmax, R->slo_ms) * 1.5;
	pmin = fmin(pmin, R->slo_ms) / 1.5;
	double pw = (w - ML - 20 - 80) / 2.0, ph = h - MT - MB;
	double x2 = ML + pw + 80; /* the second panel */
	double l0 = floor(log10(pmin)), l1 = ceil(log10(pmax));
	/* panel frames and grids */
	for (int k = 0; k <= 4; k++) {
		double gx = ML + k * pw / 4, gy = MT + ph - k * ph / 4;
		gridline(f, gx, MT, gx, MT + ph);
		gridline(f, x2 + k * pw / 4, MT, x2 + k * pw / 4, MT + ph);
		gridline(f, ML, gy, ML + pw, gy);
		char nb[32];
		fmt_num(xmax * k / 4, nb, sizeof nb);
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", gx,
		        MT + ph + 16, nb);
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n",
		        x2 + k * pw / 4, MT + ph + 16, nb);
		fprintf(f, "<text x=\"%d\" y=\"%.0f\" text-anchor=\"end\">%s</text>\n", ML - 4,
		        gy + 4, fmt_num(ymax * k / 4, nb, sizeof nb));
	}
	for (double d = l0; d <= l1; d++) {
		double gy = MT + ph - (d - l0) / (l1 - l0) * ph;
		gridline(f, x2, gy, x2 + pw, gy);
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%s</text>\n", x2 - 4,
		        gy + 4, ms_label(pow(10, d), lbl, sizeof lbl));
	}
	fprintf(f,
	        "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
	        "stroke=\"#444\"/>\n<rect x=\"%.0f\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" "
	        "fill=\"none\" stroke=\"#444\"/>\n",
	        ML, MT, pw, ph, x2, MT, pw, ph);
	fprintf(f,
	        "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">offered load (calls/s)</text>\n"
	        "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">offered load (calls/s)</text>\n"
	        "<text x=\"14\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 14 "
	        "%.0f)\">results/s</text>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" "
	        "transform=\"rotate(-90 %.0f %.0f)\">p99 (log scale)</text>\n",
	        ML + pw / 2, h - 10, x2 + pw / 2, h - 10, MT + ph / 2, MT + ph / 2, x2 - 50,
	        MT + ph / 2, x2 - 50, MT + ph / 2);
	/* ideal y = x, and the SLO */
	fprintf(f,
	        "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
	        "stroke-dasharray=\"4 4\"/>\n",
	        ML, MT + ph, ML + pw * fmin(1, ymax / xmax), MT + ph - ph * fmin(1, xmax / ymax));
	double sy = MT + ph - (log10(R->slo_ms) - l0) / (l1 - l0) * ph;
	fprintf(f,
	        "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#d62728\" "
	        "stroke-dasharray=\"6 4\"/><text x=\"%.0f\" y=\"%.1f\" fill=\"#d62728\" "
	        "text-anchor=\"end\">SLO %.0f ms</text>\n",
	        x2, sy, x2 + pw, sy, x2 + pw - 4, sy - 4, R->slo_ms);
	/* the points, in offered order */
	int idx[BENCH_MAX_RUNS], n = 0;
	for (int i = R->sweep_first; i <= R->sweep_last; i++)
		idx[n++] = i;
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && R->runs[idx[j]].load.rate < R->runs[idx[j - 1]].load.rate;
		     j--) {
			int t = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = t;
		}
	for (int pass = 0; pass < 2; pass++) {
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
		        colors[pass]);
		for (int k = 0; k < n; k++) {
			const bench_run *r = &R->runs[idx[k]];
			double x = r->load.rate / xmax * pw;
			double y =
			        pass == 0 ? (double)r->m->total.results / r->m->window_s / ymax * ph
			                  : (log10(fmax(bench_us(&r->m->all, 99) / 1000, pmin)) -
			                     l0) / (l1 - l0) *
			                            ph;
			fprintf(f, "%.1f,%.1f ", (pass ? x2 : ML) + x, MT + ph - y);
		}
		fputs("\"/>\n", f);
		for (int k = 0; k < n; k++) {
			const bench_run *r = &R->runs[idx[k]];
			double x = r->load.rate / xmax * pw;
			double y =
			        pass == 0 ? (double)r->m->total.results / r->m->window_s / ymax * ph
			                  : (log10(fmax(bench_us(&r->m->all, 99) / 1000, pmin)) -
			                     l0) / (l1 - l0) *
			                            ph;
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
			        (pass ? x2 : ML) + x, MT + ph - y, r->pass ? colors[pass] : "#fff");
			fprintf(f,
			        "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"none\" "
			        "stroke=\"%s\"/>\n",
			        (pass ? x2 : ML) + x, MT + ph - y, colors[pass]);
		}
	}
	if (R->capacity > 0) {
		double x = R->capacity / xmax * pw;
		fprintf(f,
		        "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#2ca02c\"/>"
		        "<text x=\"%.1f\" y=\"%d\" fill=\"#2ca02c\">capacity %.0f/s</text>\n",
		        ML + x, MT, ML + x, MT + ph, ML + x + 4, MT + 14, R->capacity);
	}
	fputs("</svg>\n", f);
}

/* ---- 3. per-tenant p99 ---- */

static void
bars(FILE *f, int n, const char *const *labels, int nseries, const char *const *series,
     const double *v /* [i * nseries + s] */, const char *unit)
{
	double vmax = 0;
	for (int i = 0; i < n * nseries; i++)
		vmax = fmax(vmax, v[i]);
	vmax = nice_max(vmax * 1.1);
	char nb[32];
	double pw = W - ML - MR, ph = H - MT - MB, gw = pw / n, bw = gw * 0.7 / nseries;
	for (int k = 0; k <= 4; k++) {
		double gy = MT + ph - k * ph / 4;
		gridline(f, ML, gy, ML + pw, gy);
		fprintf(f, "<text x=\"%d\" y=\"%.0f\" text-anchor=\"end\">%s</text>\n", ML - 4,
		        gy + 4, fmt_num(vmax * k / 4, nb, sizeof nb));
	}
	for (int i = 0; i < n; i++) {
		for (int s = 0; s < nseries; s++) {
			double val = v[i * nseries + s], bh = val / vmax * ph;
			double x = ML + i * gw + gw * 0.15 + s * bw;
			fprintf(f,
			        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
			        "fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
			        "font-size=\"10\">%s%s</text>\n",
			        x, MT + ph - bh, bw - 2, bh, colors[s], x + bw / 2 - 1,
			        MT + ph - bh - 3, fmt_num(val, nb, sizeof nb), unit);
		}
		fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">",
		        ML + i * gw + gw / 2, MT + ph + 16);
		esc(f, labels[i]);
		fputs("</text>\n", f);
	}
	for (int s = 0; s < nseries; s++)
		legend(f, W, s, colors[s], series[s]);
}

static void
svg_tenants(FILE *f, const bench_results *R)
{
	const char *labels[BENCH_MAX_TENANTS];
	double v[BENCH_MAX_TENANTS * 2];
	if (R->fair) {
		const bench_run *b = &R->runs[R->fair_base], *x = &R->runs[R->fair_flood];
		static const char *const series[] = {"no flood", "with the flood"};
		char title[160];
		snprintf(title, sizeof title, "p99 per tenant (ms), %s flooding at %.0fx its quota",
		         R->flood_tenant, R->flood_rate / R->flood_quota);
		svg_open(f, W, H, title);
		for (int i = 0; i < b->ntenants; i++) {
			labels[i] = b->tenant_names[i];
			v[2 * i] = bench_us(&b->m->tenant[i], 99) / 1000;
			v[2 * i + 1] = bench_us(&x->m->tenant[i], 99) / 1000;
		}
		frame(f, W, H, "tenant", "p99 (ms)");
		bars(f, b->ntenants, labels, 2, series, v, "");
	} else {
		const bench_run *r = chart_run(R);
		static const char *const series[] = {"p99"};
		if (!r)
			return;
		svg_open(f, W, H, "p99 per tenant (ms)");
		for (int i = 0; i < r->ntenants; i++) {
			labels[i] = r->tenant_names[i];
			v[i] = bench_us(&r->m->tenant[i], 99) / 1000;
		}
		frame(f, W, H, "tenant", "p99 (ms)");
		bars(f, r->ntenants, labels, 1, series, v, "");
	}
	fputs("</svg>\n", f);
}

/* ---- 4. scaling ---- */

static void
svg_scaling(FILE *f, const bench_results *R)
{
	const char *labels[8];
	char names[8][32];
	double v[8];
	static const char *const series[] = {"results/s"};
	svg_open(f, W, H, "Closed-loop throughput against node processes (one machine)");
	for (int i = 0; i < R->nscaling; i++) {
		const bench_run *r = &R->runs[R->scaling_runs[i]];
		snprintf(names[i], sizeof names[i], "%d node%s, p99 %.0f ms", r->nodes,
		         r->nodes == 1 ? "" : "s", bench_us(&r->m->all, 99) / 1000);
		labels[i] = names[i];
		v[i] = (double)r->m->total.results / r->m->window_s;
	}
	frame(f, W, H, "kiln-node processes", "results/s");
	bars(f, R->nscaling, labels, 1, series, v, "");
	fputs("</svg>\n", f);
}

/* ---- the page ---- */

static void
table_run(FILE *f, const bench_run *r)
{
	const bench_metrics *m = r->m;
	fputs("<table><tr><th>tool</th><th>sent</th><th>results</th><th>errors</th><th>ok</th>"
	      "<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max "
	      "ms</th></tr>\n",
	      f);
	for (int t = -1; t < BT_NTOOLS; t++) {
		const bench_counts *c = t < 0 ? &m->total : &m->tools[t];
		const kl_hist *h = t < 0 ? &m->all : &m->tool[t];
		if (!c->sent)
			continue;
		fprintf(f,
		        "<tr><td>%s</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td>"
		        "<td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.2f</td></tr>\n",
		        t < 0 ? "all" : bench_tool_names[t], (unsigned long long)c->sent,
		        (unsigned long long)c->results, (unsigned long long)c->errors,
		        (unsigned long long)c->ok, bench_us(h, 50) / 1000, bench_us(h, 90) / 1000,
		        bench_us(h, 99) / 1000, bench_us(h, 99.9) / 1000, (double)h->max / 1e6);
	}
	fputs("</table>\n", f);
}

static void
page(FILE *f, const bench_results *R)
{
	fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kiln-bench "
	      "report</title>"
	      "<style>body{font-family:Helvetica,Arial,sans-serif;max-width:1300px;margin:2em auto;"
	      "color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
	      "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:"
	      "left}.pass{color:#2ca02c}.miss{color:#d62728}svg{margin:1em 0;display:block}"
	      "</style></head><body>\n<h1>kiln-bench report</h1>\n<p>Target: ",
	      f);
	esc(f, R->target_desc);
	fputs("<br>Workload: ", f);
	esc(f, R->workload);
	fprintf(f,
	        "<br>%ld CPUs; load average %.2f %.2f %.2f before the run, %.2f %.2f %.2f after; "
	        "%.0f s in all.%s</p>\n",
	        sysconf(_SC_NPROCESSORS_ONLN), R->load_before[0], R->load_before[1],
	        R->load_before[2], R->load_after[0], R->load_after[1], R->load_after[2], R->wall_s,
	        R->interrupted ? " <b>Interrupted: partial results.</b>" : "");
	const bench_run *cr = chart_run(R);
	if (cr) {
		fprintf(f, "<h2>Latency (%s run)</h2>\n", cr->name);
		table_run(f, cr);
		svg_cdf(f, R);
	}
	if (R->swept && R->sweep_last >= R->sweep_first) {
		fputs("<h2>Capacity sweep</h2>\n<p>", f);
		esc(f, R->sizing);
		fputs("</p>\n", f);
		svg_sweep(f, R);
	}
	svg_tenants(f, R);
	if (R->nscaling) {
		fputs("<h2>Scaling</h2><p>All node processes share this machine's CPUs: more "
		      "processes cannot add CPU.</p>\n",
		      f);
		svg_scaling(f, R);
	}
	if (R->nrows) {
		static const char *const v[] = {"", "<span class=pass>PASS</span>",
		                                "<span class=miss>MISS</span>"};
		fputs("<h2>Baselines</h2>\n<table><tr><th>metric</th><th>kiln</th><th>baseline</th>"
		      "<th>ratio</th><th>target</th><th>result</th></tr>\n",
		      f);
		for (int i = 0; i < R->nrows; i++) {
			const bench_row *r = &R->rows[i];
			fprintf(f, "<tr><td>%s: %s</td><td>%.1f %s</td>", r->section, r->metric,
			        r->kiln, r->unit);
			if (isnan(r->base))
				fputs("<td>-</td><td>-</td>", f);
			else
				fprintf(f, "<td>%.1f %s (%s)</td><td>%.2fx</td>", r->base, r->unit,
				        r->base_what, r->ratio);
			fprintf(f, "<td>%s</td><td>%s</td></tr>\n", r->target, v[r->verdict]);
		}
		fputs("</table>\n", f);
	}
	if (R->nplace) {
		fputs("<h2>Placement</h2><table><tr><th>nodes</th><th>placements/s</th></tr>\n", f);
		for (int i = 0; i < R->nplace; i++)
			fprintf(f, "<tr><td>%d</td><td>%.0f</td></tr>\n", R->place[i].nodes,
			        R->place[i].per_s);
		fputs("</table>\n", f);
	}
	fputs("</body></html>\n", f);
}

int
bench_write_html(const bench_results *R, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "we");
	if (!f) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -errno;
	}
	page(f, R);
	if (fclose(f) != 0) {
		snprintf(err, errlen, "cannot write %s", path);
		return -EIO;
	}
	return 0;
}

static int
svg_file(const char *dir, const char *name, void (*fn)(FILE *, const bench_results *),
         const bench_results *R, char *err, size_t errlen)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "we");
	if (!f) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -errno;
	}
	fn(f, R);
	return fclose(f) == 0 ? 0 : -EIO;
}

int
bench_write_svgs(const bench_results *R, const char *dir, char *err, size_t errlen)
{
	int r = 0;
	mkdir(dir, 0755);
	if (chart_run(R))
		r = svg_file(dir, "latency-cdf.svg", svg_cdf, R, err, errlen);
	if (!r && R->swept && R->sweep_last >= R->sweep_first)
		r = svg_file(dir, "sweep.svg", svg_sweep, R, err, errlen);
	if (!r && (R->fair || chart_run(R)))
		r = svg_file(dir, "tenants.svg", svg_tenants, R, err, errlen);
	if (!r && R->nscaling)
		r = svg_file(dir, "scaling.svg", svg_scaling, R, err, errlen);
	return r;
}
