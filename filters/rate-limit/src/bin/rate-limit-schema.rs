//! Prints the JSON Schema of the rate-limit configuration (`make schemas` writes it to
//! `filters/rate-limit/config.schema.json`).

fn main() -> Result<(), serde_json::Error> {
    let schema = meshward_filter_rate_limit::config::schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}
