"""Shared helpers: small configs, random parameters, an f64 reference."""

import numpy as np
import pytest

import m2c

H, P, N, G, K = 4, 8, 8, 2, 4  # heads, head_dim, state_size, groups, conv kernel
I = H * P
CD = I + 2 * G * N


def small_config(**kw):
    fields = dict(
        num_layers=2,
        num_slots=4,
        intermediate_size=I,
        num_heads=H,
        head_dim=P,
        state_size=N,
        n_groups=G,
        conv_kernel_size=K,
        conv_width=K,
        conv_dtype="f32",
        ssm_dtype="f32",
    )
    fields.update(kw)
    return m2c.Config(**fields)


@pytest.fixture
def cache():
    c = m2c.Cache(small_config())
    yield c
    c.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


class Params:
    """One layer's conv and SSM parameters."""

    def __init__(self, rng, n_groups=G):
        cd = I + 2 * n_groups * N
        self.w = f32(rng, cd, K) * 0.5
        self.b = f32(rng, cd) * 0.1
        self.A = -np.exp(f32(rng, H) * 0.5).astype(np.float32)
        self.D = f32(rng, H)
        self.dt_bias = f32(rng, H) * 0.1


def ssm_ref(h, x, dt, B, C, A, D, dt_bias, z=None, dt_limit=None):
    """One f64 step for one slot: h [H,P,N], x [H,P], dt [H], B/C [G,N]."""
    h = h.astype(np.float64)
    v = dt.astype(np.float64) + dt_bias
    v = np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20))))
    if dt_limit is not None:
        v = np.clip(v, *dt_limit)
    g = B.shape[0]
    y = np.empty((H, P))
    for hd in range(H):
        gi = hd // (H // g)
        decay = np.exp(v[hd] * A[hd])
        h[hd] = h[hd] * decay + v[hd] * np.outer(x[hd], B[gi])
        y[hd] = h[hd] @ C[gi].astype(np.float64) + D[hd] * x[hd]
        if z is not None:
            zz = z[hd].astype(np.float64)
            y[hd] *= zz / (1 + np.exp(-zz))
    return h, y


def conv_ref(window, x, w, b, width):
    """One f64 conv step for one slot: window [CD, width] oldest first."""
    full = np.concatenate([window.astype(np.float64), x[:, None]], axis=1)
    if width == w.shape[1]:
        full = full[:, 1:]
    out = (full[:, -w.shape[1] :] * w).sum(1) + b
    return full[:, -width:], out / (1 + np.exp(-out))


def pytest_collection_modifyitems(items):
    # JAX starts threads when imported; the fork test must run before that.
    items.sort(key=lambda item: item.module.__name__.endswith("test_jax"))
