/* The demo model recipe's own steps (tools/make_demo_model.sh):
 *   sdc demo shapes  the synthetic data set (data/synth_shapes.h)
 *   sdc demo pack    the shipped folder: a trained model folder's configs,
 *                    tokenizer and weights in fp16, with the text encoder
 *                    taken from a training checkpoint (a full fine-tune's
 *                    output folder keeps the base text encoder) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/demo.h"
#include "cli/flags.h"
#include "core/dtype.h"
#include "core/fs.h"
#include "data/synth_shapes.h"
#include "io/safetensors.h"

int demo_cmd_shapes(int argc, char **argv) {
    const char *out = NULL;
    int count = 4000, res = 32, subject = 0, texture = 0;
    int64_t seed = 0;
    cli_flag flags[] = {
        CLI_FLAG("output_dir", CLI_STR, &out, "DIR", "folder to write (imagefolder: PNGs + metadata.jsonl)", NULL, "data"),
        CLI_FLAG("count", CLI_INT, &count, "N", "images", "4000", "data"),
        CLI_FLAG("resolution", CLI_INT, &res, "PX", "image side", "32", "data"),
        CLI_FLAG("seed", CLI_I64, &seed, "N", "seed (scene i is drawn from (seed, i))", "0", "data"),
        CLI_FLAG("subject", CLI_BOOL, &subject, NULL, "the DreamBooth subject's images (no captions) instead of the base world",
                 "off", "data"),
        CLI_FLAG("texture", CLI_BOOL, &texture, NULL,
                 "the texture world (patterned shapes, no captions: extra images for the VAE) instead of the base world",
                 "off", "data"),
    };
    int rc = cli_parse("demo shapes", "--output_dir DIR [--count N] [--resolution PX] [--seed N] [--subject | --texture]", flags,
                       (int)(sizeof flags / sizeof *flags), argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!out) return cli_usage_error("demo shapes needs --output_dir DIR");
    if (seed < 0) return cli_usage_error("--seed must be 0 or more");
    if (subject && texture) return cli_usage_error("--subject and --texture exclude each other");
    sdc_synth_kind kind = subject ? SDC_SYNTH_SUBJECT : texture ? SDC_SYNTH_TEXTURE : SDC_SYNTH_BASE;
    sdc_error err = {0};
    if (sdc_synth_write_set(out, kind, count, res, (uint64_t)seed, &err) != SDC_OK) return cli_error(&err);
    fprintf(stderr, "sdc: wrote %d %s images of %dx%d to %s\n", count,
            subject ? "subject" : texture ? "texture" : "shapes", res, res, out);
    return 0;
}

/* ---- pack ------------------------------------------------------------------------------------------------------- */

static sdc_status copy_file(const char *from_dir, const char *to_dir, const char *rel, int optional, sdc_error *err) {
    char from[4400], to[4400];
    snprintf(from, sizeof from, "%s/%s", from_dir, rel);
    snprintf(to, sizeof to, "%s/%s", to_dir, rel);
    if (optional && !sdc_path_exists(from)) return SDC_OK;
    char *text = NULL;
    size_t n = 0;
    SDC_TRY(sdc_read_file(from, &text, &n, err));
    char *slash = strrchr(to, '/');
    *slash = '\0';
    sdc_status st = sdc_mkdirs(to, err);
    *slash = '/';
    if (st == SDC_OK) st = sdc_write_file_atomic(to, text, n, err);
    free(text);
    return st;
}

/* The text encoder's config with "dtype" (transformers' default load dtype)
 * saying what the weights are. Edited as text: re-printing the JSON would
 * turn 1.0 into 1, which transformers' typed config refuses. */
static sdc_status te_config(const char *from_dir, const char *to_dir, const char *torch_dtype, sdc_error *err) {
    char from[4400], to[4400];
    snprintf(from, sizeof from, "%s/text_encoder/config.json", from_dir);
    snprintf(to, sizeof to, "%s/text_encoder/config.json", to_dir);
    char *text = NULL;
    size_t n = 0;
    SDC_TRY(sdc_read_file(from, &text, &n, err));
    const char *key = strstr(text, "\"dtype\"");
    const char *q1 = key ? strchr(key + 7, '"') : NULL, *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
    if (!q2) {
        free(text);
        return sdc_fail(err, SDC_EFORMAT, "%s: no \"dtype\" string", from);
    }
    size_t cap = n + strlen(torch_dtype) + 1;
    char *out = malloc(cap);
    sdc_status st = out ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (st == SDC_OK) {
        int len = snprintf(out, cap, "%.*s%s%s", (int)(q1 + 1 - text), text, torch_dtype, q2);
        st = sdc_write_file_atomic(to, out, (size_t)len, err);
    }
    free(out);
    free(text);
    return st;
}

/* to = from's tensors in dtype; with `override`, every tensor comes from
 * that file instead (it must hold all of from's names and shapes). */
static sdc_status convert(const char *from, const char *override, const char *to, sdc_dtype dtype, sdc_error *err) {
    sdc_weights w, o;
    sdc_weights_init(&w);
    sdc_weights_init(&o);
    sdc_status st = sdc_safetensors_read(from, &w, err);
    if (st == SDC_OK && override) st = sdc_safetensors_read(override, &o, err);
    sdc_st_tensor *ts = st == SDC_OK ? calloc(w.count + 1, sizeof *ts) : NULL;
    void **bufs = st == SDC_OK ? calloc(w.count + 1, sizeof *bufs) : NULL;
    if (st == SDC_OK && (!ts || !bufs)) st = sdc_fail(err, SDC_ENOMEM, "out of memory");
    for (size_t i = 0; st == SDC_OK && i < w.count; i++) {
        const sdc_weights *src = override ? &o : &w;
        const sdc_weight *t = override ? sdc_weights_find(&o, w.items[i].name) : &w.items[i];
        if (!t) {
            st = sdc_fail(err, SDC_ENOTFOUND, "%s: no tensor \"%s\" (which %s has)", override, w.items[i].name, from);
            break;
        }
        if (t->ndim != w.items[i].ndim || memcmp(t->shape, w.items[i].shape, sizeof t->shape)) {
            st = sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" has another shape than in %s", override, t->name, from);
            break;
        }
        int64_t n = sdc_weight_numel(t);
        float *f = malloc((size_t)n * sizeof *f);
        bufs[i] = f;
        if (!f) {
            st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            break;
        }
        st = sdc_weight_to_f32(src, t, f, err);
        if (st == SDC_OK && dtype == SDC_F16) {
            /* in place, through bytes: value k moves from byte 4k to byte 2k after values 0..k−1 were read */
            unsigned char *bytes = (unsigned char *)f;
            for (int64_t k = 0; k < n; k++) {
                float v;
                memcpy(&v, bytes + 4 * k, 4);
                uint16_t h = sdc_f32_to_f16(v);
                memcpy(bytes + 2 * k, &h, 2);
            }
        }
        ts[i] = (sdc_st_tensor){w.items[i].name, dtype, t->ndim, w.items[i].shape, f};
    }
    sdc_kv meta = {"format", "pt"};
    if (st == SDC_OK) st = sdc_safetensors_write(to, ts, w.count, &meta, 1, err);
    for (size_t i = 0; bufs && i < w.count; i++) free(bufs[i]);
    free(bufs);
    free(ts);
    sdc_weights_free(&o);
    sdc_weights_free(&w);
    return st;
}

static sdc_status pack(const char *model, const char *te, const char *out, sdc_dtype dtype, sdc_error *err) {
    static const char *const texts[] = {"model_index.json",
                                        "scheduler/scheduler_config.json",
                                        "unet/config.json",
                                        "vae/config.json",
                                        "tokenizer/merges.txt",
                                        "tokenizer/vocab.json",
                                        "tokenizer/tokenizer_config.json",
                                        "tokenizer/special_tokens_map.json"};
    static const char *const weights[][2] = {{"text_encoder", "model.safetensors"},
                                             {"unet", "diffusion_pytorch_model.safetensors"},
                                             {"vae", "diffusion_pytorch_model.safetensors"}};
    char tmp[4200], path[4400], from[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", out, (int)getpid());
    sdc_remove_tree(tmp);
    sdc_status st = sdc_mkdirs(tmp, err);
    for (size_t i = 0; st == SDC_OK && i < sizeof texts / sizeof *texts; i++)
        st = copy_file(model, tmp, texts[i], i >= 4, err);
    for (size_t i = 0; st == SDC_OK && i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, weights[i][0]);
        st = sdc_mkdirs(path, err);
        snprintf(from, sizeof from, "%s/%s/%s", model, weights[i][0], weights[i][1]);
        snprintf(path, sizeof path, "%s/%s/%s", tmp, weights[i][0], weights[i][1]);
        if (st == SDC_OK) st = convert(from, i == 0 ? te : NULL, path, dtype, err);
    }
    if (st == SDC_OK) st = te_config(model, tmp, dtype == SDC_F16 ? "float16" : "float32", err);
    /* into place: an existing folder is moved aside first and removed after */
    char old[4300];
    snprintf(old, sizeof old, "%s.old-%d", out, (int)getpid());
    int had = st == SDC_OK && sdc_path_exists(out) && rename(out, old) == 0;
    if (st == SDC_OK && rename(tmp, out) != 0) {
        st = sdc_fail(err, SDC_EIO, "%s: cannot move %s into place: %s", out, tmp, strerror(errno));
        if (had) rename(old, out);
    } else if (had) {
        sdc_remove_tree(old);
    }
    if (st != SDC_OK) sdc_remove_tree(tmp);
    return st;
}

int demo_cmd_pack(int argc, char **argv) {
    const char *model = NULL, *te = NULL, *out = NULL, *dtype = "fp16";
    cli_flag flags[] = {
        CLI_FLAG("model", CLI_STR, &model, "DIR", "a trained diffusers folder (sdc train's output)", NULL, "pack"),
        CLI_FLAG("text_encoder", CLI_STR, &te, "FILE",
                 "text encoder weights to use instead of the folder's (checkpoint-N/text_encoder.safetensors)", NULL,
                 "pack"),
        CLI_FLAG("output_dir", CLI_STR, &out, "DIR", "the folder to write (replaced as a whole)", NULL, "pack"),
        CLI_FLAG("dtype", CLI_STR, &dtype, "fp16|fp32", "dtype of the written weights", "fp16", "pack"),
    };
    int rc = cli_parse("demo pack", "--model DIR --output_dir DIR [--text_encoder FILE] [--dtype fp16|fp32]", flags,
                       (int)(sizeof flags / sizeof *flags), argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model || !out) return cli_usage_error("demo pack needs --model DIR and --output_dir DIR");
    if (strcmp(dtype, "fp16") && strcmp(dtype, "fp32")) return cli_usage_error("--dtype must be fp16 or fp32");
    sdc_error err = {0};
    if (pack(model, te, out, !strcmp(dtype, "fp16") ? SDC_F16 : SDC_F32, &err) != SDC_OK) return cli_error(&err);
    fprintf(stderr, "sdc: packed %s%s%s into %s (%s)\n", model, te ? " with the text encoder of " : "", te ? te : "", out,
            dtype);
    return 0;
}
