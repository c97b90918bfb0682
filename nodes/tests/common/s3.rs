//! A real S3 server for the recording tests: `s3s-fs` (S3 over a directory), a separate process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A real S3 server: `s3s-fs` over a directory (installed by `nodes/scripts/test.sh`).
pub struct S3 {
    child: std::process::Child,
    host: String,
    port: u16,
}

impl S3 {
    pub fn binary() -> Option<PathBuf> {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        [
            std::env::var("STROM_TEST_S3S").ok().map(PathBuf::from),
            Some(PathBuf::from(format!("{home}/.cargo/bin/s3s-fs"))),
        ]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
    }

    /// Whether an S3 test must be skipped (said on stderr): `s3s-fs` is not installed and this is not CI, where
    /// `nodes/scripts/test.sh` installs it (a CI run without it fails rather than skips).
    pub fn skip(what: &str) -> bool {
        let skip = S3::binary().is_none() && std::env::var_os("CI").is_none();
        if skip {
            eprintln!("{what} skipped: s3s-fs is not installed (nodes/scripts/test.sh installs it)");
        }
        skip
    }

    pub fn start(root: &Path, port: u16) -> S3 {
        S3::start_on(root, "127.0.0.1", port)
    }

    /// [`S3::start`] on another address of this host (e.g. a namespaced net's bridge address, which its nodes reach).
    pub fn start_on(root: &Path, host: &str, port: u16) -> S3 {
        let bin = S3::binary().expect("s3s-fs is not installed (nodes/scripts/test.sh installs it)");
        std::fs::create_dir_all(root.join("strom")).unwrap(); // the bucket
        let child = Command::new(bin)
            .args(["--host", host, "--port", &port.to_string(), "--access-key", "strom", "--secret-key"])
            .arg("strom-secret")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((host, port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3 { child, host: host.to_string(), port }
    }

    /// Freezes (`true`: SIGSTOP) or thaws (SIGCONT) the server: a store that hangs instead of refusing.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill {sig}");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("STROM_STORAGE_URL".into(), "s3://strom/recordings".into()),
            ("AWS_ENDPOINT".into(), format!("http://{}:{}", self.host, self.port)),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), "strom".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "strom-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
