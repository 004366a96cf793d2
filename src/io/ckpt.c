#include "io/ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/pickle.h"
#include "io/zip.h"

typedef struct {
    char *name;
    const sdc_pk_tensor *t;
    const void *data;
    size_t nbytes;
    int file;
} ck_tensor;

/* A storage entry, resolved once however many views share it. */
typedef struct {
    const sdc_zip_entry *entry;
    const unsigned char *data;
    int in_file; /* 0 if inflated into a buffer of the weights set */
} ck_storage;

typedef struct {
    const char *path;
    sdc_error *err;
    sdc_weights *w;
    int file;
    sdc_zip zip;
    const char *archive; /* the "<archive>/" prefix of every record */
    size_t archive_len;
    ck_tensor *found;
    size_t nfound, cap;
    size_t visits;
    char name[SDC_CKPT_MAX_NAME + 1];
    ck_storage *stores;
    size_t nstores;
    sdc_strmap store_index; /* storage key (borrowed from the pickle) -> stores[] */
    uint64_t storage_bytes, materialised;
} ck_ctx;

/* File-controlled text for a one-line message: printable ASCII, capped. */
static const char *printable(char *buf, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    buf[o] = '\0';
    return buf;
}

/* ---- collecting tensors ------------------------------------------------------ */

static sdc_status add_found(ck_ctx *c, const sdc_pk_tensor *t, size_t nlen) {
    if (c->nfound == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 256;
        ck_tensor *nf = realloc(c->found, nc * sizeof *nf);
        if (!nf) return sdc_fail(c->err, SDC_ENOMEM, "%s: out of memory", c->path);
        c->found = nf;
        c->cap = nc;
    }
    ck_tensor *f = &c->found[c->nfound];
    memset(f, 0, sizeof *f);
    f->name = malloc(nlen + 1);
    if (!f->name) return sdc_fail(c->err, SDC_ENOMEM, "%s: out of memory", c->path);
    memcpy(f->name, c->name, nlen);
    f->name[nlen] = '\0';
    f->t = t;
    c->nfound++;
    return SDC_OK;
}

/* Depth-first over dicts, building "a.b.c" names in c->name[0..nlen). The
 * depth cap also ends cycles (a dict that contains itself). */
static sdc_status walk(ck_ctx *c, const sdc_pk_value *d, size_t nlen, int depth) {
    if (depth > SDC_CKPT_MAX_DEPTH)
        return sdc_fail(c->err, SDC_ELIMIT, "%s: dicts nested deeper than %d (or a dict that contains itself)", c->path,
                        SDC_CKPT_MAX_DEPTH);
    for (size_t i = 0; i < sdc_pk_dict_len(d); i++) {
        if (++c->visits > SDC_CKPT_MAX_VISITS)
            return sdc_fail(c->err, SDC_ELIMIT, "%s: more than %u dict entries to visit", c->path, SDC_CKPT_MAX_VISITS);
        const sdc_pk_value *k = sdc_pk_dict_key(d, i), *v = sdc_pk_dict_val(d, i);
        if (v->kind != SDC_PK_TENSOR && v->kind != SDC_PK_DICT) continue; /* global_step, epoch, lists, ... */
        /* Lightning keys callback states by the callback's class: no name to
         * give, and never weights */
        if (sdc_pk_is_inert(k)) continue;
        char num[24];
        const char *comp;
        size_t clen;
        if (k->kind == SDC_PK_STR) {
            comp = k->u.s.p;
            clen = k->u.s.len;
            if (clen == 0 || memchr(comp, '\0', clen))
                return sdc_fail(c->err, SDC_EFORMAT, "%s: a key under \"%.*s\" is empty or holds a NUL byte", c->path,
                                (int)nlen, c->name);
        } else if (k->kind == SDC_PK_INT) {
            clen = (size_t)snprintf(num, sizeof num, "%lld", (long long)k->u.i);
            comp = num;
        } else {
            return sdc_fail(c->err, SDC_EUNSUPPORTED, "%s: a %s key under \"%.*s\" holds a %s; only str and int keys are supported",
                            c->path, sdc_pk_kind_name(k->kind), (int)nlen, c->name, sdc_pk_kind_name(v->kind));
        }
        size_t len = nlen + (nlen ? 1 : 0) + clen;
        if (len > SDC_CKPT_MAX_NAME)
            return sdc_fail(c->err, SDC_ELIMIT, "%s: a tensor name is longer than %d bytes", c->path, SDC_CKPT_MAX_NAME);
        if (nlen) c->name[nlen] = '.';
        memcpy(c->name + len - clen, comp, clen);
        if (v->kind == SDC_PK_TENSOR) SDC_TRY(add_found(c, v->u.t, len));
        else SDC_TRY(walk(c, v, len, depth + 1));
    }
    return SDC_OK;
}

/* ---- resolving storages and views ------------------------------------------- */

static sdc_status resolve_storage(ck_ctx *c, const ck_tensor *f, const ck_storage **out) {
    const sdc_pk_storage *st = &f->t->storage->u.st;
    char kb[300];
    int64_t idx = sdc_strmap_getn(&c->store_index, st->key, st->key_len);
    if (idx < 0) {
        /* "<archive>/data/<key>" */
        size_t n = c->archive_len + 5 + st->key_len;
        char *ename = malloc(n + 1);
        if (!ename) return sdc_fail(c->err, SDC_ENOMEM, "%s: out of memory", c->path);
        memcpy(ename, c->archive, c->archive_len);
        memcpy(ename + c->archive_len, "data/", 5);
        memcpy(ename + c->archive_len + 5, st->key, st->key_len);
        const sdc_zip_entry *e = sdc_zip_findn(&c->zip, ename, n);
        free(ename);
        if (!e)
            return sdc_fail(c->err, SDC_EFORMAT, "%s: tensor \"%s\": storage \"%s\" is not in the archive (truncated?)",
                            c->path, f->name, printable(kb, sizeof kb, st->key, st->key_len));
        ck_storage *s = &c->stores[c->nstores];
        s->entry = e;
        if (e->size == st->nbytes) { /* else reported below, with the tensor */
            void *owned;
            SDC_TRY(sdc_zip_read(&c->zip, e, st->nbytes, &s->data, &owned, c->err));
            if (owned) SDC_TRY(sdc_weights_own(c->w, owned, c->err));
            s->in_file = owned == NULL;
            c->storage_bytes += e->size;
        }
        if (sdc_strmap_putn(&c->store_index, st->key, st->key_len, (int64_t)c->nstores, NULL) != 0)
            return sdc_fail(c->err, SDC_ENOMEM, "%s: out of memory", c->path);
        idx = (int64_t)c->nstores++;
    }
    const ck_storage *s = &c->stores[idx];
    /* Checked for every view: two persistent ids may name one key differently. */
    if (s->entry->size != st->nbytes)
        return sdc_fail(c->err, SDC_EFORMAT, "%s: tensor \"%s\": storage \"%s\" holds %llu bytes but the pickle says %llu (%lld x %s)",
                        c->path, f->name, printable(kb, sizeof kb, st->key, st->key_len),
                        (unsigned long long)s->entry->size, (unsigned long long)st->nbytes, (long long)st->numel,
                        st->untyped ? "byte" : sdc_dtype_name(st->dtype));
    *out = s;
    return SDC_OK;
}

/* Copies a strided view into a fresh row-major buffer. Every offset visited
 * lies inside the extent pickle.c validated. */
static sdc_status materialise(ck_ctx *c, ck_tensor *f, const unsigned char *base) {
    const sdc_pk_tensor *t = f->t;
    uint64_t es = sdc_dtype_size(t->dtype), bytes;
    if (__builtin_mul_overflow((uint64_t)t->numel, es, &bytes) || bytes > SIZE_MAX)
        return sdc_fail(c->err, SDC_ELIMIT, "%s: tensor \"%s\" is too large", c->path, f->name);
    /* A view can repeat its storage's elements (stride 0): bound the copies by
     * what the file really holds, so a small file cannot ask for terabytes. */
    uint64_t budget = 2 * c->storage_bytes + SDC_CKPT_MAX_EXPAND;
    if (bytes > budget - c->materialised || c->materialised > budget)
        return sdc_fail(c->err, SDC_ELIMIT, "%s: tensor \"%s\" is a strided view needing %llu bytes, more than sdc copies for a file holding %llu bytes of storage",
                        c->path, f->name, (unsigned long long)bytes, (unsigned long long)c->storage_bytes);
    unsigned char *out = malloc(bytes ? (size_t)bytes : 1);
    if (!out) return sdc_fail(c->err, SDC_ENOMEM, "%s: tensor \"%s\": cannot allocate %llu bytes", c->path, f->name,
                              (unsigned long long)bytes);
    int64_t idx[SDC_MAX_DIMS] = {0}, off = t->offset;
    unsigned char *o = out;
    for (int64_t k = 0; k < t->numel; k++) {
        memcpy(o, base + (uint64_t)off * es, (size_t)es);
        o += es;
        for (int d = t->ndim - 1; d >= 0; d--) { /* odometer over the indices */
            if (++idx[d] < t->shape[d]) {
                off += t->stride[d];
                break;
            }
            off -= t->stride[d] * (t->shape[d] - 1);
            idx[d] = 0;
        }
    }
    c->materialised += bytes;
    SDC_TRY(sdc_weights_own(c->w, out, c->err));
    f->data = out;
    f->nbytes = (size_t)bytes;
    f->file = -1;
    return SDC_OK;
}

static sdc_status resolve_tensor(ck_ctx *c, ck_tensor *f, const ck_storage *s) {
    const sdc_pk_tensor *t = f->t;
    if (!t->contiguous) return materialise(c, f, s->data);
    uint64_t es = sdc_dtype_size(t->dtype);
    /* pickle.c checked (offset + numel) * es <= storage bytes for numel > 0 */
    f->data = t->numel > 0 ? s->data + (uint64_t)t->offset * es : s->data;
    f->nbytes = (size_t)((uint64_t)t->numel * es);
    f->file = s->in_file ? c->file : -1;
    return SDC_OK;
}

/* ---- the archive -------------------------------------------------------------- */

/* torch.save names every record "<archive>/<record>"; data.pkl says which archive. */
static sdc_status find_pickle(ck_ctx *c, const sdc_zip_entry **pkl) {
    *pkl = NULL;
    for (size_t i = 0; i < c->zip.count; i++) {
        const sdc_zip_entry *e = &c->zip.entries[i];
        const size_t tail = sizeof "/data.pkl" - 1;
        if (e->name_len <= tail || memcmp(e->name + e->name_len - tail, "/data.pkl", tail) != 0) continue;
        if (memchr(e->name, '/', e->name_len - tail)) continue; /* nested: not the top record */
        if (*pkl) return sdc_fail(c->err, SDC_EFORMAT, "%s: archive holds more than one data.pkl", c->path);
        *pkl = e;
    }
    if (!*pkl)
        return sdc_fail(c->err, SDC_EFORMAT, "%s: zip has no <archive>/data.pkl: not a torch.save checkpoint", c->path);
    c->archive = (*pkl)->name;
    c->archive_len = (*pkl)->name_len - (sizeof "data.pkl" - 1); /* keeps the '/' */
    return SDC_OK;
}

static sdc_status check_byteorder(ck_ctx *c) {
    char name[SDC_ZIP_MAX_NAME + 16];
    snprintf(name, sizeof name, "%.*sbyteorder", (int)c->archive_len, c->archive);
    const sdc_zip_entry *e = sdc_zip_find(&c->zip, name);
    if (!e) return SDC_OK; /* older torch.save did not write it: those files are little-endian */
    const unsigned char *d;
    void *owned;
    SDC_TRY(sdc_zip_read(&c->zip, e, 16, &d, &owned, c->err));
    size_t n = (size_t)e->size;
    while (n && (d[n - 1] == '\n' || d[n - 1] == '\r' || d[n - 1] == ' ')) n--;
    int little = n == 6 && memcmp(d, "little", 6) == 0, big = n == 3 && memcmp(d, "big", 3) == 0;
    free(owned);
    if (big)
        return sdc_fail(c->err, SDC_EUNSUPPORTED, "%s: big-endian checkpoint (byteorder \"big\"); re-save it on a little-endian machine or convert to safetensors",
                        c->path);
    if (!little) return sdc_fail(c->err, SDC_EFORMAT, "%s: unknown byteorder record", c->path);
    return SDC_OK;
}

static sdc_status read_archive(ck_ctx *c, const sdc_mapped_file *m) {
    if (m->size == 0) return sdc_fail(c->err, SDC_EFORMAT, "%s: empty file, not a PyTorch checkpoint", c->path);
    if (!sdc_zip_has_magic(m->data, m->size)) {
        /* Before 1.6 torch.save wrote a bare pickle stream (PROTO opcode first). */
        if (m->size >= 2 && m->data[0] == 0x80 && m->data[1] >= 2 && m->data[1] <= 5)
            return sdc_fail(c->err, SDC_EUNSUPPORTED,
                            "%s: legacy (pre-1.6) PyTorch format; re-save with torch.save or convert to safetensors", c->path);
        return sdc_fail(c->err, SDC_EFORMAT, "%s: not a PyTorch checkpoint (not a zip archive)", c->path);
    }
    SDC_TRY(sdc_zip_open(&c->zip, c->path, m->data, m->size, c->err));
    const sdc_zip_entry *pe;
    SDC_TRY(find_pickle(c, &pe));
    /* torch.jit.save archives pickle the module object itself, whose class
     * would be refused as code: say what the file is instead. */
    char ts[SDC_ZIP_MAX_NAME + 16];
    snprintf(ts, sizeof ts, "%.*sconstants.pkl", (int)c->archive_len, c->archive);
    if (sdc_zip_find(&c->zip, ts))
        return sdc_fail(c->err, SDC_EUNSUPPORTED, "%s: TorchScript archive (torch.jit.save), not a state dict; save model.state_dict() with torch.save or convert to safetensors",
                        c->path);
    SDC_TRY(check_byteorder(c));
    const unsigned char *pkl;
    void *pkl_owned;
    SDC_TRY(sdc_zip_read(&c->zip, pe, SDC_PICKLE_MAX_BYTES, &pkl, &pkl_owned, c->err));
    const ck_storage **by_tensor = NULL;
    sdc_pickle pk;
    sdc_status s = sdc_pickle_load(&pk, pkl, (size_t)pe->size, c->path, c->err);
    if (s != SDC_OK) {
        free(pkl_owned);
        return s;
    }
    const sdc_pk_value *root = pk.root;
    if (root->kind != SDC_PK_DICT) {
        s = sdc_fail(c->err, SDC_EFORMAT, "%s: top level is a %s, not a dict of tensors", c->path, sdc_pk_kind_name(root->kind));
        goto done;
    }
    /* CompVis / Lightning: {"state_dict": {...}, "global_step": ..., "optimizer_states": ...} */
    const sdc_pk_value *sd = sdc_pk_dict_get(root, "state_dict");
    if (sd && sd->kind == SDC_PK_DICT) root = sd;
    if ((s = walk(c, root, 0, 0)) != SDC_OK) goto done;
    c->stores = calloc(c->nfound ? c->nfound : 1, sizeof *c->stores);
    if (!c->stores) {
        s = sdc_fail(c->err, SDC_ENOMEM, "%s: out of memory", c->path);
        goto done;
    }
    /* Storages first (so the copy budget knows the file's real size), then views. */
    by_tensor = calloc(c->nfound ? c->nfound : 1, sizeof *by_tensor);
    if (!by_tensor) {
        s = sdc_fail(c->err, SDC_ENOMEM, "%s: out of memory", c->path);
        goto done;
    }
    for (size_t i = 0; i < c->nfound && s == SDC_OK; i++) s = resolve_storage(c, &c->found[i], &by_tensor[i]);
    for (size_t i = 0; i < c->nfound && s == SDC_OK; i++) s = resolve_tensor(c, &c->found[i], by_tensor[i]);
    for (size_t i = 0; i < c->nfound && s == SDC_OK; i++) {
        const ck_tensor *f = &c->found[i];
        s = sdc_weights_add(c->w, f->name, f->name, f->t->dtype, f->t->ndim, f->t->shape, f->data, f->nbytes, f->file,
                            c->path, c->err);
    }
done:
    free(by_tensor);
    sdc_pickle_free(&pk);
    free(pkl_owned);
    return s;
}

sdc_status sdc_ckpt_read(const char *path, sdc_weights *w, sdc_error *err) {
    ck_ctx c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.err = err;
    c.w = w;
    SDC_TRY(sdc_weights_map_file(w, path, &c.file, err));
    sdc_status s = read_archive(&c, &w->files[c.file].map);
    for (size_t i = 0; i < c.nfound; i++) free(c.found[i].name);
    free(c.found);
    free(c.stores);
    sdc_strmap_free(&c.store_index);
    sdc_zip_close(&c.zip);
    return s;
}
