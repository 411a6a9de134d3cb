//! `ftsweep serve` over real HTTP on loopback.
