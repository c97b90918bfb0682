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

/// Frames per send of a write hold at 30 fps: the frames a batch spanning `hold_ms` holds (0 → 1, 66 → 3).
fn frames_per_send(hold_ms: f64) -> u64 {
    (hold_ms * 30.0 / 1000.0).round() as u64 + 1
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// What one round measured of one write hold: strom's CPU per GB and delay p99, and the ratios to its peers.
#[derive(Default)]
struct RoundRatios {
    strom: Vec<f64>,
    delay_p99: Vec<f64>,
    floor_c: Vec<f64>,
    floor_tool: Vec<f64>,
    nginx: Vec<f64>,
}

/// The fan-out rounds of `bench/run --rounds K` (one directory per round, each with the round's `results.jsonl`
/// and `floor.jsonl`): per round and write hold, strom's RTMP CPU per delivered GB against the floor of its batch
/// size (both readers) and against nginx-rtmp, all measured within that round; then the median of each ratio
/// (and of the probe delay p99) over the rounds, checked against issue 11's targets. Rounds interleave the
/// servers, so a machine whose speed drifts during the run moves both sides of a ratio alike.
pub fn rounds(dirs: &[PathBuf]) -> Result<String, String> {
    let read = |path: PathBuf| -> Result<Vec<Value>, String> {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).map_err(|e| format!("{}: {e}", path.display())))
            .collect()
    };
    let mut out = String::new();
    let _ = writeln!(out, "### Fan-out rounds: strom against the floor and nginx-rtmp, round by round\n");
    let _ = writeln!(
        out,
        "| round | N | write hold, ms | strom CPU-s per GB | probe delay p99, ms | floor (frames per send), C reader / \
         strom-load reader | × floor, C reader / strom-load reader | nginx-rtmp CPU-s per GB | × nginx-rtmp |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut by_hold: BTreeMap<(u64, u64), RoundRatios> = BTreeMap::new();
    for (i, dir) in dirs.iter().enumerate() {
        let runs = read(dir.join("results.jsonl"))?;
        let floors = read(dir.join("floor.jsonl"))?;
        let rtmp = |r: &Value| r.get("protocols").and_then(|p| p.get("rtmp")).cloned();
        let server = |r: &Value| r.get("server").and_then(Value::as_str).unwrap_or("").to_string();
        let nginx: Vec<(u64, f64)> = runs
            .iter()
            .filter(|r| server(r) == "nginx-rtmp")
            .filter_map(|r| Some((rtmp(r)?.get("players")?.as_u64()?, f(r, "server_cpu_s_per_gb")?)))
            .collect();
        for r in runs.iter().filter(|r| server(r).starts_with("strom")) {
            let Some(p) = rtmp(r) else { continue };
            let (Some(n), Some(cpu)) = (p.get("players").and_then(Value::as_u64), f(r, "server_cpu_s_per_gb")) else {
                continue;
            };
            // "strom (hold 66 ms)"; a run without a hold is strom's default.
            let hold = server(r)
                .split("hold ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(66.0);
            let per = frames_per_send(hold);
            let floor = |reader: &str| {
                floors
                    .iter()
                    .find(|x| {
                        x.get("n").and_then(Value::as_u64) == Some(n)
                            && x.get("frames_per_send").and_then(Value::as_u64) == Some(per)
                            && x.get("reader").and_then(Value::as_str) == Some(reader)
                    })
                    .and_then(|x| f(x, "cpu_s_per_gb"))
            };
            let (fc, ft) = (floor("c-epoll"), floor("strom-load"));
            let ng = nginx.iter().find(|x| x.0 == n).map(|x| x.1);
            let row = by_hold.entry((n, hold as u64)).or_default();
            row.strom.push(cpu);
            row.delay_p99.extend(f(&p, "delay_ms_p99"));
            row.floor_c.extend(fc.map(|x| cpu / x));
            row.floor_tool.extend(ft.map(|x| cpu / x));
            row.nginx.extend(ng.map(|x| cpu / x));
            let _ = writeln!(
                out,
                "| {} | {n} | {hold:.0} | {cpu:.3} | {} | {} ({per}) / {} | {} / {} | {} | {} |",
                i + 1,
                fmt(f(&p, "delay_ms_p99"), 1),
                fmt(fc, 3),
                fmt(ft, 3),
                fmt(fc.map(|x| cpu / x), 2),
                fmt(ft.map(|x| cpu / x), 2),
                fmt(ng, 3),
                fmt(ng.map(|x| cpu / x), 2),
            );
        }
    }
    let _ = writeln!(out, "\n### Medians over the rounds, and issue 11's targets\n");
    let _ = writeln!(
        out,
        "| N | write hold, ms | rounds | strom CPU-s per GB | × floor, C reader / strom-load reader | × nginx-rtmp | \
         probe delay p99, median / worst round, ms | targets |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---|");
    for ((n, hold), r) in by_hold {
        let worst = r.delay_p99.iter().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let delay = median(r.delay_p99);
        let (fc, ft, ng) = (median(r.floor_c), median(r.floor_tool), median(r.nginx));
        // Issue 11: hold 0 ≤ 1.15× the one-frame floor, ≤ 1.0× nginx-rtmp, delay p99 ≤ 25 ms; the default hold
        // ≤ 1.2× the floor of its batch size, ≤ 0.45× nginx-rtmp, delay p99 ≤ 100 ms.
        let limits = match hold {
            0 => Some((1.15, 1.0, 25.0)),
            66 => Some((1.2, 0.45, 100.0)),
            _ => None,
        };
        let verdict = limits.map_or_else(
            || "–".to_string(),
            |(lf, ln, ld)| {
                let floor_ok = [fc, ft].iter().flatten().all(|x| *x <= lf);
                format!(
                    "floor ≤ {lf}×: {}; nginx-rtmp ≤ {ln}×: {}; delay ≤ {ld} ms: {}",
                    check(floor_ok && (fc.is_some() || ft.is_some())),
                    ng.map_or("–", |x| check(x <= ln)),
                    delay.map_or("–", |x| check(x <= ld)),
                )
            },
        );
        let _ = writeln!(
            out,
            "| {n} | {hold} | {} | {} | {} / {} | {} | {} / {} | {verdict} |",
            r.strom.len(),
            fmt(median(r.strom), 3),
            fmt(fc, 2),
            fmt(ft, 2),
            fmt(ng, 2),
            fmt(delay, 1),
            fmt(worst, 1),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_maps_to_the_frames_of_its_batch() {
        assert_eq!(frames_per_send(0.0), 1);
        assert_eq!(frames_per_send(66.0), 3);
        assert_eq!(frames_per_send(33.0), 2);
    }

    #[test]
    fn rounds_pair_each_strom_run_with_the_floor_and_nginx_of_its_round() {
        let dir = std::env::temp_dir().join(format!("strom-rounds-{}", std::process::id()));
        let mut dirs = Vec::new();
        for (round, (strom0, floor1)) in [(0.9, 0.8), (1.2, 1.0), (1.0, 0.9)].into_iter().enumerate() {
            let d = dir.join(format!("round-{}", round + 1));
            std::fs::create_dir_all(&d).unwrap();
            let run = |server: &str, cpu: f64, p99: f64| {
                format!(
                    "{{\"scenario\":\"fanout\",\"server\":\"{server}\",\"server_cpu_s_per_gb\":{cpu},\
                     \"protocols\":{{\"rtmp\":{{\"players\":1000,\"delay_ms_p99\":{p99}}}}}}}"
                )
            };
            let results = [run("strom (hold 0 ms)", strom0, 20.0), run("nginx-rtmp", 1.8, 30.0)].join("\n");
            std::fs::write(d.join("results.jsonl"), results).unwrap();
            let floor = format!(
                "{{\"n\": 1000, \"frames_per_send\": 1, \"reader\": \"c-epoll\", \"cpu_s_per_gb\": {floor1}}}\n\
                 {{\"n\": 1000, \"frames_per_send\": 1, \"reader\": \"strom-load\", \"cpu_s_per_gb\": {floor1}}}"
            );
            std::fs::write(d.join("floor.jsonl"), floor).unwrap();
            dirs.push(d);
        }
        let text = rounds(&dirs).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        // Round ratios 1.125, 1.2, 1.11: median 1.125 (the median of the ratios, not the ratio of the medians).
        assert!(
            text.contains("| 1000 | 0 | 3 | 1.000 | 1.12 / 1.12 | 0.56 | 20.0 / 20.0 | floor ≤ 1.15×: met"),
            "{text}"
        );
        assert!(
            text.contains("| 2 | 1000 | 0 | 1.200 | 20.0 | 1.000 (1) / 1.000 | 1.20 / 1.20 | 1.800 | 0.67 |"),
            "{text}"
        );
    }
}
