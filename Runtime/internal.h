/* Declarations shared by the runtime's files; not part of the ABI (see include/mdl_runtime.h). */
#ifndef MDL_INTERNAL_H
#define MDL_INTERNAL_H

#define _GNU_SOURCE /* fsync, strdup, sysconf, sigaction, isatty, CLOCK_MONOTONIC */

#include "mdl_runtime.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- errors, memory, files, strings (util.c) ---- */

/* The binary is a command-line tool: an error ends the process with a message that names
 * the file or flag at fault. die() exits 1, die_usage() exits 2. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern const char *program_name; /* argv[0]'s base name, for hints */

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
void *xaligned(size_t n); /* zeroed, 64-byte aligned */
char *xstrdup(const char *s);
char *xsprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
size_t checked_mul(size_t a, size_t b, const char *what);

bool file_exists(const char *path);
uint8_t *read_file(const char *path, size_t *len);          /* dies naming the file */
uint8_t *read_file_maybe_gz(const char *path, size_t *len); /* gunzips .gz content */
double now_seconds(void);
char *replace_suffix(const char *path, const char *suffix, const char *with); /* appends when absent */
bool parse_i64(const char *s, int64_t *out);
bool parse_f64(const char *s, double *out);
void format_number(char *buf, size_t n, double v); /* for people: 0.9812, 1.2e-05 */

typedef struct {
    char *p;
    size_t len, cap;
} strbuf;
void sb_add(strbuf *b, const char *data, size_t n);
void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_json_string(strbuf *b, const char *s);
void sb_json_number(strbuf *b, double v); /* null when not finite */

/* ---- tensors ---- */

typedef enum { DT_F32, DT_I32, DT_BOOL } dtype_t;
size_t dtype_size(dtype_t t);
const char *dtype_name(dtype_t t); /* f32, i32, bool */

typedef struct {
    dtype_t dtype;
    int rank;
    int64_t shape[MDL_MAX_RANK];
    void *data;
} array_t;
int64_t shape_count(int rank, const int64_t *shape);
char *shape_text(dtype_t t, int rank, const int64_t *shape); /* "f32[64,784]" */

/* ---- the manifest (manifest.c) ---- */

typedef struct {
    char *name;
    dtype_t dtype;
    int rank;
    char *dims[MDL_MAX_RANK]; /* as written: an integer or a symbolic expression */
    int64_t fixed[MDL_MAX_RANK]; /* the integer, or -1 when symbolic */
} decl_t;

enum { INIT_ZEROS, INIT_ONES, INIT_FULL, INIT_NORMAL, INIT_UNIFORM };

typedef struct {
    char *name;
    bool is_param;
    dtype_t dtype;
    int rank;
    int64_t shape[MDL_MAX_RANK];
    int64_t count;
    int init;
    double a, b; /* full: value; normal: mean, std; uniform: low, high */
} global_t;

enum { FN_STEP, FN_EVAL, FN_METRIC, FN_DATA, FN_PROC, FN_GRAD };

typedef struct {
    int index; /* into mdl_functions */
    char *name;
    int kind;
    bool has_key;
    int n_in, n_out;
    decl_t *in, *out;
} func_t;

typedef struct {
    char *key, *value;
} kv_t;

typedef struct {
    char *module, *hash;
    int n_globals, n_funcs, n_optimizers, n_updates, n_evals, n_data_attrs;
    global_t *globals;
    func_t *funcs;
    char **optimizers;
    double *optimizer_lr; /* each optimizer's base learning rate (its lr=, else 1e-3 as in mdlc) */
    char *data_source; /* "mnist", ..., or "generator"; NULL without a data line */
    kv_t *data_attrs;  /* path=, context=, or split=function */
    /* recipe; 0 = not set */
    int64_t batch, epochs, steps, rounds, folds, eval_every, log_every;
    bool has_seed;
    int32_t seed;
    const func_t **updates, **evals;
} manifest_t;

manifest_t *manifest_parse(const char *text);
const func_t *manifest_func(const manifest_t *m, const char *name);
const char *manifest_data_attr(const manifest_t *m, const char *key);

/* ---- random numbers (rng.c) ---- */

uint64_t rng_bits(int32_t key, int64_t stream, int64_t index);
uint32_t fnv1a32(const char *s);

/* ---- threads (threads.c) ---- */

void threads_init(int n);
int online_cpus(void);
/* Subnormal floats become zero on this thread: x86 computes with them ~100x slower (a
 * causal mask's exp(-1e9) lands there), and no model needs values below 1e-38 (XLA and JAX
 * on CPU do the same). Called by mdl_main and every pool thread. */
void flush_subnormals(void);
int threads_count(void);
bool threads_is_worker(void); /* a pool thread (not the caller of mdl_parallel_for) */
void profile_gemm(double seconds);
int64_t arena_bytes(void); /* the arena's current size */
void profile_reset(void);
void profile_report(FILE *out, int top); /* threads a job started now would use: 1 inside a pool job */

/* ---- the model: globals and calls (model.c) ---- */

typedef struct {
    const manifest_t *m;
    const mdl_function *fns;
    void **gbuf; /* one buffer per global */
} model_t;

void model_alloc(model_t *md, const manifest_t *m, const mdl_function *fns);
void model_init_globals(model_t *md, int32_t seed);
void model_set_total_steps(model_t *md, int64_t total);
void model_set_lr(model_t *md, double lr); /* every optimizer's base rate becomes lr (schedules scale with it) */
/* Calls f; dies with a message naming f and `context` when it fails. The outputs are f's own
 * blocks, valid until f is called again: a caller that keeps one copies it. */
void model_call(const model_t *md, const func_t *f, const array_t *in, int32_t key, array_t *out,
                const char *context);
void arrays_free(array_t *a, int n);
/* Input arrays for any update function (as many as the one with the most inputs takes). */
array_t *update_inputs(const manifest_t *m);

/* ---- compression and images (inflate.c, png.c) ---- */

uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n);
uint8_t *gunzip(const uint8_t *in, size_t n, size_t *out_len, const char *path);
bool png_loss_curve(const char *path, const double *step, const double *loss, int64_t n);
bool png_tiles(const char *path, const float *values, int64_t tiles, int side);

/* ---- JSON (json.c): enough for safetensors headers and our own log ---- */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jvalue {
    jtype type;
    double num;
    bool is_int; /* a number written without fraction or exponent, within int64 */
    int64_t ival;
    char *str;
    size_t n; /* items of an array or object */
    struct jvalue *items;
    char **keys;
} jvalue;
jvalue *json_parse(const char *text, size_t len, char *err, size_t err_len);
void json_free(jvalue *v);
const jvalue *json_get(const jvalue *obj, const char *key);

/* ---- safetensors (safetensors.c) ---- */

typedef struct {
    char *name;
    char *dtype; /* as written: F32, F64, I32, ... */
    int rank;
    int64_t shape[MDL_MAX_RANK];
    const uint8_t *data;
} st_tensor;

typedef struct {
    char *path;
    uint8_t *buf;
    int n, n_meta;
    st_tensor *t;
    char **meta_keys, **meta_values;
} st_file;

st_file *st_read(const char *path);
void st_free(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);
/* Converts into `out` (count elements of `to`); dies naming the file and tensor when a value
 * does not fit (a fraction or out-of-range number into i32) or the dtype is not numeric. */
void st_convert(const st_file *f, const st_tensor *t, dtype_t to, void *out);
void st_write(const char *path, int n, char *const *names, const array_t *arrays, int n_meta,
              char *const *meta_keys, char *const *meta_values);

/* ---- checkpoints (checkpoint.c) ---- */

typedef struct {
    bool is_checkpoint; /* written by an mdl binary (format mdl-checkpoint) */
    int64_t step, epoch, batch, round, fold; /* -1 when absent */
    bool has_seed;
    int32_t seed;
    char *fold_results; /* metrics of completed folds, or NULL */
} ckpt_info;

/* Reads a weights file and checks it belongs to this model (hash, module). */
st_file *ckpt_open(const manifest_t *m, const char *path, ckpt_info *info);
/* Copies tensors into the globals: `exact` (resume) needs every global with its exact dtype;
 * otherwise params are required, states optional, dtypes converted. */
void ckpt_apply(const model_t *md, const st_file *f, bool exact);
void ckpt_save(const model_t *md, const char *path, const ckpt_info *info);

/* ---- data (data.c) and batches (batch.c) ---- */

typedef struct {
    char *name;
    dtype_t dtype;
    int rank;
    int64_t shape[MDL_MAX_RANK]; /* shape[0] = examples */
    void *data;
    const uint8_t *u8; /* instead of data: bytes delivered as f32 byte / 255 (MNIST pixels) */
} field_t;

/* A set of graphs, batched into x[N,F], src[E], dst[E], graph[N], y[B]. */
typedef struct {
    int64_t n;
    int feat;
    int64_t *node_off, *edge_off; /* n + 1 each; NULL: every graph has the same edges */
    int64_t nodes_each;
    int64_t edges_each;
    float *x;           /* node features; NULL for pixel graphs */
    const uint8_t *pixels; /* pixel graphs: nodes_each bytes per graph */
    int side;           /* pixel graphs: image width */
    int32_t *src, *dst; /* node indices within the graph */
    int32_t *y;
} graphs_t;

typedef struct {
    char *name;
    int64_t n;
    int n_fields;
    field_t *fields; /* when not graphs */
    graphs_t *g;
} split_t;

typedef struct {
    int n_splits;
    split_t *splits;
    bool holdout; /* only a train split: test = every 10th example (MUTAG) */
} dataset_t;

/* Rows of a split that a function sees: a whole split, or the train/test part of a fold or
 * holdout. */
typedef struct {
    const split_t *s;
    int64_t *rows;
    int64_t n;
} view_t;

/* Streams of the runtime's own random draws (ASCII "shuf", "fold", and the key salts). */
#define SHUFFLE_STREAM 0x73687566
#define FOLD_STREAM 0x666f6c64
#define DATA_SALT 0x64617461 /* "data" */
#define EVAL_SALT 0x6576616c /* "eval" */
#define METRICS_SALT 0x6d657472 /* "metr" */

dataset_t *data_load(const manifest_t *m, const char *dir_override);
/* Runs the data functions (all splits, or only `only`) and stores their outputs as splits. */
void data_generate(const model_t *md, dataset_t *ds, int32_t key, const char *only);
split_t *data_split(dataset_t *ds, const char *name);
/* The shakespeare tokens of a byte: 0 newline, 1..95 ASCII 32..126, -1 skipped. */
int text_token(unsigned char c);

typedef struct {
    int n;
    char **names;
    array_t *arrays;
    size_t *cap; /* bytes allocated per array */
} batch_t;

void shuffle(int64_t *perm, int64_t n, int32_t seed, int64_t stream, int64_t epoch);
view_t data_view(dataset_t *ds, const char *split, int64_t folds, int64_t fold, int32_t seed);
void batch_gather(const split_t *s, const int64_t *rows, int64_t count, batch_t *b);
/* The inputs of f from the batch's fields (by the name after the first '.'). */
void batch_bind(const batch_t *b, const func_t *f, const char *split, array_t *in);
void batch_free(batch_t *b);

/* ---- evaluation (eval.c) ---- */

typedef struct {
    char *label; /* "test", "metrics" */
    int n;
    char **names;
    double *values;
} metrics_t;

/* Runs an eval function over a view in batches (or a metric function once) and averages each
 * output weighted by batch size. */
metrics_t eval_function(const model_t *md, const func_t *f, const view_t *v, int64_t batch, int32_t seed);
void metrics_print(const char *prefix, const metrics_t *r);
void metrics_free(metrics_t *r);

/* ---- log and progress (log.c) ---- */

void progress_draw(const char *line, bool force); /* on a terminal: redrawn at most 10/s */
void progress_clear(void);
extern bool progress_tty;

typedef struct {
    FILE *f;
    char *path;
    int64_t n, cap; /* the loss curve: every logged step, earlier runs of a resume included */
    double *step, *loss;
} runlog_t;

void runlog_open(runlog_t *l, const char *path, bool append, double keep_until);
void runlog_write(runlog_t *l, const strbuf *record); /* one JSON object per line */
void runlog_point(runlog_t *l, double step, double loss);
void runlog_close(runlog_t *l); /* writes the loss curve PNG */

/* ---- commands (train.c, commands.c, bench.c) ---- */

typedef struct {
    const char *data, *save, *resume, *log, *load;
    int64_t epochs, steps, batch, log_every, eval_every;
    double lr; /* 0: the recipe's */
    bool has_seed, quiet;
    int32_t seed;
} train_opts;

typedef struct {
    const char *load, *batch_file, *out;
    int64_t step;
    bool has_seed;
    int32_t seed;
    int n_in, n_text;
    char **ins, **texts; /* NAME=FILE or NAME=1,2,3; NAME=TEXT */
} call_opts;

typedef struct {
    int64_t steps, warmup, batch;
    bool has_seed, json;
    int32_t seed;
    int threads; /* for the report; the pool is sized by mdl_main */
} bench_opts;

int cmd_train(model_t *md, const train_opts *o);
int cmd_eval(model_t *md, const train_opts *o);
int cmd_grad(model_t *md, const call_opts *o);
int cmd_proc(model_t *md, const func_t *f, const call_opts *o);
int cmd_bench(model_t *md, const bench_opts *o); /* bench.c */

#endif
