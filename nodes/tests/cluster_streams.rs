//! The cluster as a StatefulSet would run it: three or four real `strom` processes, each in its own network
//! namespace with its own address and the names `strom-0…` (see `common/netns.rs`). ffmpeg publishes, ffprobe and
//! ffmpeg play; nodes are killed, hung, cut off and healed; what the players see is asserted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Net, NetNode};
use common::*;

const COOKIE: &str = "test-cookie";

/// Starts `n` clustered nodes and waits until each sees the others.
fn cluster(n: usize) -> (Net, Vec<NetNode>) {
    let net = Net::new(n);
    let nodes: Vec<NetNode> = (0..n).map(|i| net.spawn_cluster(i, COOKIE, &[])).collect();
    for node in &nodes {
        node.wait_peers(n - 1, Duration::from_secs(15));
    }
    (net, nodes)
}

fn json(node: &NetNode, path: &str) -> serde_json::Value {
    serde_json::from_slice(&node.get(path).body).unwrap_or_default()
}

fn metric(node: &NetNode, series: &str) -> f64 {
    node.get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A histogram's count, sum and upper bound of its `q` quantile (the first bucket holding that share) on `node`.
fn histogram(node: &NetNode, name: &str, q: f64) -> (f64, f64, f64) {
    let text = node.get("/metrics").text();
    let value = |l: &str, prefix: &str| l.strip_prefix(prefix).and_then(|v| v.trim().parse::<f64>().ok());
    let count = text.lines().find_map(|l| value(l, &format!("{name}_count "))).unwrap_or(0.0);
    let sum = text.lines().find_map(|l| value(l, &format!("{name}_sum "))).unwrap_or(0.0);
    let bound = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, v) = rest.split_once("\"}")?;
            Some((le.parse::<f64>().ok()?, v.trim().parse::<f64>().ok()?))
        })
        .find(|&(_, cumulative)| count > 0.0 && cumulative >= q * count)
        .map_or(f64::INFINITY, |(le, _)| le);
    (count, sum, bound)
}

fn stream(node: &NetNode, key: &str) -> Option<serde_json::Value> {
    json(node, "/api/v1/streams")["streams"].as_array()?.iter().find(|s| s["key"] == key).cloned()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// (media sequence of the last listed segment, playlist text), once the playlist lists `min` segments.
fn playlist(node: &NetNode, key: &str) -> (u16, String) {
    let r = node.get(&format!("/{key}/index.m3u8"));
    (r.status, r.text())
}

fn last_msn(text: &str) -> Option<u64> {
    let first: u64 = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?.trim().parse().ok()?;
    let n = text.lines().filter(|l| (l.ends_with(".ts") || l.ends_with(".m4s")) && !l.starts_with('#')).count() as u64;
    n.checked_sub(1).map(|k| first + k)
}

fn wait_segments(node: &NetNode, key: &str, n: usize, timeout: Duration) -> String {
    let mut text = String::new();
    wait_until(&format!("{n} segments on {}", node.name()), timeout, || {
        text = playlist(node, key).1;
        text.lines().filter(|l| (l.ends_with(".ts") || l.ends_with(".m4s")) && !l.starts_with('#')).count() >= n
    });
    text
}

fn source(seconds: f64) -> Source {
    Source { seconds, ..Source::default() }
}

/// `n` clustered nodes and a 60 s stream `key` published on strom-0, its HLS started there.
fn cluster_with_stream(n: usize, key: &str) -> (Net, Vec<NetNode>, Proc) {
    let (net, nodes) = cluster(n);
    let publisher = publish(&nodes[0].rtmp_url(key), &source(60.0));
    wait_segments(&nodes[0], key, 2, Duration::from_secs(30));
    (net, nodes, publisher)
}

#[test]
fn a_stream_published_on_one_node_plays_from_every_node() {
    let key = "live/any";
    let (_net, nodes, _p) = cluster_with_stream(3, key);
    let urls = [
        ("rtmp on strom-1", nodes[1].rtmp_url(key)),
        ("flv on strom-2", nodes[2].http_url(&format!("/{key}.flv"))),
        ("hls on strom-1", nodes[1].http_url(&format!("/{key}/index.m3u8"))),
        ("hls on strom-2", nodes[2].http_url(&format!("/{key}/index.m3u8"))),
    ];
    let probes: Vec<_> =
        urls.into_iter().map(|(what, url)| std::thread::spawn(move || (what, probe_video(&url, 3.0)))).collect();
    for p in probes {
        let (what, (frames, stderr)) = p.join().expect("probe thread");
        assert_playable(what, &frames, 60, 426, 240, &stderr);
    }
    // Any node lists every stream of the cluster once, from its owner.
    let all = json(&nodes[2], "/api/v1/streams?scope=cluster");
    let listed: Vec<(&str, &str)> = all["streams"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| Some((s["key"].as_str()?, s["node"].as_str()?))).collect())
        .unwrap_or_default();
    assert_eq!(listed, vec![(key, "strom-0")], "{all}");
    assert_eq!(nodes[2].get("/api/v1/streams?scope=galaxy").status, 400);
    // The same playlist on every node (a non-sticky load balancer may send each poll elsewhere).
    let mut same = false;
    for _ in 0..20 {
        let texts: Vec<String> = nodes.iter().map(|n| playlist(n, key).1).collect();
        if texts.iter().all(|t| t == &texts[0] && t.contains("#EXTINF")) {
            same = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(same, "playlists differ between nodes");
    // The relaying nodes say where the stream comes from; the owner relays once to each.
    let relayed = stream(&nodes[1], key).expect("relay listed on strom-1");
    assert_eq!(relayed["relay_from"], "strom-0", "{relayed}");
    assert!(stream(&nodes[0], key).expect("owner lists it")["relay_from"].is_null());
    assert!(metric(&nodes[0], "strom_cluster_relays{direction=\"out\"}") >= 1.0);
    // Membership, heartbeat RTT and load are visible in the API and the metrics.
    let status = json(&nodes[1], "/api/v1/cluster");
    let owner = status["peers"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "strom-0")).cloned();
    let owner = owner.expect("strom-0 among strom-1's peers");
    assert!(owner["rtt_ms"].as_f64().is_some_and(|r| r > 0.0 && r < 1000.0), "{owner}");
    assert_eq!(owner["load"]["streams"], 1, "the owner reports its publisher in its load: {owner}");
    assert_eq!(metric(&nodes[1], "strom_cluster_nodes"), 3.0);
    assert!(nodes[1].get("/metrics").text().contains("strom_cluster_heartbeat_rtt_microseconds{peer=\"strom-0\"}"));
}

#[test]
fn fifty_viewers_on_a_node_cost_one_cross_node_subscription() {
    let key = "live/fifty";
    let (_net, nodes) = cluster(3);
    let _p = publish(&nodes[0].rtmp_url(key), &source(60.0));
    wait_segments(&nodes[0], key, 1, Duration::from_secs(30));
    let addr = nodes[1].http;
    let secs = 6.0;
    let readers: Vec<_> = (0..50)
        .map(|_| {
            let path = format!("/{key}.flv");
            std::thread::spawn(move || -> usize {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { return 0 };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
                let (mut total, t, mut buf) = (0, Instant::now(), vec![0u8; 64 << 10]);
                while t.elapsed().as_secs_f64() < secs {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let viewers = metric(&nodes[1], "strom_viewers{protocol=\"flv\"}");
    let relays_out = metric(&nodes[0], "strom_cluster_relays{direction=\"out\"}");
    let relays_in = metric(&nodes[1], "strom_cluster_relays{direction=\"in\"}");
    let relay_before = metric(&nodes[1], "strom_cluster_relay_bytes_total{direction=\"in\"}");
    let got: Vec<usize> = readers.into_iter().map(|r| r.join().expect("reader")).collect();
    let relay_bytes = metric(&nodes[1], "strom_cluster_relay_bytes_total{direction=\"in\"}");
    assert_eq!(viewers, 50.0, "50 FLV viewers on strom-1");
    assert_eq!((relays_out, relays_in), (1.0, 1.0), "one relay strom-0 → strom-1 for 50 viewers");
    let min = *got.iter().min().unwrap_or(&0);
    // ~600 kb/s + audio for ~6 s: every viewer got the stream.
    assert!(min > 200_000, "a viewer got only {min} bytes: {got:?}");
    // Cross-node bytes track the stream's bitrate, not the viewer count: the relay carried about what one viewer
    // got, not fifty times that.
    let per_viewer = got.iter().sum::<usize>() as f64 / 50.0;
    assert!(relay_bytes < 2.0 * per_viewer + 1_000_000.0, "relay {relay_bytes} bytes vs {per_viewer} per viewer");
    assert!(relay_bytes > relay_before, "the relay carried the stream");
    assert_eq!(metric(&nodes[0], "strom_egress_bytes_total{protocol=\"flv\"}"), 0.0, "owner served no viewer itself");
    // The receiving node measures how far behind the owner the relay is, per batch (same clock here: no skew).
    let (count, sum, p99) = histogram(&nodes[1], "strom_cluster_relay_lag_seconds", 0.99);
    eprintln!("relay lag on strom-1: {count} batches, average {:.1} ms, p99 <= {p99} s", 1000.0 * sum / count);
    assert!(count > 50.0, "relay lag observed per batch: {count}");
    assert!(sum / count < 0.5, "average relay lag {} s on loopback", sum / count);
    assert!(p99 <= 1.0, "p99 relay lag at most {p99} s on loopback");
    let (owner_count, ..) = histogram(&nodes[0], "strom_cluster_relay_lag_seconds", 0.99);
    assert_eq!(owner_count, 0.0, "the owner receives no relay");
}

#[test]
fn owner_killed_then_the_publisher_resumes_on_another_node_with_viewers_and_hls_continuing() {
    let key = "live/failover";
    let (_net, mut nodes) = cluster(3);
    let p0 = publish(&nodes[0].rtmp_url(key), &source(120.0));
    wait_segments(&nodes[2], key, 2, Duration::from_secs(30));
    // HTTP-FLV viewers on strom-2 and on strom-1 (where the publisher comes back), and an HLS viewer on strom-2,
    // all relayed / proxied from strom-0.
    let dir = scratch("failover");
    let flv_viewer = |node: &NetNode, name: &str| {
        let (log, progress) = (dir.join(format!("{name}.log")), dir.join(format!("{name}.progress")));
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i", &node.http_url(&format!("/{key}.flv"))])
            .args(["-progress", progress.to_str().expect("path"), "-f", "null", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("ffmpeg");
        (child, log, progress)
    };
    let (mut flv, flv_log, flv_progress) = flv_viewer(&nodes[2], "flv2");
    let (mut flv1, flv1_log, flv1_progress) = flv_viewer(&nodes[1], "flv1");
    let progress = dir.join("hls.progress");
    let mut hls = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", &nodes[2].http_url(&format!("/{key}/index.m3u8"))])
        .args(["-progress", progress.to_str().expect("path"), "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    std::thread::sleep(Duration::from_secs(4));
    assert!(matches!(flv.try_wait(), Ok(None)), "FLV viewer plays before the kill");
    let text_before = playlist(&nodes[2], key).1;
    let msn_before = last_msn(&text_before).expect("msn");
    let sequence = |t: &str| -> u64 {
        t.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("seq")
    };
    let last_uri_before =
        text_before.lines().rev().find(|l| l.ends_with(".m4s") || l.ends_with(".ts")).map(String::from);
    drop(p0);
    nodes[0].kill();
    let t = Instant::now();
    // The relayed viewers stay attached, waiting for the stream's next owner as through a publisher blip.
    std::thread::sleep(Duration::from_secs(2));
    assert!(matches!(flv.try_wait(), Ok(None)), "the relayed FLV viewer waits for the next owner");
    assert!(matches!(flv1.try_wait(), Ok(None)), "the relayed FLV viewer waits for the next owner");
    // While no node owns the stream, every node still serves its last playlist (players wait, not fail).
    let (status, _) = playlist(&nodes[1], key);
    assert_eq!(status, 200, "playlist between owner death and reconnect");
    // The killed pod comes back before the publisher does: it learns the stream from its peers and serves the
    // same last playlist, never a 404 (503 with Retry-After while it is still learning).
    nodes[0].restart();
    let restarted = Instant::now();
    let mut statuses = Vec::new();
    wait_until("the restarted strom-0 to serve the last playlist", Duration::from_secs(10), || {
        let status = nodes[0].get(&format!("/{key}/index.m3u8")).status;
        statuses.push(status);
        status == 200
    });
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "the restarted node answered {statuses:?}");
    eprintln!("restarted strom-0 served the last playlist {:?} after its start ({statuses:?})", restarted.elapsed());
    // An HTTP-FLV player reconnecting now (to the restarted node), while no node owns the stream, waits for it
    // instead of a 404.
    let flv_url = nodes[0].http_url(&format!("/{key}.flv"));
    let waiting_flv = std::thread::spawn(move || probe_video(&flv_url, 2.0));
    std::thread::sleep(Duration::from_secs(1));
    // OBS reconnects through the Service and lands on strom-1.
    let _p1 = publish(&nodes[1].rtmp_url(key), &source(120.0));
    let (frames, stderr) = waiting_flv.join().expect("flv thread");
    assert_playable("an FLV player that came while the stream had no owner", &frames, 30, 426, 240, &stderr);
    let mut after = String::new();
    wait_until("strom-1's segments after the reconnect, on strom-2", Duration::from_secs(30), || {
        after = playlist(&nodes[2], key).1;
        after.contains("#EXT-X-DISCONTINUITY") && last_msn(&after).is_some_and(|m| m > msn_before)
    });
    eprintln!("HLS resumed {:?} after the kill", t.elapsed());
    assert!(
        sequence(&after) >= sequence(&text_before),
        "media sequence never goes back: {} after {}\n{text_before}\n{after}",
        sequence(&after),
        sequence(&text_before)
    );
    // The new owner lists the old owner's segments before its own (one playlist going on, on every node).
    let last_uri_before = last_uri_before.expect("a segment before the kill");
    assert!(after.contains(&format!("\n{last_uri_before}\n")), "{last_uri_before} still listed:\n{after}");
    // No peer was declared down by the heartbeat (the dead owner's session closed): the takeover continues the
    // numbering right after the old owner's (players align the playlists), not in a fenced band.
    assert!(last_msn(&after).is_some_and(|m| m < msn_before + 20), "numbering continues: {after}");
    // The HLS and FLV viewers that watched through all of it are still playing, and their frames advance.
    let frames = |p: &std::path::Path| -> u64 {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("frame="))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    let (f1, v1, w1) = (frames(&progress), frames(&flv_progress), frames(&flv1_progress));
    std::thread::sleep(Duration::from_secs(6));
    let (f2, v2, w2) = (frames(&progress), frames(&flv_progress), frames(&flv1_progress));
    assert!(matches!(hls.try_wait(), Ok(None)), "HLS viewer still running after the failover");
    assert!(f2 > f1 + 60, "HLS viewer decodes new frames after the failover: {f1} then {f2}");
    let flv_err = std::fs::read_to_string(&flv_log).unwrap_or_default();
    assert!(matches!(flv.try_wait(), Ok(None)), "FLV viewer still running after the failover: {flv_err}");
    assert!(v2 > v1 + 60, "the relayed FLV viewer decodes the new owner's frames: {v1} then {v2}\n{flv_err}");
    // On the node the publisher came back to, the relayed stream became the owned one: its viewer stayed.
    let flv1_err = std::fs::read_to_string(&flv1_log).unwrap_or_default();
    assert!(matches!(flv1.try_wait(), Ok(None)), "FLV viewer on the new owner still running: {flv1_err}");
    assert!(w2 > w1 + 60, "the FLV viewer on the new owner decodes its frames: {w1} then {w2}\n{flv1_err}");
    assert!(stream(&nodes[1], key).is_some_and(|s| s["relay_from"].is_null()), "strom-1 owns the stream");
    assert_eq!(
        stream(&nodes[2], key).map(|s| s["relay_from"].clone()),
        Some("strom-1".into()),
        "strom-2 relays from it"
    );
    for p in [&mut hls, &mut flv, &mut flv1] {
        let _ = p.kill();
        let _ = p.wait();
    }
    // And a fresh player on any node plays the stream from its new owner.
    let (frames, stderr) = probe_video(&nodes[2].rtmp_url(key), 2.0);
    assert_playable("rtmp on strom-2 from the new owner", &frames, 30, 426, 240, &stderr);
}

/// The files a media playlist names: segment lines and the `URI="..."` of `EXT-X-MAP` and `EXT-X-PART` tags.
fn listed_files(text: &str) -> Vec<String> {
    let mut files = Vec::new();
    for l in text.lines() {
        if l.starts_with("#EXT-X-MAP:") || l.starts_with("#EXT-X-PART:") {
            if let Some(uri) = l.split("URI=\"").nth(1).and_then(|u| u.split('"').next()) {
                files.push(uri.to_string());
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            files.push(l.to_string());
        }
    }
    files
}

/// Once strom-1 lists segments of its own after strom-0's (it took the stream over), every file listed before
/// its (last) discontinuity, strom-0's, plays from each of `nodes`.
fn assert_earlier_files_play(nodes: &[NetNode], key: &str) {
    let owner = nodes.iter().find(|n| n.name() == "strom-1").expect("strom-1 among the nodes");
    let mut text = String::new();
    wait_until("strom-1's own segments after strom-0's", Duration::from_secs(30), || {
        text = playlist(owner, key).1;
        text.contains("#EXT-X-DISCONTINUITY")
            && text.split("#EXT-X-DISCONTINUITY").last().is_some_and(|t| t.contains("#EXTINF"))
    });
    // The files listed before the (last) discontinuity are strom-0's.
    let earlier = listed_files(text.rsplit_once("#EXT-X-DISCONTINUITY").map_or("", |(before, _)| before));
    assert!(earlier.iter().filter(|f| !f.contains("init")).count() >= 3, "strom-0's window is listed:\n{text}");
    let mut failures = Vec::new();
    for node in nodes {
        for file in &earlier {
            let r = node.get(&format!("/{key}/{file}"));
            if r.status != 200 || r.body.is_empty() {
                failures.push(format!("{} {file}: {} ({} bytes)", node.name(), r.status, r.body.len()));
            }
        }
    }
    assert!(failures.is_empty(), "strom-0's files from every node asked:\n{}\n{text}", failures.join("\n"));
}

/// Decodes strom-1's playlist of `key` from its first listed segment (strom-0's window, then strom-1's own after
/// the discontinuity) with ffprobe, as a player that ignores `EXT-X-DISCONTINUITY` (FFmpeg's HLS demuxer, hence
/// ffplay and VLC's FFmpeg path) does: the video's timestamps must go on across the hand-over, not start over
/// (such a player would stall, or wait as long as the jump forward).
fn assert_timestamps_go_on_across_the_hand_over(nodes: &[NetNode], key: &str) {
    let owner = nodes.iter().find(|n| n.name() == "strom-1").expect("strom-1 among the nodes");
    let text = playlist(owner, key).1;
    let (before, _) = text.rsplit_once("#EXT-X-DISCONTINUITY").expect("a discontinuity");
    let earlier: f64 = before
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|d| d.trim_end_matches(',').split(',').next()?.parse::<f64>().ok())
        .sum();
    let url = owner.http_url(&format!("/{key}/index.m3u8"));
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-live_start_index", "0", "-select_streams", "v:0"])
            .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
            .args(["-read_intervals", &format!("%+{}", earlier + 2.0)])
            .arg(&url),
        Duration::from_secs_f64(earlier + 30.0),
    );
    let pts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert!(
        pts.len() as f64 >= (earlier + 1.0) * 15.0,
        "{} frames for {earlier:.1} s listed before the hand-over\n{text}",
        pts.len()
    );
    if let Some(i) = pts.windows(2).position(|w| w[1] <= w[0]) {
        panic!("timestamps go back across the hand-over at frame {i}: {} then {}\n{text}", pts[i], pts[i + 1]);
    }
    let span = pts[pts.len() - 1] - pts[0];
    assert!(
        span >= earlier + 1.0 && span < earlier + 10.0,
        "{span:.2} s of timestamps for {} frames\n{text}",
        pts.len()
    );
}

#[test]
fn a_stopping_owner_s_segments_are_served_by_the_node_that_takes_its_stream_over() {
    // A rolling restart of the owner's pod: strom-0 is SIGTERMed, cuts its publisher (no drain here), repeats the
    // stream's last picture until strom-1 (where the publisher reconnects, as OBS through the Service) has taken
    // it over, then leaves. strom-1 lists strom-0's window first, so players keep one playlist; every file it
    // lists must then play from every remaining node, although strom-0 is gone and no player ever fetched those
    // files from strom-1 or strom-2 (a lagging player behind a non-sticky balancer asks any pod for them).
    let key = "live/handover";
    let net = Net::new(3);
    let env = [("STROM_DRAIN_SECS", "0")];
    let mut nodes: Vec<NetNode> = (0..3).map(|i| net.spawn_cluster_with(i, COOKIE, &[], &env)).collect();
    for node in &nodes {
        node.wait_peers(2, Duration::from_secs(15));
    }
    let mut p0 = publish(&nodes[0].rtmp_url(key), &source(120.0));
    wait_segments(&nodes[1], key, 3, Duration::from_secs(30));
    let url1 = nodes[1].rtmp_url(key);
    let reconnect = std::thread::spawn(move || {
        let _ = p0.wait(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(500));
        publish(&url1, &source(120.0))
    });
    let status = nodes[0].term(Duration::from_secs(30));
    let _p1 = reconnect.join().expect("the reconnecting publisher");
    assert!(status.is_some_and(|s| s.success()), "strom-0 exits cleanly: {status:?}\n{}", nodes[0].log_tail(30));
    assert!(
        nodes[0].log().contains("streams handed over to the nodes their publishers reconnected to"),
        "strom-0 handed its stream over before it left:\n{}",
        nodes[0].log_tail(30)
    );
    assert_earlier_files_play(&nodes[1..], key);
    assert_timestamps_go_on_across_the_hand_over(&nodes[1..], key);
}

#[test]
fn a_publisher_back_on_another_node_keeps_every_listed_file_playable() {
    // OBS stops (deleteStream) and streams again within the grace through the Service, landing on strom-1: strom-1
    // continues strom-0's playlist, listing strom-0's segments first; every file it lists plays from every node.
    // An HTTP-FLV player on strom-1 meanwhile (strom-1 relays the stream, and its relay becomes the owned stream)
    // sees one timeline throughout, and so does HLS across the hand-over.
    let key = "live/comeback";
    let (_net, nodes) = cluster(3);
    let mut p0 = publish(&nodes[0].rtmp_url(key), &source(10.0));
    wait_segments(&nodes[1], key, 3, Duration::from_secs(30));
    let flv_url = nodes[1].http_url(&format!("/{key}.flv"));
    let flv = std::thread::spawn(move || probe_until_end(&flv_url, Duration::from_secs(25)));
    p0.wait(Duration::from_secs(30)).expect("the first publisher ends");
    let _p1 = publish(&nodes[1].rtmp_url(key), &source(60.0));
    assert_earlier_files_play(&nodes, key);
    assert_timestamps_go_on_across_the_hand_over(&nodes, key);
    assert!(
        nodes[1].log().contains("the relayed stream is this node's now"),
        "strom-1's relay became the owned stream:\n{}",
        nodes[1].log_tail(30)
    );
    let (pts, stderr) = flv.join().expect("the FLV reader");
    assert!(pts.len() >= 200, "the FLV player on strom-1 decoded {} frames: {stderr}", pts.len());
    let back = pts.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(back, 0, "the FLV player's timestamps went back or stood still {back} times");
    // Nor do they jump ahead (a player would freeze that long): the stream's last picture, repeated while the
    // publisher was away, fills the time between the two publishers.
    let jump = pts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(jump < 1.5, "the FLV player's timestamps jumped {jump:.2} s ahead");
}

#[test]
fn a_hung_node_is_declared_down_within_three_seconds_and_rejoins() {
    let (_net, mut nodes) = cluster(3);
    nodes[2].stop();
    let t = Instant::now();
    let down = wait_until("strom-2 declared down", Duration::from_secs(10), || {
        !nodes[0].peers().contains(&"strom-2".to_string()) && !nodes[1].peers().contains(&"strom-2".to_string())
    });
    eprintln!("hung node declared down after {down:?}");
    assert!(down <= Duration::from_millis(3300), "declared down after {down:?}");
    assert!(metric(&nodes[0], "strom_cluster_peers_lost_total{reason=\"heartbeat_deadline\"}") >= 1.0);
    nodes[2].cont();
    nodes[0].wait_peers(2, Duration::from_secs(15));
    nodes[2].wait_peers(2, Duration::from_secs(15));
    eprintln!("rejoined {:?} after SIGCONT", t.elapsed() - down);
}

/// Watches the media playlist of one stream on every node, several times a second, and remembers which segment
/// URI each media sequence number had on which node: one number naming two segments anywhere is a fencing failure.
struct NumberingWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<NumberingSeen>>,
}

#[derive(Default)]
struct NumberingSeen {
    /// msn → (uri, node) as first seen.
    uris: std::collections::HashMap<u64, (String, String)>,
    /// Every number seen with a second URI.
    conflicts: Vec<String>,
    /// Playlists read per node.
    playlists: std::collections::HashMap<String, usize>,
    /// The highest number seen per node.
    highest: std::collections::HashMap<String, u64>,
}

impl NumberingWatch {
    fn start(nodes: &[NetNode], key: &str) -> NumberingWatch {
        let targets: Vec<(String, std::net::SocketAddr)> = nodes.iter().map(|n| (n.name(), n.http)).collect();
        let path = format!("/{key}/index.m3u8");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = NumberingSeen::default();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (name, addr) in &targets {
                    // A stopped or cut-off node must not hold the watch up.
                    let Ok(text) = get_quick(*addr, &path, Duration::from_millis(700)) else { continue };
                    let (segments, _) = strom_engine::formats::playlist::segments_in(&text);
                    if segments.is_empty() {
                        continue;
                    }
                    *seen.playlists.entry(name.clone()).or_default() += 1;
                    for seg in segments {
                        let top = seen.highest.entry(name.clone()).or_default();
                        *top = (*top).max(seg.msn);
                        match seen.uris.get(&seg.msn) {
                            Some((uri, first)) if *uri != seg.uri => {
                                if seen.conflicts.len() < 20 {
                                    seen.conflicts
                                        .push(format!("msn {}: {uri} on {first}, {} on {name}", seg.msn, seg.uri));
                                }
                            }
                            Some(_) => {}
                            None => {
                                seen.uris.insert(seg.msn, (seg.uri.clone(), name.clone()));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            seen
        });
        NumberingWatch { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> NumberingSeen {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("thread").join().expect("watch")
    }
}

/// A GET with one short deadline; the body of a 200, else an error.
fn get_quick(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    match common::netns::get_with_timeout(addr, path, timeout)? {
        (200, body) => Ok(body),
        _ => Err(std::io::ErrorKind::InvalidData.into()),
    }
}

/// Three nodes whose wall clocks are shifted by `skew_ms` (a test hook), clustered.
fn cluster_with_skew(skew_ms: [i64; 3]) -> (Net, Vec<NetNode>) {
    let net = Net::new(3);
    let nodes: Vec<NetNode> = (0..3)
        .map(|i| {
            let skew = skew_ms[i].to_string();
            net.spawn_cluster_with(i, COOKIE, &[], &[("STROM_TEST_HOOKS", "1"), ("STROM_TEST_CLOCK_SKEW_MS", &skew)])
        })
        .collect();
    for node in &nodes {
        node.wait_peers(2, Duration::from_secs(15));
    }
    (net, nodes)
}

/// The first takeover band of `node` (`strom-<i>` numbers its takeovers from `(i + 1) × 2^20` up).
const BAND: u64 = 1 << 20;

/// strom-0 owns a stream; a partition cuts it off; a second publisher gets the key on strom-1 and cuts segments
/// there; the partition heals. Exactly one owner remains, the one whose claim came first, and no media sequence
/// number ever named two segments on any node, during the partition or after it.
fn partition_heal(skew_ms: [i64; 3]) {
    let key = "live/split";
    let (net, nodes) = cluster_with_skew(skew_ms);
    let mut p0 = publish(&nodes[0].rtmp_url(key), &source(120.0));
    wait_segments(&nodes[0], key, 1, Duration::from_secs(30));
    wait_segments(&nodes[2], key, 1, Duration::from_secs(10));
    let watch = NumberingWatch::start(&nodes, key);
    // strom-0 is cut off from the other nodes (the test process still reaches everyone).
    net.cut_between(0, 1);
    net.cut_between(0, 2);
    wait_until("strom-1 to lose strom-0", Duration::from_secs(8), || !nodes[1].peers().contains(&"strom-0".into()));
    // During the partition strom-1 cannot see the owner: once strom-0's lease has run out, a second publisher is
    // accepted there.
    let mut p1 = publish(&nodes[1].rtmp_url(key), &source(120.0));
    // Settled: the publish got past its claim check, and strom-1 cut segments of its own (in its band).
    wait_until("a second owner on strom-1, with segments", Duration::from_secs(30), || {
        stream(&nodes[1], key).is_some_and(|s| s["state"] == "live" && s["relay_from"].is_null())
            && last_msn(&playlist(&nodes[1], key).1).is_some_and(|m| m >= 2 * BAND)
    });
    // Both sides go on numbering for a while.
    std::thread::sleep(Duration::from_secs(3));
    net.heal_between(0, 1);
    net.heal_between(0, 2);
    nodes[1].wait_peers(2, Duration::from_secs(15));
    // The first claim (strom-0) keeps the key, whatever the clocks say; strom-1's publisher is disconnected.
    wait_until("strom-1 to give the key up", Duration::from_secs(15), || p1.wait(Duration::ZERO).is_some());
    assert!(p0.is_running(), "the first publisher keeps publishing");
    assert!(stream(&nodes[0], key).is_some_and(|s| s["state"] == "live"));
    let owners = nodes
        .iter()
        .filter(|n| stream(n, key).is_some_and(|s| s["state"] == "live" && s["relay_from"].is_null()))
        .count();
    assert_eq!(owners, 1, "exactly one owner after the heal");
    assert!(
        metric(&nodes[1], "strom_cluster_ownership_conflicts_total{outcome=\"evicted\"}") >= 1.0,
        "strom-1 counted no eviction:\n{}",
        nodes[1].log_tail(30)
    );
    // Every node serves strom-0's playlist again.
    let before = last_msn(&playlist(&nodes[0], key).1).expect("msn on strom-0");
    wait_until("strom-2 to serve strom-0's playlist", Duration::from_secs(15), || {
        last_msn(&playlist(&nodes[2], key).1).is_some_and(|m| m >= before && m < BAND)
    });
    std::thread::sleep(Duration::from_secs(2));
    let seen = watch.finish();
    eprintln!(
        "numbering: {} numbers seen, playlists read {:?}, highest {:?}",
        seen.uris.len(),
        seen.playlists,
        seen.highest
    );
    assert!(seen.conflicts.is_empty(), "a media sequence number named two segments: {:#?}", seen.conflicts);
    assert!(seen.uris.keys().any(|&m| m >= 2 * BAND), "the watch saw strom-1's own segments");
    assert!(seen.uris.keys().any(|&m| m < BAND), "the watch saw strom-0's segments");
    let (frames, stderr) = probe_video(&nodes[2].http_url(&format!("/{key}.flv")), 2.0);
    assert_playable("flv on strom-2 after the heal", &frames, 30, 426, 240, &stderr);
}

#[test]
fn after_a_partition_heals_one_owner_remains_and_no_number_names_two_segments() {
    partition_heal([0, 0, 0]);
}

/// The same with the clocks apart: strom-0 5 s ahead, strom-1 30 s behind, so strom-1's claim, made during the
/// partition, looks older by its wall clock. It still loses: it had seen strom-0's claim (a lower epoch).
#[test]
fn clock_skew_does_not_decide_who_owns_a_stream_after_a_partition() {
    partition_heal([5_000, -30_000, 0]);
}

/// An owner frozen for 2 s (SIGSTOP: CPU starvation at its worst) keeps its stream: a publisher trying the key on
/// another node meanwhile is refused, not given a second copy of the stream.
#[test]
fn an_owner_starved_of_cpu_for_two_seconds_keeps_its_stream() {
    let key = "live/starved";
    let (_net, mut nodes) = cluster(3);
    let mut p0 = publish(&nodes[0].rtmp_url(key), &source(120.0));
    wait_segments(&nodes[0], key, 2, Duration::from_secs(30));
    wait_segments(&nodes[1], key, 2, Duration::from_secs(10));
    let watch = NumberingWatch::start(&nodes, key);
    let msn_before = last_msn(&playlist(&nodes[0], key).1).expect("msn");
    nodes[0].stop();
    let frozen = Instant::now();
    // OBS on another pod tries the same key while the owner is frozen.
    let mut p1 = publish(&nodes[1].rtmp_url(key), &source(60.0));
    std::thread::sleep(Duration::from_secs(2).saturating_sub(frozen.elapsed()));
    nodes[0].cont();
    eprintln!("strom-0 frozen for {:?}", frozen.elapsed());
    let refused =
        wait_until("the second publisher to be refused", Duration::from_secs(20), || p1.wait(Duration::ZERO).is_some());
    eprintln!("second publisher refused {refused:?} after strom-0 came back");
    assert!(p1.log_text().contains("already being published"), "{}", p1.log_text());
    assert!(p0.is_running(), "the owner's publisher keeps publishing");
    std::thread::sleep(Duration::from_secs(3));
    let owners: Vec<String> = nodes
        .iter()
        .filter(|n| stream(n, key).is_some_and(|s| s["state"] == "live" && s["relay_from"].is_null()))
        .map(|n| n.name())
        .collect();
    assert_eq!(owners, ["strom-0"], "strom-0 still owns the stream");
    let lost = metric(&nodes[1], "strom_cluster_peers_lost_total{reason=\"heartbeat_deadline\"}");
    eprintln!("strom-1 declared strom-0 down {lost} times during the freeze");
    // strom-0's numbering goes on where it was; every node serves it.
    let after = wait_segments(&nodes[2], key, 2, Duration::from_secs(10));
    let m = last_msn(&after).expect("msn");
    assert!(m > msn_before && m < BAND, "strom-2 serves strom-0's numbering: {m} after {msn_before}");
    let seen = watch.finish();
    assert!(seen.conflicts.is_empty(), "a media sequence number named two segments: {:#?}", seen.conflicts);
    assert!(seen.uris.keys().all(|&m| m < BAND), "no other node numbered segments of the stream: {:?}", seen.highest);
}

#[test]
fn racing_publishers_on_two_nodes_one_wins() {
    let key = "live/race";
    let (_net, nodes) = cluster(3);
    let mut a = publish(&nodes[1].rtmp_url(key), &source(60.0));
    let mut b = publish(&nodes[2].rtmp_url(key), &source(60.0));
    std::thread::sleep(Duration::from_secs(6));
    let (ra, rb) = (a.is_running(), b.is_running());
    assert!(ra != rb, "exactly one publisher wins (a running: {ra}, b running: {rb})");
    let loser = if ra { &b } else { &a };
    assert!(loser.log_text().contains("already being published"), "{}", loser.log_text());
    let (frames, stderr) = probe_video(&nodes[0].rtmp_url(key), 2.0);
    assert_playable("rtmp on strom-0", &frames, 30, 426, 240, &stderr);
}

#[test]
fn a_node_with_the_wrong_cookie_is_refused() {
    let net = Net::new(3);
    let a = net.spawn_cluster(0, COOKIE, &[]);
    let b = net.spawn_cluster(1, COOKIE, &[]);
    let c = net.spawn_cluster(2, "not-the-cookie", &[]);
    a.wait_peers(1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.peers(), vec!["strom-1".to_string()]);
    assert_eq!(b.peers(), vec!["strom-0".to_string()]);
    assert!(c.peers().is_empty(), "{:?}", c.peers());
    wait_until("the refusal to be counted", Duration::from_secs(5), || {
        metric(&a, "strom_cluster_auth_failures_total{direction=\"in\"}") >= 1.0
    });
    assert!(a.log().contains("before authenticating"), "{}", a.log_tail(20));
}

#[test]
fn scale_out_to_four_nodes_and_back_with_a_drain() {
    let key = "live/scale";
    let net = Net::new(4);
    let mut nodes: Vec<NetNode> = (0..3).map(|i| net.spawn_cluster(i, COOKIE, &[])).collect();
    for n in &nodes {
        n.wait_peers(2, Duration::from_secs(15));
    }
    let _p = publish(&nodes[0].rtmp_url(key), &source(60.0));
    wait_segments(&nodes[0], key, 1, Duration::from_secs(30));
    // A fourth pod starts, seeding from strom-0 only: it finds everyone and plays the stream.
    let mut new = net.spawn_cluster(3, COOKIE, &[]);
    new.wait_peers(3, Duration::from_secs(15));
    for n in &nodes {
        n.wait_peers(3, Duration::from_secs(15));
    }
    let (frames, stderr) = probe_video(&new.http_url(&format!("/{key}.flv")), 2.0);
    assert_playable("flv on the new node", &frames, 30, 426, 240, &stderr);
    // Scale back in: SIGTERM (Kubernetes preStop) drains and exits cleanly; the others drop it.
    let status = new.term(Duration::from_secs(20)).expect("drained node exits");
    assert!(status.success(), "exit status {status:?}\n{}", new.log_tail(20));
    for n in nodes.iter_mut() {
        n.wait_peers(2, Duration::from_secs(10));
    }
    let (frames, stderr) = probe_video(&nodes[2].rtmp_url(key), 2.0);
    assert_playable("rtmp on strom-2 after scale-in", &frames, 30, 426, 240, &stderr);
}

/// The ladder tests place ladders by the nodes' measured load: they run one at a time, never next to each
/// other's encoders (on 2 cores, a neighbour's load makes a node look busy and moves the placement).
static LADDER_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ladder_test() -> std::sync::MutexGuard<'static, ()> {
    LADDER_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Transcoding on, one tiny rung (160p ultrafast) and one ladder per node, so placement decisions are visible.
const LADDER_ENV: &[(&str, &str)] = &[
    ("STROM_TRANSCODE_MODE", "always"),
    ("STROM_TRANSCODE_RUNGS", "[{height = 160, bitrate_kbps = 200, preset = \"ultrafast\"}]"),
    ("STROM_TRANSCODE_THREADS", "1"),
    ("STROM_TRANSCODE_MAX_STREAMS", "1"),
];

/// The node (index into `nodes`, skipping dead ones) running the ladder whose rung is `rung` (e.g. `live/x_160p`):
/// the one owning the rung stream.
fn ladder_node(nodes: &mut [NetNode], rung: &str) -> Option<usize> {
    (0..nodes.len())
        .find(|&i| nodes[i].is_running() && stream(&nodes[i], rung).is_some_and(|s| s.get("relay_from").is_none()))
}

/// Waits until every node knows every peer's load (placement skips a peer whose load it does not know yet).
fn wait_loads(nodes: &[NetNode]) {
    for n in nodes {
        wait_until(&format!("peer loads on {}", n.name()), Duration::from_secs(10), || {
            let v = json(n, "/api/v1/cluster");
            let peers = v["peers"].as_array().cloned().unwrap_or_default();
            peers.len() == nodes.len() - 1 && peers.iter().all(|p| p["load"].is_object())
        });
    }
}

fn wait_ladder(nodes: &mut [NetNode], rung: &str, timeout: Duration) -> usize {
    let mut at = None;
    wait_until(&format!("a node running the ladder of {rung}"), timeout, || {
        at = ladder_node(nodes, rung);
        at.is_some_and(|i| metric(&nodes[i], "strom_encoder_rungs_active") >= 1.0)
    });
    at.unwrap_or_default()
}

#[test]
fn ladders_run_on_the_least_loaded_node_serve_every_node_and_move_when_their_node_dies() {
    let _one = ladder_test();
    let net = Net::new(3);
    let mut nodes: Vec<NetNode> = (0..3).map(|i| net.spawn_cluster_with(i, COOKIE, &[], LADDER_ENV)).collect();
    for n in &nodes {
        n.wait_peers(2, Duration::from_secs(15));
    }
    wait_loads(&nodes);
    let (key, rung) = ("live/ladder", "live/ladder_160p");
    let _p = publish(&nodes[2].rtmp_url(key), &source(90.0));
    let host = wait_ladder(&mut nodes, rung, Duration::from_secs(30));
    assert_ne!(host, 2, "the idle nodes take the ladder, not the owner busy with ingest");
    assert!(nodes[2].log().contains("placed the ladder on another node"), "{}", nodes[2].log_tail(20));
    // The same master playlist on every node, whichever runs the ladder.
    let mut masters = Vec::new();
    wait_until("the master playlist on every node", Duration::from_secs(20), || {
        masters = nodes.iter().map(|n| playlist(n, key).1).collect();
        masters.iter().all(|m| m.matches("#EXT-X-STREAM-INF").count() == 2)
    });
    // Identical but for the measured bitrates, which move between two requests.
    let shape = |m: &String| -> Vec<String> {
        m.lines().map(|l| l.split(',').filter(|a| !a.contains("BANDWIDTH=")).collect::<Vec<_>>().join(",")).collect()
    };
    assert!(masters.iter().all(|m| shape(m) == shape(&masters[0])), "{masters:?}");
    assert!(masters[0].contains("../ladder_160p/index.m3u8"), "{}", masters[0]);
    // The rung plays from a node that neither owns the source nor runs the ladder.
    let other = (0..3).find(|&i| i != host && i != 2).unwrap_or_default();
    wait_segments(&nodes[other], rung, 2, Duration::from_secs(30));
    let (frames, stderr) = probe_video(&nodes[other].http_url(&format!("/{rung}/index.m3u8")), 2.0);
    assert_playable("the rung over HLS from a third node", &frames, 30, 284, 160, &stderr);
    let before = last_msn(&playlist(&nodes[other], rung).1).unwrap_or_default();

    // The ladder's node dies: the owner places the ladder on a live node within 3 s.
    nodes[host].kill();
    let t = Instant::now();
    let moved = wait_ladder(&mut nodes, rung, Duration::from_secs(10));
    let replaced_in = t.elapsed();
    assert_ne!(moved, host);
    assert!(replaced_in <= Duration::from_secs(3), "re-placed after {replaced_in:?}");
    // The rung's HLS goes on at the same URL: a discontinuity, media sequence still increasing.
    let mut text = String::new();
    wait_until("the rung playlist to continue", Duration::from_secs(30), || {
        text = playlist(&nodes[other], rung).1;
        text.contains("#EXT-X-DISCONTINUITY") && last_msn(&text).is_some_and(|m| m > before + 1)
    });
    eprintln!("ladder re-placed on strom-{moved} {:.2} s after strom-{host} was killed", replaced_in.as_secs_f64());
}

#[test]
fn a_new_node_takes_new_ladders_and_a_draining_node_hands_its_ladder_over() {
    let _one = ladder_test();
    let net = Net::new(4);
    let mut nodes: Vec<NetNode> = (0..3).map(|i| net.spawn_cluster_with(i, COOKIE, &[], LADDER_ENV)).collect();
    for n in &nodes {
        n.wait_peers(2, Duration::from_secs(15));
    }
    wait_loads(&nodes);
    let _a = publish(&nodes[2].rtmp_url("live/a"), &source(120.0));
    let a = wait_ladder(&mut nodes, "live/a_160p", Duration::from_secs(30));
    let _b = publish(&nodes[2].rtmp_url("live/b"), &source(120.0));
    let b = wait_ladder(&mut nodes, "live/b_160p", Duration::from_secs(30));
    assert_ne!(a, b, "one ladder per node (transcode.max_streams = 1)");
    // A fourth pod joins: the next ladder goes to it, the node with nothing to do.
    nodes.push(net.spawn_cluster_with(3, COOKIE, &[], LADDER_ENV));
    for n in &nodes {
        n.wait_peers(3, Duration::from_secs(15));
    }
    wait_loads(&nodes);
    let _c = publish(&nodes[2].rtmp_url("live/c"), &source(120.0));
    let c = wait_ladder(&mut nodes, "live/c_160p", Duration::from_secs(30));
    assert_eq!(c, 3, "the new node takes the new ladder");
    wait_segments(&nodes[1], "live/c_160p", 2, Duration::from_secs(30));

    // Scale back in: strom-3 drains (SIGTERM). Its ladder moves; an HLS player of the rung on strom-1 never
    // sees an error or its playlist going back.
    let poller = {
        let addr = nodes[1].http;
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(14) {
                let r = http_get(addr, "/live/c_160p/index.m3u8").ok();
                seen.push(r.map(|r| (r.status, last_msn(&r.text()))));
                std::thread::sleep(Duration::from_millis(300));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let status = nodes[3].term(Duration::from_secs(20)).expect("the drained node exits");
    assert!(status.success(), "exit status {status:?}\n{}", nodes[3].log_tail(20));
    assert!(nodes[3].log().contains("draining: stopping a hosted ladder"), "{}", nodes[3].log_tail(20));
    let moved = wait_ladder(&mut nodes, "live/c_160p", Duration::from_secs(10));
    assert_ne!(moved, 3);
    let seen = poller.join().expect("poller");
    let mut last = 0;
    for (i, s) in seen.iter().enumerate() {
        let (status, msn) = s.as_ref().copied().unwrap_or((0, None));
        assert_eq!(status, 200, "poll {i} of the rung playlist during the drain: {seen:?}");
        let msn = msn.unwrap_or_default();
        assert!(msn >= last, "media sequence went back at poll {i}: {seen:?}");
        last = msn;
    }
    wait_segments(&nodes[1], "live/c_160p", 1, Duration::from_secs(5));
    let before = last;
    wait_until("the moved ladder's rung to advance", Duration::from_secs(30), || {
        last_msn(&playlist(&nodes[1], "live/c_160p").1).is_some_and(|m| m > before)
    });
}

/// `strom_encoder_restarts_total` summed over the running nodes.
fn restarts(nodes: &mut [NetNode]) -> f64 {
    nodes.iter_mut().filter_map(|n| n.is_running().then(|| metric(n, "strom_encoder_restarts_total"))).sum()
}

/// Asserts for `secs` seconds that each ladder stays on its node and no encoder restarts.
fn assert_ladders_stay(nodes: &mut [NetNode], ladders: &[(&str, usize)], secs: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        for &(rung, host) in ladders {
            let now = ladder_node(nodes, rung);
            assert_eq!(now, Some(host), "the ladder of {rung} left strom-{host} after {:?}", t.elapsed());
        }
        assert_eq!(restarts(nodes), 0.0, "an encoder restarted after {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn ladders_hosted_on_other_nodes_stay_put_and_come_back_on_a_free_node_after_a_kill() {
    let _one = ladder_test();
    // How long the ladders must run untouched: `STROM_TEST_LADDER_SECS` (180 for the 3 minutes); by
    // default 40 s, four times the relay idle time that used to drop a hosted ladder's source.
    let secs: u64 = std::env::var("STROM_TEST_LADDER_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let net = Net::new(3);
    let mut nodes: Vec<NetNode> = (0..3).map(|i| net.spawn_cluster_with(i, COOKIE, &[], LADDER_ENV)).collect();
    for n in &nodes {
        n.wait_peers(2, Duration::from_secs(15));
    }
    wait_loads(&nodes);
    let src = source(secs as f64 + 90.0);
    let _a = publish(&nodes[0].rtmp_url("live/a"), &src);
    let a = wait_ladder(&mut nodes, "live/a_160p", Duration::from_secs(30));
    let _b = publish(&nodes[0].rtmp_url("live/b"), &src);
    let b = wait_ladder(&mut nodes, "live/b_160p", Duration::from_secs(30));
    assert_ne!(a, b, "one ladder per node (transcode.max_streams = 1)");
    assert_ladders_stay(&mut nodes, &[("live/a_160p", a), ("live/b_160p", b)], secs);
    let owner_log = nodes[0].log();
    assert!(!owner_log.contains("the ladder's node lost it"), "{}", nodes[0].log_tail(30));

    // The node hosting one ladder for strom-0 dies: the ladder comes back on the node with the free slot
    // within 5 s and stays there.
    let (rung, victim, kept) =
        if a != 0 { ("live/a_160p", a, ("live/b_160p", b)) } else { ("live/b_160p", b, ("live/a_160p", a)) };
    let free = (0..3).find(|&i| i != a && i != b).unwrap_or_default();
    nodes[victim].kill();
    let t = Instant::now();
    let moved = wait_ladder(&mut nodes, rung, Duration::from_secs(5));
    assert_eq!(moved, free, "the ladder went to strom-{moved}, the free node is strom-{free}");
    eprintln!(
        "ladder of {rung} back on strom-{moved} {:.2} s after strom-{victim} was killed",
        t.elapsed().as_secs_f64()
    );
    assert_ladders_stay(&mut nodes, &[(rung, free), kept], 20);
}

/// Cluster requests of the kinds a playlist poll used to send (who owns the key, the owner's playlist).
fn poll_requests(node: &NetNode) -> f64 {
    ["claim", "playlist"]
        .iter()
        .map(|r| metric(node, &format!("strom_cluster_requests_total{{request=\"{r}\"}}")))
        .sum()
}

#[test]
fn playlist_polls_on_a_node_that_does_not_own_the_stream_make_no_cluster_call() {
    let key = "live/poll";
    let (_net, nodes, _p) = cluster_with_stream(2, key);
    wait_segments(&nodes[1], key, 2, Duration::from_secs(30));
    let before = poll_requests(&nodes[1]);
    let (mut polls, mut sequences) = (0, Vec::new());
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        let (status, text) = playlist(&nodes[1], key);
        assert_eq!(status, 200, "{text}");
        sequences.push(last_msn(&text).unwrap_or_default());
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = poll_requests(&nodes[1]) - before;
    assert_eq!(sent, 0.0, "{polls} playlist polls on strom-1 sent {sent} claim/playlist requests");
    // The polls strom-1 answered are its HLS viewers, as its RTMP and HTTP-FLV players would be.
    let hls = metric(&nodes[1], "strom_viewers{protocol=\"hls\"}");
    assert!(hls >= 1.0, "strom-1 counts the HLS players it serves: strom_viewers{{protocol=\"hls\"}} = {hls}");
    assert!(sequences.last() > sequences.first(), "the playlist advanced with the owner's pushes: {sequences:?}");
    // What strom-1 serves is the owner's playlist, byte for byte (a poll can straddle a new segment: retry).
    let same = (0..10).any(|_| {
        let owner = playlist(&nodes[0], key).1;
        let here = playlist(&nodes[1], key).1;
        std::thread::sleep(Duration::from_millis(50));
        owner == here
    });
    assert!(
        same,
        "strom-1 serves a playlist the owner does not\n{}\n{}",
        playlist(&nodes[0], key).1,
        playlist(&nodes[1], key).1
    );
    eprintln!("{polls} playlist polls on a non-owner: 0 cluster requests");
}

#[test]
fn players_on_another_node_stay_attached_through_a_publisher_reconnect() {
    let key = "live/blip";
    let grace: &[(&str, &str)] = &[("STROM_STREAM_RECONNECT_GRACE_SECS", "4")];
    let net = Net::new(2);
    let nodes: Vec<NetNode> = (0..2).map(|i| net.spawn_cluster_with(i, COOKIE, &[], grace)).collect();
    for n in &nodes {
        n.wait_peers(1, Duration::from_secs(15));
    }
    let (fps, secs) = (30.0, 7.0);
    let mut first = publish(&nodes[0].rtmp_url(key), &source(secs));
    wait_until("the stream live on strom-0", Duration::from_secs(15), || {
        stream(&nodes[0], key).is_some_and(|s| s["state"] == "live" && !s["video_codec"].is_null())
    });
    // Readers on strom-1, which relays the stream from strom-0; each on one connection until the stream ends.
    let reader = |url: String| std::thread::spawn(move || probe_until_end(&url, Duration::from_secs(60)));
    let rtmp = reader(nodes[1].rtmp_url(key));
    let flv = reader(nodes[1].http_url(&format!("/{key}.flv")));
    first.wait(Duration::from_secs(20)).expect("the first publisher ends");
    std::thread::sleep(Duration::from_secs(2));
    let mut second = publish(&nodes[0].rtmp_url(key), &source(secs));
    second.wait(Duration::from_secs(30)).expect("the second publisher ends");
    for (what, r) in [("rtmp on strom-1", rtmp), ("flv on strom-1", flv)] {
        let (pts, stderr) = r.join().expect("reader");
        // Both publishes, less the relay's start and the reconnect.
        let min = (2.0 * secs - 3.5) * fps;
        assert!(pts.len() as f64 >= min, "{what}: {} frames decoded, expected >= {min}; {stderr}", pts.len());
        let back = pts.windows(2).filter(|w| w[1] <= w[0]).count();
        assert_eq!(back, 0, "{what}: timestamps went back or stood still {back} times");
    }
}

/// LL-HLS delta updates (`_HLS_skip=YES`) from a node that does not own the stream are the owner's, byte for byte
/// (made from the owner's pushed playlist text, with no cluster call).
#[test]
fn delta_updates_on_a_node_that_does_not_own_the_stream_are_the_owner_s() {
    let key = "live/delta";
    let env: &[(&str, &str)] = &[("STROM_HLS_WINDOW", "10"), ("STROM_HLS_SEGMENT_DURATION_SECS", "1")];
    let net = Net::new(2);
    let nodes: Vec<NetNode> = (0..2).map(|i| net.spawn_cluster_with(i, COOKIE, &[], env)).collect();
    for n in &nodes {
        n.wait_peers(1, Duration::from_secs(15));
    }
    let _p = publish(&nodes[0].rtmp_url(key), &Source { seconds: 40.0, gop_secs: 1.0, ..Source::default() });
    let delta = |node: &NetNode| node.get(&format!("/{key}/index.m3u8?_HLS_skip=YES")).text();
    wait_until("a delta update with skipped segments on the owner", Duration::from_secs(30), || {
        delta(&nodes[0]).contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=")
    });
    wait_segments(&nodes[1], key, 2, Duration::from_secs(10));
    let before = poll_requests(&nodes[1]);
    // A request can straddle a new part: retry.
    let same = (0..20).any(|_| {
        let (owner, here) = (delta(&nodes[0]), delta(&nodes[1]));
        std::thread::sleep(Duration::from_millis(30));
        owner == here && here.contains("#EXT-X-SKIP:")
    });
    assert!(same, "strom-1's delta update is not the owner's\n{}\n{}", delta(&nodes[0]), delta(&nodes[1]));
    assert_eq!(poll_requests(&nodes[1]) - before, 0.0, "no cluster call for a delta update");
}

/// Abuse of the cluster port: 100 silent sockets and 10 that announce a 64 MiB frame before any cookie are all
/// closed within 3 s and counted, while the two nodes stay joined and keep relaying.
#[test]
fn strangers_on_the_cluster_port_are_closed_within_three_seconds_and_the_nodes_stay_joined() {
    let key = "live/abused";
    let net = Net::new(2);
    let a = net.spawn_cluster(0, COOKIE, &[]);
    let b = net.spawn_cluster(1, COOKIE, &[]);
    a.wait_peers(1, Duration::from_secs(15));
    b.wait_peers(1, Duration::from_secs(15));
    let _p = publish(&a.rtmp_url(key), &source(60.0));
    wait_segments(&a, key, 1, Duration::from_secs(30));
    let before = metric(&a, "strom_cluster_auth_failures_total{direction=\"in\"}");
    let port = std::net::SocketAddr::new(a.ip().into(), common::netns::CLUSTER_PORT);
    let opened = Instant::now();
    let mut socks: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(port).expect("connect")).collect();
    for _ in 0..10 {
        let mut s = TcpStream::connect(port).expect("connect");
        s.write_all(&(64u64 << 20).to_be_bytes()).unwrap();
        s.write_all(&[0u8; 1024]).unwrap();
        socks.push(s);
    }
    // Every socket is closed by the node (EOF or reset) within 3 s.
    for s in &mut socks {
        let left = Duration::from_secs(3).saturating_sub(opened.elapsed()).max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue, // its side of a handshake, if any
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    break false
                }
                Err(_) => break true, // reset
            }
        };
        assert!(closed, "a stranger's socket was still open after {:?}", opened.elapsed());
    }
    eprintln!("110 strangers closed within {:.1} s", opened.elapsed().as_secs_f64());
    wait_until("the strangers to be counted", Duration::from_secs(5), || {
        metric(&a, "strom_cluster_auth_failures_total{direction=\"in\"}") >= before + 110.0
    });
    assert_eq!(a.peers(), vec!["strom-1".to_string()], "the nodes stay joined");
    assert_eq!(b.peers(), vec!["strom-0".to_string()]);
    let (frames, stderr) = probe_video(&b.http_url(&format!("/{key}.flv")), 2.0);
    assert_playable("flv relayed to strom-1 after the abuse", &frames, 30, 426, 240, &stderr);
}

/// Relay credit follows consumption: with strom-1's relay stream actor stalled for 8 s (a test hook) and
/// `stream.queue_max_bytes` and `cluster.relay_window_bytes` at 256 KiB, strom-1 holds its credit back (logged once)
/// instead of queueing the stream (the owner's sender waits on its feed, and skips to a keyframe if it falls a ring
/// behind), strom-1's RSS stays bounded, and strom-1's players play again after the stall.
#[test]
fn relay_credit_follows_the_local_stream_taking_frames() {
    let key = "live/heldback";
    let net = Net::new(2);
    let env = [
        ("STROM_TEST_HOOKS", "1"),
        ("STROM_STREAM_QUEUE_MAX_BYTES", "262144"),
        ("STROM_CLUSTER_RELAY_WINDOW_BYTES", "262144"),
        ("STROM_CLUSTER_RELAY_IDLE_SECS", "60"),
        ("STROM_AUTH_ADMIN_TOKEN", "relay-credit-test-token"),
        ("STROM_AUTH_READ_API", "public"),
    ];
    let a = net.spawn_cluster_with(0, COOKIE, &[], &env);
    let b = net.spawn_cluster_with(1, COOKIE, &[], &env);
    a.wait_peers(1, Duration::from_secs(15));
    b.wait_peers(1, Duration::from_secs(15));
    let _p = publish(&a.rtmp_url(key), &Source { seconds: 90.0, bitrate_k: 2000, ..Source::default() });
    wait_segments(&a, key, 1, Duration::from_secs(30));
    let flv = b.http_url(&format!("/{key}.flv"));
    let (frames, stderr) = probe_video(&flv, 2.0);
    assert_playable("flv relayed to strom-1", &frames, 30, 426, 240, &stderr);
    let rss = |n: &NetNode| n.metric("process_resident_memory_bytes");
    let rss_base = rss(&b);
    let skipped_before = metric(&a, "strom_frames_dropped_total{reason=\"slow_relay\"}");
    let req = format!(
        "POST /api/v1/test/stall/{key}?what=stream&secs=8 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
         Authorization: Bearer relay-credit-test-token\r\nConnection: close\r\n\r\n"
    );
    let r = http_request(b.http, &req).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let t = Instant::now();
    let mut rss_peak = 0f64;
    while t.elapsed() < Duration::from_millis(7500) {
        rss_peak = rss_peak.max(rss(&b));
        std::thread::sleep(Duration::from_millis(250));
    }
    let growth = (rss_peak - rss_base).max(0.0) / 1048576.0;
    let skipped = metric(&a, "strom_frames_dropped_total{reason=\"slow_relay\"}") - skipped_before;
    eprintln!("relay stream stalled 8 s: strom-1 RSS +{growth:.1} MiB, the owner skipped {skipped} frames for it");
    assert!(b.log().contains("credit to the owner held back"), "{}", b.log_tail(30));
    assert!(growth < 16.0, "strom-1 RSS grew {growth:.1} MiB");
    std::thread::sleep(Duration::from_secs(1));
    let (frames, stderr) = probe_video(&flv, 2.0);
    assert_playable("flv on strom-1 after the stall", &frames, 30, 426, 240, &stderr);
}

/// A node that does not own the stream sends a preload-hinted part as the owner produces it, as the owner does:
/// chunked, its first bytes well before its last, and byte for byte the owner's part; it follows the part with
/// `growing` calls to the owner (one mirror per part, however many players ask).
#[test]
fn a_preload_hinted_part_is_sent_as_it_is_produced_by_a_node_that_does_not_own_the_stream() {
    let key = "live/growing";
    let (_net, nodes, _p) = cluster_with_stream(2, key);
    wait_segments(&nodes[1], key, 2, Duration::from_secs(30));
    let path = format!("/{key}/index.m3u8");
    let mut spreads = Vec::new();
    for _ in 0..6 {
        // The next part's playlist (a blocking reload on strom-1), then at once the part it hints, from strom-1,
        // by two players.
        let text = nodes[1].get(&path).text();
        let open = text.lines().filter(|l| l.starts_with("#EXT-X-PART:")).count();
        let msn = last_msn(&text).map_or(0, |m| m + 1);
        let parts_in_open = text.rsplit("#EXTINF").next().map_or(0, |t| t.matches("#EXT-X-PART:").count());
        let reload = nodes[1].get(&format!("{path}?_HLS_msn={msn}&_HLS_part={parts_in_open}")).text();
        assert!(open > 0, "{text}");
        let hint = reload
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
            .map(|u| u.trim_end_matches('"').to_string())
            .expect("a preload hint");
        let asked = Instant::now();
        let players: Vec<_> = (0..2)
            .map(|_| {
                let (addr, hint, key) = (nodes[1].http, hint.clone(), key.to_string());
                std::thread::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    write!(c, "GET /{key}/{hint} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                    read_chunked(&mut c)
                })
            })
            .collect();
        let answers: Vec<_> = players.into_iter().map(|p| p.join().unwrap()).collect();
        let owners = nodes[0].get(&format!("/{key}/{hint}")).body;
        for (status, headers, chunks) in &answers {
            assert_eq!(*status, 200);
            if headers.get("transfer-encoding").map(String::as_str) != Some("chunked") {
                continue; // the part was complete before the request came (a slow try): sent whole
            }
            let body: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.clone()).collect();
            assert_eq!(body, owners, "strom-1 streams strom-0's part {hint}, byte for byte");
            let (first, last) = (chunks[0].1, chunks[chunks.len() - 1].1);
            eprintln!(
                "{hint}: {} chunks, first after {:?}, last {:?} later",
                chunks.len(),
                first - asked,
                last - first
            );
            spreads.push(last - first);
        }
        assert_eq!(nodes[1].get(&format!("/{key}/{hint}")).body, owners, "and serves it whole once complete");
    }
    // A 200 ms part in chunks of ~67 ms: the best of the tries spreads its chunks over two chunk intervals or so.
    let best = spreads.iter().max().copied().unwrap_or_default();
    assert!(best >= Duration::from_millis(50), "{spreads:?}");
    let calls = metric(&nodes[1], "strom_cluster_requests_total{request=\"growing\"}");
    // Three chunks a part, one call each (the last says the part is complete), for both players together.
    assert!(
        (6.0..=6.0 * 4.0).contains(&calls),
        "strom-1 followed each part once from the owner: {calls} growing calls"
    );
}
