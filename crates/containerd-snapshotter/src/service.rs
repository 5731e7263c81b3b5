//! The gRPC face: containerd's `containerd.services.snapshots.v1.Snapshots` over
//! [`Snapshotter`], with the remote path in front of Prepare. Each call's file and
//! database work runs on the blocking pool, so calls proceed side by side.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::SnapshotterError;
use crate::filter::parse_any;
use crate::metadata::{Kind, Record};
use crate::proto::containerd::services::snapshots::v1 as api;
use crate::proto::containerd::types;
use crate::remote::{Provided, RemotePulls};
use crate::snapshotter::{Snapshotter, SNAPSHOT_REF_LABEL};

/// Infos per List message, as containerd's own server sends them.
const LIST_BATCH: usize = 100;

pub struct SnapshotsService {
    sn: Arc<Snapshotter>,
    remote: Arc<RemotePulls>,
}

impl SnapshotsService {
    pub fn new(sn: Arc<Snapshotter>, remote: Arc<RemotePulls>) -> SnapshotsService {
        SnapshotsService { sn, remote }
    }

    pub fn into_server(self) -> api::snapshots_server::SnapshotsServer<SnapshotsService> {
        api::snapshots_server::SnapshotsServer::new(self)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshotter) -> Result<T, SnapshotterError> + Send + 'static,
    ) -> Result<T, Status> {
        let sn = self.sn.clone();
        tokio::task::spawn_blocking(move || f(&sn))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)
    }
}

fn sorted(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

fn mounts(ms: Vec<rdpull_snapshot::Mount>) -> Vec<types::Mount> {
    ms.into_iter()
        .map(|m| types::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn timestamp(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(ns % 1_000_000_000).unwrap_or(0),
    }
}

fn info(r: Record) -> api::Info {
    let kind = match r.kind {
        Kind::Active => api::Kind::Active,
        Kind::View => api::Kind::View,
        Kind::Committed => api::Kind::Committed,
    };
    api::Info {
        name: r.name,
        parent: r.parent,
        kind: kind.into(),
        created_at: Some(timestamp(r.created)),
        updated_at: Some(timestamp(r.updated)),
        labels: r.labels.into_iter().collect(),
    }
}

type ListStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<api::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl api::snapshots_server::Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        request: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        let labels = sorted(r.labels);
        tracing::debug!("prepare {} on {:?}", r.key, r.parent);
        if let Some(target) = labels.get(SNAPSHOT_REF_LABEL) {
            if let Provided::Exists = self
                .remote
                .provide(&r.key, &r.parent, &labels, target)
                .await
            {
                return Err(Status::already_exists(format!(
                    "target snapshot {target}: provided by rdpull"
                )));
            }
        }
        let ms = self
            .blocking(move |sn| sn.create(Kind::Active, &r.key, &r.parent, labels))
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse {
            mounts: mounts(ms),
        }))
    }

    async fn view(
        &self,
        request: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        let labels = sorted(r.labels);
        let ms = self
            .blocking(move |sn| sn.create(Kind::View, &r.key, &r.parent, labels))
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse {
            mounts: mounts(ms),
        }))
    }

    async fn mounts(
        &self,
        request: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let key = request.into_inner().key;
        let ms = self.blocking(move |sn| sn.mounts(&key)).await?;
        Ok(Response::new(api::MountsResponse { mounts: mounts(ms) }))
    }

    async fn commit(
        &self,
        request: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let labels = sorted(r.labels);
        self.blocking(move |sn| sn.commit(&r.name, &r.key, labels, &r.parent))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let key = request.into_inner().key;
        self.blocking(move |sn| sn.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let key = request.into_inner().key;
        let r = self.blocking(move |sn| sn.stat(&key)).await?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(info(r)),
        }))
    }

    async fn update(
        &self,
        request: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let i = r
            .info
            .ok_or_else(|| Status::invalid_argument("update without an info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let labels = sorted(i.labels);
        let updated = self
            .blocking(move |sn| sn.update(&i.name, labels, &paths))
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(info(updated)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<ListStream>, Status> {
        let filters = parse_any(&request.into_inner().filters)?;
        let all = self
            .blocking(move |sn| {
                let mut out = Vec::new();
                sn.list(&filters, |r| {
                    out.push(info(r));
                    Ok(())
                })?;
                Ok(out)
            })
            .await?;
        let mut batches = Vec::new();
        let mut rest = all.into_iter().peekable();
        while rest.peek().is_some() {
            let info: Vec<api::Info> = rest.by_ref().take(LIST_BATCH).collect();
            batches.push(Ok(api::ListSnapshotsResponse { info }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        request: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let key = request.into_inner().key;
        let u = self.blocking(move |sn| sn.usage(&key)).await?;
        Ok(Response::new(api::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(
        &self,
        _request: Request<api::CleanupRequest>,
    ) -> Result<Response<()>, Status> {
        let in_flight = self.remote.in_flight();
        self.blocking(move |sn| sn.cleanup(&in_flight)).await?;
        Ok(Response::new(()))
    }
}
