//! Content: a directory tree -> manifest.
