//! The Hungarian algorithm (Kuhn-Munkres with potentials, O(rows² x cols)):
//! the assignment of rows to distinct columns with the least total cost.
//!
//! LinkBalance snaps each candidate of its search (a target point on the
//! mesh for every logical node) to a permutation of the dies with it, on
//! Manhattan cost. Written here rather than taken from a crate: it is forty
//! lines, and the well-known crates that have it (`pathfinding`) bring far
//! more than this one function.

/// Each row's column in an assignment of minimum total cost: `cost[r][c]`
/// is the cost of row `r` taking column `c`; rows take distinct columns,
/// so there must be at least as many columns as rows. Costs must be finite.
pub fn assign(cost: &[Vec<f64>]) -> Result<Vec<usize>, String> {
    let rows = cost.len();
    if rows == 0 {
        return Ok(Vec::new());
    }
    let cols = cost[0].len();
    if cost.iter().any(|r| r.len() != cols) {
        return Err("the cost matrix has rows of different lengths".into());
    }
    if cols < rows {
        return Err(format!("{rows} rows cannot take distinct columns among {cols}"));
    }
    if cost.iter().flatten().any(|c| !c.is_finite()) {
        return Err("the cost matrix has a cost that is not finite".into());
    }
    // 1-based as in the classic statement: row 0 and column 0 are sentinels.
    // `u`, `v`: the dual potentials; `owner[c]`: the row holding column c;
    // `way[c]`: the column before c on the augmenting path.
    let mut u = vec![0.0f64; rows + 1];
    let mut v = vec![0.0f64; cols + 1];
    let mut owner = vec![0usize; cols + 1];
    let mut way = vec![0usize; cols + 1];
    for row in 1..=rows {
        owner[0] = row;
        let mut col = 0usize;
        let mut slack = vec![f64::INFINITY; cols + 1];
        let mut used = vec![false; cols + 1];
        // Grow a tree of tight edges from `row` until it reaches a free column.
        loop {
            used[col] = true;
            let r = owner[col];
            let mut delta = f64::INFINITY;
            let mut next = 0usize;
            for c in 1..=cols {
                if used[c] {
                    continue;
                }
                let reduced = cost[r - 1][c - 1] - u[r] - v[c];
                if reduced < slack[c] {
                    slack[c] = reduced;
                    way[c] = col;
                }
                if slack[c] < delta {
                    delta = slack[c];
                    next = c;
                }
            }
            if next == 0 {
                // Only when every column is used, which cols >= rows rules out.
                return Err("the assignment found no free column".into());
            }
            for c in 0..=cols {
                if used[c] {
                    u[owner[c]] += delta;
                    v[c] -= delta;
                } else {
                    slack[c] -= delta;
                }
            }
            col = next;
            if owner[col] == 0 {
                break;
            }
        }
        // Flip the augmenting path.
        while col != 0 {
            let prev = way[col];
            owner[col] = owner[prev];
            col = prev;
        }
    }
    let mut out = vec![0usize; rows];
    for c in 1..=cols {
        if owner[c] != 0 {
            out[owner[c] - 1] = c - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moec_runtime::rng::Rng;

    fn total(cost: &[Vec<f64>], a: &[usize]) -> f64 {
        a.iter().enumerate().map(|(r, &c)| cost[r][c]).sum()
    }

    /// The least cost over every injective assignment, by brute force.
    fn brute_force(cost: &[Vec<f64>]) -> f64 {
        fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == cost.len() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..used.len() {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row][c] + go(cost, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, 0, &mut vec![false; cost[0].len()])
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut rng = Rng::new(11);
        for (rows, cols) in [(1, 1), (3, 3), (5, 5), (6, 6), (3, 5), (4, 7)] {
            for _ in 0..20 {
                let cost: Vec<Vec<f64>> = (0..rows)
                    .map(|_| (0..cols).map(|_| (rng.below(20) as f64) - 5.0).collect())
                    .collect();
                let a = assign(&cost).unwrap();
                let mut seen = a.clone();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), rows, "distinct columns: {a:?}");
                assert!(a.iter().all(|&c| c < cols));
                assert!((total(&cost, &a) - brute_force(&cost)).abs() < 1e-9, "{cost:?}: {a:?}");
            }
        }
    }

    #[test]
    fn manhattan_targets_on_the_dies_snap_to_themselves() {
        // Four dies of a 2x2 mesh; each target sits on a die (shuffled).
        let dies: [(f64, f64); 4] = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)];
        let targets = [dies[2], dies[0], dies[3], dies[1]];
        let cost: Vec<Vec<f64>> = targets
            .iter()
            .map(|t| dies.iter().map(|d| (t.0 - d.0).abs() + (t.1 - d.1).abs()).collect())
            .collect();
        assert_eq!(assign(&cost).unwrap(), vec![2, 0, 3, 1]);
    }

    #[test]
    fn malformed_matrices_are_errors() {
        assert!(assign(&[]).unwrap().is_empty());
        assert!(assign(&[vec![1.0, 2.0], vec![3.0]]).is_err());
        assert!(assign(&[vec![1.0], vec![2.0]]).is_err());
        assert!(assign(&[vec![f64::NAN]]).is_err());
    }
}
