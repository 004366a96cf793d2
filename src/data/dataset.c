/* Dataset items, seeded orders and sample loading (scanning: dataset_scan.c). */
#include "data/dataset.h"

#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/rng.h"
#include "data/image_decode.h"
#include "data/transforms.h"

void sdc_dataset_init(sdc_dataset *ds) { memset(ds, 0, sizeof *ds); }

void sdc_dataset_free(sdc_dataset *ds) {
    for (int64_t i = 0; i < ds->n; i++) {
        free(ds->items[i].path);
        free(ds->items[i].caption);
    }
    free(ds->items);
    sdc_dataset_init(ds);
}

sdc_status sdc_dataset_push(sdc_dataset *ds, const char *path, const char *caption, sdc_error *err) {
    if (ds->n >= SDC_DATASET_MAX_ITEMS)
        return sdc_fail(err, SDC_ELIMIT, "%s: more than %lld dataset items", path, (long long)SDC_DATASET_MAX_ITEMS);
    if (!caption) caption = "";
    size_t clen = strlen(caption);
    if (clen > SDC_DATASET_MAX_CAPTION)
        return sdc_fail(err, SDC_ELIMIT, "%s: caption of %zu bytes (limit %d)", path, clen, SDC_DATASET_MAX_CAPTION);
    if (ds->n == ds->cap) {
        int64_t cap = ds->cap ? ds->cap * 2 : 64;
        sdc_dataset_item *it = realloc(ds->items, (size_t)cap * sizeof *it);
        if (!it) return sdc_fail(err, SDC_ENOMEM, "dataset: out of memory for %lld items", (long long)cap);
        ds->items = it;
        ds->cap = cap;
    }
    char *p = sdc_strdup(path), *c = sdc_strdup(caption);
    if (!p || !c) {
        free(p);
        free(c);
        return sdc_fail(err, SDC_ENOMEM, "dataset: out of memory");
    }
    ds->items[ds->n].path = p;
    ds->items[ds->n].caption = c;
    ds->n++;
    return SDC_OK;
}

/* splitmix64's finaliser: a bijective avalanche so nearby (seed, epoch,
 * index) triples give unrelated Philox keys. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Purposes, so the selection, epoch-order and sample streams never overlap. */
enum { PURPOSE_SELECT = 1, PURPOSE_EPOCH = 2, PURPOSE_SAMPLE = 3 };

static uint64_t stream_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b) {
    uint64_t k = mix64(seed ^ 0x5DC0DA7A5E7ull);
    k = mix64(k ^ (purpose * 0x9E3779B97F4A7C15ull));
    k = mix64(k ^ a);
    return mix64(k ^ (b * 0xD1B54A32D192ED03ull));
}

/* Fisher-Yates (Durstenfeld): for i = n-1..1 swap perm[i] with perm[j],
 * j uniform in [0, i]. n <= SDC_DATASET_MAX_ITEMS fits sdc_rng_below. */
static void shuffle(int64_t *perm, int64_t n, uint64_t key) {
    sdc_rng r;
    sdc_rng_init(&r, key);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)sdc_rng_below(&r, (uint32_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void sdc_dataset_epoch_order(const sdc_dataset *ds, uint64_t seed, uint64_t epoch, int64_t *perm) {
    shuffle(perm, ds->n, stream_key(seed, PURPOSE_EPOCH, epoch, 0));
}

void sdc_dataset_select(sdc_dataset *ds, int64_t n, uint64_t seed) {
    if (n <= 0 || n >= ds->n) return;
    int64_t *perm = malloc((size_t)ds->n * sizeof *perm);
    sdc_dataset_item *kept = malloc((size_t)n * sizeof *kept);
    SDC_ASSERT(perm && kept); /* at most 10M small entries */
    shuffle(perm, ds->n, stream_key(seed, PURPOSE_SELECT, 0, 0));
    char *taken = calloc((size_t)ds->n, 1);
    SDC_ASSERT(taken);
    for (int64_t i = 0; i < n; i++) {
        kept[i] = ds->items[perm[i]];
        taken[perm[i]] = 1;
    }
    for (int64_t i = 0; i < ds->n; i++)
        if (!taken[i]) {
            free(ds->items[i].path);
            free(ds->items[i].caption);
        }
    memcpy(ds->items, kept, (size_t)n * sizeof *kept);
    ds->n = n;
    free(taken);
    free(kept);
    free(perm);
}

int64_t sdc_dataset_num_batches(int64_t n, int64_t batch_size, int drop_last) {
    if (n <= 0 || batch_size <= 0) return 0;
    return drop_last ? n / batch_size : (n + batch_size - 1) / batch_size;
}

sdc_status sdc_dataset_load_sample(const sdc_dataset *ds, int64_t index, const sdc_sample_opts *o, uint64_t seed,
                                   uint64_t epoch, float *out_chw, sdc_sample_info *info, sdc_error *err) {
    SDC_ASSERT(index >= 0 && index < ds->n);
    const char *path = ds->items[index].path;
    if (o->resolution < 1) return sdc_fail(err, SDC_EINVAL, "resolution %d: must be positive", o->resolution);
    sdc_image im;
    SDC_TRY(sdc_image_load_ex(path, o->apply_exif, &im, err));
    int rw, rh, ctop, cleft;
    sdc_status s = sdc_resize_geometry(im.w, im.h, o->resolution, &rw, &rh, &ctop, &cleft, err);
    if (s != SDC_OK) {
        sdc_image_free(&im);
        sdc_error_prefix(err, "%s", path);
        return s;
    }
    /* Three draws in a fixed order (see the header). rh, rw >= resolution
     * since the shorter side becomes resolution. */
    sdc_rng r;
    sdc_rng_init(&r, stream_key(seed, PURPOSE_SAMPLE, epoch, (uint64_t)index));
    int rtop = (int)sdc_rng_below(&r, (uint32_t)(rh - o->resolution + 1));
    int rleft = (int)sdc_rng_below(&r, (uint32_t)(rw - o->resolution + 1));
    int flip = sdc_rng_uniform(&r) < 0.5f;
    if (!o->random_flip) flip = 0;
    int top = o->center_crop ? ctop : rtop, left = o->center_crop ? cleft : rleft;
    /* SDXL order flips then crops at left: the same pixels as cropping the
     * unflipped image at rw - res - left and flipping (transforms.h). The
     * center offset is computed on the flipped image too, so it is passed
     * explicitly, never recomputed on the unflipped one. */
    int pass_left = (o->flip_before_crop && flip) ? rw - o->resolution - left : left;
    s = sdc_train_transform(&im, o->resolution, 0, top, pass_left, flip, out_chw, NULL, NULL, err);
    if (info) {
        info->orig_h = im.h;
        info->orig_w = im.w;
        info->crop_top = top;
        info->crop_left = left;
        info->flipped = flip;
    }
    sdc_image_free(&im);
    if (s != SDC_OK) sdc_error_prefix(err, "%s", path);
    return s;
}
