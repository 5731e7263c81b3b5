//! `cri-pull SOCKET IMAGE`: one CRI PullImage, as kubelet sends it (crictl is not
//! packaged in Debian); prints the image ref. For scripts/bench-compare.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, image] = &args[..] else {
        eprintln!("usage: cri-pull SOCKET IMAGE");
        std::process::exit(2);
    };
    match rdpull_testkit::cri::pull_image(socket.as_ref(), image, None) {
        Ok(r) => println!("{r}"),
        Err(e) => {
            eprintln!("cri-pull: {image}: {e}");
            std::process::exit(1);
        }
    }
}
