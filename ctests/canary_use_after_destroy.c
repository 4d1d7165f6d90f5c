/*
 * A deliberate bug: reads a view's storage after m2c_destroy freed it.
 * Registered only in the ASan and valgrind trees, where the test passes
 * only if the checker reports the error. It proves the checker really sees
 * memory that the Rust library allocates and frees, so a clean run of the
 * other tests means something.
 */
#include "common.h"

int main(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    m2c_tensor v;
    EXPECT_OK(m2c_ssm_view(cache, 0, &v));
    m2c_destroy(cache);
    volatile float *dangling = (volatile float *)v.data;
    float f = dangling[1]; /* use after free */
    printf("read %g after destroy\n", (double)f);
    return 0;
}
