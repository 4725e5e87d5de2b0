//! Card numbers (PANs): where they must never be. The scanner finds them in a stream of bytes;
//! the issuer table says which numbers are card numbers at all. Only the first six and the
//! last four digits of a number found ever leave this module (`Hit::masked`).

pub mod iin;
pub mod scan;
pub mod stream;

pub use iin::Scheme;
pub use scan::{find_all, first, mask, Hit, Scanner};
pub use stream::Masker;
