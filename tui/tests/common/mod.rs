//! Shared test helpers: a fake node and a control-socket server for it.
#![allow(dead_code)]

pub mod procs;
pub mod tmux;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren::control::server::ControlListener;
use warren::control::{ApiError, NodeApi};
use warren::status::{StatusSnapshot, TransferId, TransferStatus};

/// Records calls; keeps a list of transfers.
#[derive(Default)]
pub struct FakeNode {
    pub calls: Mutex<Vec<String>>,
    pub transfers: Mutex<Vec<TransferStatus>>,
}

impl FakeNode {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn set_state(&self, id: TransferId, state: warren::status::TransferState) {
        for t in self
            .transfers
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|t| t.id == id)
        {
            t.state = state;
        }
    }
    fn has(&self, id: TransferId) -> Result<(), ApiError> {
        if self.transfers.lock().unwrap().iter().any(|t| t.id == id) {
            Ok(())
        } else {
            Err(ApiError::new(format!("no transfer {id}")))
        }
    }
}

impl NodeApi for FakeNode {
    async fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            node_id: "fake0001".into(),
            transfers: self.transfers.lock().unwrap().clone(),
            ..Default::default()
        }
    }
    async fn add(
        &self,
        magnet: String,
        dir: Option<PathBuf>,
        hops: Option<u8>,
    ) -> Result<TransferId, ApiError> {
        self.log(format!("add {magnet} {dir:?} {hops:?}"));
        let mut ts = self.transfers.lock().unwrap();
        let id = ts.len() as u64 + 1;
        ts.push(TransferStatus {
            id,
            name: magnet,
            hops: hops.unwrap_or(3),
            ..Default::default()
        });
        Ok(id)
    }
    async fn pause(&self, id: TransferId) -> Result<(), ApiError> {
        self.has(id)?;
        self.log(format!("pause {id}"));
        self.set_state(id, warren::status::TransferState::Paused);
        Ok(())
    }
    async fn resume(&self, id: TransferId) -> Result<(), ApiError> {
        self.has(id)?;
        self.log(format!("resume {id}"));
        self.set_state(id, warren::status::TransferState::Downloading);
        Ok(())
    }
    async fn remove(&self, id: TransferId, delete_data: bool) -> Result<(), ApiError> {
        self.has(id)?;
        self.log(format!("remove {id} {delete_data}"));
        self.transfers.lock().unwrap().retain(|t| t.id != id);
        Ok(())
    }
    async fn set_hops(&self, id: TransferId, hops: u8) -> Result<(), ApiError> {
        self.has(id)?;
        self.log(format!("set_hops {id} {hops}"));
        for t in self
            .transfers
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|t| t.id == id)
        {
            t.hops = hops;
        }
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), ApiError> {
        self.log("shutdown".into());
        Ok(())
    }
}

/// A server on its own runtime thread; stops (and removes its socket) on drop.
pub struct Server {
    pub path: PathBuf,
    pub node: Arc<FakeNode>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(path: &Path) -> Server {
        Self::start_with(path, FakeNode::default())
    }

    pub fn start_with(path: &Path, node: FakeNode) -> Server {
        let node = Arc::new(node);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let api = Arc::clone(&node);
        let p = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = ControlListener::bind(&p).unwrap();
                ready_tx.send(()).unwrap();
                listener
                    .serve(api, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            path: path.to_path_buf(),
            node,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
