"""theta: lme4's parameterisation of the random-effects covariance.

Each term with ``s`` columns has a lower-triangular ``s x s`` factor ``T`` (relative to sigma),
stored column by column: for s = 2, theta = (T00, T10, T11). Lambda = I_levels (x) T.

Two views of the same layout:
- host helpers take the terms' column counts ``sizes`` (NumPy, real lengths);
- :class:`ThetaLayout` describes theta padded to a size class as data (which term, row and
  column each entry fills), so compiled code depends on the padded length only, not on the
  particular terms (lme4's ``Lind`` idea).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from .linalg import batched_cholesky


@cache
def tril_indices(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each theta entry of an s-column term, column-major lower triangle."""
    rows, cols = zip(*[(i, j) for j in range(s) for i in range(j, s)], strict=True)
    return np.array(rows), np.array(cols)


def n_theta(s: int) -> int:
    return s * (s + 1) // 2


def theta_offsets(sizes: tuple[int, ...]) -> np.ndarray:
    """Start of each term's theta block, plus the total at the end."""
    return np.concatenate([[0], np.cumsum([n_theta(s) for s in sizes])]).astype(int)


def initial_theta(sizes: tuple[int, ...]) -> np.ndarray:
    """lme4's start: identity factors."""
    return np.concatenate([(tril_indices(s)[0] == tril_indices(s)[1]).astype(float) for s in sizes])


def diagonal_mask(sizes: tuple[int, ...]) -> np.ndarray:
    """True where theta holds a diagonal element of T (the entries lme4 bounds below by 0)."""
    return np.concatenate([tril_indices(s)[0] == tril_indices(s)[1] for s in sizes])


def off_boundary(theta, sizes: tuple[int, ...], floor: float = 0.1) -> np.ndarray:
    """``theta`` with diagonal entries below ``floor`` in size raised to it (NumPy). A start
    for an optimiser: at a zero diagonal entry the criterion's gradient in it vanishes (the
    criterion is even in each column of T), so an optimiser started there never leaves."""
    theta = np.asarray(theta, dtype=np.float64)
    return np.where(diagonal_mask(sizes) & (np.abs(theta) < floor), floor, theta)


def factor_arrays(theta, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """theta -> each term's T (NumPy); ``theta`` may carry leading batch axes (..., n_theta)."""
    theta = np.asarray(theta, dtype=np.float64)
    offsets = theta_offsets(sizes)
    result = []
    for k, s in enumerate(sizes):
        t = np.zeros(theta.shape[:-1] + (s, s))
        rows, cols = tril_indices(s)
        t[..., rows, cols] = theta[..., offsets[k] : offsets[k + 1]]
        result.append(t)
    return result


def covariances(theta, sizes: tuple[int, ...], sigma) -> list[np.ndarray]:
    """Covariance matrices sigma^2 T T' of each term's random effects (NumPy).

    ``theta`` may carry leading batch axes (..., n_theta) with ``sigma`` of shape (...).
    """
    sigma2 = np.asarray(sigma, dtype=np.float64)[..., None, None] ** 2
    return [sigma2 * t @ np.swapaxes(t, -1, -2) for t in factor_arrays(theta, sizes)]


def sdcor_values(theta, sizes: tuple[int, ...], sigma) -> np.ndarray:
    """(theta, sigma) -> SDs and correlations per term, then sigma, as :func:`sdcor` (NumPy);
    ``theta`` may carry leading batch axes (..., n_theta) with ``sigma`` of shape (...)."""
    values = []
    for cov, s in zip(covariances(theta, sizes, sigma), sizes, strict=True):
        sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        for i, j in zip(*tril_indices(s), strict=True):
            with np.errstate(invalid="ignore", divide="ignore"):
                values.append(sd[..., i] if i == j else cov[..., i, j] / (sd[..., i] * sd[..., j]))
    return np.stack(values + [np.asarray(sigma, dtype=np.float64)], axis=-1)


def sdcor_names(terms) -> list[str]:
    """Names of the :func:`sdcor` entries as lme4's ``confint(oldNames = FALSE)``."""
    names = []
    for term in terms:
        for i, j in zip(*tril_indices(term.n_columns), strict=True):
            if i == j:
                names.append(f"sd_{term.names[i]}|{term.group}")
            else:
                names.append(f"cor_{term.names[i]}.{term.names[j]}|{term.group}")
    return names + ["sigma"]


def varcorr_order(sizes: tuple[int, ...]) -> np.ndarray:
    """Positions in :func:`sdcor` of the rows of lme4's ``as.data.frame(VarCorr(m))``: per
    term the SDs, then the correlations (column a with each later column b), then sigma."""
    order = []
    for k, s in enumerate(sizes):
        rows, cols = tril_indices(s)
        position = {
            (int(i), int(j)): theta_offsets(sizes)[k] + n
            for n, (i, j) in enumerate(zip(rows, cols, strict=True))
        }
        order += [position[a, a] for a in range(s)]
        order += [position[b, a] for a in range(s) for b in range(a + 1, s)]
    return np.array(order + [theta_offsets(sizes)[-1]])


def starting_theta(design, floor: float = 0.1, sweeps: int = 3) -> np.ndarray:
    """A start for the optimiser near the optimum: a moment estimate of each term's covariance
    relative to the residual variance. The per-level coefficients of each grouping factor's
    terms are fitted jointly to what the fixed effects and the other factors leave of the
    response (backfitting); their covariance across levels, less their mean sampling
    covariance, estimates the terms'. A nearby start saves most of the iterations of crossed
    designs and of random slopes. Eigenvalues are floored at ``floor``^2: theta = 0 is a
    stationary point to be reached, not left. Levels whose columns are (nearly) collinear
    inform no moment.
    """
    x, y, w = design.x, design.y - design.offset, design.weights
    y = y / max(np.max(np.abs(y)), np.finfo(float).tiny)  # theta is scale-free
    sqrt_w = np.sqrt(w)
    resid = y - x @ np.linalg.lstsq(x * sqrt_w[:, None], y * sqrt_w, rcond=None)[0]
    terms = design.terms
    factors: dict[str, list[int]] = {}  # each factor's terms, as in (1 | g) + (0 + x | g)
    for k, term in enumerate(terms):
        factors.setdefault(term.group, []).append(k)
    members = list(factors.values())
    fits = [_LevelFit(terms[ks[0]], [terms[k].z for k in ks], w) for ks in members]
    fitted = [np.zeros_like(resid) for _ in members]
    total = np.zeros_like(resid)
    order = _outer_first([terms[ks[0]] for ks in members])
    for _ in range(sweeps if len(members) > 1 else 1):  # one factor: nothing to backfit
        for k in order:
            new = fits[k].fit(w * (resid - total + fitted[k]))
            total, fitted[k] = total + (new - fitted[k]), new
    fitted_effects = sum(np.sum(f.informative) * f.z.shape[1] for f in fits)
    dof = max(len(y) - fitted_effects - x.shape[1], 1)
    sigma2 = max(np.sum(w * (resid - total) ** 2) / dof, np.finfo(float).tiny)
    theta = {}
    for fit, ks in zip(fits, members, strict=True):
        start = 0
        for k in ks:
            s = terms[k].n_columns
            theta[k] = fit.theta(sigma2, floor, slice(start, start + s))
            start += s
    return np.concatenate([theta[k] for k in range(len(terms))])


class _LevelFit:
    """Least squares of a response on a grouping factor's columns ``z``, level by level."""

    def __init__(self, term, z: list[np.ndarray], w):
        self.codes, self.n_levels = term.codes, term.n_levels
        self.z = z = np.concatenate(z, axis=1)
        self.intercept = z.shape[1] == 1 and bool(np.all(z == 1))
        gram = self._level_sums(z[:, :, None] * (w[:, None] * z)[:, None, :])
        if z.shape[1] == 1:
            self.informative = gram[:, 0, 0] > 0
            self.inverse = 1 / np.where(self.informative[:, None, None], gram, np.inf)
        else:
            eigen = np.linalg.eigvalsh(gram)
            self.informative = eigen[:, 0] > 1e-8 * eigen[:, -1]
            kept = self.informative[:, None, None]  # the others get no effects
            self.inverse = kept * np.linalg.inv(np.where(kept, gram, np.eye(z.shape[1])))
        self.effects = np.zeros((self.n_levels, z.shape[1]))

    def _level_sums(self, values: np.ndarray) -> np.ndarray:
        """Sums of ``values`` (n, ...) over the observations of each level."""
        flat = values.reshape(len(values), -1)
        sums = [
            np.bincount(self.codes, weights=flat[:, j], minlength=self.n_levels)
            for j in range(flat.shape[1])
        ]
        return np.stack(sums, axis=-1).reshape((self.n_levels,) + values.shape[1:])

    def fit(self, weighted: np.ndarray) -> np.ndarray:
        """Fit to the response whose products with the weights are ``weighted``; the fitted
        values."""
        if self.intercept:
            self.effects = self._level_sums(weighted)[:, None] * self.inverse[:, 0]
            return self.effects[self.codes, 0]
        rhs = self._level_sums(self.z * weighted[:, None])
        self.effects = (self.inverse @ rhs[..., None])[..., 0]
        return np.sum(self.z * self.effects[self.codes], axis=1)

    def theta(self, sigma2: float, floor: float, columns: slice) -> np.ndarray:
        """theta of the term of ``columns``, from the moments of the informative levels."""
        b = self.effects[self.informative][:, columns]
        inverse = self.inverse[self.informative][:, columns, columns]
        s = b.shape[1]
        if len(b) < 2:
            return initial_theta((s,))
        centered = b - b.mean(axis=0)
        between = centered.T @ centered / len(b)
        cov = (between - sigma2 * np.mean(inverse, axis=0)) / sigma2
        if s == 1:
            return np.sqrt(np.maximum(cov[0], floor**2))
        values, vectors = np.linalg.eigh(cov)
        t = np.linalg.cholesky((vectors * np.maximum(values, floor**2)) @ vectors.T)
        return t[tril_indices(s)]


def _outer_first(terms) -> list[int]:
    """The terms in the order backfitting sweeps them: a term nested in another (every level
    within one level of the other, as cask within batch) after it, so that the inner term does
    not take the outer term's level means first."""

    def nested(inner, outer) -> bool:
        if inner.n_levels <= outer.n_levels:
            return False
        parent = np.zeros(inner.n_levels, dtype=outer.codes.dtype)
        parent[inner.codes] = outer.codes
        return bool(np.all(parent[inner.codes] == outer.codes))

    depth = [sum(nested(t, o) for o in terms if o is not t) for t in terms]
    return sorted(range(len(terms)), key=depth.__getitem__)


# --- theta padded to a size class, its layout as data -------------------------------------


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ThetaLayout:
    """Where each entry of a padded theta goes: term ``term``, row ``row``, column ``col`` of
    that term's T. Entries past the real theta are inactive (they enter nothing)."""

    term: np.ndarray  # (T,) int
    row: np.ndarray  # (T,) int
    col: np.ndarray  # (T,) int
    active: np.ndarray  # (T,) bool
    pivot: np.ndarray  # (T,) int: the entry holding the diagonal of this entry's column

    @property
    def diagonal(self):
        return self.active & (self.row == self.col)


def theta_layout(sizes: tuple[int, ...], padded: int) -> ThetaLayout:
    """The layout of the terms ``sizes`` in a theta of length ``padded`` (NumPy arrays)."""
    term, row, col, pivot = [], [], [], []
    offsets = theta_offsets(sizes)
    for k, s in enumerate(sizes):
        rows, cols = tril_indices(s)
        diagonal_at = {
            int(c): offsets[k] + n
            for n, (r, c) in enumerate(zip(rows, cols, strict=True))
            if r == c
        }
        term += [k] * len(rows)
        row += list(rows)
        col += list(cols)
        pivot += [diagonal_at[int(c)] for c in cols]
    n_pad = padded - len(term)
    fill = len(term) + np.arange(n_pad)  # an inactive entry is its own (zero) pivot
    return ThetaLayout(
        term=np.array(term + [0] * n_pad, dtype=np.int32),
        row=np.array(row + [0] * n_pad, dtype=np.int32),
        col=np.array(col + [0] * n_pad, dtype=np.int32),
        active=np.arange(padded) < len(term),
        pivot=np.concatenate([pivot, fill]).astype(np.int32),
    )


def pad_theta(theta, padded: int) -> np.ndarray:
    """A real theta (NumPy, possibly with leading batch axes) padded with zeros."""
    theta = np.asarray(theta, dtype=np.float64)
    width = [(0, 0)] * (theta.ndim - 1) + [(0, padded - theta.shape[-1])]
    return np.pad(theta, width)


def canonical_theta(theta, layout: ThetaLayout):
    """Flip the sign of each column of T whose diagonal is negative (T T' is unchanged)."""
    return theta * jnp.where(theta[layout.pivot] < 0, -1.0, 1.0)


def factors(theta, layout: ThetaLayout, width: int):
    """Every term's T as a (T, width, width) stack (terms past the real ones are zero)."""
    t = theta.shape[-1]
    values = jnp.where(layout.active, theta, 0.0)
    return (
        jnp.zeros((t, width, width), theta.dtype)
        .at[layout.term, layout.row, layout.col]
        .add(values)
    )


def _safe_norm(rows):
    """Euclidean norm of each row, with derivative 0 (not NaN) at a zero row."""
    squares = jnp.sum(rows**2, axis=-1)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def sdcor(theta, sigma, layout: ThetaLayout, width: int):
    """(theta, sigma) -> the SDs and correlations of each term, in theta's order (a diagonal
    entry gives the SD of its column, an off-diagonal entry the correlation of its row and
    column; inactive entries 0), then sigma: lme4's ``confint`` parameters. JAX,
    differentiable."""
    t = factors(theta, layout, width)
    norms = _safe_norm(t)  # (T, width): row norms per term
    own = t[layout.term, layout.row]
    other = t[layout.term, layout.col]
    denom = norms[layout.term, layout.row] * norms[layout.term, layout.col]
    corr = jnp.sum(own * other, axis=-1) / jnp.where(layout.active, denom, 1.0)
    values = jnp.where(layout.row == layout.col, sigma * norms[layout.term, layout.row], corr)
    return jnp.append(jnp.where(layout.active, values, 0.0), sigma)


def theta_from_sdcor(psi, layout: ThetaLayout, width: int):
    """Inverse of :func:`sdcor`: (SDs and correlations per term, sigma) -> (theta, sigma).

    T = diag(|sd|) chol(R) / sigma with R the correlation matrix; NaN where R is not PD. (The
    sign of an SD is dropped: a negative SD would flip the sign of its correlations.)
    """
    sigma, values = psi[-1], psi[:-1]
    t = values.shape[0]
    diagonal = layout.active & (layout.row == layout.col)
    off = layout.active & (layout.row != layout.col)
    diagonal_row = jnp.where(diagonal, layout.row, width)  # off-diagonal entries: dropped
    sd = (
        jnp.ones((t, width), psi.dtype)
        .at[layout.term, diagonal_row]
        .set(jnp.abs(values), mode="drop")
    )
    eye = jnp.broadcast_to(jnp.eye(width, dtype=psi.dtype), (t, width, width))
    lower = (
        jnp.zeros((t, width, width), psi.dtype)
        .at[layout.term, layout.row, layout.col]
        .add(jnp.where(off, values, 0.0))
    )
    corr = eye + lower + jnp.swapaxes(lower, 1, 2)
    chol = batched_cholesky(corr)
    theta = sd[layout.term, layout.row] * chol[layout.term, layout.row, layout.col] / sigma
    return jnp.where(layout.active, theta, 0.0), sigma
