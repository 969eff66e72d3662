//! In-process test network: N nodes on 127.0.0.1 with ephemeral ports, roles per node, kill and
//! restart, and a client that knows every node's (verified) descriptor. Exits here set the
//! testing-only `allow_private_exit` flag so they can reach servers on loopback.

use std::time::Duration;

use crate::client::{Client, ClientConfig};
use crate::descriptor::{Descriptor, ROLE_EXIT, ROLE_RELAY};
use crate::exit::ExitPolicy;
use crate::identity::Identity;
use crate::node::{Node, NodeConfig};

pub struct TestnetBuilder {
    relays: usize,
    exits: usize,
    exit_policy: ExitPolicy,
    idle_timeout: Duration,
    allow_private: bool,
    dht: bool,
    limits: crate::limits::Limits,
    /// Limits of single nodes (by index), instead of `limits`.
    node_limits: Vec<(usize, crate::limits::Limits)>,
}

impl TestnetBuilder {
    /// Whether exits may reach loopback/private destinations (default true: tests use loopback).
    pub fn allow_private(mut self, yes: bool) -> Self {
        self.allow_private = yes;
        self
    }
    /// Gives every node the DHT role and seeds each routing table with the others' descriptors.
    pub fn dht(mut self, yes: bool) -> Self {
        self.dht = yes;
        self
    }
    pub fn relays(mut self, n: usize) -> Self {
        self.relays = n;
        self
    }
    pub fn exits(mut self, n: usize) -> Self {
        self.exits = n;
        self
    }
    pub fn exit_policy(mut self, p: ExitPolicy) -> Self {
        self.exit_policy = p;
        self
    }
    /// Flood and memory limits of every node.
    pub fn limits(mut self, l: crate::limits::Limits) -> Self {
        self.limits = l;
        self
    }
    /// Limits of node `i` only (relays come first, then exits).
    pub fn node_limits(mut self, i: usize, l: crate::limits::Limits) -> Self {
        self.node_limits.push((i, l));
        self
    }
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    pub async fn build(self) -> std::io::Result<Testnet> {
        let mut configs = Vec::new();
        for i in 0..self.relays + self.exits {
            // every relay can be an introduction point
            let mut roles = if i < self.relays {
                ROLE_RELAY | crate::descriptor::ROLE_INTRO
            } else {
                ROLE_RELAY | ROLE_EXIT | crate::descriptor::ROLE_INTRO
            };
            if self.dht {
                roles |= crate::descriptor::ROLE_DHT;
            }
            let mut cfg = NodeConfig::new(
                Identity::generate(),
                "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
                roles,
            );
            if roles & ROLE_EXIT != 0 {
                cfg.exit_policy = self.exit_policy.clone();
            }
            cfg.allow_private_exit = self.allow_private;
            cfg.idle_timeout = self.idle_timeout;
            cfg.limits = self
                .node_limits
                .iter()
                .find(|(n, _)| *n == i)
                .map_or_else(|| self.limits.clone(), |(_, l)| l.clone());
            configs.push(cfg);
        }
        let mut nodes = Vec::new();
        for cfg in &configs {
            nodes.push(Node::start(cfg.clone()).await?);
        }
        // restart on the same port
        for (cfg, n) in configs.iter_mut().zip(&nodes) {
            cfg.listen = n.addr();
        }
        if self.dht {
            let all: Vec<Descriptor> = nodes.iter().map(|n| n.descriptor().clone()).collect();
            for n in &nodes {
                n.dht_learn(&all);
            }
        }
        Ok(Testnet { configs, nodes })
    }
}

pub struct Testnet {
    configs: Vec<NodeConfig>,
    nodes: Vec<Node>,
}

impl Testnet {
    pub fn builder() -> TestnetBuilder {
        TestnetBuilder {
            relays: 2,
            exits: 1,
            exit_policy: ExitPolicy::default(),
            idle_timeout: Duration::from_secs(90),
            allow_private: true,
            dht: false,
            limits: crate::limits::Limits::default(),
            node_limits: Vec::new(),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn descriptors(&self) -> Vec<Descriptor> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.descriptor().clone())
            .collect()
    }

    pub fn client(&self, cfg: ClientConfig) -> Client {
        Client::new(cfg, self.descriptors())
    }

    /// Index of the node with this id.
    pub fn index_of(&self, id: crate::identity::NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == id)
    }

    pub fn kill(&self, i: usize) {
        self.nodes[i].shutdown();
    }

    /// Restarts node `i` with the same identity and port.
    pub async fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i].shutdown();
        self.nodes[i] = Node::start(self.configs[i].clone()).await?;
        Ok(())
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.shutdown();
        }
    }
}
