/* A minimal zip reader over a file already in memory (mapped): enough for
 * PyTorch checkpoints, which torch.save writes as a zip of STORED entries.
 *
 * Reads the end-of-central-directory record (and its ZIP64 form), the central
 * directory and, per entry, the local header only to find where the data
 * starts. STORED data is used in place; DEFLATE data is inflated with zlib
 * into a malloc'd buffer after its claimed size has passed the caller's limit.
 * Single-disk archives only; no encryption. */
#ifndef SDC_IO_ZIP_H
#define SDC_IO_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/strmap.h"

#ifdef __cplusplus
extern "C" {
#endif

/* More entries than this is not a checkpoint (SD files hold ~1-3k). */
#define SDC_ZIP_MAX_ENTRIES 10000000u
/* Longest entry name accepted. */
#define SDC_ZIP_MAX_NAME 4096u

typedef struct sdc_zip_entry {
    const char *name; /* into the mapped file: NOT NUL-terminated */
    size_t name_len;
    uint16_t method; /* 0 STORED, 8 DEFLATE */
    uint16_t flags;
    uint32_t crc32;
    uint64_t comp_size;
    uint64_t size; /* uncompressed */
    uint64_t data_offset; /* of the (compressed) data in the file */
} sdc_zip_entry;

typedef struct sdc_zip {
    const char *path; /* borrowed, for messages */
    const unsigned char *data;
    size_t size;
    sdc_zip_entry *entries;
    size_t count;
    sdc_strmap index; /* name -> entry */
} sdc_zip;

/* Nonzero if the buffer starts like a zip archive ("PK\3\4" or an empty
 * archive's "PK\5\6"). */
int sdc_zip_has_magic(const unsigned char *data, size_t size);

/* Parses and validates the directory of data[0..size) (which must outlive z).
 * Every entry's data range is checked to lie inside the file. */
sdc_status sdc_zip_open(sdc_zip *z, const char *path, const unsigned char *data, size_t size, sdc_error *err);
void sdc_zip_close(sdc_zip *z);

const sdc_zip_entry *sdc_zip_find(const sdc_zip *z, const char *name);
const sdc_zip_entry *sdc_zip_findn(const sdc_zip *z, const char *name, size_t len);

/* The uncompressed bytes of an entry. STORED: *out points into the file and
 * *owned is NULL. DEFLATE: the entry is inflated into a malloc'd buffer
 * returned in both *out and *owned (the caller frees it), after checking the
 * claimed size against max_size (SDC_ELIMIT) and against what deflate can
 * produce from the compressed size (SDC_EFORMAT), and the CRC-32 of the
 * result. STORED data is not CRC-checked: that would read every page of a
 * multi-GB mapping up front; the pickle is checked by its parser instead. */
sdc_status sdc_zip_read(const sdc_zip *z, const sdc_zip_entry *e, uint64_t max_size, const unsigned char **out,
                        void **owned, sdc_error *err);

#ifdef __cplusplus
}
#endif

#endif
