//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test:
//! store URL parsing, with what must hold of its answers. Not part of the
//! API.

use crate::{Backend, OpenError, StoreUrl};

/// Parses `url` as [`crate::open`] does.
///
/// # Errors
/// The parse error: always [`OpenError::UnknownScheme`] or
/// [`OpenError::InvalidUrl`].
///
/// # Panics
/// When an invariant fails: another error; the canonical form
/// ([`StoreUrl`]'s `Display`) does not parse, or parses to another
/// `StoreUrl` (but for a PostgreSQL password, which it redacts), or is not
/// a fixed point; a bare path (no scheme, no `?`) parses to another path;
/// `FromStr` disagrees with [`StoreUrl::parse`]; the
/// backend's name does not parse back to the backend.
pub fn check_url(url: &str) -> Result<StoreUrl, OpenError> {
    let parsed = match StoreUrl::parse(url) {
        Ok(parsed) => parsed,
        Err(err) => {
            assert!(
                matches!(
                    err,
                    OpenError::UnknownScheme { .. } | OpenError::InvalidUrl { .. }
                ),
                "{url:?} answered {err:?}"
            );
            return Err(err);
        }
    };
    assert_eq!(
        url.parse::<StoreUrl>().ok().as_ref(),
        Some(&parsed),
        "FromStr of {url:?}"
    );
    let backend = parsed.backend();
    assert_eq!(
        backend.name().parse::<Backend>().ok(),
        Some(backend),
        "the name of {backend:?}"
    );
    if !url.contains('?')
        && !url.trim().is_empty()
        && matches!(parsed, StoreUrl::Jsonl { .. })
        && !url.to_ascii_lowercase().starts_with("jsonl:")
    {
        // A bare path is the JSONL directory at exactly that path.
        assert_eq!(
            parsed,
            StoreUrl::Jsonl {
                path: url.into(),
                durability: runstore_core::Durability::Durable,
                limits: runstore_core::validate::Limits::default(),
            },
            "the bare path {url:?}"
        );
    }
    let shown = parsed.to_string();
    let again = StoreUrl::parse(&shown)
        .unwrap_or_else(|err| panic!("{url:?} shows as {shown:?}, which fails: {err}"));
    assert_eq!(
        again.to_string(),
        shown,
        "the form {url:?} shows as is not canonical"
    );
    match (&parsed, &again) {
        (
            StoreUrl::Postgres {
                url: given,
                schema,
                durability,
                limits,
            },
            StoreUrl::Postgres {
                url: shown_url,
                schema: shown_schema,
                durability: shown_durability,
                limits: shown_limits,
            },
        ) if given != shown_url => {
            // Display redacts the password; nothing else may change.
            assert!(
                shown_url.contains(":***@"),
                "{url:?} shows as {shown:?}, which parses to another URL"
            );
            assert_eq!(
                (schema, durability, limits),
                (shown_schema, shown_durability, shown_limits)
            );
        }
        _ => assert_eq!(
            again, parsed,
            "{url:?} shows as {shown:?}, which parses to another store"
        ),
    }
    Ok(parsed)
}
