//! Store object names: `<hash>-<name>`, where `<hash>` is the first
//! [`HASH_LEN`] lower-case hex digits of the object's
//! [store hash](crate::storehash).

use std::fmt;

/// Length of the hash part of a store name.
pub const HASH_LEN: usize = 32;

/// A store hash: exactly [`HASH_LEN`] lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreHash([u8; HASH_LEN]);

impl StoreHash {
    /// `Some` when `text` is exactly [`HASH_LEN`] lower-case hex digits.
    pub fn parse(text: &str) -> Option<StoreHash> {
        let bytes = <[u8; HASH_LEN]>::try_from(text.as_bytes()).ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(StoreHash(bytes))
    }

    /// The first [`HASH_LEN`] / 2 bytes of `digest`, as hex.
    pub fn from_digest(digest: &[u8; 32]) -> StoreHash {
        let text = crate::hex(digest.get(..HASH_LEN / 2).unwrap_or_default());
        let mut out = [b'0'; HASH_LEN];
        for (o, t) in out.iter_mut().zip(text.bytes()) {
            *o = t;
        }
        StoreHash(out)
    }

    pub fn as_str(&self) -> &str {
        // Only hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The hash's text as bytes: what a self-reference in an object's
    /// contents looks like (see [`crate::storehash::SELF_MASK`]).
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl fmt::Display for StoreHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StoreHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreHash({})", self.as_str())
    }
}

impl PartialEq<str> for StoreHash {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StoreHash {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A store directory name split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreName<'a> {
    pub hash: StoreHash,
    /// What follows `<hash>-`: never empty.
    pub name: &'a str,
}

impl<'a> StoreName<'a> {
    /// Split a store directory name `<hash>-<name>`; `None` when it is not one.
    pub fn parse(dir_name: &'a str) -> Option<StoreName<'a>> {
        let (hash, rest) = dir_name.split_at_checked(HASH_LEN)?;
        let name = rest.strip_prefix('-')?;
        if name.is_empty() {
            return None;
        }
        Some(StoreName {
            hash: StoreHash::parse(hash)?,
            name,
        })
    }
}

impl fmt::Display for StoreName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

/// Split a store directory name `<hash>-<name>` into its parts.
pub fn split_store_name(dir_name: &str) -> Option<(StoreHash, &str)> {
    StoreName::parse(dir_name).map(|n| (n.hash, n.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_store_name_checks_hash() {
        let n = "0123456789abcdef0123456789abcdef-linux-6.1";
        let (hash, name) = split_store_name(n).unwrap();
        assert_eq!(hash.as_str(), "0123456789abcdef0123456789abcdef");
        assert_eq!(name, "linux-6.1");
        assert_eq!(StoreName::parse(n).unwrap().to_string(), n);
        assert_eq!(split_store_name("xyz-linux"), None);
        assert_eq!(split_store_name("0123456789abcdef0123456789abcdeg-x"), None);
        // Upper case is not a store hash, and the name is not empty.
        assert_eq!(split_store_name("0123456789ABCDEF0123456789abcdef-x"), None);
        assert_eq!(split_store_name("0123456789abcdef0123456789abcdef-"), None);
        assert_eq!(split_store_name("0123456789abcdef0123456789abcdef"), None);
        // Not cut inside a multi-byte character.
        assert_eq!(
            split_store_name("0123456789abcdef0123456789abcde\u{e9}-x"),
            None
        );
    }

    #[test]
    fn hashes_are_exactly_32_lower_case_hex_digits() {
        assert!(StoreHash::parse("0123456789abcdef0123456789abcdef").is_some());
        assert!(StoreHash::parse("0123456789abcdef0123456789abcde").is_none());
        assert!(StoreHash::parse("0123456789abcdef0123456789abcdef0").is_none());
        assert!(StoreHash::parse("0123456789abcdef0123456789abcdeF").is_none());
        assert!(StoreHash::parse("").is_none());
    }

    #[test]
    fn a_digest_gives_its_first_16_bytes_in_hex() {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i * 17) as u8;
        }
        assert_eq!(
            StoreHash::from_digest(&d).as_str(),
            "00112233445566778899aabbccddeeff"
        );
    }
}
