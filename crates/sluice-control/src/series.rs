//! Each endpoint's load over the last hour (running and queued requests, ready workers),
//! sampled every 2 s by the reconciler, for the status page's graph (seed 002's "Num Running
//! Requests").
use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use sluice_api::LoadPoint;
use sluice_core::{EndpointId, Millis};

pub const STEP_MS: u64 = 2_000;
/// An hour of samples.
pub const KEEP: usize = 1_800;

#[derive(Debug, Default)]
pub struct Series(Mutex<HashMap<EndpointId, VecDeque<LoadPoint>>>);

impl Series {
    /// Records a sample unless the last one is less than a step old.
    pub fn record(&self, e: &EndpointId, t: Millis, running: u64, queued: u64, ready: u32) {
        let mut all = self.0.lock().unwrap();
        let s = all.entry(e.clone()).or_default();
        if s.back().is_some_and(|p| t.0.saturating_sub(p.t) < STEP_MS) {
            return;
        }
        if s.len() == KEEP {
            s.pop_front();
        }
        s.push_back(LoadPoint { t: t.0, running, queued, ready });
    }

    pub fn get(&self, e: &EndpointId) -> Vec<LoadPoint> {
        self.0.lock().unwrap().get(e).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Drops the series of endpoints that no longer exist.
    pub fn retain(&self, keep: impl Fn(&EndpointId) -> bool) {
        self.0.lock().unwrap().retain(|e, _| keep(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_once_a_step_and_keeps_an_hour() {
        let s = Series::default();
        let e = EndpointId::parse("ep").unwrap();
        s.record(&e, Millis(0), 1, 0, 1);
        s.record(&e, Millis(1_000), 9, 9, 9);
        s.record(&e, Millis(2_000), 2, 1, 1);
        assert_eq!(s.get(&e).iter().map(|p| p.running).collect::<Vec<_>>(), vec![1, 2]);
        for i in 0..KEEP as u64 + 10 {
            s.record(&e, Millis(4_000 + i * STEP_MS), i, 0, 1);
        }
        let v = s.get(&e);
        assert_eq!(v.len(), KEEP);
        assert_eq!(v.last().unwrap().running, KEEP as u64 + 9);
        s.retain(|_| false);
        assert!(s.get(&e).is_empty());
    }
}
