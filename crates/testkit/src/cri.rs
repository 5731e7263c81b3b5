//! A small CRI client (kubelet's image calls) over containerd's unix socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};

#[allow(unreachable_pub, clippy::all, clippy::pedantic)]
mod api {
    tonic::include_proto!("runtime.v1");
}

use api::image_service_client::ImageServiceClient;

pub use api::AuthConfig;

async fn client(
    socket: &Path,
) -> Result<ImageServiceClient<tonic::transport::Channel>, Box<dyn std::error::Error>> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is only a placeholder: the connector dials the socket, and :authority is
    // "localhost" as kubelet sends it.
    let channel = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(ImageServiceClient::new(channel))
}

fn spec(image: &str) -> Option<api::ImageSpec> {
    Some(api::ImageSpec {
        image: image.into(),
        annotations: Default::default(),
    })
}

/// CRI `PullImage`, as kubelet sends it; returns the image ref containerd answers.
pub fn pull_image(
    socket: &Path,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, Box<dyn std::error::Error>> {
    runtime().block_on(async {
        let r = client(socket)
            .await?
            .pull_image(api::PullImageRequest {
                image: spec(image),
                auth,
            })
            .await?;
        Ok(r.into_inner().image_ref)
    })
}

/// CRI `RemoveImage`.
pub fn remove_image(socket: &Path, image: &str) -> Result<(), Box<dyn std::error::Error>> {
    runtime().block_on(async {
        client(socket)
            .await?
            .remove_image(api::RemoveImageRequest { image: spec(image) })
            .await?;
        Ok(())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
