/* Data sources (docs/RUNTIME.md, "Data"): readers of the builtin data sets, and generator data
 * made by the model's own data.* functions. Every split is a set of named fields whose leading
 * axis is the example, or a set of graphs. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *source, *title, *fetch;
} sources[] = {
    {"mnist", "MNIST", "mnist"},       {"fashion_mnist", "Fashion-MNIST", "fashion"}, {"digits", "digits", "digits"},
    {"shakespeare", "Shakespeare", "shakespeare"}, {"mutag", "MUTAG", "mutag"},      {"mnist_graphs", "MNIST", "mnist"},
};

static int source_index(const char *source) {
    for (size_t i = 0; i < sizeof sources / sizeof *sources; i++)
        if (strcmp(sources[i].source, source) == 0) return (int)i;
    return -1;
}

static const char *current_source;

/* The one message for absent data: which set, where it was looked for, how to get it. */
static _Noreturn void missing(const char *dir, const char *file) {
    int i = source_index(current_source);
    char *usual = xsprintf("data/%s", sources[i].fetch);
    char *hint = strcmp(dir, usual) == 0 ? xstrdup("")
                                         : xsprintf(" (it writes %s; then pass --data %s)", usual, usual);
    die("no %s data in '%s' (missing %s). Fetch it with: Tools/fetch-data %s%s", sources[i].title, dir, file,
        sources[i].fetch, hint);
}

/* The path of `file` in `dir`, or of its .gz. */
static char *find(const char *dir, const char *file) {
    char *p = xsprintf("%s/%s", dir, file);
    if (file_exists(p)) return p;
    free(p);
    p = xsprintf("%s/%s.gz", dir, file);
    if (file_exists(p)) return p;
    missing(dir, file);
}

static const char *data_dir(const manifest_t *m, const char *dir_override) {
    return dir_override ? dir_override : manifest_data_attr(m, "path");
}

static split_t *add_split(dataset_t *ds, const char *name) {
    ds->splits = xrealloc(ds->splits, sizeof *ds->splits * (size_t)(ds->n_splits + 1));
    split_t *s = &ds->splits[ds->n_splits++];
    memset(s, 0, sizeof *s);
    s->name = xstrdup(name);
    return s;
}

static field_t *add_field(split_t *s, const char *name, dtype_t dtype, int rank, const int64_t *shape) {
    s->fields = xrealloc(s->fields, sizeof *s->fields * (size_t)(s->n_fields + 1));
    field_t *f = &s->fields[s->n_fields++];
    memset(f, 0, sizeof *f);
    f->name = xstrdup(name);
    f->dtype = dtype;
    f->rank = rank;
    memcpy(f->shape, shape, sizeof(int64_t) * (size_t)rank);
    return f;
}

split_t *data_split(dataset_t *ds, const char *name) {
    for (int i = 0; i < ds->n_splits; i++)
        if (strcmp(ds->splits[i].name, name) == 0) return &ds->splits[i];
    return NULL;
}

/* ---- MNIST and Fashion-MNIST: IDX files ---- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Reads an IDX file of unsigned bytes with `ndims` dimensions; returns its data. */
static const uint8_t *read_idx(const char *path, int ndims, int64_t *dims) {
    size_t len;
    uint8_t *buf = read_file_maybe_gz(path, &len);
    if (len < 4 || buf[0] || buf[1] || buf[2] != 8 || buf[3] != ndims)
        die("'%s' is not an IDX file of %d-dimensional unsigned bytes (it starts %02x %02x %02x %02x)", path, ndims,
            len > 0 ? buf[0] : 0, len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
    size_t head = 4 + 4 * (size_t)ndims;
    if (len < head) die("'%s': truncated: the file ends inside its header", path);
    uint64_t count = 1;
    for (int i = 0; i < ndims; i++) {
        dims[i] = be32(buf + 4 + 4 * i);
        count *= (uint64_t)dims[i];
    }
    if (len - head != count)
        die("'%s': %s: the header says %llu bytes of data, the file has %zu", path, len - head < count ? "truncated" : "too long",
            (unsigned long long)count, len - head);
    return buf + head;
}

/* Images and labels of one split: pixels stay bytes and become f32 when batched. */
static void read_mnist_pair(const char *dir, const char *prefix, const uint8_t **pixels, int32_t **labels, int64_t *n) {
    char *img_name = xsprintf("%s-images-idx3-ubyte", prefix), *lab_name = xsprintf("%s-labels-idx1-ubyte", prefix);
    char *img_path = find(dir, img_name), *lab_path = find(dir, lab_name);
    int64_t idims[3], ldims[1];
    *pixels = read_idx(img_path, 3, idims);
    const uint8_t *lab = read_idx(lab_path, 1, ldims);
    if (idims[1] != 28 || idims[2] != 28)
        die("'%s' holds images of %lldx%lld pixels, expected 28x28", img_path, (long long)idims[1], (long long)idims[2]);
    if (idims[0] != ldims[0])
        die("'%s' has %lld images but '%s' has %lld labels", img_path, (long long)idims[0], lab_path, (long long)ldims[0]);
    *n = idims[0];
    *labels = xmalloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int64_t i = 0; i < *n; i++) {
        if (lab[i] > 9) die("'%s': label %d of example %lld is not a digit 0..9", lab_path, lab[i], (long long)i);
        (*labels)[i] = lab[i];
    }
    free(img_name);
    free(lab_name);
    free(img_path);
    free(lab_path);
}

static void load_mnist(dataset_t *ds, const char *dir) {
    static const char *names[2] = {"train", "test"}, *prefixes[2] = {"train", "t10k"};
    for (int k = 0; k < 2; k++) {
        const uint8_t *pixels;
        int32_t *labels;
        int64_t n;
        read_mnist_pair(dir, prefixes[k], &pixels, &labels, &n);
        split_t *s = add_split(ds, names[k]);
        s->n = n;
        int64_t xs[2] = {n, 784}, ys[1] = {n};
        add_field(s, "x", DT_F32, 2, xs)->u8 = pixels;
        add_field(s, "y", DT_I32, 1, ys)->data = labels;
    }
}

/* One graph per image: a node per pixel with (intensity, row/27, col/27), edges to the 4
 * neighbours in both directions; the edges are the same for every image, so stored once. */
static void load_mnist_graphs(dataset_t *ds, const char *dir) {
    static const char *names[2] = {"train", "test"}, *prefixes[2] = {"train", "t10k"};
    int32_t *src = xmalloc(sizeof(int32_t) * 4 * 784), *dst = xmalloc(sizeof(int32_t) * 4 * 784);
    int64_t e = 0;
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++) {
            static const int dr[4] = {-1, 0, 0, 1}, dc[4] = {0, -1, 1, 0};
            for (int k = 0; k < 4; k++) {
                int rr = r + dr[k], cc = c + dc[k];
                if (rr < 0 || rr >= 28 || cc < 0 || cc >= 28) continue;
                src[e] = r * 28 + c;
                dst[e++] = rr * 28 + cc;
            }
        }
    for (int k = 0; k < 2; k++) {
        split_t *s = add_split(ds, names[k]);
        graphs_t *g = xcalloc(1, sizeof *g);
        read_mnist_pair(dir, prefixes[k], &g->pixels, &g->y, &g->n);
        g->feat = 3;
        g->nodes_each = 784;
        g->edges_each = e;
        g->side = 28;
        g->src = src;
        g->dst = dst;
        s->n = g->n;
        s->g = g;
    }
}

/* ---- digits: 64 values 0..16 and the label per CSV row ---- */

static void load_digits(dataset_t *ds, const char *dir) {
    char *path = xsprintf("%s/digits.csv.gz", dir);
    if (!file_exists(path)) {
        free(path);
        path = xsprintf("%s/digits.csv", dir);
        if (!file_exists(path)) missing(dir, "digits.csv.gz");
    }
    size_t len;
    char *text = (char *)read_file_maybe_gz(path, &len);
    int64_t rows = 0, cap = 0;
    float *x = NULL;
    int32_t *y = NULL;
    int line = 0;
    for (char *p = text; p < text + len;) {
        char *end = memchr(p, '\n', (size_t)(text + len - p));
        if (!end) end = text + len;
        line++;
        if (end > p && end[-1] == '\r') end[-1] = 0;
        *end = 0;
        if (*p) {
            if (rows == cap) {
                cap = cap ? 2 * cap : 1024;
                x = xrealloc(x, sizeof(float) * 64 * (size_t)cap);
                y = xrealloc(y, sizeof(int32_t) * (size_t)cap);
            }
            int k = 0;
            for (char *q = p; k < 65; k++) {
                char *stop;
                long v = strtol(q, &stop, 10);
                if (stop == q || (k < 64 && (v < 0 || v > 16)) || (k == 64 && (v < 0 || v > 9)))
                    die("'%s': line %d: value %d is not %s", path, line, k + 1, k < 64 ? "an integer 0..16" : "a label 0..9");
                if (k < 64) x[rows * 64 + k] = (float)v / 16;
                else y[rows] = (int32_t)v;
                q = stop;
                if (k < 64 && *q++ != ',')
                    die("'%s': line %d: expected 65 comma-separated numbers, found %d", path, line, k + 1);
                if (k == 64 && *q) die("'%s': line %d: expected 65 comma-separated numbers, found more", path, line);
            }
            rows++;
        }
        p = end + 1;
    }
    if (rows < 2) die("'%s' has %lld rows, too few to split into train and test", path, (long long)rows);
    int64_t n_train = rows * 4 / 5; /* test = the last 20% of the rows */
    for (int k = 0; k < 2; k++) {
        split_t *s = add_split(ds, k ? "test" : "train");
        int64_t first = k ? n_train : 0;
        s->n = k ? rows - n_train : n_train;
        int64_t xs[2] = {s->n, 64}, ys[1] = {s->n};
        add_field(s, "x", DT_F32, 2, xs)->data = x + first * 64;
        add_field(s, "y", DT_I32, 1, ys)->data = y + first;
    }
    free(text);
    free(path);
}

/* ---- Shakespeare: character windows ---- */

int text_token(unsigned char c) {
    if (c == '\n') return 0;
    if (c >= 32 && c <= 126) return c - 31;
    return -1;
}

static void load_text(dataset_t *ds, const char *dir, const char *split, int64_t context) {
    char *file = xsprintf("%s.txt", split);
    char *path = xsprintf("%s/%s", dir, file);
    if (!file_exists(path)) missing(dir, file);
    size_t len;
    uint8_t *text = read_file(path, &len);
    int32_t *tokens = xmalloc(sizeof(int32_t) * (len + 1));
    int64_t n_tok = 0;
    for (size_t i = 0; i < len; i++) {
        int t = text_token(text[i]);
        if (t >= 0) tokens[n_tok++] = t;
    }
    /* Windows start at multiples of the context; y is x shifted by one token. */
    int64_t n = n_tok > context ? (n_tok - 1) / context : 0;
    if (n == 0) die("'%s' has %lld characters, fewer than one window of %lld + 1", path, (long long)n_tok, (long long)context);
    split_t *s = add_split(ds, split);
    s->n = n;
    int64_t shape[2] = {n, context};
    int32_t *x = xmalloc(sizeof(int32_t) * (size_t)(n * context)), *y = xmalloc(sizeof(int32_t) * (size_t)(n * context));
    for (int64_t w = 0; w < n; w++) {
        memcpy(x + w * context, tokens + w * context, sizeof(int32_t) * (size_t)context);
        memcpy(y + w * context, tokens + w * context + 1, sizeof(int32_t) * (size_t)context);
    }
    add_field(s, "x", DT_I32, 2, shape)->data = x;
    add_field(s, "y", DT_I32, 2, shape)->data = y;
    free(tokens);
    free(text);
    free(path);
    free(file);
}

/* ---- MUTAG: TU graph format ---- */

/* Reads every integer of a text file ("2, 1" lines included). */
static int64_t *read_ints(const char *dir, const char *file, int64_t *count) {
    char *path = xsprintf("%s/%s", dir, file);
    if (!file_exists(path)) missing(dir, file);
    size_t len;
    char *text = (char *)read_file(path, &len);
    int64_t n = 0, cap = 1024;
    int64_t *v = xmalloc(sizeof(int64_t) * (size_t)cap);
    for (char *p = text; *p;) {
        if (*p == ',' || *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
            p++;
            continue;
        }
        char *stop;
        long long x = strtoll(p, &stop, 10);
        if (stop == p) die("'%s': unexpected '%c' at byte %lld (expected integers)", path, *p, (long long)(p - text));
        if (n == cap) v = xrealloc(v, sizeof(int64_t) * (size_t)(cap *= 2));
        v[n++] = x;
        p = stop;
    }
    free(text);
    free(path);
    *count = n;
    return v;
}

static void load_mutag(dataset_t *ds, const char *dir) {
    int64_t n_nodes, n_labels, n_graph_labels, n_edge_ints;
    int64_t *indicator = read_ints(dir, "MUTAG_graph_indicator.txt", &n_nodes);
    int64_t *node_labels = read_ints(dir, "MUTAG_node_labels.txt", &n_labels);
    int64_t *graph_labels = read_ints(dir, "MUTAG_graph_labels.txt", &n_graph_labels);
    int64_t *edges = read_ints(dir, "MUTAG_A.txt", &n_edge_ints);
    char *where = xsprintf("%s/MUTAG_*.txt", dir);
    if (n_labels != n_nodes)
        die("'%s': %lld node labels for %lld nodes in the graph indicator", where, (long long)n_labels, (long long)n_nodes);
    if (n_edge_ints % 2) die("'%s/MUTAG_A.txt': an odd number of node ids (edges are pairs)", dir);
    graphs_t *g = xcalloc(1, sizeof *g);
    g->n = n_graph_labels;
    g->feat = 7;
    g->node_off = xcalloc((size_t)g->n + 1, sizeof(int64_t));
    g->edge_off = xcalloc((size_t)g->n + 1, sizeof(int64_t));
    g->y = xmalloc(sizeof(int32_t) * (size_t)(g->n + 1));
    for (int64_t i = 0; i < g->n; i++) g->y[i] = graph_labels[i] > 0; /* labels are 1 and -1 */
    /* Nodes of a graph are consecutive in TU files; the node offsets rely on it. */
    for (int64_t v = 0; v < n_nodes; v++) {
        int64_t gi = indicator[v] - 1;
        if (gi < 0 || gi >= g->n) die("'%s/MUTAG_graph_indicator.txt': node %lld belongs to graph %lld of %lld", dir, (long long)v + 1, (long long)gi + 1, (long long)g->n);
        if (v && indicator[v] < indicator[v - 1]) die("'%s/MUTAG_graph_indicator.txt': nodes are not grouped by graph (node %lld)", dir, (long long)v + 1);
        g->node_off[gi + 1]++;
    }
    for (int64_t i = 0; i < g->n; i++) g->node_off[i + 1] += g->node_off[i];
    g->x = xcalloc((size_t)n_nodes * 7 + 1, sizeof(float));
    for (int64_t v = 0; v < n_nodes; v++) {
        if (node_labels[v] < 0 || node_labels[v] > 6) die("'%s/MUTAG_node_labels.txt': label %lld of node %lld is not 0..6", dir, (long long)node_labels[v], (long long)v + 1);
        g->x[v * 7 + node_labels[v]] = 1;
    }
    int64_t n_edges = n_edge_ints / 2;
    g->src = xmalloc(sizeof(int32_t) * (size_t)(n_edges + 1));
    g->dst = xmalloc(sizeof(int32_t) * (size_t)(n_edges + 1));
    int64_t *edge_graph = xmalloc(sizeof(int64_t) * (size_t)(n_edges + 1));
    for (int64_t e = 0; e < n_edges; e++) {
        int64_t a = edges[2 * e] - 1, b = edges[2 * e + 1] - 1;
        if (a < 0 || a >= n_nodes || b < 0 || b >= n_nodes)
            die("'%s/MUTAG_A.txt': edge %lld names node %lld, but there are %lld nodes", dir, (long long)e + 1,
                (long long)(a < 0 || a >= n_nodes ? a : b) + 1, (long long)n_nodes);
        if (indicator[a] != indicator[b]) die("'%s/MUTAG_A.txt': edge %lld joins two graphs", dir, (long long)e + 1);
        edge_graph[e] = indicator[a] - 1;
        g->edge_off[edge_graph[e] + 1]++;
    }
    for (int64_t i = 0; i < g->n; i++) g->edge_off[i + 1] += g->edge_off[i];
    /* Edges grouped by graph (a stable counting sort), with node ids local to their graph. */
    int64_t *fill = xmalloc(sizeof(int64_t) * (size_t)(g->n + 1));
    memcpy(fill, g->edge_off, sizeof(int64_t) * (size_t)g->n);
    for (int64_t e = 0; e < n_edges; e++) {
        int64_t gi = edge_graph[e], k = fill[gi]++;
        g->src[k] = (int32_t)(edges[2 * e] - 1 - g->node_off[gi]);
        g->dst[k] = (int32_t)(edges[2 * e + 1] - 1 - g->node_off[gi]);
    }
    split_t *s = add_split(ds, "train");
    s->n = g->n;
    s->g = g;
    ds->holdout = true;
    free(fill);
    free(edge_graph);
    free(indicator);
    free(node_labels);
    free(graph_labels);
    free(edges);
    free(where);
}

dataset_t *data_load(const manifest_t *m, const char *dir_override) {
    dataset_t *ds = xcalloc(1, sizeof *ds);
    if (!m->data_source) die("the model has no data source (no 'data =' in its train block)");
    if (strcmp(m->data_source, "generator") == 0) return ds; /* filled by data_generate */
    current_source = m->data_source;
    if (source_index(m->data_source) < 0) die("this runtime does not know the data source '%s'", m->data_source);
    const char *dir = data_dir(m, dir_override);
    if (!dir) die("the data source '%s' has no path; pass --data DIR", m->data_source);
    if (strcmp(m->data_source, "mnist") == 0 || strcmp(m->data_source, "fashion_mnist") == 0) {
        load_mnist(ds, dir);
    } else if (strcmp(m->data_source, "mnist_graphs") == 0) {
        load_mnist_graphs(ds, dir);
    } else if (strcmp(m->data_source, "digits") == 0) {
        load_digits(ds, dir);
    } else if (strcmp(m->data_source, "shakespeare") == 0) {
        const char *c = manifest_data_attr(m, "context");
        int64_t context;
        if (!c || !parse_i64(c, &context) || context <= 0)
            die("the manifest's shakespeare data line has no valid context= (found '%s')", c ? c : "nothing");
        load_text(ds, dir, "train", context);
        load_text(ds, dir, "test", context);
    } else {
        load_mutag(ds, dir);
    }
    return ds;
}

void data_generate(const model_t *md, dataset_t *ds, int32_t key, const char *only) {
    const manifest_t *m = md->m;
    for (int a = 0; a < m->n_data_attrs; a++) {
        const char *split = m->data_attrs[a].key, *fname = m->data_attrs[a].value;
        if (only && strcmp(split, only) != 0) continue;
        const func_t *f = manifest_func(m, fname);
        if (!f || f->kind != FN_DATA || f->n_in != 0)
            die("the manifest's data line names '%s' for the %s split, which is not a data function without inputs", fname,
                split);
        array_t *out = xcalloc((size_t)f->n_out + 1, sizeof *out);
        char *context = xsprintf("generating the %s split", split);
        model_call(md, f, NULL, key, out, context);
        free(context);
        split_t *s = data_split(ds, split);
        if (s) { /* a new round replaces the previous draw */
            for (int i = 0; i < s->n_fields; i++) {
                free(s->fields[i].data);
                free(s->fields[i].name);
            }
            s->n_fields = 0;
        } else {
            s = add_split(ds, split);
        }
        for (int i = 0; i < f->n_out; i++) {
            if (out[i].rank < 1) die("@%s returns '%s' as a scalar; data fields need a leading example axis", f->name, f->out[i].name);
            if (i && out[i].shape[0] != out[0].shape[0])
                die("@%s returns '%s' with %lld examples but '%s' with %lld", f->name, f->out[i].name, (long long)out[i].shape[0],
                    f->out[0].name, (long long)out[0].shape[0]);
            /* The split keeps a copy: the function reuses its result blocks in the next round. */
            size_t bytes = (size_t)shape_count(out[i].rank, out[i].shape) * dtype_size(out[i].dtype);
            void *copy = xmalloc(bytes + 1);
            memcpy(copy, out[i].data, bytes);
            add_field(s, f->out[i].name, out[i].dtype, out[i].rank, out[i].shape)->data = copy;
        }
        s->n = f->n_out ? out[0].shape[0] : 0;
        free(out);
    }
}
