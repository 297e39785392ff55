//! The backend x scenario matrix the conformance suite writes (`backend<TAB>scenario<TAB>outcome` lines).

use std::collections::BTreeMap;
use std::fmt::Write;

/// Outcomes by backend, then scenario, in the order they first appear.
pub struct Matrix {
    backends: Vec<String>,
    scenarios: Vec<String>,
    cells: BTreeMap<(String, String), String>,
}

impl Matrix {
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut matrix = Matrix { backends: Vec::new(), scenarios: Vec::new(), cells: BTreeMap::new() };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut fields = line.splitn(3, '\t');
            let (Some(backend), Some(scenario), Some(outcome)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("malformed line: {line}"));
            };
            if !matrix.backends.iter().any(|b| b == backend) {
                matrix.backends.push(backend.into());
            }
            if !matrix.scenarios.iter().any(|s| s == scenario) {
                matrix.scenarios.push(scenario.into());
            }
            matrix.cells.insert((backend.into(), scenario.into()), outcome.into());
        }
        if matrix.cells.is_empty() {
            return Err("the conformance suite recorded nothing".into());
        }
        Ok(matrix)
    }

    pub fn failures(&self) -> usize {
        self.cells.values().filter(|o| o.starts_with("fail")).count()
    }

    /// One row per backend and one column per scenario (numbered, with a legend), then the failures.
    pub fn render(&self) -> String {
        let width = self.backends.iter().map(String::len).max().unwrap_or(7).max(7);
        let mut out = String::from("\nconformance matrix: pass, FAIL, or n/a (the backend lacks the capability)\n");
        let _ = write!(out, "{:width$}", "backend");
        for number in 1..=self.scenarios.len() {
            let _ = write!(out, " {number:>4}");
        }
        out.push('\n');
        for backend in &self.backends {
            let _ = write!(out, "{backend:width$}");
            for scenario in &self.scenarios {
                let cell = match self.cells.get(&(backend.clone(), scenario.clone())) {
                    Some(o) if o.starts_with("pass") => "pass",
                    Some(o) if o.starts_with("n/a") => "n/a",
                    Some(_) => "FAIL",
                    None => "-",
                };
                let _ = write!(out, " {cell:>4}");
            }
            out.push('\n');
        }
        for (number, scenario) in self.scenarios.iter().enumerate() {
            let _ = writeln!(out, "{:>4} {scenario}", number + 1);
        }
        for ((backend, scenario), outcome) in &self.cells {
            if outcome.starts_with("fail") {
                let _ = writeln!(out, "\n{backend} / {scenario}: {outcome}");
            }
        }
        out
    }
}
