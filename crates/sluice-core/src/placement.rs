//! GPU placement (R2.1, R2.2): each worker gets whole GPUs of its endpoint's type on one node.
//! Pure: the caller passes the inventory and what is already allocated.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub gpu_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub data_center: String,
    pub gpus: Vec<Gpu>,
}

/// A placement: a node and the GPU indices on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub node: String,
    pub gpus: Vec<u32>,
}

/// Chooses a node for a worker that needs `count` GPUs of `gpu_type` in `data_center`, given
/// the allocations of the other live workers. Among nodes that fit, picks the one with the fewest
/// free GPUs of that type (best fit keeps large blocks free for large workers), then by name.
/// On failure returns the reason the worker stays pending.
pub fn place(
    nodes: &[Node],
    allocated: &[Allocation],
    data_center: &str,
    gpu_type: &str,
    count: u32,
) -> Result<Allocation, String> {
    let mut best: Option<(usize, &Node, Vec<u32>)> = None;
    let mut most_free = 0usize;
    let mut any_node = false;
    for node in nodes.iter().filter(|n| n.data_center == data_center) {
        let free: Vec<u32> = node
            .gpus
            .iter()
            .filter(|g| g.gpu_type == gpu_type)
            .map(|g| g.index)
            .filter(|i| !allocated.iter().any(|a| a.node == node.name && a.gpus.contains(i)))
            .collect();
        if node.gpus.iter().any(|g| g.gpu_type == gpu_type) {
            any_node = true;
        }
        most_free = most_free.max(free.len());
        if free.len() >= count as usize {
            let better = match &best {
                None => true,
                Some((n, b, _)) => free.len() < *n || (free.len() == *n && node.name < b.name),
            };
            if better {
                best = Some((free.len(), node, free));
            }
        }
    }
    match best {
        Some((_, node, mut free)) => {
            free.sort_unstable();
            free.truncate(count as usize);
            Ok(Allocation { node: node.name.clone(), gpus: free })
        }
        None if !any_node => Err(format!("no node in data center {data_center:?} has GPUs of type {gpu_type}")),
        None => Err(format!(
            "waiting for {count} free {gpu_type} GPU(s) on one node in {data_center:?}; at most {most_free} free on any node"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, dc: &str, gpus: &[(&str, u32)]) -> Node {
        let mut v = Vec::new();
        for (t, n) in gpus {
            for _ in 0..*n {
                v.push(Gpu { index: v.len() as u32, gpu_type: (*t).into() });
            }
        }
        Node { name: name.into(), data_center: dc.into(), gpus: v }
    }

    fn alloc(node: &str, gpus: &[u32]) -> Allocation {
        Allocation { node: node.into(), gpus: gpus.to_vec() }
    }

    #[test]
    fn whole_gpus_never_shared() {
        let nodes = [node("n1", "local", &[("SIM", 8)])];
        let mut taken = Vec::new();
        for _ in 0..4 {
            let a = place(&nodes, &taken, "local", "SIM", 2).unwrap();
            assert_eq!(a.gpus.len(), 2);
            assert!(taken.iter().all(|t: &Allocation| t.gpus.iter().all(|g| !a.gpus.contains(g))));
            taken.push(a);
        }
        let err = place(&nodes, &taken, "local", "SIM", 1).unwrap_err();
        assert!(err.contains("at most 0 free"), "{err}");
    }

    #[test]
    fn best_fit_and_type_and_dc() {
        let nodes = [
            node("big", "local", &[("A100", 8)]),
            node("small", "local", &[("A100", 2), ("SIM", 2)]),
            node("far", "eu", &[("A100", 8)]),
        ];
        assert_eq!(place(&nodes, &[], "local", "A100", 2).unwrap(), alloc("small", &[0, 1]));
        assert_eq!(place(&nodes, &[], "local", "A100", 3).unwrap().node, "big");
        assert_eq!(place(&nodes, &[], "local", "SIM", 2).unwrap(), alloc("small", &[2, 3]));
        assert_eq!(place(&nodes, &[], "eu", "A100", 8).unwrap().node, "far");
        let e = place(&nodes, &[], "eu", "SIM", 1).unwrap_err();
        assert!(e.contains("no node"), "{e}");
        let e = place(&nodes, &[], "local", "A100", 9).unwrap_err();
        assert!(e.contains("at most 8 free"), "{e}");
        // Allocations on one node do not block the same indices elsewhere.
        assert_eq!(place(&nodes, &[alloc("small", &[0, 1])], "local", "A100", 2).unwrap().node, "big");
    }
}
