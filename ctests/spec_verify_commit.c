/*
 * Proves, through the C ABI: a speculative round (m2c_spec_reserve,
 * m2c_spec_begin, m2c_conv_verify and m2c_ssm_verify on both layers,
 * m2c_spec_commit) leaves the cache bit-for-bit equal to a twin cache that
 * ran only the accepted tokens through m2c_conv_step / m2c_ssm_step and
 * m2c_advance, and every verified token's outputs equal those steps' (memcmp
 * of the rows); verifies change nothing. Runs {4, 2 (padding), 3} tokens
 * for slots {2, -1, 0}, every accepted count 0..4, for conv f32/bf16 x ssm
 * f32/bf16/f16 x io f32/bf16 x window K and K-1; a tree run with a branch,
 * committed at each node against the steps along that node's path. Bad
 * input is refused with the status and the field named, changing nothing.
 */
#include "kernels.h"

enum { RUNS = 3, MAXT = 4 };
static const int32_t SLOTS[RUNS] = {2, -1, 0};
static const uint64_t CU[RUNS + 1] = {0, 4, 6, 9};
enum { T = 9 };

typedef struct layer_in {
    void *x, *out; /* conv rows [T][dim] */
    ssm_tokens s;  /* ssm rows */
} layer_in;

typedef struct round_data {
    layer_in l[2];
    float *w, *bias, *A, *D, *dt_bias;
    m2c_conv_args ca;
    m2c_ssm_args sa;
} round_data;

static round_data make_round(const m2c_config *c, m2c_dtype io, uint64_t seed) {
    rng r = rng_seeded(seed);
    round_data d;
    const size_t dim = conv_dim_of(c), H = c->num_heads;
    for (int l = 0; l < 2; l++) {
        d.l[l].x = alloc_elems(io, T * dim);
        d.l[l].out = alloc_elems(io, T * dim);
        fill_random(d.l[l].x, io, T * dim, &r, -2.0f, 2.0f, NULL);
        fill_sentinel(d.l[l].out, io, T * dim);
        d.l[l].s = ssm_tokens_random(c, T, io, 1, &r);
    }
    d.w = random_floats(dim * c->conv_kernel_size, &r, -0.5f, 0.5f);
    d.bias = random_floats(dim, &r, -0.5f, 0.5f);
    d.A = random_floats(H, &r, -1.0f, -0.05f);
    d.D = random_floats(H, &r, -1.0f, 1.0f);
    d.dt_bias = random_floats(H, &r, -0.5f, 0.5f);
    m2c_conv_args_init(&d.ca);
    d.ca.io_dtype = io;
    d.ca.weight = d.w;
    d.ca.weight_len = dim * c->conv_kernel_size;
    d.ca.bias = d.bias;
    d.ca.bias_len = dim;
    m2c_ssm_args_init(&d.sa);
    d.sa.io_dtype = io;
    d.sa.A = d.A;
    d.sa.A_len = H;
    d.sa.D = d.D;
    d.sa.D_len = H;
    d.sa.dt_bias = d.dt_bias;
    d.sa.dt_bias_len = H;
    return d;
}

static void free_round(round_data *d) {
    for (int l = 0; l < 2; l++) {
        free(d->l[l].x);
        free(d->l[l].out);
        ssm_tokens_free(&d->l[l].s);
    }
    free(d->w);
    free(d->bias);
    free(d->A);
    free(d->D);
    free(d->dt_bias);
}

/* Verifies both layers of the current round of `a`. */
static void verify_all(m2c_cache *a, const m2c_config *c, round_data *d) {
    const size_t dim = conv_dim_of(c);
    for (uint32_t l = 0; l < 2; l++) {
        EXPECT_OK(m2c_conv_verify(a, l, d->l[l].x, T * dim, d->l[l].out, T * dim, &d->ca));
        m2c_ssm_io io = ssm_tokens_io(&d->l[l].s, c, 0, T);
        EXPECT_OK(m2c_ssm_verify(a, l, &io, &d->sa));
    }
}

/* Steps token row `row` of `d` for `slot` through both layers of `b` and
 * checks the outputs against the verify's rows; then advances the slot. */
static void step_row(m2c_cache *b, const m2c_config *c, round_data *d, int32_t slot, size_t row,
                     m2c_dtype io) {
    const size_t dim = conv_dim_of(c), HP = (size_t)c->num_heads * c->head_dim;
    void *out = alloc_elems(io, dim);
    ssm_tokens y1 = ssm_tokens_random(c, 1, io, 1, &(rng){1});
    for (uint32_t l = 0; l < 2; l++) {
        EXPECT_OK(m2c_conv_step(b, l, &slot, 1, at_c(d->l[l].x, io, row * dim), dim, out, dim, &d->ca));
        CHECK(memcmp(out, at_c(d->l[l].out, io, row * dim), dim * dtype_size(io)) == 0);
        m2c_ssm_io one = ssm_tokens_io(&d->l[l].s, c, row, 1);
        one.y = y1.y; /* the step writes its own y; compare with the verify's */
        EXPECT_OK(m2c_ssm_step(b, l, &slot, 1, &one, &d->sa));
        CHECK(memcmp(y1.y, at_c(d->l[l].s.y, io, row * HP), HP * dtype_size(io)) == 0);
    }
    EXPECT_OK(m2c_advance(b, &slot, 1, 1));
    free(out);
    ssm_tokens_free(&y1);
}

static void chains(void) {
    unsigned cases = 0;
    for (int cd = 0; cd < 2; cd++)
        for (int sd = 0; sd < 3; sd++)
            for (int id = 0; id < 2; id++)
                for (uint32_t W = 3; W <= 4; W++) {
                    const m2c_dtype io = ALL_DTYPES[id];
                    m2c_config c = kernel_config(4, 4, 6, 2, 4, W, ALL_DTYPES[cd], ALL_DTYPES[sd]);
                    for (uint32_t k = 0; k <= MAXT; k++) {
                        m2c_cache *a, *b;
                        twin_caches(&c, 1000 + cases, &a, &b);
                        round_data d = make_round(&c, io, 77 + cases);
                        EXPECT_OK(m2c_spec_reserve(a, MAXT));
                        EXPECT_OK(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, NULL, 0));
                        snapshot before = take_snapshot(a);
                        verify_all(a, &c, &d);
                        EXPECT_UNCHANGED(a, &before);
                        /* Padding rows read +0.0. */
                        CHECK(rows_are_zero(d.l[0].out, io, conv_dim_of(&c), 4, 6));
                        CHECK(rows_are_zero(d.l[1].s.y, io, (size_t)c.num_heads * c.head_dim, 4, 6));
                        uint32_t acc[RUNS];
                        for (int i = 0; i < RUNS; i++) {
                            const uint32_t len = (uint32_t)(CU[i + 1] - CU[i]);
                            acc[i] = SLOTS[i] < 0 ? 0 : (k < len ? k : len);
                            for (uint32_t t = 0; t < acc[i]; t++) step_row(b, &c, &d, SLOTS[i], CU[i] + t, io);
                        }
                        EXPECT_OK(m2c_spec_commit(a, SLOTS, RUNS, acc));
                        EXPECT_SAME_CACHE(a, b);
                        free_snapshot(&before);
                        free_round(&d);
                        m2c_destroy(a);
                        m2c_destroy(b);
                    }
                    cases++;
                }
    CHECK(cases == 24);
}

static void trees(void) {
    /* One run of 4 tokens: 0 follows the committed state, 1 and 2 both
     * follow 0, 3 follows 1. Committing k keeps the path to token k - 1. */
    const int32_t parents[T] = {-1, 0, 0, 1, -1, 0, -1, 0, 1};
    const int32_t paths[5][3] = {{-1, -1, -1}, {0, -1, -1}, {0, 1, -1}, {0, 2, -1}, {0, 1, 3}};
    m2c_config c = kernel_config(4, 4, 6, 1, 4, 3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    for (uint32_t k = 0; k <= 4; k++) {
        m2c_cache *a, *b;
        twin_caches(&c, 5, &a, &b);
        round_data d = make_round(&c, M2C_DTYPE_F32, 6);
        EXPECT_OK(m2c_spec_reserve(a, MAXT));
        EXPECT_OK(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, parents, T));
        verify_all(a, &c, &d);
        /* Slot 2's path to token k - 1, stepped in the twin. */
        for (int j = 0; j < 3 && paths[k][j] >= 0; j++) step_row(b, &c, &d, 2, (size_t)paths[k][j], M2C_DTYPE_F32);
        const uint32_t acc[RUNS] = {k, 0, 0};
        EXPECT_OK(m2c_spec_commit(a, SLOTS, RUNS, acc));
        EXPECT_SAME_CACHE(a, b);
        free_round(&d);
        m2c_destroy(a);
        m2c_destroy(b);
    }
}

static void refused(void) {
    m2c_config c = kernel_config(4, 4, 6, 2, 4, 4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *a = create_or_die(&c);
    rng r = rng_seeded(3);
    randomize_cache(a, &r, 1.0f);
    round_data d = make_round(&c, M2C_DTYPE_F32, 9);
    const size_t dim = conv_dim_of(&c);
    snapshot before = take_snapshot(a);
    const uint32_t one[RUNS] = {1, 0, 1};

    EXPECT_FAIL(m2c_spec_reserve(NULL, 4), M2C_STATUS_NULL_ARG, "m2c_spec_reserve", "cache");
    EXPECT_FAIL(m2c_spec_reserve(a, 5000), M2C_STATUS_OUT_OF_RANGE, "m2c_spec_reserve", "max_tokens");
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, NULL, 0), M2C_STATUS_INVALID_ARG, "m2c_spec_begin",
                "m2c_spec_reserve");
    EXPECT_OK(m2c_spec_reserve(a, MAXT));
    EXPECT_FAIL(m2c_conv_verify(a, 0, d.l[0].x, T * dim, d.l[0].out, T * dim, &d.ca), M2C_STATUS_INVALID_ARG,
                "m2c_conv_verify", "m2c_spec_begin");
    EXPECT_FAIL(m2c_spec_commit(a, SLOTS, RUNS, one), M2C_STATUS_INVALID_ARG, "m2c_spec_commit", "m2c_spec_begin");
    const uint64_t too_long[RUNS + 1] = {0, 5, 6, 9};
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, too_long, RUNS + 1, NULL, 0), M2C_STATUS_OUT_OF_RANGE,
                "m2c_spec_begin", "sequence 0");
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS, NULL, 0), M2C_STATUS_SHAPE_MISMATCH, "m2c_spec_begin",
                "cu_seqlens");
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, NULL, RUNS + 1, NULL, 0), M2C_STATUS_NULL_ARG, "m2c_spec_begin",
                "cu_seqlens");
    const int32_t forward[T] = {-1, 1, 0, 1, -1, 0, -1, 0, 1};
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, forward, T), M2C_STATUS_INVALID_ARG, "m2c_spec_begin",
                "parents[1]");
    const int32_t parents[T] = {-1, 0, 0, 1, -1, 0, -1, 0, 1};
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, parents, T - 1), M2C_STATUS_SHAPE_MISMATCH,
                "m2c_spec_begin", "parents");
    EXPECT_FAIL(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, NULL, 3), M2C_STATUS_NULL_ARG, "m2c_spec_begin",
                "parents");
    const int32_t twice[RUNS] = {2, -1, 2};
    EXPECT_FAIL(m2c_spec_begin(a, twice, RUNS, CU, RUNS + 1, NULL, 0), M2C_STATUS_INVALID_ARG, "m2c_spec_begin",
                "slots");

    EXPECT_OK(m2c_spec_begin(a, SLOTS, RUNS, CU, RUNS + 1, NULL, 0));
    EXPECT_FAIL(m2c_conv_verify(a, 0, d.l[0].x, T * dim - 1, d.l[0].out, T * dim, &d.ca),
                M2C_STATUS_SHAPE_MISMATCH, "m2c_conv_verify", "x");
    EXPECT_FAIL(m2c_conv_verify(a, 2, d.l[0].x, T * dim, d.l[0].out, T * dim, &d.ca), M2C_STATUS_OUT_OF_RANGE,
                "m2c_conv_verify", "layer");
    EXPECT_OK(m2c_conv_verify(a, 0, d.l[0].x, T * dim, d.l[0].out, T * dim, &d.ca));
    EXPECT_FAIL(m2c_spec_commit(a, SLOTS, RUNS, one), M2C_STATUS_INVALID_ARG, "m2c_spec_commit", "verified");
    verify_all(a, &c, &d);
    const uint32_t five[RUNS] = {5, 0, 0};
    EXPECT_FAIL(m2c_spec_commit(a, SLOTS, RUNS, five), M2C_STATUS_OUT_OF_RANGE, "m2c_spec_commit", "accepted[0]");
    EXPECT_FAIL(m2c_spec_commit(a, SLOTS, RUNS, NULL), M2C_STATUS_NULL_ARG, "m2c_spec_commit", "accepted");
    const int32_t other[1] = {1};
    EXPECT_FAIL(m2c_spec_commit(a, other, 1, one), M2C_STATUS_INVALID_ARG, "m2c_spec_commit", "slot 1");
    EXPECT_UNCHANGED(a, &before);
    /* A slot changed since the round began is out of it. */
    EXPECT_OK(m2c_advance(a, &SLOTS[0], 1, 1));
    EXPECT_FAIL(m2c_spec_commit(a, SLOTS, RUNS, one), M2C_STATUS_INVALID_ARG, "m2c_spec_commit", "slot 2");
    const int32_t just0[1] = {0};
    EXPECT_OK(m2c_spec_commit(a, just0, 1, one));
    EXPECT_FAIL(m2c_spec_commit(a, just0, 1, one), M2C_STATUS_INVALID_ARG, "m2c_spec_commit", "slot 0");
    free_snapshot(&before);
    free_round(&d);
    m2c_destroy(a);
}

int main(void) {
    chains();
    trees();
    refused();
    printf("spec_verify_commit: ok\n");
    return 0;
}
