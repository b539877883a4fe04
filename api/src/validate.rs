//! Field rules of the standard (length limits, required fields) and of jcs (id alphabet,
//! ranges), as pure functions returning an [`ApiError`] that names the field.

use crate::error::ApiError;

/// Table limits: most ids and names are "< 64 bytes" (Tables 1, 3, 5, 6, 7).
pub const MAX_ID_LEN: usize = 63;
/// Appendix A.1: job and task names are at most 32 characters. (A.1 also says 32 for `imageId`
/// and `resourceSpecId`, but the catalog's ids may be 63; jcs takes the catalog's limit for the
/// same id everywhere, so that every image and spec the catalog holds can be used.)
pub const MAX_A1_FIELD_LEN: usize = 32;
/// Table 7: `desc` and job `name` are "< 128 bytes".
pub const MAX_DESC_LEN: usize = 127;
/// jcs limit on a task's `command` (the standard sets none).
pub const MAX_COMMAND_LEN: usize = 16 * 1024;
/// jcs limit on `replicaNumber`.
pub const MAX_REPLICAS: i64 = 1024;
/// jcs limit on the number of tasks in one job.
pub const MAX_TASKS: usize = 64;
/// jcs limit on an `Idempotency-Key` header.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// jcs limit on free-text fields that the standard leaves unbounded (URLs, descriptions).
pub const MAX_TEXT_LEN: usize = 1024;
/// jcs limit on comma-separated id lists (`computing_center_list`, `resource_spec`): room for
/// 10,000 ids, since a spec may be offered by every center of a large network.
pub const MAX_ID_LIST_ITEMS: usize = 10_000;

/// A required free-text field: present, not blank, at most `max` characters, no control
/// characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "is required and must not be empty"));
    }
    optional_text(field, value, max)
}

/// An optional free-text field: may be empty; otherwise as [`text`].
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len > max {
        return Err(ApiError::invalid(field, format!("is {len} characters, at most {max} allowed")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// The longest cluster id (`NameCluster`).
pub const MAX_CLUSTER_ID_LEN: usize = 32;

/// A cluster id: 1 to 32 lowercase letters and digits, so that it fits in any center's names
/// (file names, Slurm job names) as it is.
pub fn cluster_id(field: &str, value: &str) -> Result<(), ApiError> {
    let fits = (1..=MAX_CLUSTER_ID_LEN).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if fits {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("'{value}' is not 1 to {MAX_CLUSTER_ID_LEN} lowercase letters and digits"),
        ))
    }
}

/// A network address `HOST:PORT` (a name or an IP, a port from 1 to 65535), at most 255
/// characters: a cluster member's peer or REST address.
pub fn host_port(field: &str, value: &str) -> Result<(), ApiError> {
    let valid = value.len() <= 255
        && value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(field, format!("'{value}' is not HOST:PORT")))
    }
}

/// An identifier that appears in URL paths: 1..=`max` characters of `[A-Za-z0-9._-]`, not
/// starting with `.` — so no `/`, `..` or other path tricks can ride in it.
pub fn id(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is required and must not be empty"));
    }
    if value.len() > max {
        return Err(ApiError::invalid(field, format!("is {} characters, at most {max} allowed", value.len())));
    }
    if value.starts_with('.') || !value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(ApiError::invalid(
            field,
            "may contain only letters, digits, '.', '_', '-' and must not start with '.'",
        ));
    }
    Ok(())
}

/// An integer in `min..=max`.
pub fn range(field: &str, value: i64, min: i64, max: i64) -> Result<(), ApiError> {
    if value < min || value > max {
        return Err(ApiError::invalid(field, format!("is {value}, must be between {min} and {max}")));
    }
    Ok(())
}

/// Every counter of `fields` is ≥ 0; an error names `{prefix}{field}`.
pub fn non_negative<'a>(prefix: &str, fields: impl IntoIterator<Item = (&'a str, i64)>) -> Result<(), ApiError> {
    fields.into_iter().try_for_each(|(field, value)| range(&format!("{prefix}{field}"), value, 0, i64::MAX))
}

/// Splits the standard's comma-separated id lists (`"c1, c2"`), dropping blanks.
pub fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// A comma-separated list of ids, each checked with [`id`]; duplicates rejected.
pub fn id_list(field: &str, value: &str) -> Result<Vec<String>, ApiError> {
    optional_text(field, value, MAX_ID_LIST_ITEMS * (MAX_ID_LEN + 1))?;
    let items = split_list(value);
    if items.len() > MAX_ID_LIST_ITEMS {
        return Err(ApiError::invalid(
            field,
            format!("lists {} ids, at most {MAX_ID_LIST_ITEMS} allowed", items.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for item in &items {
        id(field, item, MAX_ID_LEN)?;
        if !seen.insert(item) {
            return Err(ApiError::invalid(field, format!("lists '{item}' twice")));
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["127.0.0.1:9080", "node-2.dc1:80", "[::1]:9080"] {
            host_port("addr", good).unwrap();
        }
        for bad in ["", "9080", ":9080", "h:", "h:0", "h:65536", "h:x"] {
            assert!(host_port("addr", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_reject_path_tricks() {
        for bad in ["", "../etc", "a/b", ".hidden", "a b", "a%2F", "é", "a\0"] {
            assert!(id("id", bad, MAX_ID_LEN).is_err(), "{bad:?}");
        }
        for good in ["c1", "hunan-univ.gpu_01", "A.B-c"] {
            id("id", good, MAX_ID_LEN).unwrap();
        }
        assert!(id("id", &"a".repeat(64), MAX_ID_LEN).is_err());
    }

    #[test]
    fn messages_name_the_field() {
        let e = text("tasks[0].name", "", 32).unwrap_err();
        assert!(e.message.starts_with("tasks[0].name: "), "{}", e.message);
        let e = text("name", &"x".repeat(33), 32).unwrap_err();
        assert_eq!(e.message, "name: is 33 characters, at most 32 allowed");
        let e = range("replicaNumber", 0, 1, 1024).unwrap_err();
        assert_eq!(e.message, "replicaNumber: is 0, must be between 1 and 1024");
    }

    #[test]
    fn id_lists_split_on_commas_and_reject_duplicates() {
        assert_eq!(id_list("l", "a, b,,c").unwrap(), vec!["a", "b", "c"]);
        assert!(id_list("l", "a,a").is_err());
        assert!(id_list("l", "a,../b").is_err());
        let thousand: Vec<String> = (0..1000).map(|i| format!("center-{i:04}")).collect();
        assert_eq!(id_list("l", &thousand.join(",")).unwrap().len(), 1000);
        let too_many: Vec<String> = (0..=MAX_ID_LIST_ITEMS).map(|i| format!("c{i}")).collect();
        assert!(id_list("l", &too_many.join(",")).unwrap_err().message.contains("at most 10000"));
    }

    proptest! {
        #[test]
        fn accepted_ids_are_path_safe(s in "\\PC{0,70}") {
            if id("id", &s, MAX_ID_LEN).is_ok() {
                prop_assert!(!s.contains('/') && !s.starts_with('.') && s.len() <= MAX_ID_LEN && s.is_ascii());
            }
        }
    }
}
