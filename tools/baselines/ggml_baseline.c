/*
 * ggml_baseline.c -- same-machine CPU baseline of llama.cpp's ggml ops for the
 * Mamba2 decode-step recurrent-state work, to compare against m2c.
 *
 * What it measures (Mamba2-2.7B decode shapes: 64 layers, d_inner 5120,
 * n_groups 1, d_state 128, 80 heads x head_dim 64, conv kernel 4, f32):
 * the per-layer graph that llama.cpp's build_mamba2_layer() + build_rs() emit for
 * one decode token per sequence, minus the matmuls (in_proj / out_proj) and the
 * grouped RMS norm, i.e. only the recurrent-state work:
 *   conv : get_rows gather of the conv state from the persistent cache tensor,
 *          concat with the new xBC column, ggml_ssm_conv, + bias, silu, and the
 *          conv-state copy-back (ggml_cpy into a view of the cache tensor);
 *   ssm  : dt + dt_bias, ggml_ssm_scan reading the cache state through ids
 *          (softplus is inside the kernel), y + D*x, swiglu_split(z, y), and the
 *          ssm-state copy-back (ggml_cpy of the scan's state output into a view
 *          of the cache tensor).
 * All 64 layers go into one graph (one graph per decode step, as llama.cpp),
 * allocated with ggml-alloc and run on the ggml CPU backend with 1 and 2 threads.
 * Also prints a one-thread memcpy figure and a tiny-shape correctness check of
 * the graph against a plain double-precision Mamba2 recurrence.
 *
 * ggml source: llama.cpp as vendored in llama-cpp-python 0.3.36 (PyPI sdist).
 * Built and run by benches/ggml_baseline.sh.
 *
 * Usage: ggml_baseline SECTION...   (info, check, memcpy, a8, c1, a1, a32)
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#ifndef LLAMA_CPP_COMMIT
#define LLAMA_CPP_COMMIT "unknown"
#endif

#define N_REPS   15
#define N_WARMUP 2

/* ------------------------------------------------------------------ utils */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(float lo, float hi) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1Dull;
    return lo + (hi - lo) * (float) ((r >> 40) * (1.0 / 16777216.0));
}

static void fill(struct ggml_tensor * t, float lo, float hi) {
    float * p = (float *) t->data;
    for (int64_t i = 0; i < ggml_nelements(t); i++) p[i] = frand(lo, hi);
}

static int cmp_d(const void * a, const void * b) {
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static double median(double * v, int n) {
    qsort(v, n, sizeof(double), cmp_d);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ------------------------------------------------------------------ model */

typedef struct {
    int n_layer, d_inner, n_group, d_state, n_head, head_dim, d_conv;
} shape_t;

static const shape_t SHAPE_27B = { 64, 5120, 1, 128, 80, 64, 4 };

static int64_t conv_dim(const shape_t * s)  { return s->d_inner + 2 * s->n_group * s->d_state; }
static int64_t n_embd_r(const shape_t * s)  { return (s->d_conv - 1) * conv_dim(s); }
static int64_t n_embd_s(const shape_t * s)  { return (int64_t) s->d_state * s->d_inner; }
static int64_t d_in_proj(const shape_t * s) { return 2 * s->d_inner + 2 * s->n_group * s->d_state + s->n_head; }

enum mode { MODE_FULL, MODE_NO_SSM_CPY, MODE_CONV_ONLY };

typedef struct {
    shape_t sh;
    int n_seqs;
    ggml_backend_t backend;
    struct ggml_context * ctx_w;   /* persistent: weights, rs cache, inputs */
    ggml_backend_buffer_t buf_w;
    struct ggml_tensor ** conv_w, ** conv_b, ** dt_b, ** A, ** D;
    struct ggml_tensor ** r_l, ** s_l; /* cache_r_l / cache_s_l, [n_embd, mem_size] */
    struct ggml_tensor ** zxbcdt;  /* stands in for the ssm_in projection output */
    struct ggml_tensor * s_copy;   /* rs_s_copy: source slot per sequence (identity) */
    struct ggml_context * ctx_g;
    struct ggml_cgraph * gf;
    ggml_gallocr_t galloc;
    struct ggml_tensor ** y_out;   /* per-layer gated y (or conv output) */
} model_t;

static void model_init(model_t * m, const shape_t * sh, int n_seqs) {
    memset(m, 0, sizeof(*m));
    m->sh = *sh;
    m->n_seqs = n_seqs;
    const int L = sh->n_layer;
    const int64_t mem_size = n_seqs; /* one rs cell per sequence, n_rs_seq = 0 */

    m->backend = ggml_backend_cpu_init();
    struct ggml_init_params ip = { ggml_tensor_overhead() * (size_t) (16 * L + 16), NULL, true };
    m->ctx_w = ggml_init(ip);

#define ALLOC_ARR(f) m->f = calloc((size_t) L, sizeof(*m->f))
    ALLOC_ARR(conv_w); ALLOC_ARR(conv_b); ALLOC_ARR(dt_b); ALLOC_ARR(A); ALLOC_ARR(D);
    ALLOC_ARR(r_l); ALLOC_ARR(s_l); ALLOC_ARR(zxbcdt); ALLOC_ARR(y_out);
#undef ALLOC_ARR

    for (int il = 0; il < L; il++) {
        m->conv_w[il] = ggml_new_tensor_2d(m->ctx_w, GGML_TYPE_F32, sh->d_conv, conv_dim(sh));
        m->conv_b[il] = ggml_new_tensor_1d(m->ctx_w, GGML_TYPE_F32, conv_dim(sh));
        m->dt_b[il]   = ggml_new_tensor_1d(m->ctx_w, GGML_TYPE_F32, sh->n_head);
        m->A[il]      = ggml_new_tensor_2d(m->ctx_w, GGML_TYPE_F32, 1, sh->n_head);
        m->D[il]      = ggml_new_tensor_2d(m->ctx_w, GGML_TYPE_F32, 1, sh->n_head);
        m->r_l[il]    = ggml_new_tensor_2d(m->ctx_w, GGML_TYPE_F32, n_embd_r(sh), mem_size);
        m->s_l[il]    = ggml_new_tensor_2d(m->ctx_w, GGML_TYPE_F32, n_embd_s(sh), mem_size);
        m->zxbcdt[il] = ggml_new_tensor_3d(m->ctx_w, GGML_TYPE_F32, d_in_proj(sh), 1, n_seqs);
    }
    m->s_copy = ggml_new_tensor_1d(m->ctx_w, GGML_TYPE_I32, n_seqs);

    m->buf_w = ggml_backend_alloc_ctx_tensors(m->ctx_w, m->backend);
    if (!m->buf_w) { fprintf(stderr, "failed to allocate persistent tensors\n"); exit(1); }

    for (int il = 0; il < L; il++) {
        fill(m->conv_w[il], -0.5f, 0.5f);
        fill(m->conv_b[il], -0.1f, 0.1f);
        float * dtb = (float *) m->dt_b[il]->data, * a = (float *) m->A[il]->data;
        for (int h = 0; h < sh->n_head; h++) {
            float dt0 = frand(0.001f, 0.1f);
            dtb[h] = logf(expm1f(dt0));          /* inverse softplus, as Mamba2 init */
            a[h]   = -frand(1.0f, 16.0f);        /* A = -exp(A_log) */
        }
        fill(m->D[il], 0.5f, 1.5f);
        fill(m->r_l[il], -1.0f, 1.0f);
        fill(m->s_l[il], -0.1f, 0.1f);
        fill(m->zxbcdt[il], -1.0f, 1.0f);
    }
    int32_t * ids = (int32_t *) m->s_copy->data;
    for (int i = 0; i < n_seqs; i++) ids[i] = i; /* kv_head = 0, steady-state decode */
}

/* llama.cpp's build_rs(): zero-clear (no-op here: zero-sized), gather the rows
 * of the sequences in this ubatch, and copy the "extra" rows (none in steady
 * decode). get_rows is either ggml_get_rows (conv) or ggml_ssm_scan (ssm). */
typedef struct { struct ggml_tensor * x, * dt, * A, * B, * C; const shape_t * sh; } scan_args;

static struct ggml_tensor * build_rs(struct ggml_context * ctx, struct ggml_cgraph * gf,
                                     struct ggml_tensor * s, int64_t state_size, model_t * m,
                                     const scan_args * scan) {
    const int n_seqs = m->n_seqs;
    const int64_t n_rs = n_seqs, rs_head = 0;
    struct ggml_tensor * ids_main  = ggml_view_1d(ctx, m->s_copy, n_seqs, 0);
    struct ggml_tensor * ids_extra = ggml_view_1d(ctx, m->s_copy, n_rs - n_seqs, n_seqs * m->s_copy->nb[0]);

    struct ggml_tensor * states = ggml_reshape_2d(ctx, s, state_size, s->ne[1]);
    ggml_build_forward_expand(gf, ggml_scale_inplace(ctx, ggml_view_1d(ctx, states, 0, 0), 0)); /* rs_z < 0 */

    struct ggml_tensor * out;
    if (scan) {
        const shape_t * sh = scan->sh;
        struct ggml_tensor * ssm = ggml_reshape_4d(ctx, states, sh->d_state, sh->head_dim, sh->n_head, s->ne[1]);
        out = ggml_ssm_scan(ctx, ssm, scan->x, scan->dt, scan->A, scan->B, scan->C, ids_main, 1);
    } else {
        out = ggml_get_rows(ctx, states, ids_main);
    }
    ggml_build_forward_expand(gf, out);

    struct ggml_tensor * extra = ggml_get_rows(ctx, states, ids_extra);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, extra,
        ggml_view_2d(ctx, s, state_size, n_rs - n_seqs, s->nb[1], (rs_head + n_seqs) * s->nb[1])));
    return out;
}

static void build_layer(model_t * m, int il, enum mode mode) {
    struct ggml_context * ctx = m->ctx_g;
    struct ggml_cgraph * gf = m->gf;
    const shape_t * sh = &m->sh;
    const int64_t ns = m->n_seqs, nt = 1, hd = sh->head_dim, nh = sh->n_head;
    const int64_t di = sh->d_inner, ng = sh->n_group, ds = sh->d_state, dc = sh->d_conv;
    const int64_t cd = conv_dim(sh);
    const int64_t mem_size = ns, kv_head = 0;

    struct ggml_tensor * r_all = m->r_l[il], * s_all = m->s_l[il];

    struct ggml_tensor * conv = build_rs(ctx, gf, r_all, n_embd_r(sh), m, NULL);
    conv = ggml_reshape_3d(ctx, conv, dc - 1, cd, ns);

    struct ggml_tensor * zx = m->zxbcdt[il];
    struct ggml_tensor * z   = ggml_view_4d(ctx, zx, hd, nh, nt, ns, hd * zx->nb[0], zx->nb[1], zx->nb[2], 0);
    struct ggml_tensor * xBC = ggml_view_3d(ctx, zx, cd, nt, ns, zx->nb[1], zx->nb[2], di * sizeof(float));
    struct ggml_tensor * dt  = ggml_view_3d(ctx, zx, nh, nt, ns, zx->nb[1], zx->nb[2], (2 * di + 2 * ng * ds) * sizeof(float));

    /* conv */
    {
        struct ggml_tensor * conv_x = ggml_concat(ctx, conv, ggml_transpose(ctx, xBC), 0);
        const int64_t row_count = (dc - 1) * cd;
        const size_t row_size = ggml_row_size(r_all->type, row_count);
        struct ggml_tensor * last_conv = ggml_view_3d(ctx, conv_x, dc - 1, cd, ns,
                                                      conv_x->nb[1], conv_x->nb[2], nt * conv_x->nb[0]);
        ggml_build_forward_expand(gf, ggml_cpy(ctx, last_conv,
            ggml_view_2d(ctx, r_all, row_count, ns, r_all->nb[1], (size_t) kv_head * row_size)));

        xBC = ggml_ssm_conv(ctx, conv_x, m->conv_w[il]);
        xBC = ggml_add(ctx, xBC, m->conv_b[il]);
        xBC = ggml_silu(ctx, xBC);
    }
    if (mode == MODE_CONV_ONLY) {
        ggml_set_output(xBC);
        ggml_build_forward_expand(gf, xBC);
        m->y_out[il] = xBC;
        return;
    }

    /* ssm */
    {
        struct ggml_tensor * x = ggml_view_4d(ctx, xBC, hd, nh, nt, ns, hd * xBC->nb[0], xBC->nb[1], xBC->nb[2], 0);
        struct ggml_tensor * B = ggml_view_4d(ctx, xBC, ds, ng, nt, ns, ds * xBC->nb[0], xBC->nb[1], xBC->nb[2],
                                              di * ggml_element_size(xBC));
        struct ggml_tensor * C = ggml_view_4d(ctx, xBC, ds, ng, nt, ns, ds * xBC->nb[0], xBC->nb[1], xBC->nb[2],
                                              (di + ng * ds) * ggml_element_size(xBC));
        dt = ggml_add(ctx, ggml_cont(ctx, dt), m->dt_b[il]);

        scan_args sa = { x, dt, m->A[il], B, C, sh };
        struct ggml_tensor * y_ssm = build_rs(ctx, gf, s_all, n_embd_s(sh), m, &sa);

        if (mode == MODE_FULL) {
            const int64_t Dn = ds * di;
            const size_t row_size = ggml_row_size(s_all->type, Dn);
            const size_t y_row_size = ggml_row_size(y_ssm->type, Dn);
            const size_t state_offset = ggml_nelements(x) * ggml_element_size(x);
            ggml_build_forward_expand(gf, ggml_cpy(ctx,
                ggml_view_3d(ctx, y_ssm, Dn, ns, 1, y_row_size, y_row_size * ns, state_offset),
                ggml_view_3d(ctx, s_all, Dn, ns, 1, s_all->nb[1], (size_t) mem_size * row_size, kv_head * row_size)));
        }

        struct ggml_tensor * y = ggml_view_4d(ctx, y_ssm, hd, nh, nt, ns, x->nb[1], nh * x->nb[1],
                                              nt * nh * x->nb[1], 0);
        y = ggml_add(ctx, y, ggml_mul(ctx, x, m->D[il]));
        y = ggml_swiglu_split(ctx, ggml_cont(ctx, z), y);
        /* (grouped RMS norm and out_proj omitted: not state work) */
        ggml_set_output(y);
        ggml_build_forward_expand(gf, y);
        m->y_out[il] = y;
    }
}

static void model_build_graph(model_t * m, enum mode mode) {
    const size_t max_nodes = 8192;
    struct ggml_init_params ip = {
        ggml_tensor_overhead() * max_nodes * 2 + ggml_graph_overhead_custom(max_nodes, false), NULL, true };
    m->ctx_g = ggml_init(ip);
    m->gf = ggml_new_graph_custom(m->ctx_g, max_nodes, false);
    for (int il = 0; il < m->sh.n_layer; il++) build_layer(m, il, mode);
    m->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(m->backend));
    if (!ggml_gallocr_alloc_graph(m->galloc, m->gf)) { fprintf(stderr, "graph alloc failed\n"); exit(1); }
}

static void model_free(model_t * m) {
    if (m->galloc) ggml_gallocr_free(m->galloc);
    if (m->ctx_g) ggml_free(m->ctx_g);
    ggml_backend_buffer_free(m->buf_w);
    ggml_free(m->ctx_w);
    ggml_backend_free(m->backend);
    free(m->conv_w); free(m->conv_b); free(m->dt_b); free(m->A); free(m->D);
    free(m->r_l); free(m->s_l); free(m->zxbcdt); free(m->y_out);
}

static void compute(model_t * m, int n_threads) {
    ggml_backend_cpu_set_n_threads(m->backend, n_threads);
    if (ggml_backend_graph_compute(m->backend, m->gf) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "graph compute failed\n");
        exit(1);
    }
}

/* ----------------------------------------------------- correctness check */

static double sigm(double v) { return 1.0 / (1.0 + exp(-v)); }

static void check_shape(const shape_t sh) {
    const int ns = 2, steps = 3;
    model_t m;
    model_init(&m, &sh, ns);
    model_build_graph(&m, MODE_FULL);

    const int L = sh.n_layer, nh = sh.n_head, hd = sh.head_dim, ds = sh.d_state, dc = sh.d_conv, di = sh.d_inner;
    const int cd = (int) conv_dim(&sh), ng = sh.n_group;
    /* double-precision reference copies of the cache */
    double * rs = malloc(sizeof(double) * L * ns * n_embd_r(&sh));
    double * ss = malloc(sizeof(double) * L * ns * n_embd_s(&sh));
    double * yref = malloc(sizeof(double) * L * ns * di);
    for (int il = 0; il < L; il++) {
        for (int64_t i = 0; i < ns * n_embd_r(&sh); i++) rs[il * ns * n_embd_r(&sh) + i] = ((float *) m.r_l[il]->data)[i];
        for (int64_t i = 0; i < ns * n_embd_s(&sh); i++) ss[il * ns * n_embd_s(&sh) + i] = ((float *) m.s_l[il]->data)[i];
    }
    double * xc = malloc(sizeof(double) * cd);
    double * cx = malloc(sizeof(double) * cd * dc);

    double err_y = 0, err_s = 0, err_r = 0, max_y = 0;
    for (int step = 0; step < steps; step++) {
        for (int il = 0; il < L; il++) fill(m.zxbcdt[il], -1.0f, 1.0f); /* new token */
        compute(&m, 2);
        for (int il = 0; il < L; il++) {
            const float * w = m.conv_w[il]->data, * b = m.conv_b[il]->data, * dtb = m.dt_b[il]->data;
            const float * A = m.A[il]->data, * Dp = m.D[il]->data;
            for (int q = 0; q < ns; q++) {
                const float * zx = (const float *) m.zxbcdt[il]->data + (size_t) q * d_in_proj(&sh);
                double * r = rs + ((size_t) il * ns + q) * n_embd_r(&sh);
                double * s = ss + ((size_t) il * ns + q) * n_embd_s(&sh);
                /* conv: window = [state (dc-1 cols), new xBC], then shift */
                for (int c = 0; c < cd; c++) {
                    for (int k = 0; k < dc - 1; k++) cx[c * dc + k] = r[c * (dc - 1) + k];
                    cx[c * dc + dc - 1] = zx[di + c];
                    double acc = b[c];
                    for (int k = 0; k < dc; k++) acc += cx[c * dc + k] * w[c * dc + k];
                    xc[c] = acc * sigm(acc);
                    for (int k = 0; k < dc - 1; k++) r[c * (dc - 1) + k] = cx[c * dc + k + 1];
                }
                /* ssm */
                for (int h = 0; h < nh; h++) {
                    const int g = h / (nh / ng);
                    const double v = (double) zx[2 * di + 2 * ng * ds + h] + dtb[h];
                    const double dt = log1p(exp(v));
                    const double dA = exp(dt * A[h]);
                    for (int p = 0; p < hd; p++) {
                        const double x = xc[h * hd + p];
                        double y = 0;
                        for (int n = 0; n < ds; n++) {
                            double * st = &s[(size_t) h * hd * ds + p * ds + n];
                            *st = *st * dA + dt * x * xc[di + g * ds + n];
                            y += *st * xc[di + ng * ds + g * ds + n];
                        }
                        y += Dp[h] * x;
                        const double zz = zx[h * hd + p];
                        y *= zz * sigm(zz);
                        yref[((size_t) il * ns + q) * di + h * hd + p] = y;
                    }
                }
            }
        }
    }
    for (int il = 0; il < L; il++) {
        const float * yg = (const float *) m.y_out[il]->data;
        for (int64_t i = 0; i < (int64_t) ns * di; i++) {
            err_y = fmax(err_y, fabs(yg[i] - yref[(size_t) il * ns * di + i]));
            max_y = fmax(max_y, fabs(yref[(size_t) il * ns * di + i]));
        }
        for (int64_t i = 0; i < ns * n_embd_s(&sh); i++)
            err_s = fmax(err_s, fabs(((float *) m.s_l[il]->data)[i] - ss[il * ns * n_embd_s(&sh) + i]));
        for (int64_t i = 0; i < ns * n_embd_r(&sh); i++)
            err_r = fmax(err_r, fabs(((float *) m.r_l[il]->data)[i] - rs[il * ns * n_embd_r(&sh) + i]));
    }
    printf("  %d layers, %d heads x %d, d_state %3d, 2 seqs: max|dy| = %.3g (max|y| = %.3g)   "
           "max|d ssm_state| = %.3g   max|d conv_state| = %.3g   %s\n",
           sh.n_layer, sh.n_head, sh.head_dim, sh.d_state, err_y, max_y, err_s, err_r, (err_y < 1e-4 && err_s < 1e-4 && err_r < 1e-6) ? "PASS" : "FAIL");
    free(rs); free(ss); free(yref); free(xc); free(cx);
    model_free(&m);
}

static void section_check(void) {
    printf("correctness: full graph (conv + ssm, both copy-backs), 3 decode steps with fresh inputs, 2 threads,\n"
           "vs a double-precision C Mamba2 recurrence (conv window/shift, softplus dt, dA = exp(dt*A),\n"
           "state = state*dA + dt*x*B, y = state.C + D*x, y *= silu(z)); compares y of the last step and the\n"
           "cache tensors after the copy-backs. d_state 8 exercises ggml's scalar loop, 128 its SIMD loop:\n");
    const shape_t tiny  = { 2, 16, 1, 8,   4, 4, 4 };
    const shape_t tiny2 = { 2, 16, 1, 128, 4, 4, 4 };
    check_shape(tiny);
    check_shape(tiny2);
}

/* --------------------------------------------------------------- memcpy */

static void section_memcpy(void) {
    const size_t n = (size_t) 8 * SHAPE_27B.n_layer * n_embd_s(&SHAPE_27B) * sizeof(float);
    char * a = malloc(n), * b = malloc(n);
    if (!a || !b) { printf("memcpy: allocation failed\n"); return; }
    memset(a, 1, n);
    memset(b, 2, n);
    double t[5];
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        memcpy(b, a, n);
        t[i] = now_s() - t0;
        a[i] = b[n - 1 - i]; /* keep the copies observable */
    }
    double med = median(t, 5);
    printf("memcpy, 1 thread, %.1f MB (8-slot ssm state): median %.1f ms = %.2f GB/s copied "
           "(~%.2f GB/s DRAM read+write)\n", n / 1e6, med * 1e3, n / med / 1e9, 2.0 * n / med / 1e9);
    free(a); free(b);
}

/* -------------------------------------------------------------- timings */

static void print_header(void) {
    printf("%-34s %6s %3s %10s %10s %11s %12s %10s\n", "case", "n_seqs", "thr", "median_ms", "min_ms",
           "ms/seq-tok", "state_MB/tok", "state_GB/s");
}

/* state bytes touched per decode step (read + write of the whole per-slot state) */
static double state_bytes(const shape_t * sh, int ns, enum mode mode) {
    double per = (double) n_embd_r(sh) * 4 * sh->n_layer;
    if (mode != MODE_CONV_ONLY) per += (double) n_embd_s(sh) * 4 * sh->n_layer;
    return per * ns;
}

static void bench(const char * name, int ns, enum mode mode, double max_s) {
    const shape_t * sh = &SHAPE_27B;
    model_t m;
    model_init(&m, sh, ns);
    model_build_graph(&m, mode);
    const double sb = state_bytes(sh, ns, mode);
    const int thr[2] = { 1, 2 };
    for (int ti = 0; ti < 2; ti++) {
        double t0 = now_s();
        compute(&m, thr[ti]);
        double first = now_s() - t0;
        if (max_s > 0 && first * (N_REPS + N_WARMUP) > max_s) {
            printf("%-34s %6d %3d  skipped (one compute %.2f s: run would exceed %.0f s)\n",
                   name, ns, thr[ti], first, max_s);
            continue;
        }
        for (int w = 1; w < N_WARMUP; w++) compute(&m, thr[ti]);
        double t[N_REPS];
        for (int r = 0; r < N_REPS; r++) {
            double s0 = now_s();
            compute(&m, thr[ti]);
            t[r] = now_s() - s0;
        }
        double med = median(t, N_REPS), mn = t[0];
        printf("%-34s %6d %3d %10.2f %10.2f %11.3f %12.1f %10.2f\n", name, ns, thr[ti], med * 1e3, mn * 1e3,
               med * 1e3 / ns, sb / ns / 1e6, 2.0 * sb / med / 1e9);
        fflush(stdout);
    }
    model_free(&m);
}

static void section_info(void) {
    const shape_t * sh = &SHAPE_27B;
    printf("ggml %s (commit as built: %s); llama.cpp %s as vendored in llama-cpp-python 0.3.36\n",
           ggml_version(), ggml_commit(), LLAMA_CPP_COMMIT);
    printf("shape: Mamba2-2.7B, %d layers, d_inner %d, n_groups %d, d_state %d, %d heads x %d, conv K=%d "
           "(conv_dim %lld), f32, 1 token/seq\n", sh->n_layer, sh->d_inner, sh->n_group, sh->d_state, sh->n_head,
           sh->head_dim, sh->d_conv, (long long) conv_dim(sh));
    const double ssm = (double) n_embd_s(sh) * 4 * sh->n_layer, conv = (double) n_embd_r(sh) * 4 * sh->n_layer;
    printf("state bytes per sequence-token: ssm %.0f B (%.2f MB) + conv %.0f B (%.2f MB) = %.2f MB\n",
           ssm, ssm / 1e6, conv, conv / 1e6, (ssm + conv) / 1e6);
    printf("timings: per decode step (one graph compute = 1 token for each of n_seqs seqs), %d reps after %d "
           "warm-ups;\nstate_GB/s = 2 x state bytes (read+write, minimum traffic) / median\n", N_REPS, N_WARMUP);
}

int main(int argc, char ** argv) {
    for (int i = 1; i < argc; i++) {
        const char * s = argv[i];
        if      (!strcmp(s, "info"))   section_info();
        else if (!strcmp(s, "check"))  section_check();
        else if (!strcmp(s, "memcpy")) section_memcpy();
        else if (!strcmp(s, "header")) print_header();
        else if (!strcmp(s, "a8")) {
            bench("a  conv+ssm, with copy-back", 8, MODE_FULL, 0);
            bench("b  conv+ssm, without ssm copy-back", 8, MODE_NO_SSM_CPY, 0);
        }
        else if (!strcmp(s, "c1")) bench("c  conv step only", 1, MODE_CONV_ONLY, 0);
        else if (!strcmp(s, "a1")) bench("d  conv+ssm, with copy-back", 1, MODE_FULL, 0);
        else if (!strcmp(s, "a32")) {
            long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
            double need = 32 * (state_bytes(&SHAPE_27B, 1, MODE_FULL) + d_in_proj(&SHAPE_27B) * 4.0 * 64) * 1.1;
            if (pages > 0 && (double) pages * psz < need + 1e9)
                printf("%-34s %6d      skipped (needs ~%.1f GB, %.1f GB free)\n", "d  conv+ssm, with copy-back", 32,
                       need / 1e9, (double) pages * psz / 1e9);
            else
                bench("d  conv+ssm, with copy-back", 32, MODE_FULL, 90.0);
        }
        else { fprintf(stderr, "unknown section %s\n", s); return 2; }
        fflush(stdout);
    }
    return 0;
}
