//! The pass manager: runs a pipeline, verifies after every pass, prints the
//! IR after the passes asked for.

use crate::ir::{self, Ir, VerifyError};
use crate::passes::registry::{create, PassSpec};
use crate::passes::Pass;
use crate::passes::PassContext;

/// After which passes to hand the IR to the printer.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PrintAfter {
    #[default]
    Nothing,
    /// After every pass (`--print-after-all`).
    All,
    /// After passes with these names: `place` matches any `place(...)`,
    /// `place(round_robin)` only that one.
    Passes(Vec<String>),
}

/// Why a pipeline stopped.
#[derive(Debug)]
pub enum PipelineError {
    /// A pass spec or `--print-after` name is unknown.
    Spec(String),
    /// A pass could not do its job on this input.
    Pass { pass: String, message: String },
    /// The verifier failed after a pass (`pass` is "end of pipeline" for the
    /// final completeness check).
    Verify { pass: String, errors: Vec<VerifyError> },
}

/// A pipeline ready to run.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    print_after: PrintAfter,
}

impl PassManager {
    /// Builds the passes of `specs`; every `--print-after` name must match
    /// one of them.
    pub fn new(specs: &[PassSpec], print_after: PrintAfter) -> Result<PassManager, PipelineError> {
        let passes = specs
            .iter()
            .map(create)
            .collect::<Result<Vec<_>, _>>()
            .map_err(PipelineError::Spec)?;
        if let PrintAfter::Passes(names) = &print_after {
            for n in names {
                if !passes.iter().any(|p| matches(n, &p.name())) {
                    let have: Vec<String> = passes.iter().map(|p| p.name()).collect();
                    return Err(PipelineError::Spec(format!(
                        "--print-after={n} names no pass of this pipeline ({})",
                        have.join(", ")
                    )));
                }
            }
        }
        Ok(PassManager { passes, print_after })
    }

    /// Names of the passes, in order.
    pub fn names(&self) -> Vec<String> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass over `ir`. `print` gets the pass name and the IR after
    /// each pass asked for. After the last pass every node must be placed.
    pub fn run(&self, ir: &mut Ir, cx: &PassContext, print: &mut dyn FnMut(&str, &Ir)) -> Result<(), PipelineError> {
        for (i, pass) in self.passes.iter().enumerate() {
            let name = pass.name();
            // Memory is checked once no later pass splits the experts again:
            // whole experts placed for `parallel(tp(8))` need not fit.
            let split_later = self.passes[i + 1..].iter().any(|p| p.name().starts_with("parallel("));
            pass.run(ir, cx).map_err(|message| PipelineError::Pass {
                pass: name.clone(),
                message,
            })?;
            ir.header.passes.push(name.clone());
            let errors = match split_later {
                true => ir::verify_shape(ir, cx.machine),
                false => ir::verify(ir, cx.machine),
            };
            if !errors.is_empty() {
                return Err(PipelineError::Verify { pass: name, errors });
            }
            let wanted = match &self.print_after {
                PrintAfter::Nothing => false,
                PrintAfter::All => true,
                PrintAfter::Passes(names) => names.iter().any(|n| matches(n, &name)),
            };
            if wanted {
                print(&name, ir);
            }
        }
        let errors = ir::verify_placed(ir, cx.machine);
        if !errors.is_empty() {
            return Err(PipelineError::Verify {
                pass: "the end of the pipeline".into(),
                errors,
            });
        }
        Ok(())
    }
}

/// `place` matches `place(round_robin)`; a full name matches itself.
fn matches(wanted: &str, name: &str) -> bool {
    wanted == name || name.split('(').next() == Some(wanted)
}
