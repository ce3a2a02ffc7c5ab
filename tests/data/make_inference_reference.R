# lmerTest / pbkrtest / lme4 inference reference values for jaxlmm's tests:
# type III anova (Satterthwaite and Kenward-Roger), the type III contrast matrices,
# contest / contest1D, pbkrtest::vcovAdj, summary coefficient tables, likelihood-ratio
# anova(m0, m1[, m2]) tables, predict() with new data / new levels / re.form, and a
# weighted fit, and an unbalanced refit of the interaction model (the KR adjustment is zero
# for the balanced fits).  Versions used: R 4.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2.
# Usage (from tests/data): Rscript make_inference_reference.R <data_dir>
#   e.g. Rscript make_inference_reference.R /work/shared/data
# (writes inference_reference.json here)
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
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

# a data.frame / matrix table -> list(rownames=..., <column>=...)
tab <- function(x) {
  x <- as.data.frame(x, check.names=FALSE)
  c(list(rownames=rownames(x)), lapply(as.list(x), function(v) unname(as.numeric(v))))
}
# a matrix -> list(rownames, colnames, rows = list of row vectors)
mat <- function(x) {
  x <- as.matrix(x); attributes(x)[c("P", "W", "condi")] <- NULL
  list(rownames=rownames(x), colnames=colnames(x),
       rows=lapply(seq_len(nrow(x)), function(i) unname(as.numeric(x[i, ]))))
}
fstr <- function(f) paste(deparse(f), collapse="")
basics <- function(m, f, REML) list(
  formula=fstr(f), REML=REML, beta_names=names(fixef(m)), beta=unname(fixef(m)),
  sigma=sigma(m), theta=unname(getME(m, "theta")), vcov=mat(vcov(m)))
an3 <- function(m, ddf) tab(anova(m, type="III", ddf=ddf))
coefs <- function(m, ddf) tab(summary(m, ddf=ddf)$coefficients)

out <- list()

## 1. interaction -----------------------------------------------------------
f1 <- Reaction ~ Days * half + (Days | Subject)
m <- lmerTest::lmer(f1, sleep, REML=TRUE)
L2 <- rbind(c(0, 1, 0, 0), c(0, 0, 1, 0))
l1 <- c(0, 1, 0, 1)
# contest (joint F) for L2 and contest1D for l1, with both ddf methods
contrast_tests <- function(m) list(
  contest_L=lapply(seq_len(nrow(L2)), function(i) L2[i, ]),
  contest_satterthwaite=tab(contest(m, L2, ddf="Satterthwaite")),
  contest_kenward_roger=tab(contest(m, L2, ddf="Kenward-Roger")),
  contest1D_L=l1,
  contest1D_satterthwaite=tab(contest1D(m, l1, ddf="Satterthwaite")),
  contest1D_kenward_roger=tab(contest1D(m, l1, ddf="Kenward-Roger")))
out$interaction <- c(basics(m, f1, TRUE), list(
  anova_III_satterthwaite=an3(m, "Satterthwaite"),
  anova_III_kenward_roger=an3(m, "Kenward-Roger"),
  contrasts_type3=lapply(lmerTest:::get_contrasts_type3(m), mat),
  vcovAdj=mat(pbkrtest::vcovAdj(m)),
  coef_satterthwaite=coefs(m, "Satterthwaite"),
  coef_kenward_roger=coefs(m, "Kenward-Roger")), contrast_tests(m))

## 2. factor_fixed ----------------------------------------------------------
f2 <- diameter ~ sample + (1 | plate)
m <- lmerTest::lmer(f2, pen, REML=TRUE)
out$factor_fixed <- c(basics(m, f2, TRUE), list(
  anova_III_satterthwaite=an3(m, "Satterthwaite"),
  anova_III_kenward_roger=an3(m, "Kenward-Roger"),
  contrasts_type3=lapply(lmerTest:::get_contrasts_type3(m), mat),
  coef_satterthwaite=coefs(m, "Satterthwaite"),
  coef_kenward_roger=coefs(m, "Kenward-Roger")))

## 3. ml_slope --------------------------------------------------------------
f3 <- Reaction ~ Days + (Days | Subject)
m <- lmerTest::lmer(f3, sleep, REML=FALSE)
out$ml_slope <- c(basics(m, f3, FALSE), list(
  anova_III_satterthwaite=an3(m, "Satterthwaite"),
  coef_satterthwaite=coefs(m, "Satterthwaite")))

## 4. lrt -------------------------------------------------------------------
fm0 <- Reaction ~ Days + (1 | Subject)
fm1 <- Reaction ~ Days + (Days | Subject)
fm2 <- Reaction ~ Days + I(Days^2) + (Days | Subject)
m0 <- lme4::lmer(fm0, sleep)
m1 <- lme4::lmer(fm1, sleep)
m2 <- lme4::lmer(fm2, sleep, REML=FALSE)
out$lrt <- list(
  m0=list(formula=fstr(fm0), REML=TRUE), m1=list(formula=fstr(fm1), REML=TRUE),
  m2=list(formula=fstr(fm2), REML=FALSE),
  note="lme4 anova() refits REML models with ML (refit=TRUE) before comparing",
  anova_m0_m1=tab(anova(m0, m1)),
  anova_m0_m1_m2=tab(anova(m0, m1, m2)))

## 5. predict ---------------------------------------------------------------
nd <- data.frame(Days=c(0, 3.5, 9, 2), Subject=c("308", "309", "372", "999"))
pr <- list(model=list(formula=fstr(fm1), REML=TRUE),
  newdata=list(Days=nd$Days, Subject=nd$Subject),
  fitted_head5=unname(head(predict(m1), 5)),
  newdata_rows1to3=unname(predict(m1, nd[1:3, ])),
  newdata_allow_new=unname(predict(m1, nd, allow.new.levels=TRUE)),
  newdata_re_form_NA=unname(predict(m1, nd, re.form=NA)))
p_int <- tryCatch(unname(predict(m1, nd, re.form=~(1 | Subject), allow.new.levels=TRUE)),
                  error=function(e) conditionMessage(e))
if (is.numeric(p_int)) {
  pr$re_form_intercept <- list(model_formula=fstr(fm1), value=p_int)
} else {
  fm1b <- Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)
  m1b <- lme4::lmer(fm1b, sleep)
  pr$re_form_intercept <- list(
    model_formula=fstr(fm1b), REML=TRUE, error_on_m1=p_int,
    beta=unname(fixef(m1b)), theta=unname(getME(m1b, "theta")),
    value=unname(predict(m1b, nd, re.form=~(1 | Subject), allow.new.levels=TRUE)))
}
out$predict <- pr

## 6. weighted --------------------------------------------------------------
m <- lmerTest::lmer(fm1, sleep, REML=TRUE, weights=w)
va <- as.matrix(pbkrtest::vcovAdj(m)); attributes(va)[c("P", "W", "condi")] <- NULL
out$weighted <- c(basics(m, fm1, TRUE), list(
  weights="w = 1 + (Days %% 3)",
  coef_satterthwaite=coefs(m, "Satterthwaite"),
  coef_kenward_roger=coefs(m, "Kenward-Roger"),
  vcovAdj=mat(va),
  vcovAdj_differs_from_vcov=!isTRUE(all.equal(unname(va), unname(as.matrix(vcov(m))))),
  vcovAdj_max_abs_diff=max(abs(va - as.matrix(vcov(m)))),
  note=paste("pbkrtest 0.5.2 builds Sigma = sum_k ggamma_k G_k with an identity residual",
             "block (prior weights ignored) while Phi = vcov(m) does use the weights")))

## 7. unbalanced (extra): the KR adjustment vanishes for the balanced sleepstudy fits above
## (vcovAdj == vcov), so repeat the interaction model with rows dropped to exercise it.
drop_rows <- c(3, 7, 50, 51, 120)
m <- lmerTest::lmer(f1, sleep[-drop_rows, ], REML=TRUE)
kr <- pbkrtest::KRmodcomp(m, L2)
out$unbalanced <- c(basics(m, f1, TRUE), list(
  dropped_rows_1based=drop_rows,
  anova_III_satterthwaite=an3(m, "Satterthwaite"),
  anova_III_kenward_roger=an3(m, "Kenward-Roger"),
  KRmodcomp_L=list(F_scaled=kr$test["Ftest", "stat"], F_unscaled=kr$test["FtestU", "stat"],
                   ndf=kr$test[1, "ndf"], ddf=kr$test[1, "ddf"],
                   F_scaling=kr$test["Ftest", "F.scaling"], A1=unname(kr$aux["A1"]),
                   A2=unname(kr$aux["A2"])),
  vcovAdj=mat(pbkrtest::vcovAdj(m)),
  coef_satterthwaite=coefs(m, "Satterthwaite"),
  coef_kenward_roger=coefs(m, "Kenward-Roger")), contrast_tests(m))

write(toJSON(out, digits=NA, auto_unbox=TRUE, pretty=TRUE, null="null", na="null"),
      "inference_reference.json")
