//! Faults injected during a run (`moec run --fail SPEC`): a die or a link
//! that dies at the start of a step, and the recovery that keeps the run
//! going.
//!
//! This file owns the fault's description ([`Fault`], parsed from the
//! command line's `die(2,5)@step=300`, `link((3,3),(3,4))@step=200`,
//! `die(17)@step=5`), its check against the machine (the die or link must
//! exist and be alive, and the machine must stay usable), and the repair of
//! the schedule a run holds at that step ([`recover`]):
//!
//! - The machine is rebuilt with the fault added to its defects, so routes
//!   (dimension order, then around defects) avoid what died. A dead link
//!   needs nothing more.
//! - A dead die's program is emptied. Every expert copy with a part on it is
//!   dropped (a split copy loses all its parts) and restored, so the
//!   placement keeps the copies its load balance planned: as a whole copy
//!   on the alive die with the most free memory (then the nearest to the
//!   dead die, then the lowest id) that holds no part of the expert, copied
//!   from the nearest surviving whole replica, or else reloaded from the
//!   host through the nearest io die. Restores travel stop-the-world in the
//!   fault step ([`Window::StopTheWorld`]).
//! - Sequences homed on the dead die are re-homed, spread evenly over the
//!   dies that run attention, so the step keeps every token. Their KV
//!   caches are lost with the die and rebuilt by a prefill of their
//!   context, which the fault step waits for. An attention
//!   group (`tp(k)`) holding the dead die is dissolved: its survivors keep
//!   their experts but run no attention, and its sequences go to the other
//!   groups; when no group is left, attention runs data-parallel on the
//!   survivors. Dissolving keeps every group one size (the schedule and
//!   the numeric heads' split need that); a group of `k - 1` would not
//!   divide the heads in general.
//! - Planned migrations and broadcasts that name the dead die are dropped
//!   (broadcasts end at the fault step), as are later migrations the
//!   repaired placement no longer allows.

use crate::machine::{DieId, DieRef, Machine, MachineError};
use crate::numerics::Arrival;
use crate::report::FaultReport;
use crate::schedule::{Chunk, Migration, MigrationKind, Placement, Schedule, WeightSource, Window};
use std::fmt;
use std::str::FromStr;

/// A fault: what fails, and the step at whose start it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub step: u64,
    pub what: FaultTarget,
}

/// What fails, named as the machine's `defects` name it: mesh dies by
/// their global coordinates, GPUs by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// A die (with every link to it).
    Die(DieRef),
    /// The physical link between two neighbouring mesh dies (both directions).
    Link(DieRef, DieRef),
}

impl fmt::Display for FaultTarget {
    /// As the command line writes it: `die(2, 5)`, `die(17)`, `link((3, 3), (3, 4))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultTarget::Die(d) => write!(f, "die({})", inner(*d)),
            FaultTarget::Link(a, b) => write!(f, "link({a}, {b})"),
        }
    }
}

/// A die reference inside `die(...)`: `2, 5` or `17`.
fn inner(d: DieRef) -> String {
    match d {
        DieRef::At(c) => format!("{}, {}", c.x, c.y),
        DieRef::Index(i) => i.to_string(),
    }
}

impl fmt::Display for Fault {
    /// The command line's spelling, which parses back to the same fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@step={}", self.what, self.step)
    }
}

/// Why a `--fail` spec did not parse: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpecError {
    /// The spec as given.
    pub spec: String,
    /// Byte offset of the problem in `spec`.
    pub at: usize,
    pub problem: SpecProblem,
}

/// What is wrong with a `--fail` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecProblem {
    /// Nothing but whitespace.
    Empty,
    /// It starts with neither `die(` nor `link(`.
    UnknownTarget,
    /// Something else was expected here (in words).
    Expected(&'static str),
    /// A number does not fit.
    TooLarge,
    /// No `@step=N` after the target.
    MissingStep,
    /// Text after the step.
    Trailing,
}

impl fmt::Display for FaultSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.spec[..self.at.min(self.spec.len())].chars().count() + 1;
        let found = self.spec.get(self.at..).unwrap_or("").trim();
        let found = if found.is_empty() {
            "the end".to_string()
        } else {
            format!("`{}`", found.chars().take(20).collect::<String>())
        };
        match &self.problem {
            SpecProblem::Empty => write!(
                f,
                "empty fault: write `die(x, y)@step=N`, `link((x1, y1), (x2, y2))@step=N` or `die(i)@step=N`"
            ),
            SpecProblem::UnknownTarget => write!(
                f,
                "`{}`: a fault is `die(...)` or `link(...)`, found {found}",
                self.spec
            ),
            SpecProblem::Expected(what) => {
                write!(f, "`{}`: expected {what} at column {column}, found {found}", self.spec)
            }
            SpecProblem::TooLarge => write!(f, "`{}`: the number at column {column} is too large", self.spec),
            SpecProblem::MissingStep => write!(
                f,
                "`{}`: missing `@step=N`, the step at whose start the fault strikes",
                self.spec
            ),
            SpecProblem::Trailing => write!(f, "`{}`: unexpected {found} after the step", self.spec),
        }
    }
}

impl std::error::Error for FaultSpecError {}

/// A cursor over a spec, skipping whitespace between tokens.
struct Cursor<'s> {
    spec: &'s str,
    at: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.spec[self.at..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Eats `token` (after whitespace) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn error(&self, problem: SpecProblem) -> FaultSpecError {
        FaultSpecError {
            spec: self.spec.to_string(),
            at: self.at,
            problem,
        }
    }

    fn expect(&mut self, token: &str, what: &'static str) -> Result<(), FaultSpecError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(SpecProblem::Expected(what)))
        }
    }

    /// A decimal number.
    fn number<T: FromStr>(&mut self, what: &'static str) -> Result<T, FaultSpecError> {
        self.skip_ws();
        let digits = self.rest().len() - self.rest().trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(self.error(SpecProblem::Expected(what)));
        }
        let n = self.rest()[..digits]
            .parse()
            .map_err(|_| self.error(SpecProblem::TooLarge))?;
        self.at += digits;
        Ok(n)
    }

    /// `x, y` (mesh coordinates) or `i` (an index), up to the closing bracket.
    fn die_inside(&mut self) -> Result<DieRef, FaultSpecError> {
        let first = self.number("a die's x coordinate or index")?;
        if self.eat(",") {
            let y = self.number("the die's y coordinate")?;
            Ok(DieRef::At(crate::machine::Coord::new(first, y)))
        } else {
            Ok(DieRef::Index(first))
        }
    }

    /// A link's end: `(x, y)` or `i`.
    fn link_end(&mut self) -> Result<DieRef, FaultSpecError> {
        if self.eat("(") {
            let x = self.number("a die's x coordinate")?;
            self.expect(",", "`,` between the coordinates")?;
            let y = self.number("the die's y coordinate")?;
            self.expect(")", "`)` after the coordinates")?;
            Ok(DieRef::At(crate::machine::Coord::new(x, y)))
        } else {
            Ok(DieRef::Index(self.number("a die: `(x, y)` or an index")?))
        }
    }
}

impl FromStr for Fault {
    type Err = FaultSpecError;

    /// Parses `die(2,5)@step=300`, `die(17)@step=3` or
    /// `link((3,3),(3,4))@step=200`; whitespace may go between any two
    /// tokens.
    fn from_str(spec: &str) -> Result<Fault, FaultSpecError> {
        let mut c = Cursor { spec, at: 0 };
        c.skip_ws();
        if c.rest().is_empty() {
            return Err(c.error(SpecProblem::Empty));
        }
        let what = if c.eat("die") {
            c.expect("(", "`(` after `die`")?;
            let d = c.die_inside()?;
            c.expect(")", "`)` closing `die(`")?;
            FaultTarget::Die(d)
        } else if c.eat("link") {
            c.expect("(", "`(` after `link`")?;
            let a = c.link_end()?;
            c.expect(",", "`,` between the link's two dies")?;
            let b = c.link_end()?;
            c.expect(")", "`)` closing `link(`")?;
            FaultTarget::Link(a, b)
        } else {
            return Err(c.error(SpecProblem::UnknownTarget));
        };
        c.skip_ws();
        if c.rest().is_empty() {
            return Err(c.error(SpecProblem::MissingStep));
        }
        c.expect("@", "`@step=N`")?;
        c.expect("step", "`step` after `@`")?;
        c.expect("=", "`=` after `step`")?;
        let step = c.number("the step number")?;
        c.skip_ws();
        if !c.rest().is_empty() {
            return Err(c.error(SpecProblem::Trailing));
        }
        Ok(Fault { step, what })
    }
}

/// A fault that cannot strike, or a machine or schedule it leaves that
/// cannot run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultError {
    pub fault: Fault,
    pub problem: FaultProblem,
}

/// What is wrong with a fault.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultProblem {
    /// A mesh die named by index, or a GPU by coordinates.
    WrongRef { topology: &'static str },
    /// Coordinates outside the mesh.
    OutsideMesh { width: u32, height: u32 },
    /// An index past the last die.
    OutOfRange { count: u32 },
    /// The die is dead already (a defect or an earlier fault).
    DieAlreadyDead { die: String },
    /// The two dies are not neighbours on a mesh.
    NotNeighbours,
    /// The link is dead already.
    LinkAlreadyDead,
    /// The machine the fault leaves cannot run (cut in two, io cut off, ...).
    Unusable(MachineError),
    /// The run ends before the fault's step.
    NeverStrikes { steps: u64 },
    /// No alive die has room for a restored expert copy.
    NoRoom {
        layer: u32,
        expert: u32,
        needed: u64,
        most_free: u64,
    },
    /// An expert's last copy died and the machine has no io to reload it from.
    NoHost { layer: u32, expert: u32 },
    /// The repaired schedule does not validate (a bug of the repair).
    Schedule(String),
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault `{}`: ", self.fault)?;
        match &self.problem {
            FaultProblem::WrongRef { topology } => match topology {
                &"mesh" => write!(f, "a mesh names its dies by coordinates: write die(x, y)"),
                other => write!(f, "a {other} names its gpus by index: write die(i)"),
            },
            FaultProblem::OutsideMesh { width, height } => write!(f, "outside the {width}x{height} mesh"),
            FaultProblem::OutOfRange { count } => write!(f, "the machine has {count} dies (0 to {})", count.saturating_sub(1)),
            FaultProblem::DieAlreadyDead { die } => write!(f, "{die} is already dead"),
            FaultProblem::NotNeighbours => write!(f, "no link joins the two dies: they are not mesh neighbours"),
            FaultProblem::LinkAlreadyDead => write!(f, "the link is already dead"),
            FaultProblem::Unusable(e) => write!(f, "the machine cannot run after it: {e}"),
            FaultProblem::NeverStrikes { steps } => {
                write!(f, "the run has {steps} steps (0 to {}), so it never strikes", steps.saturating_sub(1))
            }
            FaultProblem::NoRoom {
                layer,
                expert,
                needed,
                most_free,
            } => write!(
                f,
                "no alive die has room to restore expert {expert} of layer {layer}: it needs {}, the most free on a die is {}",
                crate::units::Bytes(*needed),
                crate::units::Bytes(*most_free)
            ),
            FaultProblem::NoHost { layer, expert } => write!(
                f,
                "the only copy of expert {expert} of layer {layer} is lost, and the machine has no io to reload it from the host"
            ),
            FaultProblem::Schedule(e) => write!(f, "the repaired schedule is invalid: {e}"),
        }
    }
}

impl std::error::Error for FaultError {}

impl Fault {
    fn error(&self, problem: FaultProblem) -> FaultError {
        FaultError { fault: *self, problem }
    }

    /// The die `r` names on `machine`.
    fn resolve(&self, machine: &Machine, r: DieRef) -> Result<DieId, FaultError> {
        match (r, machine.grid()) {
            (DieRef::At(c), Some(grid)) => grid.die_at(c).ok_or_else(|| {
                self.error(FaultProblem::OutsideMesh {
                    width: grid.width,
                    height: grid.height,
                })
            }),
            (DieRef::Index(i), None) if i < machine.die_count() => Ok(DieId(i)),
            (DieRef::Index(_), None) => Err(self.error(FaultProblem::OutOfRange {
                count: machine.die_count(),
            })),
            _ => Err(self.error(FaultProblem::WrongRef {
                topology: machine.spec().topology.kind(),
            })),
        }
    }

    /// The machine after this fault: checked that what fails exists and is
    /// alive, and that the machine stays usable.
    pub fn strike(&self, machine: &Machine) -> Result<Machine, FaultError> {
        let mut spec = machine.spec().clone();
        match self.what {
            FaultTarget::Die(r) => {
                let d = self.resolve(machine, r)?;
                if !machine.is_alive(d) {
                    return Err(self.error(FaultProblem::DieAlreadyDead {
                        die: die_phrase(machine, d),
                    }));
                }
                spec.defects.dead_dies.push(r);
            }
            FaultTarget::Link(a, b) => {
                let (da, db) = (self.resolve(machine, a)?, self.resolve(machine, b)?);
                // Only mesh dies are wired to each other; GPUs meet at switches.
                let link = machine
                    .grid()
                    .and_then(|_| machine.link_between(da.node(), db.node()))
                    .filter(|_| da != db)
                    .ok_or_else(|| self.error(FaultProblem::NotNeighbours))?;
                if let Some(dead) = [da, db].into_iter().find(|&d| !machine.is_alive(d)) {
                    return Err(self.error(FaultProblem::DieAlreadyDead {
                        die: die_phrase(machine, dead),
                    }));
                }
                if !machine.link(link).alive {
                    return Err(self.error(FaultProblem::LinkAlreadyDead));
                }
                spec.defects.dead_links.push((a, b));
            }
        }
        Machine::build(spec).map_err(|e| self.error(FaultProblem::Unusable(e)))
    }

    /// What failed, in words: "die (2, 5)", "gpu17", "link (3, 3)-(3, 4)".
    fn describe(&self, machine: &Machine) -> String {
        let name = |r: DieRef| {
            self.resolve(machine, r)
                .map_or_else(|_| r.to_string(), |d| machine.die_label(d))
        };
        match self.what {
            FaultTarget::Die(r) => self
                .resolve(machine, r)
                .map_or_else(|_| format!("die {r}"), |d| die_phrase(machine, d)),
            FaultTarget::Link(a, b) => format!("link {}-{}", name(a), name(b)),
        }
    }
}

/// "die (2, 5)" on meshes, the GPU's label elsewhere.
fn die_phrase(machine: &Machine, d: DieId) -> String {
    match machine.grid() {
        Some(_) => format!("die {}", machine.die_label(d)),
        None => machine.die_label(d),
    }
}

/// Checks `faults` against `machine` before a run of `steps` steps: each
/// strikes within the run, names a die or link that exists and is alive
/// when it strikes (after the defects and the earlier faults), and leaves a
/// usable machine. Faults strike in step order, ties in the order given.
pub fn check(machine: &Machine, faults: &[Fault], steps: u64) -> Result<(), FaultError> {
    let mut machine = machine.clone();
    for f in in_order(faults) {
        if f.step >= steps {
            return Err(f.error(FaultProblem::NeverStrikes { steps }));
        }
        machine = f.strike(&machine)?;
    }
    Ok(())
}

/// `faults` in the order they strike: by step, ties as given.
pub fn in_order(faults: &[Fault]) -> Vec<Fault> {
    let mut v = faults.to_vec();
    v.sort_by_key(|f| f.step);
    v
}

/// What recovering from a fault changed.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The machine with the fault among its defects.
    pub machine: Machine,
    /// Expert copies restored: applied to the placement already, their
    /// chunks travel stop-the-world in the fault step.
    pub restores: Vec<Migration>,
    /// The restored copies, for the numeric executor (`Numerics::relocate`).
    pub arrivals: Vec<Arrival>,
    /// Whether the placement or the programs changed (a die fault).
    pub placement_changed: bool,
    /// The report, without the step's timing (the run fills it in).
    pub report: FaultReport,
}

/// Recovers `schedule` (a run's current schedule: its placement has the
/// migrations before index `next` applied) from `fault` striking `machine`
/// at the start of `fault.step`. See the module doc for what it does.
///
/// `arriving` are the copies earlier faults of the same step restored:
/// their weights are still on the way, so none is a source.
pub fn recover(
    schedule: &mut Schedule,
    next: usize,
    machine: &Machine,
    fault: &Fault,
    arriving: &[Arrival],
) -> Result<Recovery, FaultError> {
    let after = fault.strike(machine)?;
    schedule.machine = after.spec().clone();
    let mut report = FaultReport {
        step: fault.step,
        what: fault.describe(machine),
        ..FaultReport::default()
    };
    let FaultTarget::Die(r) = fault.what else {
        report
            .notes
            .push("flows are routed around it from this step on".to_string());
        return Ok(Recovery {
            machine: after,
            restores: Vec::new(),
            arrivals: Vec::new(),
            placement_changed: false,
            report,
        });
    };
    let dead = fault.resolve(machine, r)?;
    let mut repair = Repair {
        schedule,
        before: machine,
        after: &after,
        dead,
        report,
        restores: Vec::new(),
        arrivals: Vec::new(),
        arriving,
    };
    if let Some(p) = repair.schedule.programs.get_mut(dead.index()) {
        p.instrs.clear();
    }
    repair.drop_planned_moves(next);
    repair.rehome_sequences();
    repair.charge_kv_rebuild();
    repair.restore_experts().map_err(|p| fault.error(p))?;
    repair.drop_stale_migrations(next);
    let Repair {
        report,
        restores,
        arrivals,
        schedule,
        ..
    } = repair;
    let future = Schedule {
        migrations: schedule.migrations.get(next..).unwrap_or(&[]).to_vec(),
        ..schedule.clone()
    };
    future.validate().map_err(|e| fault.error(FaultProblem::Schedule(e)))?;
    Ok(Recovery {
        machine: after,
        restores,
        arrivals,
        placement_changed: true,
        report,
    })
}

/// Keeps the expert copies restored earlier in `step` valid once a later
/// fault of the same step has struck `machine`: a copy restored onto a die
/// that has now failed is dropped (that fault's own recovery restores it
/// again elsewhere, since the placement held it there), and one whose
/// weights were to come from a die that has now failed comes instead from
/// the nearest surviving whole replica, else through the nearest io die.
/// `arrivals` (the numeric executor's view of the same copies) follows.
/// `fault` is the one that struck last, named when nothing is left.
pub fn revise_restores(
    restores: &mut Vec<Migration>,
    arrivals: &mut Vec<Arrival>,
    fault: &Fault,
    placement: &Placement,
    ffn: u64,
    machine: &Machine,
) -> Result<(), FaultError> {
    let step = fault.step;
    let this_step = |m: &Migration| m.effective_step == step;
    restores.retain(|m| !this_step(m) || machine.is_alive(m.to));
    arrivals.retain(|a| machine.is_alive(a.to));
    let io_dies = machine.io_dies();
    for m in restores.iter_mut().filter(|m| this_step(m)) {
        let Some(chunk) = m.chunks.first_mut() else { continue };
        if machine.is_alive(chunk.from) {
            continue;
        }
        let to = m.to;
        // Copies restored in this step hold no weights yet: not a source.
        let arriving: Vec<DieId> = arrivals
            .iter()
            .filter(|a| (a.layer, a.expert) == (m.layer, m.expert))
            .map(|a| a.to)
            .collect();
        let nearest = |from: &mut dyn Iterator<Item = DieId>| {
            from.filter(|&d| machine.is_alive(d))
                .min_by_key(|&d| (machine.hops(d, to).unwrap_or(u32::MAX), d.0))
        };
        // Whole replicas elsewhere that were there before this step.
        let mut whole = placement
            .expert_copies(m.layer as usize, m.expert as usize, ffn)
            .into_iter()
            .filter(|c| c.len() == 1 && c[0].die != to && !arriving.contains(&c[0].die))
            .map(|c| c[0].die);
        // Else the host, through the nearest io die (the copy's own die
        // when it is one).
        let (source, from) = match nearest(&mut whole) {
            Some(d) => (WeightSource::Die(d), d),
            None => match nearest(&mut io_dies.iter().copied()) {
                Some(io) => (WeightSource::Host, io),
                None => {
                    return Err(fault.error(FaultProblem::NoHost {
                        layer: m.layer,
                        expert: m.expert,
                    }))
                }
            },
        };
        m.source = source;
        chunk.from = from;
        for a in arrivals
            .iter_mut()
            .filter(|a| (a.layer, a.expert, a.to) == (m.layer, m.expert, to))
        {
            a.source = source;
        }
    }
    Ok(())
}

/// A die fault's repair under way.
struct Repair<'a> {
    schedule: &'a mut Schedule,
    /// The machine before the fault (for distances from the dead die) and after.
    before: &'a Machine,
    after: &'a Machine,
    dead: DieId,
    report: FaultReport,
    restores: Vec<Migration>,
    arrivals: Vec<Arrival>,
    /// Copies earlier faults of this step restored, not there yet.
    arriving: &'a [Arrival],
}

impl Repair<'_> {
    fn label(&self, d: DieId) -> String {
        die_phrase(self.after, d)
    }

    /// Planned migrations not yet applied that name the dead die (as source,
    /// destination or a chunk's end) are dropped; broadcasts naming it end
    /// at the fault step.
    fn drop_planned_moves(&mut self, next: usize) {
        let (dead, step) = (self.dead, self.report.step);
        let names = |m: &Migration| {
            m.to == dead
                || m.source == WeightSource::Die(dead)
                || m.chunks.iter().any(|c| c.from == dead || c.to == dead)
        };
        let migrations = &mut self.schedule.migrations;
        let before = migrations.len();
        let mut i = next;
        while i < migrations.len() {
            if names(&migrations[i]) {
                migrations.remove(i);
            } else {
                i += 1;
            }
        }
        let dropped = before - migrations.len();
        if dropped > 0 {
            self.report.notes.push(format!(
                "{dropped} planned migration(s) naming {} dropped",
                self.report.what
            ));
        }
        let mut ended = 0;
        for b in &mut self.schedule.broadcasts {
            if b.steps.end > step && b.holders().contains(&dead) {
                b.steps.end = step.max(b.steps.start);
                ended += 1;
            }
        }
        if ended > 0 {
            self.report
                .notes
                .push(format!("{ended} broadcast(s) through {} ended", self.report.what));
        }
    }

    /// Later migrations the repaired placement no longer allows (a copy
    /// already restored where one was to be added, a dropped copy to move)
    /// are dropped.
    fn drop_stale_migrations(&mut self, next: usize) {
        let mut placement = self.schedule.placement.clone();
        let mut i = next;
        while i < self.schedule.migrations.len() {
            let m = &self.schedule.migrations[i];
            match placement.apply(m) {
                Ok(()) => i += 1,
                Err(e) => {
                    self.report.notes.push(format!(
                        "planned migration of expert {} of layer {} dropped: {e}",
                        m.expert, m.layer
                    ));
                    self.schedule.migrations.remove(i);
                }
            }
        }
    }

    /// Re-homes the sequences the fault left without a home die, spread
    /// evenly (fewest sequences first, then lowest id) over the dies that
    /// run attention; dissolves a broken attention group.
    fn rehome_sequences(&mut self) {
        let dead = self.dead;
        let p = &mut self.schedule.placement;
        let mut homeless: Vec<DieId> = vec![dead];
        if let Some(g) = p.attention_groups.iter().position(|g| g.contains(&dead)) {
            let group = p.attention_groups.remove(g);
            for domain in &mut p.token_domains {
                domain.retain(|d| !group.contains(d));
            }
            p.token_domains.retain(|d| !d.is_empty());
            let names: Vec<String> = group.iter().map(|&d| die_phrase(self.after, d)).collect();
            if p.attention_groups.is_empty() {
                p.token_domains.clear();
                self.report.notes.push(format!(
                    "attention group [{}] lost a member and was the last: attention runs data-parallel on its survivors",
                    names.join(", ")
                ));
            } else {
                homeless = group;
                self.report.notes.push(format!(
                    "attention group [{}] lost a member and was dissolved: its sequences go to the other groups, its survivors keep their experts",
                    names.join(", ")
                ));
            }
        }
        let dies = self.after.die_count() as usize;
        let mut count = vec![0usize; dies];
        for d in &p.sequences {
            if let Some(c) = count.get_mut(d.index()) {
                *c += 1;
            }
        }
        let in_group: Vec<bool> = {
            let mut v = vec![p.attention_groups.is_empty(); dies];
            for d in p.attention_groups.iter().flatten() {
                v[d.index()] = true;
            }
            v
        };
        let mut candidates: Vec<DieId> = self
            .after
            .alive_dies()
            .into_iter()
            .filter(|d| in_group[d.index()] && !homeless.contains(d) && count[d.index()] > 0)
            .collect();
        if candidates.is_empty() {
            // Every sequence lived where the fault struck: any alive die runs them.
            candidates = self
                .after
                .alive_dies()
                .into_iter()
                .filter(|d| in_group[d.index()] && !homeless.contains(d))
                .collect();
        }
        let mut moved = 0;
        for s in 0..p.sequences.len() {
            if !homeless.contains(&p.sequences[s]) {
                continue;
            }
            let Some(&to) = candidates.iter().min_by_key(|d| (count[d.index()], d.0)) else {
                break;
            };
            count[to.index()] += 1;
            p.sequences[s] = to;
            moved += 1;
        }
        self.report.rehomed_sequences = moved;
    }

    /// The re-homed sequences' KV caches are lost (with their die, or with
    /// the dissolved group's share of every head, which no survivor can
    /// complete), and a cache is rebuilt by a prefill of the sequence's
    /// context: every layer, each token attending to those before it.
    /// Charged at the peak compute of every surviving die working on it,
    /// so it is a lower bound. Prefill workloads build their caches within
    /// the step and lose nothing.
    fn charge_kv_rebuild(&mut self) {
        let s = &*self.schedule;
        if s.workload.phase != crate::workload::Phase::Decode {
            return;
        }
        let (m, context) = (&s.model, s.workload.context());
        // The mean token of a prefill attends over half the context.
        let per_token: f64 = (0..m.layers).map(|i| m.layer_flops(i, context / 2).0).sum();
        let tokens = self.report.rehomed_sequences.saturating_mul(context);
        let peak: f64 = self
            .after
            .alive_dies()
            .iter()
            .map(|&d| self.after.die_spec(d).compute.0)
            .sum();
        if peak > 0.0 {
            self.report.kv_rebuild_s = per_token * tokens as f64 / peak;
        }
        self.report.notes.push(format!(
            "{} sequences rebuild their KV caches: a prefill of {tokens} tokens",
            self.report.rehomed_sequences
        ));
    }

    /// Bytes in use per die: expert weights, the KV cache of the sequences
    /// homed there (or on its attention group), and the weights every die
    /// running the model holds (attention share, routers, shared experts,
    /// dense FFNs, embedding and head).
    fn usage(&self) -> Vec<u64> {
        let s = &*self.schedule;
        let m = &s.model;
        let p = &s.placement;
        let dies = self.after.die_count() as usize;
        let mut used = vec![0u64; dies];
        let expert = m.expert_bytes().0;
        let ffn = m.moe.as_ref().map_or(1, |x| x.expert_ffn.max(1));
        for l in 0..p.experts.len() {
            for e in 0..p.experts[l].len() {
                for part in p.expert_copies(l, e, ffn).iter().flatten() {
                    let bytes = (u128::from(expert) * u128::from(part.columns.end - part.columns.start))
                        .div_ceil(u128::from(ffn)) as u64;
                    if let Some(u) = used.get_mut(part.die.index()) {
                        *u = u.saturating_add(bytes);
                    }
                }
            }
        }
        let tp = p.attention_groups.first().map_or(1, |g| g.len() as u64);
        let kv = m
            .kv_bytes_per_token_per_die(tp)
            .0
            .saturating_mul(s.workload.context())
            .saturating_mul(m.layers);
        let group_of = p.attention_group_of(dies);
        for home in &p.sequences {
            if let Some((group, _)) = group_of.get(home.index()) {
                for d in group {
                    used[d.index()] = used[d.index()].saturating_add(kv);
                }
            }
        }
        let moe_layers = m.moe_layers();
        let dtype = m.dtype.bytes();
        let fixed = m
            .attention_bytes_per_die(tp)
            .0
            .saturating_mul(m.layers)
            .saturating_add(
                (m.gate_params().saturating_mul(dtype))
                    .saturating_add(m.shared_bytes().0)
                    .saturating_mul(moe_layers),
            )
            .saturating_add(m.dense_ffn_bytes().0.saturating_mul(m.layers - moe_layers))
            .saturating_add(m.embedding_params().saturating_mul(dtype));
        for d in self.after.alive_dies() {
            used[d.index()] = used[d.index()].saturating_add(fixed);
        }
        used
    }

    /// Drops every expert copy with a part on the dead die and restores
    /// each as a whole copy (see the module doc).
    fn restore_experts(&mut self) -> Result<(), FaultProblem> {
        let m = &self.schedule.model;
        let Some(ffn) = m.moe.as_ref().map(|x| x.expert_ffn.max(1)) else {
            return Ok(());
        };
        let bytes = m.expert_bytes().0;
        let memory = |d: DieId| self.after.die_spec(d).memory.0;
        let mut used = self.usage();
        let alive = self.after.alive_dies();
        let io_dies = self.after.io_dies();
        let step = self.report.step;
        for l in 0..self.schedule.placement.experts.len() {
            for e in 0..self.schedule.placement.experts[l].len() {
                let copies = self.schedule.placement.expert_copies(l, e, ffn);
                let (lost, kept): (Vec<_>, Vec<_>) = copies
                    .into_iter()
                    .partition(|c| c.iter().any(|part| part.die == self.dead));
                if lost.is_empty() {
                    continue;
                }
                let split = has_columns(&self.schedule.placement, l, e);
                // The copies that stay, then one whole copy per lost one.
                let mut dies: Vec<DieId> = kept.iter().flatten().map(|p| p.die).collect();
                let mut columns: Vec<u64> = kept.iter().flatten().map(|p| p.columns.end - p.columns.start).collect();
                for copy in &lost {
                    for part in copy.iter().filter(|p| p.die != self.dead) {
                        let share = (u128::from(bytes) * u128::from(part.columns.end - part.columns.start))
                            .div_ceil(u128::from(ffn)) as u64;
                        used[part.die.index()] = used[part.die.index()].saturating_sub(share);
                    }
                }
                for _ in &lost {
                    let (layer, expert) = (l as u32, e as u32);
                    let free = |d: DieId| memory(d).saturating_sub(used[d.index()]);
                    let room: Vec<DieId> = alive.iter().copied().filter(|d| !dies.contains(d)).collect();
                    let to = room
                        .iter()
                        .copied()
                        .filter(|&d| free(d) >= bytes)
                        .min_by_key(|&d| {
                            let hops = self.before.hops(self.dead, d).unwrap_or(u32::MAX);
                            (std::cmp::Reverse(free(d)), hops, d.0)
                        })
                        .ok_or(FaultProblem::NoRoom {
                            layer,
                            expert,
                            needed: bytes,
                            most_free: room.iter().map(|&d| free(d)).max().unwrap_or(0),
                        })?;
                    // Whole replicas that survive or this repair restored, not those an
                    // earlier fault of the step restored (still on the way).
                    let arrived = |d: &DieId| {
                        !self
                            .arriving
                            .iter()
                            .any(|a| (a.layer, a.expert, a.to) == (layer, expert, *d))
                    };
                    let whole: Vec<DieId> = dies
                        .iter()
                        .zip(&columns)
                        .filter(|(d, &c)| c >= ffn && arrived(d))
                        .map(|(&d, _)| d)
                        .collect();
                    let nearest = |from: &[DieId]| {
                        from.iter()
                            .copied()
                            .min_by_key(|&d| (self.after.hops(d, to).unwrap_or(u32::MAX), d.0))
                    };
                    let (source, from, how) = match nearest(&whole) {
                        Some(s) => {
                            self.report.restored_from_replica += 1;
                            (
                                WeightSource::Die(s),
                                s,
                                format!("from the replica on {}", self.label(s)),
                            )
                        }
                        None => {
                            let io = nearest(&io_dies).ok_or(FaultProblem::NoHost { layer, expert })?;
                            self.report.reloaded_from_host += 1;
                            (
                                WeightSource::Host,
                                io,
                                format!("reloaded from the host through io {}", self.label(io)),
                            )
                        }
                    };
                    self.report.notes.push(format!(
                        "expert {expert} of layer {layer}: its copy on {} restored on {} {how}",
                        self.label(self.dead),
                        self.label(to)
                    ));
                    used[to.index()] = used[to.index()].saturating_add(bytes);
                    dies.push(to);
                    columns.push(ffn);
                    self.arrivals.push(Arrival {
                        layer,
                        expert,
                        to,
                        source,
                    });
                    self.restores.push(Migration {
                        kind: MigrationKind::Replicate,
                        layer,
                        expert,
                        source,
                        to,
                        bytes,
                        effective_step: step,
                        chunks: vec![Chunk {
                            step,
                            window: Window::StopTheWorld,
                            from,
                            to,
                            offset: 0,
                            bytes,
                            after: None,
                        }],
                    });
                }
                let p = &mut self.schedule.placement;
                p.experts[l][e] = dies;
                if split {
                    p.expert_columns[l][e] = columns;
                }
            }
        }
        Ok(())
    }
}

/// Whether expert `e` of layer `l` carries FFN columns (is split).
fn has_columns(p: &Placement, l: usize, e: usize) -> bool {
    p.expert_columns
        .get(l)
        .and_then(|x| x.get(e))
        .is_some_and(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Coord, Topology};

    fn at(x: u32, y: u32) -> DieRef {
        DieRef::At(Coord::new(x, y))
    }

    #[test]
    fn specs_parse_with_or_without_whitespace() {
        let f: Fault = "die(2,5)@step=300".parse().unwrap();
        assert_eq!(
            f,
            Fault {
                step: 300,
                what: FaultTarget::Die(at(2, 5))
            }
        );
        let g: Fault = "  link( (3, 3) ,(3,4) ) @ step = 200 ".parse().unwrap();
        assert_eq!(g.what, FaultTarget::Link(at(3, 3), at(3, 4)));
        assert_eq!(g.step, 200);
        let h: Fault = "die(17)@step=0".parse().unwrap();
        assert_eq!(h.what, FaultTarget::Die(DieRef::Index(17)));
        // The display is a spec that parses back.
        for x in [f, g, h] {
            assert_eq!(x.to_string().parse::<Fault>().unwrap(), x);
        }
        assert_eq!(f.to_string(), "die(2, 5)@step=300");
        assert_eq!(g.to_string(), "link((3, 3), (3, 4))@step=200");
    }

    #[test]
    fn bad_specs_say_what_and_where() {
        let err = |s: &str| s.parse::<Fault>().unwrap_err();
        assert_eq!(err("  ").problem, SpecProblem::Empty);
        assert_eq!(err("chip(1)@step=2").problem, SpecProblem::UnknownTarget);
        assert_eq!(err("die(2,5)").problem, SpecProblem::MissingStep);
        assert_eq!(err("die(2,5)@step=3 x").problem, SpecProblem::Trailing);
        assert_eq!(err("die(2,99999999999)@step=3").problem, SpecProblem::TooLarge);
        assert_eq!(
            err("die(-1,2)@step=3").problem,
            SpecProblem::Expected("a die's x coordinate or index")
        );
        let e = err("die(2,x)@step=3");
        assert_eq!(e.at, 6);
        assert_eq!(
            e.to_string(),
            "`die(2,x)@step=3`: expected the die's y coordinate at column 7, found `x)@step=3`"
        );
        assert_eq!(
            err("link((1,1)(1,2))@step=1").to_string(),
            "`link((1,1)(1,2))@step=1`: expected `,` between the link's two dies at column 11, found `(1,2))@step=1`"
        );
        assert!(matches!(err("die(1,2)@stop=3").problem, SpecProblem::Expected(_)));
        assert!(matches!(err("die(1,2)@step=").problem, SpecProblem::Expected(_)));
        assert_eq!(
            err("die(1,2)").to_string(),
            "`die(1,2)`: missing `@step=N`, the step at whose start the fault strikes"
        );
        // No panic on odd bytes.
        for s in ["die(", "link(", "@", "die(1,2)@step=3é", "é", "link((1,2),", "die)"] {
            let _ = s.parse::<Fault>().map(|_| ()).map_err(|e| e.to_string());
        }
    }

    #[test]
    fn faults_are_checked_against_the_machine() {
        let m = Machine::build(crate::machine::tests::mesh(3, 3)).unwrap();
        let fault = |s: &str| s.parse::<Fault>().unwrap();
        let problem = |s: &str| check(&m, &[fault(s)], 10).unwrap_err().problem;
        assert!(matches!(
            problem("die(3,0)@step=1"),
            FaultProblem::OutsideMesh { width: 3, height: 3 }
        ));
        assert!(matches!(
            problem("die(4)@step=1"),
            FaultProblem::WrongRef { topology: "mesh" }
        ));
        assert!(matches!(
            problem("die(1,1)@step=10"),
            FaultProblem::NeverStrikes { steps: 10 }
        ));
        assert!(matches!(
            problem("link((0,0),(1,1))@step=1"),
            FaultProblem::NotNeighbours
        ));
        assert!(matches!(
            problem("link((0,0),(0,0))@step=1"),
            FaultProblem::NotNeighbours
        ));
        // The same die twice: the second finds it dead, whatever the order given.
        let twice = check(&m, &[fault("die(1,1)@step=5"), fault("die(1,1)@step=2")], 10).unwrap_err();
        assert_eq!(twice.fault.step, 5);
        assert_eq!(
            twice.to_string(),
            "fault `die(1, 1)@step=5`: die (1, 1) is already dead"
        );
        let link = check(
            &m,
            &[fault("link((0,0),(1,0))@step=1"), fault("link((1,0),(0,0))@step=2")],
            10,
        );
        assert!(matches!(link.unwrap_err().problem, FaultProblem::LinkAlreadyDead));
        // Cutting the corner (0, 0) off the mesh.
        let cut = check(
            &m,
            &[fault("link((0,0),(1,0))@step=1"), fault("link((0,0),(0,1))@step=2")],
            10,
        )
        .unwrap_err();
        assert!(matches!(
            cut.problem,
            FaultProblem::Unusable(MachineError::MeshCut { .. })
        ));
        assert!(cut
            .to_string()
            .starts_with("fault `link((0, 0), (0, 1))@step=2`: the machine cannot run after it"));
        check(&m, &[fault("die(1,1)@step=1"), fault("link((0,0),(1,0))@step=1")], 2).unwrap();

        let gpus = Machine::build(crate::machine::tests::spec(Topology::Switch { ports: 4 })).unwrap();
        let problem = |s: &str| check(&gpus, &[fault(s)], 10).unwrap_err().problem;
        assert!(matches!(
            problem("die(1,1)@step=1"),
            FaultProblem::WrongRef { topology: "switch" }
        ));
        assert!(matches!(
            problem("die(4)@step=1"),
            FaultProblem::OutOfRange { count: 4 }
        ));
        assert!(matches!(problem("link(1,2)@step=1"), FaultProblem::NotNeighbours));
        check(&gpus, &[fault("die(3)@step=1")], 10).unwrap();
    }
}
