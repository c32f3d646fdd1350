//! The mixed-integer solver MoETuner's ILP 1 and ILP 2 go to: HiGHS,
//! through good_lp's model building and the `highs` crate's solve, so the
//! search's own dual bound and gap come back with the solution. Built
//! without the `highs` feature (a machine where HiGHS's C++ cannot build),
//! microlp solves instead, under the time limit alone.
//!
//! HD-MoE's NodeBalance stays on microlp, called directly: under the same
//! deterministic node budget HiGHS reached its 5 s safety limit on 30 of
//! Mixtral's 32 layers on the 4x8 NMP mesh (a 157 s compile whose result
//! would depend on the machine), where microlp ends on the node budget.
//!
//! HiGHS runs on one thread with a fixed seed, stopping at the relative gap
//! asked for, a node budget (deterministic: the same input stops at the
//! same node on any machine) or the time limit (a backstop: a solve that
//! stops there can end differently on a slower machine, and its status says
//! so).

use good_lp::{Constraint, Expression, ProblemVariables, SolverModel, Variable, VariableDefinition};
use std::collections::HashMap;

/// When a solve stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Wall-clock seconds: the backstop.
    pub time_s: f64,
    /// Stop once the solution is proven within this fraction of the bound.
    pub rel_gap: f64,
    /// Branch-and-bound nodes at most (HiGHS only).
    pub nodes: u64,
}

/// How a solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Proven optimal.
    Optimal,
    /// Proven within the gap asked for.
    GapLimit,
    /// The node budget ended the search (HiGHS only).
    #[cfg_attr(not(feature = "highs"), allow(dead_code))]
    NodeLimit,
    /// The time limit ended the search.
    TimeLimit,
}

/// A solved program: each variable's value, in the order they were added.
#[derive(Clone, Debug)]
pub struct Solution {
    values: Vec<f64>,
    positions: HashMap<Variable, usize>,
    /// The solver's objective (without any constant term).
    pub objective: f64,
    /// The best lower bound the search proved, when the solver reports one.
    pub bound: Option<f64>,
    pub ended: Ended,
}

impl Solution {
    /// The value of `v` (0 for a variable of another program).
    pub fn value(&self, v: Variable) -> f64 {
        self.positions
            .get(&v)
            .and_then(|&i| self.values.get(i))
            .copied()
            .unwrap_or(0.0)
    }
}

/// The name of the solver this build uses, for compile notes.
pub fn solver_name() -> &'static str {
    if cfg!(feature = "highs") {
        "HiGHS"
    } else {
        "microlp"
    }
}

/// A program's variables, numbered as they are added (good_lp numbers its
/// columns the same way).
#[derive(Default)]
pub struct Program {
    vars: ProblemVariables,
    positions: HashMap<Variable, usize>,
}

impl Program {
    pub fn new() -> Program {
        Program::default()
    }

    /// Adds a variable.
    pub fn add(&mut self, def: VariableDefinition) -> Variable {
        let v = self.vars.add(def);
        self.positions.insert(v, self.positions.len());
        v
    }

    /// Minimises `objective` subject to `constraints`, from `warm` (values
    /// of some variables: the rest start at 0) when given. Errors say why no
    /// solution came back (infeasible, or the solver failed).
    pub fn minimise(
        self,
        objective: Expression,
        constraints: Vec<Constraint>,
        warm: &[(Variable, f64)],
        limits: Limits,
    ) -> Result<Solution, String> {
        solve(self, objective, constraints, warm, limits)
    }
}

#[cfg(feature = "highs")]
fn solve(
    program: Program,
    objective: Expression,
    constraints: Vec<Constraint>,
    warm: &[(Variable, f64)],
    limits: Limits,
) -> Result<Solution, String> {
    use highs::HighsModelStatus as S;
    let positions = program.positions;
    let n = positions.len();
    let mut problem = program.vars.minimise(objective).using(good_lp::highs);
    for c in constraints {
        problem.add_constraint(c);
    }
    let mut model = problem.try_into_inner().map_err(|e| e.to_string())?;
    model.set_option("threads", 1);
    model.set_option("random_seed", 0);
    model.set_option("time_limit", limits.time_s);
    model.set_option("mip_rel_gap", limits.rel_gap);
    model.set_option("mip_max_nodes", i32::try_from(limits.nodes).unwrap_or(i32::MAX));
    if !warm.is_empty() {
        let mut start = vec![0.0; n];
        for &(v, x) in warm {
            if let Some(slot) = positions.get(&v).and_then(|&i| start.get_mut(i)) {
                *slot = x;
            }
        }
        model.set_solution(Some(&start), None, None, None);
    }
    let solved = model.try_solve().map_err(|e| format!("HiGHS failed: {e:?}"))?;
    let ended = match solved.status() {
        S::Optimal => {
            let gap = solved.mip_gap();
            if gap.is_finite() && gap > 1e-9 {
                Ended::GapLimit
            } else {
                Ended::Optimal
            }
        }
        S::ReachedTimeLimit => Ended::TimeLimit,
        S::ReachedIterationLimit | S::ReachedSolutionLimit => Ended::NodeLimit,
        S::Infeasible | S::UnboundedOrInfeasible => return Err("the program is infeasible".into()),
        other => return Err(format!("HiGHS ended with {other:?}")),
    };
    if solved.primal_solution_status() != highs::HighsSolutionStatus::Feasible {
        return Err(format!("HiGHS found no solution ({ended:?})"));
    }
    let bound = solved
        .double_info_value(c"mip_dual_bound")
        .ok()
        .filter(|b| b.is_finite());
    let values = solved.get_solution().columns().to_vec();
    Ok(Solution {
        values,
        positions,
        objective: solved.objective_value(),
        bound,
        ended,
    })
}

#[cfg(not(feature = "highs"))]
fn solve(
    program: Program,
    objective: Expression,
    constraints: Vec<Constraint>,
    warm: &[(Variable, f64)],
    limits: Limits,
) -> Result<Solution, String> {
    use good_lp::{Solution as _, SolutionStatus, WithInitialSolution, WithTimeLimit};
    let positions = program.positions;
    let mut model = program.vars.minimise(objective.clone()).using(good_lp::microlp);
    for c in constraints {
        model.add_constraint(c);
    }
    let model = model.with_time_limit(limits.time_s);
    let model = if warm.is_empty() {
        model
    } else {
        model.with_initial_solution(warm.iter().copied())
    };
    let s = model.solve().map_err(|e| e.to_string())?;
    let ended = match s.status() {
        SolutionStatus::Optimal => Ended::Optimal,
        SolutionStatus::GapLimit => Ended::GapLimit,
        SolutionStatus::TimeLimit => Ended::TimeLimit,
    };
    let mut values = vec![0.0; positions.len()];
    for (&v, &i) in &positions {
        values[i] = s.value(v);
    }
    Ok(Solution {
        objective: objective.eval_with(&s),
        values,
        positions,
        bound: None,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use good_lp::{constraint, variable};

    #[test]
    fn a_small_knapsack_is_solved_to_optimality_from_a_warm_start() {
        // Maximise 5a + 4b + 3c with 2a + 3b + c <= 5, binaries: a and b (9).
        let mut p = Program::new();
        let x: Vec<Variable> = (0..3).map(|_| p.add(variable().binary())).collect();
        let value = [5.0, 4.0, 3.0];
        let weight = [2.0, 3.0, 1.0];
        let objective: Expression = x.iter().zip(value).map(|(&v, c)| -c * v).sum();
        let used: Expression = x.iter().zip(weight).map(|(&v, w)| w * v).sum();
        let limits = Limits {
            time_s: 10.0,
            rel_gap: 0.0,
            nodes: 1000,
        };
        let s = p
            .minimise(objective, vec![constraint!(used <= 5.0)], &[(x[1], 1.0)], limits)
            .unwrap();
        assert_eq!(s.ended, Ended::Optimal);
        let chosen: Vec<bool> = x.iter().map(|&v| s.value(v) > 0.5).collect();
        assert_eq!(chosen, [true, true, false]);
        assert!((s.objective + 9.0).abs() < 1e-6, "{}", s.objective);
        if let Some(b) = s.bound {
            assert!((b + 9.0).abs() < 1e-6, "{b}");
        }
    }
}
