//! The `credproxy` binary's commands, the demo, the example configs, and the README's commands.

mod check;
mod commands;
mod config_examples;
mod demo;
mod readme;
mod secrets;
mod wiring;
