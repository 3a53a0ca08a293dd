fn main() {
    eprintln!("genboot-init: not implemented yet");
    std::process::exit(1);
}
