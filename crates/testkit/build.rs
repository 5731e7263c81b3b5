//! The CRI client of the tests, generated from the vendored subset with protox (no
//! `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(["proto/cri-image.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(files)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
