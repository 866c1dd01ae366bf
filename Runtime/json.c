/* A small JSON reader for safetensors headers and for re-reading our own log on --resume. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
    const char *error;
    int depth;
} parser;

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static bool fail(parser *ps, const char *why) {
    if (!ps->error) ps->error = why;
    return false;
}

static void put_utf8(strbuf *b, uint32_t c) {
    char u[4];
    size_t n;
    if (c < 0x80) {
        u[0] = (char)c;
        n = 1;
    } else if (c < 0x800) {
        u[0] = (char)(0xC0 | c >> 6);
        u[1] = (char)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        u[0] = (char)(0xE0 | c >> 12);
        u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[2] = (char)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | c >> 18);
        u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[3] = (char)(0x80 | (c & 0x3F));
        n = 4;
    }
    sb_add(b, u, n);
}

static bool hex4(parser *ps, uint32_t *out) {
    if (ps->end - ps->p < 4) return fail(ps, "a \\u escape ends early");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(ps, "a bad \\u escape");
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return true;
}

static bool parse_string(parser *ps, char **out) {
    ps->p++; /* the opening quote */
    strbuf b = {0};
    sb_add(&b, "", 0);
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) {
            free(b.p);
            return fail(ps, "a control character in a string");
        }
        if (c != '\\') {
            sb_add(&b, (const char *)&c, 1);
            continue;
        }
        if (ps->p >= ps->end) break;
        char e = *ps->p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (simple && e) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            sb_add(&b, &map[simple - "\"\\/bfnrt"], 1);
        } else if (e == 'u') {
            uint32_t c1;
            if (!hex4(ps, &c1)) {
                free(b.p);
                return false;
            }
            if (c1 >= 0xD800 && c1 < 0xDC00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                uint32_t c2;
                ps->p += 2;
                if (!hex4(ps, &c2)) {
                    free(b.p);
                    return false;
                }
                c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
            }
            put_utf8(&b, c1);
        } else {
            free(b.p);
            return fail(ps, "a bad escape in a string");
        }
    }
    if (ps->p >= ps->end) {
        free(b.p);
        return fail(ps, "a string is not terminated");
    }
    ps->p++;
    *out = b.p;
    return true;
}

static bool parse_value(parser *ps, jvalue *v);

static bool parse_number(parser *ps, jvalue *v) {
    const char *start = ps->p;
    bool integral = true;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    while (ps->p < ps->end && *ps->p && strchr("0123456789.eE+-", *ps->p)) {
        if (strchr(".eE", *ps->p)) integral = false;
        ps->p++;
    }
    char buf[64];
    size_t n = (size_t)(ps->p - start);
    if (n == 0 || n >= sizeof buf) return fail(ps, "a bad number");
    memcpy(buf, start, n);
    buf[n] = 0;
    char *end;
    v->num = strtod(buf, &end);
    if (*end) return fail(ps, "a bad number");
    v->type = J_NUM;
    if (integral) {
        errno = 0;
        long long i = strtoll(buf, &end, 10);
        v->is_int = !errno && !*end;
        v->ival = i;
    }
    return true;
}

static bool parse_container(parser *ps, jvalue *v, bool object) {
    if (++ps->depth > 64) return fail(ps, "nested too deeply");
    ps->p++;
    v->type = object ? J_OBJ : J_ARR;
    size_t cap = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
        ps->p++;
        ps->depth--;
        return true;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? 2 * cap : 4;
            v->items = xrealloc(v->items, cap * sizeof *v->items);
            if (object) v->keys = xrealloc(v->keys, cap * sizeof *v->keys);
        }
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected a string key");
            if (!parse_string(ps, &v->keys[v->n])) return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(v->keys[v->n]);
                return fail(ps, "expected ':' after a key");
            }
            ps->p++;
        }
        memset(&v->items[v->n], 0, sizeof *v->items);
        bool ok = parse_value(ps, &v->items[v->n]);
        v->n++; /* counted even when it failed, so json_free releases its parts */
        if (!ok) return false;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
            ps->p++;
            ps->depth--;
            return true;
        }
        return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "an unexpected character");
    ps->p += n;
    return true;
}

static bool parse_value(parser *ps, jvalue *v) {
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "the text ends early");
    char c = *ps->p;
    if (c == '{' || c == '[') return parse_container(ps, v, c == '{');
    if (c == '"') {
        v->type = J_STR;
        return parse_string(ps, &v->str);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps, v);
    if (c == 't' || c == 'f') {
        v->type = J_BOOL;
        v->num = c == 't';
        return literal(ps, c == 't' ? "true" : "false");
    }
    v->type = J_NULL;
    return literal(ps, "null");
}

static void free_parts(jvalue *v) {
    for (size_t i = 0; i < v->n; i++) {
        free_parts(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
}

jvalue *json_parse(const char *text, size_t len, char *err, size_t err_len) {
    parser ps = {text, text + len, NULL, 0};
    jvalue *v = xcalloc(1, sizeof *v);
    bool ok = parse_value(&ps, v);
    if (ok) {
        skip_ws(&ps);
        if (ps.p != ps.end) ok = fail(&ps, "extra text after the value");
    }
    if (!ok) {
        snprintf(err, err_len, "%s at byte %zu", ps.error, (size_t)(ps.p - text));
        json_free(v);
        return NULL;
    }
    return v;
}

void json_free(jvalue *v) {
    if (!v) return;
    free_parts(v);
    free(v);
}

const jvalue *json_get(const jvalue *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}
