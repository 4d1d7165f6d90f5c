"""The seed's decode step in JAX, with the state living in m2c.

A Mamba2 mixer's decode step is written twice:

* ``jax_step``: pure JAX, the way the seed (a JAX cache class) does it: the
  conv window and SSM state are JAX arrays, rolled and rewritten each token;
* ``m2c_step``: the same projections and gated norm in JAX, while m2c holds
  the conv window and SSM state and runs the conv and SSM steps on them. JAX
  reads the state m2c holds through zero-copy DLPack views.

Both run a few tokens from the same start and must agree to float32
rounding. Run: ``python examples/jax_decode.py`` (needs jax and m2c).
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import m2c

jax.config.update("jax_platforms", "cpu")


class Shape(NamedTuple):
    hidden: int
    heads: int
    head_dim: int
    state: int
    groups: int
    kernel: int

    def __getitem__(self, k):  # s["inner"] etc., static under jit
        if isinstance(k, str):
            if k == "inner":
                return self.heads * self.head_dim
            if k == "conv_dim":
                return self.heads * self.head_dim + 2 * self.groups * self.state
            return getattr(self, k)
        return tuple.__getitem__(self, k)


def make_model(seed, hidden=64, heads=8, head_dim=16, state=16, groups=2, kernel=4):
    k = jax.random.split(jax.random.PRNGKey(seed), 8)
    inner = heads * head_dim
    conv_dim = inner + 2 * groups * state
    return Shape(hidden, heads, head_dim, state, groups, kernel), dict(
        in_proj=jax.random.normal(k[0], (hidden, inner + conv_dim + heads)) * 0.1,
        conv_w=jax.random.normal(k[1], (conv_dim, kernel)) * 0.4,
        conv_b=jax.random.normal(k[2], (conv_dim,)) * 0.1,
        A=-jnp.exp(jax.random.normal(k[3], (heads,)) * 0.5),
        D=jax.random.normal(k[4], (heads,)),
        dt_bias=jax.random.normal(k[5], (heads,)) * 0.1,
        norm_w=1 + 0.1 * jax.random.normal(k[6], (inner,)),
        out_proj=jax.random.normal(k[7], (inner, hidden)) * 0.1,
    )


def split(s, m, u):
    proj = u @ m["in_proj"]
    return jnp.split(proj, [s["inner"], s["inner"] + s["conv_dim"]], axis=-1)  # gate, xBC, dt


def finish(s, m, y, gate):
    g = y * jax.nn.silu(gate)
    gs = g.reshape(g.shape[0], s["groups"], -1)
    gs = gs * jax.lax.rsqrt(jnp.mean(gs * gs, -1, keepdims=True) + 1e-5)
    return (gs.reshape(g.shape) * m["norm_w"]) @ m["out_proj"]


@partial(jax.jit, static_argnums=0)
def jax_step(s, m, conv_state, ssm_state, u):
    """The seed's way: roll the window, rewrite the whole state."""
    gate, xbc, dt = split(s, m, u)
    conv_state = jnp.roll(conv_state, -1, axis=-1).at[..., -1].set(xbc)
    xbc = jax.nn.silu(jnp.sum(conv_state * m["conv_w"], -1) + m["conv_b"])
    x, B, C = jnp.split(xbc, [s["inner"], s["inner"] + s["groups"] * s["state"]], axis=-1)
    b = u.shape[0]
    x = x.reshape(b, s["heads"], s["head_dim"])
    rep = s["heads"] // s["groups"]
    B = jnp.repeat(B.reshape(b, s["groups"], s["state"]), rep, axis=1)
    C = jnp.repeat(C.reshape(b, s["groups"], s["state"]), rep, axis=1)
    dt = jax.nn.softplus(dt + m["dt_bias"])
    decay = jnp.exp(dt * m["A"])[..., None, None]
    ssm_state = ssm_state * decay + (dt[..., None, None] * x[..., None]) * B[:, :, None, :]
    y = jnp.einsum("bhpn,bhn->bhp", ssm_state, C) + m["D"][:, None] * x
    return conv_state, ssm_state, finish(s, m, y.reshape(b, -1), gate)


def m2c_step(s, m, cache, slots, u):
    """m2c holds the state and steps it; JAX does the projections."""
    gate, xbc, dt = split(s, m, u)
    b = u.shape[0]
    w, bias = np.asarray(m["conv_w"], np.float32), np.asarray(m["conv_b"], np.float32)
    # JAX arrays go in as they are (buffer protocol / DLPack, no copy).
    out = cache.conv_step(0, xbc, w, bias, slots=slots)
    x, B, C = np.split(out, [s["inner"], s["inner"] + s["groups"] * s["state"]], axis=-1)
    y = cache.ssm_step(
        0,
        np.ascontiguousarray(x).reshape(b, s["heads"], s["head_dim"]),
        dt,
        np.ascontiguousarray(B).reshape(b, s["groups"], s["state"]),
        np.ascontiguousarray(C).reshape(b, s["groups"], s["state"]),
        np.asarray(m["A"], np.float32),
        D=np.asarray(m["D"], np.float32),
        dt_bias=np.asarray(m["dt_bias"], np.float32),
        slots=slots,
    )
    cache.advance(slots, 1)
    return finish(s, m, jnp.asarray(y), gate)


def main(tokens=8, batch=3, seed=0, verbose=True):
    s, m = make_model(seed)
    cache = m2c.Cache(
        num_layers=1,
        num_slots=batch + 1,
        intermediate_size=s["inner"],
        num_heads=s["heads"],
        head_dim=s["head_dim"],
        state_size=s["state"],
        n_groups=s["groups"],
        conv_kernel_size=s["kernel"],
        conv_width=s["kernel"],
        conv_dtype="f32",
        ssm_dtype="f32",
    )
    slots = [3, 0, 2][:batch]
    # The state JAX sees through m2c's views: zero-copy, updated in place.
    ssm_view = jax.dlpack.from_dlpack(cache.ssm_view(0))
    conv = jnp.zeros((batch, s["conv_dim"], s["kernel"]))
    ssm = jnp.zeros((batch, s["heads"], s["head_dim"], s["state"]))
    us = jax.random.normal(jax.random.PRNGKey(seed + 1), (tokens, batch, s["hidden"]))
    worst = 0.0
    for t in range(tokens):
        conv, ssm, ref = jax_step(s, m, conv, ssm, us[t])
        got = m2c_step(s, m, cache, slots, us[t])
        worst = max(worst, float(jnp.max(jnp.abs(got - ref))))
        # m2c's state, read by JAX through the view, is the seed's state.
        held = ssm_view[jnp.array(slots)]
        np.testing.assert_allclose(np.asarray(held), np.asarray(ssm), rtol=1e-5, atol=1e-5)
    if verbose:
        print(f"{tokens} tokens x {batch} sequences: max |m2c - jax| = {worst:.2e}; positions {[cache.position(x) for x in slots]}")
    return worst


if __name__ == "__main__":
    assert main() < 1e-4
