/* A stand-in for the object that mdlc generates: a manifest, hand-written entry functions
 * and main. Selected by MDL_TEST_MODEL:
 *   linreg (default)  2-D linear regression on generated data, SGD with a schedule over
 *                     optim.total_steps, a random key in the step; MDL_TEST_RECIPE replaces the
 *                     recipe line (folds, rounds, ...), MDL_TEST_HASH the manifest hash
 *   digits            softmax regression on the 8x8 digits
 *   mutag, pixels     graph batches checked for consistency (MUTAG, mnist_graphs)
 * Hooks for run.sh: MDL_TEST_INTERRUPT_AT=N raises SIGINT in the N-th update of the process,
 * MDL_TEST_NAN_AT=N returns a NaN loss in update N. */
#include "mdl_runtime.h"

#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *scalar_out(void **out, int64_t *out_shapes, int k, double v) {
    (void)out_shapes;
    float *p = malloc(sizeof(float));
    *p = (float)v;
    out[k] = p;
    return p;
}

static long env_long(const char *name) {
    const char *v = getenv(name);
    return v ? atol(v) : -1;
}

/* ---- linreg ---- */

static const char *linreg_manifest =
    "mdl-manifest 1\n"
    "module linreg\n"
    "hash %s\n"
    "global model.w param f32 1 2 uniform low=-0.1 high=0.1\n"
    "global model.b param f32 0 zeros\n"
    "global optim.step state f32 0 zeros\n"
    "global optim.total_steps state f32 0 ones\n"
    "data generator train=data.train test=data.test\n"
    "optimizer optim sgd lr=0.1\n"
    "%s\n"
    "updates step0\n"
    "evals eval.test\n"
    "function 0 data.train data key=1\n"
    "output x f32 2 256 2\n"
    "output y f32 1 256\n"
    "end\n"
    "function 1 data.test data key=1\n"
    "output x f32 2 64 2\n"
    "output y f32 1 64\n"
    "end\n"
    "function 2 step0 step key=1\n"
    "input b.x f32 2 B 2\n"
    "input b.y f32 1 B\n"
    "output loss f32 0\n"
    "end\n"
    "function 3 eval.test eval key=0\n"
    "input b.x f32 2 B 2\n"
    "input b.y f32 1 B\n"
    "output loss f32 0\n"
    "output mae f32 0\n"
    "end\n"
    "function 4 metrics metric key=1\n"
    "output w0 f32 0\n"
    "output total_steps f32 0\n"
    "end\n"
    "function 5 grad.step0 grad key=1\n"
    "input b.x f32 2 B 2\n"
    "input b.y f32 1 B\n"
    "output loss f32 0\n"
    "output grad.model.w f32 1 2\n"
    "output grad.model.b f32 0\n"
    "end\n"
    "function 6 predict proc key=0\n"
    "input x f32 2 n 2\n"
    "output 0 f32 1 n\n"
    "end\n"
    "function 7 images proc key=1\n"
    "output  f32 2 4 784\n" /* unnamed, as the compiler writes a plain result */
    "end\n";

static void make_points(int32_t key, int64_t stream, int64_t n, void **out, int64_t *out_shapes) {
    float *x = malloc(sizeof(float) * (size_t)n * 2), *y = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        x[2 * i] = (float)(2 * mdl_rng_uniform(key, stream, 2 * i) - 1);
        x[2 * i + 1] = (float)(2 * mdl_rng_uniform(key, stream, 2 * i + 1) - 1);
        y[i] = (float)(3 * x[2 * i] - 2 * x[2 * i + 1] + 0.5 + 0.01 * mdl_rng_normal(key, stream + 100, i));
    }
    out[0] = x;
    out[1] = y;
    out_shapes[0] = n;
    out_shapes[1] = 2;
    out_shapes[8] = n;
}

static int32_t data_train(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)g, (void)in, (void)s;
    make_points(key, 1, 256, out, os);
    return 0;
}

static int32_t data_test(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)g, (void)in, (void)s;
    make_points(key, 2, 64, out, os);
    return 0;
}

static int check_xy(const int64_t *s) {
    if (s[1] != 2) {
        mdl_set_error("b.x must be f32[B, 2]");
        return 1;
    }
    if (s[8] != s[0]) {
        mdl_set_error("b.y must have B elements");
        return 1;
    }
    return 0;
}

typedef struct {
    const float *x, *y, *w, *b;
    float *r;
} resid_ctx;

/* Residuals on the pool: each element is written by exactly one chunk. */
static void resid_body(void *ctx, int64_t lo, int64_t hi) {
    resid_ctx *c = ctx;
    for (int64_t i = lo; i < hi; i++) c->r[i] = c->w[0] * c->x[2 * i] + c->w[1] * c->x[2 * i + 1] + *c->b - c->y[i];
}

static double gradients(void **g, void *const *in, int64_t B, double grad[3]) {
    float *r = malloc(sizeof(float) * (size_t)B);
    resid_ctx c = {in[0], in[1], g[0], g[1], r};
    mdl_parallel_for(B, resid_body, &c);
    double loss = 0;
    grad[0] = grad[1] = grad[2] = 0;
    for (int64_t i = 0; i < B; i++) {
        loss += (double)r[i] * r[i] / (double)B;
        grad[0] += 2.0 * r[i] * c.x[2 * i] / (double)B;
        grad[1] += 2.0 * r[i] * c.x[2 * i + 1] / (double)B;
        grad[2] += 2.0 * r[i] / (double)B;
    }
    free(r);
    return loss;
}

static int32_t step0(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    if (check_xy(s)) return 1;
    float *w = g[0], *b = g[1], *step = g[2], *total = g[3];
    double grad[3];
    double loss = gradients(g, in, s[0], grad);
    /* A linear decay over the run and a little key-dependent noise: both must survive --resume. */
    double lr = 0.1 * (1 - 0.5 * *step / *total);
    grad[0] += 1e-3 * mdl_rng_normal(key, 7, 0);
    w[0] -= (float)(lr * grad[0]);
    w[1] -= (float)(lr * grad[1]);
    *b -= (float)(lr * grad[2]);
    *step += 1;
    static long calls;
    if (env_long("MDL_TEST_INTERRUPT_AT") == ++calls) raise(SIGINT);
    if (env_long("MDL_TEST_NAN_AT") == (long)*step) loss = NAN;
    if (mdl_check_numerics && isnan(loss)) return mdl_report_nonfinite("step0", 42, "%42 = div %40, %41 : f32[]");
    scalar_out(out, os, 0, loss);
    return 0;
}

static int32_t eval_test(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)key;
    if (check_xy(s)) return 1;
    double grad[3];
    double loss = gradients(g, in, s[0], grad), mae = 0;
    const float *x = in[0], *y = in[1], *w = g[0], *b = g[1];
    for (int64_t i = 0; i < s[0]; i++) mae += fabs(w[0] * x[2 * i] + w[1] * x[2 * i + 1] + *b - y[i]) / (double)s[0];
    scalar_out(out, os, 0, loss);
    scalar_out(out, os, 1, mae);
    return 0;
}

static int32_t metrics(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)in, (void)s, (void)key;
    scalar_out(out, os, 0, ((float *)g[0])[0]);
    scalar_out(out, os, 1, *(float *)g[3]);
    return 0;
}

static int32_t grad_step0(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)key;
    if (check_xy(s)) return 1;
    double grad[3];
    double loss = gradients(g, in, s[0], grad);
    scalar_out(out, os, 0, loss);
    float *gw = malloc(2 * sizeof(float));
    gw[0] = (float)grad[0];
    gw[1] = (float)grad[1];
    out[1] = gw;
    os[8] = 2;
    scalar_out(out, os, 2, grad[2]);
    return 0;
}

static int32_t predict(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)key;
    if (s[1] != 2) {
        mdl_set_error("x must be f32[n, 2]");
        return 1;
    }
    const float *x = in[0], *w = g[0], *b = g[1];
    float *p = malloc(sizeof(float) * (size_t)(s[0] + 1));
    for (int64_t i = 0; i < s[0]; i++) p[i] = w[0] * x[2 * i] + w[1] * x[2 * i + 1] + *b;
    out[0] = p;
    os[0] = s[0];
    return 0;
}

static int32_t images(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)g, (void)in, (void)s;
    float *p = malloc(sizeof(float) * 4 * 784);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 784; i++) p[t * 784 + i] = (float)((i % 28 + t * 7) % 28) / 27.0f * (float)(mdl_rng_uniform(key, 3, 0) + 0.5);
    out[0] = p;
    os[0] = 4;
    os[1] = 784;
    return 0;
}

static const mdl_function linreg_functions[] = {data_train, data_test, step0, eval_test, metrics, grad_step0, predict, images};

/* ---- digits: softmax regression ---- */

static const char *digits_manifest =
    "mdl-manifest 1\n"
    "module digits_lr\n"
    "hash 00000000000000d1\n"
    "global model.w param f32 2 64 10 uniform low=-0.05 high=0.05\n"
    "global model.b param f32 1 10 zeros\n"
    "data digits path=/work/main/data/digits\n"
    "recipe batch=32 epochs=15\n"
    "updates step0\n"
    "evals eval.test\n"
    "function 0 step0 step key=0\n"
    "input b.x f32 2 B 64\n"
    "input b.y i32 1 B\n"
    "output loss f32 0\n"
    "end\n"
    "function 1 eval.test eval key=0\n"
    "input b.x f32 2 B 64\n"
    "input b.y i32 1 B\n"
    "output accuracy f32 0\n"
    "output loss f32 0\n"
    "end\n";

static double softmax_pass(void **g, const float *x, const int32_t *y, int64_t B, bool update, double *accuracy) {
    float *w = g[0], *b = g[1];
    double gw[64 * 10] = {0}, gb[10] = {0}, loss = 0, correct = 0;
    for (int64_t i = 0; i < B; i++) {
        double z[10], mx = -INFINITY, sum = 0;
        int arg = 0;
        for (int k = 0; k < 10; k++) {
            z[k] = b[k];
            for (int j = 0; j < 64; j++) z[k] += (double)x[i * 64 + j] * w[j * 10 + k];
            if (z[k] > mx) mx = z[k], arg = k;
        }
        for (int k = 0; k < 10; k++) sum += exp(z[k] - mx);
        loss += (log(sum) + mx - z[y[i]]) / (double)B;
        correct += arg == y[i];
        for (int k = 0; k < 10; k++) {
            double d = (exp(z[k] - mx) / sum - (k == y[i])) / (double)B;
            gb[k] += d;
            for (int j = 0; j < 64; j++) gw[j * 10 + k] += d * x[i * 64 + j];
        }
    }
    if (update) {
        for (int k = 0; k < 640; k++) w[k] -= (float)(0.5 * gw[k]);
        for (int k = 0; k < 10; k++) b[k] -= (float)(0.5 * gb[k]);
    }
    if (accuracy) *accuracy = correct / (double)B;
    return loss;
}

static int check_digits(const int64_t *s) {
    if (s[1] != 64 || s[8] != s[0]) {
        mdl_set_error("digits batch must be x f32[B,64], y i32[B]");
        return 1;
    }
    return 0;
}

static int32_t digits_step(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)key;
    if (check_digits(s)) return 1;
    scalar_out(out, os, 0, softmax_pass(g, in[0], in[1], s[0], true, NULL));
    return 0;
}

static int32_t digits_eval(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    (void)key;
    if (check_digits(s)) return 1;
    double acc;
    double loss = softmax_pass(g, in[0], in[1], s[0], false, &acc);
    scalar_out(out, os, 0, acc);
    scalar_out(out, os, 1, loss);
    return 0;
}

static const mdl_function digits_functions[] = {digits_step, digits_eval};

/* ---- graphs: the batcher's invariants ---- */

static const char *graph_manifest =
    "mdl-manifest 1\n"
    "module %s\n"
    "hash 00000000000000f0\n"
    "global model.p param f32 1 %d zeros\n"
    "data %s path=%s\n"
    "recipe batch=%s\n"
    "updates step0\n"
    "evals eval.test\n"
    "function 0 step0 step key=0\n"
    "input b.x f32 2 N %d\n"
    "input b.src i32 1 E\n"
    "input b.dst i32 1 E\n"
    "input b.graph i32 1 N\n"
    "input b.y i32 1 B\n"
    "output loss f32 0\n"
    "end\n"
    "function 1 eval.test eval key=0\n"
    "input b.x f32 2 N %d\n"
    "input b.src i32 1 E\n"
    "input b.dst i32 1 E\n"
    "input b.graph i32 1 N\n"
    "input b.y i32 1 B\n"
    "output positive f32 0\n"
    "output nodes_per_graph f32 0\n"
    "output edges_per_graph f32 0\n"
    "end\n";

static int feat;

/* Returns an error unless the batch is a valid set of B graphs; loss = mean feature 0. */
static int32_t graph_check(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key, bool eval) {
    (void)g, (void)key;
    int64_t N = s[0], F = s[1], E = s[8], B = s[32];
    const float *x = in[0];
    const int32_t *src = in[1], *dst = in[2], *graph = in[3], *y = in[4];
    if (F != feat || s[16] != E || s[24] != N) return mdl_set_error("graph batch shapes disagree"), 1;
    for (int64_t e = 0; e < E; e++) {
        if (src[e] < 0 || src[e] >= N || dst[e] < 0 || dst[e] >= N) return mdl_set_error("edge index out of range"), 2;
        if (graph[src[e]] != graph[dst[e]]) return mdl_set_error("edge joins two graphs"), 1;
    }
    for (int64_t v = 0; v < N; v++) {
        if (graph[v] < 0 || graph[v] >= B || (v && graph[v] < graph[v - 1]) || (v == 0 && graph[v] != 0))
            return mdl_set_error("graph ids not sorted 0..B-1"), 1;
        double sum = 0;
        for (int k = 0; k < F; k++) {
            if (x[v * F + k] < 0 || x[v * F + k] > 1) return mdl_set_error("feature outside [0,1]"), 1;
            sum += x[v * F + k];
        }
        if (feat == 7 && sum != 1) return mdl_set_error("mutag features are not one-hot"), 1;
    }
    if (N && graph[N - 1] != B - 1) return mdl_set_error("a graph of the batch has no nodes"), 1;
    double pos = 0, f0 = 0;
    for (int64_t i = 0; i < B; i++) {
        if (y[i] != 0 && y[i] != 1 && feat == 7) return mdl_set_error("label not 0/1"), 1;
        pos += y[i] == 1;
    }
    for (int64_t v = 0; v < N; v++) f0 += x[v * F];
    if (eval) {
        scalar_out(out, os, 0, pos / (double)B);
        scalar_out(out, os, 1, (double)N / (double)B);
        scalar_out(out, os, 2, (double)E / (double)B);
    } else {
        scalar_out(out, os, 0, f0 / (double)N);
    }
    return 0;
}

static int32_t graph_step(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    return graph_check(g, in, s, out, os, key, false);
}

static int32_t graph_eval(void **g, void *const *in, const int64_t *s, void **out, int64_t *os, int32_t key) {
    return graph_check(g, in, s, out, os, key, true);
}

static const mdl_function graph_functions[] = {graph_step, graph_eval};

int main(int argc, char **argv) {
    const char *model = getenv("MDL_TEST_MODEL");
    char manifest[8192];
    if (!model || strcmp(model, "linreg") == 0) {
        const char *recipe = getenv("MDL_TEST_RECIPE");
        const char *hash = getenv("MDL_TEST_HASH"); /* another "compiler": checkpoints must be refused */
        snprintf(manifest, sizeof manifest, linreg_manifest, hash ? hash : "0123456789abcdef",
                 recipe ? recipe : "recipe batch=32 epochs=3 seed=7");
        return mdl_main(argc, argv, manifest, linreg_functions);
    }
    if (strcmp(model, "digits") == 0) return mdl_main(argc, argv, digits_manifest, digits_functions);
    bool mutag = strcmp(model, "mutag") == 0;
    feat = mutag ? 7 : 3;
    snprintf(manifest, sizeof manifest, graph_manifest, mutag ? "mutag_check" : "pixels_check", feat,
             mutag ? "mutag" : "mnist_graphs", mutag ? "/work/main/data/mutag" : "/work/main/data/mnist",
             mutag ? "32 epochs=2 folds=10" : "64 steps=30", feat, feat);
    return mdl_main(argc, argv, manifest, graph_functions);
}
