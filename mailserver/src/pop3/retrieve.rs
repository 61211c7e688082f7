//! RETR and TOP streamed from the blob store: the body is read a piece at a time and each piece
//! dot-stuffed as it goes out, so a large message costs one piece of memory, and TOP stops
//! reading once its lines are out.

use mail_blobstore::BlobReader;
use tokio::io::AsyncReadExt;

use super::stuffing::Stuffer;

/// Bytes read from the blob store per piece.
pub const PIECE: usize = 64 * 1024;

/// A message being sent.
pub struct Retrieval {
    reader: BlobReader,
    stuffer: Stuffer,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Retrieval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrieval")
            .field("stuffer", &self.stuffer)
            .finish_non_exhaustive()
    }
}

impl Retrieval {
    /// Sends the body of `reader` for RETR (`None`) or `TOP n`.
    pub fn new(reader: BlobReader, body_lines: Option<u64>) -> Self {
        Self {
            reader,
            stuffer: Stuffer::new(body_lines),
            buf: vec![0; PIECE],
        }
    }

    /// Appends the next piece to `out`; `Ok(true)` once the message, `.CRLF` included, is out.
    /// An error leaves the message cut off: the caller closes the connection, so the client
    /// cannot take a part for the whole.
    pub async fn next_piece(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        if !self.stuffer.is_done() {
            let n = self.reader.read(&mut self.buf).await?;
            if n > 0 {
                self.stuffer.feed(&self.buf[..n], out);
                if !self.stuffer.is_done() {
                    return Ok(false);
                }
            }
        }
        let stuffer = std::mem::replace(&mut self.stuffer, Stuffer::new(Some(0)));
        stuffer.finish(out);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes a few at a time, like a network stream.
    struct Trickle {
        data: &'static [u8],
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.step.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn send(raw: &'static [u8], step: usize, lines: Option<u64>) -> Vec<u8> {
        let mut retrieval = Retrieval::new(Box::pin(Trickle { data: raw, step }), lines);
        let mut out = Vec::new();
        while !retrieval.next_piece(&mut out).await.expect("read") {}
        out
    }

    #[tokio::test]
    async fn streamed_equals_whole() {
        let raw: &[u8] = b"A: 1\r\nB: 2\r\n\r\n.l1\rl2\n\r\n..\r\nlast";
        for lines in [None, Some(0), Some(2)] {
            let want = super::super::reply::message(raw, lines);
            let body = &want[want.iter().position(|&b| b == b'\n').unwrap() + 1..];
            for step in [1, 2, 3, 7, 64] {
                assert_eq!(send(raw, step, lines).await, body, "{step} {lines:?}");
            }
        }
    }
}
