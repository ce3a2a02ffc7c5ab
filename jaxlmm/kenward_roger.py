"""Kenward-Roger adjusted covariance of beta and denominator df (Kenward and Roger 1997),
with pbkrtest's linear parameterisation of the marginal covariance:

  Sigma = sum_i s_i G_i,  G_i = Z D_i Z' for each entry i of each term's covariance matrix,
  and G_0 = W^{-1} for the residual variance s_0 = sigma^2.

Every trace and product of the method is written with the q x q matrix M = Z' Sigma^{-1} Z and
the q x p matrix N = Z' Sigma^{-1} X (q random effects, p fixed effects). The residual
parameter's terms follow from the others because Sigma^{-1} is homogeneous of degree -1 in s
(s_0 Sigma^{-1} G_0 Sigma^{-1} = Sigma^{-1} - sum_i s_i Sigma^{-1} G_i Sigma^{-1}), so no
n x n matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse

from . import parameters
from .design import Design


@dataclass(frozen=True)
class KenwardRoger:
    """The adjusted covariance and the pieces the df computation needs."""

    vcov_adjusted: np.ndarray  # (p, p) Phi_A
    p_matrices: np.ndarray  # (k, p, p) P_i = X' d(Sigma^{-1})/d s_i X
    w: np.ndarray  # (k, k) 2 x inverse of the expected REML information in s


def _parameters(design: Design, theta, sigma):
    """Per variance parameter: its term's slice of the q columns, the symmetric pattern E_i
    (D_i = I_levels (x) E_i) and its value s_i; and Lambda."""
    sizes = tuple(t.n_columns for t in design.terms)
    covs = parameters.covariances(theta, sizes, sigma)
    slices, patterns, values, lambdas, start = [], [], [], [], 0
    for term, cov, t in zip(
        design.terms, covs, parameters.factor_arrays(theta, sizes), strict=True
    ):
        s, ng = term.n_columns, term.n_levels
        block = slice(start, start + ng * s)
        for i, j in zip(*parameters.tril_indices(s), strict=True):
            e = np.zeros((s, s))
            e[i, j] = e[j, i] = 1.0
            slices.append((block, ng, s))
            patterns.append(e)
            values.append(cov[i, j])
        lambdas.append(scipy.sparse.kron(scipy.sparse.identity(ng), t))
        start += ng * s
    return slices, patterns, np.array(values), scipy.sparse.block_diag(lambdas).toarray()


def _apply(pattern, rows, ng: int, s: int):
    """(I_levels (x) E) @ rows for the rows of one term (ng * s of them)."""
    shaped = rows.reshape(ng, s, -1)
    return np.einsum("ab,gbc->gac", pattern, shaped).reshape(ng * s, -1)


def kenward_roger(design: Design, theta, sigma, vcov: np.ndarray) -> KenwardRoger:
    """Phi_A = Phi + 2 Phi U Phi and the matrices for the df, at the REML estimate."""
    z = design.random_effects_matrix()
    w = design.weights
    wz = z.multiply(w[:, None]).tocsc()
    a_zz = (z.T @ wz).toarray()
    a_zx = np.asarray(wz.T @ design.x)
    slices, patterns, s_values, lam = _parameters(design, theta, sigma)

    # Sigma^{-1} = (W - W Z Lambda C^{-1} Lambda' Z' W) / sigma^2 with C = Lambda' Z'WZ Lambda + I
    c = lam.T @ a_zz @ lam + np.eye(len(lam))
    c_chol = scipy.linalg.cho_factor(c, lower=True)
    la_z, la_x = lam.T @ a_zz, lam.T @ a_zx
    sigma2 = sigma**2
    m = (a_zz - la_z.T @ scipy.linalg.cho_solve(c_chol, la_z)) / sigma2
    n_mat = (a_zx - la_z.T @ scipy.linalg.cho_solve(c_chol, la_x)) / sigma2
    phi = vcov

    k = len(patterns)
    dn = [_apply(e, n_mat[sl], ng, s) for e, (sl, ng, s) in zip(patterns, slices, strict=True)]
    p_re = np.array([-n_mat[sl].T @ d for d, (sl, _, _) in zip(dn, slices, strict=True)])
    q_re = np.empty((k, k) + phi.shape)
    ktr = np.empty((k, k))
    tr_dm = np.empty(k)
    dm = [_apply(e, m[sl], ng, s) for e, (sl, ng, s) in zip(patterns, slices, strict=True)]
    for i, (sl_i, _, _) in enumerate(slices):  # dm[i]: the rows of D_i M
        tr_dm[i] = np.trace(dm[i][:, sl_i])
        for j, (sl_j, _, _) in enumerate(slices):
            q_re[i, j] = dn[i].T @ m[sl_i, sl_j] @ dn[j]
            ktr[i, j] = np.sum(dm[i][:, sl_j] * dm[j][:, sl_i].T)

    # The residual parameter s_0 = sigma^2 (G_0 = W^{-1}) by homogeneity.
    s0, n = sigma2, design.nobs
    p0 = -(np.linalg.inv(phi) + np.einsum("i,iab->ab", s_values, p_re)) / s0
    q_i0 = -(p_re + np.einsum("j,ijab->iab", s_values, q_re)) / s0
    q_00 = -(p0 + np.einsum("j,jba->ab", s_values, q_i0)) / s0
    ktr_i0 = (tr_dm - ktr @ s_values) / s0
    tr_0 = (n - s_values @ tr_dm) / s0
    ktr_00 = (tr_0 - s_values @ ktr_i0) / s0

    p_all = np.concatenate([p_re, p0[None]])
    q_all = np.empty((k + 1, k + 1) + phi.shape)
    q_all[:k, :k] = q_re
    q_all[:k, k] = q_i0
    q_all[k, :k] = np.swapaxes(q_i0, 1, 2)
    q_all[k, k] = q_00
    ktr_all = np.block([[ktr, ktr_i0[:, None]], [ktr_i0[None, :], np.array([[ktr_00]])]])

    # Expected REML information (x 2) and U = sum_ij W_ij (Q_ij - P_i Phi P_j)
    phi_p = np.einsum("ab,ibc->iac", phi, p_all)
    info = (
        ktr_all - 2 * np.einsum("ab,ijba->ij", phi, q_all) + np.einsum("iab,jba->ij", phi_p, phi_p)
    )
    w_mat = 2 * np.linalg.pinv(info, hermitian=True)
    u = np.einsum("ij,ijab->ab", w_mat, q_all) - np.einsum(
        "ij,iab,bc,jcd->ad", w_mat, p_all, phi, p_all
    )
    adjusted = phi + 2 * phi @ u @ phi
    return KenwardRoger((adjusted + adjusted.T) / 2, p_all, w_mat)


def kr_ddf(contrasts: np.ndarray, phi: np.ndarray, kr: KenwardRoger) -> tuple[float, float]:
    """Kenward-Roger denominator df for ``contrasts @ beta = 0`` (pbkrtest's ``Lb_ddf``) and
    the multiplier of the Wald F statistic that matches its mean to F(q, df)'s, m / (m - 2):
    m (1 - A2 / q) / (m - 2) (1 when the df are near 2, as pbkrtest)."""
    q = np.linalg.matrix_rank(contrasts)
    theta = contrasts.T @ np.linalg.solve(contrasts @ phi @ contrasts.T, contrasts)
    u = np.einsum("ab,bc,icd,de->iae", theta, phi, kr.p_matrices, phi)
    traces = np.trace(u, axis1=1, axis2=2)
    a1, a2 = traces @ kr.w @ traces, np.einsum("ij,iab,jba->", kr.w, u, u)
    b = (a1 + 6 * a2) / (2 * q)
    g = ((q + 1) * a1 - (q + 4) * a2) / ((q + 2) * a2)
    denom = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
    v0 = 1 + c1 * b
    v0 = 0.0 if abs(v0) < 1e-10 else v0
    v1, v2 = 1 - c2 * b, 1 - c3 * b
    ratio = (1 - a2 / q) / v1 if v1 != 0 else 0.0
    rho = ratio**2 * v0 / (q * v2)
    df = float(4 + (q + 2) / (q * rho - 1))
    scaling = 1.0 if abs(df - 2) < 1e-2 else float(df * (1 - a2 / q) / (df - 2))
    return df, scaling
