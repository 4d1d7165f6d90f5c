/* The README's example: create a cache, push a decode step, read it back. */
#include <stdio.h>
#include <stdlib.h>
#include "m2c.h"

int main(void) {
    if (m2c_abi_version() != M2C_ABI_VERSION) return 1;  /* header and library agree */
    m2c_config cfg;
    m2c_config_init(&cfg);               /* Mamba2-130m shapes, conv bf16, ssm f32 */
    cfg.num_slots = 4;
    m2c_cache *cache = NULL;
    m2c_status s = m2c_create(&cfg, &cache);
    if (s != M2C_STATUS_OK) { fprintf(stderr, "%s: %s\n", m2c_status_str(s), m2c_last_error()); return 1; }

    size_t conv_dim = cfg.intermediate_size + 2 * cfg.n_groups * cfg.state_size;
    int32_t slots[2] = {2, -1};          /* row 0 -> slot 2; row 1 is padding */
    float *x = calloc(2 * conv_dim, sizeof *x);
    float *win = calloc(2 * conv_dim * cfg.conv_width, sizeof *win);
    x[0] = 1.5f;                         /* channel 0 of slot 2 gets a new input */
    s = m2c_update_conv(cache, 0, slots, 2, x, M2C_DTYPE_F32, 2 * conv_dim);
    if (s == M2C_STATUS_OK) s = m2c_advance(cache, slots, 2, 1);
    if (s == M2C_STATUS_OK)
        s = m2c_read_conv(cache, 0, slots, 2, win, M2C_DTYPE_F32, 2 * conv_dim * cfg.conv_width);
    if (s != M2C_STATUS_OK) fprintf(stderr, "%s\n", m2c_last_error());
    else printf("newest column of channel 0: %g\n", win[cfg.conv_width - 1]);  /* 1.5 */

    free(x); free(win);
    m2c_destroy(cache);
    return s == M2C_STATUS_OK ? 0 : 1;
}
