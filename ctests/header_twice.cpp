// Proves: m2c.h has an include guard (included twice here), compiles as
// C++17 with -Wall -Wextra -Wpedantic -Werror, declares its functions with
// C linkage, and its types have the sizes the ABI fixes.
#include "m2c.h"
#include "m2c.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

static_assert(sizeof(m2c_config) == 56, "m2c_config is 14 x 4 bytes");
static_assert(std::is_same<m2c_status, std::int32_t>::value, "m2c_status is int32_t");
static_assert(std::is_same<m2c_dtype, std::uint32_t>::value, "m2c_dtype is uint32_t");
static_assert(std::is_same<m2c_device, std::uint32_t>::value, "m2c_device is uint32_t");
static_assert(std::is_standard_layout<m2c_config>::value, "m2c_config is a C struct");
static_assert(offsetof(m2c_config, struct_size) == 0, "struct_size comes first");
static_assert(offsetof(m2c_config, device_index) == 52, "device_index is last");
static_assert(sizeof(m2c_tensor) == 88, "m2c_tensor layout");
static_assert(M2C_STATUS_OK == 0, "OK is 0");
static_assert(M2C_STATUS_UNSUPPORTED == 10, "status codes are fixed");

int main() {
    if (m2c_abi_version() != M2C_ABI_VERSION) return 1;
    m2c_config cfg;
    m2c_config_init(&cfg);
    cfg.num_layers = 2;
    m2c_cache *cache = nullptr;
    m2c_status st = m2c_create(&cfg, &cache);
    if (st != M2C_STATUS_OK || cache == nullptr) {
        std::fprintf(stderr, "m2c_create: %s: %s\n", m2c_status_str(st), m2c_last_error());
        return 1;
    }
    // const-correct queries take a const handle.
    const m2c_cache *ro = cache;
    std::uint64_t pos = 1;
    if (m2c_position(ro, 0, &pos) != M2C_STATUS_OK || pos != 0) return 1;
    m2c_destroy(cache);
    m2c_destroy(nullptr);
    if (std::strcmp(m2c_status_str(M2C_STATUS_OK), "ok") != 0) return 1;
    if (std::strlen(m2c_status_str(M2C_STATUS_OUT_OF_MEMORY)) == 0) return 1;
    if (m2c_create(nullptr, &cache) != M2C_STATUS_NULL_ARG) return 1;
    std::printf("C++: %s ok\n", m2c_version());
    return 0;
}
