//! The `throughput` policy, tailsift's addition to the collector syntax: keep
//! about `goal_traces_per_second` traces in total, spread over keys built
//! from attributes, like Refinery's EMA throughput sampler. Per key it counts
//! traces per `adjust_interval`, keeps an exponential moving average of the
//! counts, and gives keys below their fair share rate 1 (keep all) and the
//! rest an equal share of what is left. Decisions hash the trace ID against
//! the key's rate, so a replay under the same rates decides the same way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::probabilistic_hash;
use super::rate::lock;
use crate::model::TraceId;

/// Keys whose average fell below this many traces per interval are forgotten.
const FORGET_BELOW: f64 = 0.01;
/// Joins the values of several key attributes.
const KEY_SEPARATOR: char = '\u{1f}';

pub(crate) struct Throughput {
    /// Hash salt: the policy name, so two throughput policies are independent.
    salt: Box<str>,
    /// Where this policy's key attribute values sit in the trace state.
    slots: Box<[usize]>,
    goal_per_interval: f64,
    interval: Duration,
    weight: f64,
    max_keys: usize,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    next_adjust: Option<Instant>,
    known: HashMap<Box<str>, KeyStats>,
    /// Traces whose key arrived after `max_keys` were known.
    overflow: KeyStats,
}

#[derive(Default)]
struct KeyStats {
    count: u64,
    ema: f64,
    averaged: bool,
    /// 0 until the first adjustment: keep all.
    rate: f64,
}

impl KeyStats {
    fn update_average(&mut self, weight: f64) {
        let count = self.count as f64;
        // Seed with the first full count instead of decaying from zero.
        self.ema = if self.averaged {
            weight * count + (1.0 - weight) * self.ema
        } else {
            count
        };
        self.averaged = true;
        self.count = 0;
    }
}

pub(crate) struct ThroughputSettings {
    pub goal_traces_per_second: f64,
    pub interval: Duration,
    pub weight: f64,
    pub max_keys: usize,
}

impl Throughput {
    pub(crate) fn new(name: &str, slots: Vec<usize>, s: ThroughputSettings) -> Self {
        Self {
            salt: name.into(),
            slots: slots.into_boxed_slice(),
            goal_per_interval: s.goal_traces_per_second * s.interval.as_secs_f64(),
            interval: s.interval,
            weight: s.weight,
            max_keys: s.max_keys,
            keys: Mutex::new(Keys::default()),
        }
    }

    /// Counts the trace under its key and returns the key's rate if sampled.
    pub(crate) fn decide(
        &self,
        trace_id: &TraceId,
        captured: &[Option<Box<str>>],
        now: Instant,
    ) -> Option<f64> {
        let key = self.key(captured);
        let rate = {
            let mut keys = lock(&self.keys);
            self.maybe_adjust(&mut keys, now);
            let stats = self.stats(&mut keys, &key);
            stats.count += 1;
            stats.rate.max(1.0)
        };
        let threshold = (u64::MAX as f64 / rate) as u64;
        (probabilistic_hash(&self.salt, trace_id) <= threshold).then_some(rate)
    }

    fn key<'a>(&self, captured: &'a [Option<Box<str>>]) -> Cow<'a, str> {
        let value = |slot: usize| captured.get(slot).and_then(Option::as_deref).unwrap_or("");
        match *self.slots {
            [one] => Cow::Borrowed(value(one)),
            _ => {
                let mut key = String::new();
                for (i, &slot) in self.slots.iter().enumerate() {
                    if i > 0 {
                        key.push(KEY_SEPARATOR);
                    }
                    key.push_str(value(slot));
                }
                Cow::Owned(key)
            }
        }
    }

    fn stats<'k>(&self, keys: &'k mut Keys, key: &str) -> &'k mut KeyStats {
        if !keys.known.contains_key(key) && keys.known.len() >= self.max_keys {
            return &mut keys.overflow;
        }
        keys.known.entry(key.into()).or_default()
    }

    fn maybe_adjust(&self, keys: &mut Keys, now: Instant) {
        match keys.next_adjust {
            Some(at) if now < at => return,
            Some(_) => self.adjust(keys),
            // The first interval only counts.
            None => {}
        }
        keys.next_adjust = Some(now + self.interval);
    }

    /// Folds this interval's counts into the averages and recomputes rates.
    fn adjust(&self, keys: &mut Keys) {
        for stats in keys.known.values_mut() {
            stats.update_average(self.weight);
        }
        keys.overflow.update_average(self.weight);
        keys.known.retain(|_, s| s.ema >= FORGET_BELOW);

        let mut all: Vec<&mut KeyStats> = keys.known.values_mut().collect();
        all.push(&mut keys.overflow);
        all.sort_by(|a, b| a.ema.total_cmp(&b.ema));
        self.allocate(&mut all);
    }

    /// Water-filling: in ascending order of traffic, a key below the fair
    /// share of the remaining goal keeps everything; the others split what
    /// remains equally, so rare keys get rate 1 and busy keys high rates.
    fn allocate(&self, ascending: &mut [&mut KeyStats]) {
        let mut remaining = self.goal_per_interval;
        let n = ascending.len();
        for (i, stats) in ascending.iter_mut().enumerate() {
            let share = remaining / (n - i) as f64;
            if stats.ema <= share {
                stats.rate = 1.0;
                remaining -= stats.ema;
            } else {
                stats.rate = stats.ema / share;
                remaining -= share;
            }
        }
    }
}
