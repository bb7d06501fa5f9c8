//! The run report: one self-contained HTML page (`index.html`; inline SVG and CSS, no script,
//! nothing fetched) with throughput and latency over time, fault windows shaded, the nemesis
//! schedule, the anomaly table and the command that replays the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::availability::{FaultWindow, WindowStats};
use crate::checker::CheckResult;
use crate::history::{Event, EventKind, Op};

/// What the page is made from.
pub struct ReportInput<'a> {
    pub events: &'a [Event],
    pub windows: &'a [FaultWindow],
    pub faults: &'a [WindowStats],
    pub check: &'a CheckResult,
    /// The command that replays the run, if known.
    pub command: Option<&'a str>,
}

/// Per second of the run: sends completed ok, failed, unknown; and the ok sends' latencies.
#[derive(Default, Clone)]
struct Second {
    ok: u64,
    fail: u64,
    info: u64,
    latencies_ms: Vec<f64>,
}

fn seconds(events: &[Event]) -> Vec<Second> {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out: Vec<Second> = Vec::new();
    for e in events {
        if !matches!(e.op, Op::Send { .. }) {
            continue;
        }
        if e.kind == EventKind::Invoke {
            invoked.insert(e.process, e.time_ns);
            continue;
        }
        let Some(start) = invoked.remove(&e.process) else { continue };
        let s = (e.time_ns / 1_000_000_000) as usize;
        if out.len() <= s {
            out.resize(s + 1, Second::default());
        }
        match e.kind {
            EventKind::Ok => {
                out[s].ok += 1;
                out[s].latencies_ms.push(e.time_ns.saturating_sub(start) as f64 / 1e6);
            }
            EventKind::Fail => out[s].fail += 1,
            _ => out[s].info += 1,
        }
    }
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;

/// A line chart of `series` (name, colour, one value per second) over `seconds` seconds, with
/// the fault windows shaded.
fn chart(title: &str, unit: &str, seconds: usize, series: &[(&str, &str, Vec<f64>)], windows: &[FaultWindow]) -> String {
    let max = series.iter().flat_map(|(_, _, v)| v.iter().copied()).fold(0.0_f64, f64::max).max(1.0);
    let span = seconds.max(1) as f64;
    let x = |t: f64| LEFT + t / span * (WIDTH - LEFT - 10.0);
    let y = |v: f64| (HEIGHT - BOTTOM) - v / max * (HEIGHT - BOTTOM - 10.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<h3>{}</h3><svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        escape(title),
        escape(title)
    );
    for w in windows {
        let (a, b) = (x(w.start_ns as f64 / 1e9), x(w.end_ns as f64 / 1e9));
        let _ = write!(
            svg,
            r#"<rect class="fault" x="{a:.1}" y="10" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            (b - a).max(1.0),
            HEIGHT - BOTTOM - 10.0,
            escape(&w.name)
        );
    }
    // Axes, with the maximum and the duration marked.
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="10" x2="{LEFT}" y2="{b}"/><text x="{t}" y="18" text-anchor="end">{max:.0} {unit}</text><text x="{t}" y="{b}" text-anchor="end">0</text><text x="{r}" y="{l}" text-anchor="end">{seconds} s</text>"#,
        b = HEIGHT - BOTTOM,
        r = WIDTH - 10.0,
        t = LEFT - 4.0,
        l = HEIGHT - 8.0,
        unit = escape(unit),
    );
    for (name, colour, values) in series {
        let points: Vec<String> = values.iter().enumerate().map(|(t, v)| format!("{:.1},{:.1}", x(t as f64 + 0.5), y(*v))).collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(name)
        );
    }
    svg.push_str("</svg><p class=\"legend\">");
    for (name, colour, _) in series {
        let _ = write!(svg, r#"<span style="color:{colour}">&#9632; {}</span> "#, escape(name));
    }
    svg.push_str("<span class=\"faultkey\">&#9632; fault in force</span></p>");
    svg
}

/// The page; see the module documentation.
pub fn render(input: &ReportInput<'_>) -> String {
    let secs = seconds(input.events);
    let n = secs.len();
    let throughput = chart(
        "Sends completed per second",
        "/s",
        n,
        &[
            ("ok", "#2a7", secs.iter().map(|s| s.ok as f64).collect()),
            ("fail", "#d80", secs.iter().map(|s| s.fail as f64).collect()),
            ("unknown (info)", "#c33", secs.iter().map(|s| s.info as f64).collect()),
        ],
        input.windows,
    );
    let mut p50 = Vec::with_capacity(n);
    let mut p99 = Vec::with_capacity(n);
    for s in &secs {
        let mut l = s.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        p50.push(quantile(&l, 0.5));
        p99.push(quantile(&l, 0.99));
    }
    let latency = chart("Latency of acknowledged sends", "ms", n, &[("p50", "#36c", p50), ("p99", "#93c", p99)], input.windows);

    let c = input.check;
    let verdict = match c.verdict() {
        crate::checker::Verdict::Passed => r#"<p class="ok">Valid: no anomalies.</p>"#.to_string(),
        crate::checker::Verdict::Anomalies => r#"<p class="bad">INVALID: anomalies found.</p>"#.to_string(),
        crate::checker::Verdict::Invalid => {
            let reasons: Vec<String> = c.invalid.iter().map(|r| format!("<li>{}</li>", escape(r))).collect();
            format!(r#"<p class="bad">INVALID: the history could not be checked in full.</p><ul>{}</ul>"#, reasons.concat())
        }
    };
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>raftmq jepsen run</title><style>
body{{font-family:sans-serif;margin:2em;max-width:980px;color:#222}} table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}} .ok{{color:#2a7;font-weight:bold}}
.bad{{color:#c33;font-weight:bold}} .fault{{fill:#f5c6c6;opacity:0.6}} .faultkey{{color:#f5c6c6}} .axis{{stroke:#888}}
svg text{{font-size:11px;fill:#555}} code{{background:#f4f4f4;padding:2px 4px}}
</style></head><body><h1>raftmq jepsen run</h1>{verdict}"#
    );
    if let Some(cmd) = input.command {
        let _ = write!(page, "<p>Replay: <code>{}</code></p>", escape(cmd));
    }
    page.push_str("<h2>Operations</h2><table><tr><th>operation</th><th>invoked</th><th>ok</th><th>fail</th><th>unknown</th></tr>");
    for (name, o) in [("send", c.sends), ("poll", c.polls), ("commit", c.commits), ("read offset", c.offset_reads)] {
        let _ = write!(page, "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", o.invoked, o.ok, o.fail, o.info);
    }
    page.push_str("</table>");
    page.push_str(&throughput);
    page.push_str(&latency);
    page.push_str(
        "<h2>Nemesis schedule</h2><table><tr><th>fault</th><th>from (s)</th><th>to (s)</th><th>availability</th><th>recovery</th></tr>",
    );
    for w in input.faults {
        let recovery = w.recovery_ns.map_or("none".to_string(), |ns| format!("{:.3} s", ns as f64 / 1e9));
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.3} of {}</td><td>{recovery}</td></tr>",
            escape(&w.name),
            w.start_ns as f64 / 1e9,
            w.end_ns as f64 / 1e9,
            w.availability,
            w.completed
        );
    }
    page.push_str("</table><h2>Anomalies</h2><table><tr><th>class</th><th>count</th></tr>");
    for (class, count) in c.counts() {
        let style = if count > 0 { r#" class="bad""# } else { "" };
        let _ = write!(page, "<tr><td>{class:?}</td><td{style}>{count}</td></tr>");
    }
    page.push_str("</table>");
    if !c.anomalies.is_empty() {
        page.push_str("<table><tr><th>class</th><th>what</th><th>events</th></tr>");
        // The page stays readable however many there are; results.json has them all.
        for a in c.anomalies.iter().take(500) {
            let events: Vec<String> = a.events.iter().map(u64::to_string).collect();
            let _ = write!(page, "<tr><td>{:?}</td><td>{}</td><td>{}</td></tr>", a.class, escape(&a.detail), events.join(", "));
        }
        if c.anomalies.len() > 500 {
            let _ = write!(page, "<tr><td colspan=3>… and {} more in results.json</td></tr>", c.anomalies.len() - 500);
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::check;
    use crate::history::FinalRead;

    fn send(index: u64, process: u64, time_s: f64, kind: EventKind, value: &str, offset: Option<u64>) -> Event {
        let op = Op::Send { queue: 0, value: value.into(), message_group: None, offset };
        Event { index, process, time_ns: (time_s * 1e9) as u64, kind, op, error: None }
    }

    #[test]
    fn the_page_has_both_charts_the_fault_windows_and_the_anomalies() {
        let events = vec![
            send(0, 1, 0.1, EventKind::Invoke, "a", None),
            send(1, 1, 0.2, EventKind::Ok, "a", Some(0)),
            send(2, 2, 1.1, EventKind::Invoke, "<b>", None),
            send(3, 2, 1.3, EventKind::Ok, "<b>", Some(1)),
            send(4, 3, 2.1, EventKind::Invoke, "c", None),
            send(5, 3, 2.2, EventKind::Info, "c", None),
        ];
        let finals = vec![FinalRead { broker: 1, queue: 0, start_offset: 0, end_offset: 2, messages: vec![(0, "a".into())] }];
        let replicas = vec![crate::history::QueueReplicas { queue: 0, replicas: vec![1], read_errors: Default::default() }];
        let result = check(&events, &finals, &replicas);
        let windows = vec![FaultWindow { name: "kill -9 broker <2>".into(), kind: None, start_ns: 1_000_000_000, end_ns: 2_000_000_000 }];
        let faults = crate::availability::by_window(&events, &windows);
        let page = render(&ReportInput {
            events: &events,
            windows: &windows,
            faults: &faults,
            check: &result,
            command: Some("raftmq jepsen run --seed 3"),
        });
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 2);
        assert_eq!(page.matches("<rect class=\"fault\"").count(), 2, "the window is shaded on both charts");
        assert!(page.contains("kill -9 broker &lt;2&gt;"), "names are escaped");
        assert!(page.contains("INVALID") && page.contains("LostWrite"), "the lost write of \"<b>\" is listed");
        assert!(page.contains("&quot;&lt;b&gt;&quot; acknowledged at queue 0 offset 1"));
        assert!(page.contains("raftmq jepsen run --seed 3"));
        assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "self-contained");
    }
}
