/*
 * Proves: the loaded library's ABI and version agree with the header;
 * every status code has static text and unknown codes still get text; the
 * last error is per thread, "" on a fresh thread, and never NULL.
 */
#include "common.h"
#include "m2c_status_codes.h"

#include <pthread.h>

/* What m2c_last_error() returned on a fresh thread, copied before the thread
 * exits (the string lives only until then). */
static char fresh_thread_error[256];
static int fresh_thread_was_null;

static void *fresh_thread(void *arg) {
    (void)arg;
    const char *e = m2c_last_error();
    fresh_thread_was_null = (e == NULL);
    snprintf(fresh_thread_error, sizeof fresh_thread_error, "%s", e ? e : "(NULL)");
    /* A failure on this thread must not show up on the main thread. */
    m2c_cache *out = NULL;
    if (m2c_create(NULL, &out) != M2C_STATUS_NULL_ARG) return (void *)1;
    if (strstr(m2c_last_error(), "m2c_create") == NULL) return (void *)1;
    return NULL;
}

int main(void) {
    /* ABI and version. */
    CHECK(m2c_abi_version() == M2C_ABI_VERSION);
    CHECK(m2c_version() != NULL);
    CHECK(strcmp(m2c_version(), M2C_VERSION_STRING) == 0);
    char v[64];
    snprintf(v, sizeof v, "%d.%d.%d", M2C_VERSION_MAJOR, M2C_VERSION_MINOR, M2C_VERSION_PATCH);
    CHECK(strcmp(v, M2C_VERSION_STRING) == 0);

    /* Status texts: every code the header defines (the list is generated
     * from m2c.h at configure time) has its own non-empty static text. */
    const char *unknown = m2c_status_str(12345);
    CHECK(unknown != NULL);
    CHECK(strcmp(unknown, "unknown status code") == 0);
#define M2C_STATUS_ENTRY(name) {name, #name},
    static const struct {
        m2c_status code;
        const char *name;
    } defined[] = {M2C_ALL_STATUS_CODES(M2C_STATUS_ENTRY)};
    const size_t ndefined = sizeof defined / sizeof defined[0];
    CHECK(ndefined >= 11); /* OK .. UNSUPPORTED at least */
    m2c_status max_code = 0;
    for (size_t i = 0; i < ndefined; i++) {
        const char *s = m2c_status_str(defined[i].code);
        if (s == NULL || s[0] == '\0' || strcmp(s, unknown) == 0) {
            fprintf(stderr, "%s (%d) has no text: \"%s\"\n", defined[i].name,
                    (int)defined[i].code, s ? s : "(NULL)");
            return 1;
        }
        /* Static text: the same pointer every time. */
        CHECK(m2c_status_str(defined[i].code) == s);
        for (size_t j = 0; j < i; j++) {
            CHECK(defined[i].code != defined[j].code);
            CHECK(strcmp(s, m2c_status_str(defined[j].code)) != 0);
        }
        if (defined[i].code > max_code) max_code = defined[i].code;
    }
    CHECK(M2C_STATUS_OK == 0);
    const m2c_status unknowns[] = {-1, -100, max_code + 1, 12345, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknowns / sizeof unknowns[0]; i++) {
        const char *s = m2c_status_str(unknowns[i]);
        CHECK(s != NULL);
        CHECK(strcmp(s, "unknown status code") == 0);
    }

    /* Last error: "" before any failure, never NULL. */
    CHECK(m2c_last_error() != NULL);
    CHECK(strcmp(m2c_last_error(), "") == 0);

    /* A failure sets it, naming the function; a success does not clear it. */
    m2c_cache *out = NULL;
    EXPECT_STATUS(m2c_create(NULL, &out), M2C_STATUS_NULL_ARG);
    CHECK(out == NULL);
    EXPECT_ERROR_MENTIONS("m2c_create");
    EXPECT_ERROR_MENTIONS("cfg");
    char main_error[256];
    snprintf(main_error, sizeof main_error, "%s", m2c_last_error());
    m2c_config cfg;
    m2c_config_init(&cfg);
    uint64_t bytes = 0;
    EXPECT_OK(m2c_config_bytes(&cfg, &bytes));
    CHECK(strcmp(m2c_last_error(), main_error) == 0);

    /* A fresh thread sees "" and its failure stays on that thread. */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fresh_thread, NULL) == 0);
    void *ret = (void *)1;
    CHECK(pthread_join(t, &ret) == 0);
    CHECK(ret == NULL);
    CHECK(!fresh_thread_was_null);
    CHECK(strcmp(fresh_thread_error, "") == 0);
    CHECK(strcmp(m2c_last_error(), main_error) == 0);

    printf("version %s, ABI %u: ok\n", m2c_version(), (unsigned)m2c_abi_version());
    return 0;
}
