/* The commands besides train: eval, grad and the model's procedures. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Weights for eval/grad/procedures: a checkpoint or any safetensors with every parameter. */
static st_file *load_weights(const model_t *md, const char *path, ckpt_info *info) {
    if (!path) {
        note("no --load given: using freshly initialized weights");
        memset(info, 0, sizeof *info);
        info->step = info->epoch = info->batch = info->round = info->fold = -1;
        return NULL;
    }
    return ckpt_open(md->m, path, info);
}

int cmd_eval(model_t *md, const train_opts *o) {
    const manifest_t *m = md->m;
    ckpt_info info;
    st_file *w = load_weights(md, o->load, &info);
    int32_t seed = o->has_seed ? o->seed : info.has_seed ? info.seed : m->has_seed ? m->seed : 0;
    int64_t batch = o->batch ? o->batch : info.batch > 0 ? info.batch : m->batch;
    if (batch <= 0) die("the recipe has no batch size; pass --batch N");
    if (m->n_evals == 0) die("the model has no eval blocks to run");
    /* Generated data are drawn from the initial weights, as at the start of training. */
    model_init_globals(md, seed);
    bool needs_data = false;
    for (int i = 0; i < m->n_evals; i++) needs_data |= m->evals[i]->kind == FN_EVAL;
    dataset_t *ds = needs_data ? data_load(m, o->data) : NULL;
    if (needs_data && strcmp(m->data_source, "generator") == 0) data_generate(md, ds, mdl_rng_fold(seed, DATA_SALT), NULL);
    if (w) ckpt_apply(md, w, false);
    /* A cross-validation checkpoint is evaluated on the fold it held out. */
    int64_t folds = m->folds && info.fold >= 0 ? m->folds : 0, fold = folds ? info.fold : -1;
    int32_t fold_seed = folds ? (int32_t)((uint32_t)seed + (uint32_t)fold) : seed;
    char *prefix = folds ? xsprintf("fold %lld/%lld  ", (long long)fold + 1, (long long)folds) : xstrdup("");
    for (int i = 0; i < m->n_evals; i++) {
        const func_t *f = m->evals[i];
        view_t v = {0};
        if (f->kind == FN_EVAL) {
            const char *dot = strchr(f->name, '.');
            v = data_view(ds, dot ? dot + 1 : f->name, folds, fold, seed);
        }
        metrics_t r = eval_function(md, f, &v, batch, fold_seed);
        metrics_print(prefix, &r);
        metrics_free(&r);
        free(v.rows);
    }
    free(prefix);
    st_free(w);
    return 0;
}

/* Checks an input's shape against its declaration: the rank, and every size written as a number. */
static void check_shape(const func_t *f, const decl_t *d, int rank, const int64_t *shape, const char *source) {
    bool ok = rank == d->rank;
    for (int k = 0; ok && k < rank; k++) ok = d->fixed[k] < 0 || d->fixed[k] == shape[k];
    if (ok) return;
    strbuf want = {0};
    sb_printf(&want, "%s[", dtype_name(d->dtype));
    for (int k = 0; k < d->rank; k++) sb_printf(&want, "%s%s", k ? "," : "", d->dims[k]);
    char *got = shape_text(d->dtype, rank, shape);
    die("%s has shape %s, but @%s takes '%s' as %s]", source, strchr(got, '['), f->name, d->name, want.p);
}

/* An input from a safetensors file: the tensor named like the input's field (or the whole
 * input name), or for a procedure's --in the file's only tensor. */
static void input_from_file(const func_t *f, const decl_t *d, const char *path, bool sole_ok, array_t *a) {
    st_file *sf = st_read(path);
    const char *dot = strchr(d->name, '.');
    const st_tensor *t = st_find(sf, dot ? dot + 1 : d->name);
    if (!t) t = st_find(sf, d->name);
    if (!t && sole_ok && sf->n == 1) t = &sf->t[0];
    if (!t) {
        strbuf have = {0};
        for (int i = 0; i < sf->n; i++) sb_printf(&have, "%s%s", i ? ", " : "", sf->t[i].name);
        die("'%s' has no tensor '%s' for @%s (it has %s)", path, dot ? dot + 1 : d->name, f->name, have.p ? have.p : "none");
    }
    char *source = xsprintf("'%s' tensor '%s'", path, t->name);
    check_shape(f, d, t->rank, t->shape, source);
    free(source);
    a->dtype = d->dtype;
    a->rank = t->rank;
    memcpy(a->shape, t->shape, sizeof a->shape);
    a->data = xaligned((size_t)shape_count(t->rank, t->shape) * dtype_size(d->dtype));
    st_convert(sf, t, d->dtype, a->data);
    st_free(sf);
}

/* "1,2,3" as a rank-1 input, or one number as a scalar. */
static bool input_inline(const func_t *f, const decl_t *d, const char *spec, array_t *a) {
    int64_t n = 1;
    for (const char *p = spec; *p; p++) n += *p == ',';
    double *v = xmalloc(sizeof(double) * (size_t)n);
    char *copy = xstrdup(spec), *save = NULL;
    int64_t k = 0;
    bool ok = true;
    for (char *item = strtok_r(copy, ",", &save); item && ok; item = strtok_r(NULL, ",", &save)) ok = parse_f64(item, &v[k++]);
    free(copy);
    if (!ok || k != n) {
        free(v);
        return false;
    }
    if (d->rank > 1 || (d->rank == 0 && n != 1))
        die("--in %s: a list of %lld numbers does not fit %s input of rank %d; give a safetensors file", d->name, (long long)n,
            dtype_name(d->dtype), d->rank);
    a->dtype = d->dtype;
    a->rank = d->rank;
    a->shape[0] = n;
    check_shape(f, d, a->rank, a->shape, "--in");
    a->data = xaligned((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        if (d->dtype == DT_F32) {
            ((float *)a->data)[i] = (float)v[i];
        } else if (d->dtype == DT_BOOL) {
            ((uint8_t *)a->data)[i] = v[i] != 0;
        } else {
            if (v[i] != (double)(int32_t)v[i]) die("--in %s: %g is not an i32 value", d->name, v[i]);
            ((int32_t *)a->data)[i] = (int32_t)v[i];
        }
    }
    free(v);
    return true;
}

static void input_text(const func_t *f, const decl_t *d, const char *text, array_t *a) {
    if (d->dtype != DT_I32 || d->rank != 1)
        die("--text %s: the input is %s of rank %d, text becomes i32 tokens of rank 1", d->name, dtype_name(d->dtype), d->rank);
    int64_t n = 0;
    a->data = xaligned(strlen(text) * 4 + 4);
    for (const char *p = text; *p; p++) {
        int t = text_token((unsigned char)*p);
        if (t >= 0) ((int32_t *)a->data)[n++] = t;
    }
    a->dtype = DT_I32;
    a->rank = 1;
    a->shape[0] = n;
    check_shape(f, d, 1, a->shape, "--text");
}

/* Fills the inputs of f from --in/--text specifications "name=...". */
static void proc_inputs(const func_t *f, const call_opts *o, array_t *in) {
    bool *given = xcalloc((size_t)f->n_in + 1, sizeof *given);
    for (int s = 0; s < o->n_in + o->n_text; s++) {
        bool is_text = s >= o->n_in;
        const char *spec = is_text ? o->texts[s - o->n_in] : o->ins[s];
        const char *flag = is_text ? "--text" : "--in";
        const char *eq = strchr(spec, '=');
        if (!eq) die_usage("%s '%s': expected NAME=%s", flag, spec, is_text ? "TEXT" : "FILE");
        int i = 0;
        while (i < f->n_in && (strlen(f->in[i].name) != (size_t)(eq - spec) || strncmp(f->in[i].name, spec, (size_t)(eq - spec)) != 0)) i++;
        if (i == f->n_in) {
            strbuf names = {0};
            for (int k = 0; k < f->n_in; k++) sb_printf(&names, "%s%s", k ? ", " : "", f->in[k].name);
            die_usage("%s: @%s has no input '%.*s' (its inputs: %s)", flag, f->name, (int)(eq - spec), spec,
                      names.p ? names.p : "none");
        }
        if (given[i]) die_usage("%s: input '%s' is given twice", flag, f->in[i].name);
        given[i] = true;
        const char *value = eq + 1;
        if (is_text)
            input_text(f, &f->in[i], value, &in[i]);
        else if (file_exists(value))
            input_from_file(f, &f->in[i], value, true, &in[i]);
        else if (!input_inline(f, &f->in[i], value, &in[i]))
            die("--in %s: no such file '%s' (and not a list of numbers)", f->in[i].name, value);
    }
    for (int i = 0; i < f->n_in; i++)
        if (!given[i]) die_usage("@%s needs its input '%s'; pass --in %s=FILE.safetensors", f->name, f->in[i].name, f->in[i].name);
    free(given);
}

int cmd_grad(model_t *md, const call_opts *o) {
    const manifest_t *m = md->m;
    char *name = xsprintf("grad.step%lld", (long long)o->step);
    const func_t *f = manifest_func(m, name);
    if (!f || f->kind != FN_GRAD) {
        int n = 0;
        for (int i = 0; i < m->n_funcs; i++) n += m->funcs[i].kind == FN_GRAD;
        die("--step %lld: this binary has no function %s (it has %d gradient function(s))", (long long)o->step, name, n);
    }
    if (!o->batch_file) die_usage("grad needs --batch BATCH.safetensors");
    if (!o->out) die_usage("grad needs --out GRADS.safetensors");
    int32_t seed = o->has_seed ? o->seed : 0; /* as 'mdlc grad', so the two can be compared */
    model_init_globals(md, seed);
    ckpt_info info;
    st_file *w = o->load ? ckpt_open(m, o->load, &info) : NULL;
    if (w) ckpt_apply(md, w, false);
    array_t *in = xcalloc((size_t)f->n_in + 1, sizeof *in);
    for (int i = 0; i < f->n_in; i++) input_from_file(f, &f->in[i], o->batch_file, false, &in[i]);
    array_t *out = xcalloc((size_t)f->n_out + 1, sizeof *out);
    model_call(md, f, in, seed, out, "grad");
    bool *converted = xcalloc((size_t)f->n_out + 1, sizeof *converted);
    char **names = xcalloc((size_t)f->n_out + 1, sizeof *names);
    for (int i = 0; i < f->n_out; i++) {
        names[i] = f->out[i].name;
        if (out[i].dtype != DT_F32) { /* gradients are f32 anyway; this keeps the file uniform */
            int64_t n = shape_count(out[i].rank, out[i].shape);
            float *conv = xmalloc(sizeof(float) * (size_t)(n + 1));
            for (int64_t k = 0; k < n; k++)
                conv[k] = out[i].dtype == DT_I32 ? (float)((int32_t *)out[i].data)[k] : (float)((uint8_t *)out[i].data)[k];
            out[i].data = conv; /* freed below; the function's own block stays its own */
            out[i].dtype = DT_F32;
            converted[i] = true;
        }
    }
    st_write(o->out, f->n_out, names, out, 0, NULL, NULL);
    for (int i = 0; i < f->n_out; i++)
        if (strcmp(f->out[i].name, "loss") == 0 && out[i].rank == 0) printf("loss %.9g\n", *(float *)out[i].data);
    printf("wrote %d tensors to '%s'\n", f->n_out, o->out);
    for (int i = 0; i < f->n_out; i++)
        if (converted[i]) free(out[i].data);
    free(converted);
    arrays_free(in, f->n_in);
    free(out);
    free(in);
    free(names);
    free(name);
    st_free(w);
    return 0;
}

static void print_element(strbuf *b, const array_t *a, int64_t i) {
    if (a->dtype == DT_F32)
        sb_printf(b, "%.6g", ((float *)a->data)[i]);
    else if (a->dtype == DT_I32)
        sb_printf(b, "%d", ((int32_t *)a->data)[i]);
    else
        sb_printf(b, "%s", ((uint8_t *)a->data)[i] ? "true" : "false");
}

int cmd_proc(model_t *md, const func_t *f, const call_opts *o) {
    const manifest_t *m = md->m;
    int32_t seed = o->has_seed ? o->seed : m->has_seed ? m->seed : 0;
    model_init_globals(md, seed);
    ckpt_info info;
    st_file *w = load_weights(md, o->load, &info);
    if (w) ckpt_apply(md, w, false);
    array_t *in = xcalloc((size_t)f->n_in + 1, sizeof *in);
    proc_inputs(f, o, in);
    array_t *out = xcalloc((size_t)f->n_out + 1, sizeof *out);
    model_call(md, f, in, seed, out, f->name);

    const char *out_path = o->out;
    char *default_out = xsprintf("%s.safetensors", f->name);
    if (!out_path) out_path = default_out;
    char **names = xcalloc((size_t)f->n_out + 1, sizeof *names);
    array_t *big = xcalloc((size_t)f->n_out + 1, sizeof *big);
    int n_big = 0, n_images = 0;
    bool text = m->data_source && strcmp(m->data_source, "shakespeare") == 0;
    for (int i = 0; i < f->n_out; i++) {
        const array_t *a = &out[i];
        int64_t n = shape_count(a->rank, a->shape);
        bool unnamed = f->n_out == 1 && strcmp(f->out[i].name, "0") == 0;
        strbuf line = {0};
        if (!unnamed) sb_printf(&line, "%s: ", f->out[i].name);
        if (text && a->dtype == DT_I32 && a->rank == 1) { /* tokens of the character models: show the text */
            for (int64_t k = 0; k < n; k++) {
                int t = ((int32_t *)a->data)[k];
                char c = t == 0 ? '\n' : t >= 1 && t <= 95 ? (char)(t + 31) : '?';
                sb_add(&line, &c, 1);
            }
            puts(line.p);
        } else if (n <= 16) {
            if (a->rank > 0) {
                char *shape = shape_text(a->dtype, a->rank, a->shape);
                sb_printf(&line, "%s [", shape);
                free(shape);
            }
            for (int64_t k = 0; k < n; k++) {
                if (k) sb_add(&line, ", ", 2);
                print_element(&line, a, k);
            }
            if (a->rank > 0) sb_add(&line, "]", 1);
            puts(line.p);
        }
        free(line.p);
        if (n > 16) {
            names[n_big] = f->out[i].name;
            big[n_big++] = *a;
        }
        if (a->dtype == DT_F32 && a->rank >= 1 && a->shape[a->rank - 1] == 784 && n > 0) n_images++;
    }
    if (n_big) {
        st_write(out_path, n_big, names, big, 0, NULL, NULL);
        printf("wrote %d output(s) to '%s'\n", n_big, out_path);
    }
    for (int i = 0; i < f->n_out; i++) {
        const array_t *a = &out[i];
        if (!(a->dtype == DT_F32 && a->rank >= 1 && a->shape[a->rank - 1] == 784 && shape_count(a->rank, a->shape) > 0)) continue;
        /* 784 = 28 x 28: MNIST-shaped images, shown as a grid of tiles. */
        char *base = replace_suffix(out_path, ".safetensors", "");
        char *png = n_images == 1 ? xsprintf("%s.png", base) : xsprintf("%s-%s.png", base, f->out[i].name);
        if (png_tiles(png, a->data, shape_count(a->rank, a->shape) / 784, 28)) printf("wrote image grid '%s'\n", png);
        free(png);
        free(base);
    }
    fflush(stdout);
    arrays_free(in, f->n_in);
    free(out);
    free(in);
    free(big);
    free(names);
    free(default_out);
    st_free(w);
    return 0;
}
