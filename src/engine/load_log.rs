//! Each loading stage with the time it took, in the log (`blip2engine` in GStreamer's debug
//! log): where a slow start goes, download and weights included.

use std::time::{Duration, Instant};

/// Hears the stages of one load ("listing files", "loading tokenizer.json", ...) and logs each
/// when the next begins, then the total.
pub struct StageLog<'a> {
    model: &'a str,
    start: Instant,
    current: Option<(String, Instant)>,
    /// Each finished stage and its time, for the summary and for tests.
    done: Vec<(String, Duration)>,
}

impl<'a> StageLog<'a> {
    pub fn new(model: &'a str) -> Self {
        Self {
            model,
            start: Instant::now(),
            current: None,
            done: Vec::new(),
        }
    }

    pub fn stage(&mut self, text: &str) {
        self.end_current();
        log::debug!("{}: {text}", self.model);
        self.current = Some((text.to_owned(), Instant::now()));
    }

    fn end_current(&mut self) {
        if let Some((text, since)) = self.current.take() {
            let took = since.elapsed();
            log::info!("{}: {text}: {}", self.model, ms(took));
            self.done.push((text, took));
        }
    }

    /// Ends the last stage; returns every stage with its time.
    pub fn finish(mut self) -> Vec<(String, Duration)> {
        self.end_current();
        log::info!("{}: ready in {}", self.model, ms(self.start.elapsed()));
        self.done
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_lasts_until_the_next_begins() {
        let mut log = StageLog::new("m");
        log.stage("a");
        std::thread::sleep(Duration::from_millis(30));
        log.stage("b");
        let done = log.finish();
        let names: Vec<&str> = done.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(done[0].1 >= Duration::from_millis(30), "{done:?}");
    }
}
