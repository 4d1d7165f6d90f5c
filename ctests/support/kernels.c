/* The bodies of the helpers declared in ../kernels.h, compiled once into the
 * m2c_test_support library that every C test links. */
#include "../kernels.h"

uint16_t bf16_rne(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint16_t f16_rne(float f) {
    const uint32_t u = f32_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u);
    if (a >= 0x47800000u) return (uint16_t)(sign | 0x7C00u); /* >= 2^16, or inf */
    const uint32_t e = a >> 23;
    if (e < 113) {
        /* Below 2^-14: a subnormal f16 (or zero), in units of 2^-24. */
        if (e < 102) return sign;
        const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
        const uint32_t sh = 126 - e; /* 14..24 */
        uint32_t h = mant >> sh;
        const uint32_t rem = mant & ((1u << sh) - 1u), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((e - 112) << 10) | ((a & 0x7FFFFFu) >> 13);
    const uint32_t rem = a & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into inf */
    return (uint16_t)(sign | h);
}

float round_to(m2c_dtype d, float f) {
    switch (d) {
        case M2C_DTYPE_F32: return f;
        case M2C_DTYPE_BF16: return f32_from_bf16(bf16_rne(f));
        case M2C_DTYPE_F16: return f32_from_f16(f16_rne(f));
        default: fprintf(stderr, "test bug: dtype %u\n", (unsigned)d); exit(2);
    }
}

void store_round(void *buf, m2c_dtype d, size_t i, float f) {
    switch (d) {
        case M2C_DTYPE_F32: ((float *)buf)[i] = f; break;
        case M2C_DTYPE_BF16: ((uint16_t *)buf)[i] = bf16_rne(f); break;
        case M2C_DTYPE_F16: ((uint16_t *)buf)[i] = f16_rne(f); break;
        default: fprintf(stderr, "test bug: dtype %u\n", (unsigned)d); exit(2);
    }
}

void check_rounding_helpers(void) {
    CHECK(bf16_rne(1.0f) == 0x3F80u);
    CHECK(bf16_rne(f32_from_bits(0x3F808000u)) == 0x3F80u); /* tie, even down */
    CHECK(bf16_rne(f32_from_bits(0x3F818000u)) == 0x3F82u); /* tie, even up */
    CHECK(bf16_rne(f32_from_bits(0x3F808001u)) == 0x3F81u);
    CHECK(f16_rne(1.0f) == 0x3C00u);
    CHECK(f16_rne(65504.0f) == 0x7BFFu);
    CHECK(f16_rne(65520.0f) == 0x7C00u);
    CHECK(f16_rne(65519.0f) == 0x7BFFu);
    CHECK(f16_rne(-2.0f) == 0xC000u);
    CHECK(f16_rne(1.0f + 1.0f / 2048.0f) == 0x3C00u);            /* tie, even down */
    CHECK(f16_rne(1.0f + 3.0f / 2048.0f) == 0x3C02u);            /* tie, even up */
    CHECK(f16_rne(ldexpf(1.0f, -24)) == 0x0001u);                /* smallest subnormal */
    CHECK(f16_rne(ldexpf(1.0f, -25)) == 0x0000u);                /* tie to 0 */
    CHECK(f16_rne(ldexpf(1.5f, -25)) == 0x0001u);
    CHECK(f16_rne(ldexpf(1023.5f, -24)) == 0x0400u);             /* rounds up to a normal */
    CHECK(f16_rne(ldexpf(1.0f, -14)) == 0x0400u);
    for (uint32_t h = 0; h < 0x7C00u; h++) {
        CHECK(f16_rne(f32_from_f16((uint16_t)h)) == h);
        CHECK(f16_rne(f32_from_f16((uint16_t)(h | 0x8000u))) == (h | 0x8000u));
    }
}

rng rng_seeded(uint64_t seed) {
    rng r;
    r.s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    return r;
}

uint32_t rng_next(rng *r) {
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

float rng_uniform(rng *r, float lo, float hi) {
    return lo + (hi - lo) * ((float)(rng_next(r) >> 7) / 16777216.0f);
}

void fill_random(void *buf, m2c_dtype d, size_t n, rng *r, float lo, float hi,
                 float *vals) {
    for (size_t i = 0; i < n; i++) {
        const float v = round_to(d, rng_uniform(r, lo, hi));
        store_round(buf, d, i, v);
        if (vals) vals[i] = v;
    }
}

float *random_floats(size_t n, rng *r, float lo, float hi) {
    float *p = (float *)alloc_elems(M2C_DTYPE_F32, n);
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(r, lo, hi);
    return p;
}

void fill_sentinel(void *buf, m2c_dtype d, size_t n) {
    memset(buf, 0xFF, n * dtype_size(d));
}

float elem(const void *buf, m2c_dtype d, size_t i) { return load_elem(buf, d, i); }

m2c_config kernel_config(uint32_t heads, uint32_t head_dim, uint32_t state,
                         uint32_t groups, uint32_t K, uint32_t W,
                         m2c_dtype conv_dtype, m2c_dtype ssm_dtype) {
    m2c_config c;
    m2c_config_init(&c);
    c.num_layers = 2;
    c.num_slots = 4;
    c.num_heads = heads;
    c.head_dim = head_dim;
    c.intermediate_size = heads * head_dim;
    c.state_size = state;
    c.n_groups = groups;
    c.conv_kernel_size = K;
    c.conv_width = W;
    c.conv_dtype = conv_dtype;
    c.ssm_dtype = ssm_dtype;
    return c;
}

double tolerance(m2c_dtype d) {
    switch (d) {
        case M2C_DTYPE_F32: return 1e-5;
        case M2C_DTYPE_BF16: return 1.0 / 256.0 + 1e-5;
        case M2C_DTYPE_F16: return 1.0 / 2048.0 + 1e-5;
        default: fprintf(stderr, "test bug: dtype %u\n", (unsigned)d); exit(2);
    }
}

relerr relerr_new(void) {
    relerr e;
    memset(&e, 0, sizeof e);
    return e;
}

void relerr_add(relerr *e, double got, double want) {
    if (!isfinite(got)) {
        if (!e->nonfinite) e->first_nonfinite = e->count;
        e->nonfinite = 1;
    } else {
        const double d = fabs(got - want);
        if (d > e->max_err) {
            e->max_err = d;
            e->worst = e->count;
        }
    }
    if (fabs(want) > e->max_ref) e->max_ref = fabs(want);
    e->count++;
}

double relerr_value(const relerr *e) {
    return e->max_ref > 0 ? e->max_err / e->max_ref : e->max_err;
}

void expect_relerr_at(const char *file, int line, const relerr *e, double tol,
                      const char *what) {
    if (e->nonfinite || !(relerr_value(e) <= tol)) {
        fprintf(stderr,
                "%s:%d: %s: relative error %.3g (max abs err %.3g at element %zu, max |ref| "
                "%.3g) > tolerance %.3g%s\n",
                file, line, what, relerr_value(e), e->max_err, e->worst, e->max_ref, tol,
                e->nonfinite ? " (a non-finite value: unwritten or overflowed)" : "");
        if (e->nonfinite) fprintf(stderr, "  first non-finite element: %zu\n", e->first_nonfinite);
        exit(1);
    }
}

double silu_ref(double v) { return v / (1.0 + exp(-v)); }

void conv_ref(size_t dim, size_t K, size_t W, const float *win, const float *x,
              const float *weight, const float *bias, int silu, double *out,
              double *new_win) {
    for (size_t c = 0; c < dim; c++) {
        double sum = 0;
        for (size_t k = 0; k + 1 < K; k++)
            sum += (double)win[c * W + (W - (K - 1)) + k] * (double)weight[c * K + k];
        sum += (double)x[c] * (double)weight[c * K + K - 1];
        if (bias) sum += (double)bias[c];
        out[c] = silu ? silu_ref(sum) : sum;
        for (size_t j = 0; j + 1 < W; j++) new_win[c * W + j] = win[c * W + j + 1];
        new_win[c * W + W - 1] = x[c];
    }
}

void ssm_ref(size_t H, size_t P, size_t N, size_t G, const float *state,
             const float *x, const float *dt_in, const float *B, const float *C,
             const float *z, const ssm_ref_args *a, double *y, double *new_state) {
    for (size_t h = 0; h < H; h++) {
        const size_t g = h / (H / G);
        double dt = (double)dt_in[h] + (a->dt_bias ? (double)a->dt_bias[h] : 0.0);
        if (a->softplus) dt = dt <= 20.0 ? log1p(exp(dt)) : dt;
        if (a->clamp) {
            if (dt < a->dt_min) dt = a->dt_min;
            if (dt > a->dt_max) dt = a->dt_max;
        }
        const double dA = exp(dt * (double)a->A[h]);
        for (size_t p = 0; p < P; p++) {
            const double xp = x[h * P + p];
            double acc = 0;
            for (size_t n = 0; n < N; n++) {
                const size_t i = (h * P + p) * N + n;
                const double s = (double)state[i] * dA + dt * xp * (double)B[g * N + n];
                new_state[i] = s;
                acc += s * (double)C[g * N + n];
            }
            if (a->D) acc += (double)a->D[h] * xp;
            if (z) {
                const double zz = z[h * P + p];
                acc *= silu_ref(zz);
            }
            y[h * P + p] = acc;
        }
    }
}

void expect_only_touched_at(const char *file, int line, const m2c_config *c,
                            const snapshot *before, const snapshot *after,
                            uint32_t layer, int ssm, uint32_t touched) {
    CHECK(before->len == after->len);
    for (uint32_t l = 0; l < c->num_layers; l++)
        for (size_t s = 0; s < c->num_slots; s++) {
            const size_t co = snapshot_conv_offset(c, l, s), so = snapshot_ssm_offset(c, l, s);
            const int conv_may = !ssm && l == layer && (touched >> s) & 1u;
            const int ssm_may = ssm && l == layer && (touched >> s) & 1u;
            if (!conv_may &&
                memcmp(before->bytes + co, after->bytes + co, conv_slot_bytes(c)) != 0) {
                fprintf(stderr, "%s:%d: conv state of layer %u slot %zu changed\n", file, line,
                        l, s);
                exit(1);
            }
            if (!ssm_may && memcmp(before->bytes + so, after->bytes + so, ssm_slot_bytes(c)) != 0) {
                fprintf(stderr, "%s:%d: SSM state of layer %u slot %zu changed\n", file, line, l,
                        s);
                exit(1);
            }
        }
    if (memcmp(before->positions, after->positions, sizeof(uint64_t) * c->num_slots) != 0) {
        fprintf(stderr, "%s:%d: a kernel call changed a position\n", file, line);
        exit(1);
    }
}

uint32_t slot_mask(const int32_t *slots, size_t n) {
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const int32_t s = slots ? slots[i] : (int32_t)i;
        if (s >= 0) m |= 1u << s;
    }
    return m;
}

void randomize_cache(m2c_cache *cache, rng *r, float amp) {
    m2c_config c;
    m2c_config_init(&c);
    EXPECT_OK(m2c_get_config(cache, &c));
    const size_t n = c.num_slots, cper = conv_slot_elems(&c), sper = ssm_slot_elems(&c);
    float *w = (float *)alloc_elems(M2C_DTYPE_F32, n * cper);
    float *st = (float *)alloc_elems(M2C_DTYPE_F32, n * sper);
    for (uint32_t l = 0; l < c.num_layers; l++) {
        for (size_t i = 0; i < n * cper; i++) w[i] = rng_uniform(r, -amp, amp);
        for (size_t i = 0; i < n * sper; i++) st[i] = rng_uniform(r, -amp, amp);
        EXPECT_OK(m2c_set_conv(cache, l, NULL, n, w, M2C_DTYPE_F32, n * cper));
        EXPECT_OK(m2c_update_ssm(cache, l, NULL, n, st, M2C_DTYPE_F32, n * sper));
    }
    free(w);
    free(st);
}

int rows_are_zero(const void *buf, m2c_dtype d, size_t per, size_t r0, size_t r1) {
    const unsigned char *b = (const unsigned char *)buf;
    for (size_t i = r0 * per * dtype_size(d); i < r1 * per * dtype_size(d); i++)
        if (b[i] != 0) return 0;
    return 1;
}

void check_conv_step(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                     const int32_t *slots, size_t n, const m2c_conv_args *args,
                     rng *r, const char *label) {
    const size_t dim = conv_dim_of(c), K = c->conv_kernel_size, W = c->conv_width;
    const size_t S = c->num_slots, per = conv_slot_elems(c);
    const m2c_dtype io = args->io_dtype;
    float *win0 = (float *)alloc_elems(M2C_DTYPE_F32, S * per);
    float *win1 = (float *)alloc_elems(M2C_DTYPE_F32, S * per);
    EXPECT_OK(m2c_read_conv(cache, layer, NULL, S, win0, M2C_DTYPE_F32, S * per));
    void *x = alloc_elems(io, n * dim);
    float *xv = (float *)alloc_elems(M2C_DTYPE_F32, n * dim);
    fill_random(x, io, n * dim, r, -2.0f, 2.0f, xv);
    void *out = alloc_elems(io, n * dim);
    fill_sentinel(out, io, n * dim);

    snapshot before = take_snapshot(cache);
    EXPECT_OK(m2c_conv_step(cache, layer, slots, n, x, n * dim, out, n * dim, args));
    snapshot after = take_snapshot(cache);
    EXPECT_ONLY_TOUCHED(c, &before, &after, layer, 0, slot_mask(slots, n));
    EXPECT_OK(m2c_read_conv(cache, layer, NULL, S, win1, M2C_DTYPE_F32, S * per));

    double *ro = (double *)malloc(sizeof(double) * dim);
    double *rw = (double *)malloc(sizeof(double) * per);
    CHECK(ro != NULL && rw != NULL);
    relerr eo = relerr_new(), ew = relerr_new();
    for (size_t i = 0; i < n; i++) {
        const int32_t s = slots ? slots[i] : (int32_t)i;
        if (s < 0) {
            if (!rows_are_zero(out, io, dim, i, i + 1)) {
                fprintf(stderr, "%s: padding row %zu of out is not zero\n", label, i);
                exit(1);
            }
            continue;
        }
        conv_ref(dim, K, W, win0 + (size_t)s * per, xv + i * dim, args->weight, args->bias,
                 args->activation == M2C_ACTIVATION_SILU, ro, rw);
        for (size_t ch = 0; ch < dim; ch++) relerr_add(&eo, elem(out, io, i * dim + ch), ro[ch]);
        for (size_t j = 0; j < per; j++) relerr_add(&ew, win1[(size_t)s * per + j], rw[j]);
    }
    char what[256];
    snprintf(what, sizeof what, "%s: conv out", label);
    EXPECT_RELERR(&eo, tolerance(io), what);
    snprintf(what, sizeof what, "%s: conv window", label);
    EXPECT_RELERR(&ew, tolerance(c->conv_dtype), what);

    free(ro);
    free(rw);
    free_snapshot(&before);
    free_snapshot(&after);
    free(x);
    free(xv);
    free(out);
    free(win0);
    free(win1);
}

void check_ssm_step(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                    const int32_t *slots, size_t n, const m2c_ssm_args *args,
                    int with_z, int big_dt, rng *r, const char *label) {
    const size_t H = c->num_heads, P = c->head_dim, N = c->state_size, G = c->n_groups;
    const size_t S = c->num_slots, per = ssm_slot_elems(c);
    const m2c_dtype io = args->io_dtype;
    float *st0 = (float *)alloc_elems(M2C_DTYPE_F32, S * per);
    float *st1 = (float *)alloc_elems(M2C_DTYPE_F32, S * per);
    EXPECT_OK(m2c_read_ssm(cache, layer, NULL, S, st0, M2C_DTYPE_F32, S * per));

    void *x = alloc_elems(io, n * H * P), *z = alloc_elems(io, n * H * P);
    void *dt = alloc_elems(io, n * H), *B = alloc_elems(io, n * G * N);
    void *C = alloc_elems(io, n * G * N), *y = alloc_elems(io, n * H * P);
    float *xv = (float *)alloc_elems(M2C_DTYPE_F32, n * H * P);
    float *zv = (float *)alloc_elems(M2C_DTYPE_F32, n * H * P);
    float *dtv = (float *)alloc_elems(M2C_DTYPE_F32, n * H);
    float *Bv = (float *)alloc_elems(M2C_DTYPE_F32, n * G * N);
    float *Cv = (float *)alloc_elems(M2C_DTYPE_F32, n * G * N);
    fill_random(x, io, n * H * P, r, -1.0f, 1.0f, xv);
    fill_random(z, io, n * H * P, r, -3.0f, 3.0f, zv);
    fill_random(dt, io, n * H, r, -1.0f, 2.0f, dtv);
    fill_random(B, io, n * G * N, r, -1.0f, 1.0f, Bv);
    fill_random(C, io, n * G * N, r, -1.0f, 1.0f, Cv);
    if (big_dt)
        for (size_t i = 0; i < n; i++) {
            store_round(dt, io, i * H + H - 1, 21.5f);
            dtv[i * H + H - 1] = 21.5f;
        }
    fill_sentinel(y, io, n * H * P);

    m2c_ssm_io b;
    m2c_ssm_io_init(&b);
    b.x = x;
    b.x_len = n * H * P;
    b.dt = dt;
    b.dt_len = n * H;
    b.B = B;
    b.B_len = n * G * N;
    b.C = C;
    b.C_len = n * G * N;
    if (with_z) {
        b.z = z;
        b.z_len = n * H * P;
    }
    b.y = y;
    b.y_len = n * H * P;

    snapshot before = take_snapshot(cache);
    EXPECT_OK(m2c_ssm_step(cache, layer, slots, n, &b, args));
    snapshot after = take_snapshot(cache);
    EXPECT_ONLY_TOUCHED(c, &before, &after, layer, 1, slot_mask(slots, n));
    EXPECT_OK(m2c_read_ssm(cache, layer, NULL, S, st1, M2C_DTYPE_F32, S * per));

    ssm_ref_args ra;
    ra.A = args->A;
    ra.D = args->D;
    ra.dt_bias = args->dt_bias;
    ra.softplus = args->dt_softplus != 0;
    ra.clamp = args->dt_clamp != 0;
    ra.dt_min = args->dt_min;
    ra.dt_max = args->dt_max;
    double *ry = (double *)malloc(sizeof(double) * H * P);
    double *rs = (double *)malloc(sizeof(double) * per);
    CHECK(ry != NULL && rs != NULL);
    relerr ey = relerr_new(), es = relerr_new();
    for (size_t i = 0; i < n; i++) {
        const int32_t s = slots ? slots[i] : (int32_t)i;
        if (s < 0) {
            if (!rows_are_zero(y, io, H * P, i, i + 1)) {
                fprintf(stderr, "%s: padding row %zu of y is not zero\n", label, i);
                exit(1);
            }
            continue;
        }
        ssm_ref(H, P, N, G, st0 + (size_t)s * per, xv + i * H * P, dtv + i * H, Bv + i * G * N,
                Cv + i * G * N, with_z ? zv + i * H * P : NULL, &ra, ry, rs);
        for (size_t j = 0; j < H * P; j++) relerr_add(&ey, elem(y, io, i * H * P + j), ry[j]);
        for (size_t j = 0; j < per; j++) relerr_add(&es, st1[(size_t)s * per + j], rs[j]);
    }
    char what[256];
    snprintf(what, sizeof what, "%s: ssm y", label);
    EXPECT_RELERR(&ey, tolerance(io), what);
    snprintf(what, sizeof what, "%s: ssm state", label);
    EXPECT_RELERR(&es, tolerance(c->ssm_dtype), what);

    free(ry);
    free(rs);
    free_snapshot(&before);
    free_snapshot(&after);
    void *bufs[] = {x, z, dt, B, C, y, xv, zv, dtv, Bv, Cv, st0, st1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

unsigned char *at(void *buf, m2c_dtype d, size_t i) {
    return (unsigned char *)buf + i * dtype_size(d);
}

const unsigned char *at_c(const void *buf, m2c_dtype d, size_t i) {
    return (const unsigned char *)buf + i * dtype_size(d);
}

ssm_tokens ssm_tokens_random(const m2c_config *c, size_t T, m2c_dtype io,
                             int with_z, rng *r) {
    const size_t HP = (size_t)c->num_heads * c->head_dim, H = c->num_heads;
    const size_t GN = (size_t)c->n_groups * c->state_size;
    ssm_tokens t;
    t.T = T;
    t.io = io;
    t.with_z = with_z;
    t.x = alloc_elems(io, T * HP);
    t.z = alloc_elems(io, T * HP);
    t.dt = alloc_elems(io, T * H);
    t.B = alloc_elems(io, T * GN);
    t.C = alloc_elems(io, T * GN);
    t.y = alloc_elems(io, T * HP);
    fill_random(t.x, io, T * HP, r, -1.0f, 1.0f, NULL);
    fill_random(t.z, io, T * HP, r, -3.0f, 3.0f, NULL);
    fill_random(t.dt, io, T * H, r, -1.0f, 2.0f, NULL);
    fill_random(t.B, io, T * GN, r, -1.0f, 1.0f, NULL);
    fill_random(t.C, io, T * GN, r, -1.0f, 1.0f, NULL);
    fill_sentinel(t.y, io, T * HP);
    return t;
}

m2c_ssm_io ssm_tokens_io(const ssm_tokens *t, const m2c_config *c, size_t row0,
                         size_t rows) {
    const size_t HP = (size_t)c->num_heads * c->head_dim, H = c->num_heads;
    const size_t GN = (size_t)c->n_groups * c->state_size;
    m2c_ssm_io b;
    m2c_ssm_io_init(&b);
    b.x = at(t->x, t->io, row0 * HP);
    b.x_len = rows * HP;
    b.dt = at(t->dt, t->io, row0 * H);
    b.dt_len = rows * H;
    b.B = at(t->B, t->io, row0 * GN);
    b.B_len = rows * GN;
    b.C = at(t->C, t->io, row0 * GN);
    b.C_len = rows * GN;
    if (t->with_z) {
        b.z = at(t->z, t->io, row0 * HP);
        b.z_len = rows * HP;
    }
    b.y = at(t->y, t->io, row0 * HP);
    b.y_len = rows * HP;
    return b;
}

void ssm_tokens_free(ssm_tokens *t) {
    free(t->x);
    free(t->z);
    free(t->dt);
    free(t->B);
    free(t->C);
    free(t->y);
}

size_t max_seqlen(const uint64_t *cu, size_t n) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (cu[i + 1] - cu[i] > m) m = (size_t)(cu[i + 1] - cu[i]);
    return m;
}

void conv_by_steps(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                   const int32_t *slots, size_t n, const uint64_t *cu,
                   const void *x, void *out, const m2c_conv_args *a) {
    const size_t dim = conv_dim_of(c), es = dtype_size(a->io_dtype);
    const m2c_dtype io = a->io_dtype;
    memset(out, 0, (size_t)cu[n] * dim * es);
    int32_t *sl = (int32_t *)malloc(sizeof(int32_t) * (n ? n : 1));
    void *xs = alloc_elems(io, n * dim), *os = alloc_elems(io, n * dim);
    CHECK(sl != NULL);
    memset(xs, 0, n * dim * es);
    for (size_t t = 0; t < max_seqlen(cu, n); t++) {
        for (size_t i = 0; i < n; i++) {
            const int32_t s = slots ? slots[i] : (int32_t)i;
            const int active = s >= 0 && t < cu[i + 1] - cu[i];
            sl[i] = active ? s : -1;
            if (active) memcpy(at(xs, io, i * dim), at_c(x, io, (cu[i] + t) * dim), dim * es);
        }
        fill_sentinel(os, io, n * dim);
        EXPECT_OK(m2c_conv_step(cache, layer, sl, n, xs, n * dim, os, n * dim, a));
        for (size_t i = 0; i < n; i++) {
            if (sl[i] >= 0)
                memcpy(at(out, io, (cu[i] + t) * dim), at(os, io, i * dim), dim * es);
            else
                CHECK(rows_are_zero(os, io, dim, i, i + 1));
        }
    }
    free(sl);
    free(xs);
    free(os);
}

void ssm_by_steps(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                  const int32_t *slots, size_t n, const uint64_t *cu,
                  ssm_tokens *t, const m2c_ssm_args *a) {
    const size_t HP = (size_t)c->num_heads * c->head_dim, H = c->num_heads;
    const size_t GN = (size_t)c->n_groups * c->state_size;
    const m2c_dtype io = t->io;
    const size_t es = dtype_size(io);
    CHECK(io == a->io_dtype);
    memset(t->y, 0, (size_t)cu[n] * HP * es);
    int32_t *sl = (int32_t *)malloc(sizeof(int32_t) * (n ? n : 1));
    CHECK(sl != NULL);
    ssm_tokens st;
    st.T = n;
    st.io = io;
    st.with_z = t->with_z;
    st.x = alloc_elems(io, n * HP);
    st.z = alloc_elems(io, n * HP);
    st.dt = alloc_elems(io, n * H);
    st.B = alloc_elems(io, n * GN);
    st.C = alloc_elems(io, n * GN);
    st.y = alloc_elems(io, n * HP);
    memset(st.x, 0, n * HP * es);
    memset(st.z, 0, n * HP * es);
    memset(st.dt, 0, n * H * es);
    memset(st.B, 0, n * GN * es);
    memset(st.C, 0, n * GN * es);
    for (size_t k = 0; k < max_seqlen(cu, n); k++) {
        for (size_t i = 0; i < n; i++) {
            const int32_t s = slots ? slots[i] : (int32_t)i;
            const int active = s >= 0 && k < cu[i + 1] - cu[i];
            sl[i] = active ? s : -1;
            if (!active) continue;
            const size_t row = (size_t)cu[i] + k;
            memcpy(at(st.x, io, i * HP), at(t->x, io, row * HP), HP * es);
            memcpy(at(st.z, io, i * HP), at(t->z, io, row * HP), HP * es);
            memcpy(at(st.dt, io, i * H), at(t->dt, io, row * H), H * es);
            memcpy(at(st.B, io, i * GN), at(t->B, io, row * GN), GN * es);
            memcpy(at(st.C, io, i * GN), at(t->C, io, row * GN), GN * es);
        }
        fill_sentinel(st.y, io, n * HP);
        m2c_ssm_io b = ssm_tokens_io(&st, c, 0, n);
        EXPECT_OK(m2c_ssm_step(cache, layer, sl, n, &b, a));
        for (size_t i = 0; i < n; i++) {
            if (sl[i] >= 0)
                memcpy(at(t->y, io, ((size_t)cu[i] + k) * HP), at(st.y, io, i * HP), HP * es);
            else
                CHECK(rows_are_zero(st.y, io, HP, i, i + 1));
        }
    }
    free(sl);
    ssm_tokens_free(&st);
}

uint32_t nonempty_mask(const int32_t *slots, size_t n, const uint64_t *cu) {
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const int32_t s = slots ? slots[i] : (int32_t)i;
        if (s >= 0 && cu[i + 1] > cu[i]) m |= 1u << s;
    }
    return m;
}

int padding_seqs_zero(const void *buf, m2c_dtype d, size_t per,
                      const int32_t *slots, size_t n, const uint64_t *cu) {
    for (size_t i = 0; i < n; i++) {
        const int32_t s = slots ? slots[i] : (int32_t)i;
        if (s < 0 && !rows_are_zero(buf, d, per, (size_t)cu[i], (size_t)cu[i + 1])) return 0;
    }
    return 1;
}

void twin_caches(const m2c_config *c, uint64_t seed, m2c_cache **a, m2c_cache **b) {
    *a = create_or_die(c);
    *b = create_or_die(c);
    rng r1 = rng_seeded(seed), r2 = rng_seeded(seed);
    randomize_cache(*a, &r1, 2.0f);
    randomize_cache(*b, &r2, 2.0f);
    snapshot sa = take_snapshot(*a), sb = take_snapshot(*b);
    CHECK(snapshots_equal(&sa, &sb));
    free_snapshot(&sa);
    free_snapshot(&sb);
}

void expect_same_cache_at(const char *file, int line, m2c_cache *a, m2c_cache *b) {
    snapshot sa = take_snapshot(a), sb = take_snapshot(b);
    if (!snapshots_equal(&sa, &sb)) {
        fprintf(stderr, "%s:%d: the two caches differ\n", file, line);
        exit(1);
    }
    free_snapshot(&sa);
    free_snapshot(&sb);
}

int all_finite(const void *buf, m2c_dtype d, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(elem(buf, d, i))) return 0;
    return 1;
}

int mentions_word(const char *msg, const char *word) {
    const size_t wl = strlen(word);
    for (const char *p = strstr(msg, word); p != NULL; p = strstr(p + 1, word)) {
        const char before = p == msg ? ' ' : p[-1], after = p[wl];
        const int ident_before = before == '_' || (before >= '0' && before <= '9') ||
                                 (before >= 'a' && before <= 'z') ||
                                 (before >= 'A' && before <= 'Z');
        const int ident_after = after == '_' || (after >= '0' && after <= '9') ||
                                (after >= 'a' && after <= 'z') || (after >= 'A' && after <= 'Z');
        if (!ident_before && !ident_after) return 1;
    }
    return 0;
}

void expect_names_at(const char *file, int line, const char *word) {
    const char *e = m2c_last_error();
    if (e == NULL || !mentions_word(e, word)) {
        fprintf(stderr, "%s:%d: m2c_last_error() should name \"%s\" but is \"%s\"\n", file, line,
                word, e ? e : "(NULL)");
        exit(1);
    }
}

arena arena_new(size_t len) {
    arena a;
    a.len = (len + 63) / 64 * 64;
    a.used = 0;
    a.base = (unsigned char *)aligned_alloc(64, a.len);
    a.saved = (unsigned char *)malloc(a.len);
    CHECK(a.base != NULL && a.saved != NULL);
    for (size_t i = 0; i < a.len; i++) a.base[i] = (unsigned char)(i * 131u + 7u);
    return a;
}

void *arena_get(arena *a, size_t bytes) {
    const size_t off = a->used;
    a->used += (bytes + 63) / 64 * 64 + 64;
    CHECK(a->used <= a->len);
    return a->base + off;
}

void arena_save(arena *a) { memcpy(a->saved, a->base, a->len); }

void arena_expect_unchanged_at(const char *file, int line, const arena *a) {
    for (size_t i = 0; i < a->len; i++)
        if (a->base[i] != a->saved[i]) {
            fprintf(stderr, "%s:%d: a refused call wrote caller memory (arena byte %zu)\n", file,
                    line, i);
            exit(1);
        }
}

void arena_free(arena *a) {
    free(a->base);
    free(a->saved);
}

void *shifted(const void *p, ptrdiff_t bytes) {
    return (void *)(uintptr_t)((uintptr_t)p + (uintptr_t)bytes);
}

void plant_slot_list_in_storage(m2c_cache *cache) {
    m2c_config c;
    m2c_config_init(&c);
    EXPECT_OK(m2c_get_config(cache, &c));
    const int32_t list[4] = {0, 1, 2, 3};
    for (uint32_t l = 0; l < c.num_layers; l++) {
        m2c_tensor t;
        EXPECT_OK(m2c_conv_view(cache, l, &t));
        CHECK(view_bytes(&t) >= sizeof list);
        memcpy(t.data, list, sizeof list);
        EXPECT_OK(m2c_ssm_view(cache, l, &t));
        CHECK(view_bytes(&t) >= sizeof list);
        memcpy(t.data, list, sizeof list);
    }
}

size_t ssm_mask_count(m2c_dtype storage, m2c_dtype io) {
    return storage == M2C_DTYPE_F32 && io == M2C_DTYPE_F32 ? 32 : 4;
}

unsigned ssm_mask_at(m2c_dtype storage, m2c_dtype io, size_t i) {
    return ssm_mask_count(storage, io) == 32 ? (unsigned)i : SSM_SOME_MASKS[i];
}
