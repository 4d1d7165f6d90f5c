/*
 * Proves: rows of m2c_copy_slots with dst[i] < 0 are padding and skipped,
 * whatever their source (a valid slot, a negative one, INT32_MIN), while
 * the real rows of the same call are applied; padding may repeat, also in
 * a call of 70 rows (past the 64 rows where the duplicate search changes
 * strategy); a call made only of padding rows, and n == 0 (also with NULL
 * src and dst), change nothing.
 */
#include "common.h"

int main(void) {
    m2c_config C = small_config(3, M2C_DTYPE_F16, M2C_DTYPE_F32);
    C.num_slots = 5;
    m2c_cache *cache = create_or_die(&C);
    fill_cache(cache, 31);

    {
        snapshot before = take_snapshot(cache);
        const int32_t src[6] = {0, 4, -1, 2, INT32_MIN, 3};
        const int32_t dst[6] = {-1, 1, -1, -5, -1, 0};
        snapshot want = expected_copy(&C, &before, src, dst, 6);
        EXPECT_OK(m2c_copy_slots(cache, src, dst, 6));
        EXPECT_SNAPSHOT(cache, &want);
        /* Only 1 and 0 changed. */
        snapshot now = take_snapshot(cache);
        CHECK(slots_equal(&C, &before, 2, &now, 2));
        CHECK(slots_equal(&C, &before, 3, &now, 3));
        CHECK(slots_equal(&C, &before, 4, &now, 4));
        CHECK(slots_equal(&C, &before, 4, &now, 1));
        CHECK(slots_equal(&C, &before, 3, &now, 0));
        free_snapshot(&now);
        free_snapshot(&want);
        free_snapshot(&before);
    }
    {
        /* 70 rows: 66 of padding, 4 real ones scattered through. */
        int32_t src[70], dst[70];
        for (int i = 0; i < 70; i++) {
            src[i] = i % 5;
            dst[i] = -1 - (i % 3);
        }
        const int rows[4] = {2, 40, 65, 69};
        const int32_t from[4] = {4, 0, 1, 2}, to[4] = {0, 4, 2, 1};
        for (int k = 0; k < 4; k++) {
            src[rows[k]] = from[k];
            dst[rows[k]] = to[k];
        }
        snapshot before = take_snapshot(cache);
        snapshot want = expected_copy(&C, &before, src, dst, 70);
        EXPECT_OK(m2c_copy_slots(cache, src, dst, 70));
        EXPECT_SNAPSHOT(cache, &want);
        free_snapshot(&want);
        free_snapshot(&before);
    }
    {
        snapshot before = take_snapshot(cache);
        const int32_t src[3] = {0, -1, 4}, dst[3] = {-1, -1, INT32_MIN};
        EXPECT_OK(m2c_copy_slots(cache, src, dst, 3));
        EXPECT_UNCHANGED(cache, &before);
        EXPECT_OK(m2c_copy_slots(cache, NULL, NULL, 0));
        EXPECT_OK(m2c_copy_slots(cache, src, NULL, 0));
        EXPECT_OK(m2c_copy_slots(cache, NULL, dst, 0));
        EXPECT_OK(m2c_copy_slots(cache, src, dst, 0));
        EXPECT_UNCHANGED(cache, &before);
        free_snapshot(&before);
    }
    m2c_destroy(cache);
    printf("copy_slots_padding_rows: ok\n");
    return 0;
}
