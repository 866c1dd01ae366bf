/* The model's globals and calls into the generated entry functions. */
#include "internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int32_t mdl_check_numerics = 0;

/* Kernels may fail on a pool thread, so the message slot is atomic. */
static _Atomic(const char *) last_error;
static atomic_flag nonfinite_reported = ATOMIC_FLAG_INIT;

void mdl_set_error(const char *message) { atomic_store(&last_error, message); }

int32_t mdl_report_nonfinite(const char *function, int64_t op, const char *op_text) {
    /* Several threads can find the same bad value; one report is enough. */
    if (!atomic_flag_test_and_set(&nonfinite_reported)) {
        progress_clear();
        fprintf(stderr, "error: non-finite value first produced by op #%lld in @%s: %s\n", (long long)op,
                function, op_text);
    }
    return 3;
}

void model_alloc(model_t *md, const manifest_t *m, const mdl_function *fns) {
    md->m = m;
    md->fns = fns;
    md->gbuf = xcalloc((size_t)m->n_globals + 1, sizeof *md->gbuf);
    for (int i = 0; i < m->n_globals; i++) {
        const global_t *g = &m->globals[i];
        md->gbuf[i] = xaligned(checked_mul((size_t)g->count, dtype_size(g->dtype), g->name));
    }
}

void model_init_globals(model_t *md, int32_t seed) {
    for (int gi = 0; gi < md->m->n_globals; gi++) {
        const global_t *g = &md->m->globals[gi];
        uint32_t stream = fnv1a32(g->name);
        for (int64_t i = 0; i < g->count; i++) {
            double v = g->init == INIT_ONES      ? 1
                       : g->init == INIT_FULL    ? g->a
                       : g->init == INIT_NORMAL  ? g->a + g->b * mdl_rng_normal(seed, stream, i)
                       : g->init == INIT_UNIFORM ? g->a + (g->b - g->a) * mdl_rng_uniform(seed, stream, i)
                                                 : 0;
            if (g->dtype == DT_F32)
                ((float *)md->gbuf[gi])[i] = (float)v;
            else if (g->dtype == DT_I32)
                ((int32_t *)md->gbuf[gi])[i] = (int32_t)fmax(fmin(round(v), INT32_MAX), INT32_MIN);
            else
                ((uint8_t *)md->gbuf[gi])[i] = v != 0;
        }
    }
}

/* Schedules (cosine, one-cycle) span @OPT.total_steps, which only the runtime knows. */
void model_set_total_steps(model_t *md, int64_t total) {
    for (int o = 0; o < md->m->n_optimizers; o++) {
        char *name = xsprintf("%s.total_steps", md->m->optimizers[o]);
        for (int gi = 0; gi < md->m->n_globals; gi++) {
            const global_t *g = &md->m->globals[gi];
            if (strcmp(g->name, name) == 0 && g->dtype == DT_F32 && g->count == 1) *(float *)md->gbuf[gi] = (float)total;
        }
        free(name);
    }
}

/* The generated update multiplies its scheduled rate by @OPT.lr_scale. */
void model_set_lr(model_t *md, double lr) {
    for (int o = 0; o < md->m->n_optimizers; o++) {
        char *name = xsprintf("%s.lr_scale", md->m->optimizers[o]);
        bool found = false;
        for (int gi = 0; gi < md->m->n_globals; gi++) {
            const global_t *g = &md->m->globals[gi];
            if (strcmp(g->name, name) == 0 && g->dtype == DT_F32 && g->count == 1) {
                *(float *)md->gbuf[gi] = (float)(lr / md->m->optimizer_lr[o]);
                found = true;
            }
        }
        if (!found) die("--lr: the optimizer '%s' has no learning-rate scale (the binary is older than --lr support)", md->m->optimizers[o]);
        free(name);
    }
}

void model_call(const model_t *md, const func_t *f, const array_t *in, int32_t key, array_t *out,
                const char *context) {
    /* On the stack: a call in a training loop allocates nothing (results are the callee's). */
    void *in_data[f->n_in + 1], *out_data[f->n_out + 1];
    int64_t in_shapes[f->n_in * MDL_MAX_RANK + 1], out_shapes[f->n_out * MDL_MAX_RANK + 1];
    memset(in_shapes, 0, sizeof in_shapes);
    memset(out_shapes, 0, sizeof out_shapes);
    memset(out_data, 0, sizeof out_data);
    for (int i = 0; i < f->n_in; i++) {
        /* Callers convert and check dtypes; ranks are the one thing the callee cannot see. */
        if (in[i].dtype != f->in[i].dtype || in[i].rank != f->in[i].rank) {
            char *got = shape_text(in[i].dtype, in[i].rank, in[i].shape);
            die("%s: input '%s' of @%s must have dtype %s and rank %d, got %s", context, f->in[i].name, f->name,
                dtype_name(f->in[i].dtype), f->in[i].rank, got);
        }
        in_data[i] = in[i].data;
        memcpy(in_shapes + (size_t)i * MDL_MAX_RANK, in[i].shape, sizeof(int64_t) * (size_t)in[i].rank);
    }
    atomic_store(&last_error, NULL);
    int32_t rc = md->fns[f->index](md->gbuf, in_data, in_shapes, out_data, out_shapes, key);
    if (rc != 0) {
        const char *msg = atomic_load(&last_error);
        if (rc == 3) die("%s: @%s stopped at the non-finite value reported above", context, f->name);
        /* Generated messages name their function already ("@step0: input 'b.x' must ..."). */
        if (msg && msg[0] == '@') die("%s: %s", context, msg);
        if (msg) die("%s: @%s: %s", context, f->name, msg);
        die("%s: @%s failed with status %d (%s)", context, f->name, rc,
            rc == 1 ? "bad input shape" : rc == 2 ? "index out of range" : rc == 4 ? "out of memory" : "unknown status");
    }
    for (int i = 0; i < f->n_out; i++) {
        const decl_t *d = &f->out[i];
        array_t *a = &out[i];
        a->dtype = d->dtype;
        a->rank = d->rank;
        a->data = out_data[i];
        for (int k = 0; k < d->rank; k++) {
            a->shape[k] = out_shapes[(size_t)i * MDL_MAX_RANK + k];
            if (a->shape[k] < 0 || (d->fixed[k] >= 0 && a->shape[k] != d->fixed[k]))
                die("%s: @%s returned output '%s' with size %lld on axis %d, declared %s", context, f->name, d->name,
                    (long long)a->shape[k], k, d->dims[k]);
        }
        if (!a->data && shape_count(a->rank, a->shape) > 0) die("%s: @%s returned no buffer for output '%s'", context, f->name, d->name);
    }
}

array_t *update_inputs(const manifest_t *m) {
    int most = 0;
    for (int k = 0; k < m->n_updates; k++)
        if (m->updates[k]->n_in > most) most = m->updates[k]->n_in;
    return xcalloc((size_t)most + 1, sizeof(array_t));
}

void arrays_free(array_t *a, int n) {
    for (int i = 0; i < n; i++) {
        free(a[i].data);
        a[i].data = NULL;
    }
}
