/* Errors, memory, files and strings used everywhere in the runtime. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

const char *program_name = "model";

static void vreport(const char *prefix, const char *fmt, va_list ap) {
    progress_clear(); /* the message must not land in the middle of a progress line */
    fflush(stdout);
    fputs(prefix, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

_Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("error: ", fmt, ap);
    va_end(ap);
    exit(1);
}

_Noreturn void die_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("error: ", fmt, ap);
    va_end(ap);
    exit(2);
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("warning: ", fmt, ap);
    va_end(ap);
}

void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("note: ", fmt, ap);
    va_end(ap);
}

static _Noreturn void out_of_memory(size_t n) {
    die("out of memory (allocating %zu bytes)", n);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *xaligned(size_t n) {
    size_t rounded = (n + 63) / 64 * 64; /* aligned_alloc wants a multiple of the alignment */
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) out_of_memory(n);
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xsprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

size_t checked_mul(size_t a, size_t b, const char *what) {
    if (b && a > SIZE_MAX / b) die("%s is too large (%zu x %zu)", what, a, b);
    return a * b;
}

bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) die("'%s' is not a regular file", path);
    size_t n = (size_t)st.st_size;
    uint8_t *buf = xmalloc(n + 1);
    size_t got = fread(buf, 1, n, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed || got != n) die("cannot read '%s' (read %zu of %zu bytes)", path, got, n);
    buf[n] = 0; /* text readers may treat the buffer as a string */
    *len = n;
    return buf;
}

uint8_t *read_file_maybe_gz(const char *path, size_t *len) {
    size_t n;
    uint8_t *raw = read_file(path, &n);
    if (n < 2 || raw[0] != 0x1f || raw[1] != 0x8b) {
        *len = n;
        return raw;
    }
    uint8_t *out = gunzip(raw, n, len, path);
    free(raw);
    return out;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

char *replace_suffix(const char *path, const char *suffix, const char *with) {
    size_t keep = strlen(path);
    if (ends_with(path, suffix)) keep -= strlen(suffix);
    return xsprintf("%.*s%s", (int)keep, path, with);
}

bool parse_i64(const char *s, int64_t *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool parse_f64(const char *s, double *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE && fabs(v) > 1) return false;
    if (*end) return false;
    *out = v;
    return true;
}

void format_number(char *buf, size_t n, double v) {
    double a = fabs(v);
    if (a == 0 || (a >= 0.01 && a < 1e5))
        snprintf(buf, n, "%.4f", v);
    else
        snprintf(buf, n, "%.4g", v);
}

void sb_add(strbuf *b, const char *data, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
}

void sb_printf(strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char small[256];
    char *s = (size_t)n < sizeof small ? small : xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, s, (size_t)n);
    if (s != small) free(s);
}

void sb_json_string(strbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sb_add(b, esc, 2);
        } else if (*p < 0x20) {
            sb_printf(b, "\\u%04x", *p);
        } else {
            sb_add(b, (const char *)p, 1);
        }
    }
    sb_add(b, "\"", 1);
}

void sb_json_number(strbuf *b, double v) {
    if (isfinite(v))
        sb_printf(b, "%.9g", v);
    else
        sb_add(b, "null", 4);
}

size_t dtype_size(dtype_t t) { return t == DT_BOOL ? 1 : 4; }

const char *dtype_name(dtype_t t) { return t == DT_F32 ? "f32" : t == DT_I32 ? "i32" : "bool"; }

int64_t shape_count(int rank, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= shape[i];
    return n;
}

char *shape_text(dtype_t t, int rank, const int64_t *shape) {
    strbuf b = {0};
    sb_printf(&b, "%s[", dtype_name(t));
    for (int i = 0; i < rank; i++) sb_printf(&b, i ? ",%lld" : "%lld", (long long)shape[i]);
    sb_add(&b, "]", 1);
    return b.p;
}
