/* Evaluation: eval functions over a split in batches, metric functions once. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Keys are fixed per (seed, batch), so evaluating the same weights twice gives the same numbers. */
static int32_t eval_key(int32_t seed, int64_t batch_index) {
    return mdl_rng_fold(mdl_rng_fold(seed, EVAL_SALT), (int32_t)batch_index);
}

static int32_t metrics_key(int32_t seed) { return mdl_rng_fold(seed, METRICS_SALT); }

static double scalar_value(const func_t *f, int i, const array_t *a) {
    if (a->rank != 0) die("@%s: metric '%s' must be a scalar, but it is %s", f->name, f->out[i].name, shape_text(a->dtype, a->rank, a->shape));
    return a->dtype == DT_F32 ? *(float *)a->data : a->dtype == DT_I32 ? *(int32_t *)a->data : *(uint8_t *)a->data;
}

metrics_t eval_function(const model_t *md, const func_t *f, const view_t *v, int64_t batch, int32_t seed) {
    metrics_t r = {0};
    const char *dot = strchr(f->name, '.');
    r.label = xstrdup(f->kind == FN_METRIC ? "metrics" : dot ? dot + 1 : f->name);
    r.n = f->n_out;
    r.names = xcalloc((size_t)r.n + 1, sizeof *r.names);
    r.values = xcalloc((size_t)r.n + 1, sizeof *r.values);
    for (int i = 0; i < r.n; i++) r.names[i] = xstrdup(f->out[i].name);
    array_t *out = xcalloc((size_t)f->n_out + 1, sizeof *out);
    if (f->kind == FN_METRIC) {
        model_call(md, f, NULL, metrics_key(seed), out, "metrics");
        for (int i = 0; i < r.n; i++) r.values[i] = scalar_value(f, i, &out[i]);
        free(out);
        return r;
    }
    if (v->n == 0) die("@%s: the %s split is empty", f->name, r.label);
    batch_t b = {0};
    array_t *in = xcalloc((size_t)f->n_in + 1, sizeof *in);
    for (int64_t lo = 0, bi = 0; lo < v->n; lo += batch, bi++) {
        int64_t count = v->n - lo < batch ? v->n - lo : batch;
        batch_gather(v->s, v->rows + lo, count, &b);
        batch_bind(&b, f, r.label, in);
        char *context = xsprintf("evaluating the %s split (batch %lld)", r.label, (long long)bi);
        model_call(md, f, in, eval_key(seed, bi), out, context);
        free(context);
        for (int i = 0; i < r.n; i++) r.values[i] += scalar_value(f, i, &out[i]) * (double)count;
    }
    for (int i = 0; i < r.n; i++) r.values[i] /= (double)v->n;
    batch_free(&b);
    free(in);
    free(out);
    return r;
}

void metrics_print(const char *prefix, const metrics_t *r) {
    progress_clear();
    strbuf line = {0};
    sb_printf(&line, "%s%s%s:", prefix, strcmp(r->label, "metrics") == 0 ? "" : "eval ", r->label);
    for (int i = 0; i < r->n; i++) {
        char num[32];
        format_number(num, sizeof num, r->values[i]);
        sb_printf(&line, "%s%s %s", i ? "  " : " ", r->names[i], num);
    }
    puts(line.p);
    fflush(stdout);
    free(line.p);
}

void metrics_free(metrics_t *r) {
    for (int i = 0; i < r->n; i++) free(r->names[i]);
    free(r->names);
    free(r->values);
    free(r->label);
    memset(r, 0, sizeof *r);
}
