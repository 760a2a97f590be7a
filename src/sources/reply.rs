//! The acknowledgement of a message pushed over HTTP: the request's handler holds the
//! receiving end and answers its client only once ingest has committed the message, with
//! what the commit held for it: its readings, or its dead letter and why.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::AckError;

/// What a committed message became: `Ok` its readings (or nothing to store), `Err` a dead
/// letter with this reason.
pub type Committed = Result<(), String>;

/// Held by the message on its way through ingest; [`ReplyHandle::send`] is called once its
/// batch is durable. Dropped without a send (ingest stopped first), the waiting request
/// learns that nothing was stored.
#[derive(Debug)]
pub struct ReplyHandle {
    tx: Mutex<Option<oneshot::Sender<Committed>>>,
    /// Set by ingest when it decodes the message (again, if a batch is decoded twice).
    outcome: Mutex<Committed>,
}

impl ReplyHandle {
    /// A handle and the receiver the request waits on.
    pub fn new() -> (Self, oneshot::Receiver<Committed>) {
        let (tx, rx) = oneshot::channel();
        (Self { tx: Mutex::new(Some(tx)), outcome: Mutex::new(Ok(())) }, rx)
    }

    /// What ingest made of the message, told once the batch holding it is durable.
    pub fn decoded(&self, outcome: Committed) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
    }

    /// Tell the waiting request its message is stored; `Gone` if it gave up waiting.
    pub fn send(&self) -> Result<(), AckError> {
        let sender = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match sender {
            Some(tx) => tx.send(outcome).map_err(|_| AckError::Gone),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_hears_of_the_commit_once() {
        let (handle, rx) = ReplyHandle::new();
        assert_eq!(handle.send(), Ok(()));
        assert_eq!(handle.send(), Ok(()));
        assert_eq!(rx.await, Ok(Ok(())));
        let (handle, rx) = ReplyHandle::new();
        drop(rx);
        assert_eq!(handle.send(), Err(AckError::Gone));
        let (handle, rx) = ReplyHandle::new();
        drop(handle);
        assert!(rx.await.is_err(), "a message dropped unstored is not reported stored");
    }

    #[tokio::test]
    async fn the_request_hears_what_the_last_decoding_made_of_it() {
        let (handle, rx) = ReplyHandle::new();
        handle.decoded(Err("unknown device c-1".into()));
        // Decoded again (a batch refused by a shared store): the second outcome counts.
        handle.decoded(Ok(()));
        handle.decoded(Err("no profile".into()));
        handle.send().unwrap();
        assert_eq!(rx.await, Ok(Err("no profile".to_owned())));
    }
}
