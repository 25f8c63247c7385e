//! Where data lives. Each connector yields rows (or objects) with what they say about their
//! own lifetime, and deletes by key.

pub mod sqlite;

use std::fmt;

use lethe_core::expiry::Raw;
use serde::{Deserialize, Serialize};

/// An item's identity in its target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

impl rusqlite::ToSql for Key {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Key::Int(i) => i.to_sql(),
            Key::Text(s) => s.to_sql(),
        }
    }
}

/// A stored value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob,
}

impl Value {
    pub fn raw(&self) -> Raw<'_> {
        match self {
            Value::Null => Raw::Null,
            Value::Int(i) => Raw::Int(*i),
            Value::Real(f) => Raw::Real(*f),
            Value::Text(s) => Raw::Text(s),
            Value::Blob => Raw::Blob,
        }
    }
}

/// One row as a connector reads it. Columns a target does not map read as `Null`.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: Result<Key, String>,
    pub created_at: Value,
    pub retention_days: Value,
    pub expires_at: Value,
    pub subject: Result<Option<String>, String>,
    pub file: Result<Option<String>, String>,
}
