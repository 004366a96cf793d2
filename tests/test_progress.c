/* Progress bar formatting and pacing with a fake clock and a memory FILE
 * (no real time is measured). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "test.h"

static double fake_t;
static double fake_now(void) { return fake_t; }

static int count_char(const char *s, size_t n, char c) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == c;
    return k;
}

static void start(sdc_progress *p, FILE *out, sdc_progress_mode mode, const char *label, int64_t total) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->now = fake_now;
    p->mode = mode;
    p->charset = SDC_PROGRESS_CHARS_UNICODE;
    sdc_progress_begin(p, label, total);
}

TEST(progress_format_line) {
    char buf[512];
    sdc_progress p;
    fake_t = 1000.0;
    start(&p, NULL, SDC_PROGRESS_OFF, "label", 100);
    p.done = 47;
    /* 47 items in 12.336 s: 3.81 it/s, 53 left take 13.9 s (shown truncated) */
    sdc_progress_format(&p, 1012.336, 1, buf, sizeof buf);
    CHECK_STR(buf, "label  47% |\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u258d          | 47/100 "
                   "[00:12<00:13, 3.81 it/s]");
    sdc_progress_format(&p, 1012.336, 0, buf, sizeof buf);
    CHECK_STR(buf, "label  47% 47/100 [00:12<00:13, 3.81 it/s]");

    /* slow: 2 items in 25 s is 12.50 s/it; 98 left take 1225 s */
    p.done = 2;
    sdc_progress_format(&p, 1025.0, 0, buf, sizeof buf);
    CHECK_STR(buf, "label   2% 2/100 [00:25<20:25, 12.50 s/it]");

    /* nothing done yet: no rate, no ETA; postfix after the rate */
    p.done = 0;
    sdc_progress_set_postfix(&p, "loss=%.3f", 0.5);
    sdc_progress_format(&p, 1000.0, 1, buf, sizeof buf);
    CHECK_STR(buf, "label   0% |                    | 0/100 [00:00<?, ? it/s, loss=0.500]");

    /* done: a full bar */
    p.done = 100;
    p.postfix[0] = 0;
    p.charset = SDC_PROGRESS_CHARS_ASCII;
    sdc_progress_format(&p, 1050.0, 1, buf, sizeof buf);
    CHECK_STR(buf, "label 100% |####################| 100/100 [00:50<00:00, 2.00 it/s]");

    /* unknown total */
    start(&p, NULL, SDC_PROGRESS_OFF, "cache", 0);
    p.done = 5;
    sdc_progress_format(&p, 1002.0, 1, buf, sizeof buf);
    CHECK_STR(buf, "cache 5 it [00:02, 2.50 it/s]");

    sdc_progress_format_interval(59.9, buf, sizeof buf);
    CHECK_STR(buf, "00:59");
    sdc_progress_format_interval(3725.0, buf, sizeof buf);
    CHECK_STR(buf, "1:02:05");
}

/* On a terminal: one line redrawn with \r, at most every 0.1 s, final line
 * ended with a newline. */
TEST(progress_bar_redraw_pacing) {
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    REQUIRE(f);
    sdc_progress p;
    fake_t = 0.0;
    start(&p, f, SDC_PROGRESS_BAR, "steps", 50);                /* draw 1 */
    const double times[] = {0.05, 0.09, 0.125, 0.2, 0.26, 0.5}; /* draws at 0.125, 0.26, 0.5 */
    for (int i = 0; i < 6; i++) {
        fake_t = times[i];
        sdc_progress_update(&p, i + 1);
    }
    fake_t = 0.51;
    sdc_progress_update(&p, 50); /* reaching the total always draws */
    fake_t = 0.52;
    sdc_progress_end(&p); /* final draw + newline */
    fclose(f);
    CHECK_EQ_INT(count_char(mem, len, '\r'), 6);
    CHECK_EQ_INT(count_char(mem, len, '\n'), 1);
    CHECK(len > 0 && mem[len - 1] == '\n');
    CHECK(strstr(mem, "50/50 [00:00<00:00, 96.15 it/s]\n") != NULL); /* 50 in 0.52 s */
    free(mem);
}

/* Not a terminal: a line per 10%, no repeat at the end. */
TEST(progress_plain_lines) {
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    REQUIRE(f);
    sdc_progress p;
    fake_t = 0.0;
    start(&p, f, SDC_PROGRESS_PLAIN, "train", 100);
    for (int i = 1; i <= 100; i++) {
        fake_t = i;
        sdc_progress_update(&p, i);
    }
    sdc_progress_end(&p);
    fclose(f);
    CHECK_EQ_INT(count_char(mem, len, '\n'), 10);
    CHECK_EQ_INT(count_char(mem, len, '\r'), 0);
    CHECK(strstr(mem, "train  10% 10/100 [00:10<01:30, 1.00 it/s]\n") != NULL);
    CHECK(strstr(mem, "train 100% 100/100 [01:40<00:00, 1.00 it/s]\n") != NULL);

    /* slow progress: a line every 30 s even without a new 10%, and the final one */
    free(mem);
    f = open_memstream(&mem, &len);
    REQUIRE(f);
    fake_t = 0.0;
    start(&p, f, SDC_PROGRESS_PLAIN, "slow", 1000);
    for (int i = 1; i <= 10; i++) {
        fake_t = 10.0 * i;
        sdc_progress_update(&p, i); /* lines at 30, 60, 90 s */
    }
    fake_t = 101.0;
    sdc_progress_end(&p); /* 10/1000 at 101 s */
    fclose(f);
    CHECK_EQ_INT(count_char(mem, len, '\n'), 4);
    CHECK(strstr(mem, "slow   0% 3/1000 [00:30<") != NULL);
    CHECK(strstr(mem, "slow   1% 10/1000 [01:41<") != NULL);
    free(mem);
}

TEST(progress_env_off) {
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    REQUIRE(f);
    const char *old = getenv("SDC_PROGRESS");
    char *saved = old ? strdup(old) : NULL;
    setenv("SDC_PROGRESS", "0", 1);
    sdc_progress p;
    start(&p, f, SDC_PROGRESS_AUTO, "x", 10);
    for (int i = 1; i <= 10; i++) sdc_progress_update(&p, i);
    sdc_progress_end(&p);
    if (saved)
        setenv("SDC_PROGRESS", saved, 1);
    else
        unsetenv("SDC_PROGRESS");
    free(saved);
    fclose(f);
    CHECK_EQ_INT(len, 0);
    CHECK(p.mode == SDC_PROGRESS_OFF);
    free(mem);
}
