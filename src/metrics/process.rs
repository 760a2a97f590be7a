//! The process's own resource use for `/metrics` (the names Prometheus' client libraries use):
//! CPU time, resident and virtual memory, open and allowed file descriptors, start time.
//! Read from `/proc/self` and `getrusage` at scrape time; on a system without `/proc` the
//! memory and descriptor lines are left out.

use std::fmt::Write;

/// Append the `process_*` metrics to `out`. `started_unix_s` is when the process started.
pub fn render(out: &mut String, started_unix_s: f64) {
    use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho};
    if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let cpu = secs(usage.user_time()) + secs(usage.system_time());
        line(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", cpu);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        };
        if let Some(rss) = kib("VmRSS:") {
            line(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss * 1024.0);
        }
        if let Some(size) = kib("VmSize:") {
            line(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", size * 1024.0);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let open = fds.count().saturating_sub(1);
        line(out, "process_open_fds", "gauge", "Open file descriptors.", open as f64);
    }
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        line(out, "process_max_fds", "gauge", "Most file descriptors the process may open (soft limit).", soft as f64);
    }
    line(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        started_unix_s,
    );
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_metrics_are_there_and_plausible() {
        let mut out = String::new();
        super::render(&mut out, 1.0);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
                .unwrap_or_else(|| panic!("no {name} in\n{out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
