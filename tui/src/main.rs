fn main() {
    println!("warren");
}
