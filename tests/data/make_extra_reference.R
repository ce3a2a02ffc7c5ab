# Extra lme4 reference fits for jaxlmm's tests (weights, aliased columns, missing values,
# factor coding, interaction grouping, a three-column term).
# Usage: Rscript make_extra_reference.R <data_dir>   (writes extra_reference.json here)
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE)
rd <- function(name) {
  d <- read.csv(file.path(args[1], paste0(name, ".csv")))
  for (cn in names(d)) if (is.character(d[[cn]])) d[[cn]] <- factor(d[[cn]])
  d
}
sleep <- rd("sleepstudy"); sleep$Subject <- factor(sleep$Subject)
sleep$w <- 1 + (sleep$Days %% 3)
sleep$Days2 <- 2 * sleep$Days
sleep$half <- factor(ifelse(sleep$Days < 5, "early", "late"))
sleep_na <- sleep; sleep_na$Reaction[c(3, 50, 51, 120)] <- NA; sleep_na$Days[7] <- NA
pen <- rd("Penicillin")
pastes <- rd("Pastes")
cases <- list(
  list(name="weighted", d=sleep, f=Reaction ~ Days + (Days | Subject), REML=TRUE, w=TRUE),
  list(name="weighted_ml", d=sleep, f=Reaction ~ Days + (1 | Subject), REML=FALSE, w=TRUE),
  list(name="aliased", d=sleep, f=Reaction ~ Days + Days2 + (1 | Subject), REML=TRUE),
  list(name="missing", d=sleep_na, f=Reaction ~ Days + (Days | Subject), REML=TRUE),
  list(name="factor_interaction", d=sleep, f=Reaction ~ Days * half + (1 | Subject), REML=TRUE),
  list(name="fixed_factor", d=pen, f=diameter ~ sample + (1 | plate), REML=TRUE),
  list(name="no_intercept_slope", d=sleep, f=Reaction ~ Days + (0 + Days | Subject), REML=TRUE),
  list(name="interaction_group", d=pastes, f=strength ~ 1 + (1 | batch:cask), REML=FALSE),
  list(name="three_columns", d=sleep, f=Reaction ~ Days + I(Days^2) + (Days + I(Days^2) | Subject), REML=TRUE)
)
out <- list()
for (cs in cases) {
  m <- if (isTRUE(cs$w)) lmer(cs$f, cs$d, REML=cs$REML, weights=w) else lmer(cs$f, cs$d, REML=cs$REML)
  vc <- as.data.frame(VarCorr(m))
  out[[cs$name]] <- list(
    formula = paste(deparse(cs$f), collapse=""), REML = cs$REML, weighted = isTRUE(cs$w),
    nobs = nobs(m), theta = unname(getME(m, "theta")), beta = unname(fixef(m)),
    beta_names = names(fixef(m)), se = unname(sqrt(diag(vcov(m)))), sigma = sigma(m),
    objective = if (cs$REML) REMLcrit(m) else deviance(m), logLik = as.numeric(logLik(m)),
    AIC = AIC(m), BIC = BIC(m), sdcor = vc$sdcor, singular = isSingular(m))
}
write(toJSON(out, digits=NA, auto_unbox=TRUE, pretty=TRUE), "extra_reference.json")
