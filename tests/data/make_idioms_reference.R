# lme4 reference fits for R formula idioms that jaxlmm must read as R does: transforms (poly,
# scale, center, bs, factor, sqrt, ^ and %% inside calls), unusual column names, logical and
# non-ASCII factors, offsets, large predictor scales, and predictions for new data.
# Usage: Rscript make_idioms_reference.R   (run in tests/data; writes idioms_reference.json)
suppressMessages({library(lme4); library(splines); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))  # factor levels in code-point order, as jaxlmm sorts them
center <- function(x) x - mean(x)  # formulaic's center(), which base R lacks

sleep <- read.csv(gzfile("../../jaxlmm/datasets/sleepstudy.csv.gz"))
sleep$Subject <- factor(sleep$Subject)
sleep$x.y <- sleep$Days
sleep$`my-days` <- sleep$Days
sleep$`my group` <- sleep$Subject
sleep$`größe` <- sleep$Days %% 4
sleep$late <- sleep$Days >= 5
sleep$stage <- factor(ifelse(sleep$Days < 3, "früh", ifelse(sleep$Days < 7, "mittel", "spät")))
sleep$expo <- 1 + sleep$Days %% 3
sleep$shift <- 10 * (sleep$Days %% 2)
sleep$big6 <- sleep$Days * 1e6
sleep$big8 <- sleep$Days * 1e8
sleep$big12 <- sleep$Days * 1e12

cases <- list(
  list(name="poly", f=Reaction ~ poly(Days, 2) + (1 | Subject)),
  list(name="poly_raw", f=Reaction ~ poly(Days, 2, raw = TRUE) + (1 | Subject)),
  list(name="scale", f=Reaction ~ scale(Days) + (scale(Days) | Subject)),
  list(name="center", f=Reaction ~ center(Days) + (center(Days) | Subject)),
  list(name="functions",
       f=Reaction ~ I(Days^2) + log(Days + 1) + sqrt(Days) + exp(Days/10) + I(Days %% 3) +
         (1 | Subject)),
  list(name="bs", f=Reaction ~ bs(Days, df = 4) + (1 | Subject)),
  list(name="factor", f=Reaction ~ factor(Days) + (1 | Subject)),
  list(name="names_fixed", f=Reaction ~ x.y + late + `größe` + (1 | `my group`)),
  list(name="names_random", f=Reaction ~ `my-days` + (`my-days` | `my group`)),
  list(name="factor_levels", f=Reaction ~ Days + stage + (1 | Subject)),
  list(name="logical_random", f=Reaction ~ late + (late | Subject), REML=FALSE),
  list(name="offset_formula", f=Reaction ~ Days + offset(5 * log(expo)) + (Days | Subject)),
  list(name="offset_both", f=Reaction ~ Days + offset(expo) + (1 | Subject), offset="shift"),
  list(name="large_scale_1e6", f=Reaction ~ big6 + (1 | Subject)),
  list(name="large_scale_1e12", f=Reaction ~ big12 + (1 | Subject)),
  list(name="random_scale_1e8", f=Reaction ~ Days + (big8 | Subject)),
  list(name="predict_poly_scale", f=Reaction ~ poly(Days, 2) + (scale(Days) | Subject),
       newdata=data.frame(Days=c(0.5, 3, 12, 4), Subject=c(308, 309, 999, NA))),
  list(name="predict_bs", f=Reaction ~ bs(Days, df = 4) + (1 | Subject),
       newdata=data.frame(Days=c(0.5, 3, 8.5), Subject=c(308, 330, 372)))
)

fit_case <- function(cs) {
  reml <- if (is.null(cs$REML)) TRUE else cs$REML
  m <- if (is.null(cs$offset)) lmer(cs$f, sleep, REML=reml)
       else lmer(cs$f, sleep, REML=reml, offset=sleep[[cs$offset]])
  vc <- as.data.frame(VarCorr(m))
  out <- list(
    formula=paste(deparse(cs$f, width.cutoff=500L), collapse=""), REML=reml, nobs=nobs(m), theta=unname(getME(m, "theta")), beta=unname(fixef(m)),
    beta_names=names(fixef(m)), term_labels=attr(terms(m), "term.labels"), sigma=sigma(m),
    objective=if (reml) REMLcrit(m) else deviance(m),
    varcorr_group=vc$grp, varcorr_var1=vc$var1, varcorr_var2=vc$var2, sdcor=vc$sdcor)
  out$offset <- cs$offset  # the column passed as lmer's offset argument, if any
  if (!is.null(cs$newdata)) {
    out$newdata <- cs$newdata
    out$predict <- unname(predict(m, cs$newdata, allow.new.levels=TRUE))
  }
  out
}

out <- list(lme4_version=as.character(packageVersion("lme4")))
for (cs in cases) {
  out[[cs$name]] <- tryCatch(
    suppressWarnings(fit_case(cs)),
    error=function(e) list(formula=paste(deparse(cs$f), collapse=""), error=conditionMessage(e)))
}
write(toJSON(out, digits=NA, auto_unbox=TRUE, pretty=TRUE, na="null"), "idioms_reference.json")
