/* A progress bar for long loops (denoising steps, training steps, caching).
 *
 * On a terminal (stderr is a tty and TERM is not "dumb") one line is
 * redrawn in place with \r, at most 10 times a second, tqdm-like:
 *   label  47% |█████████▍          | 47/100 [00:12<00:13, 3.81 it/s]
 * Otherwise (a log file, a pipe) a plain line is printed every 10% or every
 * 30 s, and at the end:
 *   label  47% 47/100 [00:12<00:13, 3.81 it/s]
 * The rate is shown as it/s, or as s/it when below one per second.
 * SDC_PROGRESS=0 in the environment turns automatic bars off.
 *
 * Usage: sdc_progress p = {0}; sdc_progress_begin(&p, "steps", n);
 *        for (...) { ...; sdc_progress_update(&p, i + 1); } sdc_progress_end(&p);
 * Before begin, out, now, mode and charset may be set (tests use a fake
 * clock and a memory FILE); zero means the default. */
#ifndef SDC_CORE_PROGRESS_H
#define SDC_CORE_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdc_progress_mode {
    SDC_PROGRESS_AUTO = 0, /* bar on a terminal, plain lines otherwise, off if SDC_PROGRESS=0 */
    SDC_PROGRESS_BAR,
    SDC_PROGRESS_PLAIN,
    SDC_PROGRESS_OFF,
} sdc_progress_mode;

typedef enum sdc_progress_charset {
    SDC_PROGRESS_CHARS_AUTO = 0, /* Unicode blocks when the locale is UTF-8, else ASCII */
    SDC_PROGRESS_CHARS_UNICODE,
    SDC_PROGRESS_CHARS_ASCII,
} sdc_progress_charset;

#define SDC_PROGRESS_BAR_CELLS 20

typedef struct sdc_progress {
    /* settable before begin (0 = default) */
    FILE *out;           /* default stderr */
    double (*now)(void); /* seconds on a monotonic clock; default CLOCK_MONOTONIC */
    sdc_progress_mode mode;
    sdc_progress_charset charset;
    /* state */
    char label[64];
    char postfix[96]; /* shown after the rate, e.g. "loss=0.0123" */
    int64_t total;    /* <= 0: unknown (no percentage, bar or ETA) */
    int64_t done;
    int64_t initial; /* done at begin; the rate counts from here (set it when resuming) */
    double start, last_draw, last_plain;
    int next_plain_pct;
    int64_t last_printed; /* done at the last plain line (-1: none) */
    int last_len;         /* length of the last bar line, to blank leftovers */
    int active;
} sdc_progress;

void sdc_progress_begin(sdc_progress *p, const char *label, int64_t total);
/* done: items finished so far (absolute, not an increment). */
void sdc_progress_update(sdc_progress *p, int64_t done);
void sdc_progress_set_postfix(sdc_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Draws the final state and ends the line. */
void sdc_progress_end(sdc_progress *p);

/* The status text (no \r or newline) for done items at time t; bar selects
 * the terminal form. Returns its length. Exposed for tests. */
int sdc_progress_format(const sdc_progress *p, double t, int bar, char *buf, size_t cap);
/* "MM:SS", or "H:MM:SS" from an hour (seconds truncated, as tqdm). */
void sdc_progress_format_interval(double seconds, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
