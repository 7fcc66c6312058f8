//! Image prewarm (R2.5): when an endpoint is created or its image changes, every node of its
//! data center pulls the image ahead of need, so a worker start never waits on a pull. Pull
//! state and progress per node are kept here and shown by the API.
//!
//! In one-process mode every declared node shares the one container engine of this machine, so
//! one pull serves them all; its state is reported for each node of the data center.
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use sluice_core::{Millis, RegistryAuth, keys::Scope, placement::Node};
use sluice_runtime::{PullProgress, WorkerRuntime};

use crate::now;

/// Where an image stands on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullState {
    Pending,
    Pulling { done: u64, total: u64 },
    Ready,
    Failed(String),
}

impl PullState {
    pub fn name(&self) -> &'static str {
        match self {
            PullState::Pending => "pending",
            PullState::Pulling { .. } => "pulling",
            PullState::Ready => "ready",
            PullState::Failed(_) => "failed",
        }
    }
    fn in_flight(&self) -> bool {
        matches!(self, PullState::Pending | PullState::Pulling { .. })
    }
}

#[derive(Debug, Clone)]
pub struct ImageStatus {
    pub image: String,
    pub node: String,
    pub data_center: String,
    pub state: PullState,
    pub updated_at: Millis,
}

pub struct Images {
    runtime: Arc<dyn WorkerRuntime>,
    nodes: Vec<Node>,
    /// (image, node) → status.
    states: Mutex<HashMap<(String, String), ImageStatus>>,
    /// Image → the accounts that asked for it (an endpoint's image, or a prewarm): only they
    /// see it listed (an image name can reveal a private repository).
    owners: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Images {
    pub fn new(runtime: Arc<dyn WorkerRuntime>, nodes: Vec<Node>) -> Arc<Self> {
        Arc::new(Images { runtime, nodes, states: Mutex::new(HashMap::new()), owners: Mutex::default() })
    }

    fn set(&self, image: &str, nodes: &[(String, String)], state: PullState) {
        let mut st = self.states.lock().unwrap();
        let t = now();
        for (node, dc) in nodes {
            st.insert(
                (image.to_owned(), node.clone()),
                ImageStatus {
                    image: image.to_owned(),
                    node: node.clone(),
                    data_center: dc.clone(),
                    state: state.clone(),
                    updated_at: t,
                },
            );
        }
    }

    /// Starts pulling `image` on the nodes of `data_center` (all nodes when `None`), unless a
    /// pull is already under way there. Returns the statuses right after the request.
    pub fn prewarm(
        self: &Arc<Self>,
        account: &str,
        image: &str,
        auth: Option<RegistryAuth>,
        data_center: Option<&str>,
    ) -> Vec<ImageStatus> {
        self.owners.lock().unwrap().entry(image.to_owned()).or_default().insert(account.to_owned());
        let nodes: Vec<(String, String)> = self
            .nodes
            .iter()
            .filter(|n| data_center.is_none_or(|dc| n.data_center == dc))
            .map(|n| (n.name.clone(), n.data_center.clone()))
            .collect();
        let busy = {
            let st = self.states.lock().unwrap();
            nodes.iter().any(|(n, _)| st.get(&(image.to_owned(), n.clone())).is_some_and(|s| s.state.in_flight()))
        };
        if !busy && !nodes.is_empty() {
            self.set(image, &nodes, PullState::Pending);
            let me = self.clone();
            let image = image.to_owned();
            tokio::spawn(async move {
                let result = match me.runtime.has_image(&image).await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        me.set(&image, &nodes, PullState::Pulling { done: 0, total: 0 });
                        let progress = {
                            let me = me.clone();
                            let image = image.clone();
                            let nodes = nodes.clone();
                            Box::new(move |p: PullProgress| {
                                me.set(&image, &nodes, PullState::Pulling { done: p.bytes_done, total: p.bytes_total })
                            })
                        };
                        me.runtime.pull_image(&image, auth.as_ref(), progress).await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        tracing::info!(%image, "image ready");
                        me.set(&image, &nodes, PullState::Ready);
                    }
                    Err(e) => {
                        tracing::warn!(%image, error = %e, "image pull failed");
                        me.set(&image, &nodes, PullState::Failed(e.to_string()));
                    }
                }
            });
        }
        self.status(image, data_center)
    }

    /// The statuses of `image` on the nodes of `data_center` (all when `None`).
    pub fn status(&self, image: &str, data_center: Option<&str>) -> Vec<ImageStatus> {
        let st = self.states.lock().unwrap();
        let mut v: Vec<ImageStatus> = st
            .values()
            .filter(|s| s.image == image && data_center.is_none_or(|dc| s.data_center == dc))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// The images `scope` sees, on every node.
    pub fn list(&self, scope: &Scope) -> Vec<ImageStatus> {
        let owners = self.owners.lock().unwrap();
        let visible = |image: &str| owners.get(image).is_some_and(|o| o.iter().any(|a| scope.admits(a)));
        let st = self.states.lock().unwrap();
        let mut v: Vec<ImageStatus> = st.values().filter(|s| visible(&s.image)).cloned().collect();
        v.sort_by(|a, b| (&a.image, &a.node).cmp(&(&b.image, &b.node)));
        v
    }
}
