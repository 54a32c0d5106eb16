//! Tokens obtained but not committed while Redis could not be reached, kept on local disk until
//! it can: a file store of their own (`state_dir/redis-pending/`, 0700; files 0600, written
//! atomically, symlinks refused), so a restart in between does not lose a rotated refresh token.
//! They are in the clear there, like every token of the file store, and only until Redis is back.

use std::path::PathBuf;

use crate::token::store::{FileStore, StoreError, StoredToken, TokenStore};

pub struct Pending {
    files: FileStore,
}

impl Pending {
    pub fn open(dir: PathBuf) -> Result<Pending, StoreError> {
        Ok(Pending {
            files: FileStore::open(dir)?,
        })
    }

    pub fn keep(&self, provider: &str, token: &StoredToken) {
        if let Err(e) = self.files.save(provider, token) {
            tracing::error!(
                provider,
                error = %crate::token::error::chain(&e),
                "can't keep the uncommitted token on local disk either; it is served from memory until the next refresh"
            );
        }
    }

    pub fn forget(&self, provider: &str) {
        if let Err(e) = self.files.remove(provider) {
            tracing::debug!(provider, error = %e, "can't remove a kept token file");
        }
    }

    /// Every kept token, by provider.
    pub fn all(&self) -> Vec<(String, StoredToken)> {
        let Ok(entries) = std::fs::read_dir(self.files.dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let provider = name.strip_suffix(".json")?.to_owned();
                if provider.starts_with('.') {
                    return None;
                }
                let token = self.files.load(&provider).ok()??;
                Some((provider, token))
            })
            .collect()
    }
}
