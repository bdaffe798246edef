//! Time windows of keyed accumulators, shared by the RED and network
//! aggregators.
//!
//! Records go into the 1 s window of their timestamp. When a 1 s window is
//! complete it is emitted and its rows are folded into the 1 min window
//! that contains it, so each record is hashed once, not once per
//! granularity. A record too late for its 1 s window but not for its
//! minute goes straight into the minute window; later still, it is dropped
//! and counted.
//!
//! A window `[t, t + w)` is complete once `now >= t + w + lateness`.
//! Memory is bounded by the number of open windows and the number of keys
//! (per window and in total); keys beyond the bound count into one
//! overflow key per window. A RED key costs about 2.3 KiB (its histogram
//! is 2 KiB) plus its strings, a network key about 250 bytes: the default
//! `max_live_keys` of 200 000 bounds RED memory near 500 MiB; hosts with
//! less to spare should lower it.

use std::collections::VecDeque;
use std::hash::Hash;

use hashbrown::hash_map::RawEntryMut;
use hashbrown::{Equivalent, HashMap};

use crate::records::Granularity;

const US: u64 = 1_000_000;

/// Bounds and timing of an aggregator.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    /// Distinct keys in one window; more go to the overflow key.
    pub max_keys_per_window: usize,
    /// Distinct keys over all open windows (the memory bound).
    pub max_live_keys: usize,
    /// How long after its end a 1 s window still accepts records.
    pub second_lateness_us: u64,
    /// How long after its end a 1 min window still accepts records
    /// (raised to at least `second_lateness_us`, so every 1 s window is
    /// folded in before its minute closes).
    pub minute_lateness_us: u64,
    /// Open 1 s windows at once; records needing another are dropped.
    pub max_second_windows: usize,
    /// Open 1 min windows at once.
    pub max_minute_windows: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            max_keys_per_window: 100_000,
            max_live_keys: 200_000,
            second_lateness_us: 2 * US,
            minute_lateness_us: 10 * US,
            max_second_windows: 16,
            max_minute_windows: 4,
        }
    }
}

/// Counters of an aggregator; everything not aggregated is counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WindowStats {
    /// Records offered to `observe`.
    pub observed: u64,
    /// Records whose windows (1 s and 1 min) were already emitted.
    pub late_dropped: u64,
    /// Records dropped because too many windows were open (timestamps far
    /// in the future, or `flush` not called).
    pub window_dropped: u64,
    /// Records (or folded 1 s rows) counted into an overflow key.
    pub overflowed: u64,
    /// Rows emitted by `flush` / `flush_all`.
    pub rows_emitted: u64,
    /// Keys held in open windows now.
    pub live_keys: u64,
}

/// A key with a distinguished overflow value.
pub(crate) trait WindowKey: Hash + Eq {
    fn overflow() -> Self;
}

/// An accumulator that can absorb another of its kind.
pub(crate) trait WindowValue: Default {
    fn merge_from(&mut self, other: &Self);
}

struct Window<K, V> {
    start_s: u64,
    table: HashMap<K, V>,
    /// Kept apart from the table so it never takes one of the bounded slots.
    overflow: Option<V>,
}

struct Level<K, V> {
    width_s: u64,
    lateness_us: u64,
    max_windows: usize,
    /// Every window starting before this has been emitted.
    done_until_s: u64,
    /// Open windows, ascending by start.
    windows: VecDeque<Window<K, V>>,
}

impl<K, V> Level<K, V> {
    fn new(width_s: u64, lateness_us: u64, max_windows: usize) -> Self {
        Level { width_s, lateness_us, max_windows, done_until_s: 0, windows: VecDeque::new() }
    }

    /// The open window starting at `start_s`, created if there is room.
    fn window(&mut self, start_s: u64) -> Option<&mut Window<K, V>> {
        // Recent windows are at the back; records mostly hit the newest.
        let pos = self.windows.iter().rposition(|w| w.start_s <= start_s);
        match pos {
            Some(p) if self.windows[p].start_s == start_s => return Some(&mut self.windows[p]),
            _ => {}
        }
        if self.windows.len() >= self.max_windows {
            return None;
        }
        let at = pos.map_or(0, |p| p + 1);
        self.windows.insert(at, Window { start_s, table: HashMap::new(), overflow: None });
        Some(&mut self.windows[at])
    }

    /// Mark every window complete at `now_us` as done.
    fn advance(&mut self, now_us: u64) {
        let d = now_us.saturating_sub(self.lateness_us) / US;
        self.done_until_s = self.done_until_s.max(d / self.width_s * self.width_s);
    }

    fn pop_done(&mut self) -> Option<Window<K, V>> {
        if self.windows.front().is_some_and(|w| w.start_s < self.done_until_s) {
            self.windows.pop_front()
        } else {
            None
        }
    }
}

pub(crate) struct Windows<K, V> {
    max_keys_per_window: usize,
    max_live_keys: usize,
    second: Level<K, V>,
    minute: Level<K, V>,
    stats: WindowStats,
}

impl<K: WindowKey, V: WindowValue> Windows<K, V> {
    pub fn new(cfg: &WindowConfig) -> Self {
        Windows {
            max_keys_per_window: cfg.max_keys_per_window.max(1),
            max_live_keys: cfg.max_live_keys.max(1),
            second: Level::new(1, cfg.second_lateness_us, cfg.max_second_windows.max(1)),
            minute: Level::new(
                60,
                cfg.minute_lateness_us.max(cfg.second_lateness_us),
                cfg.max_minute_windows.max(1),
            ),
            stats: WindowStats::default(),
        }
    }

    pub fn stats(&self) -> WindowStats {
        self.stats
    }

    /// The accumulator of `key` in the window of `t_us`, or None if the
    /// record is dropped (counted). `to_owned` runs only for a key new to
    /// the window.
    pub fn slot<Q>(&mut self, t_us: u64, key: &Q, to_owned: impl FnOnce(&Q) -> K) -> Option<&mut V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.stats.observed += 1;
        let s = t_us / US;
        let level = if s >= self.second.done_until_s {
            &mut self.second
        } else if s / 60 * 60 >= self.minute.done_until_s {
            &mut self.minute
        } else {
            self.stats.late_dropped += 1;
            return None;
        };
        let start = s / level.width_s * level.width_s;
        let Some(win) = level.window(start) else {
            self.stats.window_dropped += 1;
            return None;
        };
        let full = win.table.len() >= self.max_keys_per_window
            || self.stats.live_keys >= self.max_live_keys as u64;
        if full && !win.table.contains_key(key) {
            self.stats.overflowed += 1;
            return Some(overflow_slot(&mut win.overflow, &mut self.stats));
        }
        Some(match win.table.raw_entry_mut().from_key(key) {
            RawEntryMut::Occupied(o) => o.into_mut(),
            RawEntryMut::Vacant(v) => {
                self.stats.live_keys += 1;
                v.insert(to_owned(key), V::default()).1
            }
        })
    }

    /// Emit every complete window as `emit(window_start_s, granularity, key,
    /// value)`: 1 s windows first (each folded into its minute), then minutes.
    pub fn flush(&mut self, now_us: u64, emit: &mut impl FnMut(u64, Granularity, &K, &V)) {
        self.second.advance(now_us);
        while let Some(w) = self.second.pop_done() {
            self.stats.live_keys -= w.table.len() as u64 + u64::from(w.overflow.is_some());
            let minute_start = w.start_s / 60 * 60;
            for (k, v) in w.table {
                emit(w.start_s, Granularity::Second, &k, &v);
                self.stats.rows_emitted += 1;
                self.fold_into_minute(minute_start, Some(k), v);
            }
            if let Some(v) = w.overflow {
                emit(w.start_s, Granularity::Second, &K::overflow(), &v);
                self.stats.rows_emitted += 1;
                self.fold_into_minute(minute_start, None, v);
            }
        }
        // Only now: the seconds just folded may belong to a minute completing too.
        self.minute.advance(now_us);
        while let Some(w) = self.minute.pop_done() {
            self.stats.live_keys -= w.table.len() as u64 + u64::from(w.overflow.is_some());
            for (k, v) in &w.table {
                emit(w.start_s, Granularity::Minute, k, v);
                self.stats.rows_emitted += 1;
            }
            if let Some(v) = &w.overflow {
                emit(w.start_s, Granularity::Minute, &K::overflow(), v);
                self.stats.rows_emitted += 1;
            }
        }
    }

    /// Emit everything still open (at shutdown).
    pub fn flush_all(&mut self, emit: &mut impl FnMut(u64, Granularity, &K, &V)) {
        self.flush(u64::MAX, emit);
    }

    /// Fold a 1 s row into its minute; `k` is None for the overflow row.
    fn fold_into_minute(&mut self, start_s: u64, k: Option<K>, v: V) {
        if start_s < self.minute.done_until_s {
            // Only with a minute lateness shorter than the seconds'; guarded in new().
            self.stats.late_dropped += 1;
            return;
        }
        let Some(win) = self.minute.window(start_s) else {
            self.stats.window_dropped += 1;
            return;
        };
        let Some(k) = k else {
            overflow_slot(&mut win.overflow, &mut self.stats).merge_from(&v);
            return;
        };
        if let Some(acc) = win.table.get_mut(&k) {
            acc.merge_from(&v);
            return;
        }
        if win.table.len() >= self.max_keys_per_window
            || self.stats.live_keys >= self.max_live_keys as u64
        {
            self.stats.overflowed += 1;
            overflow_slot(&mut win.overflow, &mut self.stats).merge_from(&v);
            return;
        }
        self.stats.live_keys += 1;
        win.table.insert(k, v);
    }
}

fn overflow_slot<'a, V: WindowValue>(
    slot: &'a mut Option<V>,
    stats: &mut WindowStats,
) -> &'a mut V {
    slot.get_or_insert_with(|| {
        stats.live_keys += 1;
        V::default()
    })
}
