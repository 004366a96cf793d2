/* The standard CLIP BPE merges (openai/CLIP's bpe_simple_vocab_16e6.txt,
 * lines 2..48895: the 49152 - 256 - 2 merges CLIP uses, without the
 * "#version" header), gzip -9'd and linked into .rodata, so that
 * sdc_clip_tokenizer_default works for single-file checkpoints. The path
 * is relative to the repository root, where make runs the compiler.
 * Regenerate with:
 *   tail -n +2 merges.txt | gzip -9n > src/data/clip_merges.txt.gz */
#include <stddef.h>

#include "data/clip_text.h"

__asm__(".pushsection .rodata\n"
        ".balign 16\n"
        ".hidden sdc_clip_merges_gz_start\n"
        ".globl sdc_clip_merges_gz_start\n"
        ".type sdc_clip_merges_gz_start, %object\n"
        "sdc_clip_merges_gz_start:\n"
        ".incbin \"src/data/clip_merges.txt.gz\"\n"
        ".hidden sdc_clip_merges_gz_end\n"
        ".globl sdc_clip_merges_gz_end\n"
        "sdc_clip_merges_gz_end:\n"
        ".popsection\n"
        /* an object with only data must still say its stack is not executable */
        ".pushsection .note.GNU-stack,\"\",%progbits\n"
        ".popsection\n");

extern const unsigned char sdc_clip_merges_gz_start[];
extern const unsigned char sdc_clip_merges_gz_end[];

void clip_embedded_merges_gz(const unsigned char **data, size_t *size) {
    *data = sdc_clip_merges_gz_start;
    *size = (size_t)(sdc_clip_merges_gz_end - sdc_clip_merges_gz_start);
}
