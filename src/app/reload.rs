//! A reload (SIGHUP): a new, already validated config swapped in as a new generation of the
//! request path's state. Providers whose settings did not change keep their refresher (token and
//! schedule), changed or new ones start fresh, removed ones stop; listeners are opened and closed
//! as needed; settings that need a restart are named.

use super::*;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub kept: Vec<String>,
    pub restarted: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub listeners_opened: Vec<String>,
    pub listeners_closed: Vec<String>,
    /// Settings that only take effect after a restart.
    pub needs_restart: Vec<String>,
}

impl Running {
    /// Apply a new, already validated config (SIGHUP). On error the old config stays in force.
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, AppError> {
        let mut summary = ReloadSummary::default();
        let (old_proxy, old_store) = {
            let st = self.state.lock();
            (st.proxy.clone(), st.store.clone())
        };
        let p = &config.proxy;
        for (what, changed) in [
            ("state_dir", p.state_dir != old_proxy.state_dir),
            ("store", config.store != old_store),
            ("admin_listen", p.admin_listen != old_proxy.admin_listen),
            (
                "max_connections",
                p.max_connections != old_proxy.max_connections,
            ),
            (
                "max_connections_per_client",
                p.max_connections_per_client != old_proxy.max_connections_per_client,
            ),
            ("socket_mode", p.socket_mode != old_proxy.socket_mode),
            (
                "audit_log",
                p.audit_log.is_some() != old_proxy.audit_log.is_some(),
            ),
        ] {
            if changed {
                summary.needs_restart.push(what.to_owned());
            }
        }
        // Everything that can fail comes first, before anything changes.
        let roots = crate::tls::roots(p.ca_file.as_deref())?;
        let intercept = intercept_leaves(&config)?;
        let upstream_tls = crate::tls::client_config(roots, &[b"h2", b"http/1.1"])?;
        let mut new_binds = Vec::new();
        {
            let st = self.state.lock();
            for (listen, _, _) in listener_plan(&config) {
                if !st.listeners.iter().any(|l| l.listen == listen) {
                    new_binds.push((
                        listen.clone(),
                        bind::bind(
                            &listen,
                            sockets_for(&listen, &self.workers),
                            p.socket_mode,
                            false,
                        )?,
                    ));
                }
            }
        }

        let mut st = self.state.lock();
        // Providers: keep the unchanged (token and schedule), restart the changed, add, remove.
        let mut old: Vec<ProviderTask> = std::mem::take(&mut st.providers);
        let mut providers = Vec::new();
        for cfg in &config.providers {
            match old.iter().position(|t| t.config.name == cfg.name) {
                Some(i) if same_but_rules(&old[i].config, cfg) => {
                    summary.kept.push(cfg.name.clone());
                    let mut task = old.remove(i);
                    // New rules apply from this generation on; the refresher never reads them.
                    task.config = cfg.clone();
                    providers.push(task);
                }
                found => {
                    if let Some(i) = found {
                        old.remove(i).cancel.cancel();
                        summary.restarted.push(cfg.name.clone());
                    } else {
                        summary.added.push(cfg.name.clone());
                    }
                    providers.push(start_provider(
                        cfg.clone(),
                        &st.engine,
                        &self.cancel,
                        &self.background,
                    ));
                }
            }
        }
        for gone in old {
            summary.removed.push(gone.config.name.clone());
            gone.cancel.cancel();
        }
        st.providers = providers;
        st.proxy = config.proxy.clone();
        // The new config's proxy_auth is its own secret (read again by this load): its keeper
        // replaces the old one.
        if let Some(old) = st.proxy_auth_keeper.take() {
            old.cancel();
        }
        st.proxy_auth_keeper = keep_proxy_auth(&config.proxy, &self.cancel, &self.background);
        let shared = build_shared(
            &config,
            &st.providers,
            &self.metrics,
            upstream_tls,
            intercept,
            st.audit.clone(),
        );
        st.shared = shared.clone();
        // SIGHUP is also log rotation: the audit log is reopened (at the path now configured).
        if let (Some(audit), Some(target)) = (&st.audit, &config.proxy.audit_log) {
            audit.reopen(target.clone());
        }
        st.callers_cancel.cancel();
        st.callers_cancel = self.cancel.child_token();
        keep_callers(&config, &st.callers_cancel, &self.background);

        // Listeners: update the kept, open the new, close the removed.
        let plan = listener_plan(&config);
        let mut listeners = Vec::new();
        let mut old_listeners: Vec<ListenerEntry> = std::mem::take(&mut st.listeners);
        for (listen, provider, require_auth) in plan {
            if let Some(i) = old_listeners.iter().position(|l| l.listen == listen) {
                let mut entry = old_listeners.remove(i);
                entry.provider = provider;
                entry.require_auth = require_auth;
                let state = listener_state(&shared, &config.proxy, &entry);
                for cell in &entry.cells {
                    cell.store(state.clone());
                }
                listeners.push(entry);
            } else {
                let (_, (bound, addr)) = new_binds
                    .iter()
                    .position(|(l, _)| *l == listen)
                    .map(|i| new_binds.remove(i))
                    .expect("bound above");
                summary.listeners_opened.push(addr.to_string());
                listeners.push(self.serve_listener(
                    &st,
                    listen,
                    provider,
                    require_auth,
                    bound,
                    addr,
                ));
            }
        }
        for gone in old_listeners {
            summary.listeners_closed.push(gone.addr.to_string());
            gone.cancel.cancel();
        }
        st.listeners = listeners;
        drop(st);

        if let Some(admin) = &self.admin_state {
            admin.providers.store(Arc::new(admin_providers(&shared)));
            admin.set_routes(&config.routes);
            admin.set_callers(&config.callers);
            admin.set_proxy_auth(config.proxy.proxy_auth.as_ref());
        }
        Ok(summary)
    }
}

/// `a` and `b` differ in their `allow` / `deny` rules at most: what a request may do, not how its
/// credential is obtained, so the provider keeps its refresher (token and schedule).
fn same_but_rules(a: &ProviderConfig, b: &ProviderConfig) -> bool {
    a == b
        || (a.rules != b.rules
            && ProviderConfig {
                rules: b.rules.clone(),
                ..a.clone()
            } == *b)
}
