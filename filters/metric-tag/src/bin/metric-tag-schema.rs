//! Prints the JSON Schema of the metric-tag configuration (`make schemas` writes it to
//! `filters/metric-tag/config.schema.json`).

fn main() -> Result<(), serde_json::Error> {
    let schema = meshward_filter_metric_tag::config::schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}
