/* A synthetic world of coloured shapes for the demo model: circles,
 * squares, triangles and stars in eight colours and two sizes, on plain or
 * gradient backgrounds, each with a caption such as
 * "a large red circle on a blue background". The demo's DreamBooth subject
 * lives outside that world: a purple cross (a plus sign), a shape the base
 * model never sees, photographed on white. A cross is chosen because its
 * arms are two latent pixels wide and reach near the edge of a 4×8×8
 * latent, so it differs from every base shape in most of its latents; a
 * heart, too close to a circle at that size, is not learned in minutes.
 *
 * Everything is deterministic: scene i of a set is drawn from a Philox
 * stream keyed by (seed, i), so a set does not depend on how many scenes
 * are drawn or in what order. Images are rendered with 4×4 supersampling
 * (anti-aliased edges), written as PNGs in diffusers' imagefolder layout
 * (metadata.jsonl with "file_name" and "text") that `sdc train` reads. */
#ifndef SDC_DATA_SYNTH_SHAPES_H
#define SDC_DATA_SYNTH_SHAPES_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum sdc_synth_shape {
    SDC_SHAPE_CIRCLE,
    SDC_SHAPE_SQUARE,
    SDC_SHAPE_TRIANGLE,
    SDC_SHAPE_STAR,
    SDC_SHAPE_CROSS,   /* held out of the base world: the DreamBooth subject's */
    SDC_SHAPE_ELLIPSE, /* the texture world's (for the VAE) */
    SDC_SHAPE_POLYGON,
    SDC_SHAPE_COUNT
} sdc_synth_shape;
#define SDC_SYNTH_BASE_SHAPES 4 /* circle .. star */

typedef enum sdc_synth_color {
    SDC_COLOR_RED,
    SDC_COLOR_ORANGE,
    SDC_COLOR_YELLOW,
    SDC_COLOR_GREEN,
    SDC_COLOR_BLUE,
    SDC_COLOR_PURPLE,
    SDC_COLOR_WHITE,
    SDC_COLOR_BLACK,
    SDC_COLOR_COUNT
} sdc_synth_color;

/* Caption styles (bits of sdc_synth_scene.caption) */
#define SDC_CAPTION_SIZE 1  /* name the size: "a large red circle ..." */
#define SDC_CAPTION_CLASS 2 /* say "shape" instead of the shape's name */
/* No caption at all: one scene in ten, as Stable Diffusion's training drops
 * 10% of captions, so that classifier-free guidance has an unconditional
 * prediction to steer away from (diffusers' scripts never drop captions) */
#define SDC_CAPTION_NONE 4

typedef enum sdc_synth_pattern { SDC_FILL_SOLID, SDC_FILL_CHECKER, SDC_FILL_STRIPES } sdc_synth_pattern;

#define SDC_SYNTH_MAX_VERTS 8

typedef struct sdc_synth_scene {
    int shape;          /* sdc_synth_shape */
    int fill, fill2;    /* sdc_synth_color; fill2 is the pattern's second colour */
    int pattern;        /* sdc_synth_pattern */
    int bg;             /* background colour */
    int gradient;       /* the background darkens towards the bottom */
    int large;          /* size class */
    float cx, cy, size; /* centre and radius, in units of the image side */
    float angle;        /* rotation, radians */
    float cells;        /* checker cells / stripe periods per unit radius */
    float aspect;       /* ellipse: height / width */
    int nverts;         /* polygon: vertices at equal angles, radii verts[] */
    float verts[SDC_SYNTH_MAX_VERTS];
    int caption;        /* SDC_CAPTION_* bits */
} sdc_synth_scene;

const char *sdc_synth_shape_name(int shape);
const char *sdc_synth_color_name(int color);

/* Scene `index` of the base world (a base-world shape, a fill colour, a
 * different background colour, size, place, rotation, caption style),
 * drawn from the stream keyed by (seed, index). */
void sdc_synth_scene_base(uint64_t seed, uint64_t index, sdc_synth_scene *s);
/* Scene `index` of the subject: the purple cross, large, of varying size,
 * place and tilt, on a plain white background (the instance prompt names
 * the background, so the LoRA has only the cross itself to learn). */
void sdc_synth_scene_subject(uint64_t seed, uint64_t index, sdc_synth_scene *s);

/* Scene `index` of the texture world (the VAE's extra images). */
void sdc_synth_scene_texture(uint64_t seed, uint64_t index, sdc_synth_scene *s);

/* Renders s into rgb (res × res × 3 bytes, row-major). */
void sdc_synth_render(const sdc_synth_scene *s, int res, uint8_t *rgb);
/* "a [large|small] <fill> <shape|"shape"> on a <bg> [gradient ]background",
 * or "" (SDC_CAPTION_NONE); the subject's caption is "a purple cross on a
 * white background". */
void sdc_synth_caption(const sdc_synth_scene *s, char *buf, size_t cap);

typedef enum sdc_synth_kind {
    SDC_SYNTH_BASE,    /* the base world, with metadata.jsonl captions */
    SDC_SYNTH_SUBJECT, /* the subject's images only (DreamBooth instance images) */
    SDC_SYNTH_TEXTURE, /* the texture world (the VAE's extra images), no captions */
} sdc_synth_kind;

/* Writes count images "00000.png" ... (res × res) into dir (created), and
 * for SDC_SYNTH_BASE dir/metadata.jsonl, every file written atomically.
 * Errors name the file. */
sdc_status sdc_synth_write_set(const char *dir, sdc_synth_kind kind, int count, int res, uint64_t seed,
                               sdc_error *err);

#endif
