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
def test_greedy_tokens_and_logits_match(n_groups, conv_kernel):
    ref, mine = pair(n_groups=n_groups, conv_kernel=conv_kernel)
    rt = m2c.hf.attach(mine)
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


def test_assisted_decoding_is_refused_not_wrong():
    ref, mine = pair()
    m2c.hf.attach(mine)
    ids = prompts(1, 8)
    with pytest.raises(NotImplementedError):
        gen(mine, ids, max_new_tokens=8, assistant_model=ref)
