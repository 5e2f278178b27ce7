"""The shopformer network: event tokens -> causal transformer -> user vector -> multi-task heads.

Read top to bottom: config, input conventions, aggregate scaler, event embedding, losses, the model,
checkpoints. Shapes: B users, N sequence positions (left-padded, newest last), D = d_model, F aggregates,
M price candidates (future views), V item vocabulary size. docs/model.md explains the choices.

Batch convention (``batch_from_numpy`` builds it from gold.user_snapshots columns):
ids int64, continuous values float32, labels int64 with ``-1`` = missing (null, or no candidate there),
``aggregates`` float32 [B, F] with NaN = null (the model's own scaler handles it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shopformer.schemas import SEQ_FLOAT_COLUMNS, SEQ_INT_COLUMNS, TASK_LABELS, TASKS

if TYPE_CHECKING:
    from transformers import GPT2Model

SEQ_INT = SEQ_INT_COLUMNS  # the sequence inputs and labels: schemas.py holds the column contract
SEQ_FLOAT = SEQ_FLOAT_COLUMNS
LABELS = tuple(TASK_LABELS.values())
MISSING = -1  # label value meaning "no label": null in the table, or a padded candidate slot
N_EVENT_TYPES, N_HOURS, N_DOWS = 5, 25, 8  # id ranges incl. padding 0 (docs/snapshots.md encodings)
MIN_REL_PRICE = 1e-3  # log(relative price) is clamped here: padding holds 0.0
DEFAULT_LOSS_WEIGHTS = {"propensity": 1.0, "churn": 1.0, "conversion": 1.0, "next_item": 0.0}
CHECKPOINT_FORMAT = "shopformer-model/1"
PRESETS = {"tiny": (32, 1, 2), "small": (64, 2, 4), "base": (128, 4, 4)}  # d_model, n_layers, n_heads


@dataclass(frozen=True)
class ModelConfig:
    """Everything that rebuilds the network; stored in checkpoints (``to_dict``) so scoring needs no conf."""

    item_vocab_size: int  # item embedding rows: vocab.vocab_sizes() of kind 'item' (id 0 = padding)
    category_vocab_size: int  # vocab.vocab_sizes() of kind 'category'
    brand_vocab_size: int  # vocab.vocab_sizes() of kind 'brand'
    max_len: int = 50  # N = snapshots.max_len: sequence array length, size of the position table
    aggregate_names: tuple[str, ...] = ()  # aggregate columns fused into the user vector, in order (F)
    text_dim: int = 0  # width of gold.item_embeddings vectors; 0 = the catalog has no item text
    d_model: int = 64  # D: token, hidden and user-vector width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads; must divide d_model
    ffn_mult: int = 4  # feed-forward width = ffn_mult * d_model
    dropout: float = 0.1  # embeddings, attention, residuals and the fusion MLP
    n_negatives: int = 256  # sampled-softmax negatives per batch, shared by all positions; 0 = full softmax
    elasticity_items: int = 5  # elasticity averages over the user's newest K real sequence events
    elasticity_prices: tuple[float, float] = (0.9, 1.1)  # relative prices of the finite difference
    wide: bool = False  # + a linear path from the scaled aggregates to the propensity / churn logits
    plr_frequencies: int = 0  # k > 0: each aggregate also enters the fusion as PLR periodic embeddings
    plr_dim: int = 4  # width of each aggregate's PLR embedding (F * plr_dim more fusion inputs)

    def __post_init__(self) -> None:
        sizes = (self.item_vocab_size, self.category_vocab_size, self.brand_vocab_size)
        if min(sizes) < 2 or min(self.max_len, self.d_model, self.n_layers, self.n_heads) < 1:
            raise ValueError(f"ModelConfig: vocab sizes must be >= 2 and dimensions >= 1: {self}")
        if self.d_model % self.n_heads or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig: n_heads must divide d_model and 0 <= dropout < 1: {self}")
        if not 0 < self.elasticity_prices[0] < self.elasticity_prices[1] or self.elasticity_items < 1:
            raise ValueError(f"ModelConfig: need 0 < lo < hi prices and K >= 1 for elasticity: {self}")

    @property
    def n_aggregates(self) -> int:
        return len(self.aggregate_names)

    @classmethod
    def preset(cls, size: str, **fields_: Any) -> ModelConfig:
        """tiny (tests, laptops) / small (default) / base; ``fields_`` gives vocab sizes and data fields."""
        if size not in PRESETS:
            raise ValueError(f"ModelConfig.preset: size must be one of {sorted(PRESETS)}, got {size!r}")
        d, layers, heads = PRESETS[size]
        return cls(**{"d_model": d, "n_layers": layers, "n_heads": heads, "wide": True, **fields_})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (tuples become lists) for checkpoints and MLflow params."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"ModelConfig.from_dict: unknown keys {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def vocab_fields(sizes: Mapping[str, int]) -> dict[str, int]:
    """``{'item': n, ...}`` (collected ``vocab.vocab_sizes()``) -> the ``*_vocab_size`` config fields."""
    return {f"{kind}_vocab_size": int(sizes[kind]) for kind in ("item", "category", "brand")}


def _matrix(col: Any, dtype: type, fill: float) -> np.ndarray:
    """An array column (2-D array, or 1-D object array of lists / arrays / None) -> dense [B, L]."""
    a = np.asarray(col)
    if a.dtype == object or a.ndim == 1:
        rows = [np.asarray([] if r is None else r, dtype=np.float64) for r in a]
        out = np.full((len(rows), max((len(r) for r in rows), default=0)), np.nan)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
    else:
        out = a.astype(np.float64)
    return np.where(np.isnan(out), fill, out).astype(dtype)


def _vector(col: Any, fill: float) -> np.ndarray:
    """A scalar column with nulls (None / NaN) -> float64 [B], nulls replaced by ``fill``."""
    if hasattr(col, "to_numpy"):  # pandas: nullable columns hold pd.NA, object ones None
        col = col.to_numpy(dtype=np.float64, na_value=np.nan)
    v = np.asarray(col, dtype=np.float64)  # None -> NaN
    return np.where(np.isnan(v), fill, v)


def batch_from_numpy(columns: Mapping[str, Any], aggregate_names: Sequence[str] = ()) -> dict[str, Tensor]:
    """Snapshot columns (pandas / Petastorm numpy; nulls as None or NaN) -> the model's batch dict.

    Labels and price candidates are optional (scoring has none). Price slots at or beyond
    ``price_n_views`` (or all, when it is null) get ``price_bought = -1``, so they never reach a loss.
    """
    missing = [c for c in (*SEQ_INT, *SEQ_FLOAT, "seq_len", *aggregate_names) if c not in columns]
    if missing:
        raise KeyError(f"batch_from_numpy: missing snapshot columns {missing}")
    b: dict[str, Tensor] = {c: torch.from_numpy(_matrix(columns[c], np.int64, 0)) for c in SEQ_INT}
    b |= {c: torch.from_numpy(_matrix(columns[c], np.float32, 0.0)) for c in SEQ_FLOAT}
    b["seq_len"] = torch.from_numpy(_vector(columns["seq_len"], 0).astype(np.int64))
    aggs = [_vector(columns[c], np.nan) for c in aggregate_names]
    b["aggregates"] = torch.from_numpy(np.stack(aggs, 1) if aggs else np.zeros((len(b["seq_len"]), 0)))
    b["aggregates"] = b["aggregates"].float()
    b |= {c: torch.from_numpy(_vector(columns[c], MISSING).astype(np.int64)) for c in LABELS if c in columns}
    if "price_item" in columns:
        n = _vector(columns["price_n_views"], 0)
        bought = _matrix(columns["price_bought"], np.int64, MISSING)
        real = np.arange(bought.shape[1])[None, :] < n[:, None]  # [B, M]
        b["price_item"] = torch.from_numpy(np.where(real, _matrix(columns["price_item"], np.int64, 0), 0))
        b["price_rel_price"] = torch.from_numpy(_matrix(columns["price_rel_price"], np.float32, 1.0))
        b["price_bought"] = torch.from_numpy(np.where(real, bought, MISSING))
    return b


def is_count_like(name: str) -> bool:
    """Heavy-tailed non-negative aggregates (counts, amounts, day spans) get log1p before standardizing."""
    return name.startswith(("n_", "revenue", "active_days", "seq_distinct")) or name.endswith("_days")


class FeatureScaler(nn.Module):
    """Raw aggregates [B, F] (NaN = null) -> [standardized values, is-missing flags] [B, 2F].

    Statistics are buffers of the model, so training and scoring can never preprocess differently, and a
    null (e.g. purchase recency of a user who never bought) stays distinguishable from an average value.
    """

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.register_buffer("log1p", torch.tensor([is_count_like(c) for c in names], dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(len(names)))
        self.register_buffer("std", torch.ones(len(names)))
        self.register_buffer("fitted", torch.tensor(False))

    def _transform(self, x: Tensor) -> Tensor:
        x = torch.where(torch.isfinite(x), x, torch.nan)  # [B, F]; inf counts as null
        return torch.where(self.log1p, torch.log1p(x.clamp(min=0)), x)

    @torch.no_grad()
    def fit(self, x: np.ndarray) -> FeatureScaler:
        """Mean / std per column of the transformed training aggregates [n, F], ignoring nulls."""
        t = self._transform(torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.mean.device))
        known = ~torch.isnan(t)
        count = known.sum(0).clamp(min=1)
        mean = torch.where(known, t, 0.0).sum(0) / count  # [F]
        std = (torch.where(known, (t - mean) ** 2, 0.0).sum(0) / count).sqrt()
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std > 1e-6, std, 1.0))  # constant columns: no division blow-up
        self.fitted.fill_(True)
        return self

    def stats(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "log1p": self.log1p.tolist()}

    def forward(self, x: Tensor) -> Tensor:
        t = self._transform(x.float())  # [B, F]
        missing = torch.isnan(t)
        z = torch.where(missing, 0.0, (t - self.mean) / self.std).clamp(-10.0, 10.0)
        return torch.cat([z, missing.float()], dim=-1)  # [B, 2F]


class PeriodicEmbedding(nn.Module):
    """PLR numerical embeddings (Gorishniy et al., 2022): each standardized aggregate z_f [B, F] ->
    ReLU(W_f [sin(2pi c_f z), cos(2pi c_f z)] + b_f) [B, F, E], with k learned frequencies c_f per feature.
    Thresholds and U-shapes of one feature (what GBDT finds in aggregates) become a linear read-out of
    these, where an MLP on the raw value needs many units and steps; nuFormer reports this joint fusion
    beating GBT baselines where a plain DNN head did not."""

    def __init__(self, n_features: int, k: int, dim: int, sigma: float = 0.1):
        super().__init__()
        self.freq = nn.Parameter(torch.randn(n_features, k) * sigma)  # [F, k]
        self.weight = nn.Parameter(torch.randn(n_features, 2 * k, dim) / math.sqrt(2 * k))  # [F, 2k, E]
        self.bias = nn.Parameter(torch.zeros(n_features, dim))  # [F, E]

    def forward(self, z: Tensor) -> Tensor:
        angle = 2 * math.pi * self.freq[None] * z[..., None]  # [B, F, k]
        periodic = torch.cat([angle.sin(), angle.cos()], dim=-1)  # [B, F, 2k]
        return F.relu(torch.einsum("bfk,fke->bfe", periodic, self.weight) + self.bias).flatten(1)  # [B, F*E]


class EventEmbedding(nn.Module):
    """One D-dim token per event: the sum of its field embeddings (docs/model.md: why a sum)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        d = c.d_model
        self.item = nn.Embedding(c.item_vocab_size, d, padding_idx=0)
        self.category = nn.Embedding(c.category_vocab_size, d, padding_idx=0)
        self.brand = nn.Embedding(c.brand_vocab_size, d, padding_idx=0)
        self.event_type = nn.Embedding(N_EVENT_TYPES, d, padding_idx=0)
        self.hour = nn.Embedding(N_HOURS, d, padding_idx=0)
        self.dow = nn.Embedding(N_DOWS, d, padding_idx=0)
        self.continuous = nn.Sequential(nn.Linear(3, d), nn.GELU(), nn.Linear(d, d))
        self.text_proj = nn.Linear(c.text_dim, d, bias=False) if c.text_dim else None
        if c.text_dim:  # frozen (a buffer): text vectors by vocab id, 0 = no text; fp16 halves its size
            self.register_buffer("item_text", torch.zeros(c.item_vocab_size, c.text_dim, dtype=torch.half))
        self.norm, self.drop = nn.LayerNorm(d), nn.Dropout(c.dropout)
        for emb in (self.item, self.category, self.brand, self.event_type, self.hour, self.dow):
            nn.init.normal_(emb.weight, std=0.02)  # GPT-2's scale: six summed tables stay O(0.05)
            emb.weight.data[0].zero_()

    def item_repr(self, ids: Tensor) -> Tensor:
        """[...] item ids -> [..., D]; the same table scores next items (tied) and conversion candidates."""
        e = self.item(ids)
        return e if self.text_proj is None else e + self.text_proj(self.item_text[ids].to(e.dtype))

    def forward(self, b: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        cont = torch.stack(  # [B, N, 3], each O(1): log_gap <= ~17, log_age <= ~9
            [b["seq_rel_price"].clamp(min=MIN_REL_PRICE).log(), b["seq_log_gap"] / 10, b["seq_log_age"] / 10],
            dim=-1,
        )
        x = self.item_repr(b["seq_item"]) + self.category(b["seq_category"]) + self.brand(b["seq_brand"])
        x = x + self.event_type(b["seq_event_type"]) + self.hour(b["seq_hour"]) + self.dow(b["seq_dow"])
        x = self.norm(x + self.continuous(cont))  # [B, N, D]
        return self.drop(x) * mask[..., None]  # padding tokens are exactly 0


def sampled_softmax_loss(
    hidden: Tensor,
    targets: Tensor,
    item_repr: Callable[[Tensor], Tensor],
    n_items: int,
    n_negatives: int,
    log_q: Tensor | None = None,
) -> Tensor:
    """Mean cross-entropy of each target item against ``n_negatives`` shared sampled items (logQ-corrected).

    hidden [..., D], targets [...] item ids (0 = no target, ignored). Negatives are drawn from
    ``exp(log_q)`` [V] (uniform over ids >= 1 when None); subtracting log q from every logit makes the
    estimate unbiased for non-uniform sampling; a sampled copy of the target is not a negative.
    ``n_negatives = 0`` is the full softmax over all V items (evaluation, small catalogs).
    """
    h, t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    h, t = h[t > 0], t[t > 0]  # [P, D], [P]
    if t.numel() == 0:
        return hidden.sum() * 0.0  # keeps the graph (DDP) with nothing to learn
    if n_negatives <= 0:
        logits = h @ item_repr(torch.arange(n_items, device=h.device)).T  # [P, V]
        return F.cross_entropy(logits.index_fill(1, torch.tensor([0], device=h.device), -torch.inf), t)
    if log_q is None:
        log_q = torch.full((n_items,), -math.log(n_items - 1), device=h.device)
        log_q[0] = -torch.inf
    neg = torch.multinomial(log_q.exp(), n_negatives, replacement=True)  # [S]
    pos = (h * item_repr(t)).sum(-1) - log_q[t]  # [P]
    negs = (h @ item_repr(neg).T - log_q[neg]).masked_fill(neg[None] == t[:, None], -torch.inf)  # [P, S]
    logits = torch.cat([pos[:, None], negs], dim=1)  # [P, 1 + S], the target is class 0
    return F.cross_entropy(logits, torch.zeros_like(t))


def masked_bce(logit: Tensor, label: Tensor | None) -> Tensor:
    """Mean binary cross-entropy over entries with a label (``label >= 0``); 0 (in the graph) if none."""
    if label is None:
        return logit.sum() * 0.0
    known = label >= 0
    loss = F.binary_cross_entropy_with_logits(logit, label.clamp(min=0).to(logit.dtype), reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def _gpt2(c: ModelConfig) -> GPT2Model:
    """The backbone, from a config (never downloaded). Imported here: transformers' modeling import costs
    seconds of CPU, which drivers that only build configs or batches should not pay."""
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(
        vocab_size=1,  # tokens arrive as inputs_embeds; GPT-2's own token table is unused (frozen)
        n_positions=c.max_len,
        n_embd=c.d_model,
        n_layer=c.n_layers,
        n_head=c.n_heads,
        n_inner=c.ffn_mult * c.d_model,
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        bos_token_id=None,
        eos_token_id=None,
        use_cache=False,
        attn_implementation="sdpa",
    )
    return GPT2Model(config)


class ShopformerModel(nn.Module):
    """Causal transformer over a user's events, fused with aggregates, with next-item and task heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c, d, f2 = config, config.d_model, 2 * config.n_aggregates
        self.config = c
        self.embed = EventEmbedding(c)
        self.backbone = _gpt2(c)
        self.backbone.wte.requires_grad_(False)
        self.scaler = FeatureScaler(c.aggregate_names)
        plr = c.plr_frequencies > 0 and c.n_aggregates > 0
        self.plr = PeriodicEmbedding(c.n_aggregates, c.plr_frequencies, c.plr_dim) if plr else None
        width = d + f2 + (c.n_aggregates * c.plr_dim if plr else 0)
        self.fusion = nn.Sequential(
            nn.Linear(width, 2 * d), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(2 * d, d)
        )
        self.fusion_norm = nn.LayerNorm(d)
        self.propensity_head, self.churn_head = nn.Linear(d, 1), nn.Linear(d, 1)
        # Wide & deep: a logistic model on the aggregates inside the heads, starting at zero, so the deep
        # part only has to learn what the aggregates do not already say (docs/model.md).
        self.wide = nn.Linear(f2, 2) if c.wide and f2 else None
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)
        self.conversion_base = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.price_slope = nn.Linear(d, 1)
        log_q = torch.full((c.item_vocab_size,), -math.log(c.item_vocab_size - 1))
        self.register_buffer("item_log_q", log_q.index_fill(0, torch.tensor([0]), -torch.inf))
        # Per-task early stopping (training.py): task -> this model's weights at that task's best
        # fine-tuning epoch, where it differs from this one's; a task without a route is served by self.
        self.routes = nn.ModuleDict()

    def for_task(self, task: str) -> ShopformerModel:
        """The model that serves ``task``'s score: its route, or this model."""
        return self.routes[task] if task in self.routes else self  # noqa: SIM401 (ModuleDict has no get)

    def set_routes(self, states: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Route each task to a copy of this model holding ``states[task]``. Buffers equal to this model's
        (item text vectors, scaler) are shared, so they are held and saved once."""
        self.routes = nn.ModuleDict()
        own = dict(self.named_buffers())
        for task, state in states.items():
            twin = next((t for t in self.routes if _same_state(states[t], state)), None)
            if twin is not None:  # both tasks best at the same epoch: one route, one forward pass
                self.routes[task] = self.routes[twin]
                continue
            route = ShopformerModel(self.config).to(next(self.parameters()).device)
            route.load_state_dict(state)
            for name, buf in route.named_buffers():
                if name in own and torch.equal(buf, own[name]):
                    owner, _, leaf = name.rpartition(".")
                    setattr(route.get_submodule(owner) if owner else route, leaf, own[name])
            self.routes[task] = route.train(self.training)

    def set_item_text(self, ids: np.ndarray | Tensor, vectors: np.ndarray | Tensor) -> None:
        """Item text vectors [K, text_dim] for unique vocab ids [K]; every other id gets no text (0)."""
        ids_t, vec = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(vectors, dtype=torch.float32)
        c = self.config
        if not c.text_dim or vec.shape != (len(ids_t), c.text_dim) or len(ids_t.unique()) != len(ids_t):
            raise ValueError(f"set_item_text: need text_dim > 0, unique ids, vectors [K, {c.text_dim}]")
        if len(ids_t) and (ids_t.min() < 1 or ids_t.max() >= c.item_vocab_size):
            raise ValueError(f"set_item_text: ids must lie in [1, {c.item_vocab_size})")
        self.embed.item_text.zero_()
        text = self.embed.item_text
        text[ids_t.to(text.device)] = vec.to(text.device, text.dtype)

    def transfer_from(self, state: Mapping[str, Tensor], *, same_vocab: bool) -> tuple[list[str], list[str]]:
        """Copy another model's weights where name and shape match: (copied, skipped) names.

        Vocabulary-bound tensors (item / category / brand tables, item frequencies and text vectors) are
        copied only under the same vocabulary version: ids of another shop mean other things. The scaler
        stays fitted on this data. What transfers: the transformer, event-type / time / price embeddings,
        the text projection (the shared sentence-encoder space bridges two catalogs) and the heads."""
        vocab_bound = ("embed.item.", "embed.category.", "embed.brand.", "embed.item_text", "item_log_q")
        own = self.state_dict()
        take = {
            k: v
            for k, v in state.items()
            if k in own
            and own[k].shape == v.shape
            and not k.startswith("scaler.")
            and (same_vocab or not k.startswith(vocab_bound))
        }
        self.load_state_dict(take, strict=False)
        return sorted(take), sorted(set(own) - set(take))

    def set_item_counts(self, counts: np.ndarray | Tensor, power: float = 0.75) -> None:
        """Sample negatives ~ count**power (word2vec's smoothing) instead of uniformly; counts [V]."""
        q = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0) ** power
        q[0] = 0.0  # padding is never a negative
        self.item_log_q.copy_((q / q.sum()).log().float())

    def encode(self, b: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Hidden states [B, N, D] and the real-event mask [B, N] (left padding: real events last)."""
        n = b["seq_item"].shape[1]
        if n > self.config.max_len:
            raise ValueError(f"sequence length {n} > config.max_len {self.config.max_len}")
        mask = torch.arange(n, device=b["seq_len"].device)[None, :] >= n - b["seq_len"][:, None]  # [B, N]
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)  # [B, N]: the oldest real event is position 0
        tokens = self.embed(b, mask)  # [B, N, D]
        out = self.backbone(inputs_embeds=tokens, attention_mask=mask.long(), position_ids=pos)
        return out.last_hidden_state, mask

    def forward(self, b: Mapping[str, Tensor]) -> dict[str, Tensor]:
        hidden, mask = self.encode(b)  # [B, N, D], [B, N]
        summary = hidden[:, -1]  # [B, D]: the newest event, always real when seq_len >= 1
        aggs = b.get("aggregates", summary.new_zeros(len(summary), 0))  # [B, F]
        out = {"hidden": hidden, "mask": mask, **self.heads(summary, self.scaler(aggs))}
        if "price_item" in b:
            user = out["user_vector"]
            out["conversion_logit"] = self.conversion_logit(user, b["price_item"], b["price_rel_price"])
        return out

    def heads(self, summary: Tensor, scaled: Tensor) -> dict[str, Tensor]:
        """Everything after the encoder: the user vector and the task logits from the sequence summary
        [B, D] and the scaled aggregates [B, 2F] (reasons re-run only this part, model/reasons.py)."""
        parts = [summary, scaled]  # [B, D], [B, 2F]
        if self.plr is not None:
            parts.append(self.plr(scaled[:, : self.config.n_aggregates]))  # [B, F*E] from the z part
        fused = self.fusion(torch.cat(parts, dim=-1))  # [B, D]
        user = self.fusion_norm(summary + fused)  # [B, D]: residual keeps the sequence signal direct
        wide = self.wide(scaled) if self.wide is not None else user.new_zeros(len(user), 2)  # [B, 2]
        return {
            "user_vector": user,
            "propensity_logit": self.propensity_head(user).squeeze(-1) + wide[:, 0],  # [B]
            "churn_logit": self.churn_head(user).squeeze(-1) + wide[:, 1],  # [B]
        }

    def conversion_logit(self, user: Tensor, items: Tensor, rel_price: Tensor) -> Tensor:
        """logit P(buy | view) = base(user, item) + slope(user) * log(rel_price); slope < 0 always.

        user [B, D], items [B, M], rel_price [B, M] -> [B, M]. Logit-linear in log price: smooth, the
        classic logit demand curve, and a per-user price trait identifiable from a few views each.
        """
        item = self.embed.item_repr(items)  # [B, M, D]
        u = user[:, None, :].expand_as(item)  # [B, M, D]
        base = self.conversion_base(torch.cat([u, item, u * item], dim=-1)).squeeze(-1)  # [B, M]
        slope = -F.softplus(self.price_slope(user))  # [B, 1]
        return base + slope * rel_price.clamp(min=MIN_REL_PRICE).log()

    def elasticity(self, b: Mapping[str, Tensor], out: Mapping[str, Tensor] | None = None) -> Tensor:
        """[B] mean over the newest K real events' items of (log p(hi) - log p(lo)) / (log hi - log lo)."""
        out = out if out is not None else self(b)
        lo, hi = self.config.elasticity_prices
        k = min(self.config.elasticity_items, b["seq_item"].shape[1])
        items, real = b["seq_item"][:, -k:], out["mask"][:, -k:]  # [B, K]
        user = out["user_vector"]  # [B, D]
        log_p = [
            F.logsigmoid(self.conversion_logit(user, items, torch.full_like(items, r, dtype=torch.float)))
            for r in (lo, hi)
        ]  # 2 x [B, K]
        e = (log_p[1] - log_p[0]) / (math.log(hi) - math.log(lo))  # [B, K]
        return (e * real).sum(1) / real.sum(1).clamp(min=1)

    def item_logits(self, h: Tensor, min_item_id: int = 1) -> Tensor:
        """Full-softmax scores [..., V] of every item for hidden states [..., D]; ids < min_item_id -inf."""
        table = self.embed.item_repr(torch.arange(self.config.item_vocab_size, device=h.device))  # [V, D]
        return (h @ table.T).index_fill(-1, torch.arange(min_item_id, device=h.device), -torch.inf)

    def pretrain_loss(
        self, b: Mapping[str, Tensor], out: Mapping[str, Tensor] | None = None, n_negatives: int | None = None
    ) -> Tensor:
        """Next-item loss at every real position whose next event is real (causal: no label leaks in).

        ``n_negatives`` overrides the config's (0 = exact full softmax, for evaluation).
        """
        hidden, mask = (out["hidden"], out["mask"]) if out is not None else self.encode(b)
        targets = F.pad(b["seq_item"][:, 1:], (0, 1)) * mask  # [B, N]: item of the next event, 0 = none
        n_neg = self.config.n_negatives if n_negatives is None else n_negatives
        vocab = self.config.item_vocab_size
        return sampled_softmax_loss(hidden, targets, self.embed.item_repr, vocab, n_neg, self.item_log_q)

    def losses(
        self, b: Mapping[str, Tensor], out: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
    ) -> dict[str, Tensor]:
        """Per-task mean losses over labelled entries only (label -1 = missing) and their weighted total."""
        if unknown := sorted(set(weights or {}) - set(DEFAULT_LOSS_WEIGHTS)):
            raise ValueError(f"losses: unknown weight keys {unknown}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        w = {**DEFAULT_LOSS_WEIGHTS, **(weights or {})}
        parts = {
            "propensity": masked_bce(out["propensity_logit"], b.get("label_propensity")),
            "churn": masked_bce(out["churn_logit"], b.get("label_churn")),
        }
        if "conversion_logit" in out:
            parts["conversion"] = masked_bce(out["conversion_logit"], b["price_bought"])
        if w["next_item"] > 0:
            parts["next_item"] = self.pretrain_loss(b, out)
        parts["total"] = sum((w.get(k, 0.0) * v for k, v in parts.items()), out["user_vector"].sum() * 0.0)
        return parts

    @torch.no_grad()
    def predict(self, b: Mapping[str, Tensor], top_k: int = 0, min_item_id: int = 1) -> dict[str, Tensor]:
        """Scores for scores.* tables: probabilities, elasticity, user vector, optional top-k next items."""
        out = self(b)
        res = {
            "price_elasticity": self.elasticity(b, out),
            "user_vector": out["user_vector"],
            "summary": out["hidden"][:, -1],  # [B, D]: what the heads start from
        }
        runs = {id(self): out}  # one forward pass per distinct model: tasks may share a route
        for task in TASKS:
            model = self.for_task(task)  # a routed task: its epoch's model
            if id(model) not in runs:
                runs[id(model)] = model(b)
            got = runs[id(model)]
            res[task] = torch.sigmoid(got[f"{task}_logit"])  # [B]
            res[f"{task}_summary"] = got["hidden"][:, -1]  # [B, D]: reasons re-run that model's heads
        if top_k:
            scores, ids = self.item_logits(out["hidden"][:, -1], min_item_id).topk(top_k, dim=-1)  # [B, k]
            res["next_items"], res["next_item_scores"] = ids, scores
        return res


def _same_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    """Whether two state dicts hold the same tensors (two tasks routed to one epoch's weights)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def save_checkpoint(
    path: str | Path | BinaryIO,
    model: ShopformerModel,
    config: ModelConfig | None = None,
    extra: Mapping | None = None,
) -> None:
    """One torch file: config dict, state_dict (scaler stats, text vectors included), plain-type ``extra``."""
    config = config or model.config
    if config != model.config:
        raise ValueError("save_checkpoint: config differs from the model's own config")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "scaler": model.scaler.stats(),  # readable copy; the state_dict is what load uses
        "extra": dict(extra or {}),
    }
    torch.save(payload, path)


def load_checkpoint(
    path: str | Path | BinaryIO, map_location: str | torch.device = "cpu"
) -> tuple[ShopformerModel, ModelConfig, dict[str, Any]]:
    """(model in eval mode, config, extra); ``weights_only`` loading: no pickled code ever runs."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"load_checkpoint: {path} is not a {CHECKPOINT_FORMAT} checkpoint")
    config = ModelConfig.from_dict(ckpt["config"])
    model, state = ShopformerModel(config), ckpt["state_dict"]
    routed = {k.split(".")[1] for k in state if k.startswith("routes.")}
    own = {k: v for k, v in state.items() if not k.startswith("routes.")}
    model.load_state_dict(own)
    model.set_routes(
        {t: {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"routes.{t}.")} for t in routed}
    )
    return model.eval(), config, ckpt["extra"]
