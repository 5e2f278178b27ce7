"""The shopformer network on tiny configs, pure torch (no Spark): shapes, padding, masking, learning, I/O."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from shopformer.model.network import (
    ModelConfig,
    ShopformerModel,
    batch_from_numpy,
    load_checkpoint,
    sampled_softmax_loss,
    save_checkpoint,
)

AGGS = ("recency_days", "n_events_7d", "view_to_cart_rate", "purchase_recency_days")
SEQ_COLS = (
    "seq_item",
    "seq_category",
    "seq_brand",
    "seq_event_type",
    "seq_hour",
    "seq_dow",
    "seq_rel_price",
    "seq_log_gap",
    "seq_log_age",
)


@pytest.fixture(scope="module", autouse=True)
def _transformers_imported() -> None:
    """Pay transformers' import (seconds of CPU on a busy machine) once, in setup, not in the first test."""
    import transformers.models.gpt2.modeling_gpt2  # noqa: F401


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: tiny models are fastest on one thread anyway
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def tiny(**kw: object) -> ModelConfig:
    fields = {"item_vocab_size": 30, "category_vocab_size": 7, "brand_vocab_size": 9, "max_len": 8}
    return ModelConfig.preset("tiny", **{**fields, "aggregate_names": AGGS, **kw})


def random_batch(
    c: ModelConfig, b: int = 4, n: int = 8, m: int = 5, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch in the model's convention, left-padded with zeros, seq_len from n down to 1."""
    g = torch.Generator().manual_seed(seed)
    seq_len = torch.tensor([max(1, n - 3 * i) for i in range(b)])
    real = torch.arange(n)[None, :] >= n - seq_len[:, None]  # [B, N]

    def ints(high: int) -> torch.Tensor:
        return torch.randint(1, high, (b, n), generator=g) * real

    def floats(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, n, generator=g)) * real

    batch = {
        "seq_len": seq_len,
        "seq_item": ints(c.item_vocab_size),
        "seq_category": ints(c.category_vocab_size),
        "seq_brand": ints(c.brand_vocab_size),
        "seq_event_type": ints(5),
        "seq_hour": ints(25),
        "seq_dow": ints(8),
        "seq_rel_price": floats(0.5, 1.5),
        "seq_log_gap": floats(0, 15),
        "seq_log_age": floats(0, 8),
        "aggregates": torch.rand(b, len(c.aggregate_names), generator=g) * 20,
        "label_propensity": torch.randint(0, 2, (b,), generator=g),
        "label_churn": torch.randint(0, 2, (b,), generator=g),
        "price_item": torch.randint(1, c.item_vocab_size, (b, m), generator=g),
        "price_rel_price": 0.6 + 0.8 * torch.rand(b, m, generator=g),
        "price_bought": torch.randint(0, 2, (b, m), generator=g),
    }
    if c.aggregate_names == AGGS:
        batch["aggregates"][0, 3] = torch.nan  # a user who never purchased
    return batch


def test_forward_shapes_of_every_output() -> None:
    c = tiny(text_dim=6)
    model = ShopformerModel(c).eval()
    model.set_item_text(np.array([2, 5, 29]), np.random.default_rng(0).normal(size=(3, 6)))
    b = random_batch(c, b=3, n=8, m=5)
    out = model(b)
    assert out["user_vector"].shape == (3, 32) and out["hidden"].shape == (3, 8, 32)
    text = model.embed.item_text
    assert float(text[3].abs().sum()) == 0.0 < float(text[5].abs().sum())  # ids without text stay 0
    assert out["propensity_logit"].shape == out["churn_logit"].shape == (3,)
    assert out["conversion_logit"].shape == (3, 5) and out["mask"].shape == (3, 8)
    assert model.elasticity(b, out).shape == (3,)
    assert model.item_logits(out["hidden"]).shape == (3, 8, 30)
    pred = model.predict(b, top_k=4, min_item_id=3)
    assert pred["next_items"].shape == (3, 4) and bool((pred["next_items"] >= 3).all())
    assert set(pred) >= {"propensity", "churn", "price_elasticity", "user_vector", "next_item_scores"}
    assert all(torch.isfinite(v).all() for v in pred.values())
    no_candidates = {k: v for k, v in b.items() if not k.startswith("price_")}
    assert "conversion_logit" not in model(no_candidates)
    losses = model.losses(b, out, {"next_item": 0.5})
    assert set(losses) == {"propensity", "churn", "conversion", "next_item", "total"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_padding_never_changes_outputs_and_seq_len_one_works() -> None:
    c = tiny()
    model = ShopformerModel(c).eval()
    b = random_batch(c, b=4, n=8)
    assert b["seq_len"].tolist() == [8, 5, 2, 1]
    out = model(b)
    noisy = {k: v.clone() for k, v in b.items()}
    pad = ~out["mask"]
    for col in SEQ_COLS:  # garbage at every padded position of every sequence column
        noisy[col][pad] = torch.randint(1, 5, (int(pad.sum()),)).to(noisy[col].dtype)
    out2 = model(noisy)
    for key in ("user_vector", "propensity_logit", "churn_logit", "conversion_logit"):
        torch.testing.assert_close(out[key], out2[key])
    torch.testing.assert_close(out["hidden"][out["mask"]], out2["hidden"][out["mask"]])
    torch.testing.assert_close(model.elasticity(b, out), model.elasticity(noisy, out2))
    # the same events with more left padding (a longer array): the same user
    longer = tiny(max_len=12)
    model12 = ShopformerModel(longer).eval()
    model12.load_state_dict(_resized_positions(model.state_dict(), model12.state_dict()))
    wide = {k: torch.nn.functional.pad(v, (4, 0)) if k in SEQ_COLS else v for k, v in b.items()}
    torch.testing.assert_close(model12(wide)["user_vector"], out["user_vector"])
    assert torch.isfinite(out["user_vector"][3]).all()  # seq_len = 1


def _resized_positions(small: dict, big: dict) -> dict:
    """Copy of ``small`` weights into ``big`` shapes (only the position table differs: its first rows)."""
    out = {}
    for k, v in small.items():
        out[k] = big[k].clone()
        out[k][tuple(slice(0, s) for s in v.shape)] = v
    return out


def test_backward_gives_finite_gradients_to_every_trained_parameter() -> None:
    c = tiny(text_dim=4, n_negatives=8, plr_frequencies=3)  # PLR on: its frequencies learn too
    model = ShopformerModel(c).train()
    model.set_item_text(np.arange(1, 30), np.random.default_rng(1).normal(size=(29, 4)))
    model.scaler.fit(np.random.default_rng(2).random((50, len(AGGS))) * 10)
    b = random_batch(c, b=6)
    losses = model.losses(b, model(b), {"next_item": 1.0})
    losses["total"].backward()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained and not any(n.startswith("backbone.wte") for n in trained)
    assert [n for n, p in trained.items() if p.grad is None] == []
    assert [n for n, p in trained.items() if not torch.isfinite(p.grad).all()] == []
    assert all(float(p.grad.abs().sum()) > 0 for n, p in trained.items() if "conversion" in n or "slope" in n)
    assert {"plr.freq", "plr.weight", "plr.bias"} <= set(trained)


def test_plr_embeddings_let_a_linear_read_out_learn_a_u_shaped_feature() -> None:
    """What PLR is for: "too small or too large" (e.g. basket size) is a threshold pair a linear map on the
    value cannot express; on PLR embeddings of it a linear read-out learns it in a few hundred steps."""
    from sklearn.metrics import roc_auc_score

    from shopformer.model.network import PeriodicEmbedding

    z = torch.randn(4000, 1)
    y = (z.abs() > 1.0).float()[:, 0]  # [B]
    aucs = {}
    for name, features in {"value": lambda x: x, "plr": PeriodicEmbedding(1, 8, 8, sigma=0.3)}.items():
        width = features(z[:2]).shape[1]
        read = torch.nn.Linear(width, 1)
        params = [*read.parameters(), *(features.parameters() if name == "plr" else [])]
        opt = torch.optim.Adam(params, lr=0.03)
        for _ in range(300):
            loss = F.binary_cross_entropy_with_logits(read(features(z)).squeeze(-1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            aucs[name] = roc_auc_score(y.numpy(), read(features(z)).squeeze(-1).numpy())
    assert aucs["plr"] > 0.95 and aucs["value"] < 0.6, aucs


def test_missing_labels_are_masked_out_of_every_loss() -> None:
    c = tiny()
    model = ShopformerModel(c).eval()
    cols = _snapshot_columns(c, b=4)
    cols["label_churn"] = pd.Series([1.0, None, 0.0, np.nan])  # nulls as None or NaN
    b = batch_from_numpy(cols, AGGS)
    assert b["label_churn"].tolist() == [1, -1, 0, -1]
    assert b["price_bought"][1].tolist() == [1, -1, -1, -1] and b["price_bought"][3].tolist() == [-1] * 4
    losses = model.losses(b, model(b))
    keep = [0, 2]  # rows with a churn label: the loss is theirs alone
    sub = {k: v[keep] for k, v in b.items()}
    torch.testing.assert_close(losses["churn"], model.losses(sub, model(sub))["churn"])
    # values beyond price_n_views (and for a null price_n_views) are not labels: changing them changes nothing
    cols["price_bought"] = pd.Series([[1, 0, 0, 1], [1, 1, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    cols["price_item"] = pd.Series([[3, 4, 5, 6], [7, 9, 9, 9], [2, 2, 2, 2], [9, 9, 9, 9]])
    b2 = batch_from_numpy(cols, AGGS)
    torch.testing.assert_close(losses["conversion"], model.losses(b2, model(b2))["conversion"])
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="unknown weight"):
        model.losses(b, model(b), {"propensty": 1.0})
    nothing = {k: v for k, v in b.items() if k not in ("label_propensity", "label_churn")}
    assert model.losses(nothing, model(nothing))["propensity"].item() == 0.0


def _snapshot_columns(c: ModelConfig, b: int) -> dict[str, object]:
    """Columns as a pandas UDF / Petastorm would hand them over: object arrays of arrays, None for nulls."""
    t = random_batch(c, b=b, n=c.max_len)
    cols: dict[str, object] = {k: pd.Series(list(t[k].numpy())) for k in SEQ_COLS}
    cols["seq_len"] = t["seq_len"].numpy()
    cols |= {name: t["aggregates"][:, i].numpy() for i, name in enumerate(AGGS)}
    cols["label_propensity"] = pd.Series([1, 0, None, 1], dtype="Int64").astype(object)
    cols["price_n_views"] = pd.Series([4, 1, 0, None], dtype=object)
    cols["price_item"] = pd.Series([[3, 4, 5, 6], [7, 0, 0, 0], [0, 0, 0, 0], None])
    cols["price_rel_price"] = pd.Series([[0.8, 1.0, 1.2, 0.9], [1.1, 0, 0, 0], [0.0] * 4, None])
    cols["price_bought"] = pd.Series([[1, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], None])
    return cols


def test_batch_from_numpy_types_and_conventions() -> None:
    c = tiny()
    cols = _snapshot_columns(c, b=4)
    b = batch_from_numpy(cols, AGGS)
    assert b["seq_item"].dtype == torch.int64 and b["seq_item"].shape == (4, 8)
    assert b["seq_log_gap"].dtype == torch.float32 and b["aggregates"].shape == (4, 4)
    assert b["label_propensity"].tolist() == [1, 0, -1, 1]
    assert b["price_item"].shape == (4, 4) and b["price_item"][3].tolist() == [0] * 4
    assert bool(torch.isnan(b["aggregates"][0, 3]))  # null stays NaN: the scaler flags it
    del cols["seq_dow"]
    with pytest.raises(KeyError, match="seq_dow"):
        batch_from_numpy(cols, AGGS)


def cycle_batch(c: ModelConfig, b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Toy sequences where item k is always followed by k + 1 (ids 2..21, wrapping), random padding."""
    n = c.max_len
    seq_len = torch.randint(2, n + 1, (b,), generator=g)
    start = torch.randint(0, 20, (b, 1), generator=g)
    items = 2 + (start + torch.arange(n)[None, :] - (n - seq_len[:, None])) % 20  # [B, N]
    real = torch.arange(n)[None, :] >= n - seq_len[:, None]
    batch = {
        col: real.long() for col in SEQ_COLS if col not in ("seq_rel_price", "seq_log_gap", "seq_log_age")
    }
    batch |= {"seq_item": items * real, "seq_len": seq_len, "seq_rel_price": real.float()}
    batch |= {"seq_log_gap": 5 * real.float(), "seq_log_age": 2 * real.float()}
    return batch


def test_pretraining_learns_a_next_item_pattern() -> None:
    c = tiny(aggregate_names=(), n_negatives=12, dropout=0.0)
    model = ShopformerModel(c)
    g = torch.Generator().manual_seed(1)
    probe = cycle_batch(c, 64, g)

    def full_loss() -> float:  # evaluation: the exact full-softmax next-item loss
        with torch.no_grad():
            return float(model.pretrain_loss(probe, n_negatives=0))

    before = full_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampled = []
    for _ in range(100):
        loss = model.pretrain_loss(cycle_batch(c, 32, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sampled.append(loss.item())
    assert before > 0.9 * math.log(28)  # ~ uniform over the catalog at init
    assert full_loss() < 0.5 * before
    assert np.mean(sampled[-10:]) < 0.5 * np.mean(sampled[:10])


def test_sampled_softmax_learns_a_repeating_pattern_and_matches_full_softmax_at_zero() -> None:
    table = torch.nn.Embedding(50, 16)
    context = torch.nn.Embedding(10, 16)
    ctx, targets = (
        torch.arange(10).repeat(8),
        (torch.arange(10).repeat(8) * 3) % 49 + 1,
    )  # [80] context -> item
    log_q = torch.log(torch.linspace(1, 5, 50) / torch.linspace(1, 5, 50)[1:].sum()).index_fill(
        0, torch.tensor([0]), -torch.inf
    )  # non-uniform negatives: logQ correction in use
    opt = torch.optim.Adam([*table.parameters(), *context.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        loss = sampled_softmax_loss(context(ctx), targets, table, 50, n_negatives=10, log_q=log_q)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])
    h, t = context(ctx), targets.clone()
    t[:5] = 0  # ignored positions
    logits = h[5:] @ table.weight.T
    logits[:, 0] = -torch.inf
    expected = torch.nn.functional.cross_entropy(logits, t[5:])
    torch.testing.assert_close(sampled_softmax_loss(h, t, table, 50, n_negatives=0), expected)


def test_elasticity_is_negative_and_steeper_for_users_who_react_more_to_price() -> None:
    c = tiny(aggregate_names=("price_trait",), dropout=0.0)
    model = ShopformerModel(c)
    g = torch.Generator().manual_seed(3)
    slope = torch.tensor([1.0, 5.0])  # simulated log-price slope of low / high sensitivity users

    def batch(b: int) -> dict[str, torch.Tensor]:
        x = random_batch(c, b=b, n=8, m=8, seed=int(torch.randint(0, 10**6, (1,), generator=g)))
        trait = torch.randint(0, 2, (b,), generator=g)
        p = torch.sigmoid(-slope[trait][:, None] * x["price_rel_price"].log())  # [B, M]
        x["price_bought"] = torch.bernoulli(p, generator=g).long()
        x["aggregates"], x["trait"] = trait[:, None].float(), trait
        return x

    model.scaler.fit(np.array([[0.0], [1.0]]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    weights = {"propensity": 0.0, "churn": 0.0, "conversion": 1.0}
    for _ in range(150):
        x = batch(64)
        loss = model.losses(x, model(x), weights)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = batch(200)
    e = model.predict(x)["price_elasticity"]
    low, high = float(e[x["trait"] == 0].mean()), float(e[x["trait"] == 1].mean())
    # true values for these curves at p(0.9) vs p(1.1): about -0.5 (low) and -2.5 (high)
    assert bool((e < 0).all()) and -1.2 < low < -0.1 and -3.5 < high < -1.5, (low, high)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path) -> None:
    c = tiny(text_dim=3)
    model = ShopformerModel(c)
    model.set_item_text(np.array([4, 7]), np.ones((2, 3)))
    model.set_item_counts(np.arange(30) + 1.0)
    model.scaler.fit(np.random.default_rng(4).random((20, len(AGGS))) * 5)
    extra = {"vocab_version": "v2024-02-26", "vocab": {"item": {"sku-1": 66}}, "hash_buckets": 64}
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, c, extra)
    loaded, config, extra2 = load_checkpoint(path)
    assert config == c and extra2 == extra and bool(loaded.scaler.fitted)
    b = random_batch(c)
    model.eval()
    for key, value in model(b).items():
        torch.testing.assert_close(loaded(b)[key], value, rtol=0, atol=0)
    torch.testing.assert_close(loaded.elasticity(b), model.elasticity(b), rtol=0, atol=0)
    buf = io.BytesIO()  # e.g. straight into an MLflow artifact
    save_checkpoint(buf, model, extra=extra)
    buf.seek(0)
    assert load_checkpoint(buf)[1] == c
    with pytest.raises(ValueError, match="not a shopformer"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


def test_a_task_routed_to_its_best_epoch_is_scored_by_that_epoch_and_survives_a_checkpoint() -> None:
    """Per-task early stopping (training.py): churn served by one model, propensity by another epoch's
    weights; the checkpoint carries the route, with the shared text vectors stored once."""
    c = tiny(text_dim=64, item_vocab_size=2000)
    main = ShopformerModel(c)
    main.set_item_text(np.arange(1, 2000), np.random.default_rng(0).random((1999, 64)))
    main.scaler.fit(np.random.default_rng(4).random((20, len(AGGS))) * 5)
    epoch1 = ShopformerModel(c)  # another epoch of the same run: other weights, same frozen buffers
    epoch1.load_state_dict(main.state_dict())
    with torch.no_grad():
        for p in epoch1.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    b = random_batch(c)
    alone = main.eval().predict(b)
    main.set_routes({"propensity": epoch1.state_dict()})
    routed = main.eval().predict(b)
    torch.testing.assert_close(routed["propensity"], epoch1.eval().predict(b)["propensity"], rtol=0, atol=0)
    torch.testing.assert_close(routed["propensity_summary"], epoch1.predict(b)["summary"], rtol=0, atol=0)
    assert not torch.allclose(routed["propensity"], alone["propensity"])  # the route changed the score
    for key in ("churn", "churn_summary", "user_vector", "price_elasticity"):
        torch.testing.assert_close(routed[key], alone[key], rtol=0, atol=0)
    assert main.routes["propensity"].embed.item_text.data_ptr() == main.embed.item_text.data_ptr()
    buf, plain = io.BytesIO(), io.BytesIO()
    save_checkpoint(buf, main)
    save_checkpoint(plain, epoch1)
    buf.seek(0)
    loaded = load_checkpoint(buf)[0]
    assert list(loaded.routes) == ["propensity"] and loaded.for_task("churn") is loaded
    for key, value in routed.items():
        torch.testing.assert_close(loaded.predict(b)[key], value, rtol=0, atol=0)
    # the text table (2000 x 64 floats, 512 kB) is saved once: a route costs its weights only
    assert buf.getbuffer().nbytes < 2 * plain.getbuffer().nbytes - 2000 * 64 * 4 // 2


def test_tasks_routed_to_the_same_epoch_share_one_route_and_one_forward_pass() -> None:
    """Both tasks best at one epoch (the 20 M-event bench's model): one route, run once per batch, saved
    once; before, each task ran its own copy, three transformer passes per scored row instead of two."""
    c = tiny()
    main, epoch0 = ShopformerModel(c), ShopformerModel(c)
    main.scaler.fit(np.random.default_rng(4).random((20, len(AGGS))) * 5)
    epoch0.load_state_dict(main.state_dict())
    with torch.no_grad():
        for p in epoch0.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    state = epoch0.state_dict()
    main.set_routes({"propensity": state, "churn": {k: v.clone() for k, v in state.items()}})
    assert main.routes["churn"] is main.routes["propensity"]
    calls = []
    main.routes["churn"].register_forward_hook(lambda *_: calls.append(1))
    b = random_batch(c)
    got, want = main.eval().predict(b), epoch0.eval().predict(b)
    assert len(calls) == 1
    for task in ("propensity", "churn"):
        torch.testing.assert_close(got[task], want[task], rtol=0, atol=0)
    buf, plain = io.BytesIO(), io.BytesIO()
    save_checkpoint(buf, main)
    save_checkpoint(plain, epoch0)
    buf.seek(0)
    loaded = load_checkpoint(buf)[0]
    assert loaded.routes["churn"] is loaded.routes["propensity"]
    assert buf.getbuffer().nbytes < 2.2 * plain.getbuffer().nbytes  # the shared route's weights once


def test_transfer_copies_the_network_but_not_another_shops_vocabulary() -> None:
    source = ShopformerModel(tiny(text_dim=3))
    source.scaler.fit(np.random.default_rng(1).random((20, len(AGGS))) * 5)
    other_shop = ShopformerModel(
        tiny(text_dim=3, aggregate_names=AGGS[:3])
    )  # same vocab sizes, fewer features
    copied, skipped = other_shop.transfer_from(source.state_dict(), same_vocab=False)
    torch.testing.assert_close(
        other_shop.backbone.h[0].attn.c_attn.weight, source.backbone.h[0].attn.c_attn.weight
    )
    torch.testing.assert_close(other_shop.embed.text_proj.weight, source.embed.text_proj.weight)
    torch.testing.assert_close(other_shop.churn_head.weight, source.churn_head.weight)
    # Same shapes, other vocabulary: the item table keeps its fresh weights; the fusion MLP differs in shape.
    assert not torch.equal(other_shop.embed.item.weight, source.embed.item.weight)
    assert {"embed.item.weight", "item_log_q", "fusion.0.weight", "scaler.mean"} <= set(skipped)
    assert not bool(other_shop.scaler.fitted) and "backbone.wpe.weight" in copied
    same_shop = ShopformerModel(tiny(text_dim=3))
    same_shop.transfer_from(source.state_dict(), same_vocab=True)
    torch.testing.assert_close(same_shop.embed.item.weight, source.embed.item.weight)
    torch.testing.assert_close(same_shop.fusion[0].weight, source.fusion[0].weight)


def test_warm_start_makes_the_heads_a_logistic_regression_on_the_aggregates() -> None:
    from sklearn.linear_model import LogisticRegression

    from shopformer.model.job import _warm_start_wide

    rng = np.random.default_rng(5)
    train = pd.DataFrame(rng.random((400, len(AGGS))) * 10, columns=list(AGGS))
    train.loc[::7, "view_to_cart_rate"] = np.nan  # nulls go through the scaler's missing flags
    train["label_propensity"] = (train["recency_days"] + rng.normal(0, 2, 400) < 5).astype(float)
    train["label_churn"] = np.where(np.arange(400) % 3 == 0, np.nan, (train["n_events_7d"] < 3).astype(float))
    model = ShopformerModel(tiny())
    model.scaler.fit(train[list(AGGS)].to_numpy())
    _warm_start_wide(model, train, list(AGGS))
    b = random_batch(tiny(), b=len(train), n=8)
    b["aggregates"] = torch.as_tensor(train[list(AGGS)].to_numpy(), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out, x = model(b), model.scaler(b["aggregates"]).numpy()
    for task in ("propensity", "churn"):
        y = train[f"label_{task}"].to_numpy()
        keep = ~np.isnan(y)
        expected = LogisticRegression(C=1.0, max_iter=2000).fit(x[keep], y[keep]).decision_function(x)
        np.testing.assert_allclose(out[f"{task}_logit"].numpy(), expected, atol=1e-4)


def test_config_presets_are_frozen_and_round_trip_through_json() -> None:
    sizes = {"item_vocab_size": 100, "category_vocab_size": 10, "brand_vocab_size": 10}
    dims = {
        s: (ModelConfig.preset(s, **sizes).d_model, ModelConfig.preset(s, **sizes).n_layers)
        for s in ("tiny", "small", "base")
    }
    assert dims == {"tiny": (32, 1), "small": (64, 2), "base": (128, 4)}
    c = ModelConfig.preset("small", **sizes, aggregate_names=AGGS, text_dim=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.d_model = 7  # type: ignore[misc]
    assert ModelConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**c.to_dict(), "d_modle": 3})
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig.preset("tiny", **sizes, n_heads=3)
    with pytest.raises(ValueError, match="size"):
        ModelConfig.preset("huge", **sizes)
