//! Prints the JSON Schema of the trace-id configuration (`make schemas` writes it to
//! `filters/trace-id/config.schema.json`).

fn main() -> Result<(), serde_json::Error> {
    let schema = meshward_filter_trace_id::config::schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}
