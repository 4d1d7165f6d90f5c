"""What an engine author would otherwise write: the Mamba2 decode-state work
(conv update + selective-state update over every layer, one token per slot)
as one jitted JAX step with donated buffers, and the same in numpy, timed on
this machine so m2c-bench's numbers have a same-machine baseline.

Usage: python3 tools/baselines/jax_baseline.py [--slots 8] [--layers 64] [--state f32|bf16] [--iters 7] [--conv-only]
       [--update-conv [--conv f32|bf16]]
(--conv-only: the conv update alone over every layer, jitted the same way,
the figure m2c's conv_step is compared with; --update-conv: the window
update alone, EasyDeL's update_conv_state, the figure m2c_update_conv is
compared with.)
Shapes: Mamba2-2.7B (intermediate 5120, 80 heads x 64, state 128, 1 group,
kernel 4, conv window K, conv state bf16), f32 activations.
Prints the median ms per token and the memcpy bandwidth of this machine
(numpy copy of the same state bytes) beside it.
"""
import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--slots", type=int, default=8)
ap.add_argument("--layers", type=int, default=64)
ap.add_argument("--state", default="f32", choices=["f32", "bf16"])
ap.add_argument("--iters", type=int, default=7)
ap.add_argument("--skip-numpy", action="store_true")
ap.add_argument("--conv-only", action="store_true")
ap.add_argument("--update-conv", action="store_true")
ap.add_argument("--conv", default="bf16", choices=["f32", "bf16"])
a = ap.parse_args()

H, P, N, G, K = 80, 64, 128, 1, 4
D_IN = H * P
CONV = D_IN + 2 * G * N
S, L = a.slots, a.layers


def median_ms(f, iters):
    f()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)[len(ts) // 2]


ssm_bytes = L * S * H * P * N * (4 if a.state == "f32" else 2)
conv_bytes = L * S * CONV * K * 2
if not a.update_conv:
    src = np.ones(ssm_bytes + conv_bytes, np.uint8)
    dst = np.zeros_like(src)
    t_copy = median_ms(lambda: np.copyto(dst, src), a.iters)
    print(f"Mamba2-2.7B state work, {L} layers, {S} slots, ssm {a.state}: {(ssm_bytes + conv_bytes) / 1e6:.0f} MB of state")
    print(f"numpy memcpy of the state bytes: {t_copy:.1f} ms ({(ssm_bytes + conv_bytes) / t_copy / 1e6:.1f} GB/s)")
    del src, dst

import jax
import jax.numpy as jnp

sdt = jnp.float32 if a.state == "f32" else jnp.bfloat16
rng = np.random.default_rng(0)
conv_w = jnp.asarray(rng.standard_normal((L, CONV, K), np.float32) * 0.1)
conv_b = jnp.asarray(rng.standard_normal((L, CONV), np.float32) * 0.1)
A = -jnp.exp(jnp.asarray(rng.standard_normal((L, H), np.float32)))
Dp = jnp.ones((L, H), jnp.float32)
dt_bias = jnp.zeros((L, H), jnp.float32)
xs = jnp.asarray(rng.standard_normal((S, CONV), np.float32))
dts = jnp.asarray(rng.standard_normal((S, H), np.float32))
zs = jnp.asarray(rng.standard_normal((S, H, P), np.float32))

if a.update_conv:
    # The conv window update alone, as EasyDeL's update_conv_state writes
    # it (jnp.roll of the window, then .at[...].set of the newest column),
    # over every layer, jitted with donated buffers: what m2c_update_conv
    # is compared with (m2c-bench --ring runs this and prints both).
    cdt = jnp.float32 if a.conv == "f32" else jnp.bfloat16

    def update(conv_states):
        return [jnp.roll(c, -1, axis=-1).at[:, :, -1].set(xs.astype(c.dtype)) for c in conv_states]

    jupd = jax.jit(update, donate_argnums=(0,))
    cst = [[jnp.zeros((S, CONV, K), cdt) for _ in range(L)]]

    def run_upd():
        c = jupd(cst[0])
        jax.block_until_ready(c)
        cst[0] = c

    t_upd = median_ms(run_upd, max(a.iters, 51))
    print(f"JAX {jax.__version__} jit, donated buffers: update_conv_state (jnp.roll + .at[].set), {L} layers, {S} slots, "
          f"conv {a.conv}: {t_upd:.4f} ms per token")
    raise SystemExit(0)


def step(conv_states, ssm_states):
    new_c, new_s = [], []
    for l in range(L):
        cs = jnp.roll(conv_states[l], -1, axis=-1).at[:, :, -1].set(xs.astype(conv_states[l].dtype))
        co = jnp.sum(cs.astype(jnp.float32) * conv_w[l], axis=-1) + conv_b[l]
        co = co * jax.nn.sigmoid(co)
        x = co[:, :D_IN].reshape(S, H, P)
        B = co[:, D_IN:D_IN + G * N].reshape(S, G, N)
        C = co[:, D_IN + G * N:].reshape(S, G, N)
        dt = jax.nn.softplus(dts + dt_bias[l])
        dA = jnp.exp(dt * A[l])
        st = ssm_states[l].astype(jnp.float32)
        st = st * dA[:, :, None, None] + (dt[:, :, None] * x)[..., None] * B[:, 0][:, None, None, :]
        y = jnp.einsum("shpn,sn->shp", st, C[:, 0]) + Dp[l][None, :, None] * x
        y = y * (zs * jax.nn.sigmoid(zs))
        new_c.append(cs)
        new_s.append(st.astype(sdt))
    return new_c, new_s, y


jstep = jax.jit(step, donate_argnums=(0, 1))
conv_states = [jnp.zeros((S, CONV, K), jnp.bfloat16) for _ in range(L)]
ssm_states = [jnp.zeros((S, H, P, N), sdt) for _ in range(L)]
state = [conv_states, ssm_states]


def run():
    c, s, y = jstep(state[0], state[1])
    y.block_until_ready()
    state[0], state[1] = c, s


if a.conv_only:
    # Every layer's conv output is returned (an engine consumes each one in
    # that layer's SSM). Returning only the last layer's output lets XLA
    # drop the other layers' sums and activations (only their window
    # updates remain): that figure is printed too, marked as such.
    def make(all_outs):
        def conv_step(conv_states):
            new_c, outs = [], []
            for l in range(L):
                cs = jnp.roll(conv_states[l], -1, axis=-1).at[:, :, -1].set(xs.astype(conv_states[l].dtype))
                co = jnp.sum(cs.astype(jnp.float32) * conv_w[l], axis=-1) + conv_b[l]
                new_c.append(cs)
                outs.append(co * jax.nn.sigmoid(co))
            return new_c, (jnp.stack(outs) if all_outs else outs[-1])
        return jax.jit(conv_step, donate_argnums=(0,))

    for all_outs in (True, False):
        jconv = make(all_outs)
        cstate = [[jnp.zeros((S, CONV, K), jnp.bfloat16) for _ in range(L)]]

        def run_conv():
            c, outs = jconv(cstate[0])
            outs.block_until_ready()
            cstate[0] = c

        t_conv = median_ms(run_conv, max(a.iters, 51))
        what = "every layer's output" if all_outs else "last layer's output only (XLA drops the rest: NOT the same work)"
        print(f"JAX {jax.__version__} jit, donated buffers: conv update alone, {L} layers, {S} slots, {what}: {t_conv:.3f} ms per token")
    raise SystemExit(0)

t_jax = median_ms(run, a.iters)
print(f"JAX {jax.__version__} jit, donated buffers, {jax.device_count()} CPU device: {t_jax:.1f} ms per token "
      f"({(ssm_bytes + conv_bytes) / t_jax / 1e6:.1f} GB/s of state, {t_copy / t_jax:.2f}x memcpy)")

if not a.skip_numpy:
    npc = [np.zeros((S, CONV, K), np.float32) for _ in range(L)]
    nps = [np.zeros((S, H, P, N), np.float32) for _ in range(L)]
    w, b, An = np.asarray(conv_w), np.asarray(conv_b), np.asarray(A)
    xn, dtn, zn = np.asarray(xs), np.asarray(dts), np.asarray(zs)

    def np_step():
        for l in range(L):
            npc[l][:, :, :-1] = npc[l][:, :, 1:]
            npc[l][:, :, -1] = xn
            co = (npc[l] * w[l]).sum(-1) + b[l]
            co = co / (1 + np.exp(-co))
            x = co[:, :D_IN].reshape(S, H, P)
            B = co[:, D_IN:D_IN + N]
            C = co[:, D_IN + N:]
            dt = np.log1p(np.exp(dtn))
            dA = np.exp(dt * An[l])
            nps[l] *= dA[:, :, None, None]
            nps[l] += (dt[:, :, None] * x)[..., None] * B[:, None, None, :]
            y = np.einsum("shpn,sn->shp", nps[l], C) + x
            y *= zn / (1 + np.exp(-zn))

    t_np = median_ms(np_step, max(3, a.iters // 2))
    print(f"numpy (f32 state, in place): {t_np:.1f} ms per token ({t_copy / t_np:.2f}x memcpy)")
