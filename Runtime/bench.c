/* The bench command: times whole training steps (every update function, in order) on one
 * fixed batch, for Tools/bench and for people comparing builds (docs/RUNTIME.md). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int cmp_f64(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted values, interpolated linearly between ranks. */
static double quantile(const double *sorted, int64_t n, double q) {
    if (n == 0) return NAN;
    double pos = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - (double)lo);
}

/* Appends (or finds) the batch array for `field`. */
static array_t *batch_add(batch_t *b, const char *field, bool *added) {
    for (int k = 0; k < b->n; k++)
        if (strcmp(b->names[k], field) == 0) {
            *added = false;
            return &b->arrays[k];
        }
    b->names = xrealloc(b->names, sizeof *b->names * (size_t)(b->n + 1));
    b->arrays = xrealloc(b->arrays, sizeof *b->arrays * (size_t)(b->n + 1));
    b->cap = xrealloc(b->cap, sizeof *b->cap * (size_t)(b->n + 1));
    b->names[b->n] = xstrdup(field);
    memset(&b->arrays[b->n], 0, sizeof b->arrays[b->n]);
    b->cap[b->n] = 0;
    *added = true;
    return &b->arrays[b->n++];
}

/* Random inputs of the declared shapes for every update function: f32 uniform in [0, 1), i32
 * in {0, 1}, bool 0/1. Sizes are the declared integers, `B` is the batch; any other symbolic
 * size (graph data's N and E) has no value bench could choose. */
static void random_batch(const manifest_t *m, int64_t batch, int32_t seed, batch_t *b) {
    for (int u = 0; u < m->n_updates; u++) {
        const func_t *f = m->updates[u];
        for (int i = 0; i < f->n_in; i++) {
            const decl_t *d = &f->in[i];
            const char *dot = strchr(d->name, '.');
            const char *field = dot ? dot + 1 : d->name;
            int64_t shape[MDL_MAX_RANK];
            for (int k = 0; k < d->rank; k++) {
                if (d->fixed[k] >= 0)
                    shape[k] = d->fixed[k];
                else if (strcmp(d->dims[k], "B") == 0)
                    shape[k] = batch;
                else
                    die("bench: input '%s' of @%s has the size '%s', which bench cannot choose for random inputs; "
                        "benchmark a model with generator data or with inputs sized by B",
                        d->name, f->name, d->dims[k]);
            }
            bool added;
            array_t *a = batch_add(b, field, &added);
            if (!added) {
                if (a->dtype != d->dtype || a->rank != d->rank || memcmp(a->shape, shape, sizeof(int64_t) * (size_t)d->rank) != 0)
                    die("bench: the update functions disagree on the type of the field '%s'", field);
                continue;
            }
            a->dtype = d->dtype;
            a->rank = d->rank;
            memcpy(a->shape, shape, sizeof(int64_t) * (size_t)d->rank);
            int64_t count = shape_count(d->rank, shape);
            a->data = xaligned(checked_mul((size_t)count, dtype_size(d->dtype), "a bench input") + 1);
            uint32_t stream = fnv1a32(field);
            for (int64_t e = 0; e < count; e++) {
                double r = mdl_rng_uniform(seed, stream, e);
                if (d->dtype == DT_F32)
                    ((float *)a->data)[e] = (float)r;
                else if (d->dtype == DT_I32)
                    ((int32_t *)a->data)[e] = r < 0.5 ? 0 : 1;
                else
                    ((uint8_t *)a->data)[e] = r < 0.5 ? 0 : 1;
            }
        }
    }
}

int cmd_bench(model_t *md, const bench_opts *o) {
    const manifest_t *m = md->m;
    if (m->n_updates == 0) die("the recipe has no update function (no 'minimize' was compiled into the step)");
    int64_t batch = o->batch ? o->batch : m->batch;
    if (batch <= 0) die("the recipe has no batch size; pass --batch N");
    int32_t seed = o->has_seed ? o->seed : m->has_seed ? m->seed : 0;
    bool generated = m->data_source && strcmp(m->data_source, "generator") == 0;

    model_init_globals(md, seed);
    batch_t b = {0};
    int64_t count = batch;
    const char *source;
    if (generated) {
        /* The first batch that training would see: data drawn from the initial globals, the
         * train rows in epoch 0's order. */
        dataset_t *ds = data_load(m, NULL);
        data_generate(md, ds, mdl_rng_fold(seed, DATA_SALT), "train");
        view_t v = data_view(ds, "train", 0, -1, seed);
        if (v.n == 0) die("the train split is empty");
        count = v.n < batch ? v.n : batch;
        shuffle(v.rows, v.n, seed, SHUFFLE_STREAM, 0);
        batch_gather(v.s, v.rows, count, &b);
        free(v.rows);
        source = "generated data";
    } else {
        random_batch(m, batch, seed, &b);
        source = "random inputs";
    }
    int64_t total = o->warmup + o->steps;
    model_set_total_steps(md, total);

    int nu = m->n_updates;
    array_t *in = update_inputs(m), out[1 + 64];
    double *times = xmalloc(sizeof(double) * (size_t)(o->steps + 1));
    double *first = xcalloc((size_t)nu, sizeof(double)), *last = xcalloc((size_t)nu, sizeof(double));
    for (int64_t s = 0; s < total; s++) {
        if (s == o->warmup) profile_reset(); /* --profile covers the timed steps */
        int32_t key = mdl_rng_fold(seed, (int32_t)s);
        double t0 = now_seconds();
        for (int k = 0; k < nu; k++) {
            const func_t *f = m->updates[k];
            if (f->n_out > 64) die("@%s has more than 64 outputs", f->name);
            batch_bind(&b, f, "train", in);
            model_call(md, f, in, key, out, "bench");
            last[k] = f->n_out > 0 && out[0].dtype == DT_F32 ? *(float *)out[0].data : NAN;
            if (s == 0) first[k] = last[k];
        }
        double dt = now_seconds() - t0;
        if (s >= o->warmup) times[s - o->warmup] = dt * 1e3;
    }
    for (int k = 0; k < nu; k++)
        if (!isfinite(last[k])) warn("bench: the loss of @%s is %g after %lld steps; the timings may not be representative", m->updates[k]->name, last[k], (long long)total);
    double *sorted = xmalloc(sizeof(double) * (size_t)(o->steps + 1));
    memcpy(sorted, times, sizeof(double) * (size_t)o->steps);
    qsort(sorted, (size_t)o->steps, sizeof(double), cmp_f64);
    double sum = 0;
    for (int64_t i = 0; i < o->steps; i++) sum += times[i];
    double med = quantile(sorted, o->steps, 0.5), p10 = quantile(sorted, o->steps, 0.1),
           p90 = quantile(sorted, o->steps, 0.9), mean = sum / (double)o->steps;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */

    if (o->json) {
        strbuf j = {0};
        sb_add(&j, "{\"module\":", 10);
        sb_json_string(&j, m->module);
        sb_printf(&j, ",\"batch\":%lld,\"threads\":%d,\"steps\":%lld,\"warmup\":%lld,\"seed\":%d,\"data\":", (long long)count,
                  o->threads, (long long)o->steps, (long long)o->warmup, seed);
        sb_json_string(&j, generated ? "generated" : "random");
        const char *keys[] = {"median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "mean_ms"};
        double vals[] = {med, p10, p90, sorted[0], sorted[o->steps - 1], mean};
        for (int i = 0; i < 6; i++) {
            sb_printf(&j, ",\"%s\":", keys[i]);
            sb_json_number(&j, vals[i]);
        }
        sb_add(&j, ",\"first_loss\":", 14);
        sb_json_number(&j, first[0]);
        sb_add(&j, ",\"last_loss\":", 13);
        sb_json_number(&j, last[0]);
        if (nu > 1) {
            sb_add(&j, ",\"first_losses\":[", 17);
            for (int k = 0; k < nu; k++) {
                if (k) sb_add(&j, ",", 1);
                sb_json_number(&j, first[k]);
            }
            sb_add(&j, "]", 1);
        }
        sb_printf(&j, ",\"peak_rss_mb\":%.1f,\"arena_mb\":%.1f,\"times_ms\":[", rss_mb, (double)arena_bytes() / 1048576.0);
        for (int64_t i = 0; i < o->steps; i++) sb_printf(&j, "%s%.6g", i ? "," : "", times[i]);
        sb_add(&j, "]}", 2);
        puts(j.p);
        free(j.p);
    } else {
        char fl[32], ll[32];
        format_number(fl, sizeof fl, first[0]);
        format_number(ll, sizeof ll, last[0]);
        printf("bench %s: %lld steps after %lld warm-up, batch %lld (%s), %d thread%s\n", m->module, (long long)o->steps,
               (long long)o->warmup, (long long)count, source, o->threads, o->threads == 1 ? "" : "s");
        printf("  ms/step   median %.3f  p10 %.3f  p90 %.3f  min %.3f  mean %.3f\n", med, p10, p90, sorted[0], mean);
        printf("  loss      first %s  last %s\n", fl, ll);
        printf("  peak RSS  %.1f MB (arena of temporaries %.1f MB)\n", rss_mb, (double)arena_bytes() / 1048576.0);
    }
    fflush(stdout);
    free(times);
    free(sorted);
    free(first);
    free(last);
    free(in);
    batch_free(&b);
    return 0;
}
