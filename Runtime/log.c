/* The progress line on stderr and the JSON-lines log of a training run. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool progress_tty;
static bool line_shown;
static double last_draw;

void progress_draw(const char *line, bool force) {
    double now = now_seconds();
    if (!force && now - last_draw < 0.1) return; /* redrawing faster only costs time */
    last_draw = now;
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    line_shown = true;
}

void progress_clear(void) {
    if (!line_shown) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    line_shown = false;
}

void runlog_point(runlog_t *l, double step, double loss) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->step = xrealloc(l->step, sizeof(double) * (size_t)l->cap);
        l->loss = xrealloc(l->loss, sizeof(double) * (size_t)l->cap);
    }
    l->step[l->n] = step;
    l->loss[l->n++] = loss;
}

/* On --resume the loss curve continues the earlier run's, which only the old log knows; points
 * after the checkpoint's step were logged by a run that did not save them, so they go. */
static void reread(runlog_t *l, double keep_until) {
    FILE *f = fopen(l->path, "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        char err[128];
        jvalue *v = json_parse(line, (size_t)n, err, sizeof err);
        const jvalue *event = json_get(v, "event"), *step = json_get(v, "run_step"), *loss = json_get(v, "loss");
        if (!step) step = json_get(v, "step"); /* run_step: the step counted over all folds */
        if (event && event->type == J_STR && strcmp(event->str, "step") == 0 && step && step->type == J_NUM && loss &&
            loss->type == J_NUM)
            if (step->num <= keep_until) runlog_point(l, step->num, loss->num);
        json_free(v);
    }
    free(line);
    fclose(f);
}

void runlog_open(runlog_t *l, const char *path, bool append, double keep_until) {
    memset(l, 0, sizeof *l);
    l->path = xstrdup(path);
    if (append) reread(l, keep_until);
    l->f = fopen(path, append ? "a" : "w");
    if (!l->f) die("--log: cannot write '%s': %s", path, strerror(errno));
}

void runlog_write(runlog_t *l, const strbuf *record) {
    fputs(record->p, l->f);
    fputc('\n', l->f);
    fflush(l->f); /* readable while training runs (tail -f, plotting) */
}

void runlog_close(runlog_t *l) {
    if (ferror(l->f)) warn("--log: writing '%s' failed", l->path);
    fclose(l->f);
    if (l->n > 0) {
        char *png = replace_suffix(l->path, ".jsonl", ".png");
        png_loss_curve(png, l->step, l->loss, l->n);
        free(png);
    }
    free(l->step);
    free(l->loss);
    free(l->path);
    memset(l, 0, sizeof *l);
}
