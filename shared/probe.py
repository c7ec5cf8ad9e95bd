"""Linear probes: how much of a target (a frame's physical state) a representation (its latents)
carries, as the R² of a ridge regression fitted on training episodes and scored on held-out ones.

No tensors: numpy only, so that any backend's features can be probed the same way.

    fit = fit_probe(train_x, train_y, groups=train_episode_ids)
    r2 = r2_score(test_y, fit.predict(test_x))          # one value per target dimension

The ridge strength is chosen by grouped K-fold cross-validation on the training rows (a group is
an episode, so neighbouring, nearly identical frames never sit on both sides of a fold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ridge strengths tried, relative to the number of training rows (features are standardised).
LAMBDAS = tuple(10.0 ** k for k in range(-4, 3))
# A target dimension whose held-out variance is below this has no R² (e.g. a touch sensor that
# never fires, a padded dimension).
MIN_VARIANCE = 1e-8


@dataclass
class ProbeFit:
    """A fitted probe: y = ((x - x_mean) / x_scale) @ weight + y_mean."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    weight: np.ndarray     # (features, targets)
    y_mean: np.ndarray
    lam: float             # the chosen ridge strength (relative to the number of rows)
    cv_r2: float           # mean cross-validated R² at `lam` over the targets that have one

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = _as_2d(x, "x")
        if x.shape[1] != self.x_mean.shape[0]:
            raise ValueError(f"x has {x.shape[1]} features, the probe was fitted on {self.x_mean.shape[0]}")
        return ((x - self.x_mean) / self.x_scale) @ self.weight + self.y_mean


def _as_2d(a, name: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array (rows, dims), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values")
    return a


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per target dimension: 1 - sum (y - ŷ)² / sum (y - mean y)², with the mean of `y_true`
    itself; NaN where `y_true` is (nearly) constant."""
    y_true, y_pred = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    total = ((y_true - y_true.mean(0)) ** 2).sum(0)
    residual = ((y_true - y_pred) ** 2).sum(0)
    out = np.full(y_true.shape[1], np.nan)
    ok = total > MIN_VARIANCE * y_true.shape[0]
    out[ok] = 1.0 - residual[ok] / total[ok]
    return out


def _ridge(x: np.ndarray, y: np.ndarray, lams) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Standardise x, centre y, and solve the ridge problem for each strength via one SVD."""
    x_mean, x_scale = x.mean(0), x.std(0)
    x_scale = np.where(x_scale > 1e-8, x_scale, 1.0)
    y_mean = y.mean(0)
    xs = (x - x_mean) / x_scale
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y - y_mean)
    weights = [vt.T @ ((s / (s ** 2 + lam * x.shape[0]))[:, None] * uty) for lam in lams]
    return x_mean, x_scale, y_mean, weights


def fit_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, folds: int = 5,
              lams=LAMBDAS) -> ProbeFit:
    """Fit a ridge probe from features x (rows, features) to targets y (rows, targets), with the
    strength chosen by `folds`-fold cross-validation over `groups` (one label per row; rows of a
    group stay together; None: every row its own group)."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows, y has {y.shape[0]}")
    groups = np.arange(x.shape[0]) if groups is None else np.asarray(groups)
    if groups.shape != (x.shape[0],):
        raise ValueError(f"groups must have one label per row ({x.shape[0]}), got shape {groups.shape}")
    labels = np.unique(groups)
    if labels.size < 2:
        raise ValueError("cross-validation needs rows from at least 2 groups (episodes)")
    folds = min(int(folds), labels.size)
    fold_of = {label: i % folds for i, label in enumerate(np.random.default_rng(0).permutation(labels))}
    fold = np.array([fold_of[g] for g in groups])
    scores = np.zeros(len(lams))
    for k in range(folds):
        train, test = fold != k, fold == k
        x_mean, x_scale, y_mean, weights = _ridge(x[train], y[train], lams)
        xs = (x[test] - x_mean) / x_scale
        for i, w in enumerate(weights):
            r2 = r2_score(y[test], xs @ w + y_mean)
            scores[i] += np.nanmean(r2) if np.isfinite(r2).any() else -np.inf
    best = int(np.argmax(scores))
    x_mean, x_scale, y_mean, weights = _ridge(x, y, [lams[best]])
    return ProbeFit(x_mean=x_mean, x_scale=x_scale, weight=weights[0], y_mean=y_mean,
                    lam=float(lams[best]), cv_r2=float(scores[best] / folds))
