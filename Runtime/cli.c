/* mdl_main: the command line of a generated binary (docs/RUNTIME.md, "The command line"). */
#include "internal.h"
#include <math.h>

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* OpenBLAS's (pthreads build) thread shutdown; weak, so that other builds link too. */

enum { F_BOOL, F_POS, F_NONNEG, F_SEED, F_STR, F_LIST };

typedef struct {
    int n;
    char **v;
} strlist;

typedef struct {
    const char *name, *arg, *help;
    int kind;
    void *dest;
    bool *given; /* F_SEED: set when the flag appears */
} flag_t;

static const manifest_t *man;

static void print_flags(FILE *out, const flag_t *flags, int n) {
    for (int i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", flags[i].name, flags[i].arg ? " " : "", flags[i].arg ? flags[i].arg : "");
        fprintf(out, "  %-24s %s\n", left, flags[i].help);
    }
}

static void print_type(strbuf *b, const decl_t *d) {
    sb_printf(b, "%s %s[", d->name, dtype_name(d->dtype));
    for (int k = 0; k < d->rank; k++) sb_printf(b, "%s%s", k ? "," : "", d->dims[k]);
    sb_add(b, "]", 1);
}

static char *signature(const func_t *f) {
    strbuf b = {0};
    sb_add(&b, "", 0);
    for (int i = 0; i < f->n_in; i++) {
        sb_add(&b, i ? ", " : "inputs: ", i ? 2 : 8);
        print_type(&b, &f->in[i]);
    }
    sb_add(&b, f->n_in ? "; outputs: " : "outputs: ", f->n_in ? 11 : 9);
    for (int i = 0; i < f->n_out; i++) {
        if (i) sb_add(&b, ", ", 2);
        print_type(&b, &f->out[i]);
    }
    return b.p;
}

static char *recipe_summary(void) {
    strbuf b = {0};
    if (man->data_source && strcmp(man->data_source, "generator") == 0)
        sb_printf(&b, "generated data");
    else if (man->data_source)
        sb_printf(&b, "%s data from %s", man->data_source, manifest_data_attr(man, "path") ? manifest_data_attr(man, "path") : "?");
    else
        sb_printf(&b, "no data");
    if (man->batch) sb_printf(&b, ", batch %lld", (long long)man->batch);
    if (man->epochs) sb_printf(&b, ", %lld epochs", (long long)man->epochs);
    if (man->steps) sb_printf(&b, ", %lld steps", (long long)man->steps);
    if (man->rounds) sb_printf(&b, ", %lld rounds", (long long)man->rounds);
    if (man->folds) sb_printf(&b, ", %lld-fold cross-validation", (long long)man->folds);
    sb_printf(&b, ", seed %d", man->has_seed ? man->seed : 0);
    return b.p;
}

static void usage(FILE *out) {
    fprintf(out, "usage: %s COMMAND [flags]\n\n%s is the model '%s', compiled by mdlc.\n\ncommands:\n", program_name,
            program_name, man->module);
    char *recipe = recipe_summary();
    fprintf(out, "  %-12s train with the recipe (%s)\n", "train", recipe);
    free(recipe);
    fprintf(out, "  %-12s evaluate saved weights (", "eval");
    for (int i = 0; i < man->n_evals; i++) fprintf(out, "%s%s", i ? ", " : "", man->evals[i]->name);
    fprintf(out, "%s)\n", man->n_evals ? "" : "nothing to evaluate");
    fprintf(out, "  %-12s loss and parameter gradients of one update on a given batch\n", "grad");
    fprintf(out, "  %-12s time training steps on one fixed batch (ms/step, peak memory)\n", "bench");
    for (int i = 0; i < man->n_funcs; i++) {
        const func_t *f = &man->funcs[i];
        if (f->kind != FN_PROC) continue;
        char *sig = signature(f);
        fprintf(out, "  %-12s procedure; %s\n", f->name, sig);
        free(sig);
    }
    fprintf(out, "\nRun '%s COMMAND --help' for the flags of a command.\n", program_name);
}

static void command_help(const char *cmd, const char *what, const flag_t *flags, int n) {
    printf("usage: %s %s [flags]\n\n%s\n\nflags:\n", program_name, cmd, what);
    print_flags(stdout, flags, n);
}

static int64_t parse_int_flag(const char *name, const char *v, int kind) {
    int64_t x;
    if (!parse_i64(v, &x) || (kind == F_POS && x <= 0) || (kind == F_NONNEG && x < 0))
        die_usage("%s: expected a %s integer, got '%s'", name, kind == F_POS ? "positive" : "non-negative", v);
    return x;
}

static void parse_flags(const char *cmd, int argc, char **argv, const flag_t *flags, int n) {
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            die_usage("%s: unexpected argument '%s' (see '%s %s --help')", cmd, arg, program_name, cmd);
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const flag_t *fl = NULL;
        for (int k = 0; k < n && !fl; k++)
            if (strlen(flags[k].name) == len && strncmp(flags[k].name, arg, len) == 0) fl = &flags[k];
        if (!fl) die_usage("%s: unknown flag '%.*s' (see '%s %s --help')", cmd, (int)len, arg, program_name, cmd);
        if (fl->kind == F_BOOL) {
            if (eq) die_usage("%s takes no value", fl->name);
            *(bool *)fl->dest = true;
            continue;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v) die_usage("%s needs a value (%s %s)", fl->name, fl->name, fl->arg);
        if (fl->kind == F_STR) {
            *(const char **)fl->dest = v;
        } else if (fl->kind == F_LIST) {
            strlist *l = fl->dest;
            l->v = xrealloc(l->v, sizeof(char *) * (size_t)(l->n + 1));
            l->v[l->n++] = (char *)v;
        } else if (fl->kind == F_SEED) {
            int64_t x;
            if (!parse_i64(v, &x) || x < INT32_MIN || x > INT32_MAX) die_usage("%s: expected an i32 integer, got '%s'", fl->name, v);
            *(int32_t *)fl->dest = (int32_t)x;
            *fl->given = true;
        } else {
            *(int64_t *)fl->dest = parse_int_flag(fl->name, v, fl->kind);
        }
    }
}

static bool wants_help(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    return false;
}

int mdl_main(int argc, char **argv, const char *manifest, const mdl_function *functions) {
    if (argc > 0 && argv[0]) {
        const char *slash = strrchr(argv[0], '/');
        program_name = slash ? slash + 1 : argv[0];
    }
#ifdef __GLIBC__
    /* Entry functions malloc and free the same large buffers every step; by default glibc
     * returns them to the kernel each time, and faulting the pages back in costs more than the
     * kernels. Keep freed memory in the process instead. */
    if (!mallopt(M_MMAP_THRESHOLD, 1 << 30)) mallopt(M_MMAP_THRESHOLD, 32 << 20); /* older glibc caps it */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    man = manifest_parse(manifest);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("%s: model '%s' (manifest hash %s), mdl runtime 0.1.0, %s\n", program_name, man->module, man->hash,
               openblas_get_config());
        return 0;
    }

    int64_t threads = 0;
    bool check_numerics = false, help = false, quiet = false, profile = false;
    const char *lr = NULL;
    train_opts t = {0};
    call_opts c = {0};
    bench_opts bo = {0};
    bo.steps = 50;
    bo.warmup = 10;
    strlist ins = {0}, texts = {0};
    char *def_save = xsprintf("the weights file (default %s.safetensors)", man->module);
    char *def_log = xsprintf("the JSON-lines log (default %s.jsonl; the loss curve goes to .png)", man->module);
    char *def_data = xsprintf("read the data from DIR (default %s)",
                              manifest_data_attr(man, "path") ? manifest_data_attr(man, "path") : "none");
    const flag_t common[] = {
        {"--threads", "N", "threads for kernels and matrix products (default: the online CPUs)", F_POS, &threads, NULL},
        {"--check-numerics", NULL, "stop at the first op that produces NaN or infinity, and name it", F_BOOL, &check_numerics, NULL},
        {"--profile", NULL, "print the time per kernel and in its GEMMs (by op and by kernel) at the end", F_BOOL, &profile, NULL},
        {"--help", NULL, "show this help", F_BOOL, &help, NULL},
    };
    flag_t flags[24];
    int n = 0;
    const func_t *proc = NULL;
    const char *what = NULL;
    char *proc_what = NULL;
    if (strcmp(cmd, "train") == 0) {
        const flag_t own[] = {
            {"--data", "DIR", def_data, F_STR, &t.data, NULL},
            {"--epochs", "N", "train N epochs (overrides the recipe)", F_POS, &t.epochs, NULL},
            {"--steps", "N", "train N updates (overrides the recipe)", F_POS, &t.steps, NULL},
            {"--batch", "N", "examples per update (overrides the recipe)", F_POS, &t.batch, NULL},
            {"--lr", "X", "base learning rate of every optimizer (default: the recipe's; schedules scale with it)", F_STR, &lr, NULL},
            {"--seed", "N", "seed of all randomness (default: the recipe's, else 0)", F_SEED, &t.seed, &t.has_seed},
            {"--save", "FILE", def_save, F_STR, &t.save, NULL},
            {"--resume", "FILE", "continue the run saved in FILE exactly where it stopped", F_STR, &t.resume, NULL},
            {"--log", "FILE", def_log, F_STR, &t.log, NULL},
            {"--log-every", "N", "log (and print progress when not on a terminal) every N updates", F_POS, &t.log_every, NULL},
            {"--eval-every", "N", "also evaluate and save every N updates", F_POS, &t.eval_every, NULL},
            {"--quiet", NULL, "no progress output", F_BOOL, &quiet, NULL},
        };
        memcpy(flags, own, sizeof own);
        n = sizeof own / sizeof *own;
        char *recipe = recipe_summary();
        what = proc_what = xsprintf("Trains the model with its recipe (%s), evaluates it and saves a checkpoint at the "
                                    "end of every epoch and at the end. Ctrl-C saves and stops; --resume continues.",
                                    recipe);
        free(recipe);
    } else if (strcmp(cmd, "eval") == 0) {
        const flag_t own[] = {
            {"--load", "FILE", "weights: a checkpoint or any safetensors with every parameter", F_STR, &t.load, NULL},
            {"--data", "DIR", def_data, F_STR, &t.data, NULL},
            {"--batch", "N", "examples per evaluation batch (default: the recipe's)", F_POS, &t.batch, NULL},
            {"--seed", "N", "seed of the evaluation keys and generated data (default: the checkpoint's)", F_SEED, &t.seed, &t.has_seed},
        };
        memcpy(flags, own, sizeof own);
        n = sizeof own / sizeof *own;
        what = "Evaluates weights: every eval block on its split (averaged over batches) and the metrics block.";
    } else if (strcmp(cmd, "grad") == 0) {
        const flag_t own[] = {
            {"--load", "FILE", "weights (default: initialized with the seed)", F_STR, &c.load, NULL},
            {"--batch", "FILE", "the batch: safetensors with one tensor per field (x, y, ...)", F_STR, &c.batch_file, NULL},
            {"--out", "FILE", "where to write loss and grad.<param> (F32 safetensors)", F_STR, &c.out, NULL},
            {"--step", "N", "which update of the step (default 0)", F_NONNEG, &c.step, NULL},
            {"--seed", "N", "the random key and the initialization seed (default 0)", F_SEED, &c.seed, &c.has_seed},
        };
        memcpy(flags, own, sizeof own);
        n = sizeof own / sizeof *own;
        what = "Computes the loss and every parameter gradient of one update on a given batch, for cross-checks with "
               "'mdlc grad' and PyTorch.";
    } else if (strcmp(cmd, "bench") == 0) {
        const flag_t own[] = {
            {"--steps", "N", "timed steps (default 50)", F_POS, &bo.steps, NULL},
            {"--warmup", "N", "untimed steps first (default 10)", F_NONNEG, &bo.warmup, NULL},
            {"--batch", "N", "examples per step (default: the recipe's)", F_POS, &bo.batch, NULL},
            {"--seed", "N", "seed of the weights, data and keys (default: the recipe's, else 0)", F_SEED, &bo.seed, &bo.has_seed},
            {"--json", NULL, "print one JSON object instead of text", F_BOOL, &bo.json, NULL},
        };
        memcpy(flags, own, sizeof own);
        n = sizeof own / sizeof *own;
        what = "Times whole training steps (every update function, in order) on one fixed batch: the first train "
               "batch of generated data, else random inputs of the declared shapes (no data set needed). Prints the "
               "median, 10th and 90th percentile and minimum ms/step after the warm-up, the first and last loss, and "
               "the peak resident memory.";
    } else {
        for (int i = 0; i < man->n_funcs && !proc; i++)
            if (man->funcs[i].kind == FN_PROC && strcmp(man->funcs[i].name, cmd) == 0) proc = &man->funcs[i];
        if (!proc) die_usage("unknown command '%s' (see '%s --help')", cmd, program_name);
        const flag_t own[] = {
            {"--load", "FILE", "weights: a checkpoint or any safetensors with every parameter", F_STR, &c.load, NULL},
            {"--seed", "N", "the random key (default: the recipe's seed, else 0)", F_SEED, &c.seed, &c.has_seed},
            {"--in", "NAME=FILE", "an input from a safetensors file (or NAME=1,2,3 inline); repeatable", F_LIST, &ins, NULL},
            {"--text", "NAME=TEXT", "an i32 input from text, as character tokens (0 newline, 1..95 ASCII 32..126)", F_LIST, &texts, NULL},
            {"--out", "FILE", "where outputs with more than 16 elements go (default NAME.safetensors)", F_STR, &c.out, NULL},
        };
        memcpy(flags, own, sizeof own);
        n = sizeof own / sizeof *own;
        char *sig = signature(proc);
        what = proc_what = xsprintf("Runs the procedure '%s' (%s). Small outputs are printed; larger ones are written to "
                                    "--out, f32 images of 784 pixels also as a PNG grid.",
                                    proc->name, sig);
        free(sig);
    }
    memcpy(flags + n, common, sizeof common);
    n += sizeof common / sizeof *common;
    if (wants_help(argc, argv)) {
        command_help(cmd, what, flags, n);
        return 0;
    }
    parse_flags(cmd, argc, argv, flags, n);
    if (lr) {
        char *end;
        t.lr = strtod(lr, &end);
        if (*end || !(t.lr > 0) || !isfinite(t.lr)) die_usage("--lr: '%s' is not a positive number", lr);
    }
    if (t.epochs && t.steps) die_usage("--epochs and --steps exclude each other");
    t.quiet = quiet;
    c.n_in = ins.n;
    c.ins = ins.v;
    c.n_text = texts.n;
    c.texts = texts.v;

    mdl_check_numerics = check_numerics;
    mdl_profiling = profile;
    profile_reset();
    int nthreads = threads ? (int)(threads < 1024 ? threads : 1024) : online_cpus();
    threads_init(nthreads);
    bo.threads = nthreads;

    model_t md;
    model_alloc(&md, man, functions);
    int rc = strcmp(cmd, "train") == 0  ? cmd_train(&md, &t)
             : strcmp(cmd, "eval") == 0 ? cmd_eval(&md, &t)
             : strcmp(cmd, "grad") == 0 ? cmd_grad(&md, &c)
             : strcmp(cmd, "bench") == 0 ? cmd_bench(&md, &bo)
                                        : cmd_proc(&md, proc, &c);
    if (profile) profile_report(stderr, 30);
    free(def_save);
    free(def_log);
    free(def_data);
    free(proc_what);
    free(ins.v);
    free(texts.v);
    return rc;
}
