//! The conformance suite run over every backend in the registry: `tests/backends.rs`. A registered backend with
//! no test configuration there fails the suite instead of being skipped.
