//! Unit tests of the pod rules, against the fake runtime.
