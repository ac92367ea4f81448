fn main() {
    println!("hub-worker: not yet implemented");
}
