//! The cost of the `prefix_aware` decision (issue 19), per request, for prompts of 1 KB, 32 KB
//! and 256 KB: find the prompt in the body, hash its first `LOOK_BYTES` in chained blocks, match
//! them against what each of 4 workers was sent (each remembering 16,384 blocks of other
//! conversations), choose under the load bound, and remember the blocks for the chosen worker.
//! What the gateway adds around it is copying the look out of the body's frames.
//!
//! `cargo bench -p sluice --bench routing` (prints p50 / p99 / max in µs per prompt size).
use sluice_core::affinity::{Candidate, REMEMBERED_BLOCKS, Recent, choose_prefix, matched, prompt_blocks};
use tokio::time::Instant;

fn body(kb: usize, conversation: u64) -> Vec<u8> {
    let mut b = br#"{"messages": [{"role": "system", "content": ""#.to_vec();
    let text: String = (0..kb * 64).map(|i| format!("c{conversation:06}w{i:08}")).collect();
    b.extend_from_slice(&text.as_bytes()[..kb * 1024]);
    b.extend_from_slice(br#""}], "model": "m", "stream": true}"#);
    b
}

fn main() {
    let mut workers: Vec<Recent> = (0..4).map(|_| Recent::default()).collect();
    // Fill each worker's memory with other conversations.
    for c in 0..400u64 {
        let blocks = prompt_blocks(&body(32, 10_000 + c));
        workers[(c % 4) as usize].remember(&blocks, REMEMBERED_BLOCKS);
    }
    println!("| prompt | decisions | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|");
    for kb in [1usize, 32, 256] {
        let bodies: Vec<Vec<u8>> = (0..64).map(|c| body(kb, c)).collect();
        let mut times = Vec::with_capacity(20_000);
        let mut load = [0u64; 4];
        for i in 0..20_000usize {
            let b = &bodies[i % bodies.len()];
            let t = Instant::now();
            let blocks = prompt_blocks(b);
            let cands: Vec<Candidate> = workers
                .iter()
                .zip(load)
                .map(|(w, o)| Candidate { matched: matched(&blocks, |h| w.contains(h)), outstanding: o })
                .collect();
            let start = blocks.last().map_or(0, |h| *h as usize);
            let chosen = choose_prefix(&cands, blocks.len(), u64::MAX, start).unwrap_or(0);
            workers[chosen].remember(&blocks, REMEMBERED_BLOCKS);
            times.push(t.elapsed().as_nanos() as u64);
            load[chosen] = (load[chosen] + 1) % 8;
        }
        times.sort_unstable();
        let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!("| {kb} KB | {} | {:.1} | {:.1} | {:.1} |", times.len(), q(0.5), q(0.99), q(1.0));
    }
}
