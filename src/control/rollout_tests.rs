//! Pure-core tests: every decision path driven with synthetic evaluations and a fake clock.
