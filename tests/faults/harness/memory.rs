//! Resident memory of the instances, sampled on a thread of its own.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Samples VmRSS and VmHWM of watched processes every 100 ms on a thread of
/// its own, so a busy test task cannot miss a peak.
pub struct RssMonitor {
    state: Arc<Mutex<MonitorState>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct MonitorState {
    watched: HashMap<u32, String>,
    /// Per process name: highest VmRSS sampled and last VmHWM seen, KiB.
    peaks: BTreeMap<String, (u64, u64)>,
    /// Highest VmRSS sampled within the current window (see `window`).
    window_peak: u64,
}

impl RssMonitor {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                {
                    let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                    let watched: Vec<(u32, String)> =
                        g.watched.iter().map(|(p, n)| (*p, n.clone())).collect();
                    for (pid, name) in watched {
                        let Some((rss, hwm)) = vm_rss_hwm(pid) else {
                            continue;
                        };
                        g.window_peak = g.window_peak.max(rss);
                        let e = g.peaks.entry(name).or_default();
                        e.0 = e.0.max(rss);
                        e.1 = e.1.max(hwm);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { state, stop }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MonitorState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch(&self, pid: u32, name: String) {
        self.lock().watched.insert(pid, name);
    }

    /// Restarts the window peak (e.g. at the start of an outage).
    pub fn reset_window(&self) {
        self.lock().window_peak = 0;
    }

    /// Highest VmRSS sampled since `reset_window`, KiB.
    pub fn window_peak_kib(&self) -> u64 {
        self.lock().window_peak
    }

    /// Highest of VmRSS sampled and VmHWM over every watched process, KiB.
    pub fn peak_kib(&self) -> u64 {
        self.lock()
            .peaks
            .values()
            .map(|(r, h)| (*r).max(*h))
            .max()
            .unwrap_or(0)
    }

    pub fn peaks(&self) -> BTreeMap<String, (u64, u64)> {
        self.lock().peaks.clone()
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (VmRSS, VmHWM) in KiB from /proc/PID/status.
pub fn vm_rss_hwm(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Formats peaks for the log.
pub fn describe_peaks(m: &RssMonitor) -> String {
    let mut out = String::new();
    for (name, (rss, hwm)) in m.peaks() {
        let _ = write!(
            out,
            "{name}: max VmRSS {:.1} MiB, VmHWM {:.1} MiB; ",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    out
}
