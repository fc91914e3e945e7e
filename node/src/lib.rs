//! cinemesh node
