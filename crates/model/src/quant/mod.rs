//! Quantised tensor formats and kernels (in progress).
