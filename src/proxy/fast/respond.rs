//! The fast path's answers downstream: the upstream's response (head, then body by its framing)
//! or credproxy's own error.

use std::io::Write;

use bytes::BufMut;
use tokio::io::AsyncReadExt;

use super::*;
use crate::proxy::exchange::{Side, log_cut};

impl Fast {
    /// Write the response head and body downstream; a response cut short is logged with the
    /// side that ended it and the body bytes that went through (`exchange::log_cut`).
    pub(super) async fn forward<I>(
        &mut self,
        io: &mut I,
        resp: RespHead,
        close: bool,
        provider: &str,
        id: &RequestId,
        sent: &mut u64,
    ) -> Result<(), Broken>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        self.forward_counted(io, resp, close, id, sent)
            .await
            .map_err(|side| {
                log_cut(side, *sent, Some(provider));
                Broken
            })
    }

    async fn forward_counted<I>(
        &mut self,
        io: &mut I,
        resp: RespHead,
        close: bool,
        id: &RequestId,
        sent: &mut u64,
    ) -> Result<(), Side>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        const UP: Side = Side::Upstream;
        let client = |_: Broken| Side::Client;
        self.out.clear();
        put(&mut self.out, &[&self.dhead, VIA_LINE]);
        id.put_line(&mut self.out);
        if close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let mut reusable = resp.reusable;
        let body = &self.ubuf[resp.len..];
        // A body that ends with the connection goes on chunked.
        let rechunk = resp.framing == Framing::Close;
        // How much of what was read belongs to this response's body.
        let mut chunked = ChunkedEnd::default();
        let (first, mut remaining) = match resp.framing {
            Framing::Empty => (0, Some(0)),
            Framing::Length(n) => {
                let first = (body.len() as u64).min(n);
                (first as usize, Some(n - first))
            }
            Framing::Chunked => match chunked.feed(body) {
                Ok(Some(end)) => (end, Some(0)),
                Ok(None) => (body.len(), None),
                // Malformed: none of it goes on, and the connection ends.
                Err(()) => return Err(UP),
            },
            Framing::Close => (body.len(), None),
        };
        if first < body.len() {
            // The upstream sent more than one response's worth: don't trust its framing again.
            reusable = false;
        }
        if rechunk {
            put_chunk(&mut self.out, &body[..first]);
        } else {
            self.out.extend_from_slice(&body[..first]);
        }
        write_all(io, &self.out).await.map_err(client)?;
        *sent += first as u64;
        // The rest of the body, as it comes.
        while remaining != Some(0) {
            let Some(up) = self.up.as_mut() else {
                return Err(UP);
            };
            self.ubuf.clear();
            let want = match remaining {
                Some(n) => n.min(STREAM_BUF as u64) as usize,
                None => STREAM_BUF,
            };
            reserve(&mut self.ubuf, want);
            // A read error (a TLS connection cut without close_notify too) cuts the body short.
            let n = up
                .stream
                .read_buf(&mut (&mut self.ubuf).limit(want))
                .await
                .map_err(|_| UP)?;
            if n == 0 {
                if !rechunk {
                    return Err(UP);
                }
                self.up = None;
                return write_all(io, b"0\r\n\r\n").await.map_err(client);
            }
            let take = match (&mut remaining, resp.framing) {
                (Some(r), _) => {
                    *r -= n as u64;
                    n
                }
                (None, Framing::Chunked) => match chunked.feed(&self.ubuf) {
                    Ok(Some(end)) => {
                        remaining = Some(0);
                        reusable &= end == n;
                        end
                    }
                    Ok(None) => n,
                    Err(()) => return Err(UP),
                },
                (None, _) => n,
            };
            if rechunk {
                self.out.clear();
                put_chunk(&mut self.out, &self.ubuf[..take]);
                write_all(io, &self.out).await.map_err(client)?;
            } else {
                write_all(io, &self.ubuf[..take]).await.map_err(client)?;
            }
            *sent += take as u64;
        }
        if !reusable {
            self.up = None;
        }
        Ok(())
    }

    pub(super) async fn write_error<I>(
        &mut self,
        io: &mut I,
        e: ProxyError,
        head_method: bool,
        id: &RequestId,
        sent: &mut u64,
    ) -> Result<(), Broken>
    where
        I: AsyncWrite + Unpin,
    {
        self.out.clear();
        e.write_http1(&mut self.out, head_method, id);
        let out = &self.out;
        write_all(io, out).await?;
        if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            *sent = (out.len() - at - 4) as u64;
        }
        Ok(())
    }
}

/// `data` as one chunk of a chunked body (nothing for no data: an empty chunk would end it).
pub(super) fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        // (Writing into a `Vec` can't fail.)
        let _ = write!(out, "{:x}\r\n", data.len());
        put(out, &[data, b"\r\n"]);
    }
}
