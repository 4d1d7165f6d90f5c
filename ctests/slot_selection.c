/*
 * Proves the slot selection rules of every batched call: slots == NULL
 * addresses the dense rows 0..n-1; an explicit list maps row i to
 * slots[i] in any order; a negative entry is a padding row, skipped on
 * write and zero-filled on read; a slot listed twice is INVALID_ARG (also
 * past 64 rows, where another duplicate search runs); a slot >= num_slots
 * and n > num_slots with NULL slots are OUT_OF_RANGE; (NULL, 0) with
 * n == 0 is a valid empty call.
 */
#include "common.h"

static m2c_config C;
static size_t PER; /* SSM elements per slot */

/* Writes a distinct SSM state (seed 1000 + slot) to every slot of layer 0
 * with one dense call. */
static void write_all_slots(m2c_cache *cache) {
    const size_t n = C.num_slots;
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, n * PER);
    for (size_t s = 0; s < n; s++) fill_values(buf + s * PER, M2C_DTYPE_F32, PER, 1000 + (uint32_t)s);
    EXPECT_OK(m2c_update_ssm(cache, 0, NULL, n, buf, M2C_DTYPE_F32, n * PER));
    free(buf);
}

/* Slot s of layer 0 holds the state of seed (or zeros when seed == 0). */
static void expect_slot(m2c_cache *cache, int32_t s, uint32_t seed) {
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, PER);
    EXPECT_OK(m2c_read_ssm(cache, 0, &s, 1, buf, M2C_DTYPE_F32, PER));
    for (size_t i = 0; i < PER; i++) {
        float want = seed ? test_value(seed, i) : 0.0f;
        if (buf[i] != want) {
            fprintf(stderr, "slot %d element %zu: got %g want %g (seed %u)\n", (int)s, i,
                    (double)buf[i], (double)want, (unsigned)seed);
            exit(1);
        }
    }
    free(buf);
}

static void dense_rows(void) {
    m2c_cache *cache = create_or_die(&C);
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, 2 * PER);
    fill_values(buf, M2C_DTYPE_F32, PER, 1);
    fill_values(buf + PER, M2C_DTYPE_F32, PER, 2);
    EXPECT_OK(m2c_update_ssm(cache, 0, NULL, 2, buf, M2C_DTYPE_F32, 2 * PER));
    expect_slot(cache, 0, 1);
    expect_slot(cache, 1, 2);
    expect_slot(cache, 2, 0);
    expect_slot(cache, 3, 0);
    /* Dense read of 3 rows = slots 0, 1, 2. */
    float *out = (float *)alloc_elems(M2C_DTYPE_F32, 3 * PER);
    EXPECT_OK(m2c_read_ssm(cache, 0, NULL, 3, out, M2C_DTYPE_F32, 3 * PER));
    CHECK(memcmp(out, buf, 2 * PER * sizeof(float)) == 0);
    for (size_t i = 0; i < PER; i++) CHECK(out[2 * PER + i] == 0.0f);
    free(out);
    free(buf);
    m2c_destroy(cache);
}

static void permuted_list(void) {
    m2c_cache *cache = create_or_die(&C);
    const int32_t slots[4] = {3, 0, 2, 1};
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, 4 * PER);
    for (int r = 0; r < 4; r++) fill_values(buf + r * PER, M2C_DTYPE_F32, PER, 50 + (uint32_t)r);
    EXPECT_OK(m2c_update_ssm(cache, 0, slots, 4, buf, M2C_DTYPE_F32, 4 * PER));
    for (int r = 0; r < 4; r++) expect_slot(cache, slots[r], 50 + (uint32_t)r);
    /* Reading with another permutation puts row i = slot read_slots[i]. */
    const int32_t read_slots[4] = {1, 3, 0, 2};
    float *out = (float *)alloc_elems(M2C_DTYPE_F32, 4 * PER);
    EXPECT_OK(m2c_read_ssm(cache, 0, read_slots, 4, out, M2C_DTYPE_F32, 4 * PER));
    for (int r = 0; r < 4; r++) {
        int row_written = -1;
        for (int k = 0; k < 4; k++)
            if (slots[k] == read_slots[r]) row_written = k;
        CHECK(memcmp(out + r * PER, buf + row_written * PER, PER * sizeof(float)) == 0);
    }
    free(out);
    free(buf);
    m2c_destroy(cache);
}

static void padding_rows(void) {
    m2c_cache *cache = create_or_die(&C);
    write_all_slots(cache);
    /* Rows 0 and 2 are padding: their data must be ignored. */
    const int32_t slots[4] = {-1, 2, INT32_MIN, 0};
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, 4 * PER);
    for (int r = 0; r < 4; r++) fill_values(buf + r * PER, M2C_DTYPE_F32, PER, 70 + (uint32_t)r);
    EXPECT_OK(m2c_update_ssm(cache, 0, slots, 4, buf, M2C_DTYPE_F32, 4 * PER));
    expect_slot(cache, 0, 73);
    expect_slot(cache, 1, 1001);
    expect_slot(cache, 2, 71);
    expect_slot(cache, 3, 1003);

    /* Conv writes skip padding too. */
    const size_t cper = conv_slot_elems(&C), dim = conv_dim_of(&C);
    snapshot before = take_snapshot(cache);
    const int32_t all_pad[3] = {-1, -1, -7};
    void *x = alloc_elems(M2C_DTYPE_BF16, 3 * dim);
    fill_values(x, M2C_DTYPE_BF16, 3 * dim, 5);
    EXPECT_OK(m2c_update_conv(cache, 0, all_pad, 3, x, M2C_DTYPE_BF16, 3 * dim));
    void *w = alloc_elems(M2C_DTYPE_BF16, 3 * cper);
    fill_values(w, M2C_DTYPE_BF16, 3 * cper, 6);
    EXPECT_OK(m2c_set_conv(cache, 1, all_pad, 3, w, M2C_DTYPE_BF16, 3 * cper));
    EXPECT_OK(m2c_update_ssm(cache, 1, all_pad, 3, buf, M2C_DTYPE_F32, 3 * PER));
    EXPECT_OK(m2c_reset(cache, all_pad, 3));
    EXPECT_OK(m2c_advance(cache, all_pad, 3, 9));
    EXPECT_UNCHANGED(cache, &before);
    free_snapshot(&before);

    /* Padding rows read as zeros, whatever out held before. */
    const int32_t read_slots[4] = {1, -1, 3, -2};
    for (int d = 0; d < 3; d++) {
        m2c_dtype dt = ALL_DTYPES[d];
        void *out = alloc_elems(dt, 4 * PER); /* pre-filled with 0xA5 */
        EXPECT_OK(m2c_read_ssm(cache, 0, read_slots, 4, out, dt, 4 * PER));
        for (size_t i = 0; i < PER; i++) {
            CHECK(load_elem(out, dt, 0 * PER + i) == test_value(1001, i));
            CHECK(load_elem(out, dt, 1 * PER + i) == 0.0f);
            CHECK(load_elem(out, dt, 2 * PER + i) == test_value(1003, i));
            CHECK(load_elem(out, dt, 3 * PER + i) == 0.0f);
        }
        /* Zero means +0.0: every byte of a padding row is 0. */
        const unsigned char *bytes = (const unsigned char *)out;
        for (size_t i = 0; i < PER * dtype_size(dt); i++) {
            CHECK(bytes[1 * PER * dtype_size(dt) + i] == 0);
            CHECK(bytes[3 * PER * dtype_size(dt) + i] == 0);
        }
        void *cout = alloc_elems(dt, 4 * cper);
        EXPECT_OK(m2c_read_conv(cache, 0, read_slots, 4, cout, dt, 4 * cper));
        for (size_t i = 0; i < cper; i++) {
            CHECK(load_elem(cout, dt, 1 * cper + i) == 0.0f);
            CHECK(load_elem(cout, dt, 3 * cper + i) == 0.0f);
        }
        free(cout);
        free(out);
    }
    free(x);
    free(w);
    free(buf);
    m2c_destroy(cache);
}

static void refused_selections(void) {
    m2c_cache *cache = create_or_die(&C);
    write_all_slots(cache);
    snapshot before = take_snapshot(cache);
    const size_t cper = conv_slot_elems(&C), dim = conv_dim_of(&C);
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, 5 * (cper > PER ? cper : PER));
    fill_values(buf, M2C_DTYPE_F32, 5 * (cper > PER ? cper : PER), 3);

    /* Duplicates: INVALID_ARG. */
    const int32_t dup[3] = {1, -1, 1};
    EXPECT_FAIL(m2c_update_ssm(cache, 0, dup, 3, buf, M2C_DTYPE_F32, 3 * PER),
                M2C_STATUS_INVALID_ARG, "m2c_update_ssm", "twice");
    EXPECT_FAIL(m2c_update_conv(cache, 0, dup, 3, buf, M2C_DTYPE_F32, 3 * dim),
                M2C_STATUS_INVALID_ARG, "m2c_update_conv", "twice");
    EXPECT_FAIL(m2c_set_conv(cache, 0, dup, 3, buf, M2C_DTYPE_F32, 3 * cper),
                M2C_STATUS_INVALID_ARG, "m2c_set_conv", "twice");
    EXPECT_FAIL(m2c_read_ssm(cache, 0, dup, 3, buf, M2C_DTYPE_F32, 3 * PER),
                M2C_STATUS_INVALID_ARG, "m2c_read_ssm", "twice");
    EXPECT_FAIL(m2c_read_conv(cache, 0, dup, 3, buf, M2C_DTYPE_F32, 3 * cper),
                M2C_STATUS_INVALID_ARG, "m2c_read_conv", "twice");
    EXPECT_FAIL(m2c_reset(cache, dup, 3), M2C_STATUS_INVALID_ARG, "m2c_reset", "twice");
    EXPECT_FAIL(m2c_advance(cache, dup, 3, 1), M2C_STATUS_INVALID_ARG, "m2c_advance", "twice");

    /* A slot past the end: OUT_OF_RANGE. */
    const int32_t far[2] = {0, 4};
    EXPECT_FAIL(m2c_update_ssm(cache, 0, far, 2, buf, M2C_DTYPE_F32, 2 * PER),
                M2C_STATUS_OUT_OF_RANGE, "m2c_update_ssm", "slots[1]");
    EXPECT_FAIL(m2c_update_conv(cache, 0, far, 2, buf, M2C_DTYPE_F32, 2 * dim),
                M2C_STATUS_OUT_OF_RANGE, "m2c_update_conv", "slots[1]");
    EXPECT_FAIL(m2c_set_conv(cache, 0, far, 2, buf, M2C_DTYPE_F32, 2 * cper),
                M2C_STATUS_OUT_OF_RANGE, "m2c_set_conv", "slots[1]");
    EXPECT_FAIL(m2c_read_ssm(cache, 0, far, 2, buf, M2C_DTYPE_F32, 2 * PER),
                M2C_STATUS_OUT_OF_RANGE, "m2c_read_ssm", "slots[1]");
    EXPECT_FAIL(m2c_read_conv(cache, 0, far, 2, buf, M2C_DTYPE_F32, 2 * cper),
                M2C_STATUS_OUT_OF_RANGE, "m2c_read_conv", "slots[1]");
    EXPECT_FAIL(m2c_reset(cache, far, 2), M2C_STATUS_OUT_OF_RANGE, "m2c_reset", "slots[1]");
    EXPECT_FAIL(m2c_advance(cache, far, 2, 1), M2C_STATUS_OUT_OF_RANGE, "m2c_advance",
                "slots[1]");
    const int32_t huge = INT32_MAX;
    EXPECT_STATUS(m2c_update_ssm(cache, 0, &huge, 1, buf, M2C_DTYPE_F32, PER),
                  M2C_STATUS_OUT_OF_RANGE);

    /* n > num_slots with slots == NULL: OUT_OF_RANGE. */
    EXPECT_FAIL(m2c_update_ssm(cache, 0, NULL, 5, buf, M2C_DTYPE_F32, 5 * PER),
                M2C_STATUS_OUT_OF_RANGE, "m2c_update_ssm", "n = 5");
    EXPECT_FAIL(m2c_update_conv(cache, 0, NULL, 5, buf, M2C_DTYPE_F32, 5 * dim),
                M2C_STATUS_OUT_OF_RANGE, "m2c_update_conv", "n = 5");
    EXPECT_FAIL(m2c_set_conv(cache, 0, NULL, 5, buf, M2C_DTYPE_F32, 5 * cper),
                M2C_STATUS_OUT_OF_RANGE, "m2c_set_conv", "n = 5");
    EXPECT_FAIL(m2c_read_ssm(cache, 0, NULL, 5, buf, M2C_DTYPE_F32, 5 * PER),
                M2C_STATUS_OUT_OF_RANGE, "m2c_read_ssm", "n = 5");
    EXPECT_FAIL(m2c_read_conv(cache, 0, NULL, 5, buf, M2C_DTYPE_F32, 5 * cper),
                M2C_STATUS_OUT_OF_RANGE, "m2c_read_conv", "n = 5");
    EXPECT_FAIL(m2c_reset(cache, NULL, 5), M2C_STATUS_OUT_OF_RANGE, "m2c_reset", "n = 5");
    EXPECT_FAIL(m2c_advance(cache, NULL, 5, 1), M2C_STATUS_OUT_OF_RANGE, "m2c_advance", "n = 5");
    EXPECT_UNCHANGED(cache, &before);

    /* Empty calls: (NULL, 0) and n == 0 are fine and change nothing. */
    EXPECT_OK(m2c_update_ssm(cache, 0, NULL, 0, NULL, M2C_DTYPE_F32, 0));
    EXPECT_OK(m2c_update_conv(cache, 0, NULL, 0, NULL, M2C_DTYPE_BF16, 0));
    EXPECT_OK(m2c_set_conv(cache, 1, NULL, 0, NULL, M2C_DTYPE_F16, 0));
    EXPECT_OK(m2c_read_ssm(cache, 0, NULL, 0, NULL, M2C_DTYPE_F32, 0));
    EXPECT_OK(m2c_read_conv(cache, 1, NULL, 0, NULL, M2C_DTYPE_F32, 0));
    EXPECT_OK(m2c_reset(cache, NULL, 0));
    EXPECT_OK(m2c_advance(cache, NULL, 0, 3));
    const int32_t one = 1;
    EXPECT_OK(m2c_update_ssm(cache, 0, &one, 0, NULL, M2C_DTYPE_F32, 0));
    EXPECT_OK(m2c_read_conv(cache, 0, &one, 0, buf, M2C_DTYPE_F32, 0));
    EXPECT_OK(m2c_reset(cache, &one, 0));
    EXPECT_UNCHANGED(cache, &before);
    /* But n > 0 rows need n > 0 elements. */
    EXPECT_STATUS(m2c_update_ssm(cache, 0, NULL, 1, NULL, M2C_DTYPE_F32, 0),
                  M2C_STATUS_SHAPE_MISMATCH);
    EXPECT_UNCHANGED(cache, &before);

    free_snapshot(&before);
    free(buf);
    m2c_destroy(cache);
}

/* More than 64 rows: duplicates are searched another way (a bitmap). */
static void long_lists(void) {
    m2c_config c = C;
    c.num_slots = 100;
    c.num_layers = 1;
    m2c_cache *cache = create_or_die(&c);
    enum { N = 100 };
    int32_t slots[N];
    for (int i = 0; i < N; i++) slots[i] = (i * 37) % N; /* a permutation */
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, N * PER);
    for (int r = 0; r < N; r++) fill_values(buf + r * PER, M2C_DTYPE_F32, PER, 200 + (uint32_t)r);
    EXPECT_OK(m2c_update_ssm(cache, 0, slots, N, buf, M2C_DTYPE_F32, N * PER));
    snapshot before = take_snapshot(cache);
    slots[90] = slots[10];
    EXPECT_FAIL(m2c_update_ssm(cache, 0, slots, N, buf, M2C_DTYPE_F32, N * PER),
                M2C_STATUS_INVALID_ARG, "m2c_update_ssm", "twice");
    EXPECT_FAIL(m2c_reset(cache, slots, N), M2C_STATUS_INVALID_ARG, "m2c_reset", "twice");
    /* Padding may repeat freely. */
    for (int i = 0; i < N; i++) slots[i] = -1;
    slots[99] = 99;
    EXPECT_OK(m2c_advance(cache, slots, N, 1));
    uint64_t pos = 0;
    EXPECT_OK(m2c_position(cache, 99, &pos));
    CHECK(pos == 1);
    EXPECT_OK(m2c_position(cache, 98, &pos));
    CHECK(pos == 0);
    free_snapshot(&before);
    free(buf);
    m2c_destroy(cache);
}

int main(void) {
    C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    PER = ssm_slot_elems(&C);
    dense_rows();
    permuted_list();
    padding_rows();
    refused_selections();
    long_lists();
    printf("slot selection: ok\n");
    return 0;
}
