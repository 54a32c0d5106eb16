//! The `credproxy` binary's commands, the demo, and the example configs.

mod commands;
mod config_examples;
mod demo;
