//! Free text a client attaches to an operation (a campaign reference, a
//! description, a grant's reason), with its limits: printable, bounded.

use super::DomainError;

/// Longest reference (a campaign or message batch id), in bytes.
pub const MAX_REFERENCE_BYTES: usize = 128;
/// Longest description or reason, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// A reference: printable ASCII without spaces, like an id.
pub fn check_reference(reference: Option<&str>) -> Result<(), DomainError> {
    let Some(r) = reference else { return Ok(()) };
    if r.is_empty() || r.len() > MAX_REFERENCE_BYTES || !r.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid(format!(
            "reference must be 1 to {MAX_REFERENCE_BYTES} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// A description or reason: any text without control characters.
pub fn check_description(field: &str, text: Option<&str>) -> Result<(), DomainError> {
    let Some(t) = text else { return Ok(()) };
    let chars = t.chars().count();
    if chars == 0 || chars > MAX_DESCRIPTION_CHARS || t.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!(
            "{field} must be 1 to {MAX_DESCRIPTION_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// An id the ledger made (`deb_...`, `hold_...`): checked before it is
/// looked up so a garbage id gets a clear answer, not a query.
pub fn check_object_id(what: &'static str, prefix: &str, id: &str) -> Result<(), DomainError> {
    let ok = id.len() <= 128 && id.starts_with(prefix) && id.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(DomainError::not_found(what, id));
    }
    Ok(())
}
