/* Training sets: a list of (image path, caption) items scanned from disk in
 * the layouts diffusers' scripts and kohya read, a seeded per-epoch order,
 * and one sample loaded as the scripts' transforms give it.
 *
 * Layouts (dataset_scan.c):
 *   imagefolder  --train_data_dir DIR, or --dataset_name given as a local
 *                path (datasets' "imagefolder" builder): DIR/metadata.jsonl
 *                pairs file_name (relative to DIR) with a caption column;
 *                without it, every image under DIR (recursive) with "".
 *   captioned    kohya: an image plus "name<ext>" beside it (first line,
 *                whitespace-trimmed, as kohya's read_caption); no file -> "".
 *   images       DreamBooth: every image in a directory (not recursive, as
 *                Path.iterdir()) with one fixed prompt; used for
 *                --instance_data_dir and --class_data_dir.
 * "Image" means a name ending in .png/.jpg/.jpeg/.webp (any case) - the
 * formats sdc_image_load decodes; names starting with '.' are skipped.
 *
 * Items are sorted by the byte order of their path relative to DIR, so the
 * result never depends on readdir order; shuffles come after.
 *
 * Randomness: every draw comes from a Philox stream keyed by a hash of
 * (seed, purpose, epoch[, item index]), so epoch e's order and item i's crop
 * and flip in epoch e are computed directly - no replay on resume, and no
 * dependence on batch composition or thread count. */
#ifndef SDC_DATA_DATASET_H
#define SDC_DATA_DATASET_H

#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_DATASET_MAX_ITEMS 10000000ll   /* items in one dataset */
#define SDC_DATASET_MAX_CAPTION (64 << 10) /* bytes in one caption */
#define SDC_DATASET_MAX_LINE (1 << 20)     /* bytes in one metadata.jsonl line */

typedef struct sdc_dataset_item {
    char *path;    /* full path (DIR joined with the relative name) */
    char *caption; /* UTF-8, never NULL */
} sdc_dataset_item;

typedef struct sdc_dataset {
    sdc_dataset_item *items;
    int64_t n, cap;
} sdc_dataset;

void sdc_dataset_init(sdc_dataset *ds);
void sdc_dataset_free(sdc_dataset *ds);
/* Appends a copy of (path, caption); checks the item and caption limits. */
sdc_status sdc_dataset_push(sdc_dataset *ds, const char *path, const char *caption, sdc_error *err);

/* --- scanning (dataset_scan.c); each appends to ds, which may be fresh --- */

/* diffusers imagefolder. caption_column NULL means "text". With
 * metadata.jsonl: one object per non-blank line; errors name the file and
 * line for bad JSON, a missing/non-string caption column (a list of strings
 * gives its first, as the scripts' non-training path does), a file_name
 * that is missing or not a file, a line that is not UTF-8, and (SDC_ELIMIT)
 * a line longer than SDC_DATASET_MAX_LINE, checked before it is parsed. Without it: all images, caption "".
 * An empty result is an error (SDC_ENOTFOUND), as is a missing DIR. */
sdc_status sdc_dataset_scan_imagefolder(sdc_dataset *ds, const char *dir, const char *caption_column,
                                        sdc_error *err);

/* kohya: caption_ext like ".txt" or ".caption"; NULL tries ".txt" then
 * ".caption". Caption files must be UTF-8 (a leading BOM is dropped).
 * *n_uncaptioned (may be NULL) receives how many images had no caption
 * file; a warning with that count is logged once. */
sdc_status sdc_dataset_scan_captioned(sdc_dataset *ds, const char *dir, const char *caption_ext, int recursive,
                                      int64_t *n_uncaptioned, sdc_error *err);

/* DreamBooth: all images directly in dir, caption = prompt (NULL -> "").
 * allow_missing != 0 (the class dir before generation): a missing or empty
 * dir adds nothing and is not an error. */
sdc_status sdc_dataset_scan_images(sdc_dataset *ds, const char *dir, const char *prompt, int allow_missing,
                                   sdc_error *err);

/* How many class images must be generated: max(0, num_class_images -
 * images in class_dir) (a missing dir counts 0), as train_dreambooth.py. */
sdc_status sdc_dataset_class_images_missing(const char *class_dir, int64_t num_class_images, int64_t *missing,
                                            sdc_error *err);

/* --- order and selection (dataset.c) --- */

/* --max_train_samples: as datasets' shuffle(seed).select(range(n)) - a
 * seeded permutation of the sorted items, of which the first n are kept
 * (in that shuffled order). n <= 0 or n >= ds->n keeps everything as is. */
void sdc_dataset_select(sdc_dataset *ds, int64_t n, uint64_t seed);

/* Epoch e's order: perm[0..ds->n) is a Fisher-Yates permutation of
 * 0..ds->n-1 drawn from a stream keyed by (seed, epoch). */
void sdc_dataset_epoch_order(const sdc_dataset *ds, uint64_t seed, uint64_t epoch, int64_t *perm);

/* Batches per epoch: ceil(n / batch) (torch DataLoader's drop_last=False,
 * the scripts' setting), or floor with drop_last. */
int64_t sdc_dataset_num_batches(int64_t n, int64_t batch_size, int drop_last);

/* --- one sample (dataset.c) --- */

typedef struct sdc_sample_opts {
    int resolution;       /* --resolution */
    int center_crop;      /* --center_crop; else RandomCrop */
    int random_flip;      /* --random_flip: p = 0.5 */
    int flip_before_crop; /* SDXL scripts: flip the resized image, then crop
                           * (crop_left is then in flipped coordinates) */
    int apply_exif;       /* train_dreambooth*.py: exif_transpose */
} sdc_sample_opts;

typedef struct sdc_sample_info {
    int orig_h, orig_w;        /* decoded size (SDXL original_size) */
    int crop_top, crop_left;   /* SDXL crop_top_left, in resized pixels */
    int flipped;
} sdc_sample_info;

/* Loads item `index`: decode, resize (shorter side -> resolution), crop,
 * flip, normalise into out_chw (3 * resolution^2 floats in [-1, 1]).
 * Draws, from the stream keyed by (seed, epoch, index), always in this
 * order: crop top in [0, rh-res], crop left in [0, rw-res], flip coin
 * (uniform < 0.5); unused draws are still taken so the stream is fixed.
 * Errors name the image. info may be NULL. */
sdc_status sdc_dataset_load_sample(const sdc_dataset *ds, int64_t index, const sdc_sample_opts *opts,
                                   uint64_t seed, uint64_t epoch, float *out_chw, sdc_sample_info *info,
                                   sdc_error *err);

#ifdef __cplusplus
}
#endif

#endif
