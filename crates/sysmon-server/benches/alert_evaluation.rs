//! How long one alert tick takes: 10,000 hosts × 10 rules, each host with
//! 5 minutes of samples at 10 s (the agent's metrics and two file
//! systems), checked by the evaluator the server runs (no I/O: the tick
//! works from memory). Also the cost of taking a commit into the windows.
//! Prints a Markdown table; run by scripts/bench-alerts.sh.
//!
//!   cargo bench -p sysmon-server --bench alert_evaluation [-- HOSTS TICKS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use sysmon_core::metrics::{ExtendedMetrics, FilesystemUsage};
use sysmon_core::{Sample, UnixTime};
use sysmon_server::services::alerts::evaluate::Evaluator;
use sysmon_server::services::alerts::rules::{RuleSource, RuleSpec};
use sysmon_server::store::{ClientId, ClientSample};

const RULES: &str = "
- {name: cpu-hot, metric: cpu_load, over_seconds: 300, above: 90, for_seconds: 60}
- {name: cpu-max, metric: cpu_load, aggregate: max, over_seconds: 60, above: 99}
- {name: load, metric: load_average_1m, over_seconds: 300, above: 16}
- {name: mem-full, metric: memory_used_percent, over_seconds: 120, above: 95}
- {name: swap, metric: swap_used_percent, above: 80}
- {name: disk-full, metric: filesystem_used_percent, above: 90}
- {name: hot, metric: temperature_celsius, over_seconds: 60, above: 80}
- {name: net, metric: network_receive_bytes_per_second, over_seconds: 300, above: 1e9}
- {name: web-down, metric: host_silent, silent_intervals: 5, hosts: 'web-*'}
- {name: down, metric: host_silent, silent_seconds: 120}
";

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let time =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    time(usage.user_time()) + time(usage.system_time())
}

fn sample(host: u64, time: UnixTime, k: u64) -> Sample {
    let wave = ((host * 7 + k) % 100) as f64;
    let extended = ExtendedMetrics {
        load_average_1m: Some(wave / 10.0),
        memory_used_bytes: Some((wave as u64 + 1) << 28),
        memory_total_bytes: Some(32 << 30),
        swap_used_bytes: Some(1 << 20),
        swap_total_bytes: Some(4 << 30),
        network_receive_bytes_per_second: Some(wave * 1e4),
        temperature_celsius: Some(40.0 + wave / 5.0),
        filesystems: vec![
            FilesystemUsage {
                mount_point: "/".into(),
                used_bytes: 40 << 30,
                total_bytes: 100 << 30,
            },
            FilesystemUsage {
                mount_point: "/data".into(),
                used_bytes: (wave as u64) << 32,
                total_bytes: 500 << 32,
            },
        ],
        ..ExtendedMetrics::default()
    };
    Sample {
        time,
        cpu_load: Some(wave),
        mem: None,
        storage: None,
        extended: Some(Box::new(extended)),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hosts = args.first().copied().unwrap_or(10_000);
    let ticks = args.get(1).copied().unwrap_or(21) as usize;
    let specs: Vec<RuleSpec> = serde_norway::from_str(RULES).expect("rules");
    let rules: Vec<_> = specs
        .into_iter()
        .map(|s| Arc::new(s.check(RuleSource::Config).expect("rule")))
        .collect();
    let rule_count = rules.len();
    let mut evaluator = Evaluator::new(rules);
    for host in 0..hosts {
        let name = if host % 2 == 0 {
            format!("web-{host}")
        } else {
            format!("db-{host}")
        };
        evaluator.know_host(
            ClientId(host as i64),
            &name,
            None,
            None,
            UnixTime::from_micros(0),
        );
    }
    // 5 minutes at 10 s, every host, in commits of 1,000 samples.
    let start = UnixTime::now().micros() - 300_000_000;
    let mut observe_cpu = Duration::ZERO;
    let mut observed = 0u64;
    let mut evaluator_time = |k: u64, evaluator: &mut Evaluator| {
        let time = UnixTime::from_micros(start + k as i64 * 10_000_000);
        let rows: Vec<ClientSample> = (0..hosts)
            .map(|host| ClientSample {
                client: ClientId(host as i64),
                sample: sample(host, time, k),
            })
            .collect();
        let before = thread_cpu();
        for commit in rows.chunks(1_000) {
            evaluator.observe(commit, time);
        }
        observe_cpu += thread_cpu() - before;
        observed += hosts;
    };
    for k in 0..30 {
        evaluator_time(k, &mut evaluator);
    }
    let now = UnixTime::from_micros(start + 300_000_000);
    let (mut cpu_ms, mut wall_ms) = (Vec::new(), Vec::new());
    let mut transitions = 0;
    for _ in 0..ticks {
        let (cpu, wall) = (thread_cpu(), Instant::now());
        transitions += evaluator.tick(now).len();
        cpu_ms.push((thread_cpu() - cpu).as_secs_f64() * 1e3);
        wall_ms.push(wall.elapsed().as_secs_f64() * 1e3);
    }
    println!("| hosts | rules | ticks | tick CPU median | tick CPU max | tick wall median | observe per sample | transitions |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {hosts} | {rule_count} | {ticks} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} µs | {transitions} |",
        median(cpu_ms.clone()),
        cpu_ms.iter().copied().fold(0.0, f64::max),
        median(wall_ms),
        observe_cpu.as_secs_f64() * 1e6 / observed as f64,
    );
}
