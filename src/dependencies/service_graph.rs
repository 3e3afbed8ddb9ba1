//! The service graph as Prometheus series, in the OpenTelemetry
//! servicegraph connector's naming that Grafana's node graph reads:
//! `traces_service_graph_request_total`, `…_request_failed_total` and the
//! `…_request_server_seconds` / `…_request_client_seconds` histograms, by
//! `client` and `server` service. As in the connector, an edge is a call
//! from one service to another: same-service parent links (which Jaeger's
//! dependency links do count) are left out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::graph::{Edge, Services};
use crate::series::{self, Bounds, Cell, Exposition};

/// The connector's default latency buckets, in seconds.
pub const DEFAULT_BUCKETS_S: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];
const FAMILY: &str = "traces_service_graph_request";

#[derive(Clone, Debug)]
struct Calls {
    total: u64,
    failed: u64,
    server: Cell,
    client: Cell,
}

impl Calls {
    fn new(bounds: &Bounds) -> Self {
        Self {
            total: 0,
            failed: 0,
            server: Cell::new(bounds),
            client: Cell::new(bounds),
        }
    }

    fn merge(&mut self, other: &Calls) {
        self.total += other.total;
        self.failed += other.failed;
        self.server.merge(&other.server);
        self.client.merge(&other.client);
    }
}

type Edges = HashMap<(Arc<str>, Arc<str>), Calls>;
/// A partition's calls by (client, server) service number: looked up per
/// call, so with the fast hash (the numbers are the partition's own).
type LocalEdges = HashMap<(u32, u32), Calls, foldhash::fast::RandomState>;

/// Edges shown so far, and new ones shown at zero for one scrape first
/// (see `span_metrics`: `rate()` starts at a series' first sample).
#[derive(Default)]
struct Store {
    edges: Edges,
    fresh: Edges,
}

/// The instance's service graph: edges merged from every partition.
pub struct ServiceGraph {
    bounds: Bounds,
    max_edges: usize,
    store: Mutex<Store>,
    overflows: metrics::Counter,
}

impl ServiceGraph {
    pub fn new(bounds_s: &[f64], max_edges: usize) -> Self {
        Self {
            bounds: Bounds::new(bounds_s),
            max_edges,
            store: Mutex::default(),
            overflows: metrics::counter!("tailsift_service_graph_overflow_calls_total"),
        }
    }

    pub fn local(self: &Arc<Self>) -> LocalGraph {
        LocalGraph {
            shared: self.clone(),
            edges: LocalEdges::default(),
        }
    }

    fn merge(&self, local: &mut LocalEdges, services: &Services) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let store = &mut *store;
        for ((client, server), calls) in local.drain() {
            let key = (services.name(client).clone(), services.name(server).clone());
            let full = store.edges.len() + store.fresh.len() >= self.max_edges;
            let known = match store.edges.get_mut(&key) {
                Some(total) => Some(total),
                None => store.fresh.get_mut(&key),
            };
            match known {
                Some(total) => total.merge(&calls),
                None if !full => {
                    store.fresh.insert(key, calls);
                }
                None => self.overflows.increment(calls.total),
            }
        }
    }
}

impl Exposition for ServiceGraph {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let (mut total, mut failed) = (String::new(), String::new());
        let (mut server, mut client) = (String::new(), String::new());
        let mut labels = String::new();
        let zero = Calls::new(&self.bounds);
        let fresh = store.fresh.keys().map(|k| (k, &zero));
        let server_name = format!("{FAMILY}_server_seconds");
        let client_name = format!("{FAMILY}_client_seconds");
        for ((c, s), calls) in store.edges.iter().chain(fresh) {
            labels.clear();
            series::label(&mut labels, "client", c.as_bytes());
            series::label(&mut labels, "server", s.as_bytes());
            let bare = labels.trim_end_matches(',');
            let _ = writeln!(total, "{FAMILY}_total{{{bare}}} {}", calls.total);
            let _ = writeln!(failed, "{FAMILY}_failed_total{{{bare}}} {}", calls.failed);
            let bounds = &self.bounds;
            calls
                .server
                .render(&mut server, &server_name, &labels, bounds);
            calls
                .client
                .render(&mut client, &client_name, &labels, bounds);
        }
        let families = [
            ("_total", "counter", "Calls between two services.", total),
            (
                "_failed_total",
                "counter",
                "Calls between two services that failed on either side.",
                failed,
            ),
            (
                "_server_seconds",
                "histogram",
                "Duration of the called (server) side's span.",
                server,
            ),
            (
                "_client_seconds",
                "histogram",
                "Duration of the calling (client) side's span.",
                client,
            ),
        ];
        for (suffix, kind, help, body) in families {
            series::header(out, &format!("{FAMILY}{suffix}"), kind, help);
            out.push_str(&body);
        }
        let fresh = std::mem::take(&mut store.fresh);
        store.edges.extend(fresh);
    }
}

/// One partition's service-graph counts since its last merge.
pub struct LocalGraph {
    shared: Arc<ServiceGraph>,
    edges: LocalEdges,
}

impl LocalGraph {
    pub fn add(&mut self, edges: &[Edge]) {
        let bounds = &self.shared.bounds;
        for e in edges.iter().filter(|e| e.parent != e.child) {
            let calls = self
                .edges
                .entry((e.parent, e.child))
                .or_insert_with(|| Calls::new(bounds));
            calls.total += 1;
            calls.failed += u64::from(e.failed);
            calls.server.observe(bounds, e.server_ns as f64 / 1e9);
            calls.client.observe(bounds, e.client_ns as f64 / 1e9);
        }
    }

    pub fn flush(&mut self, services: &Services) {
        if !self.edges.is_empty() {
            self.shared.merge(&mut self.edges, services);
        }
    }
}
