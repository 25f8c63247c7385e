//! Where targets reach, for the checks every command makes before it touches anything: two
//! targets that reach one place (a hold placed through one would not protect what the other
//! deletes), and a target in Lethe's own state database. Found from the config, the URLs and
//! the file system; only a SQL target's own database is asked what its table is.

use std::path::PathBuf;

use lethe_core::config::Target;

use crate::settings::Loaded;
use crate::targets::{Place, kind_of};

fn place_of(loaded: &Loaded, t: &Target) -> Option<Place> {
    kind_of(t).place(t, &loaded.base)
}

/// Pairs of targets that reach the same table, or overlapping trees or prefixes: a hold or
/// exception placed through one would not protect the items the other deletes, so such a
/// config is refused. Each problem is given with the later target of the pair.
pub fn shared_places(loaded: &Loaded) -> Vec<(&Target, String)> {
    let places: Vec<(&Target, Place)> = loaded
        .config
        .targets
        .iter()
        .filter_map(|t| place_of(loaded, t).map(|p| (t, p)))
        .collect();
    let line = loaded
        .config
        .state
        .line
        .map(|l| format!(", line {l}"))
        .unwrap_or_default();
    let mut out: Vec<(&Target, String)> = state_in_targets(loaded)
        .into_iter()
        .map(|(t, why)| {
            (
                t,
                format!("reaches Lethe's own state database (state.url{line}): {why}"),
            )
        })
        .collect();
    for (i, (b, pb)) in places.iter().enumerate() {
        for (a, pa) in &places[..i] {
            let what = match (pa, pb) {
                (Place::Table(x), Place::Table(y))
                    if x.first().is_some_and(|t| y.contains(t))
                        || y.first().is_some_and(|t| x.contains(t)) =>
                {
                    Some(if x.first() == y.first() {
                        "the same table".to_string()
                    } else {
                        "a table and its partition or inheritance child".to_string()
                    })
                }
                (Place::Tree(x), Place::Tree(y)) if x.starts_with(y) || y.starts_with(x) => {
                    Some(format!(
                        "overlapping directories ({} and {})",
                        x.display(),
                        y.display()
                    ))
                }
                (Place::Prefix(sx, x), Place::Prefix(sy, y))
                    if sx == sy && (x.starts_with(y) || y.starts_with(x)) =>
                {
                    Some("overlapping prefixes of one bucket".to_string())
                }
                (Place::Account(x), Place::Account(y)) if x.meets(y) => {
                    Some("the same kinds of item of what may be one vendor project (an unset organization or project may be any; set both on each target if they are different projects)".to_string())
                }
                _ => None,
            };
            if let Some(what) = what {
                out.push((
                    *b,
                    format!(
                        "reaches {what} as target {}: holds and exceptions placed through one would not protect the items the other deletes; point one target at it, or remove the other",
                        a.name
                    ),
                ));
            }
        }
    }
    out
}

/// The SQL targets in Lethe's own state database (`[state] url`), each with why that is
/// refused. Found from the URLs and files alone, opening no database, so that every command
/// refuses such a config before the state is created in a target's database.
pub fn state_in_targets(loaded: &Loaded) -> Vec<(&Target, String)> {
    const WHY: &str = "keep the state in a database of its own (a sweep would wait on its own \
                       locks, or delete Lethe's own records)";
    let state = &loaded.config.state.url;
    let state_files: Vec<PathBuf> = crate::state::sqlite_path(state, &loaded.base)
        .map(|p| {
            // The state's own second database, beside it (state.rs, `<state>.pending`).
            let mut pending = p.clone().into_os_string();
            pending.push(".pending");
            vec![p, PathBuf::from(pending)]
        })
        .unwrap_or_default();
    let state_pg = pg_database(state);
    loaded
        .config
        .targets
        .iter()
        .filter(|t| {
            let Some(url) = kind_of(t).database_url(t) else {
                return false;
            };
            match crate::state::sqlite_path(url, &loaded.base) {
                Some(file) => state_files.iter().any(|st| same_file(st, &file)),
                None => state_pg
                    .as_ref()
                    .zip(pg_database(url))
                    .is_some_and(|(a, b)| a.same_database(&b)),
            }
        })
        .map(|t| (t, WHY.to_string()))
        .collect()
}

/// Whether two paths name one file: the same inode when both exist (links, `..`, hard
/// links), else the same path once the directories that exist are resolved.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    let resolve = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .ok()
            .or_else(|| {
                let dir = std::fs::canonicalize(p.parent()?).ok()?;
                Some(dir.join(p.file_name()?))
            })
            .unwrap_or_else(|| p.to_path_buf())
    };
    resolve(a) == resolve(b)
}

/// Where a PostgreSQL URL leads: its servers (host and port) and database.
struct PgDatabase {
    servers: Vec<(String, u16)>,
    dbname: String,
}

impl PgDatabase {
    fn same_database(&self, other: &PgDatabase) -> bool {
        self.dbname == other.dbname && self.servers.iter().any(|s| other.servers.contains(s))
    }
}

/// The servers and database a `postgres://` URL names, as written: the loopback names and
/// a local socket are one host (a server on this machine listens on both), the default port
/// is 5432 and the default database the user's name.
fn pg_database(url: &str) -> Option<PgDatabase> {
    use postgres::config::Host;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let c: postgres::Config = url.parse().ok()?;
    let local = "this machine".to_string();
    let mut hosts: Vec<String> = c
        .get_hostaddrs()
        .iter()
        .map(|a| {
            if a.is_loopback() {
                local.clone()
            } else {
                a.to_string()
            }
        })
        .collect();
    if hosts.is_empty() {
        hosts = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => {
                    let name = name.trim_matches(['[', ']']).to_ascii_lowercase();
                    let loopback = name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if loopback { local.clone() } else { name }
                }
                Host::Unix(_) => local.clone(),
            })
            .collect();
    }
    if hosts.is_empty() {
        hosts.push(local);
    }
    let ports = c.get_ports();
    let servers = hosts
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let port = match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(5432),
            };
            (h, port)
        })
        .collect();
    let dbname = c
        .get_dbname()
        .or(c.get_user())
        .unwrap_or_default()
        .to_string();
    Some(PgDatabase { servers, dbname })
}
