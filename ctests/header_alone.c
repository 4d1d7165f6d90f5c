/* Proves: m2c.h compiles on its own as the first include of a C11 file
 * (it brings its own stddef.h / stdint.h) under -Wpedantic -Werror. */
#include "m2c.h"

int main(void) {
    m2c_config cfg;
    m2c_tensor view;
    size_t n = 0;
    uint64_t bytes = 0;
    m2c_config_init(&cfg);
    view.ndim = 0;
    (void)view;
    if (m2c_config_bytes(&cfg, &bytes) != M2C_STATUS_OK || bytes == 0) return 1;
    if (m2c_abi_version() != M2C_ABI_VERSION) return 1;
    return (int)n;
}
