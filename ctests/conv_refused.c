/*
 * Proves the refusals of m2c_conv_step (built with M2C_TEST_PREFILL=0, ctest
 * conv_step_refused) and m2c_conv_prefill (M2C_TEST_PREFILL=1, ctest
 * conv_prefill_refused): each bad call returns the documented status,
 * m2c_last_error() names the function and the faulty argument, the cache is
 * bit-for-bit unchanged (every layer's storage through the views, every
 * position) and no caller buffer, `out` included, is written (all of them
 * live in one arena that is compared byte for byte).
 *
 * Cases: NULL cache / args / x / out / weight, NULL bias with a length;
 * args->struct_size 0, sizeof - 1, sizeof + 8; reserved != 0; unknown
 * activation; unknown io_dtype; every wrong length (x, out, weight, bias,
 * a bias with bias_len 0, rows that do not match n); layer and slot out of
 * range; a slot listed twice; misaligned x, out, weight, bias, slots; out
 * overlapping x, weight, bias or slots; every buffer inside the cache's own
 * storage (from the views). Prefill adds: cu_seqlens NULL, cu_len != n + 1,
 * cu_seqlens[0] != 0, decreasing offsets, totals that do not match the
 * buffers, misaligned cu_seqlens, cu_seqlens inside the storage and out
 * overlapping it, cu_seqlens (NULL, 0). Valid calls with the same buffers,
 * and calls with no tokens and (NULL, 0) buffers, still succeed afterwards.
 */
#include "kernels.h"

#ifndef M2C_TEST_PREFILL
#error "build with -DM2C_TEST_PREFILL=0 or 1"
#endif

#if M2C_TEST_PREFILL
#define FN "m2c_conv_prefill"
#else
#define FN "m2c_conv_step"
#endif

typedef struct call {
    m2c_cache *cache;
    uint32_t layer;
    const int32_t *slots;
    size_t n;
    const uint64_t *cu;
    size_t cu_len;
    const void *x;
    size_t x_len;
    void *out;
    size_t out_len;
    m2c_conv_args a;
    int no_args;
} call;

static m2c_cache *cache;
static snapshot before;
static arena ar;

static m2c_status invoke(const call *c) {
    const m2c_conv_args *a = c->no_args ? NULL : &c->a;
#if M2C_TEST_PREFILL
    return m2c_conv_prefill(c->cache, c->layer, c->slots, c->n, c->cu, c->cu_len, c->x, c->x_len,
                            c->out, c->out_len, a);
#else
    return m2c_conv_step(c->cache, c->layer, c->slots, c->n, c->x, c->x_len, c->out, c->out_len,
                         a);
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

/* CASE(label, status, word1, word2, edits): the base call with `edits`
 * applied to the copy `c` is refused. */
#define CASE(label, want, w1, w2, ...)                  \
    do {                                                \
        call c = base;                                  \
        __VA_ARGS__;                                    \
        refused_at(__LINE__, label, &c, want, w1, w2);  \
    } while (0)

int main(void) {
    const m2c_config C = kernel_config(4, 2, 2, 2, 4, 3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    cache = create_or_die(&C);
    rng r = rng_seeded(41);
    randomize_cache(cache, &r, 2.0f);
    plant_slot_list_in_storage(cache);
    EXPECT_OK(m2c_advance(cache, NULL, 4, 3));
    before = take_snapshot(cache);

    const size_t dim = conv_dim_of(&C), K = C.conv_kernel_size;
    CHECK(dim == 16 && K == 4 && C.conv_width == 3);
    /* The base call: rows {2, -1, 0}; prefill lengths {2, 1, 2}. */
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
    uint64_t *cu = (uint64_t *)arena_get(&ar, 8 * sizeof(uint64_t));
    cu[0] = 0;
    cu[1] = 2;
    cu[2] = 3;
    cu[3] = 5;
    float *x = (float *)arena_get(&ar, (T + 2) * dim * 4);
    float *out = (float *)arena_get(&ar, (T + 2) * dim * 4);
    float *w = (float *)arena_get(&ar, (dim * K + 2) * 4);
    float *bias = (float *)arena_get(&ar, (dim + 2) * 4);
    for (size_t i = 0; i < (T + 2) * dim; i++) x[i] = rng_uniform(&r, -2.0f, 2.0f);
    fill_sentinel(out, M2C_DTYPE_F32, (T + 2) * dim);
    for (size_t i = 0; i < dim * K + 2; i++) w[i] = rng_uniform(&r, -1.0f, 1.0f);
    for (size_t i = 0; i < dim + 2; i++) bias[i] = rng_uniform(&r, -1.0f, 1.0f);
    /* Slot lists for the slot cases (4-byte aligned, inside the arena). */
    int32_t *dup = slots + 4, *late_bad = slots + 8;
    dup[0] = 2;
    dup[1] = 0;
    dup[2] = 2;
    late_bad[0] = 2;
    late_bad[1] = -1;
    late_bad[2] = 4;

    call base;
    memset(&base, 0, sizeof base);
    base.cache = cache;
    base.layer = 1;
    base.slots = slots;
    base.n = n;
    base.cu = cu;
    base.cu_len = n + 1;
    base.x = x;
    base.x_len = T * dim;
    base.out = out;
    base.out_len = T * dim;
    m2c_conv_args_init(&base.a);
    base.a.weight = w;
    base.a.weight_len = dim * K;
    base.a.bias = bias;
    base.a.bias_len = dim;

    /* NULL pointers. */
    CASE("NULL cache", M2C_STATUS_NULL_ARG, "cache", NULL, c.cache = NULL);
    CASE("NULL args", M2C_STATUS_NULL_ARG, "args", NULL, c.no_args = 1);
    CASE("NULL weight", M2C_STATUS_NULL_ARG, "weight", NULL, c.a.weight = NULL);
    CASE("NULL weight, weight_len 0", M2C_STATUS_NULL_ARG, "weight", NULL, c.a.weight = NULL;
         c.a.weight_len = 0);
    CASE("NULL bias with bias_len", M2C_STATUS_NULL_ARG, "bias", NULL, c.a.bias = NULL);
    CASE("NULL x with x_len", M2C_STATUS_NULL_ARG, "x", NULL, c.x = NULL);
    CASE("NULL out with out_len", M2C_STATUS_NULL_ARG, "out", NULL, c.out = NULL);

    /* The args struct. */
    CASE("struct_size 0", M2C_STATUS_INVALID_ARG, "struct_size", NULL, c.a.struct_size = 0);
    CASE("struct_size - 1", M2C_STATUS_INVALID_ARG, "struct_size", NULL,
         c.a.struct_size = (uint32_t)sizeof(m2c_conv_args) - 1);
    CASE("struct_size + 8", M2C_STATUS_INVALID_ARG, "struct_size", NULL,
         c.a.struct_size = (uint32_t)sizeof(m2c_conv_args) + 8);
    CASE("reserved 1", M2C_STATUS_INVALID_ARG, "reserved", NULL, c.a.reserved = 1);
    CASE("reserved 0x80000000", M2C_STATUS_INVALID_ARG, "reserved", NULL,
         c.a.reserved = 0x80000000u);
    CASE("activation 2", M2C_STATUS_INVALID_ARG, "activation", NULL, c.a.activation = 2);
    CASE("activation UINT32_MAX", M2C_STATUS_INVALID_ARG, "activation", NULL,
         c.a.activation = UINT32_MAX);
    CASE("io_dtype 3", M2C_STATUS_UNSUPPORTED_DTYPE, "io_dtype", NULL, c.a.io_dtype = 3);
    CASE("io_dtype UINT32_MAX", M2C_STATUS_UNSUPPORTED_DTYPE, "io_dtype", NULL,
         c.a.io_dtype = UINT32_MAX);

    /* Lengths. */
    CASE("x_len + 1", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.x_len++);
    CASE("x_len - 1", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.x_len--);
    CASE("x_len 0", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.x_len = 0);
    CASE("out_len + 1", M2C_STATUS_SHAPE_MISMATCH, "out", NULL, c.out_len++);
    CASE("out_len - 1", M2C_STATUS_SHAPE_MISMATCH, "out", NULL, c.out_len--);
    CASE("x and out one row short", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.x_len -= dim;
         c.out_len -= dim);
    CASE("x and out one row long", M2C_STATUS_SHAPE_MISMATCH, "x", NULL, c.x_len += dim;
         c.out_len += dim);
    CASE("weight_len + 1", M2C_STATUS_SHAPE_MISMATCH, "weight", NULL, c.a.weight_len++);
    CASE("weight_len - 1", M2C_STATUS_SHAPE_MISMATCH, "weight", NULL, c.a.weight_len--);
    CASE("weight_len = conv_dim * conv_width", M2C_STATUS_SHAPE_MISMATCH, "weight", NULL,
         c.a.weight_len = dim * C.conv_width);
    CASE("bias_len + 1", M2C_STATUS_SHAPE_MISMATCH, "bias", NULL, c.a.bias_len++);
    CASE("bias_len - 1", M2C_STATUS_SHAPE_MISMATCH, "bias", NULL, c.a.bias_len--);
    CASE("bias non-NULL, bias_len 0", M2C_STATUS_SHAPE_MISMATCH, "bias", NULL,
         c.a.bias_len = 0);

    /* Layer and slots. */
    CASE("layer = num_layers", M2C_STATUS_OUT_OF_RANGE, "layer", NULL, c.layer = C.num_layers);
    CASE("layer UINT32_MAX", M2C_STATUS_OUT_OF_RANGE, "layer", NULL, c.layer = UINT32_MAX);
    CASE("slot 4 after valid rows", M2C_STATUS_OUT_OF_RANGE, "slots", NULL,
         c.slots = late_bad);
    CASE("slot listed twice", M2C_STATUS_INVALID_ARG, "twice", NULL, c.slots = dup);
#if !M2C_TEST_PREFILL
    CASE("slots NULL with n = 5 > num_slots", M2C_STATUS_OUT_OF_RANGE, "n", NULL,
         c.slots = NULL; c.n = 5; c.x_len = 5 * dim; c.out_len = 5 * dim);
#endif

    /* Alignment. */
    CASE("x at +2 bytes", M2C_STATUS_INVALID_ARG, "x", "aligned", c.x = shifted(x, 2));
    CASE("out at +2 bytes", M2C_STATUS_INVALID_ARG, "out", "aligned", c.out = shifted(out, 2));
    CASE("bf16 x at +1 byte", M2C_STATUS_INVALID_ARG, "x", "aligned",
         c.a.io_dtype = M2C_DTYPE_BF16; c.x = shifted(x, 1));
    CASE("f16 out at +1 byte", M2C_STATUS_INVALID_ARG, "out", "aligned",
         c.a.io_dtype = M2C_DTYPE_F16; c.out = shifted(out, 1));
    CASE("weight at +2 bytes", M2C_STATUS_INVALID_ARG, "weight", "aligned",
         c.a.weight = (const float *)shifted(w, 2));
    CASE("bias at +1 byte", M2C_STATUS_INVALID_ARG, "bias", "aligned",
         c.a.bias = (const float *)shifted(bias, 1));
    CASE("slots at +2 bytes", M2C_STATUS_INVALID_ARG, "slots", "aligned",
         c.slots = (const int32_t *)shifted(slots, 2));

    /* Outputs overlapping inputs. */
    CASE("out == x", M2C_STATUS_INVALID_ARG, "out", "x", c.out = x);
    CASE("out overlapping the end of x", M2C_STATUS_INVALID_ARG, "out", "x",
         c.out = x + T * dim - 1);
    CASE("out overlapping the start of x", M2C_STATUS_INVALID_ARG, "out", "x",
         c.x = out + 1);
    CASE("out overlapping weight", M2C_STATUS_INVALID_ARG, "out", "weight",
         c.a.weight = out + 3);
    CASE("out overlapping bias", M2C_STATUS_INVALID_ARG, "out", "bias", c.a.bias = out + 5);
    CASE("out overlapping slots", M2C_STATUS_INVALID_ARG, "out", "slots",
         c.slots = (const int32_t *)(const void *)(out + 2));

    /* Buffers inside the cache's own storage. */
    m2c_tensor cv0, cv1, sv0;
    EXPECT_OK(m2c_conv_view(cache, 0, &cv0));
    EXPECT_OK(m2c_conv_view(cache, 1, &cv1));
    EXPECT_OK(m2c_ssm_view(cache, 0, &sv0));
    CHECK(view_bytes(&cv1) >= (T + 2) * dim * 4 / 2 && view_bytes(&sv0) >= dim * K * 4);
    CASE("x inside the layer's conv storage", M2C_STATUS_INVALID_ARG, "x", "overlaps",
         c.x = cv1.data; c.a.io_dtype = M2C_DTYPE_BF16);
    CASE("x inside another layer's conv storage", M2C_STATUS_INVALID_ARG, "x", "overlaps",
         c.x = cv0.data; c.a.io_dtype = M2C_DTYPE_BF16);
    CASE("x inside the SSM storage", M2C_STATUS_INVALID_ARG, "x", "overlaps", c.x = sv0.data);
    CASE("x ending one element inside the storage", M2C_STATUS_INVALID_ARG, "x", "overlaps",
         c.x = shifted(sv0.data, -(ptrdiff_t)((T * dim - 1) * 4)));
    CASE("out inside the layer's conv storage", M2C_STATUS_INVALID_ARG, "out", "overlaps",
         c.out = cv1.data; c.a.io_dtype = M2C_DTYPE_BF16);
    CASE("out inside the SSM storage", M2C_STATUS_INVALID_ARG, "out", "overlaps",
         c.out = sv0.data);
    CASE("weight inside the SSM storage", M2C_STATUS_INVALID_ARG, "weight", "overlaps",
         c.a.weight = (const float *)sv0.data);
    CASE("bias inside the conv storage", M2C_STATUS_INVALID_ARG, "bias", "overlaps",
         c.a.bias = (const float *)cv0.data);
    CASE("slots inside the conv storage", M2C_STATUS_INVALID_ARG, "slots", "overlaps",
         c.slots = (const int32_t *)cv1.data);
    CASE("slots inside the SSM storage", M2C_STATUS_INVALID_ARG, "slots", "overlaps",
         c.slots = (const int32_t *)sv0.data);

#if M2C_TEST_PREFILL
    /* cu_seqlens. */
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
    CASE("x for 5 tokens, out for 6", M2C_STATUS_SHAPE_MISMATCH, "out", NULL,
         c.out_len += dim);
    CASE("cu_seqlens at +4 bytes", M2C_STATUS_INVALID_ARG, "cu_seqlens", "aligned",
         c.cu = (const uint64_t *)shifted(cu, 4));
    CASE("cu_seqlens inside the SSM storage", M2C_STATUS_INVALID_ARG, "cu_seqlens", "overlaps",
         c.cu = (const uint64_t *)sv0.data);
    CASE("out overlapping cu_seqlens", M2C_STATUS_INVALID_ARG, "out", "cu_seqlens",
         c.cu = (const uint64_t *)(const void *)(out + 4));
#endif

    /* The base call and empty calls still work. */
    arena_save(&ar);
    EXPECT_OK(invoke(&base));
    CHECK(all_finite(out, M2C_DTYPE_F32, T * dim));
#if M2C_TEST_PREFILL
    CHECK(rows_are_zero(out, M2C_DTYPE_F32, dim, 2, 3)); /* the padding sequence */
#else
    CHECK(rows_are_zero(out, M2C_DTYPE_F32, dim, 1, 2)); /* the padding row */
#endif
    {
        call c = base;
        c.n = 0;
        c.x = NULL;
        c.x_len = 0;
        c.out = NULL;
        c.out_len = 0;
        c.cu_len = 1;
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
