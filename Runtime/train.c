/* The training loop (docs/RUNTIME.md, "Training"). Everything random derives from the seed
 * and the update index, so a run resumed from a checkpoint replays exactly the batches and
 * keys of an uninterrupted one. */
#include "internal.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    model_t *md;
    const manifest_t *m;
    const train_opts *o;
    dataset_t *ds;
    bool generated;   /* the data come from data.* functions */
    int32_t seed;     /* of the run; a fold trains with seed + fold */
    int64_t batch;
    bool by_steps;    /* the length is a number of updates rather than of epochs */
    int64_t epochs, steps, rounds, folds;
    int64_t log_every, eval_every, progress_every;
    const char *save_path;
    runlog_t log;
    double started;
    int64_t steps_done; /* updates run by this process, for the final rate */
    int64_t step_offset; /* updates of the folds before this one: the loss curve's x axis */
    strbuf fold_results; /* "split.metric=value,...;" per completed fold */
    int n_last;
    metrics_t *last; /* the latest evaluation, for the final record */
} run_t;

/* Where one fold (or the whole run) stands. */
typedef struct {
    int64_t fold; /* -1 without folds */
    int32_t seed;
    view_t train;
    int64_t n, per_epoch, per_round, epochs_per_round, total;
} phase_t;

static char *fmt_duration(double s) {
    long t = s < 0 || !isfinite(s) ? 0 : lround(s);
    return t >= 3600 ? xsprintf("%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60) : xsprintf("%ld:%02ld", t / 60, t % 60);
}

static void save_checkpoint(run_t *r, const phase_t *ph, int64_t step) {
    ckpt_info info = {0};
    info.step = step;
    info.epoch = step / ph->per_epoch;
    info.seed = r->seed;
    info.batch = r->batch;
    info.round = r->rounds > 1 ? step / ph->per_round : -1;
    info.fold = ph->fold;
    info.fold_results = r->folds ? r->fold_results.p : NULL;
    ckpt_save(r->md, r->save_path, &info);
}

static void set_last(run_t *r, metrics_t *results, int n) {
    for (int i = 0; i < r->n_last; i++) metrics_free(&r->last[i]);
    free(r->last);
    r->last = results;
    r->n_last = n;
}

/* Runs the eval functions (and the metric function when `with_metrics`), prints and logs them. */
static void evaluate(run_t *r, const phase_t *ph, int64_t step, bool with_metrics) {
    metrics_t *results = xcalloc((size_t)r->m->n_evals + 1, sizeof *results);
    int n = 0;
    char *prefix = ph->fold >= 0 ? xsprintf("fold %lld/%lld  ", (long long)ph->fold + 1, (long long)r->folds) : xstrdup("");
    for (int i = 0; i < r->m->n_evals; i++) {
        const func_t *f = r->m->evals[i];
        if (f->kind == FN_METRIC && !with_metrics) continue;
        view_t v = {0};
        if (f->kind == FN_EVAL) {
            const char *dot = strchr(f->name, '.');
            v = data_view(r->ds, dot ? dot + 1 : f->name, r->folds, ph->fold, r->seed);
        }
        results[n] = eval_function(r->md, f, &v, r->batch, ph->seed);
        free(v.rows);
        metrics_print(prefix, &results[n]);
        strbuf rec = {0};
        sb_printf(&rec, "{\"event\":\"eval\",\"step\":%lld", (long long)step);
        if (ph->fold >= 0) sb_printf(&rec, ",\"fold\":%lld", (long long)ph->fold);
        sb_add(&rec, ",\"split\":", 9);
        sb_json_string(&rec, results[n].label);
        for (int k = 0; k < results[n].n; k++) {
            sb_add(&rec, ",", 1);
            sb_json_string(&rec, results[n].names[k]);
            sb_add(&rec, ":", 1);
            sb_json_number(&rec, results[n].values[k]);
        }
        sb_add(&rec, "}", 1);
        runlog_write(&r->log, &rec);
        free(rec.p);
        n++;
    }
    free(prefix);
    set_last(r, results, n);
}

static void record_fold(run_t *r) {
    for (int i = 0; i < r->n_last; i++)
        for (int k = 0; k < r->last[i].n; k++)
            sb_printf(&r->fold_results, "%s%s.%s=%.17g", i || k ? "," : "", r->last[i].label, r->last[i].names[k],
                      r->last[i].values[k]);
    sb_add(&r->fold_results, ";", 1);
}

static void make_phase(run_t *r, phase_t *ph, int64_t fold) {
    ph->fold = fold;
    ph->seed = fold >= 0 ? (int32_t)((uint32_t)r->seed + (uint32_t)fold) : r->seed;
    free(ph->train.rows);
    ph->train = data_view(r->ds, "train", r->folds, fold, r->seed);
    ph->n = ph->train.n;
    if (ph->n == 0) die("the train split is empty");
    /* Full batches only; a split smaller than one batch is a single partial batch. */
    ph->per_epoch = ph->n >= r->batch ? ph->n / r->batch : 1;
    ph->per_round = r->by_steps ? r->steps : r->epochs * ph->per_epoch;
    ph->epochs_per_round = (ph->per_round + ph->per_epoch - 1) / ph->per_epoch;
    ph->total = ph->per_round * r->rounds;
}

static void progress_line(run_t *r, const phase_t *ph, int64_t step, int64_t done, double loss, double busy, strbuf *line) {
    int64_t u = step - 1, ur = u % ph->per_round, round = u / ph->per_round;
    int64_t epoch = ur / ph->per_epoch; /* within the round */
    line->len = 0;
    if (ph->fold >= 0) sb_printf(line, "fold %lld/%lld  ", (long long)ph->fold + 1, (long long)r->folds);
    if (r->rounds > 1) sb_printf(line, "round %lld/%lld  ", (long long)round + 1, (long long)r->rounds);
    char num[32];
    format_number(num, sizeof num, loss);
    double rate = busy > 0 ? (double)done / busy : 0;
    char *eta = fmt_duration(rate > 0 ? (double)(ph->total - step) / rate : 0);
    sb_printf(line, "epoch %lld/%lld  step %lld/%lld  loss %s  %.0f samples/s  ETA %s", (long long)epoch + 1,
              (long long)ph->epochs_per_round, (long long)step, (long long)ph->total, num,
              rate * (double)(ph->n < r->batch ? ph->n : r->batch), eta);
    free(eta);
}

/* Trains one phase from update `start`; on SIGINT/SIGTERM saves and exits. */
static void train_phase(run_t *r, phase_t *ph, int64_t start) {
    const manifest_t *m = r->m;
    int nu = m->n_updates;
    int64_t count = ph->n < r->batch ? ph->n : r->batch;
    int64_t *perm = xmalloc(sizeof(int64_t) * (size_t)(ph->n + 1));
    int64_t perm_epoch = -1;
    batch_t b = {0};
    /* Everything a step needs is allocated here: the loop itself allocates nothing. */
    array_t *in = update_inputs(m), out[1 + 64];
    char context[64];
    double *loss_sum = xcalloc((size_t)nu, sizeof(double));
    int64_t loss_n = 0;
    double shown_loss = NAN, busy = 0, window_busy = 0;
    int64_t window_steps = 0;
    strbuf line = {0};
    bool evaluated_at_end = false;
    for (int64_t u = start; u < ph->total; u++) {
        double t0 = now_seconds();
        int64_t round = u / ph->per_round, ur = u % ph->per_round, e = ur / ph->per_epoch, j = ur % ph->per_epoch;
        if (r->generated && r->rounds > 1 && round > 0 && (ur == 0 || u == start)) {
            if (ur != 0) /* only at u == start */
                warn("resuming inside round %lld: its data are drawn again from the checkpoint's weights, so this run "
                     "may differ from an uninterrupted one (checkpoints at round ends resume exactly)",
                     (long long)round + 1);
            int64_t before = ph->n;
            data_generate(r->md, r->ds, mdl_rng_fold(r->seed, (int32_t)(DATA_SALT + round)), "train");
            make_phase(r, ph, ph->fold);
            if (ph->n != before)
                die("round %lld drew %lld train examples, the first round %lld", (long long)round + 1, (long long)ph->n,
                    (long long)before);
        }
        int64_t epoch = round * ph->epochs_per_round + e;
        if (epoch != perm_epoch) {
            memcpy(perm, ph->train.rows, sizeof(int64_t) * (size_t)ph->n);
            shuffle(perm, ph->n, ph->seed, SHUFFLE_STREAM, epoch);
            perm_epoch = epoch;
        }
        batch_gather(ph->train.s, perm + j * r->batch, count, &b);
        int32_t key = mdl_rng_fold(ph->seed, (int32_t)u);
        for (int k = 0; k < nu; k++) {
            const func_t *f = m->updates[k];
            if (f->n_out > 64) die("@%s has more than 64 outputs", f->name);
            batch_bind(&b, f, "train", in);
            snprintf(context, sizeof context, "step %lld", (long long)u + 1);
            model_call(r->md, f, in, key, out, context);
            double loss = *(float *)out[0].data;
            if (!isfinite(loss))
                die("loss is %s at step %lld (update @%s); run with --check-numerics to find the op that first produces "
                    "a non-finite value",
                    isnan(loss) ? "nan" : loss > 0 ? "inf" : "-inf", (long long)u + 1, f->name);
            loss_sum[k] += loss;
        }
        loss_n++;
        r->steps_done++;
        int64_t step = u + 1;
        double dt = now_seconds() - t0;
        busy += dt;
        window_busy += dt;
        window_steps++;

        if (step % r->log_every == 0 || step == ph->total) {
            double now = now_seconds();
            shown_loss = loss_sum[0] / (double)loss_n;
            strbuf rec = {0};
            sb_printf(&rec, "{\"event\":\"step\",\"step\":%lld,\"epoch\":%lld", (long long)step, (long long)epoch + 1);
            if (r->rounds > 1) sb_printf(&rec, ",\"round\":%lld", (long long)round + 1);
            if (ph->fold >= 0)
                sb_printf(&rec, ",\"fold\":%lld,\"run_step\":%lld", (long long)ph->fold, (long long)(r->step_offset + step));
            sb_add(&rec, ",\"loss\":", 8);
            sb_json_number(&rec, shown_loss);
            if (nu > 1) {
                sb_add(&rec, ",\"losses\":[", 11);
                for (int k = 0; k < nu; k++) {
                    if (k) sb_add(&rec, ",", 1);
                    sb_json_number(&rec, loss_sum[k] / (double)loss_n);
                }
                sb_add(&rec, "]", 1);
            }
            sb_printf(&rec, ",\"samples_per_s\":%.1f,\"time_s\":%.3f}",
                      window_busy > 0 ? (double)(window_steps * count) / window_busy : 0.0, now - r->started);
            runlog_write(&r->log, &rec);
            free(rec.p);
            runlog_point(&r->log, (double)(r->step_offset + step), shown_loss);
            memset(loss_sum, 0, sizeof(double) * (size_t)nu);
            loss_n = 0;
            window_steps = 0;
            window_busy = 0;
        }
        if (!r->o->quiet) {
            double loss = loss_n ? loss_sum[0] / (double)loss_n : shown_loss;
            if (progress_tty) {
                progress_line(r, ph, step, step - start, loss, busy, &line);
                progress_draw(line.p, step == ph->total);
            } else if (step % r->progress_every == 0 || step == ph->total) {
                progress_line(r, ph, step, step - start, loss, busy, &line);
                fprintf(stderr, "%s\n", line.p);
            }
        }

        bool end = step == ph->total;
        bool epoch_end = j == ph->per_epoch - 1 || ur == ph->per_round - 1;
        bool round_end = r->rounds > 1 && ur == ph->per_round - 1;
        bool every = r->eval_every && step % r->eval_every == 0;
        bool by_epoch = !r->by_steps && r->rounds == 1 && !r->folds && epoch_end;
        if (end || every) {
            evaluate(r, ph, step, true);
            evaluated_at_end = end;
        } else if (by_epoch || round_end) {
            evaluate(r, ph, step, false);
        }
        if (!r->folds && !end && (by_epoch || round_end || every)) save_checkpoint(r, ph, step);
        if (interrupted) {
            save_checkpoint(r, ph, step);
            progress_clear();
            fprintf(stderr, "interrupted at step %lld; saved '%s' (continue with --resume %s)\n", (long long)step,
                    r->save_path, r->save_path);
            strbuf rec = {0};
            sb_printf(&rec, "{\"event\":\"interrupted\",\"step\":%lld,\"time_s\":%.3f}", (long long)step,
                      now_seconds() - r->started);
            runlog_write(&r->log, &rec);
            free(rec.p);
            runlog_close(&r->log);
            exit(130);
        }
    }
    if (!evaluated_at_end) evaluate(r, ph, ph->total, true); /* resumed at the very end */
    progress_clear();
    free(perm);
    free(in);
    free(loss_sum);
    free(line.p);
    batch_free(&b);
}

/* Folds finished so far: one ';'-terminated group each in fold_results (which a resumed
 * cross-validation takes from the checkpoint). */
static int64_t folds_completed(const char *results) {
    int64_t n = 0;
    for (const char *p = results; p && *p; p++) n += *p == ';';
    return n;
}

/* Mean and standard deviation over the folds of every metric in fold_results. */
static void print_fold_summary(run_t *r) {
    int64_t folds = folds_completed(r->fold_results.p);
    if (folds == 0) return;
    int n = 0;
    char **keys = NULL;
    double *sum = NULL, *sq = NULL;
    char *text = xstrdup(r->fold_results.p), *save_group = NULL;
    for (char *group = strtok_r(text, ";", &save_group); group; group = strtok_r(NULL, ";", &save_group)) {
        char *save_item = NULL;
        for (char *item = strtok_r(group, ",", &save_item); item; item = strtok_r(NULL, ",", &save_item)) {
            char *eq = strchr(item, '=');
            double v;
            if (!eq || !parse_f64(eq + 1, &v)) continue;
            *eq = 0;
            int k = 0;
            while (k < n && strcmp(keys[k], item) != 0) k++;
            if (k == n) {
                keys = xrealloc(keys, sizeof *keys * (size_t)(n + 1));
                sum = xrealloc(sum, sizeof *sum * (size_t)(n + 1));
                sq = xrealloc(sq, sizeof *sq * (size_t)(n + 1));
                keys[n] = item;
                sum[n] = sq[n] = 0;
                n++;
            }
            sum[k] += v;
            sq[k] += v * v;
        }
    }
    strbuf line = {0}, rec = {0};
    sb_printf(&line, "mean over %lld folds:", (long long)folds);
    sb_printf(&rec, "{\"event\":\"folds\",\"folds\":%lld", (long long)folds);
    for (int k = 0; k < n; k++) {
        double mean = sum[k] / (double)folds, sd = sqrt(fmax(0, sq[k] / (double)folds - mean * mean));
        char a[32], b[32];
        format_number(a, sizeof a, mean);
        format_number(b, sizeof b, sd);
        sb_printf(&line, "  %s %s (std %s)", keys[k], a, b);
        sb_add(&rec, ",", 1);
        sb_json_string(&rec, keys[k]);
        sb_add(&rec, ":", 1);
        sb_json_number(&rec, mean);
        char *std_key = xsprintf("%s.std", keys[k]);
        sb_add(&rec, ",", 1);
        sb_json_string(&rec, std_key);
        sb_add(&rec, ":", 1);
        sb_json_number(&rec, sd);
        free(std_key);
    }
    sb_add(&rec, "}", 1);
    puts(line.p);
    fflush(stdout);
    runlog_write(&r->log, &rec);
    free(line.p);
    free(rec.p);
    free(keys);
    free(sum);
    free(sq);
    free(text);
}

int cmd_train(model_t *md, const train_opts *o) {
    const manifest_t *m = md->m;
    run_t r = {0};
    r.md = md;
    r.m = m;
    r.o = o;
    if (m->n_updates == 0) die("the recipe has no update function (no 'minimize' was compiled into the step)");
    ckpt_info info = {0};
    st_file *resume = NULL;
    if (o->resume) {
        resume = ckpt_open(m, o->resume, &info);
        if (!info.is_checkpoint || info.step < 0)
            die("--resume: '%s' is not a training checkpoint of an mdl binary (use it with 'eval --load')", o->resume);
    }
    r.batch = o->batch ? o->batch : info.batch > 0 ? info.batch : m->batch;
    if (r.batch <= 0) die("the recipe has no batch size; pass --batch N");
    if (resume && info.batch > 0 && info.batch != r.batch)
        die("--batch %lld differs from the batch %lld that '%s' was trained with; resuming needs the same batches",
            (long long)r.batch, (long long)info.batch, o->resume);
    r.seed = o->has_seed ? o->seed : info.has_seed ? info.seed : m->has_seed ? m->seed : 0;
    if (resume && info.has_seed && info.seed != r.seed)
        die("--seed %d differs from the seed %d of '%s'; resuming needs the same seed", r.seed, info.seed, o->resume);
    r.by_steps = o->steps || (!o->epochs && m->steps);
    r.steps = o->steps ? o->steps : m->steps;
    r.epochs = o->epochs ? o->epochs : m->epochs;
    if (r.by_steps ? r.steps <= 0 : r.epochs <= 0) die("the recipe sets neither epochs nor steps; pass --epochs or --steps");
    r.rounds = m->rounds ? m->rounds : 1;
    r.folds = m->folds;
    if (r.folds && r.rounds > 1) die("a recipe with both folds and rounds is not supported");
    r.log_every = o->log_every ? o->log_every : m->log_every ? m->log_every : 10;
    r.progress_every = o->log_every ? o->log_every : m->log_every ? m->log_every : 100;
    r.eval_every = o->eval_every ? o->eval_every : m->eval_every;
    r.save_path = o->save ? o->save : xsprintf("%s.safetensors", m->module);
    r.generated = m->data_source && strcmp(m->data_source, "generator") == 0;
    progress_tty = !o->quiet && isatty(2);

    model_init_globals(md, r.seed);
    r.ds = data_load(m, o->data);
    if (r.generated) data_generate(md, r.ds, mdl_rng_fold(r.seed, DATA_SALT), NULL);
    if (r.folds) {
        split_t *train = data_split(r.ds, "train");
        if (train && train->n < r.folds)
            die("the train split has %lld examples, fewer than the %lld folds", (long long)train->n, (long long)r.folds);
    }

    char *log_path = o->log ? xstrdup(o->log) : xsprintf("%s.jsonl", m->module);
    runlog_open(&r.log, log_path, resume != NULL, r.folds || !resume ? INFINITY : (double)info.step);
    r.started = now_seconds();
    {
        strbuf rec = {0};
        sb_add(&rec, "{\"event\":\"start\",\"module\":", 26);
        sb_json_string(&rec, m->module);
        sb_printf(&rec, ",\"seed\":%d,\"batch\":%lld,\"resume_step\":%lld}", r.seed, (long long)r.batch,
                  (long long)(resume ? info.step : 0));
        runlog_write(&r.log, &rec);
        free(rec.p);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C stops at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    phase_t ph = {0};
    int64_t total_steps = 0;
    if (!r.folds) {
        make_phase(&r, &ph, -1);
        int64_t start = 0;
        if (resume) {
            ckpt_apply(md, resume, true);
            start = info.step;
            if (start > ph.total)
                die("'%s' is at step %lld, past the end of this run (%lld steps); pass a larger --epochs or --steps", o->resume,
                    (long long)start, (long long)ph.total);
        }
        model_set_total_steps(md, ph.total); /* after the checkpoint, which may come from a shorter run */
        if (o->lr > 0) model_set_lr(md, o->lr);
        train_phase(&r, &ph, start);
        total_steps = ph.total;
        save_checkpoint(&r, &ph, ph.total);
    } else {
        if (resume && info.fold_results) sb_printf(&r.fold_results, "%s", info.fold_results);
        int64_t done = folds_completed(r.fold_results.p);
        for (int64_t k = 0; k < r.folds; k++) {
            make_phase(&r, &ph, k);
            if (k < done) { /* its results came with the checkpoint */
                r.step_offset += ph.total;
                continue;
            }
            model_init_globals(md, ph.seed);
            int64_t start = 0;
            if (resume && info.fold == k) {
                ckpt_apply(md, resume, true);
                start = info.step;
                if (start > ph.total)
                    die("'%s' is at step %lld of fold %lld, past its end (%lld steps)", o->resume, (long long)start,
                        (long long)k + 1, (long long)ph.total);
            }
            model_set_total_steps(md, ph.total);
            if (o->lr > 0) model_set_lr(md, o->lr);
            train_phase(&r, &ph, start);
            record_fold(&r);
            total_steps += ph.total;
            r.step_offset += ph.total;
            save_checkpoint(&r, &ph, ph.total);
            strbuf rec = {0};
            sb_printf(&rec, "{\"event\":\"fold\",\"fold\":%lld,\"steps\":%lld}", (long long)k, (long long)ph.total);
            runlog_write(&r.log, &rec);
            free(rec.p);
        }
        print_fold_summary(&r);
    }

    double elapsed = now_seconds() - r.started;
    strbuf rec = {0};
    sb_printf(&rec, "{\"event\":\"final\",\"step\":%lld,\"time_s\":%.3f,\"steps_per_s\":", (long long)total_steps, elapsed);
    sb_json_number(&rec, elapsed > 0 ? (double)r.steps_done / elapsed : 0);
    for (int i = 0; i < r.n_last; i++)
        for (int k = 0; k < r.last[i].n; k++) {
            char *key = xsprintf("%s.%s", r.last[i].label, r.last[i].names[k]);
            sb_add(&rec, ",", 1);
            sb_json_string(&rec, key);
            sb_add(&rec, ":", 1);
            sb_json_number(&rec, r.last[i].values[k]);
            free(key);
        }
    sb_add(&rec, "}", 1);
    runlog_write(&r.log, &rec);
    free(rec.p);
    runlog_close(&r.log);
    if (!o->quiet)
        fprintf(stderr, "trained %lld steps in %.1f s (%.1f steps/s); saved '%s', log '%s'\n", (long long)r.steps_done,
                elapsed, elapsed > 0 ? (double)r.steps_done / elapsed : 0.0, r.save_path, log_path);
    st_free(resume);
    set_last(&r, NULL, 0);
    free(log_path);
    free(ph.train.rows);
    return 0;
}
