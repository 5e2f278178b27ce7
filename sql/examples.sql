-- Example Spark SQL queries over the nightly scores (docs/scoring.md "SQL").
--
-- They use the temporary views that shopformer.scoring.sql_views.register_views(spark, cfg) creates:
--   scores_user_scores (published nights only), scores_latest_user_scores (newest published night per
--   source), scores_published_nights, scores_score_quality, gold_user_snapshots, and silver_events,
--   silver_sessions (published event dates only: docs/sessionization.md "Published dates").
-- The score views show a night only once scores.published_nights says it is whole and score quality judged
-- it (docs/scoring.md "Published nights"). A path-based table, e.g. delta.`data/warehouse/scores/user_scores`,
-- reads every written row instead: join scores.published_nights as sql_views.PUBLISHED does.
-- Each query starts at a "-- name: <id>" line (tests/scoring/test_quality.py runs every one of them) and ends with ";".
-- Thresholds (0.5, 0.6, 0.2 .. 0.6, LIMIT) are examples: edit them to the campaign.

-- name: likely_buyers_this_week
-- Users most likely to buy in the next 7 days, from the newest published night of each source.
-- propensity_7d is calibrated: 0.3 means about 3 in 10 such users buy within the week.
SELECT source, user_id, as_of_date, propensity_7d
FROM scores_latest_user_scores
ORDER BY propensity_7d DESC, source, user_id
LIMIT 1000;

-- name: high_value_churn_risk
-- High-value customers at risk: the top 40 % of a source's buyers by revenue in the 90 days before the
-- as-of date (gold.user_snapshots revenue_90d), with a 30-day churn probability of at least 0.5.
-- Scores and snapshots join on (source, user_id, as_of_date): the features the score was made from.
WITH valued AS (
  SELECT s.source, s.user_id, s.as_of_date, s.churn_30d, g.revenue_90d, g.n_purchases_90d,
         percent_rank() OVER (PARTITION BY s.source ORDER BY g.revenue_90d) AS value_rank
  FROM scores_latest_user_scores AS s
  JOIN gold_user_snapshots AS g
    ON g.source = s.source AND g.user_id = s.user_id AND g.as_of_date = s.as_of_date
  WHERE g.revenue_90d > 0
)
SELECT source, user_id, as_of_date, churn_30d, revenue_90d, n_purchases_90d
FROM valued
WHERE value_rank >= 0.6 AND churn_30d >= 0.5
ORDER BY churn_30d DESC, revenue_90d DESC, user_id;

-- name: churn_risk_with_reasons
-- Users most at risk of churning on the newest published night, with the two drivers that move their churn
-- score most (docs/scoring.md "Reasons"; effect = how much the driver adds to the probability).
-- try_element_at: rows scored before reasons existed have none (null), and a list may hold fewer than two.
SELECT source, user_id, as_of_date, churn_30d,
       try_element_at(churn_reasons, 1).reason AS top_reason,
       try_element_at(churn_reasons, 1).effect AS top_effect,
       try_element_at(churn_reasons, 2).reason AS second_reason
FROM scores_latest_user_scores
WHERE churn_30d >= 0.5
ORDER BY churn_30d DESC, source, user_id
LIMIT 1000;

-- name: coupon_price_sensitive
-- Coupon campaign: price-sensitive users (segment 'high' = most negative third of price_elasticity that
-- night) whose propensity is in a middle band: sure buyers need no coupon, unlikely ones will not convert.
-- Users without views have a null segment and are never selected, except on a source without views at
-- all, whose segments come from purchase behaviour (docs/model.md "Price sensitivity from purchases").
SELECT source, user_id, as_of_date, price_elasticity, propensity_7d
FROM scores_latest_user_scores
WHERE price_sensitivity_segment = 'high'
  AND propensity_7d BETWEEN 0.2 AND 0.6
ORDER BY source, price_elasticity, user_id;

-- name: score_quality_over_time
-- Quality per night and score, one column per metric (scores.score_quality is long: one row per metric).
-- Label metrics appear once labels matured (propensity after 7 days, churn after 30); psi needs no labels.
SELECT source, as_of_date, score,
       max(CASE WHEN metric = 'roc_auc' THEN value END) AS roc_auc,
       max(CASE WHEN metric = 'pr_auc' THEN value END) AS pr_auc,
       max(CASE WHEN metric = 'ece' THEN value END) AS ece,
       max(CASE WHEN metric = 'lift_top_decile' THEN value END) AS lift_top_decile,
       max(CASE WHEN metric = 'psi' THEN value END) AS psi,
       max(CASE WHEN metric = 'roc_auc' THEN n END) AS labelled_rows,
       max(base_rate) AS base_rate,
       bool_or(breached) AS any_breach
FROM scores_score_quality
GROUP BY source, as_of_date, score
ORDER BY source, score, as_of_date;

-- name: quality_breaches
-- Every recorded breach, newest first, with the threshold it crossed and the model version that scored it.
SELECT source, as_of_date, score, metric, value, threshold, note, model_version, evaluated_on, run_id
FROM scores_score_quality
WHERE breached
ORDER BY as_of_date DESC, source, score, metric;

-- name: sessions_per_day
-- Sessions, their length, conversion and revenue per start date, from published silver dates only: a night
-- that sessionize is rewriting (or that a killed run left half-written) is not counted half.
SELECT source, session_date, count(*) AS sessions,
       avg(duration_s) AS avg_duration_s,
       avg(CASE WHEN n_purchases > 0 THEN 1.0 ELSE 0.0 END) AS conversion,
       sum(revenue) AS revenue
FROM silver_sessions
GROUP BY source, session_date
ORDER BY source, session_date;
