//! `[[servers]]`: the Exchange servers the responder may act on, what each does, and the throttle group it is in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ServerName;

/// The inventory: every listed server, by name.
pub type Inventory = BTreeMap<ServerName, InventoryEntry>;

/// One `[[servers]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: ServerName,
    pub role: Role,
    #[serde(default)]
    pub group: Option<String>,
    /// This server's own Exchange Management Shell endpoint, instead of `executor.connection_uri`.
    #[serde(default)]
    pub connection_uri: Option<String>,
}

/// What an Exchange 2013 server does; it decides the restart path (a Mailbox server fails its databases over first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Cas,
    Mailbox,
    Multi,
}

impl Role {
    pub fn hosts_databases(self) -> bool {
        matches!(self, Role::Mailbox | Role::Multi)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Cas => "CAS",
            Role::Mailbox => "Mailbox",
            Role::Multi => "multi-role",
        })
    }
}

/// One server of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryEntry {
    pub role: Role,
    /// The throttle group: the DAG for Mailbox servers, the CAS array for CAS; the server itself when not set.
    pub group: String,
    /// Where this server's Exchange steps connect, when not `executor.connection_uri`.
    pub connection_uri: Option<String>,
}
