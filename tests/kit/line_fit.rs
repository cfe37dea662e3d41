//! A least-squares line through `(x, y)` samples, for benches whose samples are noisy (RSS
//! moves by several MiB between two samples of a soak). Included by path by
//! `examples/store_rss.rs` as well as through the kit.

/// The least-squares line through some samples.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Rise of y per unit of x.
    pub slope: f64,
    mean_x: f64,
    mean_y: f64,
}

impl Line {
    /// The line through `points` (NaN slope for fewer than two distinct x).
    pub fn fit(points: &[(f64, f64)]) -> Line {
        let k = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / k;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / k;
        let slope = points
            .iter()
            .map(|p| (p.0 - mean_x) * (p.1 - mean_y))
            .sum::<f64>()
            / points.iter().map(|p| (p.0 - mean_x).powi(2)).sum::<f64>();
        Line {
            slope,
            mean_x,
            mean_y,
        }
    }

    /// The line's y at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.mean_y + self.slope * (x - self.mean_x)
    }
}
