# lme4 / lmerTest reference values for jaxlmm's everyday helpers and printing: coef(),
# ranef(condVar = TRUE)'s postVar, getME's X / Z / Lambda, na.action = na.exclude, update(),
# lmerTest's ranova() and drop1(), and the printed text of VarCorr, summary, anova tables
# and confint (with the numbers that were printed, so that the layout can be checked apart
# from the last digits of the estimates).  Versions used: R 4.2, lme4 1.1-31, lmerTest 3.1-3.
# Usage (from tests/data): Rscript make_everyday_reference.R <data_dir>
#   e.g. Rscript make_everyday_reference.R /work/shared/data
# (writes everyday_reference.json here)
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
options(width = 200)  # jaxlmm never wraps a table; keep R from wrapping the references
args <- commandArgs(TRUE)
rd <- function(name) {
  d <- read.csv(file.path(args[1], paste0(name, ".csv")))
  for (cn in names(d)) if (is.character(d[[cn]])) d[[cn]] <- factor(d[[cn]])
  d
}
sleep <- rd("sleepstudy"); sleep$Subject <- factor(sleep$Subject)
sleep$half <- factor(ifelse(sleep$Days < 5, "early", "late"))
sleep$w <- 1 + (sleep$Days %% 3)
pen <- rd("Penicillin")
pastes <- rd("Pastes")
dye2 <- rd("Dyestuff2")

fstr <- function(f) paste(deparse(f), collapse = "")
text <- function(x, ...) paste(capture.output(print(x, ...)), collapse = "\n")
# a data.frame / matrix table -> list(rownames=..., <column>=...)
tab <- function(x) {
  x <- as.data.frame(x, check.names = FALSE)
  c(list(rownames = rownames(x)), lapply(as.list(x), function(v) unname(as.numeric(v))))
}
# a sparse matrix -> 0-based triplets
triplets <- function(m) {
  s <- summary(as(m, "TsparseMatrix"))
  list(nrow = nrow(m), ncol = ncol(m), i = s$i - 1L, j = s$j - 1L, x = s$x)
}
# an anova-like table: its numbers, R's printed text and its heading
atab <- function(a) c(tab(a), list(heading = attr(a, "heading"), text = text(a)))

out <- list()

## Models --------------------------------------------------------------------------------
f1 <- Reaction ~ Days + (Days | Subject)
f0 <- Reaction ~ Days + (1 | Subject)
m1 <- lmerTest::lmer(f1, sleep)
m0 <- lmerTest::lmer(f0, sleep)
m1ml <- lmerTest::lmer(f1, sleep, REML = FALSE)
fh <- Reaction ~ Days * half + (Days | Subject)
mh <- lmerTest::lmer(fh, sleep)
fa <- Reaction ~ Days + half + (1 | Subject)
ma <- lmerTest::lmer(fa, sleep)
fd <- Reaction ~ Days + (Days || Subject)
md <- lmerTest::lmer(fd, sleep)
fpen <- diameter ~ 1 + (1 | plate) + (1 | sample)
mpen <- lmerTest::lmer(fpen, pen)
fpens <- diameter ~ sample + (1 | plate)
mpens <- lmerTest::lmer(fpens, pen)
fpas <- strength ~ 1 + (1 | batch/cask)
mpas <- lmerTest::lmer(fpas, pastes)
f3 <- Reaction ~ Days + I(Days^2) + (Days + I(Days^2) | Subject)
m3 <- suppressWarnings(lme4::lmer(f3, sleep))  # lme4 warns that it may not have converged
fdye <- Yield ~ 1 + (1 | Batch)
mdye <- lme4::lmer(fdye, dye2)

## Printing ------------------------------------------------------------------------------
vc <- function(m) {
  v <- VarCorr(m)
  list(stddev = unname(unlist(lapply(v, attr, "stddev"))), sigma = attr(v, "sc"),
       corr = unname(unlist(lapply(v, function(x) {
         r <- attr(x, "correlation"); r[lower.tri(r)]}))),
       text = text(v), text_both = text(v, comp = c("Variance", "Std.Dev.")))
}
ci1 <- confint(m1, oldNames = FALSE)
ci1w <- confint(m1, method = "Wald", oldNames = FALSE, level = 0.9)
message("lme4's anova(m0, m1) refits the REML models by ML first")
lrt <- suppressMessages(anova(m0, m1))
out$print <- list(
  varcorr_m1 = vc(m1), varcorr_pen = vc(mpen), varcorr_double = vc(md),
  varcorr_three = vc(m3),
  summary_m1 = text(summary(as(m1, "lmerMod"))),
  summary_m1_satterthwaite = text(summary(m1)),
  summary_m1_ml = text(summary(as(m1ml, "lmerMod"))),
  summary_pastes = text(summary(as(mpas, "lmerMod"))),
  summary_dye2 = text(summary(mdye)),
  summary_dye2_residuals = unname(quantile(residuals(mdye, scaled = TRUE))),
  summary_m1_residuals = unname(quantile(residuals(m1, scaled = TRUE))),
  anova_m1 = atab(anova(m1)),
  anova_mh = atab(anova(mh)),
  anova_mh_kr = atab(anova(mh, ddf = "Kenward-Roger")),
  lrt_m0_m1 = atab(lrt),
  confint_m1 = list(rownames = rownames(ci1), lower = unname(ci1[, 1]),
                    upper = unname(ci1[, 2]), text = text(ci1)),
  confint_m1_wald90 = list(rownames = rownames(ci1w), lower = unname(ci1w[, 1]),
                           upper = unname(ci1w[, 2]), text = text(ci1w)))

## ranova --------------------------------------------------------------------------------
rn <- function(m) {
  r <- ranova(m)
  c(atab(r), list(formulae = unname(sapply(attr(r, "formulae"), fstr))))
}
out$ranova <- list(
  m1 = c(list(formula = fstr(f1), REML = TRUE), rn(m1)),
  m1_ml = c(list(formula = fstr(f1), REML = FALSE), rn(m1ml)),
  m0 = c(list(formula = fstr(f0), REML = TRUE), rn(m0)),
  double = c(list(formula = fstr(fd), REML = TRUE), rn(md)),
  penicillin = c(list(formula = fstr(fpen), REML = TRUE), rn(mpen)),
  pastes = c(list(formula = fstr(fpas), REML = TRUE), rn(mpas)))

## drop1 ---------------------------------------------------------------------------------
out$drop1 <- list(
  m1 = c(list(formula = fstr(f1)), atab(drop1(m1))),
  interaction = c(list(formula = fstr(fh)), atab(drop1(mh))),
  interaction_kr = c(list(formula = fstr(fh)), atab(drop1(mh, ddf = "Kenward-Roger"))),
  additive = c(list(formula = fstr(fa)), atab(drop1(ma))),
  penicillin = c(list(formula = fstr(fpens)), atab(drop1(mpens))))

## coef ----------------------------------------------------------------------------------
co <- function(m) lapply(coef(m), tab)
fslope <- Reaction ~ 1 + (Days | Subject)
out$coef <- list(
  m1 = c(list(formula = fstr(f1)), co(m1)),
  additive = c(list(formula = fstr(fa)), co(ma)),
  slope_only_random = c(list(formula = fstr(fslope)), co(lme4::lmer(fslope, sleep))),
  penicillin = c(list(formula = fstr(fpen)), co(mpen)))

## postVar -------------------------------------------------------------------------------
pv <- function(m, g) {
  a <- attr(ranef(m, condVar = TRUE)[[g]], "postVar")
  if (is.list(a)) return(lapply(a, function(x) as.numeric(x)))
  list(dim = dim(a), values = as.numeric(a))  # column-major (s, s, levels)
}
out$postvar <- list(
  m1 = list(formula = fstr(f1), Subject = pv(m1, "Subject")),
  penicillin = list(formula = fstr(fpen), plate = pv(mpen, "plate"),
                    sample = pv(mpen, "sample")),
  double = list(formula = fstr(fd), Subject = pv(md, "Subject")))

## getME ---------------------------------------------------------------------------------
me <- function(m, f) list(
  formula = fstr(f), X_colnames = colnames(getME(m, "X")), X = as.numeric(getME(m, "X")),
  Z = triplets(getME(m, "Z")), Z_colnames = colnames(getME(m, "Z")),
  ZtZ = as.numeric(as.matrix(crossprod(getME(m, "Z")))),
  Lambda = triplets(getME(m, "Lambda")), theta = unname(getME(m, "theta")))
out$getME <- list(m1 = me(m1, f1), penicillin = me(mpen, fpen), pastes = me(mpas, fpas),
                  double = me(md, fd))

## na.action = na.exclude ------------------------------------------------------------------
sleep_na <- sleep; sleep_na$Reaction[c(3, 50, 51, 120)] <- NA; sleep_na$Days[7] <- NA
mx <- lme4::lmer(f1, sleep_na, na.action = na.exclude)
mo <- lme4::lmer(f1, sleep_na)
out$na_exclude <- list(
  formula = fstr(f1), missing_Reaction_1based = c(3, 50, 51, 120), missing_Days_1based = 7,
  nobs = nobs(mx), fitted = unname(fitted(mx)), residuals = unname(residuals(mx)),
  predict = unname(predict(mx)), fitted_omit_length = length(fitted(mo)))

## update --------------------------------------------------------------------------------
mw <- lme4::lmer(f1, sleep, weights = w)
u1 <- update(m1, . ~ . - Days)
u2 <- update(m0, . ~ . + I(Days^2))
u3 <- update(m1, REML = FALSE)
u4 <- update(mw, . ~ . - Days)
u5 <- update(m1, . ~ . - (Days | Subject) + (1 | Subject))
u6 <- update(m0, log(Reaction) ~ .)
out$update <- list(
  minus_days = list(formula = fstr(formula(u1)), REMLcrit = REMLcrit(u1)),
  plus_square = list(formula = fstr(formula(u2)), REMLcrit = REMLcrit(u2),
                     beta = unname(fixef(u2))),
  ml = list(deviance = deviance(u3)),
  weighted_minus_days = list(formula = fstr(formula(u4)), REMLcrit = REMLcrit(u4)),
  swap_term = list(formula = fstr(formula(u5)), REMLcrit = REMLcrit(u5)),
  log_response = list(formula = fstr(formula(u6)), REMLcrit = REMLcrit(u6)))

out$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                     lmerTest = as.character(packageVersion("lmerTest")))
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null", na = "null"),
      "everyday_reference.json")
