#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

char *sdc_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

sdc_status sdc_read_file(const char *path, char **out, size_t *len, sdc_error *err) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sdc_fail(err, errno == ENOENT ? SDC_ENOTFOUND : SDC_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sdc_fail(err, SDC_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SDC_MAX_READ_FILE) {
        close(fd);
        return sdc_fail(err, SDC_ELIMIT, "%s: file is %lld bytes, more than the %llu MiB sdc reads whole",
                        path, (long long)st.st_size, SDC_MAX_READ_FILE >> 20);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return sdc_fail(err, SDC_ENOMEM, "%s: cannot allocate %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return sdc_fail(err, SDC_EIO, "%s: read failed: %s", path, r < 0 ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return SDC_OK;
}

sdc_status sdc_map_file(const char *path, sdc_mapped_file *m, sdc_error *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sdc_fail(err, errno == ENOENT ? SDC_ENOTFOUND : SDC_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sdc_fail(err, SDC_EIO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return sdc_fail(err, SDC_EIO, "%s: cannot map: %s", path, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return SDC_OK;
}

void sdc_unmap_file(sdc_mapped_file *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

sdc_status sdc_atomic_open(sdc_atomic_file *f, const char *path, sdc_error *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path) + 32;
    f->path = sdc_strdup(path);
    f->tmp_path = malloc(n);
    if (!f->path || !f->tmp_path) {
        free(f->path);
        free(f->tmp_path);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp_path, n, "%s.tmp-%ld", path, (long)getpid());
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        sdc_status s = sdc_fail(err, SDC_EIO, "%s: cannot create: %s", f->tmp_path, strerror(errno));
        free(f->path);
        free(f->tmp_path);
        f->path = f->tmp_path = NULL;
        return s;
    }
    return SDC_OK;
}

sdc_status sdc_atomic_write(sdc_atomic_file *f, const void *buf, size_t n) {
    if (f->failed) return f->err.code;
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            f->failed = 1;
            return sdc_fail(&f->err, SDC_EIO, "%s: write failed: %s", f->path, w < 0 ? strerror(errno) : "no progress");
        }
        p += w;
        n -= (size_t)w;
    }
    return SDC_OK;
}

void sdc_atomic_abort(sdc_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

sdc_status sdc_atomic_commit(sdc_atomic_file *f, sdc_error *err) {
    if (f->failed) {
        if (err) *err = f->err;
        sdc_status s = f->err.code;
        sdc_atomic_abort(f);
        return s;
    }
    if (fsync(f->fd) != 0) {
        sdc_status s = sdc_fail(err, SDC_EIO, "%s: fsync failed: %s", f->path, strerror(errno));
        sdc_atomic_abort(f);
        return s;
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        sdc_status s = sdc_fail(err, SDC_EIO, "%s: close failed: %s", f->path, strerror(errno));
        sdc_atomic_abort(f);
        return s;
    }
    f->fd = -1;
    if (rename(f->tmp_path, f->path) != 0) {
        sdc_status s = sdc_fail(err, SDC_EIO, "%s: rename failed: %s", f->path, strerror(errno));
        sdc_atomic_abort(f);
        return s;
    }
    /* Make the rename itself durable. */
    char *dir = sdc_strdup(f->path);
    if (dir) {
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
    return SDC_OK;
}

sdc_status sdc_write_file_atomic(const char *path, const void *buf, size_t n, sdc_error *err) {
    sdc_atomic_file f;
    SDC_TRY(sdc_atomic_open(&f, path, err));
    sdc_atomic_write(&f, buf, n);
    return sdc_atomic_commit(&f, err);
}

int sdc_path_exists(const char *path) { return access(path, F_OK) == 0; }

int sdc_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int64_t sdc_file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    return (int64_t)st.st_size;
}

char *sdc_path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int slash = la > 0 && a[la - 1] != '/';
    char *r = malloc(la + lb + 2);
    if (!r) return NULL;
    memcpy(r, a, la);
    if (slash) r[la++] = '/';
    memcpy(r + la, b, lb + 1);
    return r;
}

const char *sdc_path_basename(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int sdc_str_ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lf = strlen(suffix);
    return ls >= lf && memcmp(s + ls - lf, suffix, lf) == 0;
}

sdc_status sdc_mkdirs(const char *path, sdc_error *err) {
    char *p = sdc_strdup(path);
    if (!p) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            sdc_status st = sdc_fail(err, SDC_EIO, "%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return st;
        }
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        sdc_status st = sdc_fail(err, SDC_EIO, "%s: cannot create directory: %s", p, strerror(errno));
        free(p);
        return st;
    }
    free(p);
    return SDC_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int sdc_remove_tree(const char *path) { return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

sdc_status sdc_write_text_at(const char *root, const char *rel, const char *text, sdc_error *err) {
    char *path = sdc_path_join(root, rel);
    if (!path) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    char *slash = strrchr(path, '/');
    sdc_status s = SDC_OK;
    if (slash) {
        *slash = '\0';
        s = sdc_mkdirs(path, err);
        *slash = '/';
    }
    if (s == SDC_OK) s = sdc_write_file_atomic(path, text, strlen(text), err);
    free(path);
    return s;
}
