/*
 * Proves: a slot handed out by m2c_slot_acquire starts clean: its conv
 * window and SSM state are zero in every layer and its position is 0, even
 * when the slot held data before (written by index before any acquire, or
 * left behind by a released sequence). No other slot changes. Checked for
 * every pair of storage dtypes.
 */
#include "common.h"

static void one_config(m2c_dtype conv_dt, m2c_dtype ssm_dt) {
    m2c_config C = small_config(3, conv_dt, ssm_dt);
    m2c_cache *cache = create_or_die(&C);

    /* Data in every slot before any acquire (index-based use). */
    fill_cache(cache, 5);
    snapshot before = take_snapshot(cache);
    for (size_t s = 0; s < C.num_slots; s++) CHECK(!slot_is_zeroed(&C, &before, s));
    for (int32_t want = 0; want < (int32_t)C.num_slots; want++) {
        int32_t got = -1;
        EXPECT_OK(m2c_slot_acquire(cache, &got));
        CHECK(got == want);
        snapshot now = take_snapshot(cache);
        for (size_t s = 0; s < C.num_slots; s++) {
            if ((int32_t)s <= want)
                CHECK(slot_is_zeroed(&C, &now, s));
            else
                CHECK(slots_equal(&C, &before, s, &now, s));
        }
        free_snapshot(&now);
    }
    free_snapshot(&before);

    /* A released sequence's data is wiped by the next acquire of its slot. */
    fill_cache(cache, 9);
    EXPECT_OK(m2c_slot_release(cache, 2));
    snapshot released = take_snapshot(cache);
    CHECK(!slot_is_zeroed(&C, &released, 2));
    int32_t got = -1;
    EXPECT_OK(m2c_slot_acquire(cache, &got));
    CHECK(got == 2);
    snapshot now = take_snapshot(cache);
    CHECK(slot_is_zeroed(&C, &now, 2));
    for (size_t s = 0; s < C.num_slots; s++)
        if (s != 2) CHECK(slots_equal(&C, &released, s, &now, s));
    free_snapshot(&now);
    free_snapshot(&released);
    CHECK(slots_in_use_or_die(cache) == C.num_slots);
    m2c_destroy(cache);
}

int main(void) {
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) one_config(ALL_DTYPES[a], ALL_DTYPES[b]);
    printf("slot_acquire_zeroes_reused_slot: ok\n");
    return 0;
}
