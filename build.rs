//! Rebuilds when a migration is added: `sqlx::migrate!` embeds `migrations/` at compile
//! time, and cargo would otherwise only notice changes to files it already embedded.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
