"""JAX: zero-copy over views (a JAX array over a view sees m2c's writes),
JAX arrays as inputs, and the decode example. The test command installs
jax and sets M2C_REQUIRE_JAX=1, so a missing jax fails there instead of
skipping."""

import os
import pathlib
import sys

import numpy as np
import pytest

import m2c
from conftest import CD, G, H, N, P, Params, f32, small_config

if os.environ.get("M2C_REQUIRE_JAX") == "1":
    import jax
else:
    jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_platforms", "cpu")


def test_a_jax_array_over_a_view_sees_m2c_writes(rng):
    c = m2c.Cache(small_config())
    v = c.ssm_view(0)
    arr = jax.dlpack.from_dlpack(v)
    assert arr.unsafe_buffer_pointer() == v.data_ptr and arr.shape == (4, H, P, N)
    assert not np.asarray(arr).any()
    p = Params(rng)
    c.ssm_step(0, jnp.asarray(f32(rng, 1, H, P)), jnp.asarray(f32(rng, 1, H)), f32(rng, 1, G, N), f32(rng, 1, G, N), p.A, slots=[1])
    held = c.read_ssm(0)
    assert held[1].any() and np.array_equal(np.asarray(arr), held)  # the "immutable" array changed
    assert float(jnp.sum(arr)) == pytest.approx(float(held.sum()), rel=1e-5)


def test_jax_inputs_equal_numpy_inputs(rng):
    a, b = m2c.Cache(small_config()), m2c.Cache(small_config())
    p = Params(rng)
    x = f32(rng, 2, CD)
    assert np.array_equal(a.conv_step(0, jnp.asarray(x), jnp.asarray(p.w), jnp.asarray(p.b)), b.conv_step(0, x, p.w, p.b))
    xb = jnp.asarray(x).astype(jnp.bfloat16)  # no buffer format: DLPack
    a.update_conv(1, xb)
    assert np.array_equal(a.read_conv(1)[:2, :, -1], np.asarray(xb.astype(jnp.float32)))
    with pytest.raises(ValueError, match="writable"):
        a.conv_step(0, x, p.w, p.b, out=jnp.zeros((2, CD)))  # JAX arrays are immutable: refused as outputs


def test_the_jax_decode_example_agrees():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
    import jax_decode

    assert jax_decode.main(tokens=6, batch=3, verbose=False) < 1e-4
