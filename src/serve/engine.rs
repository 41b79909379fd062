//! The network thread: it owns the [`Inspector`] (libtorch modules are not `Sync`), takes
//! prepared images from a bounded queue, scores those that arrive together in one forward pass
//! (micro-batching: up to `max_batch`, waiting at most `max_wait` after the first), and swaps in
//! a reloaded run between two batches, so a request is always answered by one whole model.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use crossbeam_channel::{
    bounded, select, unbounded, Receiver, RecvTimeoutError, Sender, TrySendError,
};
use image::DynamicImage;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::pipeline::inspector::{Inspector, ModelCard, Preparation, PreparedInputs, RunMap};

/// What the request handlers need to know about the run being served.
#[derive(Clone)]
pub struct Served {
    pub card: Arc<ModelCard>,
    pub preparation: Preparation,
    pub threshold: f64,
    /// Why maps are unavailable for this run (`None`: they are available).
    pub maps_unavailable: Option<String>,
}

/// One image to score, prepared for the run that was served when it arrived.
pub struct Job {
    /// The compressed image, to prepare it again should a reload change the preprocessing.
    pub bytes: Bytes,
    pub prepared: PreparedInputs,
    pub prepared_with: Preparation,
    /// Set for map requests: the decoded image to map.
    pub map_of: Option<Arc<DynamicImage>>,
    pub reply: oneshot::Sender<Result<Answer, String>>,
}

/// The network's answer for one image.
pub struct Answer {
    pub score: f64,
    pub threshold: f64,
    pub card: Arc<ModelCard>,
    pub map: Option<RunMap>,
}

enum Control {
    Swap(Box<Inspector>, Option<String>, oneshot::Sender<Served>),
    /// Answer what is queued, then end the thread.
    Stop,
}

/// Why an image was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Stopped,
}

/// The handle request handlers use to reach the network thread.
pub struct Engine {
    jobs: Sender<Job>,
    control: Sender<Control>,
    served: Arc<RwLock<Served>>,
    metrics: Arc<Metrics>,
}

/// Micro-batching settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Queue capacity (images).
    pub capacity: usize,
}

impl Engine {
    /// Starts the network thread with `inspector` (already loaded and warmed up).
    pub fn start(
        inspector: Inspector,
        maps_unavailable: Option<String>,
        batching: Batching,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Engine, JoinHandle<()>)> {
        let (jobs, job_receiver) = bounded(batching.capacity.max(1));
        let (control, control_receiver) = unbounded();
        let served = Arc::new(RwLock::new(served_of(&inspector, maps_unavailable)));
        publish(&metrics, None, &read(&served).card);
        let worker = Worker {
            inspector,
            jobs: job_receiver,
            control: control_receiver,
            served: Arc::clone(&served),
            metrics: Arc::clone(&metrics),
            batching,
        };
        let handle = std::thread::Builder::new()
            .name("anodet-network".into())
            .spawn(move || worker.run())?;
        Ok((Engine { jobs, control, served, metrics }, handle))
    }

    /// The run being served now.
    pub fn served(&self) -> Served {
        read(&self.served).clone()
    }

    /// Queues an image without waiting: a full queue is refused at once (back-pressure).
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let outcome = match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        };
        self.metrics.queue_depth.set(self.jobs.len() as i64);
        outcome
    }

    /// Hands a loaded, checked run to the network thread; it is served from the next batch on.
    /// Returns what is served then.
    pub async fn swap(
        &self,
        inspector: Inspector,
        maps_unavailable: Option<String>,
    ) -> Option<Served> {
        let (sender, receiver) = oneshot::channel();
        self.control.send(Control::Swap(Box::new(inspector), maps_unavailable, sender)).ok()?;
        receiver.await.ok()
    }
}

impl Engine {
    /// Ends the network thread once the images already queued are answered (drain).
    pub fn stop(&self) {
        let _ = self.control.send(Control::Stop);
    }
}

fn read(served: &RwLock<Served>) -> std::sync::RwLockReadGuard<'_, Served> {
    served.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn served_of(inspector: &Inspector, maps_unavailable: Option<String>) -> Served {
    Served {
        card: Arc::new(inspector.card().clone()),
        preparation: inspector.preparation().clone(),
        threshold: inspector.threshold(),
        maps_unavailable,
    }
}

fn publish(metrics: &Metrics, old: Option<&ModelCard>, new: &ModelCard) {
    let labels = |card: &ModelCard| {
        [
            card.identity.clone(),
            card.category.clone(),
            card.backbone.clone(),
            card.precision.clone(),
        ]
    };
    if let Some(old) = old {
        let old_labels = labels(old);
        let refs: Vec<&str> = old_labels.iter().map(String::as_str).collect();
        let _ = metrics.model.remove_label_values(&refs);
    }
    let new_labels = labels(new);
    let refs: Vec<&str> = new_labels.iter().map(String::as_str).collect();
    metrics.model.with_label_values(&refs).set(1);
}

struct Worker {
    inspector: Inspector,
    jobs: Receiver<Job>,
    control: Receiver<Control>,
    served: Arc<RwLock<Served>>,
    metrics: Arc<Metrics>,
    batching: Batching,
}

impl Worker {
    /// Serves until every job sender is gone and the queue is empty (drain).
    fn run(mut self) {
        let mut control = self.control.clone();
        loop {
            select! {
                recv(control) -> message => match message {
                    Ok(Control::Swap(inspector, maps_unavailable, done)) => {
                        self.swap(*inspector, maps_unavailable, done)
                    }
                    Ok(Control::Stop) => {
                        while let Ok(first) = self.jobs.try_recv() {
                            let batch = self.gather(first);
                            self.process(batch);
                        }
                        return;
                    }
                    Err(_) => control = crossbeam_channel::never(),
                },
                recv(self.jobs) -> job => match job {
                    Ok(first) => {
                        let batch = self.gather(first);
                        self.metrics.queue_depth.set(self.jobs.len() as i64);
                        self.process(batch);
                    }
                    Err(_) => return,
                },
            }
        }
    }

    fn swap(
        &mut self,
        inspector: Inspector,
        maps_unavailable: Option<String>,
        done: oneshot::Sender<Served>,
    ) {
        let old = std::mem::replace(&mut self.inspector, inspector);
        let served = served_of(&self.inspector, maps_unavailable);
        publish(&self.metrics, Some(old.card()), &served.card);
        *self.served.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = served.clone();
        drop(old);
        let _ = done.send(served);
    }

    /// The first job and those that arrive within `max_wait` of it, up to `max_batch`.
    fn gather(&self, first: Job) -> Vec<Job> {
        let mut batch = vec![first];
        let deadline = Instant::now() + self.batching.max_wait;
        while batch.len() < self.batching.max_batch {
            match self.jobs.recv_deadline(deadline) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        batch
    }

    /// Scores a batch in one forward pass and answers each job; a panic fails this batch only.
    fn process(&mut self, batch: Vec<Job>) {
        // Clients that gave up need no answer.
        let batch: Vec<Job> = batch.into_iter().filter(|job| !job.reply.is_closed()).collect();
        if batch.is_empty() {
            return;
        }
        self.metrics.batch_size.observe(batch.len() as f64);
        let inspector = &self.inspector;
        let card = Arc::clone(&read(&self.served).card);
        let outcome = catch_unwind(AssertUnwindSafe(|| answer(inspector, card, &batch)));
        let answers = match outcome {
            Ok(Ok(answers)) => answers.into_iter().map(Ok).collect(),
            Ok(Err(message)) => batch.iter().map(|_| Err(message.clone())).collect(),
            Err(_) => {
                batch.iter().map(|_| Err("internal error in the network".to_string())).collect()
            }
        };
        let answers: Vec<Result<Answer, String>> = answers;
        for (job, answer) in batch.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

/// Scores (and maps, where asked) every job of a batch with `inspector`.
fn answer(
    inspector: &Inspector,
    card: Arc<ModelCard>,
    batch: &[Job],
) -> Result<Vec<Answer>, String> {
    let preparation = inspector.preparation();
    // Images prepared for a run with other preprocessing (a reload in between) are prepared again.
    let again: Vec<Option<PreparedInputs>> = batch
        .iter()
        .map(|job| {
            (job.prepared_with != *preparation)
                .then(|| preparation.prepare_bytes(&PathBuf::from("body"), &job.bytes))
                .transpose()
        })
        .collect::<crate::Result<_>>()
        .map_err(|e| e.to_string())?;
    let images: Vec<&PreparedInputs> = batch
        .iter()
        .zip(&again)
        .map(|(job, again)| again.as_ref().unwrap_or(&job.prepared))
        .collect();
    let scores = inspector.score(&images).map_err(|e| e.to_string())?;
    batch
        .iter()
        .zip(images)
        .zip(scores)
        .map(|((job, prepared), score)| {
            let map = match &job.map_of {
                Some(image) => Some(inspector.map(image, prepared).map_err(|e| e.to_string())?),
                None => None,
            };
            Ok(Answer { score, threshold: inspector.threshold(), card: Arc::clone(&card), map })
        })
        .collect()
}
