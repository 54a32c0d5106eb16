//! The admin listener, metrics, JSON access logs, status and healthcheck, and reload.

mod audit;
mod listener;
mod page;
mod reload;
