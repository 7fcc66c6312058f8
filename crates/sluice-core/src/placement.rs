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
    Placer::new(nodes, allocated).place(data_center, gpu_type, count)
}

/// [`place`] for many workers in a row: the free GPUs are indexed once, and each placement
/// takes its GPUs out of the index, so placing a burst costs O(nodes) per worker rather than
/// O(nodes × GPUs × allocations).
pub struct Placer {
    nodes: Vec<NodeFree>,
}

struct NodeFree {
    name: String,
    data_center: String,
    /// Every GPU type the node has, free or not.
    types: std::collections::HashSet<String>,
    /// Free GPU indices by type, ascending.
    free: std::collections::HashMap<String, Vec<u32>>,
    /// The type of each GPU index.
    type_of: std::collections::HashMap<u32, String>,
}

impl Placer {
    pub fn new(nodes: &[Node], allocated: &[Allocation]) -> Placer {
        let mut used: std::collections::HashMap<&str, std::collections::HashSet<u32>> = Default::default();
        for a in allocated {
            used.entry(a.node.as_str()).or_default().extend(a.gpus.iter().copied());
        }
        let nodes = nodes
            .iter()
            .map(|n| {
                let taken = used.get(n.name.as_str());
                let mut free: std::collections::HashMap<String, Vec<u32>> = Default::default();
                for g in &n.gpus {
                    let list = free.entry(g.gpu_type.clone()).or_default();
                    if !taken.is_some_and(|t| t.contains(&g.index)) {
                        list.push(g.index);
                    }
                }
                for v in free.values_mut() {
                    v.sort_unstable();
                }
                NodeFree {
                    name: n.name.clone(),
                    data_center: n.data_center.clone(),
                    types: free.keys().cloned().collect(),
                    free,
                    type_of: n.gpus.iter().map(|g| (g.index, g.gpu_type.clone())).collect(),
                }
            })
            .collect();
        Placer { nodes }
    }

    /// Gives an allocation's GPUs back (a worker that holds them is being stopped).
    pub fn release(&mut self, a: &Allocation) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.name == a.node) else { return };
        for g in &a.gpus {
            let Some(t) = node.type_of.get(g) else { continue };
            let list = node.free.entry(t.clone()).or_default();
            if let Err(at) = list.binary_search(g) {
                list.insert(at, *g);
            }
        }
    }

    /// Takes an allocation's GPUs out of the free ones again (undoes [`Placer::release`]).
    pub fn reserve(&mut self, a: &Allocation) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.name == a.node) else { return };
        for g in &a.gpus {
            if let Some(list) = node.type_of.get(g).and_then(|t| node.free.get_mut(t)) {
                list.retain(|x| x != g);
            }
        }
    }

    /// Whether a worker of this shape would be placed now (nothing is taken).
    pub fn fits(&self, data_center: &str, gpu_type: &str, count: u32) -> bool {
        self.nodes
            .iter()
            .any(|n| n.data_center == data_center && n.free.get(gpu_type).map_or(0, Vec::len) >= count as usize)
    }

    /// Places one worker and takes its GPUs out of the free ones.
    pub fn place(&mut self, data_center: &str, gpu_type: &str, count: u32) -> Result<Allocation, String> {
        let mut best: Option<(usize, usize)> = None;
        let mut most_free = 0usize;
        let mut any_node = false;
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.data_center == data_center) {
            any_node |= node.types.contains(gpu_type);
            let n = node.free.get(gpu_type).map_or(0, Vec::len);
            most_free = most_free.max(n);
            if n >= count as usize {
                let better = match best {
                    None => true,
                    Some((bn, bi)) => n < bn || (n == bn && node.name < self.nodes[bi].name),
                };
                if better {
                    best = Some((n, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                let node = &mut self.nodes[i];
                let gpus: Vec<u32> =
                    node.free.get_mut(gpu_type).map(|v| v.drain(..count as usize).collect()).unwrap_or_default();
                Ok(Allocation { node: node.name.clone(), gpus })
            }
            None if !any_node => Err(format!("no node in data center {data_center:?} has GPUs of type {gpu_type}")),
            None => Err(format!(
                "waiting for {count} free {gpu_type} GPU(s) on one node in {data_center:?}; at most {most_free} free on any node"
            )),
        }
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

    #[test]
    fn a_placer_places_a_burst_like_one_placement_at_a_time() {
        let nodes = [
            node("a", "local", &[("SIM", 4)]),
            node("b", "local", &[("SIM", 2), ("A100", 2)]),
            node("c", "local", &[("SIM", 8)]),
            node("d", "eu", &[("SIM", 8)]),
        ];
        let already = vec![alloc("c", &[0, 5])];
        let mut placer = Placer::new(&nodes, &already);
        let mut taken = already.clone();
        for (dc, ty, n) in [
            ("local", "SIM", 1),
            ("local", "SIM", 2),
            ("local", "A100", 1),
            ("local", "SIM", 3),
            ("eu", "SIM", 8),
            ("local", "SIM", 1),
            ("local", "SIM", 6),
            ("local", "A100", 2),
        ] {
            let one = place(&nodes, &taken, dc, ty, n);
            let burst = placer.place(dc, ty, n);
            assert_eq!(burst, one, "{dc} {ty} {n}");
            if let Ok(a) = one {
                taken.push(a);
            }
        }
    }
}
