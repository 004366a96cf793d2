#include "io/zip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Record signatures and sizes (PKWARE APPNOTE 4.3). */
#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_EOCD64_LOC 0x07064b50u
#define LOCAL_LEN 30u
#define CENTRAL_LEN 46u
#define EOCD_LEN 22u
#define EOCD64_LEN 56u
#define EOCD64_LOC_LEN 20u

/* Deflate cannot expand more than ~1032:1 (a 258-byte match costs at least
 * 2 bits); a claim beyond that is a lie, refused before allocating. */
#define DEFLATE_MAX_RATIO 1032u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

int sdc_zip_has_magic(const unsigned char *data, size_t size) {
    return size >= 4 && data[0] == 'P' && data[1] == 'K' &&
           ((data[2] == 3 && data[3] == 4) || (data[2] == 5 && data[3] == 6));
}

/* The EOCD is the last 22 bytes unless an archive comment (<= 64 KiB) follows
 * it, so scan backwards over at most that much. */
static int find_eocd(const unsigned char *d, size_t size, size_t *pos) {
    if (size < EOCD_LEN) return -1;
    size_t lo = size - EOCD_LEN > 0xffff ? size - EOCD_LEN - 0xffff : 0;
    for (size_t i = size - EOCD_LEN + 1; i-- > lo;) {
        if (rd32(d + i) == SIG_EOCD && (size_t)rd16(d + i + 20) <= size - i - EOCD_LEN) {
            *pos = i;
            return 0;
        }
    }
    return -1;
}

/* Replaces the 0xFFFFFFFF fields of a central entry with their ZIP64 extra
 * values (which appear in this fixed order, only for the saturated fields). */
static sdc_status apply_zip64_extra(const sdc_zip *z, const unsigned char *ex, size_t exlen, uint64_t *usize,
                                    uint64_t *csize, uint64_t *offset, sdc_error *err) {
    while (exlen >= 4) {
        uint16_t id = rd16(ex), len = rd16(ex + 2);
        if ((size_t)len > exlen - 4) break; /* a malformed tail is ignored, as zip tools do */
        if (id == 0x0001) {
            const unsigned char *p = ex + 4;
            size_t left = len;
            uint64_t *fields[3] = {usize, csize, offset};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (left < 8) return sdc_fail(err, SDC_EFORMAT, "%s: zip: ZIP64 extra field is too short", z->path);
                *fields[i] = rd64(p);
                p += 8;
                left -= 8;
            }
            return SDC_OK;
        }
        ex += 4 + (size_t)len;
        exlen -= 4 + (size_t)len;
    }
    /* Saturated but no ZIP64 field: the value is taken literally (a real
     * 4 GiB - 1 size is possible); the caller's range checks still apply. */
    return SDC_OK;
}

sdc_status sdc_zip_open(sdc_zip *z, const char *path, const unsigned char *d, size_t size, sdc_error *err) {
    memset(z, 0, sizeof *z);
    z->path = path;
    z->data = d;
    z->size = size;
    size_t eocd;
    if (find_eocd(d, size, &eocd) != 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: zip: no end-of-central-directory record (truncated or not a zip)", path);
    const unsigned char *e = d + eocd;
    uint64_t disk = rd16(e + 4), cd_disk = rd16(e + 6), n_disk = rd16(e + 8), n_total = rd16(e + 10);
    uint64_t cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    /* ZIP64: a locator sits right before the EOCD and points at the 64-bit record. */
    if (eocd >= EOCD64_LOC_LEN && rd32(d + eocd - EOCD64_LOC_LEN) == SIG_EOCD64_LOC) {
        const unsigned char *loc = d + eocd - EOCD64_LOC_LEN;
        uint64_t off64 = rd64(loc + 8);
        if (rd32(loc + 16) > 1) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: zip: multi-disk archives are not supported", path);
        if (off64 > eocd - EOCD64_LOC_LEN || eocd - EOCD64_LOC_LEN - off64 < EOCD64_LEN || rd32(d + off64) != SIG_EOCD64)
            return sdc_fail(err, SDC_EFORMAT, "%s: zip: bad ZIP64 end-of-central-directory record", path);
        const unsigned char *e64 = d + off64;
        disk = rd32(e64 + 16);
        cd_disk = rd32(e64 + 20);
        n_disk = rd64(e64 + 24);
        n_total = rd64(e64 + 32);
        cd_size = rd64(e64 + 40);
        cd_off = rd64(e64 + 48);
        eocd = (size_t)off64; /* the central directory ends before this record */
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n_total)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: zip: multi-disk archives are not supported", path);
    if (cd_off > eocd || cd_size > eocd - cd_off)
        return sdc_fail(err, SDC_EFORMAT, "%s: zip: central directory lies outside the file (truncated?)", path);
    /* Every entry takes at least 46 bytes, so the count is bounded by the
     * file before anything is allocated from it. */
    if (n_total > cd_size / CENTRAL_LEN)
        return sdc_fail(err, SDC_EFORMAT, "%s: zip: %llu entries cannot fit in a %llu-byte central directory", path,
                        (unsigned long long)n_total, (unsigned long long)cd_size);
    if (n_total > SDC_ZIP_MAX_ENTRIES)
        return sdc_fail(err, SDC_ELIMIT, "%s: zip: %llu entries, more than the %u sdc accepts", path,
                        (unsigned long long)n_total, SDC_ZIP_MAX_ENTRIES);
    z->entries = calloc(n_total ? (size_t)n_total : 1, sizeof *z->entries);
    if (!z->entries || sdc_strmap_init(&z->index, (size_t)n_total) != 0) {
        sdc_zip_close(z);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    }
    const unsigned char *p = d + cd_off, *end = d + cd_off + cd_size;
    sdc_status s = SDC_OK;
    for (uint64_t i = 0; i < n_total; i++) {
        if ((size_t)(end - p) < CENTRAL_LEN || rd32(p) != SIG_CENTRAL) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: central directory entry %llu is malformed", path,
                         (unsigned long long)i);
            goto fail;
        }
        sdc_zip_entry *en = &z->entries[i];
        en->flags = rd16(p + 8);
        en->method = rd16(p + 10);
        en->crc32 = rd32(p + 16);
        en->comp_size = rd32(p + 20);
        en->size = rd32(p + 24);
        size_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32);
        uint64_t local = rd32(p + 42);
        if ((size_t)(end - p) - CENTRAL_LEN < nlen + xlen + clen) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: central directory entry %llu runs past the directory", path,
                         (unsigned long long)i);
            goto fail;
        }
        en->name = (const char *)p + CENTRAL_LEN;
        en->name_len = nlen;
        if ((s = apply_zip64_extra(z, p + CENTRAL_LEN + nlen, xlen, &en->size, &en->comp_size, &local, err)) != SDC_OK)
            goto fail;
        p += CENTRAL_LEN + nlen + xlen + clen;
        if (nlen == 0 || nlen > SDC_ZIP_MAX_NAME || memchr(en->name, '\0', nlen)) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: entry %llu has an empty, over-long or invalid name", path,
                         (unsigned long long)i);
            goto fail;
        }
        /* The local header repeats the name; its own lengths give the data start. */
        if (local > size || size - local < LOCAL_LEN || rd32(d + local) != SIG_LOCAL) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: entry \"%.*s\": bad local header (truncated?)", path, (int)nlen,
                         en->name);
            goto fail;
        }
        uint64_t lnlen = rd16(d + local + 26), lxlen = rd16(d + local + 28);
        uint64_t data_off = local + LOCAL_LEN + lnlen + lxlen;
        if (lnlen != nlen || data_off > size || memcmp(d + local + LOCAL_LEN, en->name, nlen) != 0) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: entry \"%.*s\": local header does not match the directory", path,
                         (int)nlen, en->name);
            goto fail;
        }
        if (en->comp_size > size - data_off) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: entry \"%.*s\": data runs past the end of the file (truncated?)",
                         path, (int)nlen, en->name);
            goto fail;
        }
        en->data_offset = data_off;
        if (en->flags & 1) {
            s = sdc_fail(err, SDC_EUNSUPPORTED, "%s: zip: entry \"%.*s\" is encrypted", path, (int)nlen, en->name);
            goto fail;
        }
        if (en->method != 0 && en->method != 8) {
            s = sdc_fail(err, SDC_EUNSUPPORTED, "%s: zip: entry \"%.*s\" uses compression method %u (only stored and deflate are supported)",
                         path, (int)nlen, en->name, en->method);
            goto fail;
        }
        if (en->method == 0 && en->comp_size != en->size) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: stored entry \"%.*s\" has different compressed and plain sizes",
                         path, (int)nlen, en->name);
            goto fail;
        }
        /* Two entries of one name would make lookups ambiguous. */
        int64_t old;
        if (sdc_strmap_putn(&z->index, en->name, nlen, (int64_t)i, &old) != 0) {
            s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        if (old >= 0) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: zip: entry \"%.*s\" appears twice", path, (int)nlen, en->name);
            goto fail;
        }
        z->count++;
    }
    return SDC_OK;
fail:
    sdc_zip_close(z);
    return s;
}

void sdc_zip_close(sdc_zip *z) {
    free(z->entries);
    sdc_strmap_free(&z->index);
    z->entries = NULL;
    z->count = 0;
}

const sdc_zip_entry *sdc_zip_findn(const sdc_zip *z, const char *name, size_t len) {
    int64_t i = sdc_strmap_getn(&z->index, name, len);
    return i >= 0 ? &z->entries[i] : NULL;
}

const sdc_zip_entry *sdc_zip_find(const sdc_zip *z, const char *name) { return sdc_zip_findn(z, name, strlen(name)); }

sdc_status sdc_zip_read(const sdc_zip *z, const sdc_zip_entry *e, uint64_t max_size, const unsigned char **out,
                        void **owned, sdc_error *err) {
    *out = NULL;
    *owned = NULL;
    int nl = (int)e->name_len;
    if (e->method == 0) {
        if (e->size > max_size)
            return sdc_fail(err, SDC_ELIMIT, "%s: zip: entry \"%.*s\" is %llu bytes, more than the %llu allowed", z->path,
                            nl, e->name, (unsigned long long)e->size, (unsigned long long)max_size);
        *out = z->data + e->data_offset;
        return SDC_OK;
    }
    /* DEFLATE: decide on the claimed size before allocating it. */
    if (e->size > max_size || e->size > SIZE_MAX - 1)
        return sdc_fail(err, SDC_ELIMIT, "%s: zip: entry \"%.*s\" claims %llu bytes uncompressed, more than the %llu allowed",
                        z->path, nl, e->name, (unsigned long long)e->size, (unsigned long long)max_size);
    if (e->size / DEFLATE_MAX_RATIO > e->comp_size + 1)
        return sdc_fail(err, SDC_EFORMAT, "%s: zip: entry \"%.*s\" claims %llu bytes from %llu compressed, more than deflate can produce",
                        z->path, nl, e->name, (unsigned long long)e->size, (unsigned long long)e->comp_size);
    unsigned char *buf = malloc(e->size ? (size_t)e->size : 1);
    if (!buf)
        return sdc_fail(err, SDC_ENOMEM, "%s: zip: cannot allocate %llu bytes for \"%.*s\"", z->path,
                        (unsigned long long)e->size, nl, e->name);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) { /* raw deflate, no zlib header */
        free(buf);
        return sdc_fail(err, SDC_ENOMEM, "%s: zip: cannot start inflate", z->path);
    }
    const unsigned char *in = z->data + e->data_offset;
    uint64_t in_left = e->comp_size, out_done = 0;
    int zr = Z_OK, too_long = 0;
    /* zlib counts in 32-bit uInt: feed and drain in chunks. */
    while (zr != Z_STREAM_END) {
        if (zs.avail_in == 0 && in_left) {
            uInt n = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
            zs.next_in = (Bytef *)(uintptr_t)in;
            zs.avail_in = n;
            in += n;
            in_left -= n;
        }
        uint64_t out_left = e->size - out_done;
        uInt room = out_left > (1u << 30) ? (1u << 30) : (uInt)out_left;
        /* with no room left, a one-byte scratch detects output beyond the claim */
        unsigned char scratch;
        zs.next_out = room ? buf + out_done : &scratch;
        zs.avail_out = room ? room : 1;
        zr = inflate(&zs, Z_NO_FLUSH);
        uInt produced = (room ? room : 1) - zs.avail_out;
        if (!room && produced) {
            too_long = 1;
            break;
        }
        out_done += produced;
        if (zr == Z_STREAM_END) break;
        if (zr != Z_OK && zr != Z_BUF_ERROR) break;
        /* no progress with nothing left to feed: the stream ended early */
        if (zs.avail_in == 0 && in_left == 0 && produced == 0) {
            zr = Z_BUF_ERROR;
            break;
        }
    }
    inflateEnd(&zs);
    const char *why = NULL;
    if (too_long) why = "inflates to more bytes than its header claims";
    else if (zr != Z_STREAM_END) why = zr == Z_BUF_ERROR ? "compressed data ends early (truncated?)" : "corrupt deflate data";
    else if (out_done != e->size) why = "inflates to fewer bytes than its header claims";
    if (!why) {
        uLong crc = crc32(0L, Z_NULL, 0);
        for (uint64_t off = 0; off < out_done;) {
            uInt n = out_done - off > (1u << 30) ? (1u << 30) : (uInt)(out_done - off);
            crc = crc32(crc, buf + off, n);
            off += n;
        }
        if ((uint32_t)crc != e->crc32) why = "CRC-32 mismatch (corrupt data)";
    }
    if (why) {
        free(buf);
        return sdc_fail(err, SDC_EFORMAT, "%s: zip: entry \"%.*s\": %s", z->path, nl, e->name, why);
    }
    *out = buf;
    *owned = buf;
    return SDC_OK;
}
