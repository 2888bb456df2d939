"""Fitting BG/NBD and Gamma-Gamma on grouped statistics collected to the driver, and predicting per
distinct triple. Inputs are small: one row per distinct (x, t_x, T), or per (x, spend bin)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shoplens.value import bgnbd, gammagamma

log = logging.getLogger(__name__)

DAYS_PER_WEEK = 7.0


@dataclass(frozen=True)
class Triple:
    x: int
    t_x_days: int
    age_days: int
    customers: int


@dataclass(frozen=True)
class ValueFit:
    bgnbd: bgnbd.BgNbdFit | None
    gamma_gamma: gammagamma.GammaGammaFit | None
    # (x, t_x_days, age_days) → (p_alive, expected purchases over the horizon); every triple given.
    predictions: dict[tuple[int, int, int], tuple[float, float]]


def fit_triples(triples: Sequence[Triple], max_iter: int) -> bgnbd.BgNbdFit:
    """BG/NBD on triples in days, converted to weeks (the paper's unit)."""
    weighted = [t for t in triples if t.customers > 0]
    x = np.array([t.x for t in weighted], dtype=float)
    t_x = np.array([t.t_x_days for t in weighted], dtype=float) / DAYS_PER_WEEK
    age = np.array([t.age_days for t in weighted], dtype=float) / DAYS_PER_WEEK
    w = np.array([t.customers for t in weighted], dtype=float)
    return bgnbd.fit(x, t_x, age, w, max_iter=max_iter)


def fit_value(
    triples: Sequence[Triple],
    spend: Sequence[tuple[int, float, int]],
    horizon_weeks: float,
    min_customers: int,
    max_iter: int,
) -> ValueFit:
    """Both models for one dataset. ``spend`` holds (x, mean spend, customers) groups.

    Returns: no fit (and no predictions) below ``min_customers`` non-bot customers or when the fit
    gives non-finite values; Gamma-Gamma only when at least ``min_customers`` customers have a
    positive repeat spend."""
    customers = sum(t.customers for t in triples)
    if customers < min_customers:
        log.warning("value: %d customers, fewer than %d: no BG/NBD fit", customers, min_customers)
        return ValueFit(None, None, {})
    fitted = fit_triples(triples, max_iter)
    x = np.array([t.x for t in triples], dtype=float)
    t_x = np.array([t.t_x_days for t in triples], dtype=float) / DAYS_PER_WEEK
    age = np.array([t.age_days for t in triples], dtype=float) / DAYS_PER_WEEK
    alive = bgnbd.p_alive(fitted.params(), x, t_x, age)
    expected = bgnbd.expected_purchases(fitted.params(), horizon_weeks, x, t_x, age)
    if not (np.all(np.isfinite(alive)) and np.all(np.isfinite(expected)) and np.isfinite(fitted.log_likelihood)):
        log.warning("value: BG/NBD fit %s gives non-finite predictions: not used", fitted)
        return ValueFit(None, None, {})
    predictions = {
        (t.x, t.t_x_days, t.age_days): (float(p), float(e)) for t, p, e in zip(triples, alive, expected, strict=True)
    }
    spend_customers = sum(c for _, _, c in spend)
    gg = None
    if spend_customers >= min_customers:
        gg = gammagamma.fit([s[0] for s in spend], [s[1] for s in spend], [s[2] for s in spend], max_iter=max_iter)
        if not all(np.isfinite([gg.p, gg.q, gg.v, gg.log_likelihood])) or gg.q <= 1:
            log.warning("value: Gamma-Gamma fit %s unusable (q <= 1 or not finite): no expected value", gg)
            gg = None
    return ValueFit(fitted, gg, predictions)
