/*
 * Proves: an output parameter, slot list or path string that lies inside
 * the cache's own storage (reached through a view) is refused with
 * INVALID_ARG and changes nothing, for every call that has one: the read
 * calls (position, count_nonfinite, slots_in_use, slot_snapshot_size,
 * get_config, the views) must not write into the state they read;
 * slot_acquire must not leave its output in the slot it zeroes; reset and
 * advance must not read their slot list from the rows they change;
 * slot_save's out_written must not lie inside the snapshot it writes; and
 * load_file/save_file must not take a path the load would overwrite.
 * (RELIABILITY-FINDINGS 5, 6 and 7.)
 */
#include "common.h"
#include "formats.h"

int main(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    fill_cache(cache, 7);
    EXPECT_OK(m2c_advance(cache, NULL, 4, 3));
    m2c_tensor v;
    EXPECT_OK(m2c_ssm_view(cache, 0, &v));
    float *st = (float *)v.data;
    const size_t per = ssm_slot_elems(&c);
    snapshot before = take_snapshot(cache);

    EXPECT_FAIL(m2c_position(cache, 1, (uint64_t *)(void *)st), M2C_STATUS_INVALID_ARG, "m2c_position", "out");
    EXPECT_FAIL(m2c_count_nonfinite(cache, 1, (uint64_t *)(void *)(st + 2)), M2C_STATUS_INVALID_ARG,
                "m2c_count_nonfinite", "out_nonfinite");
    EXPECT_FAIL(m2c_check_finite(cache, 1, (uint64_t *)(void *)(st + 2)), M2C_STATUS_INVALID_ARG,
                "m2c_check_finite", "out_nonfinite");
    EXPECT_FAIL(m2c_slots_in_use(cache, (uint32_t *)(void *)(st + 4)), M2C_STATUS_INVALID_ARG,
                "m2c_slots_in_use", "out");
    EXPECT_FAIL(m2c_slot_snapshot_size(cache, (size_t *)(void *)(st + 6)), M2C_STATUS_INVALID_ARG,
                "m2c_slot_snapshot_size", "out");
    EXPECT_FAIL(m2c_conv_view(cache, 1, (m2c_tensor *)(void *)(st + 8)), M2C_STATUS_INVALID_ARG,
                "m2c_conv_view", "out");
    EXPECT_FAIL(m2c_ssm_view(cache, 1, (m2c_tensor *)(void *)(st + 8)), M2C_STATUS_INVALID_ARG,
                "m2c_ssm_view", "out");
    EXPECT_UNCHANGED(cache, &before);

    /* get_config reads struct_size from *out first: plant a valid one. */
    ((uint32_t *)(void *)st)[0] = (uint32_t)sizeof(m2c_config);
    free_snapshot(&before);
    before = take_snapshot(cache);
    EXPECT_FAIL(m2c_get_config(cache, (m2c_config *)(void *)st), M2C_STATUS_INVALID_ARG, "m2c_get_config", "out");
    EXPECT_UNCHANGED(cache, &before);

    /* slot_acquire: its output inside the first free slot's own state. */
    uint32_t in_use = 99;
    EXPECT_OK(m2c_slots_in_use(cache, &in_use));
    EXPECT_FAIL(m2c_slot_acquire(cache, (int32_t *)(void *)(st + 1)), M2C_STATUS_INVALID_ARG,
                "m2c_slot_acquire", "out_slot");
    uint32_t in_use_after = 99;
    EXPECT_OK(m2c_slots_in_use(cache, &in_use_after));
    CHECK(in_use_after == in_use);
    EXPECT_UNCHANGED(cache, &before);

    /* reset / advance: the slot list {1, 2} inside slot 1's layer-0 state. */
    int32_t *list = (int32_t *)(void *)(st + per);
    list[0] = 1;
    list[1] = 2;
    free_snapshot(&before);
    before = take_snapshot(cache);
    EXPECT_FAIL(m2c_reset(cache, list, 2), M2C_STATUS_INVALID_ARG, "m2c_reset", "slots");
    EXPECT_FAIL(m2c_advance(cache, list, 2, 1), M2C_STATUS_INVALID_ARG, "m2c_advance", "slots");
    EXPECT_UNCHANGED(cache, &before);

    /* slot_save: out_written inside the snapshot buffer, or in the state. */
    size_t sz = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &sz));
    unsigned char *buf = malloc(sz + 64);
    CHECK(buf != NULL);
    size_t *inside = (size_t *)(void *)(buf + 64);
    EXPECT_FAIL(m2c_slot_save(cache, 1, buf, sz + 64, inside), M2C_STATUS_INVALID_ARG, "m2c_slot_save",
                "out_written");
    EXPECT_FAIL(m2c_slot_save(cache, 1, buf, sz, (size_t *)(void *)(st + 10)), M2C_STATUS_INVALID_ARG,
                "m2c_slot_save", "out_written");
    size_t written = 0;
    EXPECT_OK(m2c_slot_save(cache, 1, buf, sz, &written));
    CHECK(written == sz);
    EXPECT_OK(m2c_slot_load(cache, 1, buf, sz));
    free(buf);

    /* load_file / save_file: the path string inside the storage. */
    const char *dir = make_temp_dir();
    char *file = path_join(dir, "c.m2c");
    EXPECT_OK(m2c_save_file(cache, file));
    char *in_state = (char *)(void *)(st + 2 * per);
    CHECK(strlen(file) + 1 <= per * sizeof(float));
    strcpy(in_state, file);
    free_snapshot(&before);
    before = take_snapshot(cache);
    EXPECT_FAIL(m2c_load_file(cache, in_state), M2C_STATUS_INVALID_ARG, "m2c_load_file", "path");
    EXPECT_FAIL(m2c_save_file(cache, in_state), M2C_STATUS_INVALID_ARG, "m2c_save_file", "path");
    EXPECT_UNCHANGED(cache, &before);
    EXPECT_OK(m2c_load_file(cache, file));
    free(file);

    free_snapshot(&before);
    m2c_destroy(cache);
    puts("ok");
    return 0;
}
