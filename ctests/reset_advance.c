/*
 * Proves: m2c_reset zeroes the conv window and SSM state of exactly the
 * listed slots in every layer and sets only their positions to 0;
 * m2c_advance adds to the positions of the listed slots only (padding rows
 * skipped, dense rows with NULL); a bad slot is OUT_OF_RANGE and changes
 * no position. (The u64 overflow of a position is tested in Rust: reaching
 * it from C would take 2^32 calls.)
 */
#include "common.h"

static m2c_config C;

static void expect_positions(m2c_cache *cache, const uint64_t want[4]) {
    for (int32_t s = 0; s < 4; s++) {
        uint64_t p = 0;
        EXPECT_OK(m2c_position(cache, s, &p));
        if (p != want[s]) {
            fprintf(stderr, "slot %d: position %llu, want %llu\n", (int)s, (unsigned long long)p,
                    (unsigned long long)want[s]);
            exit(1);
        }
    }
}

/* Whether slot s holds only zeros in every layer (through the read calls). */
static int slot_is_zero(m2c_cache *cache, int32_t s) {
    const size_t cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C);
    float *buf = (float *)alloc_elems(M2C_DTYPE_F32, cper + sper);
    int zero = 1;
    for (uint32_t l = 0; l < C.num_layers; l++) {
        EXPECT_OK(m2c_read_conv(cache, l, &s, 1, buf, M2C_DTYPE_F32, cper));
        EXPECT_OK(m2c_read_ssm(cache, l, &s, 1, buf + cper, M2C_DTYPE_F32, sper));
        for (size_t i = 0; i < cper + sper; i++)
            if (buf[i] != 0.0f) zero = 0;
    }
    free(buf);
    return zero;
}

static void fill_everything(m2c_cache *cache) {
    const size_t cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C), n = C.num_slots;
    void *w = alloc_elems(M2C_DTYPE_BF16, n * cper);
    void *st = alloc_elems(M2C_DTYPE_F16, n * sper);
    for (uint32_t l = 0; l < C.num_layers; l++) {
        fill_values(w, M2C_DTYPE_BF16, n * cper, 300 + l);
        fill_values(st, M2C_DTYPE_F16, n * sper, 400 + l);
        EXPECT_OK(m2c_set_conv(cache, l, NULL, n, w, M2C_DTYPE_BF16, n * cper));
        EXPECT_OK(m2c_update_ssm(cache, l, NULL, n, st, M2C_DTYPE_F16, n * sper));
    }
    free(w);
    free(st);
}

int main(void) {
    C = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_BF16);
    C.num_layers = 3;
    m2c_cache *cache = create_or_die(&C);
    uint64_t want[4] = {0, 0, 0, 0};
    expect_positions(cache, want);

    /* advance: explicit list, dense rows, padding, zero tokens, big steps. */
    const int32_t s02[2] = {0, 2};
    EXPECT_OK(m2c_advance(cache, s02, 2, 5));
    want[0] += 5, want[2] += 5;
    expect_positions(cache, want);
    EXPECT_OK(m2c_advance(cache, NULL, 4, 1));
    for (int i = 0; i < 4; i++) want[i] += 1;
    expect_positions(cache, want);
    EXPECT_OK(m2c_advance(cache, NULL, 2, 10));
    want[0] += 10, want[1] += 10;
    expect_positions(cache, want);
    const int32_t pad3[3] = {-1, 3, -1};
    EXPECT_OK(m2c_advance(cache, pad3, 3, 2));
    want[3] += 2;
    expect_positions(cache, want);
    EXPECT_OK(m2c_advance(cache, NULL, 4, 0));
    expect_positions(cache, want);
    const int32_t s1 = 1;
    EXPECT_OK(m2c_advance(cache, &s1, 1, UINT32_MAX));
    EXPECT_OK(m2c_advance(cache, &s1, 1, UINT32_MAX));
    want[1] += 2ull * UINT32_MAX;
    expect_positions(cache, want);

    /* advance with a bad slot changes nothing, even for the valid ones. */
    const int32_t bad[3] = {0, 1, 4};
    EXPECT_FAIL(m2c_advance(cache, bad, 3, 7), M2C_STATUS_OUT_OF_RANGE, "m2c_advance",
                "slots[2]");
    const int32_t neg_then_big[2] = {-1, INT32_MAX};
    EXPECT_STATUS(m2c_advance(cache, neg_then_big, 2, 7), M2C_STATUS_OUT_OF_RANGE);
    EXPECT_STATUS(m2c_advance(cache, NULL, 5, 7), M2C_STATUS_OUT_OF_RANGE);
    expect_positions(cache, want);

    /* reset: only slots 2 (and padding) listed. */
    fill_everything(cache);
    for (int32_t s = 0; s < 4; s++) CHECK(!slot_is_zero(cache, s));
    const int32_t r2[3] = {-1, 2, -1};
    EXPECT_OK(m2c_reset(cache, r2, 3));
    want[2] = 0;
    expect_positions(cache, want);
    CHECK(slot_is_zero(cache, 2));
    CHECK(!slot_is_zero(cache, 0));
    CHECK(!slot_is_zero(cache, 1));
    CHECK(!slot_is_zero(cache, 3));
    /* The other slots keep exactly their data, in every layer. */
    {
        const size_t cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C);
        void *w = alloc_elems(M2C_DTYPE_BF16, 4 * cper);
        void *st = alloc_elems(M2C_DTYPE_F16, 4 * sper);
        for (uint32_t l = 0; l < C.num_layers; l++) {
            EXPECT_OK(m2c_read_conv(cache, l, NULL, 4, w, M2C_DTYPE_BF16, 4 * cper));
            EXPECT_OK(m2c_read_ssm(cache, l, NULL, 4, st, M2C_DTYPE_F16, 4 * sper));
            for (size_t s = 0; s < 4; s++) {
                if (s == 2) continue;
                for (size_t i = 0; i < cper; i++)
                    CHECK(load_elem(w, M2C_DTYPE_BF16, s * cper + i) ==
                          test_value(300 + l, s * cper + i));
                for (size_t i = 0; i < sper; i++)
                    CHECK(load_elem(st, M2C_DTYPE_F16, s * sper + i) ==
                          test_value(400 + l, s * sper + i));
            }
        }
        free(w);
        free(st);
    }

    /* reset with a bad list changes nothing. */
    snapshot before = take_snapshot(cache);
    const int32_t rbad[2] = {0, 9};
    EXPECT_FAIL(m2c_reset(cache, rbad, 2), M2C_STATUS_OUT_OF_RANGE, "m2c_reset", "slots[1]");
    const int32_t rdup[3] = {3, 0, 3};
    EXPECT_FAIL(m2c_reset(cache, rdup, 3), M2C_STATUS_INVALID_ARG, "m2c_reset", "twice");
    EXPECT_UNCHANGED(cache, &before);
    free_snapshot(&before);

    /* Dense reset of every slot: all zero, all positions 0. */
    EXPECT_OK(m2c_reset(cache, NULL, 4));
    for (int32_t s = 0; s < 4; s++) CHECK(slot_is_zero(cache, s));
    const uint64_t zeros[4] = {0, 0, 0, 0};
    expect_positions(cache, zeros);
    snapshot all = take_snapshot(cache);
    for (size_t i = 0; i < all.len; i++) CHECK(all.bytes[i] == 0);
    free_snapshot(&all);

    m2c_destroy(cache);
    printf("reset/advance: ok\n");
    return 0;
}
