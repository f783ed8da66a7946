//! Prints the JSON Schema of the ab-routing configuration (`make schemas` writes it to
//! `filters/ab-routing/config.schema.json`).

fn main() -> Result<(), serde_json::Error> {
    let schema = meshward_filter_ab_routing::config::schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}
