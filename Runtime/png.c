/* PNG output (the loss curve, image grids of samples) without zlib: the image data go into
 * stored (uncompressed) deflate blocks, which every PNG reader accepts. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void chunk(FILE *f, const char *type, const uint8_t *data, size_t n) {
    uint8_t head[8];
    be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uint32_t crc = crc32_update(crc32_update(0, head + 4, 4), data, n);
    uint8_t tail[4];
    be32(tail, crc);
    fwrite(head, 1, 8, f);
    if (n) fwrite(data, 1, n, f); /* IEND has no data */
    fwrite(tail, 1, 4, f);
}

/* One byte per pixel: gray, or an index into `palette` (`colors` RGB triples). */
static bool png_write(const char *path, int width, int height, const uint8_t *pixels, const uint8_t *palette,
                      int colors) {
    size_t row = (size_t)width + 1; /* each row starts with filter type 0 */
    size_t raw_len = row * (size_t)height;
    size_t blocks = (raw_len + 65534) / 65535;
    size_t z_len = 2 + raw_len + 5 * (blocks ? blocks : 1) + 4;
    uint8_t *z = xmalloc(z_len);
    uint8_t *raw = xmalloc(raw_len ? raw_len : 1);
    for (int y = 0; y < height; y++) {
        raw[(size_t)y * row] = 0;
        memcpy(raw + (size_t)y * row + 1, pixels + (size_t)y * (row - 1), row - 1);
    }
    size_t k = 0;
    z[k++] = 0x78; /* zlib header: deflate, 32K window, no dictionary; 0x7801 % 31 == 0 */
    z[k++] = 0x01;
    size_t pos = 0;
    do {
        size_t n = raw_len - pos < 65535 ? raw_len - pos : 65535;
        z[k++] = pos + n == raw_len; /* BFINAL, BTYPE 00 */
        z[k++] = (uint8_t)n;
        z[k++] = (uint8_t)(n >> 8);
        z[k++] = (uint8_t)~n;
        z[k++] = (uint8_t)(~n >> 8);
        memcpy(z + k, raw + pos, n);
        k += n;
        pos += n;
    } while (pos < raw_len);
    uint32_t a = 1, b = 0; /* Adler-32 */
    for (size_t i = 0; i < raw_len; i++) {
        a = (a + raw[i]) % 65521;
        b = (b + a) % 65521;
    }
    be32(z + k, b << 16 | a);
    k += 4;

    FILE *f = fopen(path, "wb");
    if (!f) {
        warn("cannot write '%s': %s", path, strerror(errno));
        free(z);
        free(raw);
        return false;
    }
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    fwrite(signature, 1, 8, f);
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)width);
    be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;                       /* bits per sample */
    ihdr[9] = palette ? 3 : 0; /* indexed or grayscale */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    chunk(f, "IHDR", ihdr, 13);
    if (palette) chunk(f, "PLTE", palette, 3 * (size_t)colors);
    chunk(f, "IDAT", z, k);
    chunk(f, "IEND", NULL, 0);
    bool ok = !ferror(f);
    if (fclose(f) != 0) ok = false;
    if (!ok) warn("cannot write '%s'", path);
    free(z);
    free(raw);
    return ok;
}

enum { W = 640, H = 400, LEFT = 48, RIGHT = 16, TOP = 16, BOTTOM = 32 };

/* The plot is indexed colour (one byte per pixel), a third of the size of RGB. */
enum { WHITE, GRID, AXIS, CURVE };
static const uint8_t plot_palette[] = {255, 255, 255, 225, 225, 225, 0, 0, 0, 31, 119, 180};

static void plot(uint8_t *img, int x, int y, uint8_t color) {
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    img[(size_t)y * W + (size_t)x] = color;
}

static void line(uint8_t *img, int x0, int y0, int x1, int y1, uint8_t color, bool thick) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
        plot(img, x0, y0, color);
        if (thick) {
            plot(img, x0, y0 + 1, color);
            plot(img, x0 + 1, y0, color);
        }
        if (x0 == x1 && y0 == y1) return;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

bool png_loss_curve(const char *path, const double *step, const double *loss, int64_t n) {
    uint8_t *img = xcalloc((size_t)W * H, 1); /* WHITE */
    double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(loss[i])) continue;
        x_lo = fmin(x_lo, step[i]);
        x_hi = fmax(x_hi, step[i]);
        y_lo = fmin(y_lo, loss[i]);
        y_hi = fmax(y_hi, loss[i]);
    }
    if (x_hi <= x_lo) x_hi = x_lo + 1;
    if (y_hi <= y_lo) {
        y_lo -= 0.5;
        y_hi += 0.5;
    }
    double pad = 0.05 * (y_hi - y_lo);
    y_lo -= pad;
    y_hi += pad;
    int pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
    for (int t = 0; t <= 4; t++) { /* grid lines and ticks at quarters of each range */
        int x = LEFT + pw * t / 4, y = TOP + ph * t / 4;
        line(img, x, TOP, x, TOP + ph, GRID, false);
        line(img, LEFT, y, LEFT + pw, y, GRID, false);
        line(img, x, TOP + ph, x, TOP + ph + 5, AXIS, false);
        line(img, LEFT - 5, y, LEFT, y, AXIS, false);
    }
    line(img, LEFT, TOP, LEFT, TOP + ph, AXIS, false);
    line(img, LEFT, TOP + ph, LEFT + pw, TOP + ph, AXIS, false);
    int px = -1, py = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(loss[i])) continue;
        int x = LEFT + (int)lround((step[i] - x_lo) / (x_hi - x_lo) * pw);
        int y = TOP + ph - (int)lround((loss[i] - y_lo) / (y_hi - y_lo) * ph);
        line(img, px < 0 ? x : px, px < 0 ? y : py, x, y, CURVE, true);
        px = x;
        py = y;
    }
    bool ok = png_write(path, W, H, img, plot_palette, 4);
    free(img);
    return ok;
}

bool png_tiles(const char *path, const float *values, int64_t tiles, int side) {
    if (tiles > 1024) tiles = 1024; /* a 32 x 32 grid is as much as anyone looks at */
    int cols = (int)ceil(sqrt((double)tiles)), rows = (int)((tiles + cols - 1) / cols);
    int w = cols * (side + 1) + 1, h = rows * (side + 1) + 1; /* 1-pixel gray borders */
    uint8_t *img = xmalloc((size_t)w * (size_t)h);
    memset(img, 128, (size_t)w * (size_t)h);
    for (int64_t t = 0; t < tiles; t++) {
        int ox = 1 + (int)(t % cols) * (side + 1), oy = 1 + (int)(t / cols) * (side + 1);
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++) {
                float v = values[(size_t)t * (size_t)side * (size_t)side + (size_t)y * (size_t)side + (size_t)x];
                v = v > 0 ? (v < 1 ? v : 1) : 0; /* NaN becomes 0 */
                img[(size_t)(oy + y) * (size_t)w + (size_t)(ox + x)] = (uint8_t)lrintf(v * 255);
            }
    }
    bool ok = png_write(path, w, h, img, NULL, 0);
    free(img);
    return ok;
}
