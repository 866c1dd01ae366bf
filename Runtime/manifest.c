/* Parser of the manifest that the compiler embeds in every binary (docs/RUNTIME.md, "The
 * manifest"). A malformed manifest is a compiler bug or a version mismatch, so every error
 * says which line is wrong rather than guessing. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int line_no;

static _Noreturn void bad(const char *fmt, const char *arg) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    die("the manifest embedded in this binary is invalid (line %d: %s); rebuild it with the "
        "mdlc that matches this runtime",
        line_no, msg);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Undoes the %XX escapes of names and values in place. */
static char *unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%') {
            int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);
            if (lo < 0) bad("bad %%XX escape in '%s'", s);
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
    return s;
}

static dtype_t parse_dtype(const char *s) {
    if (strcmp(s, "f32") == 0) return DT_F32;
    if (strcmp(s, "i32") == 0) return DT_I32;
    if (strcmp(s, "bool") == 0) return DT_BOOL;
    bad("unknown dtype '%s'", s);
}

static int64_t parse_count(const char *s, const char *what) {
    int64_t v;
    if (!parse_i64(s, &v) || v < 0) bad(what, s);
    return v;
}

static double attr_number(char **tok, int n, const char *key, double fallback) {
    size_t k = strlen(key);
    for (int i = 0; i < n; i++) {
        if (strncmp(tok[i], key, k) == 0 && tok[i][k] == '=') {
            double v;
            if (!parse_f64(tok[i] + k + 1, &v)) bad("bad number in '%s'", tok[i]);
            return v;
        }
    }
    return fallback;
}

static char *split_kv(char *tok) {
    char *eq = strchr(tok, '=');
    if (!eq) bad("expected key=value, found '%s'", tok);
    *eq = 0;
    return eq + 1;
}

/* Parses "DTYPE RANK d1 .. dr" into a declaration; returns the tokens used. */
static int parse_decl(char **tok, int n, decl_t *d) {
    if (n < 2) bad("incomplete type%s", "");
    d->dtype = parse_dtype(tok[0]);
    int64_t rank = parse_count(tok[1], "bad rank '%s'");
    if (rank > MDL_MAX_RANK) bad("rank %s is larger than 8", tok[1]);
    if (n < 2 + rank) bad("fewer sizes than the rank %s", tok[1]);
    d->rank = (int)rank;
    for (int i = 0; i < d->rank; i++) {
        d->dims[i] = xstrdup(unescape(tok[2 + i]));
        int64_t v;
        d->fixed[i] = parse_i64(d->dims[i], &v) && v >= 0 ? v : -1;
    }
    return 2 + d->rank;
}

static const char *kind_names[] = {"step", "eval", "metric", "data", "proc", "grad"};

#define PUSH(arr, n, v)                                                                            \
    do {                                                                                           \
        arr = xrealloc(arr, sizeof *(arr) * (size_t)((n) + 1));                                    \
        (arr)[(n)++] = (v);                                                                        \
    } while (0)

manifest_t *manifest_parse(const char *text) {
    manifest_t *m = xcalloc(1, sizeof *m);
    char *copy = xstrdup(text);
    char **update_names = NULL, **eval_names = NULL;
    func_t *cur = NULL;
    bool header = false;
    line_no = 0;
    char *save_line = NULL;
    for (char *line = strtok_r(copy, "\n", &save_line); line; line = strtok_r(NULL, "\n", &save_line)) {
        line_no++;
        char *tok[4 + 2 * MDL_MAX_RANK + 64];
        int n = 0;
        char **extra = NULL; /* updates/evals lines may be long */
        int n_extra = 0;
        /* Exactly one space between tokens, so an empty token is an empty name (an unnamed result). */
        for (char *t = line; t;) {
            char *space = strchr(t, ' ');
            if (space) *space = 0;
            if (n < (int)(sizeof tok / sizeof *tok))
                tok[n++] = t;
            else
                PUSH(extra, n_extra, t);
            t = space ? space + 1 : NULL;
        }
        if (n == 1 && !*tok[0]) continue;
        if (n_extra && strcmp(tok[0], "updates") != 0 && strcmp(tok[0], "evals") != 0)
            bad("too many tokens in a '%s' record", tok[0]);
        const char *rec = tok[0];
        if (!header) {
            if (strcmp(rec, "mdl-manifest") != 0 || n != 2 || strcmp(tok[1], "1") != 0)
                bad("expected 'mdl-manifest 1', found '%s'", rec);
            header = true;
        } else if (cur) {
            if (strcmp(rec, "end") == 0) {
                cur = NULL;
            } else if (strcmp(rec, "input") == 0 || strcmp(rec, "output") == 0) {
                if (n < 2) bad("incomplete '%s' record", rec);
                decl_t d = {0};
                /* An unnamed output (a procedure's plain result) is named by its position. */
                d.name = *tok[1] || rec[0] == 'i' ? xstrdup(unescape(tok[1])) : xsprintf("%d", cur->n_out);
                if (!*d.name) bad("an input of '%s' has no name", cur->name);
                if (parse_decl(tok + 2, n - 2, &d) != n - 2) bad("extra tokens after the type of '%s'", d.name);
                if (rec[0] == 'i')
                    PUSH(cur->in, cur->n_in, d);
                else
                    PUSH(cur->out, cur->n_out, d);
            } else {
                bad("expected input, output or end in function, found '%s'", rec);
            }
        } else if (strcmp(rec, "module") == 0 && n == 2) {
            m->module = xstrdup(unescape(tok[1]));
        } else if (strcmp(rec, "hash") == 0 && n == 2) {
            m->hash = xstrdup(tok[1]);
        } else if (strcmp(rec, "global") == 0) {
            if (n < 6) bad("incomplete global record%s", "");
            global_t g = {0};
            g.name = xstrdup(unescape(tok[1]));
            if (strcmp(tok[2], "param") != 0 && strcmp(tok[2], "state") != 0) bad("expected param or state, found '%s'", tok[2]);
            g.is_param = tok[2][0] == 'p';
            decl_t d = {0};
            int used = 3 + parse_decl(tok + 3, n - 3, &d);
            g.dtype = d.dtype;
            g.rank = d.rank;
            g.count = 1;
            for (int i = 0; i < d.rank; i++) {
                if (d.fixed[i] < 0) bad("global '%s' has a symbolic size", g.name);
                g.shape[i] = d.fixed[i];
                if (g.shape[i] && g.count > INT64_MAX / 8 / g.shape[i]) bad("global '%s' is too large", g.name);
                g.count *= g.shape[i];
                free(d.dims[i]);
            }
            if (used >= n) bad("global '%s' has no initializer", g.name);
            const char *init = tok[used];
            char **attrs = tok + used + 1;
            int na = n - used - 1;
            if (strcmp(init, "zeros") == 0) {
                g.init = INIT_ZEROS;
            } else if (strcmp(init, "ones") == 0) {
                g.init = INIT_ONES;
            } else if (strcmp(init, "full") == 0) {
                g.init = INIT_FULL;
                g.a = attr_number(attrs, na, "value", 0);
            } else if (strcmp(init, "normal") == 0) {
                g.init = INIT_NORMAL;
                g.a = attr_number(attrs, na, "mean", 0);
                g.b = attr_number(attrs, na, "std", 1);
            } else if (strcmp(init, "uniform") == 0) {
                g.init = INIT_UNIFORM;
                g.a = attr_number(attrs, na, "low", 0);
                g.b = attr_number(attrs, na, "high", 1);
            } else {
                bad("unknown initializer '%s'", init);
            }
            PUSH(m->globals, m->n_globals, g);
        } else if (strcmp(rec, "data") == 0 && n >= 2) {
            m->data_source = xstrdup(unescape(tok[1]));
            for (int i = 2; i < n; i++) {
                kv_t kv;
                char *v = split_kv(tok[i]);
                kv.key = xstrdup(unescape(tok[i]));
                kv.value = xstrdup(unescape(v));
                PUSH(m->data_attrs, m->n_data_attrs, kv);
            }
        } else if (strcmp(rec, "optimizer") == 0 && n >= 3) {
            char *name = xstrdup(unescape(tok[1]));
            double lr = 1e-3;
            for (int i = 3; i < n; i++) {
                if (strncmp(tok[i], "lr=", 3) == 0) {
                    char *end;
                    lr = strtod(tok[i] + 3, &end);
                    if (*end || !(lr > 0)) bad("the optimizer setting %s is not a positive learning rate", tok[i]);
                }
            }
            m->optimizer_lr = xrealloc(m->optimizer_lr, sizeof *m->optimizer_lr * (size_t)(m->n_optimizers + 1));
            m->optimizer_lr[m->n_optimizers] = lr;
            PUSH(m->optimizers, m->n_optimizers, name);
        } else if (strcmp(rec, "recipe") == 0) {
            for (int i = 1; i < n; i++) {
                char *v = split_kv(tok[i]);
                int64_t x;
                if (!parse_i64(v, &x)) bad("recipe setting '%s' is not an integer", tok[i]);
                if (strcmp(tok[i], "seed") == 0) {
                    if (x < INT32_MIN || x > INT32_MAX) bad("seed %s is outside the i32 range", v);
                    m->seed = (int32_t)x;
                    m->has_seed = true;
                    continue;
                }
                int64_t *slot = strcmp(tok[i], "batch") == 0        ? &m->batch
                                : strcmp(tok[i], "epochs") == 0     ? &m->epochs
                                : strcmp(tok[i], "steps") == 0      ? &m->steps
                                : strcmp(tok[i], "rounds") == 0     ? &m->rounds
                                : strcmp(tok[i], "folds") == 0      ? &m->folds
                                : strcmp(tok[i], "eval_every") == 0 ? &m->eval_every
                                : strcmp(tok[i], "log_every") == 0  ? &m->log_every
                                                                    : NULL;
                if (!slot) bad("unknown recipe setting '%s'", tok[i]);
                if (x <= 0) bad("recipe setting '%s' must be positive", tok[i]);
                *slot = x;
            }
        } else if (strcmp(rec, "updates") == 0 || strcmp(rec, "evals") == 0) {
            char ***names = rec[0] == 'u' ? &update_names : &eval_names;
            int *count = rec[0] == 'u' ? &m->n_updates : &m->n_evals;
            for (int i = 1; i < n + n_extra; i++) PUSH(*names, *count, xstrdup(unescape(i < n ? tok[i] : extra[i - n])));
        } else if (strcmp(rec, "function") == 0 && n == 5) {
            func_t f = {0};
            f.index = (int)parse_count(tok[1], "bad function index '%s'");
            f.name = xstrdup(unescape(tok[2]));
            f.kind = -1;
            for (int k = 0; k < 6; k++)
                if (strcmp(tok[3], kind_names[k]) == 0) f.kind = k;
            if (f.kind < 0) bad("unknown function kind '%s'", tok[3]);
            if (strcmp(tok[4], "key=0") != 0 && strcmp(tok[4], "key=1") != 0) bad("expected key=0 or key=1, found '%s'", tok[4]);
            f.has_key = tok[4][4] == '1';
            PUSH(m->funcs, m->n_funcs, f);
            cur = &m->funcs[m->n_funcs - 1];
        } else {
            bad("unknown or incomplete record '%s'", rec);
        }
        free(extra);
    }
    if (!header) bad("it is empty%s", "");
    if (cur) bad("function '%s' has no 'end'", cur->name);
    if (!m->module || !m->hash) bad("the module or hash record is missing%s", "");
    for (int i = 0; i < m->n_funcs; i++) {
        if (m->funcs[i].index >= m->n_funcs) bad("function index of '%s' is out of range", m->funcs[i].name);
        for (int j = 0; j < i; j++)
            if (m->funcs[j].index == m->funcs[i].index) bad("two functions share the index of '%s'", m->funcs[i].name);
    }
    m->updates = xcalloc((size_t)m->n_updates, sizeof *m->updates);
    m->evals = xcalloc((size_t)m->n_evals, sizeof *m->evals);
    for (int i = 0; i < m->n_updates + m->n_evals; i++) {
        bool up = i < m->n_updates;
        const char *name = up ? update_names[i] : eval_names[i - m->n_updates];
        const func_t *f = manifest_func(m, name);
        if (!f) bad("the recipe names the unknown function '%s'", name);
        if (up && (f->kind != FN_STEP || f->n_out < 1 || f->out[0].dtype != DT_F32 || f->out[0].rank != 0))
            bad("update '%s' is not a step function returning an f32[] loss", name);
        if (!up && f->kind != FN_EVAL && (f->kind != FN_METRIC || f->n_in != 0))
            bad("'%s' in evals is not an eval function or a metric function without inputs", name);
        if (up)
            m->updates[i] = f;
        else
            m->evals[i - m->n_updates] = f;
    }
    for (int i = 0; i < m->n_updates; i++) free(update_names[i]);
    for (int i = 0; i < m->n_evals; i++) free(eval_names[i]);
    free(update_names);
    free(eval_names);
    /* A metric function runs at the end of training even when the recipe's list omits it. */
    const func_t *metrics = manifest_func(m, "metrics");
    bool listed = false;
    for (int i = 0; i < m->n_evals; i++) listed |= m->evals[i] == metrics;
    if (metrics && metrics->kind == FN_METRIC && metrics->n_in == 0 && !listed) {
        m->evals = xrealloc(m->evals, sizeof *m->evals * (size_t)(m->n_evals + 1));
        m->evals[m->n_evals++] = metrics;
    }
    free(copy);
    return m;
}

const func_t *manifest_func(const manifest_t *m, const char *name) {
    for (int i = 0; i < m->n_funcs; i++)
        if (strcmp(m->funcs[i].name, name) == 0) return &m->funcs[i];
    return NULL;
}

const char *manifest_data_attr(const manifest_t *m, const char *key) {
    for (int i = 0; i < m->n_data_attrs; i++)
        if (strcmp(m->data_attrs[i].key, key) == 0) return m->data_attrs[i].value;
    return NULL;
}
