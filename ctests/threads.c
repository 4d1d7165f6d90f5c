/*
 * Proves: one cache used from 4 threads at once, each working on its own
 * slots (update_conv, update_ssm, read_conv, read_ssm, advance, position),
 * ends with exactly the state each thread wrote: mutations of different
 * slots do not interfere, and reads run beside writes. A fifth thread
 * reads every slot all the while. Also built against the static library
 * (ctest `threads_static`).
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

enum { THREADS = 4, SLOTS_PER_THREAD = 2, ITERS = 400 };

static m2c_config C;
static m2c_cache *cache;
static atomic_int writers_done;

/* The conv input of a thread's row r at iteration it. */
static uint32_t conv_seed(int t, int r, int it) { return (uint32_t)(t * 100000 + r * 10000 + it); }
static uint32_t ssm_seed(int t, int r, int it) { return conv_seed(t, r, it) + 7; }

typedef struct worker {
    int t;
    const char *failure; /* NULL on success */
} worker;

#define WCHECK(cond)                          \
    do {                                      \
        if (!(cond)) {                        \
            w->failure = #cond;               \
            return NULL;                      \
        }                                     \
    } while (0)

static void *work(void *arg) {
    worker *w = (worker *)arg;
    const int t = w->t;
    const size_t dim = conv_dim_of(&C), sper = ssm_slot_elems(&C), cper = conv_slot_elems(&C);
    /* Rows in alternating order, and a padding row in between. */
    int32_t slots[3] = {t * 2 + 1, -1, t * 2};
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, 3 * dim);
    uint16_t *st = (uint16_t *)alloc_elems(M2C_DTYPE_BF16, 3 * sper);
    uint16_t *back = (uint16_t *)alloc_elems(M2C_DTYPE_BF16, 3 * sper);
    float *win = (float *)alloc_elems(M2C_DTYPE_F32, 3 * cper);
    for (int it = 0; it < ITERS; it++) {
        for (int r = 0; r < 3; r++) {
            fill_values(x + r * dim, M2C_DTYPE_F32, dim, conv_seed(t, r, it));
            fill_values(st + r * sper, M2C_DTYPE_BF16, sper, ssm_seed(t, r, it));
        }
        WCHECK(m2c_update_conv(cache, (uint32_t)it % C.num_layers, slots, 3, x, M2C_DTYPE_F32,
                               3 * dim) == M2C_STATUS_OK);
        WCHECK(m2c_update_ssm(cache, (uint32_t)it % C.num_layers, slots, 3, st, M2C_DTYPE_BF16,
                              3 * sper) == M2C_STATUS_OK);
        WCHECK(m2c_advance(cache, slots, 3, 1) == M2C_STATUS_OK);
        /* Nobody else writes these slots: the read sees our write. */
        WCHECK(m2c_read_ssm(cache, (uint32_t)it % C.num_layers, slots, 3, back, M2C_DTYPE_BF16,
                            3 * sper) == M2C_STATUS_OK);
        WCHECK(memcmp(back, st, sper * 2) == 0);
        WCHECK(memcmp(back + 2 * sper, st + 2 * sper, sper * 2) == 0);
        for (size_t i = 0; i < sper; i++) WCHECK(back[sper + i] == 0); /* padding row */
        WCHECK(m2c_read_conv(cache, (uint32_t)it % C.num_layers, slots, 3, win, M2C_DTYPE_F32,
                             3 * cper) == M2C_STATUS_OK);
        for (size_t ch = 0; ch < dim; ch++)
            WCHECK(win[ch * C.conv_width + C.conv_width - 1] == x[ch]);
        uint64_t pos = 0;
        WCHECK(m2c_position(cache, slots[0], &pos) == M2C_STATUS_OK);
        WCHECK(pos == (uint64_t)it + 1);
        /* A refused call on this thread sets only this thread's error. */
        const int32_t bad = 1000;
        WCHECK(m2c_advance(cache, &bad, 1, 1) == M2C_STATUS_OUT_OF_RANGE);
        WCHECK(strstr(m2c_last_error(), "1000") != NULL);
    }
    free(x);
    free(st);
    free(back);
    free(win);
    return NULL;
}

static void *reader(void *arg) {
    worker *w = (worker *)arg;
    const size_t n = C.num_slots, sper = ssm_slot_elems(&C), cper = conv_slot_elems(&C);
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, n * (sper + cper));
    long rounds = 0;
    while (!atomic_load(&writers_done) || rounds < 10) {
        for (uint32_t l = 0; l < C.num_layers; l++) {
            WCHECK(m2c_read_ssm(cache, l, NULL, n, buf, M2C_DTYPE_F32, n * sper) ==
                   M2C_STATUS_OK);
            WCHECK(m2c_read_conv(cache, l, NULL, n, buf, M2C_DTYPE_F32, n * cper) ==
                   M2C_STATUS_OK);
        }
        rounds++;
    }
    free(buf);
    return NULL;
}

int main(void) {
    C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    C.num_slots = THREADS * SLOTS_PER_THREAD;
    cache = create_or_die(&C);

    pthread_t tids[THREADS + 1];
    worker ws[THREADS + 1];
    for (int t = 0; t <= THREADS; t++) {
        ws[t].t = t;
        ws[t].failure = NULL;
        CHECK(pthread_create(&tids[t], NULL, t < THREADS ? work : reader, &ws[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++) CHECK(pthread_join(tids[t], NULL) == 0);
    atomic_store(&writers_done, 1);
    CHECK(pthread_join(tids[THREADS], NULL) == 0);
    for (int t = 0; t <= THREADS; t++) {
        if (ws[t].failure) {
            fprintf(stderr, "thread %d failed: %s\n", t, ws[t].failure);
            return 1;
        }
    }
    /* The main thread saw none of the workers' errors. */
    CHECK(strcmp(m2c_last_error(), "") == 0);

    /* Final state: for each slot and layer, the conv window holds the last
     * conv_width inputs pushed to that layer, oldest first, and the SSM
     * state is the last one written to that layer. */
    const size_t dim = conv_dim_of(&C), cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C);
    float *win = (float *)alloc_elems(M2C_DTYPE_F32, cper);
    float *st = (float *)alloc_elems(M2C_DTYPE_F32, sper);
    for (int t = 0; t < THREADS; t++)
        for (int r = 0; r < 3; r += 2) {
            const int32_t slot = r == 0 ? t * 2 + 1 : t * 2;
            uint64_t pos = 0;
            EXPECT_OK(m2c_position(cache, slot, &pos));
            CHECK(pos == ITERS);
            for (uint32_t l = 0; l < C.num_layers; l++) {
                /* Iterations that wrote layer l: it % num_layers == l. */
                int its[ITERS], k = 0;
                for (int it = 0; it < ITERS; it++)
                    if ((uint32_t)it % C.num_layers == l) its[k++] = it;
                EXPECT_OK(m2c_read_conv(cache, l, &slot, 1, win, M2C_DTYPE_F32, cper));
                for (size_t ch = 0; ch < dim; ch++)
                    for (uint32_t col = 0; col < C.conv_width; col++) {
                        int idx = k - (int)C.conv_width + (int)col;
                        float want = idx < 0 ? 0.0f : test_value(conv_seed(t, r, its[idx]), ch);
                        CHECK(win[ch * C.conv_width + col] == want);
                    }
                EXPECT_OK(m2c_read_ssm(cache, l, &slot, 1, st, M2C_DTYPE_F32, sper));
                for (size_t i = 0; i < sper; i++)
                    CHECK(st[i] == test_value(ssm_seed(t, r, its[k - 1]), i));
            }
        }
    free(win);
    free(st);
    m2c_destroy(cache);
    printf("threads: ok\n");
    return 0;
}
