#include "core/progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"

#define REDRAW_S 0.1     /* a terminal line at most 10 times a second */
#define PLAIN_EVERY_S 30 /* a plain line at least this often */

static int env_says_off(void) {
    const char *e = getenv("SDC_PROGRESS");
    return e && (strcmp(e, "0") == 0 || strcmp(e, "off") == 0 || strcmp(e, "false") == 0);
}

static int is_terminal(FILE *f) {
    const char *term = getenv("TERM");
    return isatty(fileno(f)) && !(term && strcmp(term, "dumb") == 0);
}

static int locale_is_utf8(void) {
    const char *vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return strstr(v, "UTF-8") || strstr(v, "utf8") || strstr(v, "utf-8") || strstr(v, "UTF8");
    }
    return 0;
}

void sdc_progress_format_interval(double seconds, char *buf, size_t cap) {
    long s = seconds > 0 ? (long)seconds : 0;
    long h = s / 3600, m = (s / 60) % 60;
    s %= 60;
    if (h)
        snprintf(buf, cap, "%ld:%02ld:%02ld", h, m, s);
    else
        snprintf(buf, cap, "%02ld:%02ld", m, s);
}

/* The bar: SDC_PROGRESS_BAR_CELLS cells, each full block worth 1/cells and
 * the frontier cell drawn in eighths (▏▎▍▌▋▊▉). */
static int format_bar(const sdc_progress *p, double frac, char *buf, size_t cap) {
    static const char *eighths[8] = {" ", "\u258f", "\u258e", "\u258d", "\u258c", "\u258b", "\u258a", "\u2589"};
    int ascii = p->charset == SDC_PROGRESS_CHARS_ASCII;
    int n = 0;
    int units = (int)(frac * SDC_PROGRESS_BAR_CELLS * 8); /* eighths of a cell, truncated */
    for (int c = 0; c < SDC_PROGRESS_BAR_CELLS; c++) {
        int u = units - 8 * c;
        const char *s = u >= 8 ? (ascii ? "#" : "\u2588") : u <= 0 ? " " : (ascii ? " " : eighths[u]);
        n += snprintf(buf + n, cap > (size_t)n ? cap - (size_t)n : 0, "%s", s);
    }
    return n;
}

int sdc_progress_format(const sdc_progress *p, double t, int bar, char *buf, size_t cap) {
    char elapsed[32], eta[32] = "?", rate[48] = "? it/s";
    double dt = t - p->start;
    sdc_progress_format_interval(dt, elapsed, sizeof elapsed);
    int64_t counted = p->done - p->initial;
    if (counted > 0 && dt > 0) {
        double r = (double)counted / dt;
        if (r >= 1.0)
            snprintf(rate, sizeof rate, "%.2f it/s", r);
        else
            snprintf(rate, sizeof rate, "%.2f s/it", 1.0 / r);
        if (p->total > 0) sdc_progress_format_interval((double)(p->total - p->done) / r, eta, sizeof eta);
    }
    const char *sep = p->postfix[0] ? ", " : "";
    int n;
    if (p->total > 0) {
        double frac = (double)p->done / (double)p->total;
        if (frac < 0) frac = 0;
        if (frac > 1) frac = 1;
        n = snprintf(buf, cap, "%s %3d%% ", p->label, (int)(frac * 100.0));
        if (bar) {
            n += snprintf(buf + n, cap > (size_t)n ? cap - (size_t)n : 0, "|");
            n += format_bar(p, frac, buf + n, cap > (size_t)n ? cap - (size_t)n : 0);
            n += snprintf(buf + n, cap > (size_t)n ? cap - (size_t)n : 0, "| ");
        }
        n += snprintf(buf + n, cap > (size_t)n ? cap - (size_t)n : 0, "%lld/%lld [%s<%s, %s%s%s]",
                      (long long)p->done, (long long)p->total, elapsed, eta, rate, sep, p->postfix);
    } else {
        n = snprintf(buf, cap, "%s %lld it [%s, %s%s%s]", p->label, (long long)p->done, elapsed, rate, sep,
                     p->postfix);
    }
    return n < 0 ? 0 : (size_t)n < cap ? n : (int)cap - 1;
}

static void draw_bar(sdc_progress *p, double t) {
    char line[512];
    int n = sdc_progress_format(p, t, 1, line, sizeof line);
    /* blank what a longer previous line left behind */
    int pad = p->last_len > n ? p->last_len - n : 0;
    fprintf(p->out, "\r%s%*s", line, pad, "");
    fflush(p->out);
    p->last_len = n;
    p->last_draw = t;
}

static void print_plain(sdc_progress *p, double t) {
    char line[512];
    sdc_progress_format(p, t, 0, line, sizeof line);
    fprintf(p->out, "%s\n", line);
    fflush(p->out);
    p->last_plain = t;
    p->last_printed = p->done;
}

void sdc_progress_begin(sdc_progress *p, const char *label, int64_t total) {
    if (!p->out) p->out = stderr;
    if (!p->now) p->now = sdc_monotonic_s;
    if (p->mode == SDC_PROGRESS_AUTO)
        p->mode = env_says_off() ? SDC_PROGRESS_OFF : is_terminal(p->out) ? SDC_PROGRESS_BAR : SDC_PROGRESS_PLAIN;
    if (p->charset == SDC_PROGRESS_CHARS_AUTO)
        p->charset = locale_is_utf8() ? SDC_PROGRESS_CHARS_UNICODE : SDC_PROGRESS_CHARS_ASCII;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->postfix[0] = 0;
    p->total = total;
    p->done = p->initial = 0;
    p->start = p->last_plain = p->now();
    p->last_draw = -INFINITY;
    p->next_plain_pct = 10;
    p->last_printed = -1;
    p->last_len = 0;
    p->active = p->mode != SDC_PROGRESS_OFF;
    if (p->active && p->mode == SDC_PROGRESS_BAR) draw_bar(p, p->start);
}

void sdc_progress_update(sdc_progress *p, int64_t done) {
    p->done = done;
    if (!p->active) return;
    double t = p->now();
    if (p->mode == SDC_PROGRESS_BAR) {
        if (t - p->last_draw >= REDRAW_S || (p->total > 0 && done >= p->total)) draw_bar(p, t);
        return;
    }
    int pct = p->total > 0 ? (int)(100.0 * (double)done / (double)p->total) : 0;
    if ((p->total > 0 && pct >= p->next_plain_pct) || t - p->last_plain >= PLAIN_EVERY_S) {
        print_plain(p, t);
        if (p->total > 0 && pct >= p->next_plain_pct) p->next_plain_pct = (pct / 10 + 1) * 10;
    }
}

void sdc_progress_set_postfix(sdc_progress *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->postfix, sizeof p->postfix, fmt, ap);
    va_end(ap);
}

void sdc_progress_end(sdc_progress *p) {
    if (!p->active) return;
    double t = p->now();
    if (p->mode == SDC_PROGRESS_BAR) {
        draw_bar(p, t);
        fputc('\n', p->out);
        fflush(p->out);
    } else if (p->last_printed != p->done) {
        print_plain(p, t);
    }
    p->active = 0;
}
