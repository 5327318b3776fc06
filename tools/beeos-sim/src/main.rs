//! Runs the BeeOS API simulator (work in progress).
fn main() {}
