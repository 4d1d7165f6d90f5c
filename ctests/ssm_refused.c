/*
 * Proves the refusals of m2c_ssm_step (built with M2C_TEST_PREFILL=0, ctest
 * ssm_step_refused) and m2c_ssm_prefill (M2C_TEST_PREFILL=1, ctest
 * ssm_prefill_refused): each bad call returns the documented status,
 * m2c_last_error() names the function and the faulty argument, the cache is
 * bit-for-bit unchanged (every layer's storage through the views, every
 * position) and no caller buffer, `y` included, is written (all of them live
 * in one arena that is compared byte for byte).
 *
 * Cases: NULL cache / io / args / A; NULL x, dt, B, C, y, and NULL z, D,
 * dt_bias with a length; args->struct_size and io->struct_size 0,
 * sizeof - 1, sizeof + 8; io->reserved != 0; unknown io_dtype; every wrong
 * length (x, dt, B, C, z, y, A, D, dt_bias, B and C sized for one group,
 * optional arrays with length 0, rows that do not match n); layer and slot
 * out of range; a slot listed twice; misaligned x, dt, B, C, z, y, A, D,
 * dt_bias, slots; y overlapping x, z, dt, B, C, A, D, dt_bias or slots;
 * every buffer inside the cache's own storage (from the views); dt_clamp
 * with dt_min > dt_max or a NaN bound. Prefill adds: cu_seqlens NULL,
 * cu_len != n + 1, cu_seqlens[0] != 0, decreasing offsets, totals that do
 * not match the buffers, misaligned cu_seqlens, cu_seqlens inside the
 * storage and y overlapping it; cu_seqlens (NULL, 0). Valid calls (also with
 * dt_min == dt_max, infinite bounds, no rows with (NULL, 0) buffers) still
 * succeed afterwards.
 */
#include "kernels.h"

#ifndef M2C_TEST_PREFILL
#error "build with -DM2C_TEST_PREFILL=0 or 1"
#endif

#if M2C_TEST_PREFILL
#define FN "m2c_ssm_prefill"
#else
#define FN "m2c_ssm_step"
#endif

typedef struct call {
    m2c_cache *cache;
    uint32_t layer;
    const int32_t *slots;
    size_t n;
    const uint64_t *cu;
    size_t cu_len;
    m2c_ssm_io io;
    m2c_ssm_args a;
    int no_io, no_args;
} call;

static m2c_cache *cache;
static snapshot before;
static arena ar;

static m2c_status invoke(const call *c) {
    const m2c_ssm_args *a = c->no_args ? NULL : &c->a;
    const m2c_ssm_io *io = c->no_io ? NULL : &c->io;
#if M2C_TEST_PREFILL
    return m2c_ssm_prefill(c->cache, c->layer, c->slots, c->n, c->cu, c->cu_len, io, a);
#else
    return m2c_ssm_step(c->cache, c->layer, c->slots, c->n, io, a);
#endif
}

static void refused_at(int line, const char *label, const call *c, m2c_status want,
                       const char *w1, const char *w2) {
    fprintf(stderr, "line %d: %s: %s\n", line, FN, label);
    arena_save(&ar);
    const m2c_status st = invoke(c);
    fprintf(stderr, "  -> %d \"%s\"\n", (int)st, m2c_last_error());
    EXPECT_STATUS(st, want);
    EXPECT_NAMES(FN);
    if (w1) EXPECT_NAMES(w1);
    if (w2) EXPECT_NAMES(w2);
    ARENA_UNCHANGED(&ar);
    EXPECT_UNCHANGED(cache, &before);
}

#define CASE(label, want, w1, w2, ...)                  \
    do {                                                \
        call c = base;                                  \
        __VA_ARGS__;                                    \
        refused_at(__LINE__, label, &c, want, w1, w2);  \
    } while (0)

int main(void) {
    const m2c_config C = kernel_config(4, 2, 2, 2, 4, 4, M2C_DTYPE_F32, M2C_DTYPE_BF16);
    cache = create_or_die(&C);
    rng r = rng_seeded(43);
    randomize_cache(cache, &r, 2.0f);
    plant_slot_list_in_storage(cache);
    EXPECT_OK(m2c_advance(cache, NULL, 4, 5));
    before = take_snapshot(cache);

    const size_t H = C.num_heads, HP = H * C.head_dim, GN = (size_t)C.n_groups * C.state_size;
    const size_t N = C.state_size;
    const size_t n = 3;
#if M2C_TEST_PREFILL
    const size_t T = 5;
#else
    const size_t T = n;
#endif
    ar = arena_new(64 * 1024);
    int32_t *slots = (int32_t *)arena_get(&ar, 16 * sizeof(int32_t));
    slots[0] = 2;
    slots[1] = -1;
    slots[2] = 0;
    int32_t *dup = slots + 4, *late_bad = slots + 8;
    dup[0] = 0;
    dup[1] = -1;
    dup[2] = 0;
    late_bad[0] = 2;
    late_bad[1] = -1;
    late_bad[2] = 7;
    uint64_t *cu = (uint64_t *)arena_get(&ar, 8 * sizeof(uint64_t));
    cu[0] = 0;
    cu[1] = 2;
    cu[2] = 3;
    cu[3] = 5;
    float *x = (float *)arena_get(&ar, (T + 2) * HP * 4);
    float *z = (float *)arena_get(&ar, (T + 2) * HP * 4);
    float *dt = (float *)arena_get(&ar, (T + 2) * H * 4);
    float *B = (float *)arena_get(&ar, (T + 2) * GN * 4);
    float *Cb = (float *)arena_get(&ar, (T + 2) * GN * 4);
    float *y = (float *)arena_get(&ar, (T + 2) * HP * 4);
    float *A = (float *)arena_get(&ar, (H + 2) * 4);
    float *D = (float *)arena_get(&ar, (H + 2) * 4);
    float *dt_bias = (float *)arena_get(&ar, (H + 2) * 4);
    for (size_t i = 0; i < (T + 2) * HP; i++) {
        x[i] = rng_uniform(&r, -1.0f, 1.0f);
        z[i] = rng_uniform(&r, -3.0f, 3.0f);
    }
    for (size_t i = 0; i < (T + 2) * H; i++) dt[i] = rng_uniform(&r, -1.0f, 2.0f);
    for (size_t i = 0; i < (T + 2) * GN; i++) {
        B[i] = rng_uniform(&r, -1.0f, 1.0f);
        Cb[i] = rng_uniform(&r, -1.0f, 1.0f);
    }
    for (size_t i = 0; i < H + 2; i++) {
        A[i] = rng_uniform(&r, -1.0f, -0.05f);
        D[i] = rng_uniform(&r, -1.0f, 1.0f);
        dt_bias[i] = rng_uniform(&r, -0.5f, 0.5f);
    }
    fill_sentinel(y, M2C_DTYPE_F32, (T + 2) * HP);

    call base;
    memset(&base, 0, sizeof base);
    base.cache = cache;
    base.layer = 1;
    base.slots = slots;
    base.n = n;
    base.cu = cu;
    base.cu_len = n + 1;
    m2c_ssm_io_init(&base.io);
    base.io.x = x;
    base.io.x_len = T * HP;
    base.io.dt = dt;
    base.io.dt_len = T * H;
    base.io.B = B;
    base.io.B_len = T * GN;
    base.io.C = Cb;
    base.io.C_len = T * GN;
    base.io.z = z;
    base.io.z_len = T * HP;
    base.io.y = y;
    base.io.y_len = T * HP;
    m2c_ssm_args_init(&base.a);
    base.a.A = A;
    base.a.A_len = H;
    base.a.D = D;
    base.a.D_len = H;
    base.a.dt_bias = dt_bias;
    base.a.dt_bias_len = H;
    base.a.dt_clamp = 1;
    base.a.dt_min = 0.125f;
    base.a.dt_max = 1.5f;

    /* NULL pointers. */
    CASE("NULL cache", M2C_STATUS_NULL_ARG, "cache", NULL, c.cache = NULL);
    CASE("NULL io", M2C_STATUS_NULL_ARG, "io", NULL, c.no_io = 1);
    CASE("NULL args", M2C_STATUS_NULL_ARG, "args", NULL, c.no_args = 1);
    CASE("NULL A", M2C_STATUS_NULL_ARG, "A", NULL, c.a.A = NULL);
    CASE("NULL A, A_len 0", M2C_STATUS_NULL_ARG, "A", NULL, c.a.A = NULL; c.a.A_len = 0);
    CASE("NULL D with D_len", M2C_STATUS_NULL_ARG, "D", NULL, c.a.D = NULL);
    CASE("NULL dt_bias with dt_bias_len", M2C_STATUS_NULL_ARG, "dt_bias", NULL,
         c.a.dt_bias = NULL);
    CASE("NULL x with x_len", M2C_STATUS_NULL_ARG, "x", NULL, c.io.x = NULL);
    CASE("NULL dt with dt_len", M2C_STATUS_NULL_ARG, "dt", NULL, c.io.dt = NULL);
    CASE("NULL B with B_len", M2C_STATUS_NULL_ARG, "B", NULL, c.io.B = NULL);
    CASE("NULL C with C_len", M2C_STATUS_NULL_ARG, "C", NULL, c.io.C = NULL);
    CASE("NULL z with z_len", M2C_STATUS_NULL_ARG, "z", NULL, c.io.z = NULL);
    CASE("NULL y with y_len", M2C_STATUS_NULL_ARG, "y", NULL, c.io.y = NULL);

    /* The structs. */
    CASE("args->struct_size 0", M2C_STATUS_INVALID_ARG, "args", "struct_size",
         c.a.struct_size = 0);
    CASE("args->struct_size - 1", M2C_STATUS_INVALID_ARG, "args", "struct_size",
         c.a.struct_size = (uint32_t)sizeof(m2c_ssm_args) - 1);
    CASE("args->struct_size + 8", M2C_STATUS_INVALID_ARG, "args", "struct_size",
         c.a.struct_size = (uint32_t)sizeof(m2c_ssm_args) + 8);
    CASE("io->struct_size 0", M2C_STATUS_INVALID_ARG, "io", "struct_size",
         c.io.struct_size = 0);
    CASE("io->struct_size - 1", M2C_STATUS_INVALID_ARG, "io", "struct_size",
         c.io.struct_size = (uint32_t)sizeof(m2c_ssm_io) - 1);
    CASE("io->struct_size + 8", M2C_STATUS_INVALID_ARG, "io", "struct_size",
         c.io.struct_size = (uint32_t)sizeof(m2c_ssm_io) + 8);
    CASE("io->reserved 1", M2C_STATUS_INVALID_ARG, "io", "reserved", c.io.reserved = 1);
    CASE("io_dtype 3", M2C_STATUS_UNSUPPORTED_DTYPE, "io_dtype", NULL, c.a.io_dtype = 3);
    CASE("io_dtype UINT32_MAX", M2C_STATUS_UNSUPPORTED_DTYPE, "io_dtype", NULL,
         c.a.io_dtype = UINT32_MAX);

    /* Lengths. */
    CASE("x_len + 1", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.io.x_len++);
    CASE("x_len - 1", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.io.x_len--);
    CASE("dt_len + 1", M2C_STATUS_SHAPE_MISMATCH, "dt", NULL, c.io.dt_len++);
    CASE("dt_len - 1", M2C_STATUS_SHAPE_MISMATCH, "dt", NULL, c.io.dt_len--);
    CASE("B_len + 1", M2C_STATUS_SHAPE_MISMATCH, "B", NULL, c.io.B_len++);
    CASE("B_len - 1", M2C_STATUS_SHAPE_MISMATCH, "B", NULL, c.io.B_len--);
    CASE("B_len for one group", M2C_STATUS_SHAPE_MISMATCH, "B", NULL, c.io.B_len = T * N);
    CASE("C_len + 1", M2C_STATUS_SHAPE_MISMATCH, "C", NULL, c.io.C_len++);
    CASE("C_len - 1", M2C_STATUS_SHAPE_MISMATCH, "C", NULL, c.io.C_len--);
    CASE("C_len for one group", M2C_STATUS_SHAPE_MISMATCH, "C", NULL, c.io.C_len = T * N);
    CASE("z_len + 1", M2C_STATUS_SHAPE_MISMATCH, "z", NULL, c.io.z_len++);
    CASE("z_len - 1", M2C_STATUS_SHAPE_MISMATCH, "z", NULL, c.io.z_len--);
    CASE("z non-NULL, z_len 0", M2C_STATUS_SHAPE_MISMATCH, "z", NULL, c.io.z_len = 0);
    CASE("y_len + 1", M2C_STATUS_SHAPE_MISMATCH, "y", NULL, c.io.y_len++);
    CASE("y_len - 1", M2C_STATUS_SHAPE_MISMATCH, "y", NULL, c.io.y_len--);
    CASE("A_len + 1", M2C_STATUS_SHAPE_MISMATCH, "A", NULL, c.a.A_len++);
    CASE("A_len - 1", M2C_STATUS_SHAPE_MISMATCH, "A", NULL, c.a.A_len--);
    CASE("A_len 0", M2C_STATUS_SHAPE_MISMATCH, "A", NULL, c.a.A_len = 0);
    CASE("D_len + 1", M2C_STATUS_SHAPE_MISMATCH, "D", NULL, c.a.D_len++);
    CASE("D_len - 1", M2C_STATUS_SHAPE_MISMATCH, "D", NULL, c.a.D_len--);
    CASE("D non-NULL, D_len 0", M2C_STATUS_SHAPE_MISMATCH, "D", NULL, c.a.D_len = 0);
    CASE("dt_bias_len + 1", M2C_STATUS_SHAPE_MISMATCH, "dt_bias", NULL, c.a.dt_bias_len++);
    CASE("dt_bias_len - 1", M2C_STATUS_SHAPE_MISMATCH, "dt_bias", NULL, c.a.dt_bias_len--);
    CASE("dt_bias non-NULL, dt_bias_len 0", M2C_STATUS_SHAPE_MISMATCH, "dt_bias", NULL,
         c.a.dt_bias_len = 0);
    CASE("every token buffer one row short", M2C_STATUS_SHAPE_MISMATCH, NULL, NULL,
         c.io.x_len -= HP; c.io.z_len -= HP; c.io.y_len -= HP; c.io.dt_len -= H;
         c.io.B_len -= GN; c.io.C_len -= GN);
    CASE("every token buffer one row long", M2C_STATUS_SHAPE_MISMATCH, NULL, NULL,
         c.io.x_len += HP; c.io.z_len += HP; c.io.y_len += HP; c.io.dt_len += H;
         c.io.B_len += GN; c.io.C_len += GN);

    /* Layer and slots. */
    CASE("layer = num_layers", M2C_STATUS_OUT_OF_RANGE, "layer", NULL, c.layer = C.num_layers);
    CASE("layer UINT32_MAX", M2C_STATUS_OUT_OF_RANGE, "layer", NULL, c.layer = UINT32_MAX);
    CASE("slot 7 after valid rows", M2C_STATUS_OUT_OF_RANGE, "slots", NULL,
         c.slots = late_bad);
    CASE("slot listed twice around padding", M2C_STATUS_INVALID_ARG, "twice", NULL,
         c.slots = dup);
#if !M2C_TEST_PREFILL
    CASE("slots NULL with n = 5 > num_slots", M2C_STATUS_OUT_OF_RANGE, "n", NULL,
         c.slots = NULL; c.n = 5; c.io.x_len = 5 * HP; c.io.z_len = 5 * HP; c.io.y_len = 5 * HP;
         c.io.dt_len = 5 * H; c.io.B_len = 5 * GN; c.io.C_len = 5 * GN);
#endif

    /* Alignment. */
    CASE("x at +2 bytes", M2C_STATUS_INVALID_ARG, "x", "aligned", c.io.x = shifted(x, 2));
    CASE("dt at +2 bytes", M2C_STATUS_INVALID_ARG, "dt", "aligned", c.io.dt = shifted(dt, 2));
    CASE("B at +2 bytes", M2C_STATUS_INVALID_ARG, "B", "aligned", c.io.B = shifted(B, 2));
    CASE("C at +2 bytes", M2C_STATUS_INVALID_ARG, "C", "aligned", c.io.C = shifted(Cb, 2));
    CASE("z at +2 bytes", M2C_STATUS_INVALID_ARG, "z", "aligned", c.io.z = shifted(z, 2));
    CASE("y at +2 bytes", M2C_STATUS_INVALID_ARG, "y", "aligned", c.io.y = shifted(y, 2));
    CASE("bf16 x at +1 byte", M2C_STATUS_INVALID_ARG, "x", "aligned",
         c.a.io_dtype = M2C_DTYPE_BF16; c.io.x = shifted(x, 1));
    CASE("f16 y at +1 byte", M2C_STATUS_INVALID_ARG, "y", "aligned",
         c.a.io_dtype = M2C_DTYPE_F16; c.io.y = shifted(y, 1));
    CASE("A at +2 bytes", M2C_STATUS_INVALID_ARG, "A", "aligned",
         c.a.A = (const float *)shifted(A, 2));
    CASE("D at +1 byte", M2C_STATUS_INVALID_ARG, "D", "aligned",
         c.a.D = (const float *)shifted(D, 1));
    CASE("dt_bias at +2 bytes", M2C_STATUS_INVALID_ARG, "dt_bias", "aligned",
         c.a.dt_bias = (const float *)shifted(dt_bias, 2));
    CASE("slots at +2 bytes", M2C_STATUS_INVALID_ARG, "slots", "aligned",
         c.slots = (const int32_t *)shifted(slots, 2));

    /* y overlapping an input. */
    CASE("y == x", M2C_STATUS_INVALID_ARG, "y", "x", c.io.y = x);
    CASE("y overlapping the end of x", M2C_STATUS_INVALID_ARG, "y", "x",
         c.io.y = x + T * HP - 1);
    CASE("y == z", M2C_STATUS_INVALID_ARG, "y", "z", c.io.y = z);
    CASE("y overlapping the start of z", M2C_STATUS_INVALID_ARG, "y", "z", c.io.z = y + 1);
    CASE("y overlapping dt", M2C_STATUS_INVALID_ARG, "y", "dt", c.io.dt = y + 2);
    CASE("y overlapping B", M2C_STATUS_INVALID_ARG, "y", "B", c.io.B = y + 3);
    CASE("y overlapping C", M2C_STATUS_INVALID_ARG, "y", "C", c.io.C = y + 4);
    CASE("y overlapping A", M2C_STATUS_INVALID_ARG, "y", "A", c.a.A = y + 5);
    CASE("y overlapping D", M2C_STATUS_INVALID_ARG, "y", "D", c.a.D = y + 6);
    CASE("y overlapping dt_bias", M2C_STATUS_INVALID_ARG, "y", "dt_bias",
         c.a.dt_bias = y + 7);
    CASE("y overlapping slots", M2C_STATUS_INVALID_ARG, "y", "slots",
         c.slots = (const int32_t *)(const void *)(y + 8));

    /* Buffers inside the cache's own storage. */
    m2c_tensor sv0, sv1, cv0;
    EXPECT_OK(m2c_ssm_view(cache, 0, &sv0));
    EXPECT_OK(m2c_ssm_view(cache, 1, &sv1));
    EXPECT_OK(m2c_conv_view(cache, 0, &cv0));
    CHECK(view_bytes(&sv1) >= T * HP * 2 && view_bytes(&cv0) >= T * HP * 4);
    CASE("x inside the layer's SSM storage", M2C_STATUS_INVALID_ARG, "x", "overlaps",
         c.a.io_dtype = M2C_DTYPE_BF16; c.io.x = sv1.data);
    CASE("x inside the conv storage", M2C_STATUS_INVALID_ARG, "x", "overlaps",
         c.io.x = cv0.data);
    CASE("x ending one element inside the storage", M2C_STATUS_INVALID_ARG, "x", "overlaps",
         c.io.x = shifted(cv0.data, -(ptrdiff_t)((T * HP - 1) * 4)));
    CASE("dt inside the SSM storage", M2C_STATUS_INVALID_ARG, "dt", "overlaps",
         c.a.io_dtype = M2C_DTYPE_BF16; c.io.dt = sv0.data);
    CASE("B inside the conv storage", M2C_STATUS_INVALID_ARG, "B", "overlaps",
         c.io.B = cv0.data);
    CASE("C inside the conv storage", M2C_STATUS_INVALID_ARG, "C", "overlaps",
         c.io.C = cv0.data);
    CASE("z inside the conv storage", M2C_STATUS_INVALID_ARG, "z", "overlaps",
         c.io.z = cv0.data);
    CASE("y inside the layer's SSM storage", M2C_STATUS_INVALID_ARG, "y", "overlaps",
         c.a.io_dtype = M2C_DTYPE_BF16; c.io.y = sv1.data);
    CASE("y inside the conv storage", M2C_STATUS_INVALID_ARG, "y", "overlaps",
         c.io.y = cv0.data);
    CASE("A inside the conv storage", M2C_STATUS_INVALID_ARG, "A", "overlaps",
         c.a.A = (const float *)cv0.data);
    CASE("D inside the SSM storage", M2C_STATUS_INVALID_ARG, "D", "overlaps",
         c.a.D = (const float *)sv1.data);
    CASE("dt_bias inside the SSM storage", M2C_STATUS_INVALID_ARG, "dt_bias", "overlaps",
         c.a.dt_bias = (const float *)sv0.data);
    CASE("slots inside the SSM storage", M2C_STATUS_INVALID_ARG, "slots", "overlaps",
         c.slots = (const int32_t *)sv1.data);

    /* dt limits. */
    CASE("dt_min > dt_max", M2C_STATUS_INVALID_ARG, "dt_min", "dt_max", c.a.dt_min = 2.0f;
         c.a.dt_max = 1.0f);
    CASE("dt_min NaN", M2C_STATUS_INVALID_ARG, "dt_min", "dt_max", c.a.dt_min = NAN);
    CASE("dt_max NaN", M2C_STATUS_INVALID_ARG, "dt_min", "dt_max", c.a.dt_max = NAN);
    CASE("both bounds NaN", M2C_STATUS_INVALID_ARG, "dt_min", "dt_max", c.a.dt_min = NAN;
         c.a.dt_max = NAN);
    CASE("dt_min +inf, dt_max 1", M2C_STATUS_INVALID_ARG, "dt_min", "dt_max", c.a.dt_min = INFINITY;
         c.a.dt_max = 1.0f);

#if M2C_TEST_PREFILL
    uint64_t *cu_bad = (uint64_t *)arena_get(&ar, 8 * sizeof(uint64_t));
    CASE("cu_seqlens NULL", M2C_STATUS_NULL_ARG, "cu_seqlens", NULL, c.cu = NULL);
    CASE("cu_len = n", M2C_STATUS_SHAPE_MISMATCH, "cu_seqlens", NULL, c.cu_len = n);
    CASE("cu_len = n + 2", M2C_STATUS_SHAPE_MISMATCH, "cu_seqlens", NULL, c.cu_len = n + 2;
         cu[4] = 5);
    CASE("cu_len 0", M2C_STATUS_SHAPE_MISMATCH, "cu_seqlens", NULL, c.cu_len = 0);
    CASE("cu_seqlens (NULL, 0)", M2C_STATUS_SHAPE_MISMATCH, "cu_seqlens", NULL, c.cu = NULL;
         c.cu_len = 0);
    CASE("cu_seqlens[0] = 1", M2C_STATUS_INVALID_ARG, "cu_seqlens", NULL, c.cu = cu_bad;
         cu_bad[0] = 1; cu_bad[1] = 2; cu_bad[2] = 3; cu_bad[3] = 5);
    CASE("cu_seqlens decreasing", M2C_STATUS_INVALID_ARG, "cu_seqlens", NULL, c.cu = cu_bad;
         cu_bad[0] = 0; cu_bad[1] = 3; cu_bad[2] = 2; cu_bad[3] = 5);
    CASE("total 6 tokens, buffers of 5", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.cu = cu_bad;
         cu_bad[0] = 0; cu_bad[1] = 2; cu_bad[2] = 3; cu_bad[3] = 6);
    CASE("total 4 tokens, buffers of 5", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.cu = cu_bad;
         cu_bad[0] = 0; cu_bad[1] = 2; cu_bad[2] = 2; cu_bad[3] = 4);
    CASE("total UINT64_MAX tokens", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.cu = cu_bad;
         cu_bad[0] = 0; cu_bad[1] = 2; cu_bad[2] = 3; cu_bad[3] = UINT64_MAX);
    CASE("x for 5 tokens, y for 6", M2C_STATUS_SHAPE_MISMATCH, "y", NULL, c.io.y_len += HP);
    CASE("cu_seqlens at +4 bytes", M2C_STATUS_INVALID_ARG, "cu_seqlens", "aligned",
         c.cu = (const uint64_t *)shifted(cu, 4));
    CASE("cu_seqlens inside the SSM storage", M2C_STATUS_INVALID_ARG, "cu_seqlens", "overlaps",
         c.cu = (const uint64_t *)sv0.data);
    CASE("y overlapping cu_seqlens", M2C_STATUS_INVALID_ARG, "y", "cu_seqlens",
         c.cu = (const uint64_t *)(const void *)(y + 4));
#endif

    /* Valid calls still work: the base call, a point interval, infinite
     * bounds, and a call with no rows. */
    EXPECT_OK(invoke(&base));
    CHECK(all_finite(y, M2C_DTYPE_F32, T * HP));
#if M2C_TEST_PREFILL
    CHECK(rows_are_zero(y, M2C_DTYPE_F32, HP, 2, 3)); /* the padding sequence */
#else
    CHECK(rows_are_zero(y, M2C_DTYPE_F32, HP, 1, 2)); /* the padding row */
#endif
    {
        call c = base;
        c.a.dt_min = c.a.dt_max = 0.5f;
        EXPECT_OK(invoke(&c));
        c.a.dt_min = -INFINITY;
        c.a.dt_max = INFINITY;
        EXPECT_OK(invoke(&c));
        c = base;
        c.n = 0;
        c.cu_len = 1;
        c.io.x_len = c.io.z_len = c.io.y_len = c.io.dt_len = c.io.B_len = c.io.C_len = 0;
        EXPECT_OK(invoke(&c));
        /* (NULL, 0) is an empty buffer: io straight from m2c_ssm_io_init. */
        m2c_ssm_io_init(&c.io);
        EXPECT_OK(invoke(&c));
#if M2C_TEST_PREFILL
        /* Sequences that are all empty: no tokens, (NULL, 0) buffers. */
        uint64_t *cu0 = (uint64_t *)arena_get(&ar, 4 * sizeof(uint64_t));
        memset(cu0, 0, 4 * sizeof(uint64_t));
        c.n = 3;
        c.cu = cu0;
        c.cu_len = 4;
        EXPECT_OK(invoke(&c));
#endif
    }
    free_snapshot(&before);
    arena_free(&ar);
    m2c_destroy(cache);
    printf("%s refusals: ok\n", FN);
    return 0;
}
