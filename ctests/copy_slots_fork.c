/*
 * Proves: m2c_copy_slots forks one source slot into many destinations
 * (parallel sampling): every destination gets the source's conv window and
 * SSM state in every layer and its position, the source and the other
 * slots keep theirs (checked against a C reference built from the states
 * read before the call), a row copying a slot onto itself is a no-op, and
 * whether a slot is acquired does not move with its state.
 */
#include "common.h"

int main(void) {
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    C.num_slots = 6;
    m2c_cache *cache = create_or_die(&C);
    int32_t s = -1;
    for (int i = 0; i < 3; i++) EXPECT_OK(m2c_slot_acquire(cache, &s));
    EXPECT_OK(m2c_slot_release(cache, 1)); /* acquired: {0, 2} */
    fill_cache(cache, 7);

    /* Slot 2 into 0, 3, 4, 5 (and onto itself). */
    {
        snapshot before = take_snapshot(cache);
        const int32_t src[5] = {2, 2, 2, 2, 2}, dst[5] = {0, 3, 2, 4, 5};
        snapshot want = expected_copy(&C, &before, src, dst, 5);
        EXPECT_OK(m2c_copy_slots(cache, src, dst, 5));
        EXPECT_SNAPSHOT(cache, &want);
        snapshot now = take_snapshot(cache);
        for (size_t d = 0; d < 6; d++) {
            if (d == 1)
                CHECK(slots_equal(&C, &before, 1, &now, 1));
            else
                CHECK(slots_equal(&C, &before, 2, &now, d));
        }
        CHECK(now.positions[4] == before.positions[2] && now.positions[4] != before.positions[4]);
        free_snapshot(&now);
        free_snapshot(&want);
        free_snapshot(&before);
    }
    CHECK(slots_in_use_or_die(cache) == 2);

    /* A fresh state in slot 1 forked into 0 and 5 only. */
    {
        const size_t sper = ssm_slot_elems(&C);
        float *st = (float *)alloc_elems(M2C_DTYPE_F32, sper);
        fill_values(st, M2C_DTYPE_F32, sper, 999);
        const int32_t one = 1;
        EXPECT_OK(m2c_update_ssm(cache, 1, &one, 1, st, M2C_DTYPE_F32, sper));
        EXPECT_OK(m2c_advance(cache, &one, 1, 77));
        free(st);
        snapshot before = take_snapshot(cache);
        const int32_t src[2] = {1, 1}, dst[2] = {5, 0};
        snapshot want = expected_copy(&C, &before, src, dst, 2);
        EXPECT_OK(m2c_copy_slots(cache, src, dst, 2));
        EXPECT_SNAPSHOT(cache, &want);
        free_snapshot(&want);
        free_snapshot(&before);
    }

    /* The acquired set is still {0, 2}. */
    CHECK(slots_in_use_or_die(cache) == 2);
    CHECK(acquired_mask_destructive(cache) == ((1u << 0) | (1u << 2)));
    m2c_destroy(cache);
    printf("copy_slots_fork: ok\n");
    return 0;
}
