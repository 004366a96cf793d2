/* Shared helpers for the libFuzzer targets in fuzz/: most loaders read a
 * path (they map or read whole files, as sdc does for real), so each input
 * is written to a file in a per-process temporary folder first.
 *
 * Each target is one C file with LLVMFuzzerTestOneInput; `make fuzz` builds
 * them with clang -fsanitize=fuzzer,address,undefined (mk/fuzz.mk). */
#ifndef SDC_FUZZ_UTIL_H
#define SDC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"

static char fuzz_dir_buf[256];
static inline void fuzz_dir_remove(void) { sdc_remove_tree(fuzz_dir_buf); }

/* The folder every input of this process is written under (made once; the
 * fuzzer runs in one process, so a fixed name per pid is enough; removed at
 * exit). Loader warnings are silenced: they would drown libFuzzer's own
 * output. */
static inline const char *fuzz_dir(void) {
    char *dir = fuzz_dir_buf;
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof fuzz_dir_buf, "%s/sdc-fuzz-%ld", tmp && tmp[0] ? tmp : "/tmp", (long)getpid());
        mkdir(dir, 0755);
        atexit(fuzz_dir_remove);
        sdc_log_set_level(SDC_LOG_QUIET);
    }
    return dir;
}

/* "<fuzz_dir>/<name>" in a static buffer (one per slot, 4 slots). */
static inline const char *fuzz_path(const char *name) {
    static char buf[4][512];
    static int slot;
    char *b = buf[slot++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", fuzz_dir(), name);
    return b;
}

/* Writes n bytes to path; aborts on failure (the harness is broken, not the
 * input). */
static inline void fuzz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* Splits data at each "\n@@\n" into at most max parts (the last part keeps
 * the rest), so one input can carry several files. Returns the count. */
static inline int fuzz_split(const uint8_t *data, size_t n, const uint8_t **part, size_t *len, int max) {
    static const char sep[] = "\n@@\n";
    const size_t sl = sizeof sep - 1;
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; k < max - 1 && i + sl <= n; i++)
        if (memcmp(data + i, sep, sl) == 0) {
            part[k] = data + start;
            len[k++] = i - start;
            start = i + sl;
            i += sl - 1;
        }
    part[k] = data + start;
    len[k++] = n - start;
    return k;
}

/* A NUL-terminated copy (the caller frees). */
static inline char *fuzz_cstr(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

#endif
