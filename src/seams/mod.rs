//! Seams: the thin traits through which the layers meet, and their small value types.

#[cfg(test)]
mod layering;
