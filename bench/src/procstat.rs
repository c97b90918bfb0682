//! CPU seconds and RSS of a server (a process and its children: nginx is a master plus workers) from /proc.

use std::fs;

/// Linux USER_HZ (clock ticks in /proc/*/stat) is 100 on every mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub procs: usize,
}

/// (ppid, utime + stime ticks) from /proc/PID/stat.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after "pid (comm) ": state=0 ppid=1 ... utime=11 stime=12
    Some((f.get(1)?.parse().ok()?, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The given processes and their direct children.
pub fn family(roots: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = roots.to_vec();
    if roots.is_empty() {
        return out;
    }
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((ppid, _)) = stat(pid) {
                    if roots.contains(&ppid) && !out.contains(&pid) {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

pub fn sample(pids: &[u32]) -> Sample {
    let mut s = Sample::default();
    for &pid in pids {
        if let Some((_, ticks)) = stat(pid) {
            s.cpu_s += ticks as f64 / TICKS_PER_SEC;
            s.rss_kib += rss_kib(pid).unwrap_or(0);
            s.procs += 1;
        }
    }
    s
}

pub fn self_sample() -> Sample {
    sample(&[std::process::id()])
}
