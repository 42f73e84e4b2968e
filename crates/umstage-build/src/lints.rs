//! Build checks: BuildKit's lint rules over the Dockerfile, filtered by its `# check=`
//! directive and reported as events before anything is built.

use umstage_dockerfile::{CheckConfig, Dockerfile};

use crate::event::{Event, EventSink};
use crate::request::BuildError;

/// Reports the findings `# check=` lets through; returns how many there were. With
/// `# check=error=true`, findings fail the build before it starts, as in BuildKit.
pub fn report(dockerfile: &Dockerfile, events: &dyn EventSink) -> Result<usize, BuildError> {
    let config = CheckConfig::parse(dockerfile.directives.check.as_deref().unwrap_or(""))
        .map_err(|e| BuildError::input(format!("{}: # check", dockerfile.source.name), e))?;
    let mut findings: Vec<_> = dockerfile
        .lints()
        .into_iter()
        .filter(|l| config.reports(l.rule))
        .collect();
    findings.sort_by_key(|l| l.span.start);
    for l in &findings {
        events.emit(Event::Lint {
            rule: l.rule.to_string(),
            message: l.message.clone(),
            url: l.url(),
            file: dockerfile.source.name.clone(),
            line: l.span.start.line,
            source: dockerfile
                .source
                .line(l.span.start.line)
                .unwrap_or_default()
                .to_string(),
        });
    }
    if config.error && !findings.is_empty() {
        let mut rules: Vec<&str> = findings.iter().map(|l| l.rule).collect();
        rules.dedup();
        return Err(BuildError::Invalid(format!(
            "{}: lint violation found for rules: {} (the Dockerfile asks for this with # check=error=true)",
            dockerfile.source.name,
            rules.join(", ")
        )));
    }
    Ok(findings.len())
}
