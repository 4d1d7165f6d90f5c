/*
 * Helpers for the C tests of the snapshot and cache-file formats
 * (docs/FORMATS.md): an independent XXH64 (seed 0), little-endian field
 * access, temporary directories that are removed at exit, and whole-file
 * I/O. Include after common.h.
 */
#ifndef M2C_CTESTS_FORMATS_H
#define M2C_CTESTS_FORMATS_H

#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* XXH64, seed 0 (Yann Collet's xxHash, written from the specification) */
/* ------------------------------------------------------------------ */

#define XXH_P1 0x9E3779B185EBCA87ull
#define XXH_P2 0xC2B2AE3D27D4EB4Full
#define XXH_P3 0x165667B19E3779F9ull
#define XXH_P4 0x85EBCA77C2B2AE63ull
#define XXH_P5 0x27D4EB2F165667C5ull

uint64_t le64(const unsigned char *p);

uint32_t le32(const unsigned char *p);

void put_le64(unsigned char *p, uint64_t v);

void put_le32(unsigned char *p, uint32_t v);

uint64_t xxh_rotl(uint64_t x, int r);

uint64_t xxh_round(uint64_t acc, uint64_t input);

uint64_t xxh_merge(uint64_t acc, uint64_t val);

uint64_t xxh64(const void *data, size_t len);

/* Checks the reference against the published test vectors. */
void xxh64_self_test(void);

/* Rewrites the trailing checksum of a snapshot or file image of len bytes
 * (after a deliberate edit that must pass the checksum check). */
void reseal(unsigned char *img, size_t len);

/* ------------------------------------------------------------------ */
/* Temporary directories and files                                     */
/* ------------------------------------------------------------------ */

#define M2C_MAX_TEMP_DIRS 8
extern char *m2c_temp_dirs[M2C_MAX_TEMP_DIRS];
extern int m2c_temp_dir_count;

char *path_join(const char *dir, const char *name);

/* Removes dir and everything in it (files and directories, recursively).
 * Returns 0 on success. */
int remove_tree(const char *dir);

void remove_temp_dirs_at_exit(void);

/* A fresh empty directory from mkdtemp under $TMPDIR (or /tmp). It is
 * removed at exit, also when a check fails; remove_temp_dir removes it
 * earlier and checks that this worked. */
const char *make_temp_dir(void);

void remove_temp_dir(const char *dir);

/* Entries of dir (without . and ..) whose name contains needle (all
 * entries when needle is NULL). */
size_t count_entries(const char *dir, const char *needle);

/* EXPECT_NO_TEMP_FILES(dir): no ".m2c-tmp" file is left in dir. */
#define EXPECT_NO_TEMP_FILES(dir)                                                         \
    do {                                                                                  \
        size_t left_ = count_entries((dir), ".m2c-tmp");                                 \
        if (left_ != 0) {                                                                 \
            fprintf(stderr, "%s:%d: %zu .m2c-tmp file(s) left in %s\n", __FILE__, __LINE__, \
                    left_, (dir));                                                        \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

int file_exists(const char *path);

/* The whole file; *len receives its size. Free with free(). */
unsigned char *read_whole_file(const char *path, size_t *len);

void write_whole_file(const char *path, const void *data, size_t len);

#endif /* M2C_CTESTS_FORMATS_H */
