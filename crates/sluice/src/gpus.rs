//! The GPU inventory: real NVIDIA GPUs found through NVML (cargo feature `nvml`), else the
//! simulated inventory declared in the config. Matching a device name to the catalog is pure
//! and unit-tested; only [`discover`] touches the driver.
use crate::config::{Config, GpuGroup};

/// A GPU the driver reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub index: u32,
    /// The driver's name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    pub memory_mib: u64,
}

/// Asks NVML for this machine's GPUs. `Err` says why there are none to use (no driver, no
/// devices, or a build without the feature); the caller falls back to the declared inventory.
#[cfg(feature = "nvml")]
pub fn discover() -> Result<Vec<Discovered>, String> {
    use nvml_wrapper::Nvml;
    let nvml = Nvml::init().map_err(|e| format!("NVML is not available: {e}"))?;
    let n = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
    let mut out = Vec::new();
    for i in 0..n {
        let d = nvml.device_by_index(i).map_err(|e| format!("NVML device {i}: {e}"))?;
        let name = d.name().map_err(|e| format!("NVML device {i} name: {e}"))?;
        let memory_mib = d.memory_info().map(|m| m.total / (1024 * 1024)).unwrap_or(0);
        out.push(Discovered { index: i, name, memory_mib });
    }
    if out.is_empty() {
        return Err("NVML found no GPU".into());
    }
    Ok(out)
}

/// Reads every GPU's utilization from NVML once a second into `into`, keyed by (`node`, GPU
/// index), for as long as the process runs (a thread of its own: NVML calls block).
#[cfg(feature = "nvml")]
pub fn sample_utilization(node: String, into: sluice_control::GpuUtil) {
    use nvml_wrapper::Nvml;
    let spawned = std::thread::Builder::new().name("sluice-nvml".into()).spawn(move || {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => return tracing::warn!(error = %e, "NVML unavailable: no GPU utilization"),
        };
        loop {
            let mut now = std::collections::HashMap::new();
            let n = nvml.device_count().unwrap_or(0);
            for i in 0..n {
                if let Ok(u) = nvml.device_by_index(i).and_then(|d| d.utilization_rates()) {
                    now.insert((node.clone(), i), u.gpu);
                }
            }
            into.store(std::sync::Arc::new(now));
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the GPU utilization sampler");
    }
}

/// Without NVML there is nothing to sample.
#[cfg(not(feature = "nvml"))]
pub fn sample_utilization(_node: String, _into: sluice_control::GpuUtil) {}

#[cfg(not(feature = "nvml"))]
pub fn discover() -> Result<Vec<Discovered>, String> {
    Err("built without the `nvml` feature (cargo build --features nvml)".into())
}

/// The catalog type a device name belongs to: the catalog entry that appears in the name as a
/// whole word ("NVIDIA H100 80GB HBM3" → H100; "NVIDIA L40S" is not an L40). Longest match wins.
pub fn catalog_type(name: &str, catalog: &[String]) -> Option<String> {
    let words: Vec<String> = name.split(|c: char| !c.is_ascii_alphanumeric()).map(str::to_ascii_uppercase).collect();
    catalog.iter().filter(|t| words.iter().any(|w| *w == t.to_ascii_uppercase())).max_by_key(|t| t.len()).cloned()
}

/// The type name for a device outside the catalog: its name without the vendor prefix and
/// spaces ("NVIDIA RTX 6000 Ada Generation" → "RTX-6000-ADA-GENERATION").
fn own_type(name: &str) -> String {
    let s = name.trim().trim_start_matches("NVIDIA").trim();
    s.split_whitespace().collect::<Vec<_>>().join("-").to_ascii_uppercase()
}

/// Replaces the first node's declared GPUs with the discovered ones (this machine is that
/// node), adding types that are not in the catalog. Returns the types, in device order.
pub fn apply(cfg: &mut Config, found: &[Discovered]) -> Vec<String> {
    let types: Vec<String> =
        found.iter().map(|d| catalog_type(&d.name, &cfg.gpu_types).unwrap_or_else(|| own_type(&d.name))).collect();
    for t in &types {
        if !cfg.gpu_types.contains(t) {
            cfg.gpu_types.push(t.clone());
        }
    }
    if let Some(node) = cfg.nodes.first_mut() {
        // Devices in index order, one group per run of the same type, so that placement's
        // indices are the driver's.
        let mut groups: Vec<GpuGroup> = Vec::new();
        for t in &types {
            match groups.last_mut() {
                Some(g) if &g.gpu_type == t => g.count += 1,
                _ => groups.push(GpuGroup { gpu_type: t.clone(), count: 1 }),
            }
        }
        node.gpus = groups;
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<String> {
        ["SIM", "L40", "A40", "A100", "H100"].map(String::from).to_vec()
    }

    #[test]
    fn device_names_map_to_catalog_types() {
        let c = catalog();
        assert_eq!(catalog_type("NVIDIA H100 80GB HBM3", &c).as_deref(), Some("H100"));
        assert_eq!(catalog_type("NVIDIA A100-SXM4-80GB", &c).as_deref(), Some("A100"));
        assert_eq!(catalog_type("NVIDIA A40", &c).as_deref(), Some("A40"));
        assert_eq!(catalog_type("NVIDIA L40", &c).as_deref(), Some("L40"));
        assert_eq!(catalog_type("NVIDIA L40S", &c), None, "an L40S is not an L40");
        assert_eq!(catalog_type("NVIDIA H200", &c), None);
        assert_eq!(own_type("NVIDIA RTX 6000 Ada Generation"), "RTX-6000-ADA-GENERATION");
    }

    #[test]
    fn discovered_gpus_replace_the_first_node_in_index_order() {
        let mut cfg = Config::default();
        let d = |i: u32, n: &str| Discovered { index: i, name: n.into(), memory_mib: 81_559 };
        let types =
            apply(&mut cfg, &[d(0, "NVIDIA H100 80GB HBM3"), d(1, "NVIDIA H100 80GB HBM3"), d(2, "NVIDIA L40S")]);
        assert_eq!(types, ["H100", "H100", "L40S"]);
        assert!(cfg.gpu_types.contains(&"L40S".to_owned()));
        let inv = cfg.inventory();
        let gpus: Vec<(u32, &str)> = inv[0].gpus.iter().map(|g| (g.index, g.gpu_type.as_str())).collect();
        assert_eq!(gpus, [(0, "H100"), (1, "H100"), (2, "L40S")]);
        cfg.check().unwrap();
    }
}
