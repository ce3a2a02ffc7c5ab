"""``lmer()``: formula -> design -> model -> cross-products -> optimiser -> fitted model.

The fitted model is a results layer: it holds the design, the model of the functional core
(:mod:`jaxlmm.model`), the padded blocks and the estimates, and delegates every computation to
the algorithms' modules. All of them run compiled float64 programs, whatever the user's JAX
settings.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from functools import cached_property, partial

import jax
import numpy as np
import pandas as pd
from scipy import special

from . import parameters, programs
from .anova_tables import fixed_effects_table
from .bootstrap import BootstrapResult, bootstrap
from .crossprod import Blocks
from .design import Design, build_design
from .errors import ConvergenceWarning, DataError, InferenceError
from .estimate import Estimates, assemble, fit_blocks
from .inference import (
    VarparDerivatives,
    contrast_matrix,
    ddf_method,
    kenward_roger_f,
    satterthwaite_df,
    satterthwaite_f,
    t_table,
    varpar_derivatives,
)
from .kenward_roger import KenwardRoger, kenward_roger, kr_ddf
from .model import Model, from_design
from .optimize import ITERATIONS, OptResult
from .predict import predict, simulate_responses
from .printing import confint_table
from .profile import profile_confint, profile_frame
from .solution import Solution, conditional_covariances
from .status import Status

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on the diagonal of T


def fit_model(
    core: Model, theta0: np.ndarray, iterations=ITERATIONS
) -> tuple[Blocks, float, OptResult, Solution]:
    """Cross-products on the host, then the compiled fit of their size class."""
    blocks, scale = core.blocks()
    start = parameters.pad_theta(theta0, blocks.n_theta)
    opt, solution = programs.run(fit_blocks, blocks, start, core.reml, np.asarray(iterations))
    return blocks, float(scale), *_host((opt, solution))


def _host(tree):
    """The result as numpy arrays (leaf by leaf: ``jax.device_get`` costs 0.1 ms more)."""
    return jax.tree.map(np.asarray, tree)


def devfun(formula: str, data: pd.DataFrame, reml: bool = True, weights=None, offset=None):
    """The model's profiled criterion as a pure JAX function of theta (lme4's ``devFunOnly``):
    ``Model.deviance`` of :func:`jaxlmm.model`, jitted. It is differentiable
    (``jax.grad(devfun(...))(theta)``) and computes in JAX's current precision (float64 under
    ``jax_enable_x64``)."""
    core = from_design(build_design(formula, data, weights, offset), reml, shared=True)
    return jax.jit(core.deviance)


def lmer(
    formula: str,
    data: pd.DataFrame,
    reml: bool = True,
    weights=None,
    offset=None,
    data_name: str | None = None,
    na_action: str = "omit",
) -> LinearMixedModelFit:
    """Fit a linear mixed model with lme4's formula syntax, by REML (default) or ML.

    ``weights`` are prior weights (an array or a column name): residual variance sigma^2 / w.
    ``offset``: a known term of the linear predictor (an array or a column name), added to the
    formula's ``offset(...)`` terms. ``data_name`` names the data in printed output (lme4's
    ``Data:`` line). Rows with a missing value in a column the model uses are left out;
    with ``na_action="exclude"`` (R's ``na.exclude``) ``fitted``, ``residuals`` and
    ``predict()`` still have one entry per row of ``data``, NaN where a row was left out.
    The fit keeps a reference to ``data`` (not a copy) for :meth:`~LinearMixedModelFit.update`.
    """
    na_action = _na_action(na_action)
    design = build_design(formula, data, weights, offset)
    fit = lmer_design(design, reml, data_name=data_name)
    call = {"weights": weights, "offset": offset}
    return dataclasses.replace(fit, data=data, na_action=na_action, call=call)


def _na_action(value) -> str:
    """``"omit"`` or ``"exclude"`` (R's ``na.omit`` / ``na.exclude`` accepted too)."""
    name = str(value).lower().removeprefix("na.").removeprefix("na_")
    if name not in ("omit", "exclude"):
        raise DataError(f"na_action must be 'omit' or 'exclude', got {value!r}")
    return name


def lmer_design(
    design: Design,
    reml: bool = True,
    theta0=None,
    data_name: str | None = None,
    iterations=ITERATIONS,
) -> LinearMixedModelFit:
    """Fit a checked design (the second half of :func:`lmer`), from ``theta0`` when given;
    ``iterations=EVALUATE_ONLY`` takes the fit at ``theta0`` as it is."""
    core = from_design(design, reml, shared=True)
    start = core.info.start if theta0 is None else theta0
    blocks, scale, opt, solution = fit_model(core, start, iterations)
    fit = LinearMixedModelFit(
        design=design,
        model=core,
        blocks=blocks,
        scale=scale,
        opt=opt,
        solution=solution,
        data_name=data_name,
    )
    if not fit.converged:
        warnings.warn(
            f"model may not have converged: {fit.status}", ConvergenceWarning, stacklevel=3
        )
    return fit


def _refit(fit: LinearMixedModelFit, reml: bool) -> LinearMixedModelFit:
    """The same design fitted again from the fit's theta, by REML or ML."""
    core = dataclasses.replace(fit.model, info=dataclasses.replace(fit.model.info, reml=reml))
    blocks, scale, opt, solution = fit_model(core, fit.theta)
    return dataclasses.replace(
        fit, model=core, blocks=blocks, scale=scale, opt=opt, solution=solution
    )


@dataclass(frozen=True, eq=False)
class LinearMixedModelFit:
    """A fitted linear mixed model (immutable). Numbers follow lme4's definitions."""

    design: Design
    model: Model  # the functional core's model (padded to its size class)
    blocks: Blocks  # its cross-products for the response divided by ``scale``
    scale: float
    opt: OptResult  # padded, on the divided response's scale
    solution: Solution  # padded, on the divided response's scale
    data_name: str | None = None
    # Set by lmer: the caller's data frame itself (a reference, not a copy), how rows with
    # missing values are treated, and lmer's weights / offset arguments as given (for update).
    data: object = None
    na_action: str = "omit"
    call: dict | None = None

    @cached_property
    def estimates(self) -> Estimates:
        """The estimates as the functional core's pytree (NumPy leaves)."""
        return assemble(
            self.opt.theta,
            self.solution,
            self.opt.value,
            self.opt.status,
            self.blocks.nobs,
            self.scale,
            self.model,
        )

    @property
    def reml(self) -> bool:
        return self.model.reml

    # --- criterion and likelihood -------------------------------------------------------
    @property
    def objective(self) -> float:
        """REML criterion (``REMLcrit``) for REML fits, deviance for ML fits."""
        return float(self.estimates.objective)

    @property
    def theta(self) -> np.ndarray:
        return np.array(self.estimates.theta)

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def ngroups(self) -> dict[str, int]:
        return self.design.ngroups

    @property
    def n_parameters(self) -> int:
        """Fixed effects + theta + sigma (the df of logLik)."""
        return len(self.design.fixed_names) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        """Log-likelihood (the REML log-likelihood for REML fits, as lme4's ``logLik``)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_parameters

    @property
    def bic(self) -> float:
        return -2 * self.loglik + np.log(self.nobs) * self.n_parameters

    @property
    def df_residual(self) -> int:
        return self.nobs - self.n_parameters

    # --- estimates -----------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        return float(self.estimates.sigma)

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(np.array(self.estimates.beta), index=list(self.design.fixed_names))

    @property
    def vcov(self) -> pd.DataFrame:
        names = list(self.design.fixed_names)
        p = len(names)
        v = self.sigma**2 * np.array(self.solution.vcov_unscaled)[:p, :p]
        return pd.DataFrame(v, index=names, columns=names)

    @property
    def std_errors(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=self.vcov.index)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Columns of each random term, in the model's term order."""
        return self.model.info.sizes

    @property
    def singular(self) -> bool:
        """True when a diagonal element of some T is (near) zero (lme4's ``isSingular``)."""
        diagonal = parameters.diagonal_mask(self.sizes)
        return bool(np.any(self.theta[diagonal] < SINGULAR_TOL))

    @property
    def status_code(self) -> Status:
        return Status(int(self.opt.status))

    @property
    def converged(self) -> bool:
        return self.status_code.converged

    @property
    def status(self) -> str:
        return self.status_code.message

    def _term_effects(self) -> list[np.ndarray]:
        """Conditional modes per term, each (levels, columns)."""
        effects, start = [], 0
        b = np.asarray(self.estimates.b)
        for term in self.design.terms:
            size = term.n_levels * term.n_columns
            effects.append(b[start : start + size].reshape(term.n_levels, term.n_columns))
            start += size
        return effects

    @cached_property
    def _fitted_rows(self) -> pd.Series:
        """Fitted values on the rows used."""
        values = self.design.x @ self.fixef.to_numpy() + self.model.offset
        for term, b in zip(self.design.terms, self._term_effects(), strict=True):
            values = values + np.sum(term.z * b[term.codes], axis=1)
        return pd.Series(values, index=self.design.rows)

    def _excluded(self, values: pd.Series) -> pd.Series:
        """``values`` on the rows used, spread over all rows of the data (NaN for the rows
        left out) when the fit was made with ``na_action="exclude"``."""
        if self.na_action != "exclude" or self.data is None:
            return values
        from .accessors import data_positions

        index, positions = data_positions(self)
        full = np.full(len(index), np.nan)
        full[positions] = values.to_numpy()
        return pd.Series(full, index=index, name=values.name)

    @property
    def fitted(self) -> pd.Series:
        """Fitted values (with ``na_action="exclude"``: one per data row, NaN if left out)."""
        return self._excluded(self._fitted_rows)

    @property
    def residuals(self) -> pd.Series:
        """Response minus fitted values (``na_action="exclude"``: as :attr:`fitted`)."""
        rows = pd.Series(self.design.y, index=self.design.rows) - self._fitted_rows
        return self._excluded(rows)

    # --- variance components -------------------------------------------------------------
    def term_group_names(self) -> list[str]:
        """lme4's group labels in VarCorr: a factor's second term is ``g.1`` and so on."""
        seen: dict[str, int] = {}
        names = []
        for term in self.design.terms:
            k = seen.get(term.group, 0)
            names.append(term.group if k == 0 else f"{term.group}.{k}")
            seen[term.group] = k + 1
        return names

    def variance_components(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(m))``: group, var1, var2, vcov, sdcor."""
        rows = []
        covs = parameters.covariances(self.theta, self.sizes, self.sigma)
        for term, group, cov in zip(self.design.terms, self.term_group_names(), covs, strict=True):
            sd = np.sqrt(np.diag(cov))
            for a, name in enumerate(term.names):
                rows.append((group, name, None, cov[a, a], sd[a]))
            for a in range(len(term.names)):
                for b in range(a + 1, len(term.names)):
                    denom = sd[a] * sd[b]
                    corr = cov[b, a] / denom if denom > 0 else np.nan
                    rows.append((group, term.names[a], term.names[b], cov[b, a], corr))
        rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """Variance components in the layout of lme4's ``as.data.frame(VarCorr(m))``, with the
        ``std_error`` of each ``sdcor`` entry (delta method on the exact Hessian)."""
        se = np.sqrt(np.diag(self.vcov_sdcor.to_numpy()))
        order = parameters.varcorr_order(self.sizes)
        return self.variance_components().assign(std_error=se[order])

    # --- inference -----------------------------------------------------------------------
    @cached_property
    def _derivatives(self) -> VarparDerivatives:
        return varpar_derivatives(self.theta, self.sigma, self.blocks, self.scale, self.reml)

    @property
    def vcov_varpar(self) -> pd.DataFrame:
        """Covariance of (theta, sigma): twice the inverse of the exact Hessian of the deviance
        in those parameters (lmerTest's ``vcov_varpar``)."""
        names = [f"theta{k + 1}" for k in range(len(self.theta))] + ["sigma"]
        return pd.DataFrame(self._derivatives.vcov_varpar, index=names, columns=names)

    @property
    def vcov_sdcor(self) -> pd.DataFrame:
        """Covariance of the SDs, correlations and sigma (named as in ``confint``)."""
        names = parameters.sdcor_names(self.design.terms)
        return pd.DataFrame(self._derivatives.vcov_sdcor, index=names, columns=names)

    @cached_property
    def _kenward_roger(self) -> KenwardRoger:
        if not self.reml:
            raise InferenceError("Kenward-Roger needs a REML fit; refit with reml=True")
        return kenward_roger(self.design, self.theta, self.sigma, self.vcov.to_numpy())

    def coef_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Fixed effects with ``estimate, std_error, df, t_value, p_value`` (lmerTest's table).

        ``ddf``: ``"satterthwaite"``, ``"kenward-roger"`` (adjusted SEs and df, REML fits only)
        or ``"none"`` (lme4's table: no df or p-values).
        """
        names = list(self.design.fixed_names)
        return self._t_tests(np.eye(len(names)), names, ddf)

    def _t_tests(self, contrasts: np.ndarray, index, ddf: str) -> pd.DataFrame:
        ddf = ddf_method(ddf)
        beta, vcov = self.fixef.to_numpy(), self.vcov.to_numpy()
        if ddf == "kenward-roger":
            kr = self._kenward_roger
            dfs = [kr_ddf(row[None, :], vcov, kr)[0] for row in contrasts]
            vcov = kr.vcov_adjusted
        elif ddf == "satterthwaite":
            d = self._derivatives
            dfs = satterthwaite_df(contrasts, vcov, d.vcov_beta_jacobian, d.vcov_varpar)
        else:
            dfs = [np.nan] * len(contrasts)
        return t_table(contrasts, beta, vcov, dfs, index)

    def contrast(self, contrast, ddf: str = "satterthwaite", joint: bool | None = None):
        """Test ``L @ beta = 0`` (lmerTest's ``contest``).

        ``contrast``: a vector or (q, p) matrix, or a Series/DataFrame whose labels are
        fixed-effect names. One row (or ``joint=False``) gives a t test per row (a DataFrame as
        :meth:`coef_table`); several rows give a joint F test (a one-row DataFrame with
        ``sum_sq, mean_sq, num_df, den_df, F_value, p_value``, as lmerTest's ``contest``).
        """
        names = list(self.design.fixed_names)
        matrix = contrast_matrix(contrast, names)
        if joint is None:
            joint = len(matrix) > 1
        if not joint:
            return self._t_tests(matrix, pd.RangeIndex(len(matrix)), ddf)
        return pd.DataFrame([self.f_test(matrix, ddf)])

    def f_test(self, matrix: np.ndarray, ddf: str = "satterthwaite") -> dict:
        """F test of ``matrix @ beta = 0`` in lmerTest's columns (Mean Sq: unscaled F sigma^2)."""
        ddf = ddf_method(ddf)
        beta, vcov = self.fixef.to_numpy(), self.vcov.to_numpy()
        if ddf == "satterthwaite":
            result = satterthwaite_f(matrix, beta, vcov, self._derivatives)
        elif ddf == "kenward-roger":
            result = kenward_roger_f(matrix, beta, vcov, self._kenward_roger)
        else:
            raise InferenceError("an F test needs ddf='satterthwaite' or 'kenward-roger'")
        mean_sq = result.pop("wald_F") * self.sigma**2
        return {"sum_sq": mean_sq * result["num_df"], "mean_sq": mean_sq} | result

    def anova(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Type III F tests of the fixed-effect terms (lmerTest's ``anova(m)``)."""
        return fixed_effects_table(self.design, partial(self.f_test, ddf=ddf), ddf)

    def confint(
        self, method: str = "profile", level: float = 0.95, nsim: int = 1000, seed=None
    ) -> pd.DataFrame:
        """Confidence intervals (``lower, upper``) in lme4's ``confint(oldNames = FALSE)`` rows:
        SDs and correlations per term, sigma, then the fixed effects.

        ``method``: ``"profile"`` (likelihood profile of the ML deviance, as lme4), ``"wald"``
        (fixed effects only, as lme4: the variance parameters get NaN) or ``"bootstrap"``
        (percentile intervals from ``nsim`` parametric bootstrap refits).
        """
        if not 0 < level < 1:
            raise InferenceError(f"level must be between 0 and 1, got {level!r}")
        method = str(method).lower()
        if method == "profile":
            return confint_table(profile_confint(self, level), level)
        if method == "wald":
            z = special.ndtri((1 + level) / 2)
            names = parameters.sdcor_names(self.design.terms)
            est, se = self.fixef, self.std_errors
            lower = np.concatenate([np.full(len(names), np.nan), est - z * se])
            upper = np.concatenate([np.full(len(names), np.nan), est + z * se])
            index = names + list(est.index)
            return confint_table(pd.DataFrame({"lower": lower, "upper": upper}, index=index), level)
        if method in ("bootstrap", "boot"):
            return self.bootstrap(nsim, seed).confint(level)
        raise InferenceError(f"method must be 'profile', 'wald' or 'bootstrap', got {method!r}")

    def profile(self, level: float = 0.99, points: int = 9) -> pd.DataFrame:
        """Points of the likelihood profile of every parameter (lme4's ``profile``): a long
        frame ``parameter, value, zeta`` reaching the ``level`` profile interval's bounds."""
        return profile_frame(self, level, points)

    def plot(self):
        """Residual diagnostics (a matplotlib Figure; ``pip install "jaxlmm[plot]"``):
        residuals against fitted, QQ plots of residuals and modes, scale-location."""
        from . import plots  # matplotlib is optional and slow to import

        return plots.diagnostics(dataclasses.replace(self, na_action="omit"))

    def plot_ranef(self, level: float = 0.95):
        """Caterpillar plot of the conditional modes with ``level`` intervals, one panel per
        random-effect column (lme4's ``dotplot(ranef(m, condVar = TRUE))``)."""
        from . import plots

        return plots.ranef_caterpillar(self, level)

    def plot_profile(self, level: float = 0.95, density: bool = False):
        """Profile zeta plots with the ``level`` profile intervals marked (lme4's
        ``xyplot(profile(m))``), or the profile densities (``densityplot``)."""
        from . import plots

        frame = self.profile(max(level, 0.99))
        if density:
            return plots.profile_density(frame)
        return plots.profile_zeta(frame, self.confint("profile", level))

    def bootstrap(self, nsim: int = 1000, seed=None) -> BootstrapResult:
        """Parametric bootstrap: ``nsim`` responses simulated from the fit, all refitted in one
        batch. ``.samples`` holds the replicates, ``.confint(level)`` percentile intervals."""
        responses = self._simulated(nsim, seed)
        return bootstrap(self.design, self.reml, self.theta, self.sigma, self.fixef, responses)

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False) -> pd.Series:
        """Predictions for the fit's rows or ``newdata`` (lme4's ``predict``); ``re_form="~0"``
        for the population level, a formula such as ``"~ (1 | g)"`` for some random terms."""
        beta, effects = self.fixef.to_numpy(), self._term_effects()
        offset = self.model.offset
        values = predict(self.design, beta, effects, offset, newdata, re_form, allow_new_levels)
        return self._excluded(values) if newdata is None else values

    def _simulated(self, nsim, seed) -> np.ndarray:
        rng = np.random.default_rng(seed)
        beta, offset = self.fixef.to_numpy(), self.model.offset
        return simulate_responses(self.design, self.theta, self.sigma, beta, offset, nsim, rng)

    def simulate(self, nsim: int = 1, seed=None) -> pd.DataFrame:
        """Responses simulated from the fitted model (lme4's ``simulate``): ``sim_1 ...``."""
        y = self._simulated(nsim, seed)
        columns = {f"sim_{k + 1}": y[k] for k in range(len(y))}
        return pd.DataFrame(columns, index=self.design.rows)

    def ml_fit(self) -> LinearMixedModelFit:
        """This model fitted by maximum likelihood (itself when it already is)."""
        return self._ml_fit

    @cached_property
    def _ml_fit(self) -> LinearMixedModelFit:
        return _refit(self, reml=False) if self.reml else self

    def conditional_covariances(self) -> dict[str, np.ndarray]:
        """Covariance matrices of the random effects given the data, per term and level:
        (levels, columns, columns) arrays keyed by the term's VarCorr group label (lme4's
        ``postVar`` of ``ranef(m, condVar = TRUE)``, times sigma^2)."""
        theta = parameters.pad_theta(self.theta, self.blocks.n_theta)
        first, rest = _host(programs.run(conditional_covariances, theta, self.blocks))
        terms, blocks, start = self.design.terms, [], 0
        if self.model.rows.ng1:  # term 1 block-diagonal, the later terms in the dense block
            t1, terms = terms[0], terms[1:]
            blocks.append(first[: t1.n_levels, : t1.n_columns, : t1.n_columns])
        for term in terms:
            s = term.n_columns
            index = start + np.arange(term.n_levels)[:, None] * s + np.arange(s)[None, :]
            blocks.append(rest[index[:, :, None], index[:, None, :]])
            start += term.n_levels * s
        names = self.term_group_names()
        return {name: self.sigma**2 * c for name, c in zip(names, blocks, strict=True)}

    def ranef(self, condvar: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor (lme4's ``ranef``): levels x effect columns.

        With ``condvar=True`` each effect gets a ``condsd_<name>`` column, the conditional
        standard deviation (the square root of the diagonal of lme4's ``postVar``), and each
        frame's ``attrs["postVar"]`` holds the conditional covariance matrices as a
        (levels, columns, columns) array (lme4's ``postVar`` with the level axis first; a
        list of such arrays, one per term, when a factor has several terms).
        """
        effects = self._term_effects()
        sds = covs = None
        if condvar:
            covs = list(self.conditional_covariances().values())
            sds = [np.sqrt(np.diagonal(c, axis1=1, axis2=2)) for c in covs]
        frames: dict[str, pd.DataFrame] = {}
        postvar: dict[str, list[np.ndarray]] = {}
        for k, (term, b) in enumerate(zip(self.design.terms, effects, strict=True)):
            columns = {name: b[:, a] for a, name in enumerate(term.names)}
            if sds is not None:
                columns |= {f"condsd_{name}": sds[k][:, a] for a, name in enumerate(term.names)}
                postvar.setdefault(term.group, []).append(covs[k])
            frame = pd.DataFrame(columns, index=pd.Index(term.levels, name=term.group))
            if term.group in frames:
                frame = frames[term.group].join(frame, how="outer")
            frames[term.group] = frame
        for group, arrays in postvar.items():  # lme4's attr(, "postVar"), levels first
            frames[group].attrs["postVar"] = arrays[0] if len(arrays) == 1 else arrays
        return frames

    # --- lme4's and lmerTest's everyday helpers ---------------------------------------------
    def VarCorr(self):  # noqa: N802 (lme4's name)
        """lme4's ``VarCorr(m)``: prints as ``print(VarCorr(m))``; ``vc["Subject"]`` is the
        group's covariance matrix, ``vc.format(comp=("Variance", "Std.Dev."))`` shows both."""
        from .printing import VarCorr

        return VarCorr(self)

    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's ``coef(m)``: per grouping factor, fixed effects plus conditional modes."""
        from .accessors import coef

        return coef(self)

    def update(self, formula: str | None = None, **changes) -> LinearMixedModelFit:
        """A new fit with a changed formula and/or lmer arguments (R's ``update``):
        ``fit.update(". ~ . - Days")``, ``fit.update(". ~ . + (1 | g)")``,
        ``fit.update(reml=False)``; data, weights, offset and the rest as in this fit."""
        from .update import update

        return update(self, formula, **changes)

    def ranova(self, reduce_terms: bool = True) -> pd.DataFrame:
        """lmerTest's ``ranova``: likelihood-ratio tests of the random-effects terms."""
        from .lmertest_tables import ranova

        return ranova(self, reduce_terms)

    def drop1(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """lmerTest's ``drop1``: F tests of the fixed-effect terms that can be dropped."""
        from .lmertest_tables import drop1

        return drop1(self, ddf)

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 (lme4's name)
        """lme4's ``getME(m, "X")``: the fixed-effects model matrix."""
        from .accessors import fixed_matrix

        return fixed_matrix(self)

    @property
    def Z(self):  # noqa: N802
        """lme4's ``getME(m, "Z")``: the random-effects model matrix (scipy.sparse CSC,
        n x q; terms in order, level-major within a term)."""
        from .accessors import random_matrix

        return random_matrix(self)

    @property
    def Lambda(self):  # noqa: N802
        """lme4's ``getME(m, "Lambda")``: the relative covariance factor (scipy.sparse CSC)."""
        from .accessors import relative_factor

        return relative_factor(self)

    @property
    def Lambdat(self):  # noqa: N802
        """lme4's ``getME(m, "Lambdat")``: the transpose of :attr:`Lambda`."""
        return self.Lambda.T.tocsc()

    def summary(self, ddf: str | None = None) -> str:
        """A text summary laid out as lme4's ``summary(m)``; with ``ddf`` the fixed-effects table
        has df and p-values as lmerTest's (``"satterthwaite"`` or ``"kenward-roger"``)."""
        from .printing import format_summary

        return format_summary(self, ddf)

    def __repr__(self) -> str:
        return self.summary()
