/*
 * Proves, for m2c_save_file / m2c_load_file and the paths a host may give
 * them (RELIABILITY-FINDINGS 8, 9, 12, 13, 14, 15):
 * - a FIFO is refused with INVALID_ARG at once (no writer is waited for),
 *   as is a directory;
 * - a 1 GiB sparse file that starts with the right magic is refused as
 *   CORRUPT naming both sizes, without being read;
 * - stale temporary files of a dead process with our pid do not fail a save;
 * - an overwritten file keeps its mode (0600 stays 0600);
 * - a symbolic link to a cache file stays a link, and its target is saved;
 * - a 250-byte file name can be saved and loaded;
 * - "dir/." names no file: INVALID_ARG, like ".".
 */
#include "common.h"
#include "formats.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    fill_cache(cache, 3);
    const char *dir = make_temp_dir();
    char *file = path_join(dir, "c.m2c");
    EXPECT_OK(m2c_save_file(cache, file));
    snapshot saved = take_snapshot(cache);

    /* FIFO and directory. */
    char *fifo = path_join(dir, "fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(60); /* a blocking open would hang here */
    EXPECT_FAIL(m2c_load_file(cache, fifo), M2C_STATUS_INVALID_ARG, "m2c_load_file", "not a regular file");
    EXPECT_FAIL(m2c_load_file(cache, dir), M2C_STATUS_INVALID_ARG, "m2c_load_file", "not a regular file");
    alarm(0);

    /* A huge sparse file with the right magic. */
    char *big = path_join(dir, "big.m2c");
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, "M2CCACHE", 8) == 8);
    CHECK(ftruncate(fd, (off_t)1 << 30) == 0);
    CHECK(close(fd) == 0);
    EXPECT_FAIL(m2c_load_file(cache, big), M2C_STATUS_CORRUPT, "m2c_load_file", "1073741824 bytes");
    EXPECT_UNCHANGED(cache, &saved);

    /* Stale temporary files of "our" pid from a killed earlier life. */
    for (int n = 0; n < 8; n++) {
        char name[128];
        snprintf(name, sizeof name, ".c.m2c.m2c-tmp.%ld.%d", (long)getpid(), n);
        char *stale = path_join(dir, name);
        fd = open(stale, O_WRONLY | O_CREAT | O_EXCL, 0600);
        CHECK(fd >= 0);
        CHECK(close(fd) == 0);
        free(stale);
    }
    EXPECT_OK(m2c_save_file(cache, file));

    /* The mode of an overwritten file is kept. */
    CHECK(chmod(file, 0600) == 0);
    EXPECT_OK(m2c_save_file(cache, file));
    struct stat st;
    CHECK(stat(file, &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);

    /* A symbolic link stays a link; the file it names is saved. */
    char *link = path_join(dir, "link.m2c");
    CHECK(symlink(file, link) == 0);
    fill_cache(cache, 4);
    snapshot second = take_snapshot(cache);
    EXPECT_OK(m2c_save_file(cache, link));
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
    m2c_cache *other = create_or_die(&c);
    EXPECT_OK(m2c_load_file(other, file));
    EXPECT_UNCHANGED(other, &second);

    /* A 250-byte name. */
    char name[251];
    memset(name, 'n', 250);
    name[250] = '\0';
    char *longname = path_join(dir, name);
    EXPECT_OK(m2c_save_file(cache, longname));
    EXPECT_OK(m2c_load_file(other, longname));

    /* Paths that name no file. */
    char *dot = path_join(dir, ".");
    EXPECT_FAIL(m2c_save_file(cache, dot), M2C_STATUS_INVALID_ARG, "m2c_save_file", "names no file");
    EXPECT_FAIL(m2c_save_file(cache, "."), M2C_STATUS_INVALID_ARG, "m2c_save_file", "names no file");

    free_snapshot(&saved);
    free_snapshot(&second);
    free(file);
    free(fifo);
    free(big);
    free(link);
    free(longname);
    free(dot);
    m2c_destroy(other);
    m2c_destroy(cache);
    puts("ok");
    return 0;
}
