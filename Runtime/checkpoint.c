/* Checkpoints and weight files: the model's globals in safetensors, with metadata that lets
 * --resume continue a run exactly (docs/RUNTIME.md, "Checkpoints"). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int64_t meta_int(const st_file *f, const char *key) {
    const char *v = st_meta(f, key);
    int64_t x;
    if (!v) return -1;
    if (!parse_i64(v, &x)) die("'%s': metadata '%s' is '%s', not an integer", f->path, key, v);
    return x;
}

st_file *ckpt_open(const manifest_t *m, const char *path, ckpt_info *info) {
    st_file *f = st_read(path);
    memset(info, 0, sizeof *info);
    const char *format = st_meta(f, "format");
    info->is_checkpoint = format && strcmp(format, "mdl-checkpoint") == 0;
    info->step = info->epoch = info->batch = info->round = info->fold = -1;
    if (!info->is_checkpoint) return f;
    const char *module = st_meta(f, "module"), *hash = st_meta(f, "hash");
    if (!module || strcmp(module, m->module) != 0)
        die("'%s' is a checkpoint of the model '%s', not of '%s'", path, module ? module : "?", m->module);
    if (!hash || strcmp(hash, m->hash) != 0)
        die("'%s' was written by a different model or compiler (hash %s, this binary %s)", path, hash ? hash : "none",
            m->hash);
    info->step = meta_int(f, "step");
    info->batch = meta_int(f, "batch");
    info->fold = meta_int(f, "fold");
    int64_t seed = meta_int(f, "seed");
    if (seed != -1 || st_meta(f, "seed")) {
        if (seed < INT32_MIN || seed > INT32_MAX) die("'%s': metadata 'seed' is outside the i32 range", path);
        info->has_seed = true;
        info->seed = (int32_t)seed;
    }
    const char *folds = st_meta(f, "fold_results");
    info->fold_results = folds ? xstrdup(folds) : NULL;
    return f;
}

static const char *st_name_of(dtype_t t) { return t == DT_F32 ? "F32" : t == DT_I32 ? "I32" : "BOOL"; }

void ckpt_apply(const model_t *md, const st_file *f, bool exact) {
    const manifest_t *m = md->m;
    strbuf missing = {0};
    int n_missing = 0;
    for (int gi = 0; gi < m->n_globals; gi++) {
        const global_t *g = &m->globals[gi];
        const st_tensor *t = st_find(f, g->name);
        if (!t) {
            if (exact || g->is_param) {
                if (n_missing < 5) sb_printf(&missing, "%s%s", n_missing ? ", " : "", g->name);
                n_missing++;
            }
            continue;
        }
        bool same = t->rank == g->rank;
        for (int k = 0; same && k < g->rank; k++) same = t->shape[k] == g->shape[k];
        if (!same) {
            char *want = shape_text(g->dtype, g->rank, g->shape), *got = shape_text(g->dtype, t->rank, t->shape);
            die("'%s': tensor '%s' has shape %s, but the model declares %s", f->path, g->name, strchr(got, '['), want);
        }
        if (exact && strcmp(t->dtype, st_name_of(g->dtype)) != 0)
            die("'%s': tensor '%s' is %s, but the model declares %s", f->path, g->name, t->dtype, dtype_name(g->dtype));
        st_convert(f, t, g->dtype, md->gbuf[gi]);
    }
    if (n_missing)
        die("'%s' lacks %d of the model's tensors: %s%s", f->path, n_missing, missing.p, n_missing > 5 ? ", ..." : "");
    strbuf unknown = {0};
    int n_unknown = 0;
    for (int i = 0; i < f->n; i++) {
        bool known = false;
        for (int gi = 0; gi < m->n_globals && !known; gi++) known = strcmp(m->globals[gi].name, f->t[i].name) == 0;
        if (!known && n_unknown++ < 5) sb_printf(&unknown, "%s%s", n_unknown > 1 ? ", " : "", f->t[i].name);
    }
    /* A misspelled name would otherwise silently keep its initial value. */
    if (n_unknown)
        die("'%s' has %d tensor(s) the model does not declare: %s%s", f->path, n_unknown, unknown.p,
            n_unknown > 5 ? ", ..." : "");
}

void ckpt_save(const model_t *md, const char *path, const ckpt_info *info) {
    const manifest_t *m = md->m;
    array_t *arrays = xcalloc((size_t)m->n_globals + 1, sizeof *arrays);
    char **names = xcalloc((size_t)m->n_globals + 1, sizeof *names);
    for (int i = 0; i < m->n_globals; i++) {
        const global_t *g = &m->globals[i];
        arrays[i].dtype = g->dtype;
        arrays[i].rank = g->rank;
        memcpy(arrays[i].shape, g->shape, sizeof g->shape);
        arrays[i].data = md->gbuf[i];
        names[i] = g->name;
    }
    char *keys[12], *values[12];
    int n = 0;
    keys[n] = "format", values[n++] = xstrdup("mdl-checkpoint");
    keys[n] = "module", values[n++] = xstrdup(m->module);
    keys[n] = "hash", values[n++] = xstrdup(m->hash);
    keys[n] = "step", values[n++] = xsprintf("%lld", (long long)info->step);
    keys[n] = "epoch", values[n++] = xsprintf("%lld", (long long)info->epoch);
    keys[n] = "seed", values[n++] = xsprintf("%d", info->seed);
    keys[n] = "batch", values[n++] = xsprintf("%lld", (long long)info->batch);
    if (info->round >= 0) keys[n] = "round", values[n++] = xsprintf("%lld", (long long)info->round);
    if (info->fold >= 0) keys[n] = "fold", values[n++] = xsprintf("%lld", (long long)info->fold);
    if (info->fold_results) keys[n] = "fold_results", values[n++] = xstrdup(info->fold_results);
    st_write(path, m->n_globals, names, arrays, n, keys, values);
    for (int i = 0; i < n; i++) free(values[i]);
    free(arrays);
    free(names);
}
