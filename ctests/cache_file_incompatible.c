/*
 * Proves: m2c_load_file refuses a valid file made by a cache of another
 * slot count (more and fewer slots) or another shape (conv_width K vs K-1,
 * ssm_dtype) with M2C_STATUS_INCOMPATIBLE, naming the differing field in
 * m2c_last_error(), and leaves the cache bit-for-bit unchanged (states,
 * positions, in-use count, acquired set).
 */
#include "formats.h"

static const char *dir;

static char *saved_file(const m2c_config *c, const char *name) {
    m2c_cache *src = create_or_die(c);
    fill_cache(src, 3);
    char *p = path_join(dir, name);
    EXPECT_OK(m2c_save_file(src, p));
    m2c_destroy(src);
    return p;
}

static void refused(const char *label, const m2c_config *target_cfg, const char *path,
                    const char *field) {
    fprintf(stderr, "case: %s\n", label);
    m2c_cache *target = create_or_die(target_cfg);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(target, &s)); /* acquired: {0} */
    fill_cache(target, 4);
    snapshot before = take_snapshot(target);
    EXPECT_FAIL(m2c_load_file(target, path), M2C_STATUS_INCOMPATIBLE, "m2c_load_file", field);
    EXPECT_UNCHANGED(target, &before);
    CHECK(slots_in_use_or_die(target) == 1);
    EXPECT_NO_TEMP_FILES(dir);
    CHECK(acquired_mask_destructive(target) == 0x1u);
    free_snapshot(&before);
    m2c_destroy(target);
}

int main(void) {
    dir = make_temp_dir();
    const m2c_config base = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_config five = base, three = base, k1 = base, ssm16 = base;
    five.num_slots = 5;
    three.num_slots = 3;
    k1.conv_width = 3;
    ssm16.ssm_dtype = M2C_DTYPE_F16;
    char *f4 = saved_file(&base, "four.m2c");
    char *fk1 = saved_file(&k1, "k1.m2c");

    refused("4 slots into 5", &five, f4, "num_slots");
    refused("4 slots into 3", &three, f4, "num_slots");
    refused("conv_width K into K-1", &k1, f4, "conv_width");
    refused("conv_width K-1 into K", &base, fk1, "conv_width");
    refused("ssm_dtype f32 into f16", &ssm16, f4, "ssm_dtype");

    free(fk1);
    free(f4);
    remove_temp_dir(dir);
    printf("cache_file_incompatible: ok\n");
    return 0;
}
