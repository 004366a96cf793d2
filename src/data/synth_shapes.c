#include "data/synth_shapes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/rng.h"
#include "data/png.h"

static const char *const k_shapes[SDC_SHAPE_COUNT] = {"circle", "square", "triangle", "star",
                                                       "cross",  "ellipse", "polygon"};

static const struct {
    const char *name;
    uint8_t rgb[3];
} k_colors[SDC_COLOR_COUNT] = {
    {"red", {220, 40, 40}},    {"orange", {245, 140, 20}},  {"yellow", {245, 215, 40}}, {"green", {40, 165, 70}},
    {"blue", {40, 80, 220}},   {"purple", {135, 55, 185}},  {"white", {240, 240, 240}}, {"black", {25, 25, 25}},
};

const char *sdc_synth_shape_name(int shape) { return shape >= 0 && shape < SDC_SHAPE_COUNT ? k_shapes[shape] : "?"; }
const char *sdc_synth_color_name(int color) {
    return color >= 0 && color < SDC_COLOR_COUNT ? k_colors[color].name : "?";
}

/* ---- scenes -------------------------------------------------------------------------------------------------- */

/* One stream per (seed, purpose, index): splitmix64-style mixing of the key. */
static void scene_rng(sdc_rng *r, uint64_t seed, uint64_t purpose, uint64_t index) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ (purpose << 56) ^ (index * 0xD1B54A32D192ED03ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    sdc_rng_init(r, z ^ (z >> 31));
}

static float uniform(sdc_rng *r, float lo, float hi) { return lo + (hi - lo) * sdc_rng_uniform(r); }

/* A centre that keeps a shape of radius `size` inside the image, jittered
 * over most of the free room. */
static void place(sdc_rng *r, sdc_synth_scene *s) {
    float room = 0.5f - 1.05f * s->size - 0.02f;
    if (room < 0) room = 0;
    s->cx = 0.5f + uniform(r, -room, room);
    s->cy = 0.5f + uniform(r, -room, room);
}

void sdc_synth_scene_base(uint64_t seed, uint64_t index, sdc_synth_scene *s) {
    sdc_rng r;
    scene_rng(&r, seed, 1, index);
    memset(s, 0, sizeof *s);
    s->shape = (int)sdc_rng_below(&r, SDC_SYNTH_BASE_SHAPES);
    s->fill = (int)sdc_rng_below(&r, SDC_COLOR_COUNT);
    s->fill2 = s->fill;
    s->pattern = SDC_FILL_SOLID;
    s->bg = (s->fill + 1 + (int)sdc_rng_below(&r, SDC_COLOR_COUNT - 1)) % SDC_COLOR_COUNT;
    s->gradient = sdc_rng_uniform(&r) < 0.25f;
    s->large = (int)sdc_rng_below(&r, 2);
    s->size = s->large ? uniform(&r, 0.30f, 0.40f) : uniform(&r, 0.17f, 0.24f);
    place(&r, s);
    s->angle = s->shape == SDC_SHAPE_CIRCLE ? 0.0f : uniform(&r, -0.3f, 0.3f);
    s->caption = (sdc_rng_uniform(&r) < 0.5f ? SDC_CAPTION_SIZE : 0) | (sdc_rng_uniform(&r) < 0.15f ? SDC_CAPTION_CLASS : 0) |
                 (sdc_rng_uniform(&r) < 0.1f ? SDC_CAPTION_NONE : 0);
}

void sdc_synth_scene_subject(uint64_t seed, uint64_t index, sdc_synth_scene *s) {
    sdc_rng r;
    scene_rng(&r, seed, 2, index);
    memset(s, 0, sizeof *s);
    s->shape = SDC_SHAPE_CROSS;
    s->fill = s->fill2 = SDC_COLOR_PURPLE;
    s->pattern = SDC_FILL_SOLID;
    s->bg = SDC_COLOR_WHITE;
    s->large = 1;
    /* near the middle, nearly upright: from six images a few hundred steps
     * learn one crisp cross, where wider poses average into a blob */
    s->size = uniform(&r, 0.33f, 0.40f);
    s->cx = 0.5f + uniform(&r, -0.04f, 0.04f);
    s->cy = 0.5f + uniform(&r, -0.04f, 0.04f);
    s->angle = uniform(&r, -0.08f, 0.08f);
}

void sdc_synth_scene_texture(uint64_t seed, uint64_t index, sdc_synth_scene *s) {
    sdc_rng r;
    scene_rng(&r, seed, 3, index);
    memset(s, 0, sizeof *s);
    /* ellipses, polygons and the base shapes, never the cross */
    static const int shapes[] = {SDC_SHAPE_ELLIPSE, SDC_SHAPE_ELLIPSE, SDC_SHAPE_POLYGON, SDC_SHAPE_POLYGON,
                                 SDC_SHAPE_CIRCLE,  SDC_SHAPE_SQUARE,  SDC_SHAPE_TRIANGLE, SDC_SHAPE_STAR};
    s->shape = shapes[sdc_rng_below(&r, (uint32_t)(sizeof shapes / sizeof *shapes))];
    s->fill = (int)sdc_rng_below(&r, SDC_COLOR_COUNT);
    s->fill2 = (s->fill + 1 + (int)sdc_rng_below(&r, SDC_COLOR_COUNT - 1)) % SDC_COLOR_COUNT;
    s->bg = (int)sdc_rng_below(&r, SDC_COLOR_COUNT);
    if (s->bg == s->fill) s->bg = (s->bg + 1 + (int)sdc_rng_below(&r, SDC_COLOR_COUNT - 1)) % SDC_COLOR_COUNT;
    float u = sdc_rng_uniform(&r);
    s->pattern = u < 0.3f ? SDC_FILL_SOLID : u < 0.7f ? SDC_FILL_CHECKER : SDC_FILL_STRIPES;
    s->cells = uniform(&r, 0.8f, 2.5f);
    s->gradient = sdc_rng_uniform(&r) < 0.2f;
    s->size = uniform(&r, 0.17f, 0.42f);
    s->large = s->size > 0.28f;
    place(&r, s);
    s->angle = uniform(&r, -3.14159f, 3.14159f);
    s->aspect = uniform(&r, 0.45f, 1.0f);
    s->nverts = 3 + (int)sdc_rng_below(&r, SDC_SYNTH_MAX_VERTS - 2);
    for (int k = 0; k < s->nverts; k++) s->verts[k] = uniform(&r, 0.45f, 1.05f);
}

/* ---- rendering ------------------------------------------------------------------------------------------------- */

/* Even-odd point-in-polygon test. */
static int in_polygon(float u, float v, const float (*p)[2], int n) {
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        if ((p[i][1] > v) != (p[j][1] > v) && u < (p[j][0] - p[i][0]) * (v - p[i][1]) / (p[j][1] - p[i][1]) + p[i][0])
            in = !in;
    }
    return in;
}

/* Inside the shape, in its own frame: (u, v) in units of the radius, v down. */
static int inside(int shape, float u, float v) {
    switch (shape) {
    case SDC_SHAPE_CIRCLE: return u * u + v * v <= 1.0f;
    case SDC_SHAPE_SQUARE: return fabsf(u) <= 0.82f && fabsf(v) <= 0.82f;
    case SDC_SHAPE_TRIANGLE: {
        /* equilateral, pointing up, circumradius 1.15, centred on its centroid */
        static const float tri[3][2] = {{0.0f, -1.15f}, {-0.996f, 0.575f}, {0.996f, 0.575f}};
        return in_polygon(u, v, tri, 3);
    }
    case SDC_SHAPE_STAR: {
        /* five points: outer radius 1.1, inner 0.45, the first pointing up */
        float star[10][2];
        for (int k = 0; k < 10; k++) {
            double a = -M_PI / 2 + k * M_PI / 5, rad = k % 2 ? 0.45 : 1.1;
            star[k][0] = (float)(rad * cos(a));
            star[k][1] = (float)(rad * sin(a));
        }
        return in_polygon(u, v, (const float(*)[2])star, 10);
    }
    case SDC_SHAPE_CROSS:
        /* a plus sign: two bars 0.6 wide and 1.9 long (8 px and 24 px at
         * radius 0.4 of 32 px: two and six latent pixels) */
        return (fabsf(u) <= 0.3f && fabsf(v) <= 0.95f) || (fabsf(v) <= 0.3f && fabsf(u) <= 0.95f);
    default: return 0;
    }
}

/* The texture world's shapes, which carry their own parameters. */
static int inside_scene(const sdc_synth_scene *s, float u, float v) {
    if (s->shape == SDC_SHAPE_ELLIPSE) return u * u + (v * v) / (s->aspect * s->aspect) <= 1.0f;
    if (s->shape == SDC_SHAPE_POLYGON) {
        float poly[SDC_SYNTH_MAX_VERTS][2];
        for (int k = 0; k < s->nverts; k++) {
            double a = -M_PI / 2 + 2 * M_PI * k / s->nverts;
            poly[k][0] = (float)(s->verts[k] * cos(a));
            poly[k][1] = (float)(s->verts[k] * sin(a));
        }
        return in_polygon(u, v, (const float(*)[2])poly, s->nverts);
    }
    return inside(s->shape, u, v);
}

/* Which of the two fill colours (0 or 1) at (u, v) in the shape's frame. */
static int pattern_at(const sdc_synth_scene *s, float u, float v) {
    switch (s->pattern) {
    case SDC_FILL_CHECKER: return ((int)floorf(u * s->cells + 64.0f) + (int)floorf(v * s->cells + 64.0f)) & 1;
    case SDC_FILL_STRIPES: return (int)floorf(u * s->cells + 64.0f) & 1;
    default: return 0;
    }
}

void sdc_synth_render(const sdc_synth_scene *s, int res, uint8_t *rgb) {
    enum { SS = 4 }; /* 4×4 samples per pixel */
    const float ca = cosf(s->angle), sa = sinf(s->angle), inv = 1.0f / s->size;
    const uint8_t *bg = k_colors[s->bg].rgb, *f1 = k_colors[s->fill].rgb;
    const uint8_t *f2 = k_colors[s->fill2].rgb;
    for (int py = 0; py < res; py++) {
        for (int px = 0; px < res; px++) {
            float acc[3] = {0, 0, 0};
            for (int sy = 0; sy < SS; sy++) {
                for (int sx = 0; sx < SS; sx++) {
                    float x = (px + (sx + 0.5f) / SS) / res, y = (py + (sy + 0.5f) / SS) / res;
                    float dx = (x - s->cx) * inv, dy = (y - s->cy) * inv;
                    float u = ca * dx + sa * dy, v = -sa * dx + ca * dy; /* rotate by −angle */
                    const uint8_t *c;
                    float shade = s->gradient ? 1.0f - 0.45f * y : 1.0f;
                    if (inside_scene(s, u, v)) {
                        c = pattern_at(s, u, v) ? f2 : f1;
                        shade = 1.0f;
                    } else {
                        c = bg;
                    }
                    for (int k = 0; k < 3; k++) acc[k] += shade * c[k];
                }
            }
            for (int k = 0; k < 3; k++) rgb[3 * ((size_t)py * res + px) + k] = (uint8_t)(acc[k] / (SS * SS) + 0.5f);
        }
    }
}

void sdc_synth_caption(const sdc_synth_scene *s, char *buf, size_t cap) {
    if (s->caption & SDC_CAPTION_NONE) {
        if (cap) buf[0] = '\0';
        return;
    }
    char what[96];
    if (s->pattern != SDC_FILL_SOLID)
        snprintf(what, sizeof what, "%s and %s %s %s", k_colors[s->fill].name, k_colors[s->fill2].name,
                 s->pattern == SDC_FILL_CHECKER ? "checkered" : "striped", k_shapes[s->shape]);
    else
        snprintf(what, sizeof what, "%s%s %s", s->caption & SDC_CAPTION_SIZE ? (s->large ? "large " : "small ") : "",
                 k_colors[s->fill].name, s->caption & SDC_CAPTION_CLASS ? "shape" : k_shapes[s->shape]);
    snprintf(buf, cap, "a %s on a %s %sbackground", what, k_colors[s->bg].name, s->gradient ? "gradient " : "");
}

/* ---- data sets ------------------------------------------------------------------------------------------------- */

sdc_status sdc_synth_write_set(const char *dir, sdc_synth_kind kind, int count, int res, uint64_t seed,
                               sdc_error *err) {
    if (count < 1 || count > 99999 || res < 8 || res > 4096)
        return sdc_fail(err, SDC_EINVAL, "%s: need 1 to 99999 images of 8 to 4096 pixels (got %d of %d)", dir, count,
                        res);
    SDC_TRY(sdc_mkdirs(dir, err));
    uint8_t *rgb = malloc((size_t)res * res * 3);
    size_t meta_cap = (size_t)count * 128 + 1, meta_len = 0;
    char *meta = kind == SDC_SYNTH_BASE ? malloc(meta_cap) : NULL;
    if (!rgb || (kind == SDC_SYNTH_BASE && !meta)) {
        free(rgb), free(meta);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    }
    size_t plen = strlen(dir) + 32;
    char *path = malloc(plen);
    sdc_status st = path ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; st == SDC_OK && i < count; i++) {
        sdc_synth_scene s;
        if (kind == SDC_SYNTH_BASE) sdc_synth_scene_base(seed, (uint64_t)i, &s);
        else if (kind == SDC_SYNTH_TEXTURE) sdc_synth_scene_texture(seed, (uint64_t)i, &s);
        else sdc_synth_scene_subject(seed, (uint64_t)i, &s);
        sdc_synth_render(&s, res, rgb);
        snprintf(path, plen, "%s/%05d.png", dir, i);
        st = sdc_png_write(path, rgb, res, res, 3, NULL, NULL, 0, err);
        if (st == SDC_OK && meta) {
            char caption[160];
            sdc_synth_caption(&s, caption, sizeof caption);
            /* captions are lowercase words and spaces: nothing to escape */
            meta_len += (size_t)snprintf(meta + meta_len, meta_cap - meta_len,
                                         "{\"file_name\": \"%05d.png\", \"text\": \"%s\"}\n", i, caption);
        }
    }
    if (st == SDC_OK && meta) {
        snprintf(path, plen, "%s/metadata.jsonl", dir);
        st = sdc_write_file_atomic(path, meta, meta_len, err);
    }
    free(path), free(rgb), free(meta);
    return st;
}
