"""m2c under Hugging Face transformers' Mamba2 layers.

``attach(model)`` puts an m2c cache under every Mamba2 mixer of a
transformers model through the kernel seam transformers documents for
exactly this ("a runtime that manages the conv state itself"): the per-model
``causal_conv1d_forward`` and ``mamba2_scan_forward`` functions that
``use_kernelized_func`` attaches to each mixer. After that, an unchanged
``model.generate(...)`` runs with m2c holding every conv window and SSM
state and running the conv and SSM steps and prefills; transformers' own
cache object only keeps its bookkeeping (which layers have started, the
token count) and holds no state tensors::

    from transformers import AutoModelForCausalLM
    import m2c.hf

    model = AutoModelForCausalLM.from_pretrained("...mamba2...")
    rt = m2c.hf.attach(model, num_slots=8)
    out = model.generate(ids, max_new_tokens=64)      # m2c holds the state
    rt.cache.slot_save(0)                              # e.g. checkpoint sequence 0

Works for Mamba2 and for the Mamba2 layers of the hybrid models whose mixers
use the same seam (Bamba, Nemotron-H and GraniteMoeHybrid in transformers
5.25, each tested; attention layers keep their usual KV cache).

What it handles:

* Batches: batch row ``i`` is slot ``rt.slots[i]`` (default: slot ``i``), so
  an engine can place a generate() batch on any slots of a bigger cache.
  A new sequence (transformers' "no previous state") resets its slots first.
* Padding: transformers zeroes padded positions before the conv and before
  the scan (``apply_mask_to_padding_states``), outside the seam, so m2c sees
  exactly the inputs its own path sees; left and right padding both match.
* ``time_step_limit``: transformers clamps dt in its chunked prefill only,
  never in decode; m2c does the same (``dt_limit`` on prefills only).
* Beam search: transformers' ``reorder_cache(beam_idx)`` becomes one
  ``copy_slots`` (rows that keep their beam are not copied).
* dtypes: transformers keeps the conv window and the SSM state in the model
  dtype, so ``attach`` does too by default (f32 models: f32 conv and SSM,
  matching transformers' logits to ~1e-6; m2c's C default of a bf16 conv
  window changes logits by ~1e-2). Pass ``conv_dtype`` / ``ssm_dtype`` to
  choose (e.g. an f32 SSM state under a bf16 model, more accurate than
  transformers itself).

* Assisted decoding (``generate(..., assistant_model=...)``): transformers
  records the past and later ``crop``s the tokens it rejected. A forward
  that continues a sequence becomes an m2c speculative round (``spec_begin``,
  then ``conv_verify`` / ``ssm_verify`` per layer, which leave the state
  untouched), and the ``crop`` that follows commits the accepted tokens
  (``spec_commit``): bit-identical to having run only those tokens, with
  no state copied per draft token. The first forward of a sequence (prompt
  and drafts together) runs as a prefill whose per-layer inputs are kept;
  a crop then resets the slots and replays the accepted prefix from them.
  The greedy tokens equal plain greedy decoding's. (transformers clamps dt
  by ``time_step_limit`` in part of a recorded forward only; with a finite
  limit the verify rows are not clamped.)

``detach()`` restores the model's own kernel functions.
"""

from __future__ import annotations

import types

import m2c

_DTYPES = {"torch.float32": "f32", "torch.bfloat16": "bf16", "torch.float16": "f16"}


def _mixers(model):
    out = []
    for mod in model.modules():
        kf = getattr(mod, "_kernel_funcs", None)
        if kf and "causal_conv1d_forward" in kf and "mamba2_scan_forward" in kf and hasattr(mod, "A_log"):
            out.append(mod)
    return out


class Runtime:
    """The m2c side of an attached model: ``cache`` (an ``m2c.Cache`` with one
    m2c layer per Mamba2 mixer, in model order), ``slots`` (batch row ->
    slot) and ``calls`` (counts of the m2c kernel calls made)."""

    def __init__(self, model, num_slots=8, conv_dtype=None, ssm_dtype=None, slots=None, conv_width=None):
        import torch

        self._torch = torch
        mixers = _mixers(model)
        if not mixers:
            raise ValueError(
                "m2c.hf.attach: no Mamba2 mixer with transformers' kernel seam found "
                "(needs transformers >= 5.25 with its `kernels` dependency installed)"
            )
        m0 = mixers[0]
        model_dtype = _DTYPES.get(str(m0.in_proj.weight.dtype))
        if model_dtype is None:
            raise ValueError(f"m2c.hf.attach: model dtype {m0.in_proj.weight.dtype} is not f32, bf16 or f16")
        self.mixers = mixers
        self.layer_of = {m.layer_idx: i for i, m in enumerate(mixers)}
        self.last_layer_idx = mixers[-1].layer_idx
        self.cache = m2c.Cache(
            num_layers=len(mixers),
            num_slots=num_slots,
            intermediate_size=m0.intermediate_size,
            num_heads=m0.num_heads,
            head_dim=m0.head_dim,
            state_size=m0.ssm_state_size,
            n_groups=m0.n_groups,
            conv_kernel_size=m0.conv_kernel_size,
            conv_width=conv_width or m0.conv_kernel_size,
            conv_dtype=conv_dtype or model_dtype,
            ssm_dtype=ssm_dtype or model_dtype,
        )
        self.slots = list(slots) if slots is not None else None
        self.calls = {
            "conv_step": 0,
            "conv_prefill": 0,
            "ssm_step": 0,
            "ssm_prefill": 0,
            "reorders": 0,
            "conv_verify": 0,
            "ssm_verify": 0,
            "commits": 0,
            "replays": 0,
            "tokens_rejected": 0,
        }
        self._fresh = set()
        # A recorded forward waiting for transformers' crop: ("spec", slots, L)
        # or ("replay", slots, L, per-layer logged inputs).
        self._pending = None
        self._reserved = 0
        self._saved = []
        self._params = []
        for m in mixers:
            self._install(m)

    # -- the batch <-> slot map -------------------------------------------------
    def rows(self, batch):
        slots = self.slots if self.slots is not None else list(range(batch))
        if len(slots) < batch:
            raise ValueError(f"m2c.hf: a batch of {batch} rows needs {batch} slots; rt.slots has {len(slots)}")
        if batch > self.cache.config.num_slots and self.slots is None:
            raise ValueError(f"m2c.hf: a batch of {batch} rows needs {batch} slots; the cache has {self.cache.config.num_slots}")
        return slots[:batch]

    def detach(self):
        """Restores the model's own kernel functions (the m2c cache stays usable)."""
        for kf, name, fwd in self._saved:
            if fwd is None:
                del kf[name].forward
            else:
                kf[name].forward = fwd
        self._saved = []

    # -- the seam ---------------------------------------------------------------
    def _install(self, mixer):
        torch = self._torch
        rt = self
        li = mixer.layer_idx
        layer = self.layer_of[li]
        with torch.no_grad():
            w = mixer.conv1d.weight.detach().squeeze(1).float().contiguous()
            b = mixer.conv1d.bias.detach().float().contiguous() if mixer.conv1d.bias is not None else None
            A = (-torch.exp(mixer.A_log.detach().float())).contiguous()
            D = mixer.D.detach().float().contiguous()
            dt_bias = mixer.dt_bias.detach().float().contiguous()
        H, P, G, N = mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.ssm_state_size
        limit = tuple(float(v) for v in mixer.time_step_limit)
        kf = mixer._kernel_funcs
        conv_orig = kf["causal_conv1d_forward"].__dict__.get("forward")
        scan_orig = kf["mamba2_scan_forward"].__dict__.get("forward")
        conv_default = kf["causal_conv1d_forward"].forward
        scan_default = kf["mamba2_scan_forward"].forward

        def conv_forward(self, conv1d, hidden_states, cache, layer_idx, activation=None, state_idx=0, **kw):
            if cache is None:
                return conv_default(conv1d, hidden_states, cache, layer_idx, activation=activation, state_idx=state_idx, **kw)
            bsz, cd, L = hidden_states.shape
            slots = rt.rows(bsz)
            hf_layer = cache.layers[layer_idx]
            x = hidden_states.transpose(1, 2).reshape(bsz * L, cd).contiguous()
            out = torch.empty_like(x)
            act = "silu" if activation in ("silu", "swish") else "none"
            recording = cache.is_recording_past(layer_idx)
            if not recording and layer == 0 and rt._pending is not None:
                rt._settle()
            if recording and layer == 0:
                rt._watch(cache)
                rt._settle()
                if hf_layer.has_previous_state[state_idx]:
                    rt._begin_round(slots, L)
                else:
                    rt._pending = ("replay", slots, L, [{} for _ in rt.mixers])
            spec = recording and rt._pending is not None and rt._pending[0] == "spec"
            if spec:
                rt.cache.conv_verify(layer, x, w, b, out=out, activation=act)
                rt.calls["conv_verify"] += 1
                hf_layer.has_previous_state[state_idx] = True
                hf_layer.cumulative_length_linear.add_(L)
                return out.view(bsz, L, cd).transpose(1, 2)
            if recording and rt._pending is not None:
                rt._pending[3][layer]["conv"] = (x.clone(), act)
            if not hf_layer.has_previous_state[state_idx]:
                # A new sequence: fresh slots (once, at the first mixer), then a prefill.
                if layer == 0:
                    rt.cache.reset(slots)
                    rt._watch(cache)
                hf_layer.has_previous_state[state_idx] = True
                rt._fresh.add(layer)
                rt.cache.conv_prefill(layer, [i * L for i in range(bsz + 1)], x, w, b, slots=slots, out=out, activation=act)
                rt.calls["conv_prefill"] += 1
            elif L == 1:
                rt.cache.conv_step(layer, x, w, b, slots=slots, out=out, activation=act)
                rt.calls["conv_step"] += 1
            else:
                rt.cache.conv_prefill(layer, [i * L for i in range(bsz + 1)], x, w, b, slots=slots, out=out, activation=act)
                rt.calls["conv_prefill"] += 1
            hf_layer.cumulative_length_linear.add_(L)
            if layer_idx == rt.last_layer_idx:
                rt.cache.advance(slots, L)
            return out.view(bsz, L, cd).transpose(1, 2)

        def scan_forward(self, module, hidden_states, B, C, dt, cache, **kw):
            if cache is None:
                return scan_default(module, hidden_states, B, C, dt, cache, **kw)
            bsz, L, inner = hidden_states.shape
            slots = rt.rows(bsz)
            x = hidden_states.reshape(bsz * L, H, P).contiguous()
            dtc = dt.reshape(bsz * L, H).contiguous()
            Bc = B.reshape(bsz * L, G, N).contiguous()
            Cc = C.reshape(bsz * L, G, N).contiguous()
            y = torch.empty((bsz * L, inner), dtype=x.dtype)
            fresh = layer in rt._fresh
            rt._fresh.discard(layer)
            pending = rt._pending if cache.is_recording_past(module.layer_idx) else None
            if pending is not None and pending[0] == "spec":
                rt.cache.ssm_verify(layer, x, dtc, Bc, Cc, A, D=D, dt_bias=dt_bias, y=y)
                rt.calls["ssm_verify"] += 1
                return y.view(bsz, L, inner)
            if pending is not None:
                pending[3][layer]["ssm"] = (x.clone(), dtc.clone(), Bc.clone(), Cc.clone())
            if L == 1 and not fresh:
                # transformers' decode step: no dt clamp.
                rt.cache.ssm_step(layer, x, dtc, Bc, Cc, A, D=D, dt_bias=dt_bias, slots=slots, y=y)
                rt.calls["ssm_step"] += 1
            else:
                # transformers' chunked prefill clamps dt to time_step_limit.
                cu = [i * L for i in range(bsz + 1)]
                rt.cache.ssm_prefill(layer, cu, x, dtc, Bc, Cc, A, D=D, dt_bias=dt_bias, slots=slots, y=y, dt_limit=limit)
                rt.calls["ssm_prefill"] += 1
            return y.view(bsz, L, inner)

        self._params.append((w, b, A, D, dt_bias, limit))
        self._saved.append((kf, "causal_conv1d_forward", conv_orig))
        self._saved.append((kf, "mamba2_scan_forward", scan_orig))
        kf["causal_conv1d_forward"].forward = types.MethodType(conv_forward, kf["causal_conv1d_forward"])
        kf["mamba2_scan_forward"].forward = types.MethodType(scan_forward, kf["mamba2_scan_forward"])

    # -- assisted decoding: rounds, commits, replays ------------------------------
    def _begin_round(self, slots, L):
        if L > self._reserved:
            self.cache.spec_reserve(max(L, 8))
            self._reserved = max(L, 8)
        self.cache.spec_begin([i * L for i in range(len(slots) + 1)], slots=slots)
        self._pending = ("spec", slots, L)

    def _settle(self, rejected=0):
        """Applies the pending recorded forward with its last `rejected`
        tokens dropped (0: all kept)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        kind, slots, L = pending[:3]
        keep = L - rejected
        self.calls["tokens_rejected"] += rejected
        if kind == "spec":
            self.cache.spec_commit([keep] * len(slots), slots=slots)
            self.calls["commits"] += 1
        elif rejected:
            # The prefill already ran all L tokens: start over from zero and
            # replay the kept prefix from the logged inputs, layer by layer.
            logs = pending[3]
            self.cache.reset(slots)
            n = len(slots)
            for layer, (log, (w, b, A, D, dt_bias, limit)) in enumerate(zip(logs, self._params)):
                x, act = log["conv"]
                rows = [r for s in range(n) for r in range(s * L, s * L + keep)]
                cu = [i * keep for i in range(n + 1)]
                if keep:
                    self.cache.conv_prefill(layer, cu, x[rows].contiguous(), w, b, slots=slots, activation=act)
                    xs, dt, B, C = (t[rows].contiguous() for t in log["ssm"])
                    self.cache.ssm_prefill(layer, cu, xs, dt, B, C, A, D=D, dt_bias=dt_bias, slots=slots, dt_limit=limit)
            self.cache.advance(slots, keep)
            self.calls["replays"] += 1

    def _crop(self, hf_layer, tokens_to_remove):
        """transformers' LinearAttentionLayer.crop for a layer m2c holds."""
        if tokens_to_remove > 0:
            raise RuntimeError("linear attention layers crop by a negative count")
        k = -tokens_to_remove
        if self._pending is not None:
            self._settle(rejected=k)
        hf_layer.cumulative_length_linear.sub_(k)

    def _watch(self, hf_cache):
        """Routes the transformers cache's beam reorders to copy_slots and
        its crops to commits."""
        # Marked on the object itself: an id() can be reused by a later cache.
        if getattr(hf_cache, "_m2c_runtime", None) is self:
            return
        hf_cache._m2c_runtime = self
        orig = hf_cache.reorder_cache
        rt = self
        for m in self.mixers:
            hf_layer = hf_cache.layers[m.layer_idx]
            hf_layer.crop = lambda k, _layer=hf_layer: rt._crop(_layer, k)

        def reorder_cache(beam_idx):
            idx = [int(i) for i in beam_idx.tolist()]
            slots = rt.rows(len(idx))
            pairs = [(slots[s], slots[d]) for d, s in enumerate(idx) if s != d]
            if pairs:
                rt.cache.copy_slots([p[0] for p in pairs], [p[1] for p in pairs])
            rt.calls["reorders"] += 1
            return orig(beam_idx)

        hf_cache.reorder_cache = reorder_cache


def attach(model, *, num_slots=8, conv_dtype=None, ssm_dtype=None, slots=None, conv_width=None) -> Runtime:
    """Puts an m2c cache under every Mamba2 mixer of ``model`` (see the module
    documentation); returns the ``Runtime``. ``num_slots`` bounds the batch
    (beam search needs batch x beams); ``slots`` maps batch rows to slots;
    ``conv_width`` picks m2c's window layout (default K, transformers' own;
    K - 1 is vLLM's and llama.cpp's, the same results in less memory)."""
    return Runtime(model, num_slots=num_slots, conv_dtype=conv_dtype, ssm_dtype=ssm_dtype, slots=slots, conv_width=conv_width)
