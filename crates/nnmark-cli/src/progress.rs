//! An indicatif progress bar fed by the library's training observer.

use indicatif::{ProgressBar, ProgressStyle};
use nnmark::train::{EpochStats, TrainObserver};

#[derive(Default)]
pub struct Bar {
    bar: Option<ProgressBar>,
    loss: f64,
    acc: f64,
    seen: usize,
}

impl TrainObserver for Bar {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}", epoch + 1));
        self.bar = Some(bar);
        (self.loss, self.acc, self.seen) = (0.0, 0.0, 0);
    }

    fn batch_end(&mut self, _epoch: usize, _batch: usize, loss: f64, accuracy: f64) {
        self.seen += 1;
        self.loss += (loss - self.loss) / self.seen as f64;
        self.acc += (accuracy - self.acc) / self.seen as f64;
        if let Some(b) = &self.bar {
            b.inc(1);
            if self.seen.is_multiple_of(10) {
                b.set_message(format!(
                    "loss {:.4} acc {:.2}%",
                    self.loss,
                    self.acc * 100.0
                ));
            }
        }
    }

    fn epoch_end(&mut self, s: &EpochStats) {
        if let Some(b) = self.bar.take() {
            let val = s
                .val_accuracy
                .map(|v| format!(" val {:.2}%", v * 100.0))
                .unwrap_or_default();
            b.finish_with_message(format!(
                "loss {:.4} acc {:.2}%{val} lr {:.4} {:.1}s",
                s.train_loss,
                s.train_accuracy * 100.0,
                s.lr,
                s.seconds
            ));
        }
    }
}
