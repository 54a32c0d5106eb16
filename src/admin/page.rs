//! The status page at `GET /`: the `/status` document as an HTML table, rendered here.
//!
//! The rows are in the HTML as sent, so the page reads without scripts (and runs none: its CSP
//! allows none); `<meta http-equiv="refresh">` reloads it. Every value placed in it is
//! HTML-escaped: provider names come from the config and error text from token servers. The
//! words are [`status`](super::status)'s, the same `credproxy status` prints.

use super::status::{ProviderStatus, StatusReport, expiry, human, lifetime, relative};

/// The page's shell: `{{SUB}}` and `{{ROWS}}` are filled in.
const SHELL: &str = include_str!("page.html");

/// The whole page for `report`, with times relative to `now_unix`.
pub fn render(report: &StatusReport, now_unix: i64) -> String {
    let mut sub = format!("version {}", escape(&report.version));
    if let Some(started) = report
        .started_at
        .as_deref()
        .and_then(super::status::parse_rfc3339)
    {
        sub.push_str(&format!(" · up {}", human(now_unix - started)));
    }
    sub.push_str(&format!(" · {} provider(s)", report.providers.len()));
    let mut rows = String::new();
    for p in &report.providers {
        row(&mut rows, p, now_unix);
    }
    if report.providers.is_empty() {
        rows.push_str(
            "    <tr><td colspan=\"9\" class=\"muted\">no providers configured</td></tr>\n",
        );
    }
    SHELL
        .replacen("{{SUB}}", &sub, 1)
        .replacen("{{ROWS}}", &rows, 1)
}

fn row(out: &mut String, p: &ProviderStatus, now: i64) {
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut where_ = vec![escape(&p.preset)];
    where_.push(format!("hosts {}", escape(&p.hosts.join(", "))));
    if !p.routes.is_empty() {
        where_.push(format!("routes {}", escape(&p.routes.join(", "))));
    }
    where_.push(format!("upstream {}", escape(&p.upstream)));
    let details: Vec<String> = p
        .details
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    if !details.is_empty() {
        where_.push(details.join(", "));
    }
    let error = p.last_error.as_deref().map_or_else(String::new, escape);
    out.push_str(&format!(
        "    <tr class=\"provider health-{health}\" data-provider=\"{name}\" data-state=\"{state}\">\
<td><strong>{name}</strong><div class=\"muted\">{where_}</div></td>\
<td><span class=\"state\">{summary}</span></td>\
<td class=\"num\">{expires}</td>\
<td class=\"num\">{lifetime}</td>\
<td class=\"num\">{last}</td>\
<td class=\"num\">{next}</td>\
<td class=\"num\">{requests}</td>\
<td class=\"num\">{rejected}</td>\
<td class=\"{error_class}\">{error}</td></tr>\n",
        health = escape(&p.health),
        name = escape(&p.name),
        state = escape(&p.state),
        where_ = where_.join(" · "),
        summary = escape(&p.summary),
        expires = escape(&expiry(p)),
        lifetime = escape(&lifetime(p)),
        last = escape(&relative(p.last_refresh.as_deref(), now)),
        next = escape(&relative(p.next_refresh.as_deref(), now)),
        requests = count(p.requests),
        rejected = count(p.upstream_401s),
        error_class = if error.is_empty() { "" } else { "err" },
    ));
}

/// HTML-escape text for an element's content or a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
