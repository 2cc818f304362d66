//! Shared helpers for natfw's benchmarks (synthetic policies and traffic).
