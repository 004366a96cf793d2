#include "data/text_draw.h"

#include <ctype.h>
#include <string.h>

/* 5×7 glyphs, row-major, 5 bits per row (16 = the leftmost column). */
static const struct {
    char c;
    uint8_t rows[7];
} k_font[] = {
    {'a', {0, 0, 14, 1, 15, 17, 15}},   {'b', {16, 16, 22, 25, 17, 17, 30}}, {'c', {0, 0, 14, 16, 16, 17, 14}},
    {'d', {1, 1, 13, 19, 17, 17, 15}},  {'e', {0, 0, 14, 17, 31, 16, 14}},   {'f', {6, 9, 8, 28, 8, 8, 8}},
    {'g', {0, 0, 15, 17, 15, 1, 14}},  {'h', {16, 16, 22, 25, 17, 17, 17}}, {'i', {4, 0, 12, 4, 4, 4, 14}},
    {'j', {2, 0, 6, 2, 2, 18, 12}},     {'k', {16, 16, 18, 20, 24, 20, 18}}, {'l', {12, 4, 4, 4, 4, 4, 14}},
    {'m', {0, 0, 26, 21, 21, 17, 17}},  {'n', {0, 0, 22, 25, 17, 17, 17}},   {'o', {0, 0, 14, 17, 17, 17, 14}},
    {'p', {0, 0, 30, 17, 30, 16, 16}},  {'q', {0, 0, 13, 19, 15, 1, 1}},     {'r', {0, 0, 22, 25, 16, 16, 16}},
    {'s', {0, 0, 14, 16, 14, 1, 30}},   {'t', {8, 8, 28, 8, 8, 9, 6}},       {'u', {0, 0, 17, 17, 17, 19, 13}},
    {'v', {0, 0, 17, 17, 17, 10, 4}},   {'w', {0, 0, 17, 17, 21, 21, 10}},   {'x', {0, 0, 17, 10, 4, 10, 17}},
    {'y', {0, 0, 17, 17, 15, 1, 14}},   {'z', {0, 0, 31, 2, 4, 8, 31}},      {'0', {14, 17, 19, 21, 25, 17, 14}},
    {'1', {4, 12, 4, 4, 4, 4, 14}},     {'2', {14, 17, 1, 2, 4, 8, 31}},     {'3', {31, 2, 4, 2, 1, 17, 14}},
    {'4', {2, 6, 10, 18, 31, 2, 2}},    {'5', {31, 16, 30, 1, 1, 17, 14}},   {'6', {6, 8, 16, 30, 17, 17, 14}},
    {'7', {31, 1, 2, 4, 8, 8, 8}},      {'8', {14, 17, 17, 14, 17, 17, 14}}, {'9', {14, 17, 17, 15, 1, 2, 12}},
    {' ', {0, 0, 0, 0, 0, 0, 0}},       {'.', {0, 0, 0, 0, 0, 12, 12}},      {',', {0, 0, 0, 0, 12, 4, 8}},
    {'-', {0, 0, 0, 31, 0, 0, 0}},      {':', {0, 12, 12, 0, 12, 12, 0}},    {'/', {1, 1, 2, 4, 8, 16, 16}},
    {'"', {10, 10, 0, 0, 0, 0, 0}},     {'\'', {4, 4, 0, 0, 0, 0, 0}},       {'(', {2, 4, 8, 8, 8, 4, 2}},
    {')', {8, 4, 2, 2, 2, 4, 8}},       {'=', {0, 0, 31, 0, 31, 0, 0}},      {'+', {0, 4, 4, 31, 4, 4, 0}},
    {'%', {24, 25, 2, 4, 8, 19, 3}},    {'!', {4, 4, 4, 4, 4, 0, 4}},        {'_', {0, 0, 0, 0, 0, 0, 31}},
    {'?', {14, 17, 1, 2, 4, 0, 4}},     {'<', {2, 4, 8, 16, 8, 4, 2}},       {'>', {8, 4, 2, 1, 2, 4, 8}},
    {'|', {4, 4, 4, 4, 4, 4, 4}},       {'#', {10, 10, 31, 10, 31, 10, 10}}, {'*', {0, 4, 21, 14, 21, 4, 0}},
};

static const uint8_t *glyph(char ch) {
    char c = (char)tolower((unsigned char)ch);
    const uint8_t *unknown = NULL;
    for (size_t g = 0; g < sizeof k_font / sizeof *k_font; g++) {
        if (k_font[g].c == c) return k_font[g].rows;
        if (k_font[g].c == '?') unknown = k_font[g].rows;
    }
    return unknown;
}

int sdc_text_width(const char *s, int scale) {
    int n = (int)strlen(s);
    return n ? (n * SDC_TEXT_CELL_W - 1) * scale : 0;
}

void sdc_text_draw(uint8_t *rgb, int w, int h, int x, int y, const char *s, int scale, const uint8_t ink[3]) {
    for (; *s; s++, x += SDC_TEXT_CELL_W * scale) {
        const uint8_t *rows = glyph(*s);
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++) {
                if (!(rows[r] & (16 >> c))) continue;
                for (int dy = 0; dy < scale; dy++)
                    for (int dx = 0; dx < scale; dx++) {
                        int px = x + c * scale + dx, py = y + r * scale + dy;
                        if (px >= 0 && py >= 0 && px < w && py < h) memcpy(rgb + 3 * ((size_t)py * w + px), ink, 3);
                    }
            }
    }
}

int sdc_text_wrap(const char *s, int scale, int max_px, char *out, size_t cap) {
    int per_line = (max_px / scale + 1) / SDC_TEXT_CELL_W; /* characters that fit */
    if (per_line < 1) per_line = 1;
    size_t o = 0;
    int lines = 0, col = 0;
    if (cap) out[0] = '\0';
    while (*s) {
        while (*s == ' ') s++;
        if (!*s) break;
        int len = 0;
        while (s[len] && s[len] != ' ') len++;
        if (col > 0 && col + 1 + len > per_line) { /* the word goes on the next line */
            if (o + 1 < cap) out[o++] = '\n';
            col = 0;
        } else if (col > 0) {
            if (o + 1 < cap) out[o++] = ' ';
            col++;
        }
        if (col == 0) lines++;
        for (int i = 0; i < len; i++) {
            if (col == per_line) { /* a word longer than a line: cut it */
                if (o + 1 < cap) out[o++] = '\n';
                col = 0;
                lines++;
            }
            if (o + 1 < cap) out[o++] = s[i];
            col++;
        }
        s += len;
        if (cap) out[o < cap ? o : cap - 1] = '\0';
    }
    return lines;
}
