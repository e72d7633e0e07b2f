"""The encoder, the masking plan and the MultiMAE loss (tiny config, CPU, milliseconds)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.config import ModelConfig, PretrainConfig  # noqa: E402
from training.heads import InferenceModel, make_heads  # noqa: E402
from training.model import MultiMAE, MultiModalEncoder, kept_token_count, plan_masking  # noqa: E402

TINY = ModelConfig.named("tiny")
T = TINY.n_chunks


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs with one torch thread (conftest.torch_one_thread)."""


def _plan(mask, keep_fraction, drop, seed=0):
    return plan_masking(mask, TINY, keep_fraction, drop, torch.Generator().manual_seed(seed))


def _kept(plan):
    """[B, N] bool: tokens the encoder sees."""
    kept = torch.zeros(plan.loss_mask.shape, dtype=torch.bool)
    return kept.scatter(1, plan.keep_idx, plan.keep_valid)


def test_paper_config_keeps_36_tokens_with_and_without_drop():
    pre = PretrainConfig()
    assert pre.keep_fraction == pytest.approx(0.4)
    assert kept_token_count(TINY, pre.keep_fraction, True) == 36  # 0.4 x 90
    no_drop = pre.replace(modality_drop=False)
    assert kept_token_count(TINY, no_drop.keep_fraction, False) == 36  # 0.3 x 120


def test_masking_keeps_exactly_36_of_120_without_drop():
    mask = torch.ones(16, 4, dtype=torch.bool)
    plan = _plan(mask, 0.3, None)
    kept = _kept(plan)
    assert plan.keep_valid.all()
    assert (kept.sum(1) == 36).all()
    assert (plan.loss_mask.sum(1) == 84).all()  # 70 % masked
    assert not (kept & plan.loss_mask).any()
    for row in plan.keep_idx:  # distinct token indices
        assert len(set(row.tolist())) == len(row)
    # every token is kept with probability 0.3: no position or modality is favoured
    many = _kept(_plan(torch.ones(4000, 4, dtype=torch.bool), 0.3, None, seed=1)).float().mean(0)
    assert many.min() > 0.25 and many.max() < 0.35


@pytest.mark.parametrize("dropped", range(4))
def test_modality_drop_masks_one_modality_whole_and_the_rest_at_0_6(dropped):
    mask = torch.ones(64, 4, dtype=torch.bool)
    plan = _plan(mask, 0.4, dropped)
    kept = _kept(plan).reshape(64, 4, T)
    loss = plan.loss_mask.reshape(64, 4, T)
    assert plan.dropped[:, dropped].all() and plan.dropped.sum() == 64
    assert not kept[:, dropped].any() and loss[:, dropped].all()  # decoder sees only mask tokens there
    others = [m for m in range(4) if m != dropped]
    assert (kept[:, others].sum((1, 2)) == 36).all()  # 0.4 x 90 kept
    assert (loss[:, others].sum((1, 2)) == 54).all()  # 0.6 of the rest masked
    assert (plan.loss_mask.sum(1) == 84).all()  # overall ratio stays 0.7


def test_absent_modalities_are_never_kept_and_never_in_the_loss():
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[0, 3] = False  # no ECG
    mask[1, 1:] = False  # EEG only
    mask[2, [0, 2]] = False
    for drop in (None, 0):
        plan = _plan(mask, 0.3 if drop is None else 0.4, drop)
        kept = _kept(plan).reshape(6, 4, T)
        loss = plan.loss_mask.reshape(6, 4, T)
        absent = ~mask
        assert not kept[absent].any() and not loss[absent].any()
        assert (kept.sum((1, 2)) >= 1).all()
    plan = _plan(mask, 0.4, 0)
    assert not plan.dropped[1].any()  # EEG-only sample keeps its only modality
    assert _kept(plan)[1].sum() == 12  # 0.4 x 30
    assert _kept(_plan(mask, 0.3, None))[0].sum() == 27  # 0.3 x 90 present tokens


def test_loss_ignores_kept_tokens():
    torch.manual_seed(0)
    model = MultiMAE(TINY)
    mask = torch.ones(3, 4, dtype=torch.bool)
    plan = _plan(mask, 0.3, None)
    target = torch.randn(3, 4, 3000)
    pred = torch.randn(3, 4, T, 100)
    loss, _ = model.forward_loss(target, pred, plan.loss_mask)
    kept = _kept(plan).reshape(3, 4, T)
    changed = target.reshape(3, 4, T, 100).clone()
    changed[kept] += 100.0  # kept tokens: no effect
    assert torch.equal(model.forward_loss(changed.reshape(3, 4, 3000), pred, plan.loss_mask)[0], loss)
    changed[~kept] += 1.0  # masked tokens: effect
    assert not torch.equal(model.forward_loss(changed.reshape(3, 4, 3000), pred, plan.loss_mask)[0], loss)
    manual = ((pred - target.reshape(3, 4, T, 100)) ** 2).mean(-1)[~kept].mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_pretraining_step_gives_every_parameter_a_gradient():
    torch.manual_seed(0)
    model = MultiMAE(TINY)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[0, 2] = False
    plan = _plan(mask, 0.4, 1)
    loss, per_modality = model(torch.randn(4, 4, 3000), mask, plan.keep_idx, plan.keep_valid, plan.loss_mask)
    loss.backward()
    assert torch.isfinite(loss) and per_modality.shape == (4,)
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no find_unused_parameters


def test_encoder_only_sees_kept_tokens():
    """Changing the signal of a masked token leaves the encoder output unchanged."""
    torch.manual_seed(0)
    model = MultiMAE(TINY).eval()
    mask = torch.ones(2, 4, dtype=torch.bool)
    plan = _plan(mask, 0.3, None)
    x = torch.randn(2, 4, 3000)
    out = model.forward_encoder(x, mask, plan.keep_idx, plan.keep_valid)
    kept = _kept(plan).reshape(2, 4, T)
    y = x.reshape(2, 4, T, 100).clone()
    y[~kept] = torch.randn_like(y[~kept])
    torch.testing.assert_close(model.forward_encoder(y.reshape(2, 4, 3000), mask, plan.keep_idx, plan.keep_valid), out)


def test_absent_modality_values_change_nothing():
    torch.manual_seed(0)
    encoder = MultiModalEncoder(TINY).eval()
    model = InferenceModel(encoder, make_heads(TINY.d_model)).eval()
    x = torch.randn(3, 4, 3000)
    mask = torch.tensor([[True, True, False, True], [True, False, False, False], [True, True, True, True]])
    outputs = model(x, mask)
    y = x.clone()
    y[0, 2] = torch.randn(3000) * 50
    y[1, 1:] = float("nan")
    for a, b in zip(outputs, model(y, mask)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the pooled embedding averages present tokens only
    tokens = encoder.forward_features(x, mask)
    torch.testing.assert_close(outputs[0][1], tokens[1, :T].mean(0))
    assert [o.shape for o in outputs] == [(3, 32), (3, 5), (3, 2), (3, 2)]


def test_inference_model_exports_with_a_dynamic_batch():
    """torch.export (the graph the ONNX exporter starts from): no data-dependent control flow."""
    torch.manual_seed(0)
    model = InferenceModel(MultiModalEncoder(TINY), make_heads(TINY.d_model)).eval()
    x = torch.randn(2, 4, 3000)
    mask = torch.ones(2, 4, dtype=torch.bool)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (x, mask), dynamic_shapes=({0: batch}, {0: batch}))
    x3 = torch.randn(3, 4, 3000)
    m3 = torch.tensor([[True, False, True, True]] * 3)
    for a, b in zip(exported.module()(x3, m3), model(x3, m3)):
        torch.testing.assert_close(a, b)


def test_named_sizes():
    from training.flops import encoder_flops_per_window
    from training.model import count_parameters

    paper = MultiModalEncoder(ModelConfig.named("paper"))
    assert 26.4e6 < count_parameters(paper) < 26.6e6  # our count (the paper states none): 26.5 M
    gflop = encoder_flops_per_window(paper) / 1e9
    assert 6.3 < gflop < 6.5  # FlopCounterMode: 6.39 GFLOP per window
    assert ModelConfig.from_dict(ModelConfig.named("small").to_dict()) == ModelConfig.named("small")
    assert np.isclose(PretrainConfig().mask_ratio, 0.7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pretraining_and_inference_under_autocast(dtype):
    """The GPU paths autocast to bf16 / fp16; CPU autocast checks the same dtype plumbing."""
    torch.manual_seed(0)
    model = MultiMAE(TINY)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1, 3] = False
    plan = _plan(mask, 0.4, 0)
    x = torch.randn(4, 4, 3000)
    with torch.autocast("cpu", dtype=dtype):
        loss, per_modality = model(x, mask, plan.keep_idx, plan.keep_valid, plan.loss_mask)
        embedding = model.encoder.eval().pooled(x, mask)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(per_modality).all()
    assert embedding.shape == (4, 32) and torch.isfinite(embedding).all()


def test_attention_key_bias_is_the_boolean_mask():
    """training.model.key_bias (0 / the lowest float added to the scores) gives SDPA the same result as
    the boolean key mask, for rows with some keys masked and rows with none."""
    import torch.nn.functional as F

    from training.model import key_bias

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8, generator=g) for _ in range(3))  # [B, H, L, hd]
    key_valid = torch.ones(3, 7, dtype=torch.bool)
    key_valid[0, 3:] = False
    key_valid[1, ::2] = False
    boolean = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])
    bias = key_bias(key_valid, q.dtype)
    assert bias.shape == (3, 1, 1, 7) and bias[2].eq(0).all() and bias[0, 0, 0, 3] == torch.finfo(torch.float32).min
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=bias), boolean, rtol=0, atol=1e-6)
