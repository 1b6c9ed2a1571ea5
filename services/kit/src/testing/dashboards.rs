//! Checking Grafana dashboards against what the processes expose: every metric a panel's
//! PromQL names must be in some `/metrics`. The shop's and the operator's tests use it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// PromQL words that are not metric names where they stand without a `(` after them.
const KEYWORDS: [&str; 14] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "atan2",
];

/// Grouping clauses whose parenthesised list holds label names, not metrics.
const GROUPINGS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects. Grafana variables (`$__rate_interval`,
/// `${service}`), strings, label matchers, ranges, functions, aggregations, grouping label
/// lists and keywords are skipped; what is left are the selectors' names.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Set after a grouping keyword: the next parenthesised list is label names.
    let mut grouping = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if grouping => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                grouping = false;
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && is_name_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, or a duration like 5m after `offset`.
                while i < chars.len() && (is_name_char(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_name_start(c) => {
                let start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                let next = rest.chars().next();
                let next_word: String = rest.chars().take_while(|c| is_name_char(*c)).collect();
                // An aggregation: `sum(…)`, or `sum by (…) (…)`.
                let aggregation = next == Some('(') || next_word == "by" || next_word == "without";
                if GROUPINGS.contains(&word.as_str()) {
                    grouping = next == Some('(');
                } else if !aggregation && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every metric a dashboard queries, with the titles of the panels that query it: each
/// panel's (and nested row's) `targets[].expr`, and the metric of each `label_values(metric,
/// label)` template variable.
pub fn queried_metrics(dashboard: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                for name in promql_metric_names(expr) {
                    found.entry(name).or_default().insert(title.to_owned());
                }
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(')'))
            .map(|(args, _)| args)
            && let Some((selector, _label)) = args.rsplit_once(',')
        {
            let title = format!("variable {}", variable["name"].as_str().unwrap_or("?"));
            for name in promql_metric_names(selector) {
                found.entry(name).or_default().insert(title.clone());
            }
        }
    }
    found
}

/// The sample names an exposition (Prometheus text or OpenMetrics) can have: every sample's,
/// and for each declared family those its type gives (`_total` of a counter, `_bucket`, `_sum`
/// and `_count` of a histogram), so a family without a series yet still counts.
pub fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(family.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            for suffix in suffixes {
                names.insert(format!("{family}{suffix}"));
            }
        } else if !line.starts_with('#') {
            let name: String = line.chars().take_while(|c| is_name_char(*c)).collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// The metrics `dashboard` queries that none of `expositions` has, each with its panels.
/// Panics when the dashboard queries nothing: a parser finding no name would pass anything.
pub fn missing_metrics(dashboard: &Value, expositions: &[String]) -> Vec<(String, Vec<String>)> {
    let queried = queried_metrics(dashboard);
    assert!(
        !queried.is_empty(),
        "the dashboard {:?} queries no metric at all",
        dashboard["title"]
    );
    let exposed: BTreeSet<String> = expositions.iter().flat_map(|e| exposed_names(e)).collect();
    queried
        .into_iter()
        .filter(|(name, _)| !exposed.contains(name))
        .map(|(name, panels)| (name, panels.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        promql_metric_names(expr).into_iter().collect()
    }

    #[test]
    fn selectors_are_found_and_everything_else_skipped() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (service, route, le) (rate(shop_http_request_duration_seconds_bucket{service=~"$service", route!="/metrics"}[$__rate_interval])))"#
            ),
            ["shop_http_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                r#"sum(rate(a_total{status=~"5.."}[5m])) / ignoring(status) group_left sum(rate(b_total[5m] offset 1h)) > bool 0.5 or on (service) vector(0)"#
            ),
            ["a_total", "b_total"]
        );
        assert_eq!(names(r#"max_over_time(x:rate5m[${range}])"#), ["x:rate5m"]);
        assert!(names(r#"vector(1) * 2e3"#).is_empty());
    }

    #[test]
    fn a_dashboard_lists_panels_rows_and_variables() {
        let dashboard = serde_json::json!({
            "title": "t",
            "panels": [
                {"title": "a", "targets": [{"expr": "rate(x_total[1m])"}]},
                {"title": "row", "type": "row", "panels": [
                    {"title": "b", "targets": [{"expr": "y + x_total"}]}
                ]}
            ],
            "templating": {"list": [
                {"name": "service", "query": {"query": "label_values(z_info{a=\"b\"}, service)"}}
            ]}
        });
        let queried = queried_metrics(&dashboard);
        assert_eq!(
            queried.keys().map(String::as_str).collect::<Vec<_>>(),
            ["x_total", "y", "z_info"]
        );
        assert_eq!(queried["x_total"].len(), 2);
        assert!(queried["z_info"].contains("variable service"));
    }

    #[test]
    fn families_without_series_count_and_a_misspelt_name_is_missing() {
        let exposition = "# HELP c C.\n# TYPE c counter\n# TYPE h histogram\n\
                          h_bucket{le=\"1\"} 0\n# TYPE g gauge\ng{a=\"b\"} 1\n# EOF\n";
        let exposed = exposed_names(exposition);
        for name in ["c_total", "h_bucket", "h_sum", "h_count", "g"] {
            assert!(exposed.contains(name), "{name} in {exposed:?}");
        }
        let dashboard = serde_json::json!({"panels": [{"title": "p", "targets": [
            {"expr": "rate(c_total[1m]) + g + rate(h_sum[1m]) + rate(c_totl[1m])"}
        ]}]});
        assert_eq!(
            missing_metrics(&dashboard, &[exposition.to_owned()]),
            [("c_totl".to_owned(), vec!["p".to_owned()])]
        );
    }
}
