//! Prints the JSON Schema of the jwt-auth configuration (`make schemas` writes it to
//! `filters/jwt-auth/config.schema.json`).

fn main() -> Result<(), serde_json::Error> {
    let schema = meshward_filter_jwt_auth::config::schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}
