/* Test runner: runs every registered test (or those whose name contains
 * argv[1]) and ends with "N passed, N failed, N skipped". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

#include "core/fs.h"

#define MAX_TESTS 4096

static struct {
    const char *name, *file;
    sdc_test_fn fn;
} g_tests[MAX_TESTS];
static int g_ntests;
static int g_failed, g_skipped;
static const char *g_current;
static char g_tmp_root[256];
static char g_tmp[512];
static int g_tmp_count;

void sdc_test_register(const char *name, sdc_test_fn fn, const char *file) {
    if (g_ntests >= MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    g_tests[g_ntests].name = name;
    g_tests[g_ntests].fn = fn;
    g_tests[g_ntests].file = file;
    g_ntests++;
}

void sdc_test_fail(const char *file, int line, const char *fmt, ...) {
    if (!g_failed) printf("FAIL %s\n", g_current);
    g_failed++;
    printf("  %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

void sdc_test_skip(const char *reason) {
    g_skipped = 1;
    printf("skip %s: %s\n", g_current, reason);
}

int sdc_test_failed(void) { return g_failed; }

const char *test_data(const char *rel) {
    static char buf[8][1024];
    static int slot;
    const char *root = getenv("SDC_TEST_DATA");
    char *b = buf[slot++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", root ? root : "tests/data", rel);
    return b;
}

const char *test_tmpdir(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/t%d", g_tmp_root, g_tmp_count++);
    mkdir(g_tmp, 0755);
    return g_tmp;
}

int run_sdc(const char *args, char *out, size_t cap) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "./sdc %s 2>&1", args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    if (cap) out[0] = '\0';
    int c;
    while ((c = fgetc(p)) != EOF)
        if (n + 1 < cap) {
            out[n++] = (char)c;
            out[n] = '\0';
        }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    snprintf(g_tmp_root, sizeof g_tmp_root, "/tmp/sdc-tests-%ld", (long)getpid());
    mkdir(g_tmp_root, 0755);
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_ntests; i++) {
        if (filter && !strstr(g_tests[i].name, filter)) continue;
        g_current = g_tests[i].name;
        g_failed = 0;
        g_skipped = 0;
        g_tests[i].fn();
        fflush(stdout);
        if (g_failed) failed++;
        else if (g_skipped) skipped++;
        else {
            passed++;
            printf("ok   %s\n", g_tests[i].name);
        }
    }
    char rm[512];
    snprintf(rm, sizeof rm, "rm -rf %s", g_tmp_root);
    if (system(rm) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp_root);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

int test_count_lines(const char *path) {
    char *text;
    size_t n;
    sdc_error err;
    if (sdc_read_file(path, &text, &n, &err) != SDC_OK) return -1;
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
    free(text);
    return lines;
}

const char *mpi_unavailable(void) {
    char log[8192];
    if (run_sdc("version", log, sizeof log) != 0 || !strstr(log, "MPI: yes")) return "sdc built without MPI";
    if (system(MPIRUN2 "true >/dev/null 2>&1") != 0)
        return "mpirun cannot start 2 processes here";
    return NULL;
}
