//! The send service (M§2.1): written in the next step.
