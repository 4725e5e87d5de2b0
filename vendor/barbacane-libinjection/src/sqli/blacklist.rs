// SQL injection blacklist checker - matches C implementation exactly

use super::sqli_data;

/// Check if a fingerprint is blacklisted
/// This matches libinjection_sqli_blacklist from the C version
pub fn is_blacklisted(fingerprint: &str) -> bool {
    // Match the C version: convert v0 fingerprint to v1 format
    // v0: up to 5 chars, mixed case  
    // v1: '0' prefix, up to 5 more chars, upper case
    
    if fingerprint.is_empty() {
        return false;
    }
    
    // Build the v1 fingerprint with '0' prefix and uppercase
    // payguard patch: on the stack (no allocation per check), looked up on its bytes. A
    // fingerprint is ASCII (token type letters); one over the longest keyword is not listed.
    let mut fp2 = [0u8; 32];
    let Some(rest) = fp2.get_mut(1..=fingerprint.len()) else { return false };
    rest.copy_from_slice(fingerprint.as_bytes());
    rest.make_ascii_uppercase();
    fp2[0] = b'0';

    // Check if this fingerprint exists in the keywords table with type 'F'
    sqli_data::lookup_bytes_type(&fp2[..=fingerprint.len()]) == Some(crate::sqli::TokenType::Fingerprint)
}
