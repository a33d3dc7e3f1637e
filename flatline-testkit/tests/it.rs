//! The test kit's own tests: the in-memory store passes the conformance suite.

mod memory {
    use std::sync::Arc;

    flatline_testkit::conformance_suite!(|| async {
        Arc::new(flatline_testkit::MemoryStore::new())
    });
}
