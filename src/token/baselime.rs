//! Baselime's step 4 (`shared/seeds/baselime.md`): after the code exchange, `GET /oauth/workspaces`
//! with the new access token names the workspace and environment (public, shown by `credproxy
//! status`) and an `apiKey` for uploading data (a secret: stored, never shown).

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::EngineContext;
use super::error::{TokenError, chain};
use super::oauth::call;
use super::reply::{ReplyError, printable};
use super::request::{self, sensitive};
use super::store::StoredToken;
use crate::secret::Secret;

const WORKSPACES_ENDPOINT: &str = "Baselime workspaces endpoint";

/// Fetch the workspaces into `t` (first workspace's ids in `details`, its `apiKey` in `secrets`).
/// Best effort: the token is good without them, so a failure is logged and the login goes on.
pub async fn add_workspace(ctx: &EngineContext, url: &http::Uri, t: &mut StoredToken) {
    match workspaces(ctx, url, &t.access_token).await {
        Ok(list) => {
            if list.len() > 1 {
                tracing::info!(
                    workspaces = list.len(),
                    "several Baselime workspaces; using the first"
                );
            }
            if let Some(first) = list.into_iter().next() {
                for (k, v) in first.public {
                    t.details.insert(k, v);
                }
                if let Some(key) = first.api_key {
                    t.secrets.insert("apiKey".to_owned(), key);
                }
            }
        }
        Err(e) => tracing::warn!(error = %chain(&e), "listing Baselime workspaces failed"),
    }
}

struct Workspace {
    public: Vec<(String, String)>,
    api_key: Option<Secret>,
}

async fn workspaces(
    ctx: &EngineContext,
    url: &http::Uri,
    token: &Secret,
) -> Result<Vec<Workspace>, TokenError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        sensitive(&format!("Bearer {}", token.expose())),
    );
    // The document lists this header on the GET too.
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let req = request::build(Method::GET, url, headers, None);
    let reply = call(&ctx.client, WORKSPACES_ENDPOINT, req, &ctx.clock).await?;
    let bad = |source| TokenError::Reply {
        endpoint: WORKSPACES_ENDPOINT,
        source,
    };
    let v: Value = serde_json::from_slice(&reply.body).map_err(|_| bad(ReplyError::NotJson))?;
    let Value::Array(items) = v else {
        return Err(bad(ReplyError::NotObject));
    };
    Ok(items
        .iter()
        .map(|w| Workspace {
            public: ["workspaceId", "environmentId"]
                .iter()
                // Shown by `credproxy status` and /status: printable ASCII only.
                .filter_map(|k| Some(((*k).to_owned(), printable(w.get(*k)?.as_str()?, 200))))
                .collect(),
            api_key: w.get("apiKey").and_then(Value::as_str).map(Secret::from),
        })
        .collect())
}
