/* Single-file checkpoints through sdc_model_open: the key maps (CompVis /
 * SGM / OpenCLIP names to diffusers names, fused qkv split) and the configs
 * synthesised from tensor shapes. The input is not the file itself but a
 * list of tensors, one per line - "<name> <d0> [d1 [d2 [d3]]]" - which the
 * harness writes as a safetensors file of zeros (F16), so the fuzzer works
 * on names and shapes instead of rediscovering the container. */
#include "fuzz_util.h"
#include "io/model.h"
#include "model_configs.h"

#define MAX_TENSORS 4096
#define MAX_BYTES (16u << 20) /* of tensor data per input */

typedef struct {
    char *p;
    size_t n, cap;
} text;

static void add(text *t, const char *s, size_t n) {
    if (t->n + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4096;
        while (cap < t->n + n + 1) cap *= 2;
        t->p = realloc(t->p, cap);
        if (!t->p) abort();
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static unsigned char *zeros;
    if (!zeros && !(zeros = calloc(1, MAX_BYTES))) abort();
    text h = {0};
    add(&h, "{", 1);
    uint64_t off = 0;
    int count = 0;
    for (size_t pos = 0; pos < n && count < MAX_TENSORS;) {
        const uint8_t *line = data + pos, *nl = memchr(line, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - line) : n - pos;
        pos += len + 1;
        size_t k = 0;
        while (k < len && line[k] > ' ' && line[k] < 0x7f && line[k] != '"' && line[k] != '\\') k++;
        if (k == 0 || k > 256 || (k < len && line[k] != ' ')) continue;
        int64_t shape[4];
        int nd = 0, ok = 1;
        size_t i = k;
        while (ok && i < len && nd < 4) {
            while (i < len && line[i] == ' ') i++;
            if (i == len) break;
            int64_t v = 0;
            size_t d0 = i;
            while (i < len && line[i] >= '0' && line[i] <= '9' && v <= (1 << 20)) v = v * 10 + (line[i++] - '0');
            ok = i > d0 && v <= (1 << 20) && (i == len || line[i] == ' ');
            shape[nd++] = v;
        }
        if (!ok || (i < len && nd == 4)) continue;
        uint64_t bytes = 2;
        for (int d = 0; d < nd; d++) bytes *= (uint64_t)shape[d];
        if (bytes > MAX_BYTES - off) continue;
        char e[512];
        int m = snprintf(e, sizeof e, "%s\"%.*s\":{\"dtype\":\"F16\",\"shape\":[", count ? "," : "", (int)k, (const char *)line);
        add(&h, e, (size_t)m);
        for (int d = 0; d < nd; d++) {
            m = snprintf(e, sizeof e, "%s%lld", d ? "," : "", (long long)shape[d]);
            add(&h, e, (size_t)m);
        }
        m = snprintf(e, sizeof e, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                     (unsigned long long)(off + bytes));
        add(&h, e, (size_t)m);
        off += bytes;
        count++;
    }
    add(&h, "}", 1);
    const char *path = fuzz_path("model.safetensors");
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(h.p, 1, h.n, f) != h.n || (off && fwrite(zeros, 1, off, f) != off) ||
        fclose(f) != 0)
        abort();
    free(h.p);
    sdc_model mo;
    sdc_error err;
    if (sdc_model_open(path, NULL, &mo, &err) != SDC_OK) return 0;
    fuzz_parse_configs(&mo);
    sdc_model_close(&mo);
    return 0;
}
