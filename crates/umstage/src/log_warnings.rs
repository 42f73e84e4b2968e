//! The warnings umstage's libraries log reach the user through the build's progress stream.
//!
//! The diagnostic log is off by default (it is for debugging umstage), but a warning logged
//! deep in a library (an unreadable registry auth file, a corrupt stored blob fetched again, a
//! registry request retried) is something the user should see: it becomes a progress warning,
//! rendered like every other one (plain, TTY or rawjson).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use umstage_build::event::{Event, EventSink};

/// Where forwarded warnings go while a build runs (nowhere otherwise), and those already said:
/// a library may meet the same trouble more than once in a build (an auth file read by each
/// registry client), and the user needs to hear it once.
static SINK: Mutex<Option<Forwarded>> = Mutex::new(None);

/// The sink, and the warnings already sent to it.
type Forwarded = (Arc<dyn EventSink>, HashSet<String>);

/// The tracing layer that forwards umstage's own warnings and errors to the current sink.
pub struct ToProgress;

impl<S: Subscriber> Layer<S> for ToProgress {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        // Less severe than WARN, or a dependency's own chatter: not the user's business.
        if *metadata.level() > Level::WARN || !metadata.target().starts_with("umstage") {
            return;
        }
        let Ok(mut slot) = SINK.lock() else { return };
        if let Some((sink, said)) = slot.as_mut() {
            let mut text = Text::default();
            event.record(&mut text);
            let message = text.message + &text.fields;
            if said.insert(message.clone()) {
                sink.emit(Event::Warning { message });
            }
        }
    }
}

/// Forwards warnings to `sink` until the returned guard is dropped.
pub fn forward_to(sink: Arc<dyn EventSink>) -> Forwarding {
    if let Ok(mut slot) = SINK.lock() {
        *slot = Some((sink, HashSet::new()));
    }
    Forwarding
}

/// Stops forwarding when dropped.
pub struct Forwarding;

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Ok(mut slot) = SINK.lock() {
            *slot = None;
        }
    }
}

/// An event's message, then its other fields as ` name=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn warnings_of_umstage_reach_the_sink_and_nothing_else_does() {
        let collected = Arc::new(umstage_build::event::Collect::default());
        let subscriber = tracing_subscriber::registry().with(ToProgress);
        tracing::subscriber::with_default(subscriber, || {
            let _forwarding = forward_to(collected.clone());
            tracing::warn!(target: "umstage_oci::auth", path = "/x", "cannot read {}", "it");
            tracing::warn!(target: "umstage_oci::auth", path = "/x", "cannot read {}", "it");
            tracing::info!(target: "umstage_oci::auth", "not a warning");
            tracing::warn!(target: "hyper::proto", "a dependency's");
        });
        let messages: Vec<String> = collected
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Warning { message } => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(messages, ["cannot read it path=/x"]);
    }
}
