/*
 * Proves the refusals of m2c_save_file and m2c_load_file that come before
 * any format check, each leaving the cache bit-for-bit unchanged (states,
 * positions, in-use count, acquired set) and no stray or ".m2c-tmp" file:
 * loading a missing file is M2C_STATUS_IO with the OS error text
 * (strerror(ENOENT)) in m2c_last_error(); saving into a directory that
 * does not exist is M2C_STATUS_IO with the OS text, and creates nothing;
 * saving onto a path that is a directory is M2C_STATUS_IO and removes its
 * temporary file; an empty path is M2C_STATUS_INVALID_ARG; a NULL path or
 * cache is M2C_STATUS_NULL_ARG.
 */
#include "formats.h"

static m2c_cache *cache;
static snapshot before;
static const char *dir;

static void expect_cache_and_dir(size_t entries) {
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == 1);
    EXPECT_NO_TEMP_FILES(dir);
    CHECK(count_entries(dir, NULL) == entries);
}

int main(void) {
    dir = make_temp_dir();
    m2c_config C = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    cache = create_or_die(&C);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(cache, &s));
    EXPECT_OK(m2c_slot_acquire(cache, &s));
    EXPECT_OK(m2c_slot_release(cache, 0)); /* acquired: {1} */
    fill_cache(cache, 5);
    before = take_snapshot(cache);
    const char *enoent = strerror(ENOENT);

    /* A missing file. */
    char *missing = path_join(dir, "missing.m2c");
    EXPECT_FAIL(m2c_load_file(cache, missing), M2C_STATUS_IO, "m2c_load_file", enoent);
    EXPECT_ERROR_MENTIONS("missing.m2c");
    expect_cache_and_dir(0);

    /* A directory that does not exist. */
    char *nodir = path_join(dir, "no-such-dir");
    char *in_nodir = path_join(nodir, "x.m2c");
    EXPECT_FAIL(m2c_save_file(cache, in_nodir), M2C_STATUS_IO, "m2c_save_file", enoent);
    CHECK(!file_exists(nodir));
    expect_cache_and_dir(0);
    EXPECT_FAIL(m2c_load_file(cache, in_nodir), M2C_STATUS_IO, "m2c_load_file", enoent);
    expect_cache_and_dir(0);

    /* The target is a directory: the rename fails, the temporary goes. */
    char *sub = path_join(dir, "sub");
    CHECK(mkdir(sub, 0700) == 0);
    EXPECT_FAIL(m2c_save_file(cache, sub), M2C_STATUS_IO, "m2c_save_file", "sub");
    expect_cache_and_dir(1);
    CHECK(count_entries(sub, NULL) == 0);

    /* Empty and NULL paths, NULL caches. */
    EXPECT_FAIL(m2c_save_file(cache, ""), M2C_STATUS_INVALID_ARG, "m2c_save_file", "path");
    EXPECT_FAIL(m2c_load_file(cache, ""), M2C_STATUS_INVALID_ARG, "m2c_load_file", "path");
    EXPECT_FAIL(m2c_save_file(cache, NULL), M2C_STATUS_NULL_ARG, "m2c_save_file", "path");
    EXPECT_FAIL(m2c_load_file(cache, NULL), M2C_STATUS_NULL_ARG, "m2c_load_file", "path");
    char *target = path_join(dir, "t.m2c");
    EXPECT_FAIL(m2c_save_file(NULL, target), M2C_STATUS_NULL_ARG, "m2c_save_file", "cache");
    EXPECT_FAIL(m2c_load_file(NULL, target), M2C_STATUS_NULL_ARG, "m2c_load_file", "cache");
    CHECK(!file_exists(target));
    expect_cache_and_dir(1);

    /* The acquired set is still {1}; a good save still works. */
    EXPECT_OK(m2c_save_file(cache, target));
    expect_cache_and_dir(2);
    CHECK(acquired_mask_destructive(cache) == 0x2u);

    free(target);
    free(sub);
    free(in_nodir);
    free(nodir);
    free(missing);
    free_snapshot(&before);
    m2c_destroy(cache);
    remove_temp_dir(dir);
    printf("cache_file_io_errors: ok\n");
    return 0;
}
