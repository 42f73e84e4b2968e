//! `umstage doctor`: renders the snapshot crate's diagnosis of this machine or pod.

use std::path::Path;

use umstage_snapshot::doctor::{Diagnosis, Facts, Level, diagnose};

/// Diagnoses the restrictions here (outside any namespace: they are this process's own) and
/// prints the findings, the tier a build will use and the fixes for better ones.
pub fn run(root: &Path, json: bool) -> anyhow::Result<()> {
    let facts = Facts::gather(Some(root), None);
    let diagnosis = diagnose(&facts);
    if json {
        let value = serde_json::json!({ "facts": facts, "diagnosis": diagnosis });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&diagnosis));
    }
    Ok(())
}

fn render(d: &Diagnosis) -> String {
    let mut out = String::new();
    for f in &d.findings {
        let mark = match f.level {
            Level::Ok => "ok  ",
            Level::Note => "note",
            Level::Limits => "FIX ",
        };
        out.push_str(&format!("{mark} {:<22} {}\n", f.topic, f.text));
        if let Some(fix) = f.fix.as_deref().filter(|_| f.level != Level::Ok) {
            out.push_str(&format!("     {:<22} fix: {fix}\n", ""));
        }
    }
    out.push('\n');
    match d.tier {
        Some(tier) => out.push_str(&format!("sandbox tier: {tier}: {}\n", d.reason)),
        None => out.push_str(&format!("sandbox tier: none: {}\n", d.reason)),
    }
    for up in &d.upgrades {
        out.push_str(&format!("for tier {}:\n", up.tier));
        for fix in &up.fixes {
            out.push_str(&format!("  - {fix}\n"));
        }
    }
    out
}
