//! The acknowledgement of a message pushed over HTTP: the request's handler holds the
//! receiving end and answers its client only once ingest has committed the message.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::AckError;

/// Held by the message on its way through ingest; [`ReplyHandle::send`] is called once its
/// batch is durable. Dropped without a send (ingest stopped first), the waiting request
/// learns that nothing was stored.
#[derive(Debug)]
pub struct ReplyHandle(Mutex<Option<oneshot::Sender<()>>>);

impl ReplyHandle {
    /// A handle and the receiver the request waits on.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Mutex::new(Some(tx))), rx)
    }

    /// Tell the waiting request its message is stored; `Gone` if it gave up waiting.
    pub fn send(&self) -> Result<(), AckError> {
        let sender = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match sender {
            Some(tx) => tx.send(()).map_err(|_| AckError::Gone),
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
        assert!(rx.await.is_ok());
        let (handle, rx) = ReplyHandle::new();
        drop(rx);
        assert_eq!(handle.send(), Err(AckError::Gone));
        let (handle, rx) = ReplyHandle::new();
        drop(handle);
        assert!(rx.await.is_err(), "a message dropped unstored is not reported stored");
    }
}
