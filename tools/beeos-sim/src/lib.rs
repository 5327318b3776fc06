//! BeeOS API simulator (work in progress).
