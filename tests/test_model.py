"""The decoder's behaviour, checked against float64 arithmetic and LLaMA's published numbers."""

import json

import pytest
import torch
import torch.nn.functional as F

from model import ModelArgs, Transformer
from model.attention import Attention
from model.layers import RMSNorm, ffn_hidden_dim
from model.position import rope_frequencies, rope_tables

SMALL = dict(dim=64, n_layers=2, n_heads=4, vocab_size=97, multiple_of=16, max_seq_len=48, max_batch_size=3)


def small_model(seed=0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelArgs(**{**SMALL, **overrides})).eval()
    for name, p in model.named_parameters():  # norms away from 1, so a missed norm weight shows
        if "norm" in name:
            p.data.uniform_(0.5, 1.5)
    return model


POSITIONS = ["rope", "learned", "sinusoidal", "none"]


@pytest.mark.parametrize("pos_embedding", POSITIONS)
def test_incremental_decoding_equals_the_full_pass(pos_embedding):
    model = small_model(pos_embedding=pos_embedding, n_kv_heads=2)
    tokens = torch.randint(0, 97, (3, 20))
    full = model(tokens)
    with torch.no_grad():
        steps = [model(tokens[:, :8], start_pos=0)]
        steps += [model(tokens[:, t : t + 1], start_pos=t) for t in range(8, 20)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("pos_embedding", POSITIONS)
def test_chunked_prefill_equals_the_full_pass(pos_embedding):
    model = small_model(pos_embedding=pos_embedding, n_kv_heads=2)
    tokens = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(tokens)
        chunks = [
            model(tokens[:, :5], start_pos=0),
            model(tokens[:, 5:13], start_pos=5),
            model(tokens[:, 13:], start_pos=13),
        ]
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)


def test_reset_cache_starts_a_new_sequence():
    model = small_model()
    a, b = torch.randint(0, 97, (1, 10)), torch.randint(0, 97, (1, 10))
    with torch.no_grad():
        model(a, start_pos=0)
        model.reset_cache()
        assert model.layers[0].attention.cache is None
        assert torch.allclose(model(b, start_pos=0), model(b), atol=1e-5)


@pytest.mark.parametrize("pos_embedding", POSITIONS)
def test_causality(pos_embedding):
    model = small_model(pos_embedding=pos_embedding)
    tokens = torch.randint(0, 97, (1, 16))
    changed = tokens.clone()
    changed[0, 9] = (changed[0, 9] + 1) % 97
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.allclose(before[:, :9], after[:, :9], atol=1e-6, rtol=0)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_grouped_query_equals_multi_head_with_repeated_kv_weights():
    gqa = small_model(n_kv_heads=2)
    mha = small_model(n_kv_heads=None)
    head_dim = SMALL["dim"] // SMALL["n_heads"]
    state = gqa.state_dict()
    for name, weight in list(state.items()):
        if name.endswith(("attention.wk.weight", "attention.wv.weight")):
            heads = weight.view(2, head_dim, SMALL["dim"])  # kv head j serves query heads 2j and 2j+1
            state[name] = heads.repeat_interleave(2, dim=0).reshape(-1, SMALL["dim"])
    mha.load_state_dict(state)
    tokens = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        assert torch.allclose(gqa(tokens), mha(tokens), atol=1e-5)


def test_stories15m_has_llama2c_parameter_count():
    args = ModelArgs(dim=288, n_layers=6, n_heads=6, vocab_size=32000, multiple_of=32, tie_embeddings=True)
    assert Transformer(args).num_params() == 15_191_712


@pytest.mark.parametrize(
    "dim, multiplier, multiple_of, expected",
    [(4096, None, 256, 11008), (8192, 1.3, 4096, 28672), (4096, 1.3, 1024, 14336)],
)
def test_swiglu_hidden_sizes_match_llama(dim, multiplier, multiple_of, expected):
    assert ffn_hidden_dim(dim, multiple_of, multiplier) == expected


def test_positions_past_the_cache_raise():
    model = small_model()
    with torch.no_grad():
        with pytest.raises(ValueError, match="max_seq_len"):
            model(torch.zeros(1, 4, dtype=torch.long), start_pos=46)
        with pytest.raises(ValueError, match="max_seq_len"):
            model(torch.zeros(1, 49, dtype=torch.long))
        with pytest.raises(ValueError, match="start_pos"):
            model(torch.zeros(1, 1, dtype=torch.long), start_pos=-1)
        with pytest.raises(ValueError, match="max_batch_size"):
            model(torch.zeros(4, 2, dtype=torch.long), start_pos=0)


def test_cache_is_allocated_on_first_use_in_the_models_dtype():
    model = small_model().to(torch.float64)
    assert model.layers[0].attention.cache is None
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), start_pos=0)
    cache = model.layers[0].attention.cache
    assert cache.k.dtype == torch.float64
    assert cache.k.shape == (SMALL["max_batch_size"], SMALL["n_heads"], SMALL["max_seq_len"], 16)


def reference_attention(attn: Attention, x: torch.Tensor, theta: float) -> torch.Tensor:
    """One attention layer written out in float64: Meta's interleaved RoPE, kv heads repeated
    explicitly, an explicit causal softmax."""
    wq, wk, wv, wo = (w.weight.double() for w in (attn.wq, attn.wk, attn.wv, attn.wo))
    x = x.double()
    B, T, _ = x.shape
    H, KV, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ wq.T).view(B, T, H, D)
    k = (x @ wk.T).view(B, T, KV, D)
    v = (x @ wv.T).view(B, T, KV, D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)

    def rotate(t):
        even, odd = t[..., 0::2], t[..., 1::2]
        c, s = angle.cos()[:, None, :], angle.sin()[:, None, :]
        return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)

    q, k = rotate(q), rotate(k)
    k, v = k.repeat_interleave(H // KV, dim=2), v.repeat_interleave(H // KV, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, T, H * D)
    return out @ wo.T


def test_attention_matches_a_float64_reference():
    torch.manual_seed(4)
    args = ModelArgs(**{**SMALL, "n_kv_heads": 2, "rope_theta": 500.0})
    attn = Attention(args)
    x = torch.randn(2, 17, args.dim)
    freqs = rope_frequencies(args.head_dim, args.rope_theta)
    angles = torch.arange(17)[:, None] * freqs
    out = attn(x, rope_tables(angles.cos(), angles.sin()))
    ref = reference_attention(attn, x, args.rope_theta)
    assert (out.double() - ref).norm() / ref.norm() < 1e-5


def test_rmsnorm_matches_float64_reference_and_keeps_dtype():
    torch.manual_seed(5)
    norm = RMSNorm(32, eps=1e-6)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(4, 32) * 3
    ref = x.double() / (x.double().pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * norm.weight.double()
    assert torch.allclose(norm(x).double(), ref, atol=1e-5)
    # in bf16: normalised in float32, rounded once, then scaled in bf16 (Meta's order)
    half, x16 = norm.to(torch.bfloat16), x.bfloat16()
    x32 = x16.float()
    normalised = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()
    assert torch.equal(half(x16), normalised * half.weight)


def test_tied_embeddings_share_one_matrix():
    tied, untied = small_model(tie_embeddings=True), small_model(tie_embeddings=False)
    assert tied.output.weight is tied.tok_embeddings.weight
    assert untied.num_params() - tied.num_params() == SMALL["vocab_size"] * SMALL["dim"]


def test_initialisation_scales_residual_projections():
    torch.manual_seed(6)
    model = Transformer(ModelArgs(dim=256, n_layers=8, n_heads=4, vocab_size=1000))
    assert abs(model.layers[0].attention.wq.weight.std().item() - 0.02) < 1e-3
    residual = 0.02 / 4  # 0.02 / sqrt(2 * 8)
    assert abs(model.layers[0].attention.wo.weight.std().item() - residual) < 3e-4
    assert abs(model.layers[3].feed_forward.w2.weight.std().item() - residual) < 3e-4


def test_dropout_is_active_only_in_training():
    model = small_model(dropout=0.5)
    tokens = torch.randint(0, 97, (2, 10))
    model.train()
    assert not torch.allclose(model(tokens), model(tokens))
    model.eval()
    assert torch.equal(model(tokens), model(tokens))


def test_a_model_learns_to_copy():
    """The training pass is differentiable end to end: a few steps fit a tiny repeating sequence."""
    model = small_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.arange(33).remainder(7)[None].repeat(2, 1)
    for _ in range(60):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dim=65), "divisible by n_heads"),
        (dict(n_kv_heads=3), "divisible by n_kv_heads"),
        (dict(n_kv_heads=8), "between 1 and n_heads"),
        (dict(dim=36, n_heads=4), "even head dim"),
        (dict(pos_embedding="alibi"), "pos_embedding"),
        (dict(rope_scaling="yarn"), "rope_scaling"),
        (dict(max_seq_len=0), "max_seq_len"),
    ],
)
def test_args_validate_themselves(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelArgs(**{**SMALL, **overrides})


def test_odd_head_dim_is_fine_without_rope():
    ModelArgs(**{**SMALL, "dim": 36, "n_heads": 4, "pos_embedding": "learned"})


def test_args_round_trip_through_json():
    args = ModelArgs(
        **{**SMALL, "n_kv_heads": 2, "ffn_dim_multiplier": 1.3, "rope_scaling": "linear", "rope_scaling_factor": 2.0}
    )
    assert ModelArgs.from_dict(json.loads(json.dumps(args.to_dict()))) == args
    with pytest.raises(ValueError, match="unknown key.*n_layer.*valid keys"):
        ModelArgs.from_dict({"n_layer": 2})
