/* Files: read whole, map read-only, write atomically, and path helpers.
 * Every failure names the path and the reason (strerror). */
#ifndef SDC_CORE_FS_H
#define SDC_CORE_FS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest file read whole into memory (configs, vocabularies, pickles). */
#define SDC_MAX_READ_FILE (512ull << 20)

/* Reads a file into a malloc'd, NUL-terminated buffer (*len excludes the NUL). */
sdc_status sdc_read_file(const char *path, char **out, size_t *len, sdc_error *err);

/* A read-only mapping of a whole file. An empty file maps to data=NULL, size=0. */
typedef struct sdc_mapped_file {
    const unsigned char *data;
    size_t size;
} sdc_mapped_file;
sdc_status sdc_map_file(const char *path, sdc_mapped_file *m, sdc_error *err);
void sdc_unmap_file(sdc_mapped_file *m);

/* Atomic write: the bytes go to "<path>.tmp-<pid>", are fsync'd, and the
 * temporary is renamed over path (then the directory is fsync'd), so a crash
 * leaves either the old file or the complete new one under the real name.
 * The writer is streamed: open, any number of writes, commit (or abort). */
typedef struct sdc_atomic_file {
    int fd;
    char *path;
    char *tmp_path;
    int failed;
    sdc_error err; /* first write error, reported by commit */
} sdc_atomic_file;
sdc_status sdc_atomic_open(sdc_atomic_file *f, const char *path, sdc_error *err);
sdc_status sdc_atomic_write(sdc_atomic_file *f, const void *buf, size_t n);
sdc_status sdc_atomic_commit(sdc_atomic_file *f, sdc_error *err);
void sdc_atomic_abort(sdc_atomic_file *f);
/* One-shot helper over the above. */
sdc_status sdc_write_file_atomic(const char *path, const void *buf, size_t n, sdc_error *err);
/* Writes the text to root/rel atomically, creating rel's folders (config
 * files of a model folder: "unet/config.json"). */
sdc_status sdc_write_text_at(const char *root, const char *rel, const char *text, sdc_error *err);

int sdc_path_exists(const char *path);
int sdc_path_is_dir(const char *path);
int64_t sdc_file_size(const char *path); /* -1 if not a readable regular file */
/* malloc'd "a/b"; the caller frees. */
char *sdc_path_join(const char *a, const char *b);
/* Pointer to the last component of path (inside path). */
const char *sdc_path_basename(const char *path);
int sdc_str_ends_with(const char *s, const char *suffix);
char *sdc_strdup(const char *s);
/* mkdir -p */
sdc_status sdc_mkdirs(const char *path, sdc_error *err);
/* rm -rf for folders sdc made (temporaries, old checkpoints): links are
 * removed, never followed. 0, or -1 with errno (a missing path is -1). */
int sdc_remove_tree(const char *path);

#ifdef __cplusplus
}
#endif

#endif
