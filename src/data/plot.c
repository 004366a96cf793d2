#include "data/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/png.h"

#define PW 640
#define PH 320
#define ML 8 /* margins */
#define MT 20
#define MB 8
#define MR 8

/* 5×7 glyphs for the characters a range label needs, row-major, 5 bits. */
static const struct {
    char c;
    unsigned char rows[7];
} k_font[] = {
    {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},   {'2', {14, 17, 1, 2, 4, 8, 31}},
    {'3', {31, 2, 4, 2, 1, 17, 14}},     {'4', {2, 6, 10, 18, 31, 2, 2}},  {'5', {31, 16, 30, 1, 1, 17, 14}},
    {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},    {'8', {14, 17, 17, 14, 17, 17, 14}},
    {'9', {14, 17, 17, 15, 1, 2, 12}},   {'.', {0, 0, 0, 0, 0, 12, 12}},   {'-', {0, 0, 0, 31, 0, 0, 0}},
    {'e', {0, 0, 14, 17, 31, 16, 14}},   {' ', {0, 0, 0, 0, 0, 0, 0}},     {':', {0, 12, 12, 0, 12, 12, 0}},
    {'s', {0, 0, 15, 16, 14, 1, 30}},    {'t', {8, 8, 28, 8, 8, 9, 6}},    {'p', {0, 0, 30, 17, 30, 16, 16}},
    {'l', {12, 4, 4, 4, 4, 4, 14}},      {'o', {0, 0, 14, 17, 17, 17, 14}}, {'a', {0, 0, 14, 1, 15, 17, 15}},
    {'/', {1, 1, 2, 4, 8, 16, 16}},      {'x', {0, 0, 17, 10, 4, 10, 17}}, {'n', {0, 0, 22, 25, 17, 17, 17}},
    {'m', {0, 0, 26, 21, 21, 17, 17}},   {'i', {4, 0, 12, 4, 4, 4, 14}},   {'r', {0, 0, 22, 25, 16, 16, 16}},
};

static void put(unsigned char *img, int x, int y, const unsigned char rgb[3]) {
    if (x < 0 || y < 0 || x >= PW || y >= PH) return;
    memcpy(img + 3 * ((size_t)y * PW + x), rgb, 3);
}

static void text(unsigned char *img, int x, int y, const char *s) {
    static const unsigned char ink[3] = {40, 40, 40};
    for (; *s; s++, x += 6) {
        for (size_t g = 0; g < sizeof k_font / sizeof *k_font; g++) {
            if (k_font[g].c != *s) continue;
            for (int r = 0; r < 7; r++)
                for (int c = 0; c < 5; c++)
                    if (k_font[g].rows[r] & (16 >> c)) put(img, x + c, y + r, ink);
        }
    }
}

/* Bresenham line. */
static void line(unsigned char *img, int x0, int y0, int x1, int y1, const unsigned char rgb[3]) {
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1, e = dx + dy;
    for (;;) {
        put(img, x0, y0, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

sdc_status sdc_plot_curve_png(const char *path, const double *v, size_t n, const char *title, sdc_error *err) {
    unsigned char *img = malloc((size_t)PW * PH * 3);
    if (!img) return sdc_fail(err, SDC_ENOMEM, "out of memory for a plot");
    memset(img, 255, (size_t)PW * PH * 3);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) lo = v[i] < lo ? v[i] : lo, hi = v[i] > hi ? v[i] : hi;
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) hi = lo + 1e-12;
    static const unsigned char axis[3] = {120, 120, 120}, raw[3] = {200, 200, 200}, avg[3] = {31, 119, 180};
    const int x0 = ML, x1 = PW - MR, y0 = PH - MB, y1 = MT;
    line(img, x0, y0, x1, y0, axis);
    line(img, x0, y0, x0, y1, axis);
    char label[128];
    snprintf(label, sizeof label, "%s  steps: %zu  min %.4g  max %.4g", title ? title : "", n, lo, hi);
    text(img, ML, 6, label);
    /* raw points, then the moving average (α = 0.1, bias-corrected) */
    double ema = 0, w = 0;
    int px = -1, py = -1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        int x = x0 + (int)((double)(x1 - x0) * (double)i / (double)(n > 1 ? n - 1 : 1));
        int y = y0 - (int)((double)(y0 - y1) * (v[i] - lo) / (hi - lo));
        put(img, x, y, raw);
        ema = 0.9 * ema + 0.1 * v[i];
        w = 0.9 * w + 0.1;
        int ey = y0 - (int)((double)(y0 - y1) * (ema / w - lo) / (hi - lo));
        if (px >= 0) line(img, px, py, x, ey, avg);
        px = x, py = ey;
    }
    sdc_status st = sdc_png_write(path, img, PW, PH, 3, NULL, NULL, 0, err);
    free(img);
    return st;
}
