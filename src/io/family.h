/* Model families sdc knows. Detected from configs (folders) or from keys
 * (single-file checkpoints). */
#ifndef SDC_IO_FAMILY_H
#define SDC_IO_FAMILY_H

typedef enum sdc_family {
    SDC_FAMILY_UNKNOWN = 0,
    SDC_FAMILY_SD1,  /* SD 1.x: CLIP ViT-L text encoder, 768-d cross-attention */
    SDC_FAMILY_SD2,  /* SD 2.x: OpenCLIP ViT-H text encoder, linear projections, 1024-d */
    SDC_FAMILY_SDXL, /* SDXL: two text encoders, text_time added conditioning */
} sdc_family;

static inline const char *sdc_family_name(sdc_family f) {
    switch (f) {
    case SDC_FAMILY_SD1: return "SD 1.x";
    case SDC_FAMILY_SD2: return "SD 2.x";
    case SDC_FAMILY_SDXL: return "SDXL";
    default: return "unknown";
    }
}

#endif
