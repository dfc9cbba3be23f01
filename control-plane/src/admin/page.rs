//! Page tokens of the List* calls: the sort values of a page's last item
//! (Elasticsearch `search_after`, or the in-memory order of ListAgents),
//! as hex-encoded JSON. Opaque to clients; a token is valid as long as the
//! sort key of its item exists, so pages stay cheap at any depth (no
//! `from` + `size` walk over everything before).

use crate::error::{Error, Result};

/// Page sizes: default and maximum.
pub const DEFAULT_SIZE: i32 = 100;
pub const MAX_SIZE: i32 = 1000;

pub fn size(requested: i32) -> usize {
    if requested <= 0 {
        DEFAULT_SIZE as usize
    } else {
        requested.min(MAX_SIZE) as usize
    }
}

pub fn encode(after: &[serde_json::Value]) -> String {
    hex::encode(serde_json::Value::Array(after.to_vec()).to_string())
}

/// Cuts a search answer fetched with `size + 1` hits down to `size` and
/// returns the token of the next page (empty on the last page).
pub fn take_page<T>(hits: &mut Vec<crate::elasticsearch::client::Hit<T>>, size: usize) -> String {
    if hits.len() <= size {
        return String::new();
    }
    hits.truncate(size);
    hits.last().and_then(|h| h.sort.clone()).map(|s| encode(&s)).unwrap_or_default()
}

/// `None` for an empty token (the first page).
pub fn decode(token: &str) -> Result<Option<Vec<serde_json::Value>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::invalid(
            "page_token",
            "not a next_page_token of this call: pass one from the previous answer, or none for the first page",
        )
    };
    let bytes = hex::decode(token).map_err(|_| bad())?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Array(v)) if !v.is_empty() => Ok(Some(v)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let after = vec![serde_json::json!("shop"), serde_json::json!(1767225600000_i64)];
        assert_eq!(decode(&encode(&after)).unwrap(), Some(after));
        assert_eq!(decode("").unwrap(), None);
        let e = decode("zz").unwrap_err().to_string();
        assert!(e.starts_with("page_token:"), "{e}");
        assert!(decode(&hex::encode("{}")).is_err());
    }
}
