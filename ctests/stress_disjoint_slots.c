/*
 * Proves: many threads mutating and reading one cache at once, each on its
 * own slots, leave exactly the state (and see exactly the outputs) of a
 * serial replay of the same per-thread operation sequences on a fresh
 * cache. Each thread runs a pseudo-random mix of update_conv, set_conv,
 * update_ssm, conv_step, ssm_step, advance, reset, read_conv, read_ssm,
 * slot save + load between its own slots, and calls that must fail; a
 * reader thread reads every slot and position all the while. The final
 * storage of every layer, every position and a hash of every output each
 * thread saw must be bit-identical between the concurrent run and the
 * replay. Small enough for valgrind.
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

enum { THREADS = 6, SLOTS_PER_THREAD = 2, ITERS = 400 };

/* Every thread of the concurrent run starts at once. */
static pthread_barrier_t start_line;
static int use_barrier;

static m2c_config C;
static float *conv_weight, *conv_bias, *ssm_A, *ssm_D, *ssm_dt_bias;

typedef struct worker {
    int t;
    m2c_cache *cache;
    uint64_t hash; /* FNV-1a over every output the thread read */
    const char *failure;
    int line;
} worker;

#define WCHECK(cond)              \
    do {                          \
        if (!(cond)) {            \
            w->failure = #cond;   \
            w->line = __LINE__;   \
            goto done;            \
        }                         \
    } while (0)

static void hash_bytes(uint64_t *h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ull;
    }
}

static uint32_t next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* The rows of a call: the thread's slots in some order, maybe with a
 * padding row; returns the row count. */
static size_t pick_rows(uint64_t *rng, int t, int32_t rows[3]) {
    const int32_t a = t * SLOTS_PER_THREAD, b = a + 1;
    switch (next(rng) % 5) {
        case 0: rows[0] = a; return 1;
        case 1: rows[0] = b; return 1;
        case 2: rows[0] = b; rows[1] = a; return 2;
        case 3: rows[0] = a; rows[1] = -1; rows[2] = b; return 3;
        default: rows[0] = -1; rows[1] = b; return 2;
    }
}

/* One thread's operation sequence on `cache`: a pure function of t. */
static void *run_ops(void *arg) {
    worker *w = (worker *)arg;
    const int t = w->t;
    m2c_cache *cache = w->cache;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1);
    const size_t dim = conv_dim_of(&C), cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C);
    const size_t H = C.num_heads, HD = C.head_dim, GN = (size_t)C.n_groups * C.state_size;
    size_t snap_size = 0;
    float *in = (float *)alloc_elems(M2C_DTYPE_F32, 3 * (cper + sper));
    float *out = (float *)alloc_elems(M2C_DTYPE_F32, 3 * (cper + sper));
    uint16_t *in16 = (uint16_t *)alloc_elems(M2C_DTYPE_BF16, 3 * sper);
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, 3 * H * HD);
    float *dt = (float *)alloc_elems(M2C_DTYPE_F32, 3 * H);
    float *B = (float *)alloc_elems(M2C_DTYPE_F32, 3 * GN);
    float *Cm = (float *)alloc_elems(M2C_DTYPE_F32, 3 * GN);
    float *z = (float *)alloc_elems(M2C_DTYPE_F32, 3 * H * HD);
    unsigned char *snap = NULL;
    m2c_conv_args ca;
    m2c_conv_args_init(&ca);
    ca.weight = conv_weight;
    ca.weight_len = dim * C.conv_kernel_size;
    ca.bias = conv_bias;
    ca.bias_len = dim;
    m2c_ssm_args sa;
    m2c_ssm_args_init(&sa);
    sa.A = ssm_A;
    sa.A_len = H;
    sa.D = ssm_D;
    sa.D_len = H;
    sa.dt_bias = ssm_dt_bias;
    sa.dt_bias_len = H;

    if (use_barrier) pthread_barrier_wait(&start_line);
    WCHECK(m2c_slot_snapshot_size(cache, &snap_size) == M2C_STATUS_OK);
    snap = (unsigned char *)malloc(snap_size);
    WCHECK(snap != NULL);
    for (int it = 0; it < ITERS; it++) {
        int32_t rows[3];
        const size_t n = pick_rows(&rng, t, rows);
        const uint32_t layer = next(&rng) % C.num_layers;
        const uint32_t seed = next(&rng);
        const unsigned op = next(&rng) % 11;
        switch (op) {
            case 0:
                fill_values(in, M2C_DTYPE_F32, n * dim, seed);
                WCHECK(m2c_update_conv(cache, layer, rows, n, in, M2C_DTYPE_F32, n * dim) == 0);
                break;
            case 1:
                fill_values(in, M2C_DTYPE_F32, n * cper, seed);
                WCHECK(m2c_set_conv(cache, layer, rows, n, in, M2C_DTYPE_F32, n * cper) == 0);
                break;
            case 2:
                fill_values(in16, M2C_DTYPE_BF16, n * sper, seed);
                WCHECK(m2c_update_ssm(cache, layer, rows, n, in16, M2C_DTYPE_BF16, n * sper) == 0);
                break;
            case 3:
            case 4:
                fill_values(in, M2C_DTYPE_F32, n * dim, seed);
                WCHECK(m2c_conv_step(cache, layer, rows, n, in, n * dim, out, n * dim, &ca) == 0);
                hash_bytes(&w->hash, out, n * dim * sizeof(float));
                break;
            case 5:
            case 6: {
                fill_values(x, M2C_DTYPE_F32, n * H * HD, seed);
                fill_values(z, M2C_DTYPE_F32, n * H * HD, seed + 1);
                fill_values(B, M2C_DTYPE_F32, n * GN, seed + 2);
                fill_values(Cm, M2C_DTYPE_F32, n * GN, seed + 3);
                for (size_t i = 0; i < n * H; i++) dt[i] = test_value(seed + 4, i) * 0.0625f;
                m2c_ssm_io io;
                m2c_ssm_io_init(&io);
                io.x = x;
                io.x_len = n * H * HD;
                io.dt = dt;
                io.dt_len = n * H;
                io.B = B;
                io.B_len = n * GN;
                io.C = Cm;
                io.C_len = n * GN;
                if (seed & 1) {
                    io.z = z;
                    io.z_len = n * H * HD;
                }
                io.y = out;
                io.y_len = n * H * HD;
                WCHECK(m2c_ssm_step(cache, layer, rows, n, &io, &sa) == 0);
                hash_bytes(&w->hash, out, n * H * HD * sizeof(float));
                break;
            }
            case 7:
                WCHECK(m2c_advance(cache, rows, n, seed % 5) == 0);
                if (seed % 17 == 0) WCHECK(m2c_reset(cache, rows, n) == 0);
                break;
            case 8: {
                /* A snapshot of one own slot loaded into the other (or the
                 * same) own slot. */
                const int32_t from = t * SLOTS_PER_THREAD + (int32_t)(seed % 2);
                const int32_t to = t * SLOTS_PER_THREAD + (int32_t)((seed >> 1) % 2);
                size_t written = 0;
                WCHECK(m2c_slot_save(cache, from, snap, snap_size, &written) == 0);
                WCHECK(written == snap_size);
                hash_bytes(&w->hash, snap, snap_size);
                WCHECK(m2c_slot_load(cache, to, snap, snap_size) == 0);
                /* A damaged copy is refused and changes nothing. */
                snap[snap_size / 2] ^= 0x10;
                WCHECK(m2c_slot_load(cache, to, snap, snap_size) == M2C_STATUS_CORRUPT);
                break;
            }
            case 9: {
                WCHECK(m2c_read_conv(cache, layer, rows, n, out, M2C_DTYPE_F32, n * cper) == 0);
                hash_bytes(&w->hash, out, n * cper * sizeof(float));
                WCHECK(m2c_read_ssm(cache, layer, rows, n, out, M2C_DTYPE_BF16, n * sper) == 0);
                hash_bytes(&w->hash, out, n * sper * 2);
                uint64_t pos = 0;
                WCHECK(m2c_position(cache, t * SLOTS_PER_THREAD, &pos) == 0);
                hash_bytes(&w->hash, &pos, sizeof pos);
                break;
            }
            default: {
                /* Calls that must fail, and change nothing: a slot listed
                 * twice, a slot out of range, a short buffer. */
                const int32_t dup[2] = {rows[n - 1] < 0 ? t * SLOTS_PER_THREAD : rows[n - 1],
                                        rows[n - 1] < 0 ? t * SLOTS_PER_THREAD : rows[n - 1]};
                WCHECK(m2c_update_conv(cache, layer, dup, 2, in, M2C_DTYPE_F32, 2 * dim) ==
                       M2C_STATUS_INVALID_ARG);
                const int32_t far[2] = {t * SLOTS_PER_THREAD, (int32_t)C.num_slots};
                WCHECK(m2c_advance(cache, far, 2, 1) == M2C_STATUS_OUT_OF_RANGE);
                WCHECK(m2c_update_ssm(cache, layer, rows, n, in, M2C_DTYPE_F32, n * sper - 1) ==
                       M2C_STATUS_SHAPE_MISMATCH);
                break;
            }
        }
    }
done:
    free(in);
    free(out);
    free(in16);
    free(x);
    free(dt);
    free(B);
    free(Cm);
    free(z);
    free(snap);
    return NULL;
}

static atomic_int writers_done;

static void *reader(void *arg) {
    worker *w = (worker *)arg;
    const size_t n = C.num_slots, sper = ssm_slot_elems(&C), cper = conv_slot_elems(&C);
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, n * (sper + cper));
    long rounds = 0;
    pthread_barrier_wait(&start_line);
    while (!atomic_load(&writers_done) || rounds < 3) {
        for (uint32_t l = 0; l < C.num_layers; l++) {
            WCHECK(m2c_read_ssm(w->cache, l, NULL, n, buf, M2C_DTYPE_F32, n * sper) == 0);
            WCHECK(m2c_read_conv(w->cache, l, NULL, n, buf, M2C_DTYPE_F32, n * cper) == 0);
        }
        for (int32_t s = 0; s < (int32_t)n; s++) {
            uint64_t pos = 0, nonfinite = 0;
            WCHECK(m2c_position(w->cache, s, &pos) == 0);
            WCHECK(m2c_check_finite(w->cache, s, &nonfinite) == 0);
        }
        rounds++;
    }
done:
    free(buf);
    return NULL;
}

static float *param(size_t n, uint32_t seed, float scale, float shift) {
    float *p = (float *)alloc_elems(M2C_DTYPE_F32, n);
    for (size_t i = 0; i < n; i++) p[i] = test_value(seed, i) * scale + shift;
    return p;
}

int main(void) {
    C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    C.num_slots = THREADS * SLOTS_PER_THREAD;
    const size_t dim = conv_dim_of(&C);
    conv_weight = param(dim * C.conv_kernel_size, 1, 0.125f, 0.0f);
    conv_bias = param(dim, 2, 0.0625f, 0.0f);
    ssm_A = param(C.num_heads, 3, 0.0f, -0.5f);
    for (uint32_t h = 0; h < C.num_heads; h++) ssm_A[h] = -0.25f - 0.125f * (float)h;
    ssm_D = param(C.num_heads, 4, 0.125f, 0.0f);
    ssm_dt_bias = param(C.num_heads, 5, 0.0625f, 0.0f);

    /* Concurrent run. */
    m2c_cache *conc = create_or_die(&C);
    CHECK(pthread_barrier_init(&start_line, NULL, THREADS + 1) == 0);
    use_barrier = 1;
    pthread_t tids[THREADS + 1];
    worker ws[THREADS + 1];
    for (int t = 0; t <= THREADS; t++) {
        ws[t] = (worker){.t = t, .cache = conc, .hash = 14695981039346656037ull};
        CHECK(pthread_create(&tids[t], NULL, t < THREADS ? run_ops : reader, &ws[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++) CHECK(pthread_join(tids[t], NULL) == 0);
    atomic_store(&writers_done, 1);
    CHECK(pthread_join(tids[THREADS], NULL) == 0);
    for (int t = 0; t <= THREADS; t++) {
        if (ws[t].failure) {
            fprintf(stderr, "thread %d failed at line %d: %s (%s)\n", t, ws[t].line, ws[t].failure,
                    m2c_last_error());
            return 1;
        }
    }

    CHECK(pthread_barrier_destroy(&start_line) == 0);
    use_barrier = 0;

    /* Serial replay of the same sequences on a fresh cache. */
    m2c_cache *serial = create_or_die(&C);
    worker rs[THREADS];
    for (int t = 0; t < THREADS; t++) {
        rs[t] = (worker){.t = t, .cache = serial, .hash = 14695981039346656037ull};
        run_ops(&rs[t]);
        if (rs[t].failure) {
            fprintf(stderr, "replay %d failed at line %d: %s\n", t, rs[t].line, rs[t].failure);
            return 1;
        }
        if (rs[t].hash != ws[t].hash) {
            fprintf(stderr, "thread %d saw other outputs concurrently than in the replay\n", t);
            return 1;
        }
    }
    snapshot a = take_snapshot(conc), b = take_snapshot(serial);
    CHECK(snapshots_equal(&a, &b));
    /* And the work did something (a slot may end zeroed by a late reset,
     * but not most of them). */
    uint32_t zeroed = 0;
    for (uint32_t s = 0; s < C.num_slots; s++) zeroed += (uint32_t)slot_is_zeroed(&C, &a, s);
    CHECK(zeroed <= C.num_slots / 4);
    free_snapshot(&a);
    free_snapshot(&b);
    m2c_destroy(conc);
    m2c_destroy(serial);
    free(conv_weight);
    free(conv_bias);
    free(ssm_A);
    free(ssm_D);
    free(ssm_dt_bias);
    printf("stress_disjoint_slots: %d threads x %d operations, state equals the serial replay\n",
           THREADS, ITERS);
    return 0;
}
