/* Captions drawn into RGB images with a built-in 5×7 bitmap font (no font
 * library): lowercase letters (uppercase is drawn lowercase), digits, space
 * and common punctuation; anything else is drawn as '?'. Each glyph cell is
 * 6×9 pixels at scale 1 (one column and two rows of spacing). */
#ifndef SDC_DATA_TEXT_DRAW_H
#define SDC_DATA_TEXT_DRAW_H

#include <stddef.h>
#include <stdint.h>

#define SDC_TEXT_CELL_W 6
#define SDC_TEXT_CELL_H 9

/* Width in pixels of s (one line) at scale. */
int sdc_text_width(const char *s, int scale);
/* Draws one line with its top-left corner at (x, y) into rgb (w × h × 3);
 * pixels outside the image are skipped. */
void sdc_text_draw(uint8_t *rgb, int w, int h, int x, int y, const char *s, int scale, const uint8_t ink[3]);
/* Greedy word wrap of s into lines at most max_px wide (a word longer than
 * a line is cut): the lines go into out separated by '\n' (NUL-terminated,
 * truncated at cap). Returns the number of lines. */
int sdc_text_wrap(const char *s, int scale, int max_px, char *out, size_t cap);

#endif
