"""The nightly report shows every number with its interval and the verdict it supports."""

from datetime import date

from pipeline.report import nightly_report, verdict_of, with_interval

METRICS = {
    "model_recall_at_20": 0.44,
    "model_recall_at_20_ci_low": 0.41,
    "model_recall_at_20_ci_high": 0.47,
    "vstan_recall_at_20": 0.40,
    "model_vs_best_recall_at_20_diff": 0.04,
    "model_vs_best_recall_at_20_ci_low": 0.01,
    "model_vs_best_recall_at_20_ci_high": 0.07,
    "model_vs_best_mrr_at_20_diff": -0.01,
    "model_vs_best_mrr_at_20_ci_low": -0.03,
    "model_vs_best_mrr_at_20_ci_high": 0.01,
    "model_fit_auc": 0.75,
    "model_fit_auc_ci_low": 0.72,
    "model_fit_auc_ci_high": 0.78,
}


def test_a_metric_is_shown_with_its_interval_where_it_has_one():
    assert with_interval(METRICS, "model_recall_at_20") == "0.4400 [0.4100, 0.4700]"
    assert with_interval(METRICS, "vstan_recall_at_20") == "0.4000"
    assert with_interval(METRICS, "model_mrr_at_20") == "-"
    assert with_interval(METRICS, "model_vs_best_recall_at_20_diff", sign=True) == (
        "+0.0400 [+0.0100, +0.0700]"
    )


def test_the_verdict_comes_from_the_interval_not_the_estimate():
    assert verdict_of(METRICS, "model_vs_best_recall_at_20_diff") == "ahead"
    assert verdict_of(METRICS, "model_vs_best_mrr_at_20_diff") == "tied"
    assert verdict_of({"x_diff": 1.0, "x_ci_low": -2.0, "x_ci_high": -1.0}, "x_diff") == "behind"
    assert verdict_of({"x_diff": 1.0}, "x_diff") == "-"


def test_the_report_tables_the_model_the_comparison_and_the_fit_head(tmp_path):
    report = nightly_report(
        tmp_path / "curated",
        tmp_path / "features",
        date(2026, 11, 1),
        {},
        METRICS,
        {"version": "3", "promoted": False, "reason": "tied"},
    )
    assert "| model | 0.4400 [0.4100, 0.4700] |" in report
    assert "| recall@20 | +0.0400 [+0.0100, +0.0700] | ahead |" in report
    assert "| mrr@20 | -0.0100 [-0.0300, +0.0100] | tied |" in report
    assert "| fit_auc | 0.7500 [0.7200, 0.7800] |" in report
