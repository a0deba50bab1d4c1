//! Store URLs: which backend, and where.

use std::{fmt, path::PathBuf, str::FromStr};

use runstore_core::{Durability, validate::Limits};

use crate::OpenError;

/// A backend runstore knows, whether or not this build enables it.
///
/// The list is complete whatever the features: a URL naming a backend whose
/// feature is off still parses, and [`open`](crate::open) answers
/// [`OpenError::FeatureDisabled`] naming the feature to enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive] // permit new backends
pub enum Backend {
    /// JSON-lines files in a directory (`jsonl:PATH`, or a bare path).
    Jsonl,
    /// One SQLite database file (`sqlite:PATH`).
    Sqlite,
    /// One redb database file (`redb:PATH`).
    Redb,
    /// Objects in an S3 bucket (`s3://BUCKET/PREFIX`).
    S3,
    /// A PostgreSQL database (`postgres://...`, `postgresql://...`).
    Postgres,
    /// The in-memory model store (`memory:`); nothing survives the process.
    Memory,
}

impl Backend {
    /// Every backend, in the order of the support tiers.
    pub const ALL: [Backend; 6] = [
        Backend::Jsonl,
        Backend::Sqlite,
        Backend::Redb,
        Backend::S3,
        Backend::Postgres,
        Backend::Memory,
    ];

    /// The backend's name, also its URL scheme (`jsonl`, `sqlite`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Jsonl => "jsonl",
            Backend::Sqlite => "sqlite",
            Backend::Redb => "redb",
            Backend::S3 => "s3",
            Backend::Postgres => "postgres",
            Backend::Memory => "memory",
        }
    }

    /// The cargo feature of the `runstore` crate that enables the backend,
    /// or `None` for the always-present memory store.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Backend::Memory => None,
            other => Some(other.name()),
        }
    }

    /// Whether this build can open the backend.
    pub fn is_enabled(self) -> bool {
        match self {
            Backend::Jsonl => cfg!(feature = "jsonl"),
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Redb => cfg!(feature = "redb"),
            Backend::S3 => cfg!(feature = "s3"),
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Memory => true,
        }
    }

    /// Whether the backend runs inside the process with no server.
    pub fn is_embedded(self) -> bool {
        matches!(
            self,
            Backend::Jsonl | Backend::Sqlite | Backend::Redb | Backend::Memory
        )
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = OpenError;

    fn from_str(name: &str) -> Result<Self, OpenError> {
        match name.to_ascii_lowercase().as_str() {
            "jsonl" => Ok(Backend::Jsonl),
            "sqlite" => Ok(Backend::Sqlite),
            "redb" => Ok(Backend::Redb),
            "s3" => Ok(Backend::S3),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "memory" => Ok(Backend::Memory),
            _ => Err(OpenError::UnknownScheme {
                url: name.to_owned(),
                scheme: name.to_owned(),
            }),
        }
    }
}

/// Where a store lives: a parsed store URL.
///
/// | URL | store |
/// |---|---|
/// | `jsonl:PATH`, or a bare `PATH` | JSONL directory |
/// | `sqlite:PATH` | SQLite database file |
/// | `redb:PATH` | redb database file |
/// | `s3://BUCKET/PREFIX` | S3 bucket and key prefix; endpoint, region and credentials from `AWS_*` |
/// | `postgres://...`, `postgresql://...` | PostgreSQL connection URL; `schema=NAME` and `durability=` are read by runstore, other parameters go to the driver |
/// | `memory:` | in-memory model store, gone with the process |
///
/// After `jsonl:`, `sqlite:` and `redb:` a leading `//` is dropped, so
/// `sqlite:///var/db.sqlite` is the absolute path `/var/db.sqlite` and
/// `sqlite://db.sqlite` the relative one. The file backends take options
/// after a `?`, joined by `&`: `durability=durable` (the default) or
/// `durability=relaxed` (no fsync, CONTRACT §16), and
/// `max_record_bytes=N`, the largest record the store accepts (CONTRACT §21;
/// default 4 MiB). S3 and PostgreSQL URLs take `max_record_bytes` too.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive] // permit new backends
pub enum StoreUrl {
    /// A JSONL store directory.
    Jsonl {
        /// The store's directory.
        path: PathBuf,
        /// How hard writes work to survive a crash.
        durability: Durability,
        /// What the store accepts (`?max_record_bytes=N`).
        limits: Limits,
    },
    /// A SQLite database file.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// How hard writes work to survive a crash.
        durability: Durability,
        /// What the store accepts (`?max_record_bytes=N`).
        limits: Limits,
    },
    /// A redb database file.
    Redb {
        /// The database file.
        path: PathBuf,
        /// How hard writes work to survive a crash.
        durability: Durability,
        /// What the store accepts (`?max_record_bytes=N`).
        limits: Limits,
    },
    /// A bucket and key prefix on S3 or an S3-compatible server.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix under which the store lives; may be empty.
        prefix: String,
        /// What the store accepts (`?max_record_bytes=N`).
        limits: Limits,
    },
    /// A PostgreSQL database.
    Postgres {
        /// The connection URL as given, less the options runstore reads.
        url: String,
        /// The schema holding the store's tables (`?schema=NAME`); `None`
        /// is the backend's default, `runstore`.
        schema: Option<String>,
        /// How hard commits work to survive a crash (`?durability=relaxed`).
        durability: Durability,
        /// What the store accepts (`?max_record_bytes=N`).
        limits: Limits,
    },
    /// The in-memory model store.
    Memory,
}

impl StoreUrl {
    /// Parses a store URL; see the table on [`StoreUrl`].
    ///
    /// Every scheme parses whatever the features of this build.
    ///
    /// # Errors
    /// [`OpenError::UnknownScheme`] for a scheme runstore does not know,
    /// [`OpenError::InvalidUrl`] for a known scheme with a malformed rest.
    pub fn parse(url: &str) -> Result<Self, OpenError> {
        let invalid = |reason: &str| OpenError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.trim().is_empty() {
            return Err(invalid("the URL is empty"));
        }
        let Some((scheme, rest)) = split_scheme(url) else {
            // A bare path is a JSONL directory, taken as it is: only a
            // scheme's `//` is dropped.
            let (path, durability, limits) = file_path(url, url)?;
            return Ok(StoreUrl::Jsonl {
                path,
                durability,
                limits,
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "jsonl" => {
                let (path, durability, limits) = file_location(url, rest)?;
                Ok(StoreUrl::Jsonl {
                    path,
                    durability,
                    limits,
                })
            }
            "sqlite" => {
                let (path, durability, limits) = file_location(url, rest)?;
                Ok(StoreUrl::Sqlite {
                    path,
                    durability,
                    limits,
                })
            }
            "redb" => {
                let (path, durability, limits) = file_location(url, rest)?;
                Ok(StoreUrl::Redb {
                    path,
                    durability,
                    limits,
                })
            }
            "s3" => {
                let Some(location) = rest.strip_prefix("//") else {
                    return Err(invalid("expected s3://BUCKET/PREFIX"));
                };
                let (location, query) = match location.split_once('?') {
                    Some((location, query)) => (location, Some(query)),
                    None => (location, None),
                };
                let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
                if bucket.is_empty() {
                    return Err(invalid(
                        "the bucket name is empty; expected s3://BUCKET/PREFIX",
                    ));
                }
                if bucket.contains('#') || prefix.contains('#') {
                    return Err(invalid(
                        "s3 URLs take no fragment; set the endpoint with AWS_ENDPOINT_URL",
                    ));
                }
                let mut limits = Limits::default();
                for pair in query.into_iter().flat_map(|query| query.split('&')) {
                    if !limits_option(pair, &mut limits).map_err(|reason| invalid(&reason))? {
                        return Err(invalid(&format!(
                            "unknown option {pair:?}; s3 URLs take only max_record_bytes=N \
                             (set the endpoint with AWS_ENDPOINT_URL)"
                        )));
                    }
                }
                Ok(StoreUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                    limits,
                })
            }
            "postgres" | "postgresql" => {
                if !rest.starts_with("//") {
                    return Err(invalid(
                        "expected postgres://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE",
                    ));
                }
                postgres_location(url)
            }
            "memory" => {
                if !rest.is_empty() {
                    return Err(invalid(
                        "the memory store takes no location; write `memory:`",
                    ));
                }
                Ok(StoreUrl::Memory)
            }
            _ => Err(OpenError::UnknownScheme {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// The backend the URL names.
    pub fn backend(&self) -> Backend {
        match self {
            StoreUrl::Jsonl { .. } => Backend::Jsonl,
            StoreUrl::Sqlite { .. } => Backend::Sqlite,
            StoreUrl::Redb { .. } => Backend::Redb,
            StoreUrl::S3 { .. } => Backend::S3,
            StoreUrl::Postgres { .. } => Backend::Postgres,
            StoreUrl::Memory => Backend::Memory,
        }
    }
}

impl FromStr for StoreUrl {
    type Err = OpenError;

    fn from_str(url: &str) -> Result<Self, OpenError> {
        Self::parse(url)
    }
}

impl fmt::Display for StoreUrl {
    /// The URL in canonical form; parsing it gives the same `StoreUrl`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = |f: &mut fmt::Formatter<'_>,
                    scheme: &str,
                    path: &PathBuf,
                    durability,
                    limits: &Limits| {
            let path = path.display().to_string();
            // Parsing drops a `//` after the scheme; a path's own survives.
            let slashes = if path.starts_with("//") { "//" } else { "" };
            write!(f, "{scheme}:{slashes}{path}")?;
            let mut separator = '?';
            if durability == Durability::Relaxed {
                f.write_str("?durability=relaxed")?;
                separator = '&';
            }
            write_limits(f, separator, limits)
        };
        match self {
            StoreUrl::Jsonl {
                path,
                durability,
                limits,
            } => file(f, "jsonl", path, *durability, limits),
            StoreUrl::Sqlite {
                path,
                durability,
                limits,
            } => file(f, "sqlite", path, *durability, limits),
            StoreUrl::Redb {
                path,
                durability,
                limits,
            } => file(f, "redb", path, *durability, limits),
            StoreUrl::S3 {
                bucket,
                prefix,
                limits,
            } => {
                write!(f, "s3://{bucket}/{prefix}")?;
                write_limits(f, '?', limits)
            }
            StoreUrl::Postgres {
                url,
                schema,
                durability,
                limits,
            } => {
                f.write_str(&redact_password(url))?;
                let mut separator = if url.contains('?') { '&' } else { '?' };
                if let Some(schema) = schema {
                    write!(f, "{separator}schema={schema}")?;
                    separator = '&';
                }
                if *durability == Durability::Relaxed {
                    write!(f, "{separator}durability=relaxed")?;
                    separator = '&';
                }
                write_limits(f, separator, limits)
            }
            StoreUrl::Memory => f.write_str("memory:"),
        }
    }
}

/// Splits `scheme:rest` when `url` starts with a URL scheme. A single letter
/// before the colon is a Windows drive (`C:\data`), not a scheme.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let is_scheme = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && scheme.len() > 1;
    is_scheme.then_some((scheme, rest))
}

/// Writes `max_record_bytes` when it is not the default.
fn write_limits(f: &mut fmt::Formatter<'_>, separator: char, limits: &Limits) -> fmt::Result {
    if *limits != Limits::default() {
        write!(
            f,
            "{separator}max_record_bytes={}",
            limits.max_record_bytes()
        )?;
    }
    Ok(())
}

/// Reads `pair` into `limits` when it is `max_record_bytes=N`: `Ok(true)`
/// when it was, `Ok(false)` for another option.
fn limits_option(pair: &str, limits: &mut Limits) -> Result<bool, String> {
    let Some(("max_record_bytes", value)) = pair.split_once('=') else {
        return Ok(false);
    };
    let bytes: usize = value
        .parse()
        .map_err(|_| format!("max_record_bytes {value:?} is not a whole number of bytes"))?;
    *limits = Limits::with_max_record_bytes(bytes).map_err(|err| match err {
        runstore_core::Error::InvalidInput { reason } => reason,
        other => other.to_string(),
    })?;
    Ok(true)
}

/// The path and options of a file backend's `rest` (after `scheme:`).
fn file_location(url: &str, rest: &str) -> Result<(PathBuf, Durability, Limits), OpenError> {
    file_path(url, rest.strip_prefix("//").unwrap_or(rest))
}

/// The path and options of `PATH[?durability=...&max_record_bytes=N]`.
fn file_path(url: &str, rest: &str) -> Result<(PathBuf, Durability, Limits), OpenError> {
    let invalid = |reason: String| OpenError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(invalid("the path is empty".to_owned()));
    }
    let mut durability = Durability::Durable;
    let mut limits = Limits::default();
    for pair in query.into_iter().flat_map(|query| query.split('&')) {
        if limits_option(pair, &mut limits).map_err(invalid)? {
            continue;
        }
        match pair.split_once('=') {
            Some(("durability", "durable")) => durability = Durability::Durable,
            Some(("durability", "relaxed")) => durability = Durability::Relaxed,
            Some(("durability", other)) => {
                return Err(invalid(format!(
                    "durability {other:?} is not `durable` or `relaxed`"
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "unknown option {pair:?}; the options are durability=durable|relaxed \
                     and max_record_bytes=N"
                )));
            }
        }
    }
    Ok((PathBuf::from(path), durability, limits))
}

/// Splits runstore's own options (`schema`, `durability`) off a PostgreSQL
/// URL; every other query parameter stays for the driver.
fn postgres_location(url: &str) -> Result<StoreUrl, OpenError> {
    let invalid = |reason: String| OpenError::InvalidUrl {
        url: redact_password(url),
        reason,
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut schema = None;
    let mut durability = Durability::Durable;
    let mut limits = Limits::default();
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|query| query.split('&')) {
        if limits_option(pair, &mut limits).map_err(invalid)? {
            continue;
        }
        match pair.split_once('=') {
            Some(("schema", name)) => {
                if name.is_empty() {
                    return Err(invalid("the schema name is empty".to_owned()));
                }
                schema = Some(name.to_owned());
            }
            Some(("durability", "durable")) => durability = Durability::Durable,
            Some(("durability", "relaxed")) => durability = Durability::Relaxed,
            Some(("durability", other)) => {
                return Err(invalid(format!(
                    "durability {other:?} is not `durable` or `relaxed`"
                )));
            }
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(StoreUrl::Postgres {
        url,
        schema,
        durability,
        limits,
    })
}

/// A PostgreSQL URL with its password (if any) replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> StoreUrl {
        StoreUrl::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"))
    }

    #[test]
    fn file_schemes_take_paths_and_durability() {
        assert_eq!(
            parse("jsonl:./data"),
            StoreUrl::Jsonl {
                path: "./data".into(),
                durability: Durability::Durable,
                limits: Limits::default()
            }
        );
        assert_eq!(
            parse("./data"),
            StoreUrl::Jsonl {
                path: "./data".into(),
                durability: Durability::Durable,
                limits: Limits::default()
            }
        );
        assert_eq!(
            parse("sqlite:///tmp/a.db?durability=relaxed"),
            StoreUrl::Sqlite {
                path: "/tmp/a.db".into(),
                durability: Durability::Relaxed,
                limits: Limits::default()
            }
        );
        assert_eq!(
            parse("redb://rel.redb"),
            StoreUrl::Redb {
                path: "rel.redb".into(),
                durability: Durability::Durable,
                limits: Limits::default()
            }
        );
        assert_eq!(parse("C:\\data").backend(), Backend::Jsonl);
    }

    #[test]
    fn service_schemes() {
        assert_eq!(
            parse("s3://bucket/some/prefix/"),
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into(),
                limits: Limits::default()
            }
        );
        assert_eq!(
            parse("s3://bucket"),
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: String::new(),
                limits: Limits::default()
            }
        );
        let pg = "postgresql://u:secret@localhost:5432/db?sslmode=disable";
        assert_eq!(
            parse(pg),
            StoreUrl::Postgres {
                url: pg.into(),
                schema: None,
                durability: Durability::Durable,
                limits: Limits::default()
            }
        );
        assert_eq!(
            parse(pg).to_string(),
            "postgresql://u:***@localhost:5432/db?sslmode=disable"
        );
        assert_eq!(
            parse("postgres://h/db?schema=tenant_a&sslmode=disable&durability=relaxed"),
            StoreUrl::Postgres {
                url: "postgres://h/db?sslmode=disable".into(),
                schema: Some("tenant_a".into()),
                durability: Durability::Relaxed,
                limits: Limits::default()
            }
        );
        assert_eq!(parse("memory:"), StoreUrl::Memory);
    }

    #[test]
    fn max_record_bytes_is_an_option_of_every_store() {
        let limits = Limits::with_max_record_bytes(1_000).unwrap();
        assert_eq!(
            parse("redb:x.redb?max_record_bytes=1000&durability=relaxed"),
            StoreUrl::Redb {
                path: "x.redb".into(),
                durability: Durability::Relaxed,
                limits
            }
        );
        assert!(matches!(
            parse("s3://b/p?max_record_bytes=1000"),
            StoreUrl::S3 { limits: l, .. } if l == limits
        ));
        assert!(matches!(
            parse("postgres://h/db?max_record_bytes=1000&sslmode=disable"),
            StoreUrl::Postgres { limits: l, url, .. } if l == limits && url == "postgres://h/db?sslmode=disable"
        ));
        let err = StoreUrl::parse("jsonl:x?max_record_bytes=0").unwrap_err();
        assert!(
            err.to_string()
                .contains("max_record_bytes 0 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        assert!(matches!(
            StoreUrl::parse("ftp://x"),
            Err(OpenError::UnknownScheme { scheme, .. }) if scheme == "ftp"
        ));
        for bad in [
            "",
            "jsonl:",
            "sqlite:a?durability=maybe",
            "redb:a?color=red",
            "s3://",
            "s3:bucket",
            "postgres:db",
            "postgres://h/db?schema=",
            "postgres://h/db?durability=fast",
            "memory:x",
            "jsonl:a?max_record_bytes=0",
            "sqlite:a?max_record_bytes=lots",
            "s3://b/p?max_record_bytes=999999999999",
            "s3://b/p?region=eu",
            "postgres://h/db?max_record_bytes=-1",
        ] {
            assert!(
                matches!(StoreUrl::parse(bad), Err(OpenError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn leading_slashes_survive_parse_and_display() {
        // Found by the store_url fuzz target: `////` parsed to the path `//`,
        // shown as `jsonl://`, which does not parse.
        assert_eq!(
            parse("////"),
            StoreUrl::Jsonl {
                path: "////".into(),
                durability: Durability::Durable,
                limits: Limits::default()
            }
        );
        // A bare path is taken as it is; only a scheme's `//` is dropped.
        assert_eq!(
            parse("//srv/share"),
            StoreUrl::Jsonl {
                path: "//srv/share".into(),
                durability: Durability::Durable,
                limits: Limits::default()
            }
        );
        for url in [
            "////",
            "//srv/share",
            "jsonl:////x",
            "sqlite:////x?durability=relaxed",
        ] {
            let shown = parse(url).to_string();
            assert_eq!(parse(&shown), parse(url), "{url} shows as {shown}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in [
            "jsonl:/tmp/x",
            "sqlite:a.db?durability=relaxed",
            "redb:/x/y.redb",
            "s3://b/p",
            "memory:",
            "postgres://h/db?schema=s&durability=relaxed",
            "postgres://h/db?sslmode=disable&schema=s",
            "jsonl:/tmp/x?max_record_bytes=1024",
            "sqlite:a.db?durability=relaxed&max_record_bytes=65536",
            "s3://b/p?max_record_bytes=10",
            "postgres://h/db?schema=s&max_record_bytes=99",
        ] {
            assert_eq!(parse(&parse(url).to_string()), parse(url), "{url}");
        }
    }
}
