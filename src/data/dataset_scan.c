/* Scanning training-set layouts into dataset items (see dataset.h). */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/fs.h"
#include "core/log.h"
#include "data/dataset.h"
#include "io/json.h"

#define MAX_DIR_DEPTH 64 /* bounds recursion through symlink loops */

typedef struct strlist {
    char **v;
    int64_t n, cap;
} strlist;

static void strlist_free(strlist *l) {
    for (int64_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static sdc_status strlist_push_own(strlist *l, char *s, const char *dir, sdc_error *err) {
    if (!s) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    if (l->n >= SDC_DATASET_MAX_ITEMS) {
        free(s);
        return sdc_fail(err, SDC_ELIMIT, "%s: more than %lld images", dir, (long long)SDC_DATASET_MAX_ITEMS);
    }
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(s);
            return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return SDC_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The extensions sdc_image_load decodes (it sniffs content; the name only
 * selects which files are training images). */
static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".webp"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (strcasecmp(dot, ext[i]) == 0) return 1;
    return 0;
}

/* Appends the relative paths ("rel/name") of images under root/rel. */
static sdc_status walk(const char *root, const char *rel, int recursive, int depth, strlist *out, sdc_error *err) {
    char *dirpath = rel[0] ? sdc_path_join(root, rel) : sdc_strdup(root);
    if (!dirpath) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", root);
    DIR *d = opendir(dirpath);
    if (!d) {
        sdc_status s = sdc_fail(err, SDC_EIO, "%s: cannot open directory", dirpath);
        free(dirpath);
        return s;
    }
    sdc_status s = SDC_OK;
    struct dirent *e;
    while (s == SDC_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ".", "..", hidden files */
        char *relname = rel[0] ? sdc_path_join(rel, e->d_name) : sdc_strdup(e->d_name);
        char *full = sdc_path_join(dirpath, e->d_name);
        struct stat st;
        if (!relname || !full) {
            s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dirpath);
        } else if (stat(full, &st) != 0) {
            /* A dangling symlink is not an image; skip it. */
        } else if (S_ISDIR(st.st_mode)) {
            if (recursive) {
                if (depth >= MAX_DIR_DEPTH)
                    s = sdc_fail(err, SDC_ELIMIT, "%s: directories nested deeper than %d", full, MAX_DIR_DEPTH);
                else
                    s = walk(root, relname, recursive, depth + 1, out, err);
            }
        } else if (S_ISREG(st.st_mode) && is_image_name(e->d_name)) {
            s = strlist_push_own(out, relname, root, err);
            relname = NULL;
        }
        free(relname);
        free(full);
    }
    closedir(d);
    free(dirpath);
    return s;
}

/* Sorted relative image paths under dir. */
static sdc_status list_images(const char *dir, int recursive, strlist *out, sdc_error *err) {
    memset(out, 0, sizeof *out);
    if (!sdc_path_exists(dir)) return sdc_fail(err, SDC_ENOTFOUND, "%s: directory does not exist", dir);
    if (!sdc_path_is_dir(dir)) return sdc_fail(err, SDC_EINVAL, "%s: not a directory", dir);
    sdc_status s = walk(dir, "", recursive, 0, out, err);
    if (s != SDC_OK) {
        strlist_free(out);
        return s;
    }
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str); /* v is NULL when empty */
    return SDC_OK;
}

/* Strict UTF-8 (RFC 3629), as Python decodes captions: no overlong forms,
 * no surrogates, nothing above U+10FFFF. The lead byte bounds the second
 * byte: E0 -> A0..BF, ED -> 80..9F, F0 -> 90..BF, F4 -> 80..8F. */
static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else return 0;
        if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

/* --- imagefolder ------------------------------------------------------ */

typedef struct meta_item {
    char *rel, *caption;
} meta_item;

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const meta_item *)a)->rel, ((const meta_item *)b)->rel);
}

/* The caption member of one metadata line, borrowed from obj. */
static sdc_status meta_caption(const cJSON *obj, const char *col, const char *where, const char **out,
                               sdc_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, col);
    if (!v || cJSON_IsNull(v)) return sdc_fail(err, SDC_EFORMAT, "%s: no caption column \"%s\"", where, col);
    /* A list of captions: train_text_to_image.py picks one at random when
     * training; sdc takes the first so the item list stays fixed. */
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!cJSON_IsString(v))
        return sdc_fail(err, SDC_EFORMAT, "%s: caption column \"%s\" must be a string or a list of strings", where,
                        col);
    *out = v->valuestring;
    return SDC_OK;
}

static sdc_status scan_metadata(sdc_dataset *ds, const char *dir, const char *mpath, const char *col,
                                sdc_error *err) {
    char *text;
    size_t len;
    SDC_TRY(sdc_read_file(mpath, &text, &len, err));
    meta_item *items = NULL;
    int64_t n = 0, cap = 0, lineno = 0;
    sdc_status s = SDC_OK;
    for (size_t pos = 0; s == SDC_OK && pos < len;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        pos += llen + (nl ? 1 : 0);
        lineno++;
        size_t k = 0;
        while (k < llen && isspace((unsigned char)line[k])) k++;
        if (k == llen) continue; /* blank line */
        char where[1200];
        snprintf(where, sizeof where, "%s line %lld", mpath, (long long)lineno);
        /* datasets' JSON reader refuses both; checked before cJSON allocates */
        if (llen > SDC_DATASET_MAX_LINE) {
            s = sdc_fail(err, SDC_ELIMIT, "%s: %zu bytes, more than the %d sdc reads in one line", where, llen,
                         SDC_DATASET_MAX_LINE);
            break;
        }
        if (!valid_utf8((const unsigned char *)line, llen)) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: not valid UTF-8", where);
            break;
        }
        cJSON *obj = NULL;
        s = sdc_json_parse(line, llen, where, &obj, err);
        if (s != SDC_OK) {
            /* The parser counts lines within this one line; keep the column. */
            const char *c = err ? strstr(err->msg, "column ") : NULL;
            if (c) s = sdc_fail(err, s, "%s: invalid JSON near column %d", where, atoi(c + 7));
            break;
        }
        const char *fname = NULL, *cap_text = NULL;
        if (!cJSON_IsObject(obj)) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: expected a JSON object", where);
        } else {
            s = sdc_json_get_string(obj, "file_name", &fname, where, err);
            if (s == SDC_OK && !fname) s = sdc_fail(err, SDC_EFORMAT, "%s: no \"file_name\"", where);
            if (s == SDC_OK) s = meta_caption(obj, col, where, &cap_text, err);
        }
        if (s == SDC_OK) {
            char *full = sdc_path_join(dir, fname);
            struct stat st;
            if (!full)
                s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", where);
            else if (stat(full, &st) != 0 || !S_ISREG(st.st_mode))
                s = sdc_fail(err, SDC_ENOTFOUND, "%s: file_name \"%s\": %s is not a file", where, fname, full);
            else if (strlen(cap_text) > SDC_DATASET_MAX_CAPTION)
                s = sdc_fail(err, SDC_ELIMIT, "%s: caption longer than %d bytes", where, SDC_DATASET_MAX_CAPTION);
            else if (n >= SDC_DATASET_MAX_ITEMS)
                s = sdc_fail(err, SDC_ELIMIT, "%s: more than %lld items", where, (long long)SDC_DATASET_MAX_ITEMS);
            free(full);
        }
        if (s == SDC_OK && n == cap) {
            int64_t nc = cap ? cap * 2 : 64;
            meta_item *ni = realloc(items, (size_t)nc * sizeof *ni);
            if (!ni)
                s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", where);
            else
                items = ni, cap = nc;
        }
        if (s == SDC_OK) {
            items[n].rel = sdc_strdup(fname);
            items[n].caption = sdc_strdup(cap_text);
            n++;
            if (!items[n - 1].rel || !items[n - 1].caption) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", where);
        }
        cJSON_Delete(obj);
    }
    free(text);
    if (s == SDC_OK) {
        if (n > 1) qsort(items, (size_t)n, sizeof *items, cmp_meta); /* items is NULL when n == 0 */
        for (int64_t i = 0; s == SDC_OK && i < n; i++) {
            char *full = sdc_path_join(dir, items[i].rel);
            s = full ? sdc_dataset_push(ds, full, items[i].caption, err)
                     : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", mpath);
            free(full);
        }
        if (s == SDC_OK && n == 0) s = sdc_fail(err, SDC_ENOTFOUND, "%s: no items", mpath);
    }
    for (int64_t i = 0; i < n; i++) {
        free(items[i].rel);
        free(items[i].caption);
    }
    free(items);
    return s;
}

/* Pushes the sorted images of dir, all with one caption. */
static sdc_status push_images(sdc_dataset *ds, const char *dir, const strlist *l, const char *caption,
                              sdc_error *err) {
    for (int64_t i = 0; i < l->n; i++) {
        char *full = sdc_path_join(dir, l->v[i]);
        sdc_status s = full ? sdc_dataset_push(ds, full, caption, err)
                            : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
        free(full);
        if (s != SDC_OK) return s;
    }
    return SDC_OK;
}

sdc_status sdc_dataset_scan_imagefolder(sdc_dataset *ds, const char *dir, const char *caption_column,
                                        sdc_error *err) {
    if (!sdc_path_exists(dir)) return sdc_fail(err, SDC_ENOTFOUND, "%s: directory does not exist", dir);
    if (!sdc_path_is_dir(dir)) return sdc_fail(err, SDC_EINVAL, "%s: not a directory", dir);
    char *mpath = sdc_path_join(dir, "metadata.jsonl");
    if (!mpath) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    sdc_status s;
    if (sdc_path_exists(mpath)) {
        s = scan_metadata(ds, dir, mpath, caption_column ? caption_column : "text", err);
    } else {
        strlist l;
        s = list_images(dir, 1, &l, err);
        if (s == SDC_OK && l.n == 0) s = sdc_fail(err, SDC_ENOTFOUND, "%s: no images (.png .jpg .jpeg .webp)", dir);
        if (s == SDC_OK) s = push_images(ds, dir, &l, "", err);
        strlist_free(&l);
    }
    free(mpath);
    return s;
}

/* --- kohya captions ---------------------------------------------------- */

/* The first line of a caption file, whitespace-trimmed (kohya's
 * read_caption: lines[0].strip()); a UTF-8 BOM is dropped. */
static sdc_status read_caption(const char *path, char **out, sdc_error *err) {
    char *text;
    size_t len;
    SDC_TRY(sdc_read_file(path, &text, &len, err));
    const char *s = text;
    if (len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3, len -= 3;
    if (!valid_utf8((const unsigned char *)s, len)) {
        free(text);
        return sdc_fail(err, SDC_EFORMAT, "%s: caption is not valid UTF-8", path);
    }
    const char *nl = memchr(s, '\n', len);
    size_t n = nl ? (size_t)(nl - s) : len;
    while (n > 0 && isspace((unsigned char)*s)) s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    if (n > SDC_DATASET_MAX_CAPTION) {
        free(text);
        return sdc_fail(err, SDC_ELIMIT, "%s: caption longer than %d bytes", path, SDC_DATASET_MAX_CAPTION);
    }
    char *c = malloc(n + 1);
    if (!c) {
        free(text);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    }
    memcpy(c, s, n);
    c[n] = '\0';
    free(text);
    *out = c;
    return SDC_OK;
}

/* "dir/sub/name.png" -> "dir/sub/name<ext>" (malloc'd). */
static char *caption_path(const char *img, const char *ext) {
    const char *base = sdc_path_basename(img);
    const char *dot = strrchr(base, '.');
    size_t stem = dot ? (size_t)(dot - img) : strlen(img);
    size_t el = strlen(ext);
    char *p = malloc(stem + el + 1);
    if (!p) return NULL;
    memcpy(p, img, stem);
    memcpy(p + stem, ext, el + 1);
    return p;
}

sdc_status sdc_dataset_scan_captioned(sdc_dataset *ds, const char *dir, const char *caption_ext, int recursive,
                                      int64_t *n_uncaptioned, sdc_error *err) {
    strlist l;
    SDC_TRY(list_images(dir, recursive, &l, err));
    if (l.n == 0) {
        strlist_free(&l);
        return sdc_fail(err, SDC_ENOTFOUND, "%s: no images (.png .jpg .jpeg .webp)", dir);
    }
    static const char *const defaults[] = {".txt", ".caption"};
    const char *const *exts = caption_ext ? &caption_ext : defaults;
    int next = caption_ext ? 1 : 2;
    int64_t missing = 0;
    sdc_status s = SDC_OK;
    for (int64_t i = 0; s == SDC_OK && i < l.n; i++) {
        char *full = sdc_path_join(dir, l.v[i]);
        char *caption = NULL;
        if (!full) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
        for (int e = 0; s == SDC_OK && e < next && !caption; e++) {
            char *cp = caption_path(full, exts[e]);
            if (!cp)
                s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
            else if (sdc_file_size(cp) >= 0)
                s = read_caption(cp, &caption, err);
            free(cp);
        }
        if (s == SDC_OK) {
            if (!caption) missing++;
            s = sdc_dataset_push(ds, full, caption ? caption : "", err);
        }
        free(caption);
        free(full);
    }
    int64_t total = l.n;
    strlist_free(&l);
    if (s != SDC_OK) return s;
    if (missing > 0)
        SDC_WARN("%s: %lld of %lld images have no caption file (%s); their caption is empty", dir,
                 (long long)missing, (long long)total, caption_ext ? caption_ext : ".txt/.caption");
    if (n_uncaptioned) *n_uncaptioned = missing;
    return SDC_OK;
}

/* --- DreamBooth --------------------------------------------------------- */

sdc_status sdc_dataset_scan_images(sdc_dataset *ds, const char *dir, const char *prompt, int allow_missing,
                                   sdc_error *err) {
    if (allow_missing && !sdc_path_exists(dir)) return SDC_OK;
    strlist l;
    SDC_TRY(list_images(dir, 0, &l, err));
    sdc_status s = SDC_OK;
    if (l.n == 0 && !allow_missing)
        s = sdc_fail(err, SDC_ENOTFOUND, "%s: no images (.png .jpg .jpeg .webp)", dir);
    if (s == SDC_OK) s = push_images(ds, dir, &l, prompt ? prompt : "", err);
    strlist_free(&l);
    return s;
}

sdc_status sdc_dataset_class_images_missing(const char *class_dir, int64_t num_class_images, int64_t *missing,
                                            sdc_error *err) {
    int64_t have = 0;
    if (sdc_path_exists(class_dir)) {
        strlist l;
        SDC_TRY(list_images(class_dir, 0, &l, err));
        have = l.n;
        strlist_free(&l);
    }
    *missing = num_class_images > have ? num_class_images - have : 0;
    return SDC_OK;
}
