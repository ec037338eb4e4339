//! The hand-off's bytes on the Unix socket: greeting and `READY`/`ACK` lines, and the one frame
//! (length-prefixed JSON) that carries the listening sockets' descriptors as `SCM_RIGHTS`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use super::{io_error, HandoffError, MAX_LISTENERS};

pub(super) const HELLO: &[u8] = b"VERGE-HANDOFF 1\n";
pub(super) const READY: &[u8] = b"READY\n";
pub(super) const ACK: &[u8] = b"ACK\n";
pub(super) const VERSION: u32 = 1;
/// Longest greeting or `READY`/`ACK` line read, newline included.
const MAX_LINE: usize = 32;
const MAX_FRAME: usize = 64 * 1024;
const FRAME_HEADER: usize = 4;

/// The message that travels with the descriptors, one entry per descriptor, in order.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Offer {
    pub(super) version: u32,
    pub(super) listeners: Vec<OfferedListener>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct OfferedListener {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
}

pub(super) fn encode_offer(offer: &Offer) -> Result<Vec<u8>, HandoffError> {
    let json = serde_json::to_vec(offer)
        .map_err(|e| HandoffError::Protocol(format!("cannot encode the offer: {e}")))?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|&len| len as usize <= MAX_FRAME)
        .ok_or_else(|| HandoffError::Protocol(format!("offer of {} bytes", json.len())))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER + json.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// Reads one line, newline included; more than [`MAX_LINE`] bytes without one is an error.
pub(super) async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, HandoffError> {
    let mut line = Vec::with_capacity(MAX_LINE);
    let mut chunk = [0u8; MAX_LINE];
    while !line.contains(&b'\n') {
        let room = MAX_LINE - line.len();
        if room == 0 {
            return Err(HandoffError::Protocol(format!(
                "no newline in {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(io_error("reading a line"))?;
        if n == 0 {
            return Err(HandoffError::Protocol(
                "the other process closed the connection".to_string(),
            ));
        }
        line.extend_from_slice(&chunk[..n]);
    }
    Ok(line)
}

pub(super) fn expect_line(got: &[u8], want: &[u8]) -> Result<(), HandoffError> {
    if got == want {
        return Ok(());
    }
    Err(HandoffError::Protocol(format!(
        "expected {:?}, got {:?}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(got)
    )))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_flags() -> SendFlags {
    SendFlags::NOSIGNAL
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_flags() -> SendFlags {
    SendFlags::empty()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_flags() -> RecvFlags {
    RecvFlags::CMSG_CLOEXEC
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn recv_flags() -> RecvFlags {
    RecvFlags::empty()
}

/// Writes `frame` with `fds` attached to its first bytes.
pub(super) async fn send_frame(
    stream: &mut UnixStream,
    frame: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), HandoffError> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(HandoffError::TooManyListeners { count: fds.len() });
    }
    let shared: &UnixStream = stream;
    let sent = shared
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(frame)];
            rustix::net::sendmsg(shared, &iov, &mut control, send_flags()).map_err(io::Error::from)
        })
        .await
        .map_err(io_error("sending the listeners"))?;
    stream
        .write_all(&frame[sent..])
        .await
        .map_err(io_error("sending the listeners"))
}

/// Reads one frame and every descriptor that came with it.
pub(super) async fn recv_frame(
    stream: &UnixStream,
) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoffError> {
    let mut frame = vec![0u8; FRAME_HEADER];
    let mut filled = 0;
    let mut fds = Vec::new();
    loop {
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = stream
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut frame[filled..])];
                rustix::net::recvmsg(stream, &mut iov, &mut control, recv_flags())
                    .map_err(io::Error::from)
            })
            .await
            .map_err(io_error("receiving the listeners"))?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                fds.extend(received_fds);
            }
        }
        // Descriptors beyond the buffer were closed by the kernel and flagged as truncated.
        if received.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_LISTENERS {
            return Err(HandoffError::TooManyListeners {
                count: fds.len().max(MAX_LISTENERS + 1),
            });
        }
        if received.bytes == 0 {
            return Err(HandoffError::Protocol(
                "the old process closed the connection before sending its listeners".to_string(),
            ));
        }
        filled += received.bytes;
        if filled < frame.len() {
            continue;
        }
        if frame.len() > FRAME_HEADER {
            frame.drain(..FRAME_HEADER);
            return Ok((frame, fds));
        }
        let mut header = [0u8; FRAME_HEADER];
        header.copy_from_slice(&frame);
        let len = u32::from_be_bytes(header) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(HandoffError::Protocol(format!("frame of {len} bytes")));
        }
        frame.resize(FRAME_HEADER + len, 0);
    }
}
