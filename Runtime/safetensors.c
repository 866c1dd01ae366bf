/* safetensors files: an 8-byte little-endian header length, a JSON header mapping names to
 * {dtype, shape, data_offsets} (and an optional "__metadata__" string map), then the data.
 * Checkpoints, weights, batches and gradients all use it, so PyTorch and JAX can read them. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int dtype_width(const char *d) {
    static const struct {
        const char *name;
        int width;
    } table[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
                 {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(d, table[i].name) == 0) return table[i].width;
    return 0;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static bool nonneg_int(const jvalue *v) { return v && v->type == J_NUM && v->is_int && v->ival >= 0; }

st_file *st_read(const char *path) {
    st_file *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    size_t len;
    f->buf = read_file(path, &len);
    if (len < 8) die("'%s': truncated: the file has %zu bytes, fewer than the 8-byte header length", path, len);
    uint64_t hlen = le64(f->buf);
    if (hlen > len - 8) {
        if (hlen > (uint64_t)1 << 32 || f->buf[8] != '{')
            die("'%s' is not a safetensors file (it does not start with a header length and a JSON header)", path);
        die("'%s': truncated: the header length says %llu bytes, the file has %zu after it", path,
            (unsigned long long)hlen, len - 8);
    }
    char err[160];
    jvalue *h = json_parse((const char *)f->buf + 8, (size_t)hlen, err, sizeof err);
    if (!h) die("'%s': the header is not valid JSON (%s)", path, err);
    if (h->type != J_OBJ) die("'%s': the header is not a JSON object", path);
    size_t avail = len - 8 - (size_t)hlen;
    uint64_t needed = 0;
    f->t = xcalloc(h->n + 1, sizeof *f->t);
    for (size_t i = 0; i < h->n; i++) {
        const char *name = h->keys[i];
        const jvalue *e = &h->items[i];
        if (strcmp(name, "__metadata__") == 0) {
            if (e->type != J_OBJ) die("'%s': __metadata__ is not an object", path);
            f->meta_keys = xcalloc(e->n + 1, sizeof(char *));
            f->meta_values = xcalloc(e->n + 1, sizeof(char *));
            for (size_t k = 0; k < e->n; k++) {
                if (e->items[k].type != J_STR) die("'%s': metadata '%s' is not a string", path, e->keys[k]);
                f->meta_keys[f->n_meta] = xstrdup(e->keys[k]);
                f->meta_values[f->n_meta++] = xstrdup(e->items[k].str);
            }
            continue;
        }
        const jvalue *dt = json_get(e, "dtype"), *shape = json_get(e, "shape"), *off = json_get(e, "data_offsets");
        if (!dt || dt->type != J_STR || !shape || shape->type != J_ARR || !off || off->type != J_ARR || off->n != 2 ||
            !nonneg_int(&off->items[0]) || !nonneg_int(&off->items[1]))
            die("'%s': tensor '%s' lacks a dtype, shape or data_offsets entry", path, name);
        int width = dtype_width(dt->str);
        if (!width) die("'%s': tensor '%s' has the unsupported dtype %s", path, name, dt->str);
        if (shape->n > MDL_MAX_RANK) die("'%s': tensor '%s' has rank %zu (at most 8)", path, name, shape->n);
        st_tensor *t = &f->t[f->n++];
        t->name = xstrdup(name);
        t->dtype = xstrdup(dt->str);
        t->rank = (int)shape->n;
        uint64_t count = 1;
        for (int k = 0; k < t->rank; k++) {
            if (!nonneg_int(&shape->items[k])) die("'%s': tensor '%s' has a bad size in its shape", path, name);
            t->shape[k] = shape->items[k].ival;
            if (t->shape[k] && count > ((uint64_t)1 << 50) / (uint64_t)t->shape[k])
                die("'%s': tensor '%s' is impossibly large", path, name);
            count *= (uint64_t)t->shape[k];
        }
        uint64_t lo = (uint64_t)off->items[0].ival, hi = (uint64_t)off->items[1].ival;
        if (hi < lo || hi - lo != count * (uint64_t)width)
            die("'%s': tensor '%s': data_offsets [%llu, %llu] do not span the %llu bytes its dtype and shape need", path,
                name, (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)(count * (uint64_t)width));
        if (hi > needed) needed = hi;
        t->data = f->buf + 8 + hlen + lo;
    }
    if (needed > avail)
        die("'%s': truncated: header says %llu bytes of data, file has %zu", path, (unsigned long long)needed, avail);
    json_free(h);
    return f;
}

void st_free(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->t[i].name);
        free(f->t[i].dtype);
    }
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->t);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->buf);
    free(f->path);
    free(f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

static float half_to_float(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return h & 0x8000 ? -v : v;
}

void st_convert(const st_file *f, const st_tensor *t, dtype_t to, void *out) {
    int64_t n = shape_count(t->rank, t->shape);
    const char *d = t->dtype;
    bool is_float = d[0] == 'F' || (d[0] == 'B' && d[1] == 'F');
    if (to == DT_F32 && strcmp(d, "F32") == 0) { /* the common case, bit-exact */
        memcpy(out, t->data, (size_t)n * 4);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = t->data + (size_t)i * (size_t)dtype_width(d);
        double v;
        int64_t iv = 0;
        if (strcmp(d, "F64") == 0) {
            memcpy(&v, p, 8);
        } else if (strcmp(d, "F32") == 0) {
            float x;
            memcpy(&x, p, 4);
            v = x;
        } else if (strcmp(d, "F16") == 0) {
            v = half_to_float((uint16_t)(p[0] | p[1] << 8));
        } else if (strcmp(d, "BF16") == 0) {
            uint32_t bits = (uint32_t)(p[0] | p[1] << 8) << 16;
            float x;
            memcpy(&x, &bits, 4);
            v = x;
        } else {
            if (strcmp(d, "I64") == 0) {
                memcpy(&iv, p, 8);
            } else if (strcmp(d, "I32") == 0) {
                int32_t x;
                memcpy(&x, p, 4);
                iv = x;
            } else if (strcmp(d, "I16") == 0) {
                int16_t x;
                memcpy(&x, p, 2);
                iv = x;
            } else if (strcmp(d, "I8") == 0) {
                iv = (int8_t)p[0];
            } else {
                iv = p[0]; /* U8, BOOL */
            }
            v = (double)iv;
        }
        if (to == DT_F32) {
            ((float *)out)[i] = (float)v;
        } else if (to == DT_BOOL) {
            ((uint8_t *)out)[i] = v != 0;
        } else {
            if (is_float && (v != floor(v) || !isfinite(v)))
                die("'%s': tensor '%s' holds %g at element %lld, which is not an integer (wanted i32)", f->path, t->name, v,
                    (long long)i);
            if (is_float ? v < INT32_MIN || v > INT32_MAX : iv < INT32_MIN || iv > INT32_MAX)
                die("'%s': tensor '%s' holds %g at element %lld, outside the i32 range", f->path, t->name, v, (long long)i);
            ((int32_t *)out)[i] = is_float ? (int32_t)v : (int32_t)iv;
        }
    }
}

static const char *st_dtype(dtype_t t) { return t == DT_F32 ? "F32" : t == DT_I32 ? "I32" : "BOOL"; }

void st_write(const char *path, int n, char *const *names, const array_t *arrays, int n_meta,
              char *const *meta_keys, char *const *meta_values) {
    strbuf h = {0};
    sb_add(&h, "{", 1);
    if (n_meta) {
        sb_add(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_add(&h, ",", 1);
            sb_json_string(&h, meta_keys[i]);
            sb_add(&h, ":", 1);
            sb_json_string(&h, meta_values[i]);
        }
        sb_add(&h, "}", 1);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const array_t *a = &arrays[i];
        uint64_t bytes = (uint64_t)shape_count(a->rank, a->shape) * dtype_size(a->dtype);
        if (n_meta || i) sb_add(&h, ",", 1);
        sb_json_string(&h, names[i]);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype(a->dtype));
        for (int k = 0; k < a->rank; k++) sb_printf(&h, k ? ",%lld" : "%lld", (long long)a->shape[k]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset, (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    sb_add(&h, "}", 1);
    while ((8 + h.len) % 8) sb_add(&h, " ", 1); /* keeps the data 8-byte aligned for mmap readers */

    /* Written next to the target and renamed over it, so a crash never leaves half a file. */
    char *tmp = xsprintf("%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) die("cannot write '%s': %s", tmp, strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(h.p, 1, h.len, f);
    for (int i = 0; i < n; i++) {
        size_t count = (size_t)shape_count(arrays[i].rank, arrays[i].shape);
        if (count) fwrite(arrays[i].data, dtype_size(arrays[i].dtype), count, f);
    }
    bool ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        unlink(tmp);
        die("cannot write '%s': %s", path, strerror(saved));
    }
    char *dir_path = xstrdup(path);
    int dir = open(dirname(dir_path), O_RDONLY | O_DIRECTORY);
    if (dir >= 0) { /* makes the rename itself durable */
        fsync(dir);
        close(dir);
    }
    free(dir_path);
    free(tmp);
    free(h.p);
}
