/* Dataset scanning: an imagefolder's metadata.jsonl (sdc_dataset_scan_imagefolder)
 * with a few image files present, so lines that name them get through; the
 * caption column is "text", or "alt" when the input's first byte is odd.
 * The same bytes also serve as a kohya caption file (a.txt beside a.png,
 * sdc_dataset_scan_captioned). Captions that come back are tokenized, as
 * training does. */
#include "data/clip_tokenizer.h"
#include "data/dataset.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static sdc_clip_tokenizer *tok;
    sdc_error err;
    if (!tok) {
        const char *dirs[] = {"ds", "ds/sub", "kohya"};
        for (size_t i = 0; i < 3; i++) mkdir(fuzz_path(dirs[i]), 0755);
        const char *files[] = {"ds/a.png", "ds/b.jpg", "ds/sub/c.png", "kohya/a.png"};
        for (size_t i = 0; i < 4; i++) fuzz_write(fuzz_path(files[i]), "x", 1);
        if (sdc_clip_tokenizer_default(NULL, &tok, &err) != SDC_OK) abort();
    }
    if (n == 0) return 0;
    const char *col = (data[0] & 1) ? "alt" : "text";
    fuzz_write(fuzz_path("ds/metadata.jsonl"), data + 1, n - 1);
    fuzz_write(fuzz_path("kohya/a.txt"), data + 1, n - 1);
    int32_t ids[77];
    for (int layout = 0; layout < 2; layout++) {
        sdc_dataset ds;
        sdc_dataset_init(&ds);
        sdc_status s = layout == 0 ? sdc_dataset_scan_imagefolder(&ds, fuzz_path("ds"), col, &err)
                                   : sdc_dataset_scan_captioned(&ds, fuzz_path("kohya"), NULL, 0, NULL, &err);
        if (s == SDC_OK)
            for (int64_t i = 0; i < ds.n; i++) (void)sdc_clip_tokenize(tok, ds.items[i].caption, ids, NULL, &err);
        sdc_dataset_free(&ds);
    }
    return 0;
}
