"""How well can *anything* rank users by price elasticity in the synthetic shop? (not a test)

The shop reveals a user's elasticity only through the buy/no-buy decision that ends each shopping mission:
P(buy) = logistic(a_user + beta_user x ln(relative price) + 0.5 (n_sessions - 2)) (docs/synthetic_shop.md).
This script simulates users with the shop's documented distributions and gives an **oracle** every one of
their decisions together with the exact model, the true priors of a and beta, the true relative prices and
mission lengths; the oracle's estimate is the Bayes posterior mean of beta on a grid. The Spearman correlation
of that estimate with the true beta is a ceiling for any model that sees the same number of decisions.

    .venv/bin/python bench/elasticity_ceiling.py --days 60 120 400 2000
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
from scipy.stats import spearmanr

from shopformer.config import load_config

log = logging.getLogger("bench")
PROMO_ON_SHARE = 4.5 / 24.5  # mean promotion length / mean period (2-7 of 14-35 days)


def ceiling(days: float, *, thinning: float, users: int, seed: int) -> tuple[float, float]:
    """(mean decisions per user, Spearman of the oracle's posterior mean with the true beta)."""
    c = load_config("local").section("synthetic")
    rng = np.random.default_rng(seed)
    a0, b0 = np.log(c["purchase_rate"] / (1 - c["purchase_rate"])), float(c["elasticity_median"])
    a = a0 + 0.5 * rng.standard_normal(users)
    beta = b0 * np.exp(0.5 * rng.standard_normal(users))
    rate = c["missions_per_day"] * np.exp(0.5 * rng.standard_normal(users) + 0.3 * rng.standard_normal(users))
    n = rng.poisson(rate * days * thinning)
    grid_a = np.linspace(a0 - 2.5, a0 + 2.5, 41)[:, None, None]  # (41, 1, 1)
    log_b = np.log(-b0) + np.linspace(-2.5, 2.5, 81)[None, :, None]  # (1, 81, 1)
    prior = np.exp(-0.5 * ((grid_a - a0) / 0.5) ** 2 - 0.5 * ((log_b - np.log(-b0)) / 0.5) ** 2)[..., 0]
    est = np.empty(users)
    for u in range(users):
        promo = rng.random(n[u]) < c["promo_share"] * PROMO_ON_SHARE
        rel = np.where(promo, 1 - rng.uniform(0.1, 0.4, n[u]), 1 + 0.03 * (2 * rng.random(n[u]) - 1))
        commit = 0.5 * (np.minimum(5, 1 + np.floor(5 * rng.random(n[u]) ** 2)) - 2)
        bought = rng.random(n[u]) < 1 / (1 + np.exp(-(a[u] + beta[u] * np.log(rel) + commit)))
        logit = grid_a - np.exp(log_b) * np.log(rel) + commit  # (41, 81, n)
        loglik = np.where(bought, -np.logaddexp(0, -logit), -np.logaddexp(0, logit)).sum(-1)
        post = prior * np.exp(loglik - loglik.max())
        est[u] = float((post * -np.exp(log_b[..., 0])).sum() / post.sum())
    return float(n.mean()), float(spearmanr(est, beta).statistic)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=float, nargs="+", default=[60, 120, 400, 2000])
    p.add_argument("--thinning", type=float, default=1.0, help="share of candidate missions kept (<= 1)")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    ns = p.parse_args(argv)
    print("| days of history | decisions per user (mean) | oracle Spearman |\n|---:|---:|---:|")  # noqa: T201
    for days in ns.days:
        n, rho = ceiling(days, thinning=ns.thinning, users=ns.users, seed=ns.seed)
        print(f"| {days:g} | {n:.1f} | {rho:.3f} |", flush=True)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
