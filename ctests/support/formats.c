/* The bodies of the helpers declared in ../formats.h, compiled once into the
 * m2c_test_support library that every C test links. */
#include "../formats.h"

uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t xxh_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t xxh_round(uint64_t acc, uint64_t input) {
    acc += input * XXH_P2;
    acc = xxh_rotl(acc, 31);
    return acc * XXH_P1;
}

uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * XXH_P1 + XXH_P4;
}

uint64_t xxh64(const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    const unsigned char *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = XXH_P1 + XXH_P2, v2 = XXH_P2, v3 = 0, v4 = 0 - XXH_P1;
        const unsigned char *limit = end - 32;
        do {
            v1 = xxh_round(v1, le64(p));
            v2 = xxh_round(v2, le64(p + 8));
            v3 = xxh_round(v3, le64(p + 16));
            v4 = xxh_round(v4, le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = xxh_rotl(v1, 1) + xxh_rotl(v2, 7) + xxh_rotl(v3, 12) + xxh_rotl(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = XXH_P5;
    }
    h += (uint64_t)len;
    while (end - p >= 8) {
        h ^= xxh_round(0, le64(p));
        h = xxh_rotl(h, 27) * XXH_P1 + XXH_P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)le32(p) * XXH_P1;
        h = xxh_rotl(h, 23) * XXH_P2 + XXH_P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * XXH_P5;
        h = xxh_rotl(h, 11) * XXH_P1;
        p++;
    }
    h ^= h >> 33;
    h *= XXH_P2;
    h ^= h >> 29;
    h *= XXH_P3;
    h ^= h >> 32;
    return h;
}

void xxh64_self_test(void) {
    CHECK(xxh64("", 0) == 0xEF46DB3751D8E999ull);
    CHECK(xxh64("a", 1) == 0xD24EC4F1A98C6E5Bull);
    CHECK(xxh64("abc", 3) == 0x44BC2CF5AD770999ull);
}

void reseal(unsigned char *img, size_t len) {
    CHECK(len >= 8);
    put_le64(img + len - 8, xxh64(img, len - 8));
}

char *m2c_temp_dirs[M2C_MAX_TEMP_DIRS];
int m2c_temp_dir_count;
char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *p = (char *)malloc(n);
    CHECK(p != NULL);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *p = path_join(dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (remove_tree(p) != 0) rc = -1;
        } else if (unlink(p) != 0) {
            rc = -1;
        }
        free(p);
    }
    closedir(d);
    if (rmdir(dir) != 0) rc = -1;
    return rc;
}

void remove_temp_dirs_at_exit(void) {
    for (int i = 0; i < m2c_temp_dir_count; i++) {
        if (m2c_temp_dirs[i] != NULL) {
            remove_tree(m2c_temp_dirs[i]);
            free(m2c_temp_dirs[i]);
            m2c_temp_dirs[i] = NULL;
        }
    }
}

const char *make_temp_dir(void) {
    CHECK(m2c_temp_dir_count < M2C_MAX_TEMP_DIRS);
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') base = "/tmp";
    char *tmpl = path_join(base, "m2c-ctest-XXXXXX");
    if (mkdtemp(tmpl) == NULL) {
        fprintf(stderr, "mkdtemp(%s): %s\n", tmpl, strerror(errno));
        exit(1);
    }
    if (m2c_temp_dir_count == 0) atexit(remove_temp_dirs_at_exit);
    m2c_temp_dirs[m2c_temp_dir_count++] = tmpl;
    return tmpl;
}

void remove_temp_dir(const char *dir) {
    for (int i = 0; i < m2c_temp_dir_count; i++) {
        if (m2c_temp_dirs[i] == dir) {
            CHECK(remove_tree(dir) == 0);
            free(m2c_temp_dirs[i]);
            m2c_temp_dirs[i] = NULL;
            return;
        }
    }
    CHECK(!"remove_temp_dir: not a directory from make_temp_dir");
}

size_t count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (needle == NULL || strstr(e->d_name, needle) != NULL) n++;
    }
    closedir(d);
    return n;
}

int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

unsigned char *read_whole_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "fopen(%s): %s\n", path, strerror(errno));
        exit(1);
    }
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    CHECK(n >= 0);
    CHECK(fseek(f, 0, SEEK_SET) == 0);
    unsigned char *buf = (unsigned char *)malloc((size_t)n + 1);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    CHECK(fclose(f) == 0);
    *len = (size_t)n;
    return buf;
}

void write_whole_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "fopen(%s): %s\n", path, strerror(errno));
        exit(1);
    }
    CHECK(len == 0 || fwrite(data, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}
