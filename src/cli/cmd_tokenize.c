/* sdc tokenize: the token ids of a prompt for each tokenizer of a model,
 * exactly as the reference pipeline would feed them to the text encoders. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/fs.h"
#include "core/log.h"
#include "data/clip_tokenizer.h"
#include "io/single_file.h"
#include "io/weights.h"

#define MAX_TOKENIZERS 2

typedef struct {
    const char *name; /* "tokenizer" or "tokenizer_2" */
    sdc_clip_tokenizer *tok;
} named_tokenizer;

static void help(FILE *f) {
    fprintf(f,
            "usage: sdc tokenize --model PATH --prompt TEXT [--json]\n"
            "\n"
            "Prints the token ids of a prompt (all model_max_length of them, padding\n"
            "included) for each tokenizer of a model.\n"
            "\n"
            "  --model PATH    a diffusers model folder (its tokenizer/ and tokenizer_2/\n"
            "                  subfolders), a tokenizer folder, or a single-file checkpoint\n"
            "                  (.safetensors/.ckpt/...: the built-in CLIP vocabulary, with the\n"
            "                  pad token of the family found in the file) (required)\n"
            "  --prompt TEXT   the prompt; \"\" is allowed (required)\n"
            "  --json          print one JSON object {\"tokenizer\": [...], \"tokenizer_2\": [...]}\n"
            "                  (default: off, one line \"<name>: <ids>\" per tokenizer)\n"
            "  -h, --help      show this help\n");
}

static int is_checkpoint_name(const char *p) {
    static const char *ext[] = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (sdc_str_ends_with(p, ext[i])) return 1;
    return 0;
}

/* A single file carries no tokenizer: use the built-in CLIP vocabulary with
 * the family's tokenizers, the family coming from the file's keys
 * (io/single_file.h). SD 2.x and SDXL's second tokenizer pad with "!". */
static sdc_status load_single_file(const char *path, named_tokenizer *t, int *n, sdc_error *err) {
    sdc_single_file sf;
    SDC_TRY(sdc_single_file_load(path, &sf, err));
    sdc_family f = sf.family;
    sdc_single_file_free(&sf);
    SDC_TRY(sdc_clip_tokenizer_default(f == SDC_FAMILY_SD2 ? "!" : "<|endoftext|>", &t[0].tok, err));
    t[0].name = "tokenizer";
    *n = 1;
    if (f == SDC_FAMILY_SDXL) {
        SDC_TRY(sdc_clip_tokenizer_default("!", &t[1].tok, err));
        t[1].name = "tokenizer_2";
        *n = 2;
    }
    return SDC_OK;
}

static int is_tokenizer_dir(const char *dir) {
    static const char *files[] = {"tokenizer.json", "vocab.json"};
    for (int i = 0; i < 2; i++) {
        char *p = sdc_path_join(dir, files[i]);
        int yes = p && sdc_path_exists(p);
        free(p);
        if (yes) return 1;
    }
    return 0;
}

static sdc_status load_folder(const char *dir, named_tokenizer *t, int *n, sdc_error *err) {
    static const char *names[MAX_TOKENIZERS] = {"tokenizer", "tokenizer_2"};
    *n = 0;
    for (int i = 0; i < MAX_TOKENIZERS; i++) {
        char *sub = sdc_path_join(dir, names[i]);
        if (!sub) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        sdc_status s = SDC_OK;
        if (sdc_path_is_dir(sub)) {
            s = sdc_clip_tokenizer_load(sub, &t[*n].tok, err);
            if (s == SDC_OK) t[(*n)++].name = names[i];
        }
        free(sub);
        SDC_TRY(s);
    }
    if (*n > 0) return SDC_OK;
    /* --model may also name a tokenizer folder itself */
    if (is_tokenizer_dir(dir)) {
        SDC_TRY(sdc_clip_tokenizer_load(dir, &t[0].tok, err));
        t[0].name = "tokenizer";
        *n = 1;
        return SDC_OK;
    }
    return sdc_fail(err, SDC_ENOTFOUND, "%s: no tokenizer/ or tokenizer_2/ folder (is it a diffusers model folder?)", dir);
}

static int print_ids(const named_tokenizer *t, int n, int32_t *const *ids, int as_json, sdc_error *err) {
    if (!as_json) {
        for (int i = 0; i < n; i++) {
            printf("%s:", t[i].name);
            for (int k = 0; k < sdc_clip_tokenizer_max_length(t[i].tok); k++) printf(" %d", (int)ids[i][k]);
            printf("\n");
        }
        return 0;
    }
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    for (int i = 0; ok && i < n; i++) {
        cJSON *list = cJSON_AddArrayToObject(root, t[i].name);
        ok = list != NULL;
        for (int k = 0; ok && k < sdc_clip_tokenizer_max_length(t[i].tok); k++) {
            cJSON *v = cJSON_CreateNumber(ids[i][k]);
            ok = v && cJSON_AddItemToArray(list, v);
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        sdc_fail(err, SDC_ENOMEM, "out of memory");
        return cli_error(err);
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            as_json = 1;
        } else if (strcmp(a, "--model") == 0 || strcmp(a, "--prompt") == 0) {
            if (i + 1 >= argc) return cli_usage_error("%s needs a value (sdc tokenize --help)", a);
            if (strcmp(a, "--model") == 0) model = argv[++i];
            else prompt = argv[++i];
        } else if (strncmp(a, "--model=", 8) == 0) {
            model = a + 8;
        } else if (strncmp(a, "--prompt=", 9) == 0) {
            prompt = a + 9;
        } else {
            return cli_usage_error("unknown option \"%s\" for tokenize (sdc tokenize --help)", a);
        }
    }
    if (!model) return cli_usage_error("tokenize needs --model PATH (sdc tokenize --help)");
    if (!prompt) return cli_usage_error("tokenize needs --prompt TEXT (sdc tokenize --help)");

    sdc_error err = {0};
    named_tokenizer t[MAX_TOKENIZERS] = {{0}};
    int n = 0, rc = 1;
    int32_t *ids[MAX_TOKENIZERS] = {0};
    sdc_status s;
    if (sdc_path_is_dir(model)) s = load_folder(model, t, &n, &err);
    else if (sdc_path_exists(model)) s = load_single_file(model, t, &n, &err);
    else
        s = sdc_fail(&err, SDC_ENOTFOUND, "%s: no such %s", model,
                     is_checkpoint_name(model) ? "checkpoint file" : "model folder or file");
    for (int i = 0; s == SDC_OK && i < n; i++) {
        ids[i] = malloc((size_t)sdc_clip_tokenizer_max_length(t[i].tok) * sizeof *ids[i]);
        s = ids[i] ? sdc_clip_tokenize(t[i].tok, prompt, ids[i], NULL, &err) : sdc_fail(&err, SDC_ENOMEM, "out of memory");
        if (s != SDC_OK) sdc_error_prefix(&err, "%s", t[i].name);
    }
    rc = s == SDC_OK ? print_ids(t, n, ids, as_json, &err) : cli_error(&err);
    for (int i = 0; i < MAX_TOKENIZERS; i++) {
        sdc_clip_tokenizer_free(t[i].tok);
        free(ids[i]);
    }
    return rc;
}
