//! What `/proc` tells about the processes measured and the machine: CPU time
//! (per thread for the bench's own process, so that the load generator's share
//! can be told apart from the in-process server's), peak resident memory
//! (`VmHWM`), and the machine's CPUs, memory and load average for the report.

use kinde_meter_store::SQLITE_WRITER_THREAD;
use serde::Serialize;

/// Thread name of the load generator's runtime (Linux keeps 15 characters).
pub const LOAD_THREAD_PREFIX: &str = "km-bench-load";

/// Thread name of the SQLite store's writer as Linux keeps it (15 bytes).
const WRITER_THREAD_PREFIX: &str = SQLITE_WRITER_THREAD.split_at(15).0;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
pub const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of this process so far, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct OwnCpu {
    /// The whole process.
    pub process: f64,
    /// The load generator's threads.
    pub load: f64,
    /// The SQLite writer thread (part of an in-process server's share).
    pub writer: f64,
    /// How long the SQLite writer thread was ready to run but waited for a
    /// CPU (`/proc/self/task/TID/schedstat`; 0 where the kernel keeps no
    /// schedstats). Not CPU time: the wall time a commit lost to the other
    /// threads on the machine's cores.
    pub writer_waiting: f64,
}

impl OwnCpu {
    /// CPU time of this process so far, split by thread name.
    pub fn now() -> Option<OwnCpu> {
        let process = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (_, process) = parse_stat(&process)?;
        let (mut load, mut writer, mut writer_waiting_ns) = (0, 0, 0);
        for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue; // the thread has just ended
            };
            match parse_stat(&stat) {
                Some((comm, ticks)) if comm.starts_with(LOAD_THREAD_PREFIX) => load += ticks,
                Some((comm, ticks)) if comm.starts_with(WRITER_THREAD_PREFIX) => {
                    writer += ticks;
                    writer_waiting_ns += std::fs::read_to_string(entry.path().join("schedstat"))
                        .ok()
                        .and_then(|s| parse_schedstat_waiting_ns(&s))
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
        Some(OwnCpu {
            process: process as f64 / USER_HZ,
            load: load as f64 / USER_HZ,
            writer: writer as f64 / USER_HZ,
            writer_waiting: writer_waiting_ns as f64 / 1e9,
        })
    }

    /// The CPU time spent between `earlier` and `self`.
    pub fn since(self, earlier: OwnCpu) -> OwnCpu {
        OwnCpu {
            process: self.process - earlier.process,
            load: self.load - earlier.load,
            writer: self.writer - earlier.writer,
            writer_waiting: self.writer_waiting - earlier.writer_waiting,
        }
    }
}

/// CPU time (user + system) of process `pid` so far, in seconds.
pub fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, ticks)| ticks as f64 / USER_HZ)
}

/// `(comm, utime + stime)` of a `/proc/…/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // After the comm: state is field 3; utime and stime are fields 14 and 15.
    let mut fields = stat[close + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The time a thread has waited on a run queue, in nanoseconds: the second
/// of the three fields of `/proc/…/task/TID/schedstat` (time on a CPU,
/// time waiting for one, times scheduled).
fn parse_schedstat_waiting_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size (`VmHWM`, KiB) of process `pid`, or of this process.
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    status_kib(&std::fs::read_to_string(path).ok()?, "VmHWM")
}

/// The value in KiB of a `Name:   1234 kB` line of `/proc/…/status` or
/// `/proc/meminfo`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// `MemTotal` of `/proc/meminfo`, KiB.
    pub memory_kib: Option<u64>,
    /// 1, 5 and 15 minute load averages when the bench started.
    pub load_average_at_start: Option<[f64; 3]>,
    /// The same when it ended.
    pub load_average_at_end: Option<[f64; 3]>,
}

impl Machine {
    /// This machine, now.
    pub fn now() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == "model name").then(|| value.trim().to_owned())
                })
            });
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| status_kib(&info, "MemTotal"));
        Machine {
            cpus: cpus(),
            cpu_model,
            memory_kib,
            load_average_at_start: load_average(),
            load_average_at_end: None,
        }
    }
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_and_comm_from_a_stat_line() {
        let line = "1234 (km-bench-load) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 4 0 99";
        assert_eq!(parse_stat(line), Some(("km-bench-load", 280)));
        // A comm with spaces and parentheses.
        let line = "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0";
        assert_eq!(parse_stat(line), Some(("a (b) c", 3)));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some());
        assert!(cpu_of(std::process::id()).is_some());
    }

    #[test]
    fn reads_the_run_queue_wait_from_a_schedstat_line() {
        assert_eq!(
            parse_schedstat_waiting_ns("1270000000 930000000 26948\n"),
            Some(930_000_000)
        );
        assert_eq!(parse_schedstat_waiting_ns("12 x 3"), None);
        assert_eq!(parse_schedstat_waiting_ns(""), None);
    }

    #[test]
    fn reads_peak_rss_and_memory_in_kib() {
        let status =
            "Name:\tkinde-meter\nVmPeak:\t  200000 kB\nVmHWM:\t   45312 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(45312));
        assert_eq!(status_kib(status, "VmRSS"), Some(40000));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert!(peak_rss_kib(None).is_some_and(|kib| kib > 0));
        assert!(peak_rss_kib(Some(std::process::id())).is_some_and(|kib| kib > 0));
        let machine = Machine::now();
        assert!(machine.memory_kib.is_some_and(|kib| kib > 0));
        assert!(machine.load_average_at_start.is_some());
    }
}
