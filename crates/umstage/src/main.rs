//! `umstage`: builds container images from Dockerfiles with no daemon and no root.

fn main() {
    eprintln!("umstage: nothing here yet");
    std::process::exit(2);
}
