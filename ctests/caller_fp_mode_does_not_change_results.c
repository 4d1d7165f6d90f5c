/*
 * Proves: the results of m2c_ssm_step do not depend on the caller's
 * floating-point mode. With a subnormal state, a step run on a thread
 * that set flush-to-zero and denormals-are-zero (as many inference hosts
 * do) gives bit for bit the state of a step in the default mode, whether
 * the call is batched (large enough for the thread pool) or one slot per
 * call (the calling thread); and the caller's mode is as it was after each
 * call. (RELIABILITY-FINDINGS 11.)
 */
#include "common.h"

#if defined(__x86_64__)
#include <xmmintrin.h>

enum { H = 8, P = 64, N = 128 }; /* 256 KiB of f32 state per slot */

static m2c_config C;
static float A[H], x[2 * H * P], dt[2 * H], B[2 * N], Cc[2 * N], y[2 * H * P];
static float *subnormal; /* made in the default mode: FTZ would flush it */

/* One step of slots 0 and 1 from a subnormal state: batched or one slot
 * per call. Returns the resulting state (2 slots, layer 0). */
static float *step(m2c_cache *cache, int batched) {
    const size_t per = ssm_slot_elems(&C);
    float *st = malloc(2 * per * sizeof(float));
    CHECK(st != NULL);
    memcpy(st, subnormal, 2 * per * sizeof(float));
    EXPECT_OK(m2c_set_ssm(cache, 0, NULL, 2, st, M2C_DTYPE_F32, 2 * per));
    m2c_ssm_args a;
    m2c_ssm_args_init(&a);
    a.A = A;
    a.A_len = H;
    m2c_ssm_io io;
    m2c_ssm_io_init(&io);
    io.x = x;
    io.dt = dt;
    io.B = B;
    io.C = Cc;
    io.y = y;
    const size_t rows = batched ? 2 : 1;
    io.x_len = rows * H * P;
    io.dt_len = rows * H;
    io.B_len = io.C_len = rows * N;
    io.y_len = rows * H * P;
    if (batched) {
        EXPECT_OK(m2c_ssm_step(cache, 0, NULL, 2, &io, &a));
    } else {
        for (int32_t s = 0; s < 2; s++) EXPECT_OK(m2c_ssm_step(cache, 0, &s, 1, &io, &a));
    }
    EXPECT_OK(m2c_read_ssm(cache, 0, NULL, 2, st, M2C_DTYPE_F32, 2 * per));
    return st;
}

int main(void) {
    C = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    C.num_layers = 1;
    C.num_slots = 2;
    C.num_heads = H;
    C.head_dim = P;
    C.intermediate_size = H * P;
    C.state_size = N;
    C.n_groups = 1;
    m2c_cache *cache = create_or_die(&C);
    for (int h = 0; h < H; h++) A[h] = -0.1f;
    for (int i = 0; i < 2 * N; i++) B[i] = Cc[i] = 0.5f;
    const size_t bytes = 2 * ssm_slot_elems(&C) * sizeof(float);
    subnormal = malloc(bytes);
    CHECK(subnormal != NULL);
    for (size_t i = 0; i < bytes / sizeof(float); i++) subnormal[i] = 1e-39f * (float)(1 + i % 7);

    float *ref_batched = step(cache, 1), *ref_single = step(cache, 0);
    CHECK(memcmp(ref_batched, ref_single, bytes) == 0);

    _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ | DAZ */
    /* What the CPU holds now (valgrind emulates neither bit). */
    const unsigned int caller = _mm_getcsr();
    float *ftz_batched = step(cache, 1);
    CHECK(_mm_getcsr() == caller);
    float *ftz_single = step(cache, 0);
    CHECK(_mm_getcsr() == caller);
    _mm_setcsr(caller & ~0x8040u);
    if (memcmp(ftz_batched, ref_batched, bytes) != 0 || memcmp(ftz_single, ref_single, bytes) != 0) {
        fprintf(stderr, "results changed under the caller's FTZ/DAZ mode\n");
        return 1;
    }
    free(ref_batched);
    free(ref_single);
    free(ftz_batched);
    free(ftz_single);
    free(subnormal);
    m2c_destroy(cache);
    puts("ok");
    return 0;
}
#else
int main(void) {
    puts("ok (MXCSR is x86-64 only)");
    return 0;
}
#endif
