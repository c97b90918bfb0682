//! strom-load: the benchmark load tool (see bench/README.md).

fn main() {
    eprintln!("strom-load: not built yet");
    std::process::exit(2);
}
