//! rustls's unbuffered state machine and the bytes around it, which the transport owns:
//! ciphertext in, ciphertext out, plaintext not read yet. Ciphertext is read and records
//! are made in per-thread scratch buffers; a session keeps only a record cut short, bytes
//! the socket did not take and plaintext not read, each given back once empty. Records
//! held for the rest of a turn stay in the scratch buffer the session took, given back
//! once sent.

use std::cell::Cell;
use std::io;

use rustls::CommonState;
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::http::transport::read_draining;

/// Ciphertext read from the socket at a time: a whole record of the largest size.
pub(super) const READ_SIZE: usize = 16 * 1024 + 256;

/// Plaintext encrypted by one write at most (what rustls's buffered writer also holds).
pub(super) const WRITE_LIMIT: usize = 64 * 1024;

/// rustls's state machine, either side.
pub(super) enum Machine {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// The state machine (boxed: it is large, and the futures that make and move a transport
/// stay small) and the bytes around it.
pub(super) struct Session {
    pub(super) machine: Box<Machine>,
    /// Ciphertext from the socket not yet taken by the session (a record's start).
    pub(super) incoming: Vec<u8>,
    /// Ciphertext for the socket; bytes before `sent` went out.
    pub(super) outgoing: Vec<u8>,
    pub(super) sent: usize,
    /// Plaintext from the peer not yet read; bytes before `taken` were read.
    pub(super) plaintext: Vec<u8>,
    pub(super) taken: usize,
    /// The peer said `close_notify`, or closed its socket: no more plaintext comes.
    pub(super) ended: bool,
    /// This side's `close_notify` is queued: nothing more is written.
    closing: bool,
}

/// What the session is to send once it can write.
#[derive(Clone, Copy)]
pub(super) enum Output<'a> {
    /// Application data, encrypted whole.
    Data(&'a [u8]),
    /// A `close_notify` alert.
    CloseNotify,
}

/// Where the session stopped.
pub(super) enum Stop {
    /// It waits for more ciphertext (the handshake is on, or every record is read).
    Input,
    /// Application data may be encrypted now: `WriteTraffic` was reached.
    Writable,
}

impl Machine {
    pub(super) fn common(&self) -> &CommonState {
        match self {
            Machine::Server(c) => c,
            Machine::Client(c) => c,
        }
    }
}

impl Session {
    pub(super) fn new(machine: Machine, incoming: Vec<u8>) -> Session {
        Session {
            machine: Box::new(machine),
            incoming,
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            taken: 0,
            ended: false,
            closing: false,
        }
    }

    /// Runs the state machine over the ciphertext in `incoming` (what it takes is
    /// discarded from its front): records decrypted go to `plaintext`, what the session
    /// says goes to `outgoing`; then, if `write` is given and the session can write, it is
    /// encrypted (all of it, or none on an error).
    pub(super) fn drive(
        &mut self,
        incoming: &mut Vec<u8>,
        mut write: Option<Output<'_>>,
    ) -> Result<Stop, rustls::Error> {
        loop {
            let Session { machine, outgoing, plaintext, ended, .. } = self;
            let (discard, stop) = match &mut **machine {
                Machine::Server(c) => step(c.process_tls_records(incoming), outgoing, plaintext, ended, &mut write),
                Machine::Client(c) => step(c.process_tls_records(incoming), outgoing, plaintext, ended, &mut write),
            };
            incoming.drain(..discard);
            match stop {
                Ok(Some(stop)) => return Ok(stop),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Session::drive`] over the ciphertext the session kept.
    pub(super) fn drive_kept(&mut self, write: Option<Output<'_>>) -> Result<Stop, rustls::Error> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let driven = self.drive(&mut incoming, write);
        self.incoming = incoming;
        driven
    }

    /// Puts the alert rustls queued for a failure into `outgoing` (it is sent with the
    /// next flush); the session itself stays failed.
    pub(super) fn queue_alert(&mut self, incoming: &mut Vec<u8>) {
        // Only while rustls has records to give: a turn with none would read the bytes
        // that failed again. The ciphertext in goes with each turn all the same, since
        // rustls may hold places in it (a handshake message across records).
        while self.machine.common().wants_write() {
            let Session { machine, outgoing, .. } = self;
            let (discard, encoded) = match &mut **machine {
                Machine::Server(c) => encode_only(c.process_tls_records(incoming), outgoing),
                Machine::Client(c) => encode_only(c.process_tls_records(incoming), outgoing),
            };
            incoming.drain(..discard);
            if !encoded {
                return;
            }
        }
    }

    /// Whether ciphertext waits to be sent.
    pub(super) fn owes(&self) -> bool {
        self.owed() > 0
    }

    /// Sends what waits, as far as the socket takes it now (`WouldBlock` if something is
    /// left); `more`: the kernel may hold the last bytes for what follows (`MSG_MORE`), so
    /// a `close_notify` and the FIN after it leave in one packet.
    pub(super) fn send(&mut self, tcp: &TcpStream, more: bool) -> io::Result<()> {
        while self.owes() {
            let unsent = &self.outgoing[self.sent..];
            let n = match more {
                false => tcp.try_write(unsent)?,
                true => tcp.try_io(Interest::WRITABLE, || {
                    socket2::SockRef::from(tcp).send_with_flags(unsent, libc::MSG_MORE)
                })?,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += n;
        }
        Ok(())
    }

    /// [`Session::send`]; once all is sent, the buffer goes back to the thread.
    pub(super) fn flush(&mut self, tcp: &TcpStream) -> io::Result<()> {
        self.send(tcp, false)?;
        self.give_back_outgoing();
        Ok(())
    }

    /// Bytes written and not sent yet.
    pub(super) fn owed(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Gives `outgoing`, all sent, back to the thread's scratch (the larger of the two
    /// stays, up to [`SCRATCH_KEPT`]): the session holds no buffer.
    fn give_back_outgoing(&mut self) {
        let done = std::mem::take(&mut self.outgoing);
        self.sent = 0;
        give_back_scratch(done);
    }

    /// Makes `outgoing` the thread's scratch if the session holds no buffer, so records
    /// are made without allocating.
    pub(super) fn outgoing_room(&mut self) {
        if self.outgoing.capacity() == 0 {
            self.outgoing = SCRATCH_OUT.take();
            self.outgoing.clear();
            self.sent = 0;
        }
    }

    /// Queues `close_notify` (once) behind what is held and sends all, leaving the kernel
    /// to send the FIN with it (`WouldBlock` if something is left).
    pub(super) fn close(&mut self, tcp: &TcpStream) -> io::Result<()> {
        if !self.closing {
            self.closing = true;
            self.outgoing_room();
            // Only once the session can write (not mid-handshake, not failed).
            let _ = self.drive_kept(Some(Output::CloseNotify));
        }
        self.send(tcp, true)?;
        self.give_back_outgoing();
        Ok(())
    }

    /// Reads ciphertext from the socket, behind what the session kept (`Ok(0)` at its
    /// end): read into the thread's scratch buffer, the session keeping only what came.
    pub(super) fn read_socket(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        let mut incoming = SCRATCH_IN.take();
        incoming.clear();
        let read = read_more(tcp, &mut incoming);
        self.incoming.extend_from_slice(&incoming);
        SCRATCH_IN.set(incoming);
        read
    }

    /// Plaintext waiting to be read.
    pub(super) fn unread(&self) -> &[u8] {
        &self.plaintext[self.taken..]
    }

    /// Marks `n` bytes of plaintext read; the buffer's memory goes once all is read.
    pub(super) fn consume(&mut self, n: usize) {
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
    }

    /// Gives back the memory of an empty buffer while the connection waits.
    pub(super) fn release(&mut self) {
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
    }

    /// Reads from the socket and decrypts what came: `Ok(())` when plaintext or the end is
    /// there to read, `WouldBlock` when the socket has nothing more now. Ciphertext is read
    /// into the thread's scratch buffer, behind what the session kept (a record's start);
    /// only what is left of it after decrypting is kept.
    pub(super) fn fill(&mut self, tcp: &TcpStream) -> io::Result<()> {
        while self.unread().is_empty() && !self.ended {
            let mut incoming = SCRATCH_IN.take();
            incoming.clear();
            incoming.extend_from_slice(&self.incoming);
            match read_more(tcp, &mut incoming) {
                // The peer closed without `close_notify`: the end all the same.
                Ok(0) => self.ended = true,
                Ok(_) => {}
                Err(e) => {
                    SCRATCH_IN.set(incoming);
                    return Err(e);
                }
            }
            let driven = self.drive(&mut incoming, None);
            if driven.is_err() {
                self.queue_alert(&mut incoming);
            }
            self.incoming.clear();
            self.incoming.extend_from_slice(&incoming);
            self.release();
            SCRATCH_IN.set(incoming);
            // Whatever the session has to say (an alert, a key update) goes if it can.
            let _ = self.flush(tcp);
            if let Err(e) = driven {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(())
    }

    /// Encrypts `data` and sends it, as far as the socket takes it now: `WouldBlock` if
    /// nothing could be taken (earlier records still waiting). `hold`: the records wait
    /// behind what the session holds, for the next flush, unless [`WRITE_LIMIT`] is held.
    /// Records are made in the thread's scratch buffer; the session keeps it only while it
    /// holds records, else only what the socket did not take.
    pub(super) fn write(&mut self, tcp: &TcpStream, data: &[u8], hold: bool) -> io::Result<usize> {
        // What the session holds goes first, so its buffer stays bounded.
        if !hold || self.owed() >= WRITE_LIMIT {
            self.flush(tcp)?;
        }
        self.outgoing_room();
        let driven = self.drive_kept(Some(Output::Data(data)));
        let sent = match hold {
            true => Ok(()),
            false => self.send(tcp, false),
        };
        if !self.owes() {
            self.give_back_outgoing();
        } else if !hold {
            let rest = self.outgoing[self.sent..].to_vec();
            self.sent = 0;
            give_back_scratch(std::mem::replace(&mut self.outgoing, rest));
        }
        match driven {
            Ok(Stop::Writable) => {}
            // A transport exists once its handshake is done: the session is closed both ways.
            Ok(Stop::Input) => return Err(io::ErrorKind::BrokenPipe.into()),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        match sent {
            // What the socket did not take goes with the next flush.
            Ok(()) => Ok(data.len()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(data.len()),
            Err(e) => Err(e),
        }
    }
}

/// Gives `buffer` back to the thread's scratch for records: the larger of the two stays,
/// up to [`SCRATCH_KEPT`].
fn give_back_scratch(mut buffer: Vec<u8>) {
    let scratch = SCRATCH_OUT.take();
    if buffer.capacity() > scratch.capacity() && buffer.capacity() <= SCRATCH_KEPT {
        buffer.clear();
        SCRATCH_OUT.set(buffer);
    } else {
        SCRATCH_OUT.set(scratch);
    }
}

/// The largest buffer of records a thread keeps for the next write.
const SCRATCH_KEPT: usize = 2 * WRITE_LIMIT + 1024;

thread_local! {
    /// The thread's room for ciphertext read from a socket.
    static SCRATCH_IN: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The thread's room for records being sent.
    static SCRATCH_OUT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The thread's room for joining the slices of one write.
    pub(super) static SCRATCH_JOIN: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Reads ciphertext from the socket behind what `incoming` holds, up to a whole record
/// more ([`read_draining`]).
fn read_more(tcp: &TcpStream, incoming: &mut Vec<u8>) -> io::Result<usize> {
    incoming.reserve(READ_SIZE);
    let asked = incoming.capacity() - incoming.len();
    read_draining(tcp, asked, || tcp.try_read_buf(incoming))
}

/// Handles one state of the machine: `Some` where [`Session::drive`] stops, `None` to go
/// on. Returns the ciphertext to discard with it.
fn step<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    outgoing: &mut Vec<u8>,
    plaintext: &mut Vec<u8>,
    ended: &mut bool,
    write: &mut Option<Output<'_>>,
) -> (usize, Result<Option<Stop>, rustls::Error>) {
    let mut discard = status.discard;
    let next = match status.state {
        Err(e) => Err(e),
        Ok(ConnectionState::ReadTraffic(mut r)) => loop {
            match r.next_record() {
                Some(Ok(record)) => {
                    discard += record.discard;
                    plaintext.extend_from_slice(record.payload);
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(None),
            }
        },
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            encode(|out| e.encode(out), outgoing);
            Ok(None)
        }
        // The records are in `outgoing`, which goes out in order with the next flush.
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Ok(None)
        }
        Ok(ConnectionState::PeerClosed) => {
            *ended = true;
            Ok(None)
        }
        Ok(ConnectionState::WriteTraffic(mut w)) => {
            let written = match write.take() {
                Some(Output::Data(data)) => encrypt(|out| w.encrypt(data, out), data.len(), outgoing),
                Some(Output::CloseNotify) => encrypt(|out| w.queue_close_notify(out), 0, outgoing),
                None => Ok(()),
            };
            written.map(|()| Some(Stop::Writable))
        }
        Ok(ConnectionState::BlockedHandshake) => Ok(Some(Stop::Input)),
        Ok(ConnectionState::Closed) => {
            *ended = true;
            Ok(Some(Stop::Input))
        }
        // Early data is not accepted (no `max_early_data_size`); a state new in rustls waits.
        Ok(_) => Ok(Some(Stop::Input)),
    };
    (discard, next)
}

/// Handles a state while a failure's alert is queued: the ciphertext to discard, and
/// whether it was a record to encode (so there may be more).
fn encode_only<Data>(status: UnbufferedStatus<'_, '_, Data>, outgoing: &mut Vec<u8>) -> (usize, bool) {
    let going_on = match status.state {
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            encode(|out| e.encode(out), outgoing);
            true
        }
        _ => false,
    };
    (status.discard, going_on)
}

/// Appends a handshake record to `outgoing`, growing it to the size the record needs.
fn encode(mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>, outgoing: &mut Vec<u8>) {
    let mut room = 512;
    loop {
        let start = outgoing.len();
        outgoing.resize(start + room, 0);
        match encode(&mut outgoing[start..]) {
            Ok(n) => return outgoing.truncate(start + n),
            Err(EncodeError::InsufficientSize(e)) => {
                outgoing.truncate(start);
                room = e.required_size;
            }
            Err(EncodeError::AlreadyEncoded) => return outgoing.truncate(start),
        }
    }
}

/// Appends `len` bytes of application data, encrypted, to `outgoing`.
fn encrypt(
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
    len: usize,
    outgoing: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    // A record's header, tag and content type on each 16 KiB of it.
    let mut room = len + (len / (16 * 1024) + 1) * 64;
    loop {
        let start = outgoing.len();
        outgoing.resize(start + room, 0);
        match encrypt(&mut outgoing[start..]) {
            Ok(n) => {
                outgoing.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(e)) => {
                outgoing.truncate(start);
                room = e.required_size;
            }
            Err(EncryptError::EncryptExhausted) => {
                outgoing.truncate(start);
                return Err(rustls::Error::EncryptError);
            }
        }
    }
}

/// A server session fed `reads` of ciphertext as they would come from the socket, with
/// no socket: what it says is dropped, what it decrypts is read. Whether it failed (its
/// alert queued), as the fuzz target drives it.
pub(crate) fn server_reads(config: std::sync::Arc<rustls::ServerConfig>, reads: &[&[u8]]) -> bool {
    let Ok(server) = UnbufferedServerConnection::new(config) else { return true };
    let mut session = Session::new(Machine::Server(server), Vec::new());
    for read in reads {
        session.incoming.extend_from_slice(read);
        if session.drive_kept(None).is_err() {
            let mut incoming = std::mem::take(&mut session.incoming);
            session.queue_alert(&mut incoming);
            return true;
        }
        session.outgoing.clear();
        session.consume(session.unread().len());
        session.release();
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};

    use super::*;

    fn server_config() -> Arc<rustls::ServerConfig> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::pem::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key.into())
            .unwrap();
        Arc::new(config)
    }

    /// A client's first flight, as rustls's client writes it.
    fn client_hello() -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::pem::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        hello
    }

    #[test]
    fn a_hello_split_into_reads_of_any_size_is_taken_and_garbage_fails() {
        let config = server_config();
        let hello = client_hello();
        for size in [1, 2, 5, 7, 100, hello.len()] {
            let reads: Vec<&[u8]> = hello.chunks(size).collect();
            assert!(!server_reads(config.clone(), &reads), "reads of {size} bytes");
        }
        assert!(server_reads(config.clone(), &[b"GET / HTTP/1.1\r\n\r\n"]));
        // A hello that says it is longer than rustls takes (64 KiB).
        let mut long = hello.clone();
        long[6] = 0x01;
        assert!(server_reads(config, &[&long]), "a hello longer than allowed");
    }
}
