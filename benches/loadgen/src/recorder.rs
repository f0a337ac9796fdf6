//! Latency recording shared by every reader task: a whole-run histogram and one histogram per
//! second of the run (for plots and per-step figures), sharded so that thousands of readers
//! do not contend on one lock, and in fixed memory however many connections there are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::report;

/// Lock shards; readers pick one by index.
const SHARDS: usize = 16;
/// Samples a reader buffers before taking its shard's lock.
const LOCAL_SAMPLES_MAX: usize = 512;
/// Significant digits of the per-second histograms (1 % resolution, ~20 KB each).
const SERIES_SIGFIG: u8 = 2;

struct Shard {
    total: Histogram<u64>,
    per_second: Vec<Histogram<u64>>,
}

pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    /// Deliveries recorded so far (for the progress bar).
    pub delivered: AtomicU64,
}

fn series_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, report::LATENCY_US_MAX, SERIES_SIGFIG)
        .expect("valid histogram bounds")
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        total: report::histogram(),
                        per_second: Vec::new(),
                    })
                })
                .collect(),
            delivered: AtomicU64::new(0),
        })
    }

    /// A buffer for one reader task.
    pub fn local(self: &Arc<Self>, reader: usize) -> LocalRecorder {
        LocalRecorder {
            recorder: self.clone(),
            shard: reader % SHARDS,
            samples: Vec::with_capacity(LOCAL_SAMPLES_MAX),
            group: None,
        }
    }

    /// A buffer for one reader task of a group (the subscribers of one server, say) whose
    /// deliveries are also counted in `group`.
    pub fn local_in(self: &Arc<Self>, reader: usize, group: Arc<AtomicU64>) -> LocalRecorder {
        let mut local = self.local(reader);
        local.group = Some(group);
        local
    }

    /// The whole run's latencies.
    pub fn total(&self) -> Histogram<u64> {
        let mut out = report::histogram();
        for s in &self.shards {
            out.add(&s.lock().expect("recorder lock").total)
                .expect("same bounds");
        }
        out
    }

    /// Latencies received in seconds `[from, to)` of the run.
    pub fn window(&self, from: usize, to: usize) -> Histogram<u64> {
        let mut out = series_histogram();
        for s in &self.shards {
            let s = s.lock().expect("recorder lock");
            for h in s.per_second.iter().take(to).skip(from) {
                out.add(h).expect("same bounds");
            }
        }
        out
    }

    /// Seconds of the run with at least one sample recorded so far, plus one.
    pub fn seconds(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("recorder lock").per_second.len())
            .max()
            .unwrap_or(0)
    }
}

/// A reader's buffer of `(second of the run, latency µs)`; flushed when full and on drop.
pub struct LocalRecorder {
    recorder: Arc<Recorder>,
    shard: usize,
    samples: Vec<(u32, u64)>,
    /// The reader's group's delivery count, when it has one.
    group: Option<Arc<AtomicU64>>,
}

impl LocalRecorder {
    /// Records a delivery sent at `sent_us` (µs since [`report::epoch`]), received now.
    pub fn record(&mut self, sent_us: u64) {
        let now = report::now_us();
        self.samples
            .push(((now / 1_000_000) as u32, now.saturating_sub(sent_us)));
        if self.samples.len() >= LOCAL_SAMPLES_MAX {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let mut shard = self.recorder.shards[self.shard]
            .lock()
            .expect("recorder lock");
        for &(second, latency) in &self.samples {
            let second = second as usize;
            if shard.per_second.len() <= second {
                shard.per_second.resize_with(second + 1, series_histogram);
            }
            let latency = latency.clamp(1, report::LATENCY_US_MAX);
            shard.total.saturating_record(latency);
            shard.per_second[second].saturating_record(latency);
        }
        let n = self.samples.len() as u64;
        self.recorder.delivered.fetch_add(n, Ordering::Relaxed);
        if let Some(group) = &self.group {
            group.fetch_add(n, Ordering::Relaxed);
        }
        self.samples.clear();
    }
}

impl Drop for LocalRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_from_many_readers_land_in_total_and_their_second() {
        let rec = Recorder::new();
        // Send times below are 1 ms before now: the run's clock must have passed 1 ms.
        report::epoch();
        std::thread::sleep(std::time::Duration::from_millis(5));
        for reader in 0..40 {
            let mut local = rec.local(reader);
            for _ in 0..100 {
                local.record(report::now_us().saturating_sub(1_000));
            }
        }
        assert_eq!(rec.total().len(), 4_000);
        assert_eq!(rec.delivered.load(Ordering::Relaxed), 4_000);
        let second = (report::now_us() / 1_000_000) as usize;
        assert_eq!(rec.window(0, second + 1).len(), 4_000);
        assert!(rec.total().value_at_quantile(0.5) >= 1_000);
    }

    /// Deliveries to the readers of a group (one server's subscribers) are counted apart.
    #[test]
    fn a_group_counts_only_its_own_readers_deliveries() {
        let rec = Recorder::new();
        report::epoch();
        let group = Arc::new(AtomicU64::new(0));
        for reader in 0..4 {
            let mut local = if reader % 2 == 0 {
                rec.local_in(reader, group.clone())
            } else {
                rec.local(reader)
            };
            for _ in 0..10 {
                local.record(report::now_us());
            }
        }
        assert_eq!(group.load(Ordering::Relaxed), 20);
        assert_eq!(rec.delivered.load(Ordering::Relaxed), 40);
    }
}
