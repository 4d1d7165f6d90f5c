"""Parity with transformers: tiny random Mamba2 models under an unchanged
generate(), m2c holding the state (m2c.hf.attach) against transformers'
own torch path. Greedy tokens identical, logits within 5e-6 (f32; measured
~1e-6), beam search identical, padding, time_step_limit, reordered slots,
a 600-token prompt, a second generate() on fresh state."""

import copy

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

import m2c
import m2c.hf

TOL = 5e-6


def tiny(n_groups=1, layers=2, conv_kernel=4, time_step_limit=(0.0, float("inf")), seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = Mamba2Config(
        hidden_size=64,
        num_hidden_layers=layers,
        n_groups=n_groups,
        head_dim=16,
        num_heads=8,
        expand=2,
        state_size=16,
        vocab_size=100,
        conv_kernel=conv_kernel,
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=None,
        time_step_limit=time_step_limit,
    )
    return Mamba2ForCausalLM(cfg).eval().to(dtype)


def pair(**kw):
    ref = tiny(**kw)
    return ref, copy.deepcopy(ref)


def gen(model, ids, **kw):
    with torch.no_grad():
        return model.generate(ids, do_sample=False, return_dict_in_generate=True, output_logits=True, **kw)


def max_logit_diff(a, b):
    return (torch.stack(a.logits, 1) - torch.stack(b.logits, 1)).abs().max().item()


def prompts(batch, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 100, (batch, length), generator=g)  # no pad id (0) inside


@pytest.mark.parametrize("n_groups", [1, 4])
@pytest.mark.parametrize("conv_kernel", [4, 3])
@pytest.mark.parametrize("width", ["K", "K-1"])
def test_greedy_tokens_and_logits_match(n_groups, conv_kernel, width):
    ref, mine = pair(n_groups=n_groups, conv_kernel=conv_kernel)
    rt = m2c.hf.attach(mine, conv_width=conv_kernel if width == "K" else conv_kernel - 1)
    ids = prompts(3, 9)
    a, b = gen(ref, ids, max_new_tokens=24), gen(mine, ids, max_new_tokens=24)
    assert torch.equal(a.sequences, b.sequences)
    assert max_logit_diff(a, b) < TOL
    assert rt.calls["conv_step"] == 23 * 2 and rt.calls["ssm_prefill"] == 2
    assert [rt.cache.position(s) for s in range(3)] == [9 + 23] * 3 == [int(b.cache.get_seq_length())] * 3
    # transformers' cache holds no state tensors: m2c does.
    assert b.cache.layers[0].conv_states[0] is None
    # The state m2c holds is transformers' state.
    ssm = rt.cache.read_ssm(1, slots=[0, 1, 2])
    assert abs(torch.from_numpy(ssm) - a.cache.layers[1].recurrent_states[0]).max().item() < 1e-5
    # A second generate() starts from fresh state.
    c = gen(mine, ids, max_new_tokens=24)
    assert torch.equal(c.sequences, a.sequences)


def test_reordered_slots_and_a_long_prompt():
    ref, mine = pair(n_groups=2)
    rt = m2c.hf.attach(mine, num_slots=6, slots=[4, 0, 5])
    ids = prompts(3, 600, seed=3)
    a, b = gen(ref, ids, max_new_tokens=16), gen(mine, ids, max_new_tokens=16)
    assert torch.equal(a.sequences, b.sequences) and max_logit_diff(a, b) < TOL
    assert rt.cache.position(4) == rt.cache.position(5) == 615 and rt.cache.position(1) == 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches(side):
    ref, mine = pair(n_groups=2)
    m2c.hf.attach(mine)
    ids = prompts(2, 10, seed=5)
    mask = torch.ones_like(ids)
    if side == "left":
        ids[1, :4] = 0
        mask[1, :4] = 0
    else:
        ids[1, -3:] = 0
        mask[1, -3:] = 0
    a = gen(ref, ids, attention_mask=mask, max_new_tokens=12)
    b = gen(mine, ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(a.sequences, b.sequences) and max_logit_diff(a, b) < TOL


def test_time_step_limit_is_applied_in_prefill_only():
    ref, mine = pair(time_step_limit=(0.01, 0.05))
    m2c.hf.attach(mine)
    ids = prompts(2, 12, seed=7)
    a, b = gen(ref, ids, max_new_tokens=12), gen(mine, ids, max_new_tokens=12)
    assert torch.equal(a.sequences, b.sequences) and max_logit_diff(a, b) < TOL


def test_beam_search_reorders_through_copy_slots():
    ref, mine = pair(n_groups=2)
    rt = m2c.hf.attach(mine, num_slots=8)
    ids = prompts(2, 8, seed=9)
    with torch.no_grad():
        a = ref.generate(ids, num_beams=3, do_sample=False, max_new_tokens=12, return_dict_in_generate=True, output_scores=True)
        b = mine.generate(ids, num_beams=3, do_sample=False, max_new_tokens=12, return_dict_in_generate=True, output_scores=True)
    assert torch.equal(a.sequences, b.sequences)
    assert torch.allclose(a.sequences_scores, b.sequences_scores, atol=1e-4)
    assert rt.calls["reorders"] > 0


def test_bf16_model_keeps_its_dtype_and_detach_restores():
    ref, mine = pair(n_groups=2, dtype=torch.bfloat16)
    rt = m2c.hf.attach(mine)
    assert rt.cache.config.conv_dtype == "bf16" and rt.cache.config.ssm_dtype == "bf16"
    ids = prompts(2, 8, seed=11)
    a, b = gen(ref, ids, max_new_tokens=8), gen(mine, ids, max_new_tokens=8)
    # bf16 arithmetic differs in order between the two paths: compare loosely.
    assert max_logit_diff(a, b) < 0.1
    rt.detach()
    c = gen(mine, ids, max_new_tokens=8)
    assert torch.equal(c.sequences, a.sequences) and max_logit_diff(a, c) == 0.0


@pytest.mark.parametrize("assistant_seed", [0, 5])
def test_assisted_decoding_commits_exactly(assistant_seed):
    # Assisted greedy decoding must give plain greedy decoding's tokens. With
    # the same weights every draft is accepted; with other weights most are
    # rejected, so commits of every length and replays of the prompt happen.
    ref, mine = pair(n_groups=2)
    assistant = tiny(n_groups=2, seed=assistant_seed)
    rt = m2c.hf.attach(mine)
    ids = prompts(1, 12, seed=13)
    a = gen(ref, ids, max_new_tokens=24)
    with torch.no_grad():
        b = mine.generate(ids, do_sample=False, max_new_tokens=24, assistant_model=assistant, return_dict_in_generate=True)
    assert torch.equal(a.sequences, b.sequences)
    assert rt.calls["conv_verify"] > 0 and rt.calls["commits"] > 0
    if assistant_seed != 0:
        # Rejections: commits of one token, and the prompt's round replayed.
        assert rt.calls["tokens_rejected"] > 0 and rt.calls["replays"] == 1
    assert rt.cache.position(0) == int(b.cache.get_seq_length())
    # The committed state is the state plain decoding reaches (to torch's
    # matmul rounding, which differs between batch shapes).
    plain = copy.deepcopy(ref)
    plain_rt = m2c.hf.attach(plain)
    gen(plain, ids, max_new_tokens=24)
    assert plain_rt.cache.position(0) == rt.cache.position(0)
    for layer in range(2):
        diff = abs(plain_rt.cache.read_ssm(layer, slots=[0]) - rt.cache.read_ssm(layer, slots=[0])).max()
        assert diff < 1e-6


def hybrid(kind):
    import transformers as tf

    torch.manual_seed(0)
    common = dict(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=100,
        pad_token_id=0,
        eos_token_id=None,
        bos_token_id=None,
    )
    mamba = dict(mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2)
    if kind == "bamba":
        cfg, cls = tf.BambaConfig(attn_layer_indices=[1], **mamba, **common), tf.BambaForCausalLM
    elif kind == "granitemoehybrid":
        cfg = tf.GraniteMoeHybridConfig(layer_types=["mamba", "attention", "mamba", "mamba"], num_local_experts=0, **mamba, **common)
        cls = tf.GraniteMoeHybridForCausalLM
    else:
        cfg = tf.NemotronHConfig(
            hybrid_override_pattern="M*M-",
            mamba_num_heads=8,
            mamba_head_dim=16,
            n_groups=2,
            ssm_state_size=16,
            conv_kernel=4,
            expand=2,
            **common,
        )
        cls = tf.NemotronHForCausalLM
    return cls(cfg).eval()


@pytest.mark.parametrize("kind", ["bamba", "granitemoehybrid", "nemotron_h"])
def test_hybrid_models_mamba_layers(kind):
    ref = hybrid(kind)
    mine = copy.deepcopy(ref)
    rt = m2c.hf.attach(mine)
    attention = [i for i in range(4) if i not in [m.layer_idx for m in rt.mixers]]
    assert attention and len(rt.mixers) >= 2  # m2c holds the Mamba2 layers only
    ids = prompts(2, 10, seed=17)
    a, b = gen(ref, ids, max_new_tokens=12), gen(mine, ids, max_new_tokens=12)
    assert torch.equal(a.sequences, b.sequences) and max_logit_diff(a, b) < TOL
    assert rt.calls["conv_step"] == 11 * len(rt.mixers)


def test_torch_tensors_over_views_alias_both_ways():
    cache = m2c.Cache(num_layers=1, num_slots=3, intermediate_size=32, num_heads=4, head_dim=8, state_size=4, n_groups=1, conv_dtype="bf16")
    view = cache.ssm_view(0)
    t = torch.from_dlpack(view)
    assert t.data_ptr() == view.data_ptr and t.shape == (3, 4, 8, 4) and t.dtype == torch.float32
    t[1].fill_(0.5)  # torch writes through (it ignores read-only flags anyway)
    assert (cache.read_ssm(0, slots=[1]) == 0.5).all()
    cache.reset([1])
    assert not t[1].any()  # m2c's writes show in the tensor
    conv = torch.from_dlpack(cache.conv_view(0))
    assert conv.dtype == torch.bfloat16 and conv.shape == (3, 32 + 8, 4)
    del cache
    assert t.sum().item() == 0.0  # the view keeps the state alive
