/* Training images from disk: PNG, JPEG and WebP to 8-bit RGB, the format
 * told by the file's first bytes (never by its extension).
 *
 * The pixels are what PIL's Image.open(path).convert("RGB") gives, as
 * diffusers' training scripts read them: grey replicated, palette expanded,
 * alpha dropped (not composited over a background). JPEG is decoded as PIL
 * does (libjpeg-turbo, ISLOW IDCT, fancy upsampling; CMYK/YCCK through PIL's
 * CMYK->RGB formula). Animated WebP is refused (PIL would take frame 0).
 *
 * EXIF orientation: ignored by default, as train_text_to_image*.py do;
 * train_dreambooth*.py apply it (PIL's ImageOps.exif_transpose). With
 * apply_exif, the orientation tag of a JPEG's APP1 Exif segment is applied;
 * EXIF in PNG (eXIf) and WebP (EXIF chunk) is not read (PIL would apply it).
 *
 * Limits, checked from the header before any pixel buffer is allocated:
 * w, h <= SDC_IMAGE_MAX_SIDE and w*h <= SDC_IMAGE_MAX_PIXELS (decompression
 * bombs) -> SDC_ELIMIT; so is a progressive JPEG of more than
 * SDC_IMAGE_MAX_JPEG_SCANS scans (each scan is a pass over the whole image,
 * so a small file of thousands of empty scans would take minutes; encoders
 * write about 10). Corrupt or truncated files -> SDC_EFORMAT. Each message
 * names the file. */
#ifndef SDC_DATA_IMAGE_DECODE_H
#define SDC_DATA_IMAGE_DECODE_H

#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_IMAGE_MAX_SIDE 16384
#define SDC_IMAGE_MAX_PIXELS (64ll << 20)
#define SDC_IMAGE_MAX_JPEG_SCANS 1000

/* Interleaved RGB, h rows of w pixels, rgb malloc'd (w*h*3 bytes). */
typedef struct sdc_image {
    int w, h;
    uint8_t *rgb;
} sdc_image;

typedef enum sdc_image_format {
    SDC_IMAGE_UNKNOWN = 0,
    SDC_IMAGE_PNG,
    SDC_IMAGE_JPEG,
    SDC_IMAGE_WEBP,
} sdc_image_format;

/* The format from a file's first bytes (n of them; 12 suffice). */
sdc_image_format sdc_image_sniff(const uint8_t *head, size_t n);

/* Decodes path into *out (EXIF orientation ignored). On failure *out is
 * {0, 0, NULL}. */
sdc_status sdc_image_load(const char *path, sdc_image *out, sdc_error *err);
/* As sdc_image_load; apply_exif != 0 applies a JPEG's EXIF orientation as
 * PIL's ImageOps.exif_transpose does. */
sdc_status sdc_image_load_ex(const char *path, int apply_exif, sdc_image *out, sdc_error *err);

void sdc_image_free(sdc_image *im);

#ifdef __cplusplus
}
#endif

#endif
