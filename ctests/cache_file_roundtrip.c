/*
 * Proves: m2c_save_file writes the documented cache-file layout
 * (docs/FORMATS.md) and m2c_load_file restores it exactly into a second
 * cache of the same config that held other states, positions and another
 * acquired set: every layer's states, every position, the in-use count
 * and the acquired set. Checked from C: total size 64 + 16 * num_slots +
 * payload + 8, magic "M2CCACHE", version 1, header size 64, fingerprint,
 * num_slots, reserved 0, the slot table (position, acquired flag), the
 * payload (per layer every slot's conv windows, then SSM states, as the
 * views show them) and the trailing XXH64. Also a load into a never
 * touched cache, a load that leaves the file as it was, a save through a
 * path relative to the working directory, and no ".m2c-tmp" files left.
 */
#include "formats.h"

int main(void) {
    xxh64_self_test();
    const char *dir = make_temp_dir();
    char *path = path_join(dir, "cache.m2c");
    m2c_config C = small_config(3, M2C_DTYPE_F16, M2C_DTYPE_BF16);
    C.num_slots = 5;

    m2c_cache *a = create_or_die(&C);
    int32_t s = -1;
    for (int i = 0; i < 4; i++) EXPECT_OK(m2c_slot_acquire(a, &s));
    EXPECT_OK(m2c_slot_release(a, 1));
    EXPECT_OK(m2c_slot_release(a, 3)); /* a acquired: {0, 2} */
    fill_cache(a, 1);
    m2c_cache *b = create_or_die(&C);
    EXPECT_OK(m2c_slot_acquire(b, &s)); /* b acquired: {0} */
    EXPECT_OK(m2c_slot_acquire(b, &s));
    EXPECT_OK(m2c_slot_acquire(b, &s));
    EXPECT_OK(m2c_slot_release(b, 2)); /* b acquired: {0, 1} */
    fill_cache(b, 2);
    snapshot sa = take_snapshot(a);

    EXPECT_OK(m2c_save_file(a, path));
    EXPECT_NO_TEMP_FILES(dir);
    CHECK(count_entries(dir, NULL) == 1);
    EXPECT_UNCHANGED(a, &sa);

    /* The layout, from C. */
    size_t len = 0;
    unsigned char *img = read_whole_file(path, &len);
    const size_t table = 16 * (size_t)C.num_slots;
    CHECK(len == 64 + table + sa.len + 8);
    CHECK(memcmp(img, "M2CCACHE", 8) == 0);
    CHECK(le32(img + 8) == 1);
    CHECK(le32(img + 12) == 64);
    const uint32_t fp[10] = {C.num_layers, C.intermediate_size, C.num_heads, C.head_dim,
                             C.state_size, C.n_groups, C.conv_kernel_size, C.conv_width,
                             C.conv_dtype, C.ssm_dtype};
    for (int i = 0; i < 10; i++) CHECK(le32(img + 16 + 4 * i) == fp[i]);
    CHECK(le32(img + 56) == C.num_slots);
    CHECK(le32(img + 60) == 0);
    for (uint32_t k = 0; k < C.num_slots; k++) {
        CHECK(le64(img + 64 + 16 * k) == sa.positions[k]);
        CHECK(le64(img + 64 + 16 * k + 8) == ((k == 0 || k == 2) ? 1u : 0u));
    }
    CHECK(memcmp(img + 64 + table, sa.bytes, sa.len) == 0);
    CHECK(le64(img + len - 8) == xxh64(img, len - 8));

    /* Load into b: everything of a, and the file is only read. */
    EXPECT_OK(m2c_load_file(b, path));
    EXPECT_NO_TEMP_FILES(dir);
    EXPECT_SNAPSHOT(b, &sa);
    CHECK(slots_in_use_or_die(b) == 2);
    {
        size_t len2 = 0;
        unsigned char *img2 = read_whole_file(path, &len2);
        CHECK(len2 == len && memcmp(img, img2, len) == 0);
        free(img2);
    }
    /* Into a cache nobody has touched yet, and into a itself. */
    m2c_cache *fresh = create_or_die(&C);
    EXPECT_OK(m2c_load_file(fresh, path));
    EXPECT_SNAPSHOT(fresh, &sa);
    EXPECT_OK(m2c_load_file(a, path));
    EXPECT_SNAPSHOT(a, &sa);

    /* A relative path (the working directory as the target's directory). */
    {
        char cwd[4096];
        CHECK(getcwd(cwd, sizeof cwd) != NULL);
        CHECK(chdir(dir) == 0);
        EXPECT_OK(m2c_save_file(b, "relative.m2c"));
        EXPECT_NO_TEMP_FILES(".");
        size_t len3 = 0;
        unsigned char *img3 = read_whole_file("relative.m2c", &len3);
        CHECK(len3 == len && memcmp(img, img3, len) == 0);
        free(img3);
        CHECK(chdir(cwd) == 0);
    }
    CHECK(count_entries(dir, NULL) == 2);

    /* The acquired sets (destructive probe, last). */
    CHECK(acquired_mask_destructive(b) == 0x5u);
    CHECK(acquired_mask_destructive(fresh) == 0x5u);
    CHECK(acquired_mask_destructive(a) == 0x5u);

    free(img);
    free_snapshot(&sa);
    m2c_destroy(fresh);
    m2c_destroy(b);
    m2c_destroy(a);
    free(path);
    remove_temp_dir(dir);
    printf("cache_file_roundtrip: ok\n");
    return 0;
}
