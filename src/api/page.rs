//! The status page: the status report as one self-contained HTML page.
//!
//! Why this exists: at 3 a.m. an operator opens a browser, not `curl | jq`. The page is rendered
//! on the server from the same report as `/status` (pure: report in, text out), uses no
//! external assets or scripts, and reloads itself every few seconds with a meta refresh.

use std::fmt::Write;

use crate::publish::StatusReport;

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECONDS: u32 = 2;

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The page for `report`.
pub fn render(report: &StatusReport) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>healthdns status</title><style>\
         body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         .up{{background:#c8f7c5}}.down{{background:#f7c5c5}}.unknown{{background:#eee}}\
         </style></head><body><h1>healthdns</h1>"
    );
    if report.dry_run {
        html.push_str(
            "<p id=\"dry-run\"><strong>Dry run:</strong> every configured address is served.</p>",
        );
    }
    if !report.write_errors.is_empty() {
        html.push_str("<h2>Files not written</h2><p>Answers go on from memory; each write is retried.</p><table id=\"write-errors\"><tr><th>File</th><th>Error</th><th>Failures</th><th>Since</th></tr>");
        for problem in &report.write_errors {
            let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(problem.since);
            let _ = write!(
                html,
                "<tr class=\"down\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&problem.file.display().to_string()),
                escape(&problem.error),
                problem.failures,
                humantime::format_rfc3339_seconds(since),
            );
        }
        html.push_str("</table>");
    }
    if let Some(cluster) = &report.cluster {
        let _ = write!(
            html,
            "<h2>Cluster</h2><p id=\"cluster-node\">Node {}{}</p>\
             <table id=\"members\"><tr><th>Peer</th><th>Address</th><th>State</th></tr>",
            escape(&cluster.node),
            if cluster.isolated {
                " <strong>(isolated: no live peer; nothing is taken out by agreement)</strong>"
            } else {
                ""
            },
        );
        for member in &cluster.members {
            let state = if member.live { "live" } else { "dead" };
            let _ = write!(
                html,
                "<tr class=\"{}\" data-member=\"{}\"><td>{}</td><td>{}</td><td>{state}</td></tr>",
                if member.live { "up" } else { "down" },
                escape(&member.node),
                escape(&member.node),
                member.address,
            );
        }
        html.push_str("</table>");
    }
    for pool in &report.pools {
        let _ = write!(
            html,
            "<h2>Pool {}</h2><p>Names: {}</p><table class=\"pool\" data-pool=\"{}\">\
             <tr><th>Address</th><th>State</th><th>Latency</th><th>Since</th><th>Last check</th></tr>",
            escape(&pool.name),
            escape(&pool.names.join(", ")),
            escape(&pool.name),
        );
        for address in &pool.addresses {
            let latency = address
                .latency_ms()
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms"));
            let since = address.since.map_or_else(
                || "-".to_string(),
                |time| humantime::format_rfc3339_seconds(time).to_string(),
            );
            let last: Vec<String> = address
                .checks
                .iter()
                .map(|check| match (&check.reason, check.last_passed) {
                    (Some(reason), _) => format!("{}: {}", check.check, reason),
                    (None, Some(true)) => format!("{}: passed", check.check),
                    _ => format!("{}: no result yet", check.check),
                })
                .collect();
            // In a cluster: who says it is down, of how many voters.
            let votes = address.votes.as_ref().map_or_else(String::new, |votes| {
                format!(
                    " <span class=\"votes\">(down: {} of {})</span>",
                    if votes.down.is_empty() {
                        "none".to_string()
                    } else {
                        escape(&votes.down.join(", "))
                    },
                    votes.voters
                )
            });
            let _ = write!(
                html,
                "<tr class=\"address {state}\" data-address=\"{address}\" data-state=\"{state}\">\
                 <td>{address}{canary}</td><td>{state}{votes}</td><td>{latency}</td><td>{since}</td><td>{last}</td></tr>",
                state = address.state,
                address = address.address,
                canary = match (address.canary, address.forced) {
                    (true, _) => " (canary)".to_string(),
                    (false, Some(forced)) => format!(" (forced {forced})"),
                    (false, None) => String::new(),
                },
                last = escape(&last.join("; ")),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Answers</h2><table id=\"answers\"><tr><th>Name</th><th>A/AAAA</th></tr>");
    for answer in &report.answers {
        let addresses: Vec<String> = answer.addresses.iter().map(ToString::to_string).collect();
        let _ = write!(
            html,
            "<tr data-name=\"{name}\"><td>{name}</td><td>{}</td></tr>",
            if answer.servfail {
                "SERVFAIL".to_string()
            } else {
                addresses.join(" ")
            },
            name = escape(&answer.name),
        );
    }
    html.push_str(
        "</table><h2>Zones</h2><table id=\"zones\"><tr><th>Zone</th><th>Serial</th></tr>",
    );
    for zone in &report.zones {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(&zone.origin),
            zone.serial
        );
    }
    html.push_str("</table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{AddressReport, CheckReport, PoolReport};
    use crate::publish::{AnswerReport, ZoneReport};

    #[test]
    fn the_page_shows_states_and_escapes_what_it_shows() {
        let report = StatusReport {
            dry_run: false,
            pools: vec![PoolReport {
                name: "web<1>".into(),
                names: vec!["www.example.test.".into()],
                addresses: vec![AddressReport {
                    address: "192.0.2.1".parse().unwrap(),
                    state: crate::health::verdict::State::Down,
                    canary: false,
                    forced: Some(crate::health::verdict::State::Down),
                    since: None,
                    checks: vec![CheckReport {
                        check: "http http://{address}/".into(),
                        state: crate::health::verdict::State::Down,
                        since: None,
                        last_passed: Some(false),
                        last_latency_ms: Some(1.0),
                        smoothed_latency_ms: None,
                        reason: Some("http: status 503 <b>".into()),
                    }],
                    votes: Some(crate::health::VotesReport {
                        voters: 3,
                        down: vec!["ns1".into(), "ns<2>".into()],
                    }),
                }],
            }],
            answers: vec![AnswerReport {
                name: "www.example.test.".into(),
                addresses: vec![],
                servfail: true,
            }],
            zones: vec![ZoneReport {
                origin: "example.test.".into(),
                serial: 7,
            }],
            write_errors: vec![crate::export::WriteProblem {
                file: "/var/lib/healthdns/<state>".into(),
                error: "No space left on device (os error 28)".into(),
                since: 0,
                failures: 3,
            }],
            cluster: Some(crate::publish::ClusterReport {
                node: "ns1".into(),
                isolated: false,
                members: vec![crate::cluster::gossip::Member {
                    node: "ns2".into(),
                    generation: 1,
                    address: "127.0.6.2:7946".parse().unwrap(),
                    live: true,
                }],
            }),
        };
        let page = render(&report);
        assert!(
            page.contains("data-address=\"192.0.2.1\" data-state=\"down\""),
            "{page}"
        );
        assert!(page.contains("Pool web&lt;1&gt;"), "{page}");
        assert!(page.contains("192.0.2.1 (forced down)"), "{page}");
        assert!(page.contains("(down: ns1, ns&lt;2&gt; of 3)"), "{page}");
        assert!(page.contains("data-member=\"ns2\""), "{page}");
        assert!(page.contains("status 503 &lt;b&gt;"), "{page}");
        assert!(page.contains("<td>SERVFAIL</td>"), "{page}");
        assert!(page.contains("<td>example.test.</td><td>7</td>"), "{page}");
        assert!(page.contains("/var/lib/healthdns/&lt;state&gt;</td><td>No space left on device (os error 28)</td><td>3</td>"), "{page}");
        assert!(
            !page.contains("http://") || !page.contains("src="),
            "no external assets"
        );
    }
}
