/* Views of splits (train/test rows, folds), shuffling, and gathering rows into the input
 * buffers of a function. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Every permutation derives from (seed, stream, epoch), so a resumed run replays the same
 * batches. j = bits mod (i + 1): the bias is below 2^-40 for any realistic data set. */
void shuffle(int64_t *perm, int64_t n, int32_t seed, int64_t stream, int64_t epoch) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_bits(seed, stream, epoch << 32 | i) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

view_t data_view(dataset_t *ds, const char *split, int64_t folds, int64_t fold, int32_t seed) {
    view_t v = {0};
    if (folds > 0 || ds->holdout) {
        /* The test rows come out of the train split: a fold of a fixed shuffle, or every 10th. */
        split_t *base = data_split(ds, "train");
        if (!base) die("the data have no train split to take folds from");
        bool want_test = strcmp(split, "test") == 0;
        if (!want_test && strcmp(split, "train") != 0)
            die("the data have only train and test splits; there is no '%s' split", split);
        int64_t n = base->n, *order = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++) order[i] = i;
        if (folds > 0) shuffle(order, n, seed, FOLD_STREAM, 0);
        v.s = base;
        v.rows = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++) {
            bool held_out = folds > 0 ? i >= n * fold / folds && i < n * (fold + 1) / folds : order[i] % 10 == 9;
            if (held_out == want_test) v.rows[v.n++] = order[i];
        }
        qsort(v.rows, (size_t)v.n, sizeof(int64_t), cmp_i64);
        free(order);
        return v;
    }
    v.s = data_split(ds, split);
    if (!v.s) die("the data have no '%s' split", split);
    v.n = v.s->n;
    v.rows = xmalloc(sizeof(int64_t) * (size_t)(v.n + 1));
    for (int64_t i = 0; i < v.n; i++) v.rows[i] = i;
    return v;
}

/* The array named `name` in the batch, grown to hold `shape`; buffers are reused across batches. */
static array_t *slot(batch_t *b, const char *name, dtype_t dtype, int rank, const int64_t *shape) {
    int k = 0;
    while (k < b->n && strcmp(b->names[k], name) != 0) k++;
    if (k == b->n) {
        b->names = xrealloc(b->names, sizeof *b->names * (size_t)(b->n + 1));
        b->arrays = xrealloc(b->arrays, sizeof *b->arrays * (size_t)(b->n + 1));
        b->cap = xrealloc(b->cap, sizeof *b->cap * (size_t)(b->n + 1));
        b->names[k] = xstrdup(name);
        memset(&b->arrays[k], 0, sizeof b->arrays[k]);
        b->cap[k] = 0;
        b->n++;
    }
    array_t *a = &b->arrays[k];
    a->dtype = dtype;
    a->rank = rank;
    memcpy(a->shape, shape, sizeof(int64_t) * (size_t)rank);
    size_t bytes = checked_mul((size_t)shape_count(rank, shape), dtype_size(dtype), "a batch");
    if (bytes > b->cap[k]) {
        free(a->data);
        a->data = xaligned(bytes);
        b->cap[k] = bytes;
    }
    return a;
}

static void gather_graphs(const graphs_t *g, const int64_t *rows, int64_t count, batch_t *b) {
    int64_t nodes = 0, edges = 0;
    for (int64_t i = 0; i < count; i++) {
        int64_t r = rows[i];
        nodes += g->node_off ? g->node_off[r + 1] - g->node_off[r] : g->nodes_each;
        edges += g->edge_off ? g->edge_off[r + 1] - g->edge_off[r] : g->edges_each;
    }
    if (nodes > INT32_MAX) die("a batch of %lld graphs has %lld nodes, more than i32 indices reach", (long long)count, (long long)nodes);
    int64_t xs[2] = {nodes, g->feat};
    float *x = slot(b, "x", DT_F32, 2, xs)->data;
    int32_t *src = slot(b, "src", DT_I32, 1, &edges)->data;
    int32_t *dst = slot(b, "dst", DT_I32, 1, &edges)->data;
    int32_t *graph = slot(b, "graph", DT_I32, 1, &nodes)->data;
    int32_t *y = slot(b, "y", DT_I32, 1, &count)->data;
    int64_t node = 0, edge = 0;
    for (int64_t i = 0; i < count; i++) {
        int64_t r = rows[i];
        int64_t n0 = g->node_off ? g->node_off[r] : 0, nn = g->node_off ? g->node_off[r + 1] - n0 : g->nodes_each;
        int64_t e0 = g->edge_off ? g->edge_off[r] : 0, ne = g->edge_off ? g->edge_off[r + 1] - e0 : g->edges_each;
        if (g->x) {
            memcpy(x + node * g->feat, g->x + n0 * g->feat, sizeof(float) * (size_t)(nn * g->feat));
        } else { /* pixel graphs: (intensity, row / (side-1), col / (side-1)) */
            const uint8_t *p = g->pixels + r * g->nodes_each;
            for (int64_t v = 0; v < nn; v++) {
                float *f = x + (node + v) * 3;
                f[0] = (float)p[v] / 255.0f;
                f[1] = (float)(v / g->side) / (float)(g->side - 1);
                f[2] = (float)(v % g->side) / (float)(g->side - 1);
            }
        }
        for (int64_t e = 0; e < ne; e++) {
            src[edge + e] = (int32_t)(g->src[e0 + e] + node);
            dst[edge + e] = (int32_t)(g->dst[e0 + e] + node);
        }
        for (int64_t v = 0; v < nn; v++) graph[node + v] = (int32_t)i;
        y[i] = g->y[r];
        node += nn;
        edge += ne;
    }
}

void batch_gather(const split_t *s, const int64_t *rows, int64_t count, batch_t *b) {
    if (s->g) {
        gather_graphs(s->g, rows, count, b);
        return;
    }
    for (int k = 0; k < s->n_fields; k++) {
        const field_t *f = &s->fields[k];
        int64_t shape[MDL_MAX_RANK];
        memcpy(shape, f->shape, sizeof shape);
        shape[0] = count;
        array_t *a = slot(b, f->name, f->dtype, f->rank, shape);
        size_t row_elems = (size_t)shape_count(f->rank - 1, f->shape + 1);
        size_t row_bytes = row_elems * dtype_size(f->dtype);
        for (int64_t i = 0; i < count; i++) {
            if (f->u8) {
                const uint8_t *p = f->u8 + (size_t)rows[i] * row_elems;
                float *out = (float *)a->data + (size_t)i * row_elems;
                for (size_t e = 0; e < row_elems; e++) out[e] = (float)p[e] / 255.0f;
            } else {
                memcpy((char *)a->data + (size_t)i * row_bytes, (const char *)f->data + (size_t)rows[i] * row_bytes, row_bytes);
            }
        }
    }
}

void batch_bind(const batch_t *b, const func_t *f, const char *split, array_t *in) {
    for (int i = 0; i < f->n_in; i++) {
        const decl_t *d = &f->in[i];
        const char *dot = strchr(d->name, '.');
        const char *field = dot ? dot + 1 : d->name;
        int k = 0;
        while (k < b->n && strcmp(b->names[k], field) != 0) k++;
        if (k == b->n) {
            strbuf have = {0};
            for (int j = 0; j < b->n; j++) sb_printf(&have, "%s%s", j ? ", " : "", b->names[j]);
            die("@%s takes '%s', but the %s data have no field '%s' (they have %s)", f->name, d->name, split, field,
                have.p ? have.p : "none");
        }
        const array_t *a = &b->arrays[k];
        if (a->dtype != d->dtype || a->rank != d->rank) {
            char *got = shape_text(a->dtype, a->rank, a->shape);
            die("@%s takes '%s' as %s with rank %d, but the %s data's field '%s' is %s", f->name, d->name,
                dtype_name(d->dtype), d->rank, split, field, got);
        }
        in[i] = *a;
    }
}

void batch_free(batch_t *b) {
    for (int k = 0; k < b->n; k++) {
        free(b->names[k]);
        free(b->arrays[k].data);
    }
    free(b->names);
    free(b->arrays);
    free(b->cap);
    memset(b, 0, sizeof *b);
}
