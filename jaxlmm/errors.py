"""Exceptions and warnings raised at jaxlmm's user-facing edge."""


class JaxlmmError(ValueError):
    """Base class: the model or its data cannot be fitted as given."""


class FormulaError(JaxlmmError):
    """The formula is malformed or has no random-effects term."""


class DataError(JaxlmmError):
    """The data cannot support the model (missing column, bad values, too few levels...)."""


class InferenceError(JaxlmmError):
    """A test, interval or prediction that the model cannot give as asked."""


class ConvergenceWarning(UserWarning):
    """The optimiser's exact-derivative check at the optimum failed."""


class RankDeficiencyWarning(UserWarning):
    """Aliased fixed-effect columns were dropped."""
