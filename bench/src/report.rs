//! Markdown tables and target checks from the JSON lines of `strom-load run`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde_json::Value;

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

fn check(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// One fan-out measurement: (N, fraction of players at full rate, failed, CPU-s per GB, RSS KiB per player).
type FanRow = (u64, f64, u64, Option<f64>, Option<f64>);

pub fn report(files: &[PathBuf]) -> Result<String, String> {
    let mut runs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            runs.push(serde_json::from_str::<Value>(line).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    let mut out = String::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();

    // Fan-out.
    let _ = writeln!(out, "### Fan-out (one stream, N players of one protocol)\n");
    let _ = writeln!(
        out,
        "| server | protocol | N | delivered per player, Mb/s (mean / min) | players ≥ 95% of stream | \
         server CPU-s per delivered GB | probe delay p50 / p99, ms | server CPU | RSS per player, KiB | \
         join p99 (200/s ramp), ms | failed | tool CPU |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // (server, proto) -> [(N, full fraction, failed, cpu/GB, rss/player)]
    let mut fan: BTreeMap<(String, String), Vec<FanRow>> = BTreeMap::new();
    let mut stream_kbps = None;
    for r in runs.iter().filter(|r| s(r, "scenario") == "fanout") {
        stream_kbps = stream_kbps.or(f(r, "stream_kbps"));
        let Some(protos) = r.get("protocols").and_then(Value::as_object) else { continue };
        for (proto, p) in protos {
            let n = p.get("players").and_then(Value::as_u64).unwrap_or(0);
            let failed = p.get("failed").and_then(Value::as_u64).unwrap_or(0);
            let full = f(p, "full_rate_fraction").unwrap_or(0.0);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} | {:.0}% | {} | {} / {} | {:.0}% | {} | {} | {} | {:.0}% |",
                s(r, "server"),
                proto,
                n,
                fmt(f(p, "kbps_mean").map(|k| k / 1000.0), 2),
                fmt(f(p, "kbps_min").map(|k| k / 1000.0), 2),
                full * 100.0,
                fmt(f(r, "server_cpu_s_per_gb"), 2),
                fmt(f(p, "delay_ms_p50"), 1),
                fmt(f(p, "delay_ms_p99"), 1),
                f(r, "server_cpu_util").unwrap_or(0.0) * 100.0,
                fmt(f(r, "rss_per_player_kib"), 1),
                fmt(f(p, "join_ms_p99"), 1),
                failed,
                f(r, "tool_cpu_util").unwrap_or(0.0) * 100.0,
            );
            fan.entry((s(r, "server"), proto.clone())).or_default().push((
                n,
                full,
                failed,
                f(r, "server_cpu_s_per_gb"),
                f(r, "rss_per_player_kib"),
            ));
        }
    }
    if let Some(k) = stream_kbps {
        let _ = writeln!(out, "\nStream payload (audio + video): {:.2} Mb/s. CPU % is of one core.", k / 1000.0);
    }
    let _ = writeln!(
        out,
        "\n| server | protocol | largest N with every player ≥ 95% | smallest N where a player falls below 95% |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|");
    let mut sustained: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((server, proto), rows) in &mut fan {
        rows.sort_by_key(|r| r.0);
        let ok = |r: &FanRow| r.1 >= 1.0 && r.2 == 0;
        let best = rows.iter().take_while(|r| ok(r)).map(|r| r.0).last().unwrap_or(0);
        let fall = rows.iter().find(|r| !ok(r)).map(|r| r.0.to_string()).unwrap_or_else(|| "not reached".into());
        sustained.insert((server.clone(), proto.clone()), best);
        let _ = writeln!(out, "| {server} | {proto} | {best} | {fall} |");
    }

    // Latency.
    let _ = writeln!(out, "\n### Join latency and live delay\n");
    let _ = writeln!(
        out,
        "| server | protocol | players | join p50, ms | join p99, ms | live delay p50, ms | live delay p99, ms | delay samples |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let mut joins: BTreeMap<(String, String), Option<f64>> = BTreeMap::new();
    for r in runs.iter().filter(|r| s(r, "scenario") == "latency") {
        let Some(protos) = r.get("protocols").and_then(Value::as_object) else { continue };
        for (proto, p) in protos {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s(r, "server"),
                proto,
                p.get("players").and_then(Value::as_u64).unwrap_or(0),
                fmt(f(p, "join_ms_p50"), 1),
                fmt(f(p, "join_ms_p99"), 1),
                fmt(f(p, "delay_ms_p50"), 1),
                fmt(f(p, "delay_ms_p99"), 1),
                p.get("delay_samples").and_then(Value::as_u64).unwrap_or(0),
            );
            joins.insert((s(r, "server"), proto.clone()), f(p, "join_ms_p99"));
        }
    }
    let _ = writeln!(
        out,
        "\nJoin: request (TCP connect) → first IDR frame (HLS: playlist request → first segment downloaded; LL-HLS: \
         playlist request → first part downloaded). Live delay: arrival of a frame − the instant the tool published \
         it (HLS: a new segment first listed in the playlist − publish instant of its first frame; LL-HLS: a new \
         part downloaded − publish instant of its first video frame)."
    );

    // LL-HLS: parked blocking reloads.
    let parks: Vec<&Value> = runs.iter().filter(|r| s(r, "scenario") == "park").collect();
    if !parks.is_empty() {
        let _ = writeln!(out, "\n### LL-HLS: parked blocking reloads\n");
        let _ = writeln!(
            out,
            "| server | parked K | seen parked (gauge) | RSS base / K connected / K parked, MiB | KiB per parked request \
             (incl. its connection) | KiB per request over an idle connection | answers 200 / other | answer after \
             the first answer p50 / p99 / max, ms (kernel rx timestamps) | same, tool-side instants | all parked → \
             first answer, ms | server CPU holding K (of a core) | server CPU-s answering K |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &parks {
            let st = r.get("statuses").and_then(Value::as_object);
            let ok = st.and_then(|m| m.get("200")).and_then(Value::as_u64).unwrap_or(0);
            let all: u64 = st.map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
            let other = all - ok
                + r.get("errors").and_then(Value::as_u64).unwrap_or(0)
                + r.get("unanswered").and_then(Value::as_u64).unwrap_or(0);
            let mib = |k: &str| fmt(f(r, k).map(|x| x / 1024.0), 1);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} / {} | {} | {} | {} / {} | {} / {} / {} | {} / {} / {} | {} | {:.0}% | {} |",
                s(r, "server"),
                r.get("parked").and_then(Value::as_u64).unwrap_or(0),
                fmt(f(r, "parked_gauge_max"), 0),
                mib("rss_base_kib"),
                mib("rss_connected_kib"),
                mib("rss_parked_kib"),
                fmt(f(r, "rss_per_parked_kib"), 2),
                fmt(f(r, "rss_per_request_over_idle_connection_kib"), 2),
                ok,
                other,
                fmt(f(r, "answer_after_first_ms_p50"), 2),
                fmt(f(r, "answer_after_first_ms_p99"), 2),
                fmt(f(r, "answer_after_first_ms_max"), 2),
                fmt(f(r, "tool_answer_after_first_ms_p50"), 2),
                fmt(f(r, "tool_answer_after_first_ms_p99"), 2),
                fmt(f(r, "tool_answer_after_first_ms_max"), 2),
                fmt(f(r, "all_parked_to_first_answer_ms"), 0),
                f(r, "server_cpu_util_holding").unwrap_or(0.0) * 100.0,
                fmt(f(r, "server_cpu_s_answering"), 2),
            );
        }
        let _ = writeln!(
            out,
            "\nReference instant: the first answer's first byte (strom-load cannot see when the part completes inside \
             strom; the first answer was parked like every other). Kernel rx timestamps (`SO_TIMESTAMPNS` on the \
             tool's sockets) are when strom's write reached the socket on loopback, whatever the tool's scheduling; \
             tool-side instants add strom-load's own reading of K sockets on 2 threads. CPU holding: while the gauge \
             showed all K parked (parts kept being made meanwhile); answering: from then until every answer was in."
        );
    }

    // Targets.
    let _ = writeln!(out, "\n### Targets (strom vs nginx-rtmp, same run)\n");
    let _ = writeln!(out, "| target | measured | |");
    let _ = writeln!(out, "|---|---|---|");
    let key = |a: &str, b: &str| (a.to_string(), b.to_string());
    if let (Some(st), Some(ng)) = (fan.get(&key("strom", "rtmp")), fan.get(&key("nginx-rtmp", "rtmp"))) {
        for (n, full, _, c, _) in st {
            if let (Some(c), Some((_, nfull, _, Some(nc), _))) = (c, ng.iter().find(|r| r.0 == *n)) {
                // CPU per delivered GB compares like with like only while both deliver every player in full.
                if *full < 1.0 || *nfull < 1.0 {
                    let _ = writeln!(
                        out,
                        "| RTMP CPU per delivered GB ≤ 0.5× nginx-rtmp (N = {n}) | not comparable: strom {:.0}%, \
                         nginx-rtmp {:.0}% of players at full rate | — |",
                        full * 100.0,
                        nfull * 100.0
                    );
                    continue;
                }
                let ratio = c / nc;
                let _ = writeln!(
                    out,
                    "| RTMP CPU per delivered GB ≤ 0.5× nginx-rtmp (N = {n}) | {c:.2} vs {nc:.2} s/GB = {ratio:.2}× | {} |",
                    check(ratio <= 0.5)
                );
            }
        }
    }
    if let (Some(st), Some(ng)) = (sustained.get(&key("strom", "rtmp")), sustained.get(&key("nginx-rtmp", "rtmp"))) {
        let tested = fan.get(&key("strom", "rtmp")).map(|v| v.iter().map(|r| r.0).max().unwrap_or(0)).unwrap_or(0);
        let verdict = if *st >= 2 * ng {
            check(true)
        } else if tested < 2 * ng && *st == tested {
            "not tested that high"
        } else {
            check(false)
        };
        let _ = writeln!(
            out,
            "| every RTMP player at full rate at 2× nginx-rtmp's count | strom {st} vs nginx-rtmp {ng} | {verdict} |"
        );
    }
    for (proto, limit) in [("rtmp", 20.0), ("flv", 5.0)] {
        if let Some(Some(p99)) = joins.get(&key("strom", proto)) {
            let _ = writeln!(out, "| {proto} join p99 ≤ {limit} ms | {p99:.1} ms | {} |", check(*p99 <= limit));
        }
    }
    if let (Some(ll), Some(flv)) = (fan.get(&key("strom", "llhls")), fan.get(&key("strom", "flv"))) {
        for (n, full, _, c, _) in ll {
            if let (Some(c), Some((_, ffull, _, Some(fc), _))) = (c, flv.iter().find(|r| r.0 == *n)) {
                let _ = writeln!(
                    out,
                    "| LL-HLS vs HTTP-FLV CPU per delivered GB (N = {n}) | {c:.2} vs {fc:.2} s/GB = {:.2}× ({:.0}% / \
                     {:.0}% of players at full rate) | — |",
                    c / fc,
                    full * 100.0,
                    ffull * 100.0
                );
            }
        }
    }
    for r in &parks {
        let k = r.get("parked").and_then(Value::as_u64).unwrap_or(0);
        if let Some(kib) = f(r, "rss_per_parked_kib") {
            let _ =
                writeln!(out, "| RSS per parked request ≤ 10 KiB (K = {k}) | {kib:.2} KiB | {} |", check(kib <= 10.0));
        }
        if let Some(p99) = f(r, "answer_after_first_ms_p99") {
            let _ = writeln!(
                out,
                "| parked requests answered, p99 ≤ 5 ms after the first answer (K = {k}) | {p99:.2} ms | {} |",
                check(p99 <= 5.0)
            );
        }
    }
    for proto in ["rtmp", "flv"] {
        if let Some(rows) = fan.get(&key("strom", proto)) {
            if let Some((n, _, _, _, Some(rss))) = rows.iter().max_by_key(|r| r.0) {
                let _ = writeln!(
                    out,
                    "| {proto} RSS per player ≤ 16 KiB (N = {n}) | {rss:.1} KiB | {} |",
                    check(*rss <= 16.0)
                );
            }
        }
    }
    Ok(out)
}
