//! The OpenAPI 3.1 document (placeholder until the annotations land).

pub fn document_json() -> String {
    serde_json::json!({"openapi": "3.1.0", "info": {"title": "textcredits", "version": "1"}, "paths": {}}).to_string()
}
